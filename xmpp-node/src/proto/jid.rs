//! JIDs, the addresses of XMPP (RFC 7622): `localpart@domainpart/resourcepart`.
//!
//! A [`Jid`] is built only through [`Jid::parse`] or [`Jid::from_parts`], and both
//! normalise every part on the way in, so two JIDs that name the same entity are equal as
//! values (`==`, `Hash`, `Ord`) and print the same:
//!
//! ```text
//!  "Juliet@Example.COM./Balcony"
//!     │ split: first '/' ends the domain, first '@' before it ends the localpart
//!     ├─ "Juliet"       ─► PRECIS UsernameCaseMapped, no "&'/:<>@ ─► "juliet"
//!     ├─ "Example.COM." ─► strip one trailing dot, IP literal or UTS-46 ─► "example.com"
//!     └─ "Balcony"      ─► PRECIS OpaqueString (case kept)         ─► "Balcony"
//! ```
//!
//! Domains are kept in their Unicode form (U-labels), so `example.xn--p1ai` and
//! `example.рф` normalise to one value; the length rules are checked on the A-label form
//! too, because that is what travels in DNS. Every failure is the stanza error
//! `jid-malformed` (RFC 6120 §8.3.3.8).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};
use precis_profiles::precis_core::profile::PrecisFastInvocation;
use precis_profiles::{OpaqueString, UsernameCaseMapped};

/// Each part of a JID is at most this many bytes once normalised (RFC 7622 §3.1).
pub const MAX_PART_BYTES: usize = 1023;

/// A DNS label is at most this many bytes in its A-label (ASCII) form (RFC 1035 §2.3.4).
const MAX_LABEL_BYTES: usize = 63;

/// Characters PRECIS would allow in a username but a localpart must not hold (RFC 7622
/// §3.3.1): they are JID or URI delimiters.
const LOCALPART_FORBIDDEN: &[char] = &['"', '&', '\'', '/', ':', '<', '>', '@'];

/// A JID with every part normalised.
///
/// The derived comparisons are the RFC 7622 comparisons, because the parts are stored in
/// their canonical form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Jid {
    node: Option<String>,
    domain: String,
    resource: Option<String>,
}

/// Why a string is not a JID. Every variant is the XMPP condition `jid-malformed`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JidError {
    /// `@example.com`: an `@` with nothing before it.
    #[error("the localpart is empty")]
    EmptyLocalpart,
    /// The localpart is over 1023 bytes once normalised.
    #[error("the localpart is longer than 1023 bytes")]
    LocalpartTooLong,
    /// The localpart holds one of `"&'/:<>@` (possibly after width mapping, e.g. `＠`).
    #[error("the localpart contains the forbidden character {0:?}")]
    LocalpartForbiddenCharacter(char),
    /// The localpart is not a PRECIS UsernameCaseMapped string (spaces, symbols, controls,
    /// a bidi violation…).
    #[error("the localpart contains characters a username may not hold")]
    InvalidLocalpart,
    /// No domainpart at all, or only a dot.
    #[error("the domainpart is empty")]
    EmptyDomainpart,
    /// The domainpart is over 1023 bytes (as Unicode or as A-labels).
    #[error("the domainpart is longer than 1023 bytes")]
    DomainpartTooLong,
    /// `a..example`: a label between two dots is empty.
    #[error("the domainpart has an empty label")]
    EmptyDomainLabel,
    /// A label is over 63 bytes in its A-label form.
    #[error("a label of the domainpart is longer than 63 bytes")]
    DomainLabelTooLong,
    /// The domainpart is not a valid (internationalised) host name.
    #[error("the domainpart is not a valid domain name")]
    InvalidDomainpart,
    /// `[…]` that does not hold an IPv6 address.
    #[error("the domainpart is not a valid IP literal")]
    InvalidIpLiteral,
    /// `example.com/`: a `/` with nothing after it.
    #[error("the resourcepart is empty")]
    EmptyResourcepart,
    /// The resourcepart is over 1023 bytes once normalised.
    #[error("the resourcepart is longer than 1023 bytes")]
    ResourcepartTooLong,
    /// The resourcepart is not a PRECIS OpaqueString (controls, unassigned code points…).
    #[error("the resourcepart contains characters a resource may not hold")]
    InvalidResourcepart,
}

impl JidError {
    /// The XMPP error condition for every malformed JID (RFC 6120 §8.3.3.8).
    pub fn condition(&self) -> &'static str {
        "jid-malformed"
    }
}

impl Jid {
    /// Parses and normalises a JID string (RFC 7622 §3.2).
    pub fn parse(s: &str) -> Result<Jid, JidError> {
        // The separators are found before any normalisation, so that a full-width '＠' or
        // '／' cannot turn into a separator (RFC 7622 §3.2, implementation note).
        let (before_resource, resource) = match s.split_once('/') {
            Some((rest, resource)) => (rest, Some(resource)),
            None => (s, None),
        };
        let (node, domain) = match before_resource.split_once('@') {
            Some((node, domain)) => (Some(node), domain),
            None => (None, before_resource),
        };
        Jid::from_parts(node, domain, resource)
    }

    /// Builds a JID from its parts, normalising each. `Some("")` is an error, not `None`.
    pub fn from_parts(
        node: Option<&str>,
        domain: &str,
        resource: Option<&str>,
    ) -> Result<Jid, JidError> {
        Ok(Jid {
            node: node.map(normalize_localpart).transpose()?,
            domain: normalize_domainpart(domain)?,
            resource: resource.map(normalize_resourcepart).transpose()?,
        })
    }

    /// The normalised localpart, if any.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The normalised domainpart (Unicode form, no trailing dot).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The normalised resourcepart, if any.
    pub fn resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// Whether the JID has no resource.
    pub fn is_bare(&self) -> bool {
        self.resource.is_none()
    }

    /// Whether `s` is exactly this JID's canonical text (so it need not be rewritten).
    pub fn is_written_as(&self, s: &str) -> bool {
        let mut rest = s;
        if let Some(node) = &self.node {
            let Some(after) = rest
                .strip_prefix(node.as_str())
                .and_then(|r| r.strip_prefix('@'))
            else {
                return false;
            };
            rest = after;
        }
        let Some(after) = rest.strip_prefix(self.domain.as_str()) else {
            return false;
        };
        match &self.resource {
            Some(resource) => after.strip_prefix('/') == Some(resource.as_str()),
            None => after.is_empty(),
        }
    }

    /// The JID without its resource: `node@domain` or `domain`.
    pub fn bare(&self) -> Jid {
        Jid {
            node: self.node.clone(),
            domain: self.domain.clone(),
            resource: None,
        }
    }

    /// The bare JID with `resource` (normalised) as its resource.
    pub fn with_resource(&self, resource: &str) -> Result<Jid, JidError> {
        Ok(Jid {
            node: self.node.clone(),
            domain: self.domain.clone(),
            resource: Some(normalize_resourcepart(resource)?),
        })
    }

    /// The JID of the domain alone, e.g. the server of a user.
    pub fn domain_jid(&self) -> Jid {
        Jid {
            node: None,
            domain: self.domain.clone(),
            resource: None,
        }
    }
}

impl FromStr for Jid {
    type Err = JidError;

    fn from_str(s: &str) -> Result<Jid, JidError> {
        Jid::parse(s)
    }
}

impl fmt::Display for Jid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(node) = &self.node {
            write!(f, "{node}@")?;
        }
        f.write_str(&self.domain)?;
        if let Some(resource) = &self.resource {
            write!(f, "/{resource}")?;
        }
        Ok(())
    }
}

/// Normalises a localpart (RFC 7622 §3.3): PRECIS UsernameCaseMapped, without the
/// delimiters `"&'/:<>@`, 1 to 1023 bytes. Also the rule for SASL user names, which
/// become localparts.
pub fn normalize_localpart(input: &str) -> Result<String, JidError> {
    if input.is_empty() {
        return Err(JidError::EmptyLocalpart);
    }
    // Printable ASCII is all PVALID in the IdentifierClass, and for it width mapping, NFC
    // and the bidi rule change nothing: UsernameCaseMapped is then just lower-casing. This
    // skips the table look-ups for the addresses nearly every stanza carries.
    if input.len() <= MAX_PART_BYTES && input.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        if let Some(c) = input.chars().find(|c| LOCALPART_FORBIDDEN.contains(c)) {
            return Err(JidError::LocalpartForbiddenCharacter(c));
        }
        return Ok(input.to_ascii_lowercase());
    }
    let normalized = UsernameCaseMapped::enforce(input).map_err(|_| JidError::InvalidLocalpart)?;
    // Checked after enforcement: width mapping turns '＠' (U+FF20) into '@'.
    if let Some(c) = normalized.chars().find(|c| LOCALPART_FORBIDDEN.contains(c)) {
        return Err(JidError::LocalpartForbiddenCharacter(c));
    }
    if normalized.len() > MAX_PART_BYTES {
        return Err(JidError::LocalpartTooLong);
    }
    Ok(normalized.into_owned())
}

/// Normalises a domainpart (RFC 7622 §3.2): one trailing dot stripped, then an IPv4
/// address, an `[IPv6]` literal (in canonical text form), or a host name mapped by UTS-46
/// to lower-case U-labels.
pub fn normalize_domainpart(input: &str) -> Result<String, JidError> {
    // Stripped before anything else, so `example.com.` and `example.com` compare equal.
    let domain = input.strip_suffix('.').unwrap_or(input);
    if domain.is_empty() {
        return Err(JidError::EmptyDomainpart);
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let address = literal
            .strip_suffix(']')
            .ok_or(JidError::InvalidIpLiteral)?;
        let address: Ipv6Addr = address.parse().map_err(|_| JidError::InvalidIpLiteral)?;
        return Ok(format!("[{address}]"));
    }
    if let Ok(address) = domain.parse::<Ipv4Addr>() {
        return Ok(address.to_string());
    }
    if let Some(name) = plain_ascii_host(domain) {
        return Ok(name);
    }

    // STD3 rules keep host names to letters, digits and hyphens (no '_', ' ', '@'…);
    // leading and trailing hyphens are refused. Hyphens in positions 3–4 ("ab--cd") are
    // allowed, as real-world names use them although IDNA2008 reserves them.
    let uts46 = Uts46::new();
    let ascii = uts46
        .to_ascii(
            domain.as_bytes(),
            AsciiDenyList::STD3,
            Hyphens::CheckFirstLast,
            DnsLength::Ignore,
        )
        .map_err(|_| JidError::InvalidDomainpart)?;
    for label in ascii.split('.') {
        if label.is_empty() {
            return Err(JidError::EmptyDomainLabel);
        }
        if label.len() > MAX_LABEL_BYTES {
            return Err(JidError::DomainLabelTooLong);
        }
    }
    if ascii.len() > MAX_PART_BYTES {
        return Err(JidError::DomainpartTooLong);
    }
    let (unicode, result) = uts46.to_unicode(
        ascii.as_bytes(),
        AsciiDenyList::STD3,
        Hyphens::CheckFirstLast,
    );
    result.map_err(|_| JidError::InvalidDomainpart)?;
    if unicode.len() > MAX_PART_BYTES {
        return Err(JidError::DomainpartTooLong);
    }
    Ok(unicode.into_owned())
}

/// A host name of ASCII letters, digits and hyphens with no A-label (`xn--`) in it, as
/// nearly every domain is: UTS-46 would only lower-case it. `None` sends the name through
/// the full UTS-46 processing (which also gives the precise error).
fn plain_ascii_host(domain: &str) -> Option<String> {
    if domain.len() > MAX_PART_BYTES {
        return None;
    }
    for label in domain.split('.') {
        let bytes = label.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_LABEL_BYTES
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
            && bytes[0] != b'-'
            && bytes[bytes.len() - 1] != b'-'
            && !(bytes.len() >= 4 && bytes[..4].eq_ignore_ascii_case(b"xn--"));
        if !ok {
            return None;
        }
    }
    Some(domain.to_ascii_lowercase())
}

/// Normalises a resourcepart (RFC 7622 §3.4): PRECIS OpaqueString (case and inner spaces
/// kept), 1 to 1023 bytes. It may contain `/` and `@`.
pub fn normalize_resourcepart(input: &str) -> Result<String, JidError> {
    if input.is_empty() {
        return Err(JidError::EmptyResourcepart);
    }
    // Printable ASCII and the space are all valid in the FreeformClass, and OpaqueString
    // maps none of them: the string is already normalised.
    if input.len() <= MAX_PART_BYTES && input.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Ok(input.to_owned());
    }
    let normalized = OpaqueString::enforce(input).map_err(|_| JidError::InvalidResourcepart)?;
    if normalized.len() > MAX_PART_BYTES {
        return Err(JidError::ResourcepartTooLong);
    }
    Ok(normalized.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn a_full_jid_splits_into_its_three_parts() {
        let j = jid("juliet@example.com/balcony");
        assert_eq!(j.node(), Some("juliet"));
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("balcony"));
        assert!(!j.is_bare());
    }

    #[test]
    fn only_the_canonical_text_counts_as_written_as_the_jid() {
        for s in [
            "juliet@example.com/balcony",
            "juliet@example.com",
            "example.com",
            "example.com/r",
        ] {
            assert!(jid(s).is_written_as(s), "{s}");
        }
        let j = jid("Juliet@Example.com/balcony");
        assert!(!j.is_written_as("Juliet@Example.com/balcony"));
        assert!(j.is_written_as("juliet@example.com/balcony"));
        for other in [
            "juliet@example.com",
            "juliet@example.com/",
            "juliet@example.com/balcony2",
            "example.com/balcony",
            "juliet@example.co/balcony",
            "juliet@example.com/balconyx",
        ] {
            assert!(!j.is_written_as(other), "{other}");
        }
        assert!(!jid("example.com").is_written_as("a@example.com"));
    }

    #[test]
    fn a_domain_alone_is_a_jid() {
        let j = jid("example.com");
        assert_eq!(
            (j.node(), j.domain(), j.resource()),
            (None, "example.com", None)
        );
        assert!(j.is_bare());
    }

    #[test]
    fn localpart_and_domain_are_case_folded() {
        assert_eq!(jid("Juliet@Example.COM"), jid("juliet@example.com"));
        assert_eq!(jid("Juliet@Example.COM").to_string(), "juliet@example.com");
    }

    #[test]
    fn the_resource_keeps_its_case() {
        let j = jid("juliet@example.com/Balcony");
        assert_eq!(j.resource(), Some("Balcony"));
        assert_ne!(j, jid("juliet@example.com/balcony"));
    }

    #[test]
    fn a_resource_may_contain_slashes_and_at_signs() {
        let j = jid("juliet@example.com/foo/bar@baz");
        assert_eq!(j.node(), Some("juliet"));
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("foo/bar@baz"));
    }

    #[test]
    fn an_at_sign_after_the_first_slash_belongs_to_the_resource() {
        let j = jid("example.com/juliet@example.net");
        assert_eq!(j.node(), None);
        assert_eq!(j.domain(), "example.com");
        assert_eq!(j.resource(), Some("juliet@example.net"));
    }

    #[test]
    fn a_second_at_sign_before_the_resource_is_malformed() {
        assert!(Jid::parse("a@b@example.com").is_err());
    }

    #[test]
    fn one_trailing_dot_of_the_domain_is_stripped() {
        assert_eq!(jid("juliet@example.com."), jid("juliet@example.com"));
        assert_eq!(jid("example.com./res").domain(), "example.com");
    }

    #[test]
    fn two_trailing_dots_leave_an_empty_label() {
        assert_eq!(Jid::parse("example.com.."), Err(JidError::EmptyDomainLabel));
    }

    #[test]
    fn an_empty_label_inside_the_domain_is_malformed() {
        assert_eq!(
            Jid::parse("a..example.com"),
            Err(JidError::EmptyDomainLabel)
        );
        assert_eq!(Jid::parse(".example.com"), Err(JidError::EmptyDomainLabel));
    }

    #[test]
    fn an_ipv4_address_is_a_domain() {
        let j = jid("juliet@192.0.2.1/res");
        assert_eq!(j.domain(), "192.0.2.1");
    }

    #[test]
    fn an_ipv6_literal_is_a_domain_in_canonical_form() {
        assert_eq!(jid("juliet@[2001:DB8:0:0::1]").domain(), "[2001:db8::1]");
        assert_eq!(jid("[::1]/res").to_string(), "[::1]/res");
    }

    #[test]
    fn a_bracketed_domain_that_is_no_ipv6_address_is_malformed() {
        assert_eq!(Jid::parse("[example.com]"), Err(JidError::InvalidIpLiteral));
        assert_eq!(Jid::parse("[::1"), Err(JidError::InvalidIpLiteral));
        assert_eq!(Jid::parse("[192.0.2.1]"), Err(JidError::InvalidIpLiteral));
    }

    #[test]
    fn a_punycode_domain_equals_its_unicode_form() {
        let ascii = jid("juliet@example.xn--p1ai");
        let unicode = jid("juliet@example.рф");
        assert_eq!(ascii, unicode);
        assert_eq!(ascii.domain(), "example.рф");
        assert_eq!(jid("Пример.РФ"), jid("xn--e1afmkfd.xn--p1ai"));
    }

    #[test]
    fn a_domain_with_characters_no_host_name_holds_is_malformed() {
        for bad in [
            "exa mple.com",
            "exa_mple.com",
            "-example.com",
            "example-.com",
            "exa%mple.com",
        ] {
            assert_eq!(Jid::parse(bad), Err(JidError::InvalidDomainpart), "{bad}");
        }
    }

    #[test]
    fn an_invalid_punycode_label_is_malformed() {
        assert_eq!(
            Jid::parse("xn--a.example"),
            Err(JidError::InvalidDomainpart)
        );
    }

    #[test]
    fn delimiters_in_the_localpart_are_refused() {
        for c in ['"', '&', '\'', ':', '<', '>'] {
            let s = format!("ju{c}liet@example.com");
            assert_eq!(
                Jid::parse(&s),
                Err(JidError::LocalpartForbiddenCharacter(c)),
                "{s}"
            );
        }
    }

    #[test]
    fn a_full_width_at_sign_in_the_localpart_is_refused_after_mapping() {
        assert_eq!(
            Jid::parse("ju＠liet@example.com"),
            Err(JidError::LocalpartForbiddenCharacter('@'))
        );
    }

    #[test]
    fn a_space_in_the_localpart_is_refused() {
        assert_eq!(
            Jid::parse("jul iet@example.com"),
            Err(JidError::InvalidLocalpart)
        );
    }

    #[test]
    fn a_localpart_may_hold_unicode_letters() {
        assert_eq!(jid("Ромео@example.com").node(), Some("ромео"));
    }

    #[test]
    fn parts_over_1023_bytes_are_refused() {
        let long = "a".repeat(1024);
        assert_eq!(
            Jid::parse(&format!("{long}@example.com")),
            Err(JidError::LocalpartTooLong)
        );
        assert_eq!(
            Jid::parse(&format!("example.com/{long}")),
            Err(JidError::ResourcepartTooLong)
        );
        let many_labels = vec!["a".repeat(63); 17].join(".");
        assert_eq!(Jid::parse(&many_labels), Err(JidError::DomainpartTooLong));
    }

    #[test]
    fn parts_of_exactly_1023_bytes_are_accepted() {
        let max = "a".repeat(1023);
        assert!(Jid::parse(&format!("{max}@example.com/{max}")).is_ok());
    }

    #[test]
    fn a_domain_label_over_63_bytes_is_refused() {
        let label = "a".repeat(64);
        assert_eq!(
            Jid::parse(&format!("{label}.example.com")),
            Err(JidError::DomainLabelTooLong)
        );
        assert!(Jid::parse(&format!("{}.example.com", "a".repeat(63))).is_ok());
    }

    #[test]
    fn empty_parts_are_malformed() {
        assert_eq!(Jid::parse(""), Err(JidError::EmptyDomainpart));
        assert_eq!(Jid::parse("."), Err(JidError::EmptyDomainpart));
        assert_eq!(Jid::parse("@example.com"), Err(JidError::EmptyLocalpart));
        assert_eq!(Jid::parse("example.com/"), Err(JidError::EmptyResourcepart));
        assert_eq!(Jid::parse("juliet@/res"), Err(JidError::EmptyDomainpart));
        assert_eq!(Jid::parse("juliet@"), Err(JidError::EmptyDomainpart));
        assert_eq!(
            Jid::from_parts(Some(""), "example.com", None),
            Err(JidError::EmptyLocalpart)
        );
    }

    #[test]
    fn a_resource_with_a_control_character_is_malformed() {
        assert_eq!(
            Jid::parse("example.com/a\u{7}b"),
            Err(JidError::InvalidResourcepart)
        );
    }

    #[test]
    fn from_parts_normalises_like_parse() {
        let j = Jid::from_parts(Some("Juliet"), "Example.COM.", Some("Balcony")).unwrap();
        assert_eq!(j, jid("juliet@example.com/Balcony"));
    }

    #[test]
    fn bare_drops_the_resource_and_with_resource_adds_one() {
        let full = jid("juliet@example.com/balcony");
        let bare = full.bare();
        assert_eq!(bare, jid("juliet@example.com"));
        assert!(bare.is_bare());
        assert_eq!(
            bare.with_resource("chamber").unwrap(),
            jid("juliet@example.com/chamber")
        );
        assert_eq!(
            full.with_resource("chamber").unwrap(),
            jid("juliet@example.com/chamber")
        );
        assert_eq!(bare.with_resource(""), Err(JidError::EmptyResourcepart));
    }

    #[test]
    fn domain_jid_keeps_only_the_domain() {
        assert_eq!(
            jid("juliet@example.com/balcony").domain_jid(),
            jid("example.com")
        );
    }

    #[test]
    fn display_round_trips_through_parse() {
        for s in [
            "juliet@example.com/Balcony",
            "example.com",
            "juliet@example.com",
            "example.com/a/b@c",
            "[::1]",
        ] {
            let j = jid(s);
            assert_eq!(j.to_string(), s);
            assert_eq!(jid(&j.to_string()), j);
        }
        let unicode = jid("Ромео@Пример.РФ/Сад");
        assert_eq!(unicode.to_string(), "ромео@пример.рф/Сад");
        assert_eq!(jid(&unicode.to_string()), unicode);
    }

    #[test]
    fn from_str_is_parse() {
        let j: Jid = "Juliet@Example.com".parse().unwrap();
        assert_eq!(j, jid("juliet@example.com"));
    }

    #[test]
    fn every_error_is_jid_malformed() {
        assert_eq!(JidError::EmptyLocalpart.condition(), "jid-malformed");
        assert_eq!(JidError::InvalidIpLiteral.condition(), "jid-malformed");
    }

    /// The ASCII shortcuts must give exactly what the full PRECIS / UTS-46 processing gives.
    #[test]
    fn the_ascii_fast_paths_agree_with_precis_and_uts46() {
        let mut samples: Vec<String> = (0x20u8..=0x7e)
            .flat_map(|b| {
                let c = char::from(b);
                [
                    format!("{c}"),
                    format!("ab{c}cd"),
                    format!("{c}x"),
                    format!("x{c}"),
                ]
            })
            .collect();
        samples.extend(
            [
                "Juliet",
                "ROMEO",
                "a--b",
                "xn--p1ai",
                "XN--P1AI",
                "ab.xn--p1ai",
                "1.2.3",
                "123",
                "a.b-c.d",
                "-a",
                "a-",
                "a..b",
                "a.",
                "Bench.Example",
                " lead",
                "trail ",
            ]
            .map(String::from),
        );
        samples.push("a".repeat(64));
        samples.push(format!("{}.com", "a".repeat(63)));
        for s in &samples {
            let slow_local = UsernameCaseMapped::enforce(s.as_str())
                .ok()
                .filter(|n| !n.chars().any(|c| LOCALPART_FORBIDDEN.contains(&c)))
                .map(|n| n.into_owned());
            assert_eq!(normalize_localpart(s).ok(), slow_local, "localpart {s:?}");
            let slow_resource = OpaqueString::enforce(s.as_str())
                .ok()
                .map(|n| n.into_owned());
            assert_eq!(
                normalize_resourcepart(s).ok(),
                slow_resource,
                "resource {s:?}"
            );
            if let Some(fast) = plain_ascii_host(s) {
                let uts46 = Uts46::new();
                let (unicode, result) =
                    uts46.to_unicode(s.as_bytes(), AsciiDenyList::STD3, Hyphens::CheckFirstLast);
                assert!(result.is_ok(), "host {s:?} is not a valid name");
                assert_eq!(fast, unicode, "host {s:?}");
            }
        }
    }
}
