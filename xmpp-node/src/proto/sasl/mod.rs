//! SASL authentication, server side (RFC 6120 §6, RFC 4422), without I/O.
//!
//! The stream code decodes the base64 of `<auth/>` and `<response/>` and hands the bytes
//! here; what comes back is the bytes of the next `<challenge/>` or `<success/>`, or a
//! [`SaslError`] whose [`condition`](SaslError::condition) names the `<failure/>` child.
//!
//! ```text
//!  offered(tls, cb) ─► <mechanisms/>
//!  <auth mechanism=SCRAM-*>  ─► ScramServer::client_first ─► (store: credentials of user)
//!                            ─► ScramServer::server_first ─► <challenge/>
//!  <response/>               ─► ScramServer::client_final ─► <success>v=…</success>
//!  <auth mechanism=PLAIN>    ─► parse_plain ─► (store) ─► verify_plain ─► <success/>
//! ```
//!
//! The node never stores passwords, only [`ScramCredentials`] derived from them; PLAIN is
//! checked by deriving the same keys from the password it carries. User names come out of
//! both mechanisms normalised as JID localparts (PRECIS UsernameCaseMapped), ready to look
//! up and to build the JID with.

mod plain;
mod scram;
#[cfg(test)]
pub(crate) use scram::test_support;

pub use plain::{Plain, parse_plain, verify_password, verify_plain};
pub use scram::{
    ChannelBinding, ClientFirst, DEFAULT_ITERATIONS, ScramCredentials, ScramHash, ScramServer,
    derive_credentials, new_salt,
};

use super::jid;

/// The SASL mechanisms the node implements, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// SCRAM-SHA-256 bound to the TLS channel (RFC 7677, RFC 9266 `tls-exporter`).
    ScramSha256Plus,
    /// SCRAM-SHA-256 (RFC 7677).
    ScramSha256,
    /// SCRAM-SHA-1 bound to the TLS channel (RFC 5802, RFC 9266 `tls-exporter`).
    ScramSha1Plus,
    /// SCRAM-SHA-1 (RFC 5802).
    ScramSha1,
    /// The password in clear (RFC 4616); only inside TLS.
    Plain,
}

impl Mechanism {
    /// Every mechanism, in preference order.
    pub const ALL: [Mechanism; 5] = [
        Mechanism::ScramSha256Plus,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1Plus,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The registered mechanism name, as in `<mechanism/>` and `<auth mechanism='…'/>`.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha256Plus => "SCRAM-SHA-256-PLUS",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha1Plus => "SCRAM-SHA-1-PLUS",
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism with this exact name (names are upper-case; no case folding).
    pub fn parse(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is a channel-binding (`-PLUS`) mechanism.
    pub fn is_plus(self) -> bool {
        matches!(self, Mechanism::ScramSha256Plus | Mechanism::ScramSha1Plus)
    }

    /// The hash of a SCRAM mechanism; `None` for PLAIN.
    pub fn scram_hash(self) -> Option<ScramHash> {
        match self {
            Mechanism::ScramSha256Plus | Mechanism::ScramSha256 => Some(ScramHash::Sha256),
            Mechanism::ScramSha1Plus | Mechanism::ScramSha1 => Some(ScramHash::Sha1),
            Mechanism::Plain => None,
        }
    }
}

/// The mechanisms to offer on a stream, in preference order: the `-PLUS` ones only when
/// the TLS layer gives `tls-exporter` channel-binding data, PLAIN only over TLS.
pub fn offered(tls: bool, channel_binding_available: bool) -> Vec<Mechanism> {
    Mechanism::ALL
        .into_iter()
        .filter(|m| !m.is_plus() || channel_binding_available)
        .filter(|m| *m != Mechanism::Plain || tls)
        .collect()
}

/// Why authentication failed: the SASL failure conditions of RFC 6120 §6.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SaslError {
    /// The client sent `<abort/>`.
    #[error("the client aborted the exchange")]
    Aborted,
    /// The account exists but is disabled.
    #[error("the account is disabled")]
    AccountDisabled,
    /// The credentials have expired.
    #[error("the credentials have expired")]
    CredentialsExpired,
    /// This mechanism needs TLS first.
    #[error("the mechanism needs an encrypted stream")]
    EncryptionRequired,
    /// Base64 data could not be decoded.
    #[error("the base64 data is incorrect")]
    IncorrectEncoding,
    /// The client may not act as the authzid it named.
    #[error("the authorization identity is not allowed")]
    InvalidAuthzid,
    /// The mechanism is unknown or not offered on this stream.
    #[error("the mechanism is not offered")]
    InvalidMechanism,
    /// The data breaks the mechanism's grammar, or comes out of order.
    #[error("the request is malformed")]
    MalformedRequest,
    /// The mechanism is weaker than this account's policy allows.
    #[error("the mechanism is too weak")]
    MechanismTooWeak,
    /// Wrong credentials, unknown user, or a failed channel binding: deliberately vague.
    #[error("not authorized")]
    NotAuthorized,
    /// The server could not complete the exchange (e.g. no randomness); try again later.
    #[error("temporary authentication failure")]
    TemporaryAuthFailure,
}

impl SaslError {
    /// The element name of the condition inside `<failure/>`, e.g. `not-authorized`.
    pub fn condition(&self) -> &'static str {
        match self {
            SaslError::Aborted => "aborted",
            SaslError::AccountDisabled => "account-disabled",
            SaslError::CredentialsExpired => "credentials-expired",
            SaslError::EncryptionRequired => "encryption-required",
            SaslError::IncorrectEncoding => "incorrect-encoding",
            SaslError::InvalidAuthzid => "invalid-authzid",
            SaslError::InvalidMechanism => "invalid-mechanism",
            SaslError::MalformedRequest => "malformed-request",
            SaslError::MechanismTooWeak => "mechanism-too-weak",
            SaslError::NotAuthorized => "not-authorized",
            SaslError::TemporaryAuthFailure => "temporary-auth-failure",
        }
    }
}

/// Normalises a SASL authentication identity into a JID localpart. A name that cannot be
/// a localpart cannot be an account, so it is `not-authorized`, like a wrong password.
fn normalize_authcid(name: &str) -> Result<String, SaslError> {
    jid::normalize_localpart(name).map_err(|_| SaslError::NotAuthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::parse(m.name()), Some(m));
        }
        assert_eq!(Mechanism::parse("scram-sha-1"), None);
        assert_eq!(Mechanism::parse("DIGEST-MD5"), None);
    }

    #[test]
    fn without_tls_only_unbound_scram_is_offered() {
        assert_eq!(
            offered(false, false),
            vec![Mechanism::ScramSha256, Mechanism::ScramSha1]
        );
    }

    #[test]
    fn tls_without_channel_binding_adds_plain_but_no_plus() {
        assert_eq!(
            offered(true, false),
            vec![
                Mechanism::ScramSha256,
                Mechanism::ScramSha1,
                Mechanism::Plain
            ]
        );
    }

    #[test]
    fn tls_with_channel_binding_offers_plus_first() {
        assert_eq!(offered(true, true), Mechanism::ALL.to_vec());
    }

    #[test]
    fn each_error_names_its_rfc_6120_condition() {
        assert_eq!(SaslError::NotAuthorized.condition(), "not-authorized");
        assert_eq!(SaslError::MalformedRequest.condition(), "malformed-request");
        assert_eq!(
            SaslError::TemporaryAuthFailure.condition(),
            "temporary-auth-failure"
        );
        assert_eq!(
            SaslError::IncorrectEncoding.condition(),
            "incorrect-encoding"
        );
    }

    #[test]
    fn a_user_name_is_normalised_as_a_localpart() {
        assert_eq!(normalize_authcid("Juliet").unwrap(), "juliet");
        assert_eq!(normalize_authcid("jul:iet"), Err(SaslError::NotAuthorized));
        assert_eq!(normalize_authcid(""), Err(SaslError::NotAuthorized));
    }
}
