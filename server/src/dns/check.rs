//! "Check DNS": every expected record looked up through the configured resolver, and judged.
//!
//! Look-ups ([`check`]) and judgement ([`compare`]) are apart: `check` turns whatever the
//! resolver says into a plain [`Answer`], and the pure `compare` decides pass or fail and
//! phrases what was found. The look-ups run side by side, each within the configured
//! timeout (a CNAME that is missing costs one more round for what the name has instead), so
//! a check takes at most about two timeouts; no answer, however odd, makes it panic.
//!
//! The rules: an SRV record passes when every SRV record at its name has our target and port
//! (priority and weight may differ, which is noted; a second record pointing elsewhere
//! fails, since clients would use it too). A CNAME passes when it names our target. Names
//! compare without regard to case or a trailing dot.

use std::{fmt, time::Duration};

use hickory_resolver::{
    TokioResolver,
    net::{DnsError, NetError},
    proto::{
        op::ResponseCode,
        rr::{RData, Record, RecordType},
    },
};
use tokio::task::JoinSet;

use super::{ExpectedRecord, RecordData};
use crate::config::DnsSettings;

/// Records of one answer listed in a result, at most; the rest are counted.
const MAX_LISTED: usize = 4;
/// Characters of one found value shown, at most.
const MAX_VALUE_CHARS: usize = 120;

/// A record the resolver returned, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        target: String,
    },
    Cname {
        target: String,
    },
    /// Any other type, as text (`A 192.0.2.7`, `TXT "…"`).
    Other {
        kind: String,
        value: String,
    },
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "SRV {priority} {weight} {port} {target}"),
            Found::Cname { target } => write!(f, "CNAME {target}"),
            Found::Other { kind, value } => write!(f, "{kind} {value}"),
        }
    }
}

/// What the resolver said about one name and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Records in the answer (the type asked for, and any CNAME on the way).
    Records(Vec<Found>),
    /// The name does not exist.
    NxDomain,
    /// The name exists but has no record of the type asked; `instead` is what a look-up of
    /// its addresses and TXT records found (for a missing CNAME), if anything.
    NoData {
        instead: Vec<Found>,
    },
    TimedOut,
    /// Anything else: the server failed or refused, the network is down.
    Failed(String),
}

/// The verdict on one expected record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCheck {
    pub pass: bool,
    /// What DNS has there, for people: `found SRV 0 5 5222 x.example.net.`, `timed out`.
    pub found: String,
    /// A remark on a pass or a hint on a failure.
    pub note: Option<String>,
}

/// Why no check could be made at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("no DNS resolver to ask: {0}")]
    NoResolver(String),
}

/// A name without the trailing dot, in lower case: how names are compared.
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// `x.example.net.`: lower case, one trailing dot.
fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// `found A 1, A 2 and 3 more`.
fn list(found: &[Found]) -> String {
    let mut shown: Vec<String> = found
        .iter()
        .take(MAX_LISTED)
        .map(|f| {
            let text = f.to_string();
            if text.chars().count() > MAX_VALUE_CHARS {
                format!(
                    "{}…",
                    text.chars().take(MAX_VALUE_CHARS).collect::<String>()
                )
            } else {
                text
            }
        })
        .collect();
    if found.len() > MAX_LISTED {
        shown.push(format!("{} more", found.len() - MAX_LISTED));
    }
    shown.join(", ")
}

fn fail(found: impl Into<String>, note: Option<String>) -> RecordCheck {
    RecordCheck {
        pass: false,
        found: found.into(),
        note,
    }
}

/// Judges what DNS answered for one expected record.
pub fn compare(expected: &ExpectedRecord, answer: &Answer) -> RecordCheck {
    let records = match answer {
        Answer::Records(r) if !r.is_empty() => r,
        Answer::Records(_) | Answer::NoData { .. } => {
            let instead = match answer {
                Answer::NoData { instead } if !instead.is_empty() => instead.as_slice(),
                _ => &[],
            };
            let none = format!("no {} records", expected.kind());
            return if instead.is_empty() {
                fail(none, None)
            } else {
                fail(
                    format!("{none}; found {}", list(instead)),
                    Some(format!(
                        "Replace these with the {} record.",
                        expected.kind()
                    )),
                )
            };
        }
        Answer::NxDomain => return fail("no such name (NXDOMAIN)", None),
        Answer::TimedOut => {
            return fail(
                "timed out",
                Some("The DNS server did not answer in time; try again in a minute.".into()),
            );
        }
        Answer::Failed(why) => return fail(format!("look-up failed: {why}"), None),
    };
    let found = format!("found {}", list(records));
    match &expected.data {
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => {
            let srvs: Vec<(u16, u16, u16, &str)> = records
                .iter()
                .filter_map(|f| match f {
                    Found::Srv {
                        priority,
                        weight,
                        port,
                        target,
                    } => Some((*priority, *weight, *port, target.as_str())),
                    _ => None,
                })
                .collect();
            let ours = |(_, _, p, t): &(u16, u16, u16, &str)| *p == *port && same_name(t, target);
            let matching = srvs.iter().filter(|s| ours(s)).count();
            if srvs.is_empty() {
                fail(format!("no SRV records; {found}"), None)
            } else if matching == srvs.len() {
                let differs = srvs
                    .iter()
                    .any(|(pr, w, _, _)| (pr, w) != (priority, weight));
                RecordCheck {
                    pass: true,
                    found,
                    note: differs.then(|| {
                        format!("Priority or weight differ from ours ({priority} {weight}); that works too.")
                    }),
                }
            } else if matching > 0 {
                fail(
                    found,
                    Some(
                        "Remove the other SRV records at this name: clients would try them too."
                            .into(),
                    ),
                )
            } else {
                fail(found, None)
            }
        }
        RecordData::Cname { target } => {
            let cnames: Vec<&str> = records
                .iter()
                .filter_map(|f| match f {
                    Found::Cname { target } => Some(target.as_str()),
                    _ => None,
                })
                .collect();
            if cnames.is_empty() {
                fail(
                    format!("no CNAME records; {found}"),
                    Some("Replace these with the CNAME record.".into()),
                )
            } else if cnames.iter().all(|t| same_name(t, target)) {
                RecordCheck {
                    pass: true,
                    found,
                    note: None,
                }
            } else {
                fail(found, None)
            }
        }
    }
}

/// A resolver asking `s.resolver` over UDP and TCP, or the system's resolvers; no hosts
/// file, one attempt per look-up within the timeout.
fn resolver(s: &DnsSettings) -> Result<TokioResolver, CheckError> {
    rookery_common::dns::resolver(s.resolver, Duration::from_secs(s.timeout_secs), 1)
        .map_err(CheckError::NoResolver)
}

fn found_of(r: &Record) -> Found {
    match &r.data {
        RData::SRV(srv) => Found::Srv {
            priority: srv.priority,
            weight: srv.weight,
            port: srv.port,
            target: fqdn(&srv.target.to_ascii()),
        },
        RData::CNAME(c) => Found::Cname {
            target: fqdn(&c.0.to_ascii()),
        },
        RData::TXT(txt) => Found::Other {
            kind: "TXT".into(),
            value: txt
                .txt_data
                .iter()
                .map(|s| format!("{:?}", String::from_utf8_lossy(s)))
                .collect::<Vec<_>>()
                .join(" "),
        },
        other => Found::Other {
            kind: r.record_type().to_string(),
            value: other.to_string(),
        },
    }
}

/// Asks for `kind` at `name` and says what came back, within `timeout`.
async fn ask(resolver: &TokioResolver, name: &str, kind: RecordType, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, resolver.lookup(name, kind)).await {
        Err(_) => Answer::TimedOut,
        Ok(Ok(lookup)) => Answer::Records(
            lookup
                .answers()
                .iter()
                .filter(|r| r.record_type() == kind || r.record_type() == RecordType::CNAME)
                .map(found_of)
                .collect(),
        ),
        Ok(Err(e)) => answer_of_error(&e),
    }
}

fn answer_of_error(e: &NetError) -> Answer {
    match e {
        _ if e.is_nx_domain() => Answer::NxDomain,
        _ if e.is_no_records_found() => Answer::NoData {
            instead: Vec::new(),
        },
        NetError::Timeout => Answer::TimedOut,
        NetError::Dns(DnsError::ResponseCode(code)) => Answer::Failed(match code {
            ResponseCode::ServFail => "the DNS server failed (SERVFAIL)".into(),
            ResponseCode::Refused => "the DNS server refused to answer (REFUSED)".into(),
            other => format!("the DNS server answered {other:?}"),
        }),
        NetError::Io(io) => Answer::Failed(format!("could not reach the DNS server: {io}")),
        other => Answer::Failed(other.to_string()),
    }
}

/// What a name has instead of a missing CNAME: its addresses and TXT records.
async fn instead(resolver: &TokioResolver, name: &str, timeout: Duration) -> Vec<Found> {
    let (a, aaaa, txt) = tokio::join!(
        ask(resolver, name, RecordType::A, timeout),
        ask(resolver, name, RecordType::AAAA, timeout),
        ask(resolver, name, RecordType::TXT, timeout),
    );
    [a, aaaa, txt]
        .into_iter()
        .flat_map(|answer| match answer {
            Answer::Records(r) => r,
            _ => Vec::new(),
        })
        .collect()
}

/// Looks up every record and judges it; the results are in the order of `records`.
pub async fn check(
    records: &[ExpectedRecord],
    s: &DnsSettings,
) -> Result<Vec<RecordCheck>, CheckError> {
    let resolver = resolver(s)?;
    let timeout = Duration::from_secs(s.timeout_secs);
    let mut lookups = JoinSet::new();
    for (i, record) in records.iter().enumerate() {
        let (resolver, record) = (resolver.clone(), record.clone());
        lookups.spawn(async move {
            let (name, kind) = (
                record.owner.as_str(),
                match record.data {
                    RecordData::Srv { .. } => RecordType::SRV,
                    RecordData::Cname { .. } => RecordType::CNAME,
                },
            );
            let mut answer = ask(&resolver, name, kind, timeout).await;
            if let (Answer::NoData { instead: found }, RecordType::CNAME) = (&mut answer, kind) {
                *found = instead(&resolver, name, timeout).await;
            }
            (i, compare(&record, &answer))
        });
    }
    let mut results: Vec<Option<RecordCheck>> = vec![None; records.len()];
    while let Some(done) = lookups.join_next().await {
        match done {
            Ok((i, result)) => results[i] = Some(result),
            Err(e) => tracing::error!(error = %e, "a DNS look-up task failed"),
        }
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| fail("look-up failed", None)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::expected_records;

    const STABLE: &str = "chat-example-com-0123456789ab.hosting.test.";

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Found {
        Found::Srv {
            priority,
            weight,
            port,
            target: target.into(),
        }
    }

    fn expected_srv() -> ExpectedRecord {
        ExpectedRecord {
            owner: "_xmpp-client._tcp.chat.example.com.".into(),
            data: RecordData::Srv {
                priority: 0,
                weight: 5,
                port: 5222,
                target: STABLE.into(),
            },
            ttl: 3600,
            why: "test".into(),
        }
    }

    fn expected_cname() -> ExpectedRecord {
        ExpectedRecord {
            owner: "conference.chat.example.com.".into(),
            data: RecordData::Cname {
                target: STABLE.into(),
            },
            ttl: 3600,
            why: "test".into(),
        }
    }

    #[test]
    fn the_right_srv_record_passes_whatever_the_case_and_trailing_dot() {
        let r = compare(
            &expected_srv(),
            &Answer::Records(vec![srv(
                0,
                5,
                5222,
                &STABLE.to_uppercase().replace(".test.", ".test"),
            )]),
        );
        assert!(r.pass, "{r:?}");
        assert!(r.found.starts_with("found SRV 0 5 5222 "), "{r:?}");
        assert_eq!(r.note, None);
    }

    #[test]
    fn another_priority_or_weight_passes_with_a_note() {
        let r = compare(
            &expected_srv(),
            &Answer::Records(vec![srv(10, 0, 5222, STABLE)]),
        );
        assert!(r.pass);
        assert!(r.note.unwrap().contains("Priority or weight differ"));
    }

    #[test]
    fn a_wrong_target_or_port_fails_showing_what_was_found() {
        let r = compare(
            &expected_srv(),
            &Answer::Records(vec![srv(0, 5, 5222, "other.example.net.")]),
        );
        assert!(!r.pass);
        assert_eq!(r.found, "found SRV 0 5 5222 other.example.net.");
        let r = compare(
            &expected_srv(),
            &Answer::Records(vec![srv(0, 5, 5299, STABLE)]),
        );
        assert!(!r.pass);
        assert_eq!(r.found, format!("found SRV 0 5 5299 {STABLE}"));
    }

    #[test]
    fn a_second_srv_record_pointing_elsewhere_fails() {
        let r = compare(
            &expected_srv(),
            &Answer::Records(vec![
                srv(0, 5, 5222, STABLE),
                srv(0, 5, 5222, "old.example.net."),
            ]),
        );
        assert!(!r.pass);
        assert!(r.note.unwrap().contains("Remove the other SRV records"));
    }

    #[test]
    fn missing_records_say_why() {
        let r = compare(&expected_srv(), &Answer::NxDomain);
        assert_eq!(
            (r.pass, r.found.as_str()),
            (false, "no such name (NXDOMAIN)")
        );
        let r = compare(&expected_srv(), &Answer::NoData { instead: vec![] });
        assert_eq!((r.pass, r.found.as_str()), (false, "no SRV records"));
        let r = compare(&expected_srv(), &Answer::Records(vec![]));
        assert_eq!((r.pass, r.found.as_str()), (false, "no SRV records"));
        let r = compare(&expected_srv(), &Answer::TimedOut);
        assert_eq!((r.pass, r.found.as_str()), (false, "timed out"));
        let r = compare(&expected_srv(), &Answer::Failed("REFUSED".into()));
        assert_eq!(
            (r.pass, r.found.as_str()),
            (false, "look-up failed: REFUSED")
        );
    }

    #[test]
    fn a_cname_passes_only_with_our_target() {
        let ok = Answer::Records(vec![Found::Cname {
            target: STABLE.trim_end_matches('.').into(),
        }]);
        assert!(compare(&expected_cname(), &ok).pass);
        let wrong = Answer::Records(vec![Found::Cname {
            target: "wrong.example.net.".into(),
        }]);
        let r = compare(&expected_cname(), &wrong);
        assert_eq!(
            (r.pass, r.found.as_str()),
            (false, "found CNAME wrong.example.net.")
        );
    }

    #[test]
    fn an_address_instead_of_a_cname_is_shown() {
        let r = compare(
            &expected_cname(),
            &Answer::NoData {
                instead: vec![Found::Other {
                    kind: "A".into(),
                    value: "192.0.2.7".into(),
                }],
            },
        );
        assert!(!r.pass);
        assert_eq!(r.found, "no CNAME records; found A 192.0.2.7");
        assert!(r.note.unwrap().contains("Replace"));
    }

    #[test]
    fn a_cname_where_an_srv_record_belongs_fails() {
        let r = compare(
            &expected_srv(),
            &Answer::Records(vec![Found::Cname {
                target: "elsewhere.example.net.".into(),
            }]),
        );
        assert!(!r.pass);
        assert_eq!(
            r.found,
            "no SRV records; found CNAME elsewhere.example.net."
        );
    }

    #[test]
    fn long_answers_are_cut_short() {
        let many: Vec<Found> = (0..10)
            .map(|i| srv(0, 5, 5222, &format!("n{i}.{}.example.", "x".repeat(200))))
            .collect();
        let r = compare(&expected_srv(), &Answer::Records(many));
        assert!(!r.pass);
        assert!(r.found.ends_with(", 6 more"), "{}", r.found);
        assert!(
            r.found.len() < 4 * (MAX_VALUE_CHARS + 10) + 20,
            "{}",
            r.found
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_within_the_timeout() {
        // A UDP socket that reads nothing and a TCP listener that never accepts.
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let _tcp = tokio::net::TcpListener::bind(addr).await;
        let s = DnsSettings {
            resolver: Some(addr),
            timeout_secs: 1,
            ..DnsSettings::default()
        };
        let dns = expected_records("chat.example.com", &s).unwrap();
        let started = std::time::Instant::now();
        let results = check(&dns.records, &s).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(results.len(), dns.records.len());
        for r in results {
            assert!(!r.pass);
            assert_eq!(r.found, "timed out", "{r:?}");
        }
    }
}
