//! The signature on every outgoing webhook, in the style of Stripe's:
//!
//! ```text
//! Rookery-Signature: t=1764147600,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd
//!                      │            └ hex HMAC-SHA256(secret, "1764147600." + raw body)
//!                      └ Unix seconds when this attempt was signed
//! ```
//!
//! The key is the whole secret string as the panel shows it (`whsec_…`). A receiver
//! recomputes the HMAC over `"<t>.<body>"` with the exact bytes it received, compares in
//! constant time against any `v1` in the header, and refuses a `t` too far from its clock
//! (replays). Pure functions: the worker signs, tests and receivers verify.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "Rookery-Signature";
/// The header carrying the event's id (the same on every retry: receivers deduplicate on it).
pub const EVENT_ID_HEADER: &str = "Rookery-Event-Id";
/// Prefix of the signing secrets the panel makes.
pub const SECRET_PREFIX: &str = "whsec_";

/// A fresh signing secret: `whsec_` and 256 random bits.
pub fn new_secret() -> String {
    format!("{SECRET_PREFIX}{}", crate::clock::new_token())
}

/// Hex HMAC-SHA256 of `"<t>.<body>"` under `secret`.
fn mac_hex(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The `Rookery-Signature` value for `body` signed at `t`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    format!("t={t},v1={}", mac_hex(secret, t, body))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header has no t= or no v1=")]
    Malformed,
    #[error("the signature is {0} s away from now, more than the tolerance")]
    TooOld(i64),
    #[error("no v1 signature matches the body")]
    Mismatch,
}

/// Checks a `Rookery-Signature` header against the body as received, at `now`, allowing
/// `tolerance_secs` of clock difference. Several `v1=` (during a secret rotation on the
/// receiver's side) are fine: one must match.
pub fn verify(
    secret: &str,
    header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let mut t = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => candidates.push(v),
            _ => {}
        }
    }
    let (Some(t), false) = (t, candidates.is_empty()) else {
        return Err(VerifyError::Malformed);
    };
    if (now - t).abs() > tolerance_secs {
        return Err(VerifyError::TooOld(now - t));
    }
    let expected = mac_hex(secret, t, body);
    if candidates
        .iter()
        .any(|c| bool::from(c.as_bytes().ct_eq(expected.as_bytes())))
    {
        Ok(())
    } else {
        Err(VerifyError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_t_and_a_hex_hmac_of_the_timestamp_dot_body() {
        // Reference value: `printf '1764147600.{"a":1}' | openssl dgst -sha256 -hmac whsec_test`
        let header = sign("whsec_test", 1_764_147_600, br#"{"a":1}"#);
        assert_eq!(
            header,
            "t=1764147600,v1=9d9750bc0288cf0b022e9f172566801272190f3f00258e408230732ce33d05de"
        );
        let (t, v1) = header.split_once(",v1=").unwrap();
        assert_eq!(t, "t=1764147600");
        assert_eq!(v1.len(), 64);
        assert!(
            v1.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }

    #[test]
    fn a_signature_verifies_with_the_same_secret_and_body_only() {
        let body = br#"{"type":"incident.opened"}"#;
        let header = sign("whsec_one", 1000, body);
        assert_eq!(verify("whsec_one", &header, body, 1000, 300), Ok(()));
        assert_eq!(verify("whsec_one", &header, body, 1299, 300), Ok(()));
        assert_eq!(
            verify("whsec_two", &header, body, 1000, 300),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(
                "whsec_one",
                &header,
                b"{\"type\":\"incident.closed\"}",
                1000,
                300
            ),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn an_old_or_malformed_signature_is_refused() {
        let body = b"{}";
        let header = sign("s", 1000, body);
        assert_eq!(
            verify("s", &header, body, 1301, 300),
            Err(VerifyError::TooOld(301))
        );
        assert_eq!(
            verify("s", "v1=abc", body, 1000, 300),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify("s", "t=1000", body, 1000, 300),
            Err(VerifyError::Malformed)
        );
        // Another timestamp with the same MAC does not pass: t is signed.
        let forged = header.replace("t=1000", "t=1001");
        assert_eq!(
            verify("s", &forged, body, 1000, 300),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn one_matching_v1_among_several_is_enough() {
        let body = b"x";
        let good = sign("s", 5, body);
        let v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t=5,v1={},v1={v1}", "0".repeat(64));
        assert_eq!(verify("s", &header, body, 5, 300), Ok(()));
    }

    #[test]
    fn new_secrets_are_prefixed_and_unique() {
        let (a, b) = (new_secret(), new_secret());
        assert!(a.starts_with("whsec_"));
        assert_eq!(a.len(), 6 + 43);
        assert_ne!(a, b);
    }
}
