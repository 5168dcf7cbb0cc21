//! Whom a domain's users exchange messages with (server-to-server federation), chosen on
//! the domain's settings page or through the API: the whole XMPP network (the default),
//! only the domains of an allow-list, or only the domain itself.
//!
//! The choice is stored on the domain (`domains.federation_mode`, `federation_allow`;
//! panel migration 0017), checked whole by the pure functions here before anything is
//! saved, and sent to the node as the spec's `features.federation` and
//! `features.federation_allow` ([`Federation::features`], `nodes::reconcile::spec_for`).
//!
//! Allow-list entries are normalised as the order form normalises a domain
//! ([`super::normalize`]: UTS-46, lower case, no trailing dot), repeats dropped, sorted.
//! The domain itself is refused rather than silently dropped: it always talks with itself,
//! and saying so teaches what the list means. Names are exact, as the node compares them:
//! `example.org` does not cover `conference.example.org`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The most domains an allow-list holds.
pub const MAX_ALLOWED: usize = 100;

/// Whom the domain exchanges stanzas with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FederationMode {
    /// With every domain on the XMPP network.
    #[default]
    Open,
    /// Only with the domains of the allow-list.
    Allowlist,
    /// With no other domain: its own accounts and services only.
    Closed,
}

impl FederationMode {
    /// As stored and posted: `open`, `allowlist`, `closed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Allowlist => "allowlist",
            Self::Closed => "closed",
        }
    }

    /// The stored or posted name; None for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "open" => Some(Self::Open),
            "allowlist" => Some(Self::Allowlist),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }
}

/// A domain's federation, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Federation {
    pub mode: FederationMode,
    /// Normalised, sorted, without repeats; kept whatever the mode (switching back to
    /// the allow-list finds it), used only in [`FederationMode::Allowlist`].
    pub allow: Vec<String>,
}

impl Federation {
    /// As stored: a stored mode the panel does not know (the column's CHECK prevents it)
    /// reads as open, the node's own default.
    pub fn from_stored(mode: &str, allow: &str) -> Self {
        Self {
            mode: FederationMode::parse(mode).unwrap_or_default(),
            allow: allow
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// The allow-list as stored: one name per line.
    pub fn stored_allow(&self) -> String {
        self.allow.join("\n")
    }

    /// The spec's `features.federation` and `features.federation_allow`: off for a
    /// closed domain; on with the list for an allow-listed one; on with an empty list (every
    /// domain) for an open one.
    pub fn features(&self) -> (bool, Vec<String>) {
        match self.mode {
            FederationMode::Open => (true, Vec::new()),
            FederationMode::Allowlist => (true, self.allow.clone()),
            FederationMode::Closed => (false, Vec::new()),
        }
    }
}

/// Why a federation choice is refused. `index` is the entry's position (0-based) in what
/// was sent: the form names it as a line, the API as `allow[index]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FederationError {
    #[error(
        "List at least one domain to talk with, or choose “Talk with the whole XMPP network” or “Only within this domain”."
    )]
    EmptyAllowList,
    #[error("“{text}”: {why}")]
    BadDomain {
        index: usize,
        text: String,
        why: &'static str,
    },
    #[error(
        "{domain} is this domain itself: it always talks with itself, so leave it out of the list."
    )]
    OwnDomain { index: usize, domain: String },
    #[error("List at most {MAX_ALLOWED} domains ({count} given).")]
    TooMany { count: usize },
}

impl FederationError {
    /// The API's stable code for the `federation.allow` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EmptyAllowList => "federation_allow_empty",
            Self::BadDomain { .. } => "invalid_domain",
            Self::OwnDomain { .. } => "own_domain",
            Self::TooMany { .. } => "too_many_domains",
        }
    }

    /// The position of the entry at fault, if one is.
    pub fn index(&self) -> Option<usize> {
        match self {
            Self::BadDomain { index, .. } | Self::OwnDomain { index, .. } => Some(*index),
            Self::EmptyAllowList | Self::TooMany { .. } => None,
        }
    }
}

/// Checks a choice for the domain `own` (normalised): `entries` are the allow-list's
/// candidates with their positions, blank ones already left out by the caller (the form
/// skips blank lines; the API refuses an empty string as a bad name).
pub fn check<'a>(
    own: &str,
    mode: FederationMode,
    entries: impl IntoIterator<Item = (usize, &'a str)>,
) -> Result<Federation, FederationError> {
    let mut allow = BTreeSet::new();
    for (index, text) in entries {
        let domain = super::normalize(text).map_err(|why| FederationError::BadDomain {
            index,
            text: text.trim().to_string(),
            why,
        })?;
        if domain == own {
            return Err(FederationError::OwnDomain { index, domain });
        }
        allow.insert(domain);
    }
    if allow.len() > MAX_ALLOWED {
        return Err(FederationError::TooMany { count: allow.len() });
    }
    if mode == FederationMode::Allowlist && allow.is_empty() {
        return Err(FederationError::EmptyAllowList);
    }
    Ok(Federation {
        mode,
        allow: allow.into_iter().collect(),
    })
}

/// The textarea's lines as [`check`]'s entries: blank lines left out, each with its
/// position (0-based) so an error names the line the customer sees.
pub fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "chat.example.com";

    #[test]
    fn an_allow_list_is_normalised_sorted_and_without_repeats() {
        let f = check(
            OWN,
            FederationMode::Allowlist,
            lines(" Partner.Example.org.\n\nconference.partner.example.org\r\npartner.example.org\nBÜCHER.example\n"),
        )
        .unwrap();
        assert_eq!(
            f.allow,
            vec![
                "bücher.example",
                "conference.partner.example.org",
                "partner.example.org"
            ]
        );
        assert_eq!(f.features(), (true, f.allow.clone()));
        assert_eq!(Federation::from_stored("allowlist", &f.stored_allow()), f);
    }

    #[test]
    fn only_these_domains_with_an_empty_list_is_refused() {
        for text in ["", "  \n\n"] {
            assert_eq!(
                check(OWN, FederationMode::Allowlist, lines(text)),
                Err(FederationError::EmptyAllowList)
            );
        }
        // The other choices need no list.
        assert!(check(OWN, FederationMode::Open, lines("")).is_ok());
        assert!(check(OWN, FederationMode::Closed, lines("")).is_ok());
    }

    #[test]
    fn a_bad_line_is_named_by_its_line_and_reason() {
        let e = check(
            OWN,
            FederationMode::Allowlist,
            lines("good.example\n\nnot a domain\n"),
        )
        .unwrap_err();
        assert_eq!(e.index(), Some(2), "the third line, blank ones counted");
        assert_eq!(e.code(), "invalid_domain");
        assert!(
            e.to_string()
                .starts_with("“not a domain”: This is not a valid domain name."),
            "{e}"
        );
        for bad in [
            "localhost",
            "192.0.2.1",
            "[::1]",
            "a..b.example",
            "*.example.org",
        ] {
            assert!(
                matches!(
                    check(OWN, FederationMode::Open, lines(bad)),
                    Err(FederationError::BadDomain { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_domain_itself_is_refused_with_why() {
        let e = check(
            OWN,
            FederationMode::Allowlist,
            lines("a.example\nChat.Example.com"),
        )
        .unwrap_err();
        assert_eq!(
            e,
            FederationError::OwnDomain {
                index: 1,
                domain: OWN.into()
            }
        );
        assert_eq!(e.code(), "own_domain");
        assert!(e.to_string().contains("always talks with itself"));
    }

    #[test]
    fn at_most_a_hundred_domains_after_repeats_are_dropped() {
        let hundred: String = (0..100).map(|i| format!("d{i}.example\n")).collect();
        let with_repeats = format!("{hundred}{hundred}");
        assert_eq!(
            check(OWN, FederationMode::Allowlist, lines(&with_repeats))
                .unwrap()
                .allow
                .len(),
            100
        );
        let more = format!("{hundred}d100.example");
        let e = check(OWN, FederationMode::Allowlist, lines(&more)).unwrap_err();
        assert_eq!(e, FederationError::TooMany { count: 101 });
        assert_eq!(e.code(), "too_many_domains");
    }

    #[test]
    fn the_spec_gets_federation_off_only_when_closed_and_the_list_only_when_allow_listed() {
        let allow = vec!["partner.example".to_string()];
        let with = |mode| Federation {
            mode,
            allow: allow.clone(),
        };
        assert_eq!(with(FederationMode::Open).features(), (true, vec![]));
        assert_eq!(
            with(FederationMode::Allowlist).features(),
            (true, allow.clone())
        );
        assert_eq!(with(FederationMode::Closed).features(), (false, vec![]));
        // A list is kept while another mode is chosen.
        let closed = check(OWN, FederationMode::Closed, lines("partner.example")).unwrap();
        assert_eq!(closed.allow, allow);
        assert_eq!(closed.features(), (false, vec![]));
    }

    #[test]
    fn modes_read_as_stored_and_unknown_ones_as_open() {
        for mode in [
            FederationMode::Open,
            FederationMode::Allowlist,
            FederationMode::Closed,
        ] {
            assert_eq!(FederationMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(FederationMode::parse("everyone"), None);
        assert_eq!(Federation::from_stored("bogus", ""), Federation::default());
        assert_eq!(Federation::default().features(), (true, vec![]));
    }
}
