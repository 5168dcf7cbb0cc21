//! Vhost specs from the panel, checked before anything is written: the rules are pure
//! functions over the wire type, so they are tested without a network or a store.
//!
//! A PUT goes: [`validate`] (the domain, the generation, the certificate and its key, the
//! contacts, the limits, the new host of a move) → [`decide`] against the generation the
//! node applied last → the store writes it (`Store::apply_spec`, which checks the
//! generation again inside its transaction).

use rookery_common::control::VhostSpec;
use rustls::{
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    sign::CertifiedKey,
};

use crate::store::{UploadLimits, VhostPolicy, normalize_domain};

/// XEP-0157 contact kinds a spec may list.
pub const CONTACT_KINDS: &[&str] = &[
    "abuse", "admin", "feedback", "sales", "security", "status", "support",
];

/// URI schemes a contact address may use.
const CONTACT_SCHEMES: &[&str] = &["mailto:", "xmpp:", "https:", "http:", "tel:"];

/// Why a spec is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The request itself is wrong (the path names another domain): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The spec breaks a rule: 422 `invalid_spec`.
    #[error("{0}")]
    Invalid(String),
}

/// A spec that passed [`validate`].
#[derive(Debug)]
pub struct ValidSpec {
    /// The normalised domain.
    pub domain: String,
    /// What the running node enforces.
    pub policy: VhostPolicy,
    /// The certificate chain and key, PEM, when the spec brings them.
    pub tls: Option<(String, String)>,
    /// The spec as stored and answered to `GET`: the normalised domain, no TLS key.
    pub stored_json: String,
}

/// What to do with a spec of generation `incoming` when `applied` is what the node has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// New, or newer than what is applied.
    Apply,
    /// Exactly what is applied: nothing to do.
    Unchanged,
    /// Older than what is applied: refused.
    Stale { applied: i64 },
}

pub fn decide(applied: Option<i64>, incoming: i64) -> Decision {
    match applied {
        None => Decision::Apply,
        Some(a) if incoming > a => Decision::Apply,
        Some(a) if incoming == a => Decision::Unchanged,
        Some(a) => Decision::Stale { applied: a },
    }
}

/// Checks a spec PUT at `/v1/vhosts/{path_domain}`.
pub fn validate(path_domain: &str, mut spec: VhostSpec) -> Result<ValidSpec, SpecError> {
    let invalid = |m: String| Err(SpecError::Invalid(m));
    let path = normalize_domain(path_domain)
        .map_err(|e| SpecError::BadRequest(format!("The path names no valid domain: {e}.")))?;
    let domain = match normalize_domain(&spec.domain) {
        Ok(d) => d,
        Err(e) => return invalid(format!("{e}.")),
    };
    if domain != path {
        return Err(SpecError::BadRequest(format!(
            "The spec is for {domain} but was sent to the path of {path}."
        )));
    }
    if spec.generation < 1 {
        return invalid(format!(
            "generation must be at least 1 (it is {}).",
            spec.generation
        ));
    }
    let limits = &spec.limits;
    for (name, value) in [
        ("max_accounts", limits.max_accounts),
        ("max_sessions", limits.max_sessions),
        ("storage_quota_bytes", limits.storage_quota_bytes),
        ("offline_retention_days", limits.offline_retention_days),
        ("archive_retention_days", limits.archive_retention_days),
        ("upload_quota_bytes", limits.upload_quota_bytes),
        ("upload_max_file_bytes", limits.upload_max_file_bytes),
        (
            "upload_quota_bytes_per_account",
            limits.upload_quota_bytes_per_account,
        ),
        ("upload_retention_days", limits.upload_retention_days),
        ("max_rooms", limits.max_rooms),
        ("max_room_occupants", limits.max_room_occupants),
    ] {
        if let Some(v) = value
            && v < 0
        {
            return invalid(format!("limits.{name} must not be negative (it is {v})."));
        }
    }
    for (kind, addresses) in &spec.contacts {
        if !CONTACT_KINDS.contains(&kind.as_str()) {
            return invalid(format!(
                "contacts has an unknown kind \"{kind}\"; use {}.",
                CONTACT_KINDS.join(", ")
            ));
        }
        for a in addresses {
            if !looks_like_uri(a) {
                return invalid(format!(
                    "the {kind} contact \"{a}\" is not a mailto:, xmpp:, https:, http: or tel: address."
                ));
            }
        }
    }
    let moved_to = match spec.moved_to.as_deref().map(str::trim) {
        None => None,
        Some(m) => match check_host_port(m) {
            Ok(()) => Some(m.to_string()),
            Err(why) => {
                return invalid(format!(
                    "moved_to \"{m}\" is not a host or host:port: {why}."
                ));
            }
        },
    };
    // Federation allow-list: normalised domain names, no duplicates, not the vhost itself.
    let mut allow = Vec::with_capacity(spec.features.federation_allow.len());
    for d in &spec.features.federation_allow {
        match normalize_domain(d) {
            Ok(n) if n == domain => {
                return invalid(format!(
                    "features.federation_allow names the vhost itself ({n}); list only other domains."
                ));
            }
            Ok(n) => {
                if !allow.contains(&n) {
                    allow.push(n);
                }
            }
            Err(e) => {
                return invalid(format!(
                    "features.federation_allow has \"{d}\", which is not a domain: {e}."
                ));
            }
        }
    }
    spec.features.federation_allow = allow;
    let tls = match &spec.tls {
        None => None,
        Some(t) => {
            let Some(key) = &t.key_pem else {
                return invalid("tls has a certificate but no key_pem.".into());
            };
            check_certificate(&domain, &t.cert_pem, key).map_err(SpecError::Invalid)?;
            Some((t.cert_pem.clone(), key.clone()))
        }
    };
    let policy = VhostPolicy {
        generation: spec.generation,
        suspended: spec.suspended,
        moved_to: moved_to.clone(),
        max_accounts: spec.limits.max_accounts,
        max_sessions: spec.limits.max_sessions,
        storage_quota_bytes: spec.limits.storage_quota_bytes,
        offline_retention_days: spec.limits.offline_retention_days,
        contacts: spec.contacts.clone(),
        archive_retention_days: spec.limits.archive_retention_days,
        upload: UploadLimits::from(&spec.limits),
        max_rooms: spec.limits.max_rooms,
        max_room_occupants: spec.limits.max_room_occupants,
        features: spec.features.clone(),
    };
    spec.domain = domain.clone();
    spec.moved_to = moved_to;
    if let Some(t) = &mut spec.tls {
        t.key_pem = None;
    }
    let stored_json = serde_json::to_string(&spec).expect("a spec serialises");
    Ok(ValidSpec {
        domain,
        policy,
        tls,
        stored_json,
    })
}

fn looks_like_uri(a: &str) -> bool {
    CONTACT_SCHEMES
        .iter()
        .any(|s| a.len() > s.len() && a[..s.len()].eq_ignore_ascii_case(s))
        && a.len() <= 1024
        && !a.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(crate) fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("an unclosed [")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{v6} is not an IPv6 address"))?;
        match after {
            "" => return Ok(()),
            p => (None, Some(p.strip_prefix(':').ok_or("junk after ]")?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("{p} is not a port")),
        }
    }
    if let Some(h) = host {
        if h.is_empty() {
            return Err("the host is empty".into());
        }
        if h.parse::<std::net::Ipv4Addr>().is_err() {
            normalize_domain(h).map_err(|e| e.to_string())?;
            if h.contains(['@', '/', ':']) {
                return Err(format!("{h} is not a host name"));
            }
        }
    }
    Ok(())
}

/// The chain parses, the key is one rustls can use, it belongs to the first certificate,
/// and that certificate names the domain.
fn check_certificate(domain: &str, cert_pem: &str, key_pem: &str) -> Result<(), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.cert_pem is not PEM certificates: {e}."))?;
    let Some(leaf) = chain.first().cloned() else {
        return Err("tls.cert_pem holds no certificate.".into());
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("tls.key_pem holds no private key: {e}."))?;
    let signing = any_supported_type(&key)
        .map_err(|e| format!("tls.key_pem is not a key the node can use: {e}."))?;
    match CertifiedKey::new(chain, signing).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err("tls.key_pem is not the key of the certificate in tls.cert_pem.".into());
        }
    }
    let ascii = idna::domain_to_ascii(domain).map_err(|e| format!("{domain}: {e}."))?;
    let name = ServerName::try_from(ascii.as_str())
        .map_err(|e| format!("{domain} cannot be checked against a certificate: {e}."))?;
    let cert = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| format!("tls.cert_pem's first certificate cannot be read: {e:?}."))?;
    cert.verify_is_valid_for_subject_name(&name)
        .map_err(|_| format!("the certificate in tls.cert_pem is not valid for {domain}."))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rookery_common::control::TlsMaterial;

    use super::*;

    fn spec(domain: &str, generation: i64) -> VhostSpec {
        serde_json::from_value(serde_json::json!({"domain": domain, "generation": generation}))
            .unwrap()
    }

    fn invalid(path: &str, s: VhostSpec) -> String {
        match validate(path, s) {
            Err(SpecError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    fn self_signed(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn generations_apply_once_and_never_go_back() {
        assert_eq!(decide(None, 1), Decision::Apply);
        assert_eq!(decide(Some(3), 4), Decision::Apply);
        assert_eq!(decide(Some(3), 3), Decision::Unchanged);
        assert_eq!(decide(Some(3), 2), Decision::Stale { applied: 3 });
    }

    #[test]
    fn a_minimal_spec_is_valid_and_stored_normalised() {
        let v = validate("Example.COM", spec("EXAMPLE.com", 1)).unwrap();
        assert_eq!(v.domain, "example.com");
        assert_eq!(v.policy.generation, 1);
        assert!(v.tls.is_none() && !v.policy.suspended);
        let stored: VhostSpec = serde_json::from_str(&v.stored_json).unwrap();
        assert_eq!(stored.domain, "example.com");
    }

    #[test]
    fn the_federation_allow_list_is_normalised_and_bad_domains_are_refused() {
        let mut s = spec("example.com", 1);
        s.features.federation_allow = vec!["Peer.TEST".into(), "peer.test".into(), "b.test".into()];
        let v = validate("example.com", s).unwrap();
        assert_eq!(v.policy.features.federation_allow, ["peer.test", "b.test"]);
        let stored: VhostSpec = serde_json::from_str(&v.stored_json).unwrap();
        assert_eq!(stored.features.federation_allow, ["peer.test", "b.test"]);
        let mut s = spec("example.com", 1);
        s.features.federation_allow = vec!["not a domain".into()];
        let m = invalid("example.com", s);
        assert!(
            m.contains("federation_allow") && m.contains("not a domain"),
            "{m}"
        );
        let mut s = spec("example.com", 1);
        s.features.federation_allow = vec!["EXAMPLE.com".into()];
        assert!(invalid("example.com", s).contains("the vhost itself"));
    }

    #[test]
    fn the_path_and_the_body_must_name_the_same_domain() {
        assert!(matches!(
            validate("other.example", spec("example.com", 1)),
            Err(SpecError::BadRequest(m)) if m.contains("example.com") && m.contains("other.example")
        ));
        assert!(invalid("example.com", spec("not a domain", 1)).contains("not a valid domain"));
    }

    #[test]
    fn generations_below_one_and_negative_limits_are_refused() {
        assert!(invalid("example.com", spec("example.com", 0)).contains("at least 1"));
        let mut s = spec("example.com", 1);
        s.limits.max_sessions = Some(-1);
        assert_eq!(
            invalid("example.com", s),
            "limits.max_sessions must not be negative (it is -1)."
        );
    }

    #[test]
    fn contacts_use_known_kinds_and_uri_addresses() {
        let mut s = spec("example.com", 1);
        s.contacts = BTreeMap::from([
            ("abuse".into(), vec!["mailto:abuse@example.com".into()]),
            (
                "support".into(),
                vec![
                    "xmpp:help@example.com".into(),
                    "https://example.com/help".into(),
                ],
            ),
        ]);
        assert!(validate("example.com", s.clone()).is_ok());
        s.contacts
            .insert("ceo".into(), vec!["mailto:ceo@example.com".into()]);
        assert!(invalid("example.com", s.clone()).contains("unknown kind \"ceo\""));
        s.contacts.remove("ceo");
        s.contacts
            .insert("admin".into(), vec!["admin@example.com".into()]);
        assert!(invalid("example.com", s).contains("\"admin@example.com\" is not a mailto:"));
    }

    #[test]
    fn moved_to_is_a_host_with_an_optional_port() {
        for ok in [
            "node2.example.net",
            "node2.example.net:5222",
            "192.0.2.7:5222",
            "[2001:db8::1]:5222",
            "[::1]",
        ] {
            let mut s = spec("example.com", 1);
            s.moved_to = Some(ok.into());
            assert_eq!(
                validate("example.com", s)
                    .unwrap()
                    .policy
                    .moved_to
                    .as_deref(),
                Some(ok)
            );
        }
        for bad in [
            "",
            "node2.example.net:0",
            "node2:http",
            "a b",
            "user@host",
            "[::1",
        ] {
            let mut s = spec("example.com", 1);
            s.moved_to = Some(bad.into());
            assert!(invalid("example.com", s).starts_with("moved_to"), "{bad}");
        }
    }

    #[test]
    fn a_certificate_must_parse_match_its_key_and_name_the_domain() {
        let (cert, key) = self_signed(&["example.com"]);
        let mut s = spec("example.com", 2);
        s.tls = Some(TlsMaterial {
            cert_pem: cert.clone(),
            key_pem: Some(key.clone()),
        });
        let v = validate("example.com", s.clone()).unwrap();
        assert_eq!(v.tls, Some((cert.clone(), key.clone())));
        assert!(
            !v.stored_json.contains("PRIVATE KEY"),
            "the key is never stored in the spec"
        );
        assert!(v.stored_json.contains("BEGIN CERTIFICATE"));

        let (_, other_key) = self_signed(&["example.com"]);
        s.tls = Some(TlsMaterial {
            cert_pem: cert.clone(),
            key_pem: Some(other_key),
        });
        assert!(invalid("example.com", s.clone()).contains("not the key of the certificate"));

        let (wrong_name, wrong_key) = self_signed(&["elsewhere.example"]);
        s.tls = Some(TlsMaterial {
            cert_pem: wrong_name,
            key_pem: Some(wrong_key),
        });
        assert!(invalid("example.com", s.clone()).contains("not valid for example.com"));

        s.tls = Some(TlsMaterial {
            cert_pem: "not a certificate".into(),
            key_pem: Some(key.clone()),
        });
        assert!(invalid("example.com", s.clone()).contains("holds no certificate"));

        s.tls = Some(TlsMaterial {
            cert_pem: cert,
            key_pem: None,
        });
        assert!(invalid("example.com", s).contains("no key_pem"));
    }
}
