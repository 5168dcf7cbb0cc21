//! SASL PLAIN (RFC 4616): one message, `[authzid] NUL authcid NUL password`, in UTF-8.
//!
//! [`parse_plain`] splits and checks the message and normalises the user name; the stream
//! code then fetches that user's [`ScramCredentials`] and calls [`verify_plain`], which
//! derives SCRAM keys from the password and compares them with the stored ones, so PLAIN
//! needs no stored password. The node offers PLAIN only inside TLS.

use subtle::ConstantTimeEq;

use super::scram::{self, ScramCredentials};
use super::{SaslError, normalize_authcid};

/// A parsed PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub struct Plain {
    /// The identity to act as, if the client named one (an XMPP JID, not yet parsed).
    pub authzid: Option<String>,
    /// The user name, normalised as a JID localpart.
    pub authcid: String,
    /// The password as sent; [`verify_plain`] normalises it.
    pub password: String,
}

impl std::fmt::Debug for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plain")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Parses a PLAIN message (RFC 4616 §2). A missing or empty user name or password, an
/// extra NUL, or bytes that are not UTF-8 are `malformed-request`; a user name that cannot
/// be a JID localpart is `not-authorized`. An empty authzid means none.
pub fn parse_plain(message: &[u8]) -> Result<Plain, SaslError> {
    let message = std::str::from_utf8(message).map_err(|_| SaslError::MalformedRequest)?;
    let mut parts = message.split('\0');
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedRequest);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(SaslError::MalformedRequest);
    }
    Ok(Plain {
        authzid: (!authzid.is_empty()).then(|| authzid.to_owned()),
        authcid: normalize_authcid(authcid)?,
        password: password.to_owned(),
    })
}

/// Whether `password` matches `credentials`: the SCRAM keys are derived again from it
/// and the stored key compared in constant time.
pub fn verify_password(credentials: &ScramCredentials, password: &str) -> bool {
    match scram::derive_credentials(
        credentials.hash,
        password,
        &credentials.salt,
        credentials.iterations,
    ) {
        Ok(derived) => bool::from(derived.stored_key.ct_eq(&credentials.stored_key)),
        Err(_) => false,
    }
}

/// Checks a PLAIN password against the user's credentials (`None`: no such user). An
/// unknown user costs the same key derivation as a known one and fails the same way, so
/// timing does not tell which user names exist.
pub fn verify_plain(
    credentials: Option<&ScramCredentials>,
    password: &str,
) -> Result<(), SaslError> {
    let matches = match credentials {
        Some(credentials) => verify_password(credentials, password),
        None => {
            // The answer is known; the work is done so that it takes as long.
            let dummy_salt = [0u8; scram::SALT_LEN];
            let _ = scram::derive_credentials(
                scram::ScramHash::Sha256,
                password,
                &dummy_salt,
                scram::DEFAULT_ITERATIONS,
            );
            false
        }
    };
    if matches {
        Ok(())
    } else {
        Err(SaslError::NotAuthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::sasl::ScramHash;

    #[test]
    fn a_message_without_authzid_has_none() {
        let plain = parse_plain(b"\0juliet\0r0m30").unwrap();
        assert_eq!(plain.authzid, None);
        assert_eq!(plain.authcid, "juliet");
        assert_eq!(plain.password, "r0m30");
    }

    #[test]
    fn a_message_with_authzid_keeps_it() {
        let plain = parse_plain(b"juliet@example.com\0juliet\0r0m30").unwrap();
        assert_eq!(plain.authzid.as_deref(), Some("juliet@example.com"));
        assert_eq!(plain.authcid, "juliet");
    }

    #[test]
    fn the_user_name_is_case_folded() {
        assert_eq!(parse_plain(b"\0Juliet\0pw").unwrap().authcid, "juliet");
    }

    #[test]
    fn the_password_is_kept_as_sent() {
        assert_eq!(
            parse_plain("\0juliet\0Pass Wörd".as_bytes())
                .unwrap()
                .password,
            "Pass Wörd"
        );
    }

    #[test]
    fn missing_parts_are_malformed() {
        for bad in [
            &b""[..],
            b"juliet",
            b"\0juliet",
            b"\0\0pw",
            b"\0juliet\0",
            b"a\0b\0c\0d",
        ] {
            assert_eq!(
                parse_plain(bad),
                Err(SaslError::MalformedRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_message_that_is_not_utf8_is_malformed() {
        assert_eq!(
            parse_plain(b"\0juliet\0\xff\xfe"),
            Err(SaslError::MalformedRequest)
        );
    }

    #[test]
    fn a_user_name_that_cannot_be_a_localpart_is_not_authorized() {
        assert_eq!(parse_plain(b"\0jul@iet\0pw"), Err(SaslError::NotAuthorized));
        assert_eq!(parse_plain(b"\0jul iet\0pw"), Err(SaslError::NotAuthorized));
    }

    #[test]
    fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let creds = scram::derive_credentials(ScramHash::Sha256, "pencil", b"salt-salt-salt-s", 64)
            .unwrap();
        assert!(verify_password(&creds, "pencil"));
        assert!(!verify_password(&creds, "Pencil"));
        assert_eq!(verify_plain(Some(&creds), "pencil"), Ok(()));
        assert_eq!(
            verify_plain(Some(&creds), "pen"),
            Err(SaslError::NotAuthorized)
        );
    }

    #[test]
    fn an_unknown_user_is_not_authorized() {
        assert_eq!(verify_plain(None, "pencil"), Err(SaslError::NotAuthorized));
    }

    #[test]
    fn the_debug_form_hides_the_password() {
        let plain = parse_plain(b"\0juliet\0secret").unwrap();
        assert!(!format!("{plain:?}").contains("secret"));
    }
}
