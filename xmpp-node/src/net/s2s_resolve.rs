//! Where a peer server is (RFC 6120 §3.2, XEP-0368), for outgoing server-to-server
//! streams (issue 10): a static host map from the configuration first (tests, private
//! deployments), then DNS SRV records, `_xmpps-server._tcp` (TLS from the first byte)
//! before `_xmpp-server._tcp` (STARTTLS), each set in RFC 2782 order (lowest priority
//! first, then a weighted random pick among equals); a lone target of "." says the domain
//! offers no such service. Without any SRV record the domain itself on port 5269 is tried.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use hickory_resolver::{
    TokioResolver,
    proto::rr::{RData, RecordType},
};

/// The default port of server-to-server streams with STARTTLS.
pub const S2S_PORT: u16 = 5269;

/// One place to try, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTarget {
    pub host: String,
    pub port: u16,
    /// TLS from the first byte (XEP-0368), not STARTTLS.
    pub direct_tls: bool,
}

/// An SRV record as plain data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Srv {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
}

/// RFC 2782 order: by priority; within one priority, repeatedly pick a record at random
/// with a chance proportional to its weight (records of weight 0 have a small chance).
/// `random` gives numbers in `0..n` (a parameter so tests can fix it).
pub fn order_srv(
    mut records: Vec<Srv>,
    direct_tls: bool,
    mut random: impl FnMut(u32) -> u32,
) -> Vec<PeerTarget> {
    records.sort_by_key(|r| r.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let same = rest
            .iter()
            .take_while(|r| r.priority == first.priority)
            .count();
        let mut group: Vec<&Srv> = rest[..same].iter().collect();
        // Weight-0 records first, as RFC 2782 asks, so they are picked rarely.
        group.sort_by_key(|r| r.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|r| u32::from(r.weight)).sum();
            let pick = if total == 0 { 0 } else { random(total + 1) };
            let mut running = 0;
            let i = group
                .iter()
                .position(|r| {
                    running += u32::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            let r = group.remove(i);
            out.push(PeerTarget {
                host: r.target.trim_end_matches('.').to_string(),
                port: r.port,
                direct_tls,
            });
        }
        rest = &rest[same..];
    }
    out
}

/// What the SRV look-ups of a domain said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SrvAnswers {
    /// `_xmpps-server._tcp` records; None when the name has none (or the look-up failed).
    pub direct: Option<Vec<Srv>>,
    /// `_xmpp-server._tcp` records.
    pub starttls: Option<Vec<Srv>>,
}

/// The places to try for `domain`, from the static map or the SRV answers.
pub fn targets(
    domain: &str,
    static_hosts: &BTreeMap<String, String>,
    answers: &SrvAnswers,
    mut random: impl FnMut(u32) -> u32,
) -> Vec<PeerTarget> {
    if let Some(place) = static_hosts.get(domain) {
        // `tls:` first: TLS from the first byte (XEP-0368).
        let (direct_tls, place) = match place.strip_prefix("tls:") {
            Some(rest) => (true, rest),
            None => (false, place.as_str()),
        };
        let (host, port) = match place.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().unwrap_or(S2S_PORT),
            ),
            _ => (place.to_string(), S2S_PORT),
        };
        return vec![PeerTarget {
            host,
            port,
            direct_tls,
        }];
    }
    // "." alone: the domain says it offers no service of that kind (RFC 2782).
    let usable = |records: &Option<Vec<Srv>>| -> Option<Vec<Srv>> {
        let r = records.as_ref()?;
        if r.len() == 1 && r[0].target.trim_end_matches('.').is_empty() {
            return Some(Vec::new());
        }
        Some(r.clone())
    };
    let (direct, starttls) = (usable(&answers.direct), usable(&answers.starttls));
    if direct.is_none() && starttls.is_none() {
        return vec![PeerTarget {
            host: domain.to_string(),
            port: S2S_PORT,
            direct_tls: false,
        }];
    }
    let mut out = order_srv(direct.unwrap_or_default(), true, &mut random);
    out.extend(order_srv(starttls.unwrap_or_default(), false, &mut random));
    out
}

/// A DNS resolver for SRV look-ups: the system's (`/etc/resolv.conf`), or one name server.
/// A machine without a usable `/etc/resolv.conf` (some containers) still starts: its
/// resolver has no name server, so peers are found through `s2s_hosts`, else at their
/// domain on port 5269 (which the operating system resolves when connecting).
pub fn resolver(server: Option<SocketAddr>, timeout: Duration) -> anyhow::Result<TokioResolver> {
    match rookery_common::dns::resolver(server, timeout, 2) {
        Ok(r) => Ok(r),
        Err(e) if server.is_none() => {
            tracing::warn!(
                error = %e,
                "no DNS resolver for SRV records of peer servers: peers are found through s2s_hosts, else at their domain on port 5269 (set s2s_resolver to name a DNS server)"
            );
            without_name_servers()
        }
        Err(e) => Err(anyhow::Error::msg(e)),
    }
}

/// A resolver that asks nobody: every look-up fails at once.
fn without_name_servers() -> anyhow::Result<TokioResolver> {
    use hickory_resolver::{Resolver, config::ResolverConfig, net::runtime::TokioRuntimeProvider};
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(Vec::new()),
        TokioRuntimeProvider::default(),
    )
    .build()
    .map_err(|e| anyhow::anyhow!("making an empty DNS resolver: {e}"))
}

/// The SRV records at `name`; None when there are none or the look-up failed.
async fn srv(resolver: &TokioResolver, name: &str) -> Option<Vec<Srv>> {
    let lookup = resolver.lookup(name, RecordType::SRV).await.ok()?;
    let records: Vec<Srv> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(Srv {
                priority: s.priority,
                weight: s.weight,
                port: s.port,
                target: s.target.to_ascii(),
            }),
            _ => None,
        })
        .collect();
    (!records.is_empty()).then_some(records)
}

/// Where to connect for `domain`, best first.
pub async fn resolve(
    resolver: &TokioResolver,
    static_hosts: &BTreeMap<String, String>,
    domain: &str,
) -> Vec<PeerTarget> {
    let answers = if static_hosts.contains_key(domain) {
        SrvAnswers::default()
    } else {
        let (direct_name, starttls_name) = (
            format!("_xmpps-server._tcp.{domain}."),
            format!("_xmpp-server._tcp.{domain}."),
        );
        let (direct, starttls) =
            tokio::join!(srv(resolver, &direct_name), srv(resolver, &starttls_name),);
        SrvAnswers { direct, starttls }
    };
    let mut seed = {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        u32::from_le_bytes(b)
    };
    targets(domain, static_hosts, &answers, move |n| {
        // xorshift: enough for spreading load over a domain's servers.
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed % n.max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_name_servers_a_peer_is_looked_for_at_its_domain() {
        let resolver = without_name_servers().unwrap();
        let targets = resolve(&resolver, &BTreeMap::new(), "peer.test").await;
        assert_eq!(
            targets,
            vec![PeerTarget {
                host: "peer.test".into(),
                port: S2S_PORT,
                direct_tls: false,
            }]
        );
    }

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn hosts(t: &[PeerTarget]) -> Vec<(&str, u16, bool)> {
        t.iter()
            .map(|p| (p.host.as_str(), p.port, p.direct_tls))
            .collect()
    }

    #[test]
    fn srv_records_go_by_priority_then_weight() {
        let records = vec![
            srv(20, 0, 5269, "backup.example.net."),
            srv(10, 60, 5269, "a.example.net."),
            srv(10, 40, 5270, "b.example.net."),
        ];
        // A pick of 0..=60 lands on a (60 first in weight order after weight 0s), then b.
        let order = order_srv(records.clone(), false, |_| 10);
        assert_eq!(
            hosts(&order),
            [
                ("a.example.net", 5269, false),
                ("b.example.net", 5270, false),
                ("backup.example.net", 5269, false)
            ]
        );
        // A pick past a's weight lands on b first.
        let order = order_srv(records, false, |n| n - 1);
        assert_eq!(order[0].host, "b.example.net");
        assert_eq!(
            order[2].host, "backup.example.net",
            "priority first, whatever the weights"
        );
    }

    #[test]
    fn the_static_map_wins_then_direct_tls_then_starttls_then_the_domain() {
        let mut map = BTreeMap::new();
        map.insert("peer.test".to_string(), "127.0.0.1:15269".to_string());
        map.insert("v6.test".to_string(), "[::1]:5299".to_string());
        map.insert("bare.test".to_string(), "10.0.0.9".to_string());
        let none = SrvAnswers::default();
        assert_eq!(
            hosts(&targets("peer.test", &map, &none, |_| 0)),
            [("127.0.0.1", 15269, false)]
        );
        assert_eq!(
            hosts(&targets("v6.test", &map, &none, |_| 0)),
            [("::1", 5299, false)]
        );
        assert_eq!(
            hosts(&targets("bare.test", &map, &none, |_| 0)),
            [("10.0.0.9", 5269, false)]
        );
        let both = SrvAnswers {
            direct: Some(vec![srv(0, 0, 5270, "xmpp.example.org.")]),
            starttls: Some(vec![srv(0, 0, 5269, "xmpp.example.org.")]),
        };
        assert_eq!(
            hosts(&targets("example.org", &map, &both, |_| 0)),
            [
                ("xmpp.example.org", 5270, true),
                ("xmpp.example.org", 5269, false)
            ]
        );
        assert_eq!(
            hosts(&targets("example.org", &map, &none, |_| 0)),
            [("example.org", 5269, false)]
        );
        // "." : no service of that kind, and the other kind still counts.
        let no_direct = SrvAnswers {
            direct: Some(vec![srv(0, 0, 0, ".")]),
            starttls: Some(vec![srv(5, 0, 5269, "s2s.example.org.")]),
        };
        assert_eq!(
            hosts(&targets("example.org", &map, &no_direct, |_| 0)),
            [("s2s.example.org", 5269, false)]
        );
        let nothing = SrvAnswers {
            direct: None,
            starttls: Some(vec![srv(0, 0, 0, ".")]),
        };
        assert!(
            targets("example.org", &map, &nothing, |_| 0).is_empty(),
            "the domain federates with nobody"
        );
    }
}
