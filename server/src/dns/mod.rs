//! DNS for customer domains: the records a customer creates so that chat apps, other XMPP
//! servers and the certificate authority find the node serving their domain, and a check of
//! those records against real DNS.
//!
//! Data flow: a domain and [`DnsSettings`] → [`expected_records`] (pure) → the DNS page lists
//! them; "Check DNS" → [`check::check`] asks the configured resolver for each record, turns
//! the answers into plain [`check::Answer`]s and judges them with [`check::compare`] (pure).
//!
//! # The stable name
//! Every record points at one name per domain in the provider's zone,
//! `<label>.<provider_zone>`, whose address records the panel keeps pointing at the node
//! that serves the domain (DESIGN.md, "Connection routing and DNS"): a move between nodes
//! changes no customer record. The label is derived from the domain alone, so anyone can
//! recompute it ([`stable_label`]):
//! 1. the domain as DNS sees it: IDNA A-labels (punycode), lower case, no trailing dot;
//! 2. a readable part: that name with every run of characters other than `a-z0-9` (dots,
//!    hyphens) turned into one `-`, cut to [`READABLE_MAX`] characters, without a hyphen at
//!    either end (so never `xn--…` or `--` at positions 3–4, which DNS tools treat as IDNA);
//! 3. `-` and the first [`HASH_HEX`] hex digits of SHA-256 over the name of step 1.
//!
//! The readable part alone is ambiguous (`a-b.example` and `a.b-example`, long names cut
//! short); the 48-bit hash makes the label unique among any realistic set of domains, and
//! labels stay at most 53 characters (DNS allows 63).
//!
//! # The certificate (ACME DNS-01)
//! `_acme-challenge.<domain>` is a CNAME to `<label>.acme.<provider_zone>`: the panel
//! publishes the challenge TXT records there, under one `acme.` subtree that can be
//! delegated to a DNS server of its own (as acme-dns does), apart from the address records.
//! No label can be `acme`, since every label ends in a hash.

pub mod check;
mod pages;

pub use pages::router;

use hickory_resolver::proto::rr::Name;
use sha2::{Digest, Sha256};

use crate::config::DnsSettings;

/// Characters of the domain kept, at most, in front of the hash of a stable label.
pub const READABLE_MAX: usize = 40;
/// Hex digits of the domain's SHA-256 at the end of a stable label.
pub const HASH_HEX: usize = 12;
/// The TTL we suggest, seconds: the records never change, so an hour is plenty.
pub const TTL_HINT: u32 = 3600;

/// Why a name cannot be used in DNS.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} is not a valid domain name")]
    Invalid(String),
    #[error("{0:?} is too long for DNS")]
    TooLong(String),
}

/// The data of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    Srv {
        priority: u16,
        weight: u16,
        port: u16,
        /// Fully qualified, with the trailing dot.
        target: String,
    },
    Cname {
        /// Fully qualified, with the trailing dot.
        target: String,
    },
}

/// One record the customer has to create in their zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedRecord {
    /// Fully qualified, with the trailing dot: `_xmpp-client._tcp.chat.example.com.`.
    pub owner: String,
    pub data: RecordData,
    /// A suggestion; any TTL works.
    pub ttl: u32,
    /// One line on what the record is for.
    pub why: String,
}

impl ExpectedRecord {
    /// `SRV` or `CNAME`.
    pub fn kind(&self) -> &'static str {
        match self.data {
            RecordData::Srv { .. } => "SRV",
            RecordData::Cname { .. } => "CNAME",
        }
    }

    /// The value as DNS providers' forms and zone files write it: `0 5 5222 target.`.
    pub fn value(&self) -> String {
        match &self.data {
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => format!("{priority} {weight} {port} {target}"),
            RecordData::Cname { target } => target.clone(),
        }
    }

    /// The record as a line of a zone file.
    pub fn zone_line(&self) -> String {
        format!(
            "{} {} IN {} {}",
            self.owner,
            self.ttl,
            self.kind(),
            self.value()
        )
    }
}

/// What a customer domain needs in DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainDns {
    /// The domain as DNS sees it (A-labels), without the trailing dot.
    pub ascii_domain: String,
    /// `<label>.<provider_zone>.`: what the records point at.
    pub stable_name: String,
    pub records: Vec<ExpectedRecord>,
}

/// The domain as DNS sees it: IDNA A-labels (UTS-46), lower case, no trailing dot; at least
/// two labels of letters, digits and inner hyphens, at most 253 characters.
pub fn ascii_domain(domain: &str) -> Result<String, NameError> {
    let trimmed = domain.trim().trim_end_matches('.');
    let invalid = || NameError::Invalid(domain.to_string());
    // Name::from_utf8 maps each label through UTS-46 (lower case, punycode).
    let name = Name::from_utf8(trimmed).map_err(|_| invalid())?;
    let ascii = name.to_lowercase().to_ascii();
    let ascii = ascii.trim_end_matches('.').to_string();
    if ascii.len() > 253 {
        return Err(NameError::TooLong(domain.to_string()));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    let ldh = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if labels.len() < 2 || !labels.iter().all(ldh) {
        return Err(invalid());
    }
    Ok(ascii)
}

/// The stable per-domain label in the provider's zone (see the module header for the rule).
pub fn stable_label(domain: &str) -> Result<String, NameError> {
    let ascii = ascii_domain(domain)?;
    let mut readable = String::with_capacity(READABLE_MAX);
    for c in ascii.chars() {
        if readable.len() == READABLE_MAX {
            break;
        }
        if c.is_ascii_alphanumeric() {
            readable.push(c);
        } else if !readable.is_empty() && !readable.ends_with('-') {
            readable.push('-');
        }
    }
    let readable = readable.trim_end_matches('-');
    let digest = Sha256::digest(ascii.as_bytes());
    let hash = &hex::encode(digest)[..HASH_HEX];
    Ok(format!("{readable}-{hash}"))
}

/// Checks the DNS settings at start-up: a usable provider zone, a timeout, ports.
pub fn validate_settings(s: &DnsSettings) -> anyhow::Result<()> {
    let zone = ascii_domain(&s.provider_zone).map_err(|e| anyhow::anyhow!("provider_zone: {e}"))?;
    // Room for `<label>.acme.` in front of the zone within DNS's 253 characters.
    anyhow::ensure!(
        zone.len() <= 253 - 64 - "acme.".len(),
        "provider_zone is too long"
    );
    anyhow::ensure!(s.timeout_secs > 0, "timeout_secs must be positive");
    anyhow::ensure!(
        s.c2s_port > 0 && s.c2s_tls_port > 0 && s.s2s_port > 0,
        "c2s_port, c2s_tls_port and s2s_port must not be 0"
    );
    Ok(())
}

/// The records `domain` needs, pointing at its stable name in `s.provider_zone`.
pub fn expected_records(domain: &str, s: &DnsSettings) -> Result<DomainDns, NameError> {
    let d = ascii_domain(domain)?;
    let zone = ascii_domain(&s.provider_zone)?;
    let label = stable_label(&d)?;
    let stable_name = format!("{label}.{zone}.");
    let srv = |service: &str, port: u16, why: String| ExpectedRecord {
        owner: format!("{service}._tcp.{d}."),
        data: RecordData::Srv {
            priority: 0,
            weight: 5,
            port,
            target: stable_name.clone(),
        },
        ttl: TTL_HINT,
        why,
    };
    let cname = |owner: String, target: String, why: String| ExpectedRecord {
        owner,
        data: RecordData::Cname { target },
        ttl: TTL_HINT,
        why,
    };
    let records = vec![
        srv(
            "_xmpp-client",
            s.c2s_port,
            format!("Chat apps look here to connect accounts name@{d} (port {}, STARTTLS).", s.c2s_port),
        ),
        srv(
            "_xmpps-client",
            s.c2s_tls_port,
            format!("Chat apps that connect with TLS from the first byte (XEP-0368) look here (port {}).", s.c2s_tls_port),
        ),
        srv(
            "_xmpp-server",
            s.s2s_port,
            format!("Other XMPP servers look here to deliver messages to {d} (port {}).", s.s2s_port),
        ),
        cname(
            format!("conference.{d}."),
            stable_name.clone(),
            format!("Group chats, conference.{d}, are served by the same server."),
        ),
        cname(
            format!("upload.{d}."),
            stable_name.clone(),
            format!("File sharing, upload.{d}, is served by the same server."),
        ),
        cname(
            format!("_acme-challenge.{d}."),
            format!("{label}.acme.{zone}."),
            "Lets us get and renew the TLS certificate of your domain (ACME DNS-01) without access to your DNS.".into(),
        ),
    ];
    Ok(DomainDns {
        ascii_domain: d,
        stable_name,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> DnsSettings {
        DnsSettings {
            provider_zone: "hosting.example.net".into(),
            ..DnsSettings::default()
        }
    }

    #[test]
    fn a_domain_gets_its_srv_and_cname_records_pointing_at_its_stable_name() {
        let dns = expected_records("chat.example.com", &settings()).unwrap();
        let label = stable_label("chat.example.com").unwrap();
        let stable = format!("{label}.hosting.example.net.");
        assert_eq!(dns.stable_name, stable);
        let lines: Vec<String> = dns.records.iter().map(|r| r.zone_line()).collect();
        assert_eq!(
            lines,
            vec![
                format!("_xmpp-client._tcp.chat.example.com. 3600 IN SRV 0 5 5222 {stable}"),
                format!("_xmpps-client._tcp.chat.example.com. 3600 IN SRV 0 5 5223 {stable}"),
                format!("_xmpp-server._tcp.chat.example.com. 3600 IN SRV 0 5 5269 {stable}"),
                format!("conference.chat.example.com. 3600 IN CNAME {stable}"),
                format!("upload.chat.example.com. 3600 IN CNAME {stable}"),
                format!(
                    "_acme-challenge.chat.example.com. 3600 IN CNAME {label}.acme.hosting.example.net."
                ),
            ]
        );
        assert!(dns.records.iter().all(|r| !r.why.is_empty()));
    }

    #[test]
    fn the_srv_ports_come_from_the_settings() {
        let s = DnsSettings {
            c2s_port: 15222,
            c2s_tls_port: 15223,
            s2s_port: 15269,
            ..settings()
        };
        let dns = expected_records("chat.example.com", &s).unwrap();
        let ports: Vec<String> = dns.records[..3]
            .iter()
            .map(|r| r.value().split(' ').nth(2).unwrap().to_string())
            .collect();
        assert_eq!(ports, ["15222", "15223", "15269"]);
    }

    #[test]
    fn the_stable_label_is_readable_and_ends_in_a_hash_of_the_domain() {
        let label = stable_label("chat.example.com").unwrap();
        let hash = &hex::encode(Sha256::digest(b"chat.example.com"))[..HASH_HEX];
        assert_eq!(label, format!("chat-example-com-{hash}"));
        // Stable: the same however the domain was typed.
        assert_eq!(stable_label("Chat.Example.COM.").unwrap(), label);
    }

    #[test]
    fn domains_that_read_the_same_get_different_labels() {
        let a = stable_label("a-b.example.com").unwrap();
        let b = stable_label("a.b-example.com").unwrap();
        assert!(a.starts_with("a-b-example-com-") && b.starts_with("a-b-example-com-"));
        assert_ne!(a, b);
    }

    #[test]
    fn a_long_domain_is_cut_short_and_stays_a_valid_unique_label() {
        let long = format!("{}.{}.example.com", "a".repeat(63), "b".repeat(63));
        let other = format!("{}.{}.example.com", "a".repeat(63), "c".repeat(63));
        let label = stable_label(&long).unwrap();
        assert_eq!(label.len(), READABLE_MAX + 1 + HASH_HEX);
        assert!(label.len() <= 63);
        assert!(label.starts_with(&"a".repeat(READABLE_MAX)));
        assert_ne!(label, stable_label(&other).unwrap());
        // A cut that lands on a separator leaves no hyphen pair behind.
        let cut = format!("{}.example.com", "x".repeat(READABLE_MAX));
        let label = stable_label(&cut).unwrap();
        assert!(!label.contains("--"), "{label}");
        assert!(label.starts_with(&format!("{}-", "x".repeat(READABLE_MAX))));
    }

    #[test]
    fn an_idn_domain_uses_its_punycode_form_without_a_double_hyphen() {
        assert_eq!(
            ascii_domain("Bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        let label = stable_label("bücher.example").unwrap();
        assert_eq!(label, stable_label("xn--bcher-kva.example").unwrap());
        assert!(label.starts_with("xn-bcher-kva-example-"), "{label}");
        assert!(!label.contains("--"));
        let dns = expected_records("bücher.example", &settings()).unwrap();
        assert_eq!(
            dns.records[0].owner,
            "_xmpp-client._tcp.xn--bcher-kva.example."
        );
    }

    #[test]
    fn every_label_is_dns_safe() {
        for d in [
            "chat.example.com",
            "1.2.example",
            "xn--bcher-kva.example",
            "пример.рф",
            "例え.テスト",
            &format!("{}.example", "z9-".repeat(20).trim_end_matches('-')),
        ] {
            let label = stable_label(d).unwrap();
            assert!(label.len() <= 63, "{label}");
            assert!(
                label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{label}"
            );
            assert!(!label.starts_with('-') && !label.ends_with('-'), "{label}");
            assert!(!label.contains("--"), "{label}");
        }
    }

    #[test]
    fn names_dns_cannot_carry_are_refused() {
        assert!(ascii_domain("localhost").is_err());
        assert!(ascii_domain("bad_name.example").is_err());
        assert!(ascii_domain("-bad.example").is_err());
        assert!(ascii_domain("a..example").is_err());
        assert!(ascii_domain(&format!("{}.example", "a".repeat(64))).is_err());
        assert!(ascii_domain(&vec!["a".repeat(60); 5].join(".")).is_err());
    }

    #[test]
    fn the_settings_are_checked() {
        assert!(validate_settings(&DnsSettings::default()).is_ok());
        let bad_zone = DnsSettings {
            provider_zone: "not a zone".into(),
            ..DnsSettings::default()
        };
        assert!(validate_settings(&bad_zone).is_err());
        let no_timeout = DnsSettings {
            timeout_secs: 0,
            ..DnsSettings::default()
        };
        assert!(validate_settings(&no_timeout).is_err());
    }
}
