//! Stripe webhook signatures, verified exactly as Stripe documents them, and the verified
//! body read into a small [`Event`].
//!
//! Stripe signs every delivery with the endpoint's secret (`whsec_…`) and sends
//! `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…][,v0=…]`, where each `v1` is
//! `HMAC-SHA256(secret, "{t}.{raw body}")`. Several `v1` entries appear while a secret is
//! being rolled; any one of them matching is enough. `v0` (and any other scheme) is ignored.
//! The timestamp is signed too, so a captured delivery can only be replayed inside the
//! tolerance window; replays inside it are absorbed by processing each event id once.
//!
//! Flow: the HTTP handler passes the header, the raw body bytes (never a re-serialised
//! JSON value) and the clock's `now` to [`construct_event`], which checks the signature,
//! then the timestamp, then parses the body. The event is read with `serde_json`, not with
//! async-stripe's generated event types, so new API versions and event types never make
//! a verified delivery unreadable.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's own libraries accept deliveries signed at most five minutes ago.
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Why a webhook delivery was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    #[error("the Stripe-Signature header is missing")]
    MissingHeader,
    #[error("the Stripe-Signature header is malformed")]
    MalformedHeader,
    #[error("the Stripe-Signature header has no v1 signature")]
    NoV1Signature,
    #[error("no v1 signature matches the payload")]
    SignatureMismatch,
    #[error("the signature timestamp {timestamp} is more than {tolerance_secs} s away from {now}")]
    TimestampOutsideTolerance {
        timestamp: i64,
        now: i64,
        tolerance_secs: u64,
    },
    /// The signature was good but the body is not an event Stripe would send.
    #[error("the event body is invalid: {0}")]
    InvalidPayload(String),
}

/// A verified Stripe event: the envelope fields Rookery acts on, and the object it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `evt_…`: the key that makes processing exactly-once.
    pub id: String,
    /// The event's `type`, e.g. `checkout.session.completed`.
    pub kind: String,
    /// When Stripe created the event (Unix seconds).
    pub created: i64,
    /// `data.object`: the checkout session, invoice or subscription the event is about.
    pub data_object: serde_json::Value,
}

impl Event {
    /// Reads an event body. Unknown fields are ignored; `id`, `type`, `created` and
    /// `data.object` are required.
    pub fn from_json(payload: &[u8]) -> Result<Event, WebhookError> {
        #[derive(serde::Deserialize)]
        struct Envelope {
            id: String,
            #[serde(rename = "type")]
            kind: String,
            created: i64,
            data: Data,
        }
        #[derive(serde::Deserialize)]
        struct Data {
            object: serde_json::Value,
        }
        let envelope: Envelope = serde_json::from_slice(payload)
            .map_err(|e| WebhookError::InvalidPayload(e.to_string()))?;
        if !envelope.data.object.is_object() {
            return Err(WebhookError::InvalidPayload(
                "data.object is not an object".into(),
            ));
        }
        Ok(Event {
            id: envelope.id,
            kind: envelope.kind,
            created: envelope.created,
            data_object: envelope.data.object,
        })
    }

    /// A string field of the object, or the `id` of an expanded object in that field
    /// (`customer`, `subscription`, `client_reference_id`, …).
    pub fn object_str(&self, key: &str) -> Option<&str> {
        id_of(self.data_object.get(key)?)
    }

    /// A value of the object's `metadata`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.data_object.get("metadata")?.get(key)?.as_str()
    }

    /// The subscription the object belongs to, wherever this API version puts it: the
    /// object itself for `customer.subscription.*`, `subscription` on checkout sessions
    /// (and on invoices before API version 2025-03-31), `parent.subscription_details`
    /// on invoices after it.
    pub fn subscription_id(&self) -> Option<&str> {
        let object = &self.data_object;
        if object.get("object").and_then(|o| o.as_str()) == Some("subscription") {
            return object.get("id")?.as_str();
        }
        self.object_str("subscription").or_else(|| {
            id_of(
                object
                    .get("parent")?
                    .get("subscription_details")?
                    .get("subscription")?,
            )
        })
    }

    /// The price of a subscription's first item (`items.data[0].price`, an id or the
    /// embedded price object), on `customer.subscription.*` events: what the customer pays
    /// for now, whether the change came from the panel or from Stripe's customer portal.
    pub fn subscription_price(&self) -> Option<&str> {
        let object = &self.data_object;
        if object.get("object").and_then(|o| o.as_str()) != Some("subscription") {
            return None;
        }
        id_of(object.get("items")?.get("data")?.get(0)?.get("price")?)
    }
}

/// A field holding either an id or an expanded object with an `id`.
fn id_of(value: &serde_json::Value) -> Option<&str> {
    value
        .as_str()
        .or_else(|| value.get("id").and_then(|id| id.as_str()))
}

/// Checks a delivery and reads its event, with the default tolerance of
/// [`DEFAULT_TOLERANCE_SECS`]. `header` is the `Stripe-Signature` header (`None` when the
/// request had none), `payload` the raw body, `now` Unix seconds from the panel's clock.
pub fn construct_event(
    header: Option<&str>,
    payload: &[u8],
    secret: &str,
    now: i64,
) -> Result<Event, WebhookError> {
    verify_signature(header, payload, secret, now, DEFAULT_TOLERANCE_SECS)?;
    Event::from_json(payload)
}

/// Checks the `Stripe-Signature` header of a delivery: some `v1` signature must be the
/// HMAC-SHA256 of `"{t}.{payload}"` under `secret`, and `t` must be within
/// `tolerance_secs` of `now` (either way: a timestamp from the future is as suspect as a
/// stale one). Returns the signed timestamp.
pub fn verify_signature(
    header: Option<&str>,
    payload: &[u8],
    secret: &str,
    now: i64,
    tolerance_secs: u64,
) -> Result<i64, WebhookError> {
    let header = header.ok_or(WebhookError::MissingHeader)?;
    let parsed = SignatureHeader::parse(header)?;
    if parsed.v1.is_empty() {
        return Err(WebhookError::NoV1Signature);
    }
    let expected = mac(secret, parsed.timestamp, payload);
    // Every candidate is compared in constant time; `fold` keeps the loop from stopping
    // early at the first match.
    let matched = parsed
        .v1
        .iter()
        .fold(subtle::Choice::from(0), |acc, candidate| {
            acc | expected.as_slice().ct_eq(candidate.as_slice())
        });
    if !bool::from(matched) {
        return Err(WebhookError::SignatureMismatch);
    }
    if now.abs_diff(parsed.timestamp) > tolerance_secs {
        return Err(WebhookError::TimestampOutsideTolerance {
            timestamp: parsed.timestamp,
            now,
            tolerance_secs,
        });
    }
    Ok(parsed.timestamp)
}

/// The `Stripe-Signature` header Stripe would send for `payload` signed at `timestamp`:
/// `t={timestamp},v1={hex}`. For tests and the fake Stripe.
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, payload))
    )
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Vec<u8> {
    // Stripe keys the HMAC with the secret string as it is, `whsec_` prefix included.
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize().into_bytes().to_vec()
}

/// The parts of a `Stripe-Signature` header that matter.
struct SignatureHeader {
    timestamp: i64,
    /// Decoded `v1` signatures; entries that are not hex can never match and are dropped.
    v1: Vec<Vec<u8>>,
}

impl SignatureHeader {
    fn parse(header: &str) -> Result<SignatureHeader, WebhookError> {
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for item in header.split(',') {
            let (key, value) = item
                .trim()
                .split_once('=')
                .ok_or(WebhookError::MalformedHeader)?;
            match key {
                "t" => {
                    let t = value
                        .parse::<i64>()
                        .map_err(|_| WebhookError::MalformedHeader)?;
                    if timestamp.replace(t).is_some() {
                        return Err(WebhookError::MalformedHeader);
                    }
                }
                "v1" => {
                    if let Ok(bytes) = hex::decode(value) {
                        v1.push(bytes);
                    }
                }
                // v0 (test-mode legacy) and future schemes are not ours to check.
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(WebhookError::MalformedHeader)?;
        Ok(SignatureHeader { timestamp, v1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_790_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"invoice.paid","created":1790000000,"livemode":false,"api_version":"2026-09-30.endive","data":{"object":{"id":"in_1","object":"invoice","customer":"cus_1","parent":{"type":"subscription_details","subscription_details":{"subscription":"sub_1","metadata":{"domain_id":"d1"}}}}}}"#;

    fn verify(header: &str, body: &[u8]) -> Result<i64, WebhookError> {
        verify_signature(Some(header), body, SECRET, NOW, DEFAULT_TOLERANCE_SECS)
    }

    #[test]
    fn a_delivery_signed_with_the_endpoint_secret_verifies_and_parses() {
        let header = sign(SECRET, NOW - 10, BODY);
        let event = construct_event(Some(&header), BODY, SECRET, NOW).unwrap();
        assert_eq!(event.id, "evt_1");
        assert_eq!(event.kind, "invoice.paid");
        assert_eq!(event.created, 1_790_000_000);
        assert_eq!(event.object_str("id"), Some("in_1"));
        assert_eq!(event.object_str("customer"), Some("cus_1"));
        assert_eq!(event.subscription_id(), Some("sub_1"));
    }

    #[test]
    fn the_signature_matches_stripes_documented_computation() {
        // `printf "1790000000.{}" | openssl dgst -sha256 -hmac whsec_test_secret`
        let header = sign(SECRET, NOW, b"{}");
        assert_eq!(
            header,
            "t=1790000000,v1=1b80a4caddd71039bba323a0d18518a16f0f38a4a10c2deed56c9fe8f40a3d90"
        );
    }

    #[test]
    fn a_delivery_signed_with_another_secret_is_refused() {
        let header = sign("whsec_someone_else", NOW, BODY);
        assert_eq!(verify(&header, BODY), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn an_altered_body_is_refused() {
        let header = sign(SECRET, NOW, BODY);
        let altered = String::from_utf8_lossy(BODY).replace("in_1", "in_2");
        assert_eq!(
            verify(&header, altered.as_bytes()),
            Err(WebhookError::SignatureMismatch)
        );
    }

    #[test]
    fn an_altered_timestamp_is_refused() {
        let header =
            sign(SECRET, NOW, BODY).replace(&format!("t={NOW}"), &format!("t={}", NOW + 1));
        assert_eq!(verify(&header, BODY), Err(WebhookError::SignatureMismatch));
    }

    #[test]
    fn a_stale_delivery_is_refused_even_when_correctly_signed() {
        let at = NOW - 301;
        let header = sign(SECRET, at, BODY);
        assert_eq!(
            verify(&header, BODY),
            Err(WebhookError::TimestampOutsideTolerance {
                timestamp: at,
                now: NOW,
                tolerance_secs: 300
            })
        );
        // Exactly at the edge of the window is still accepted.
        assert_eq!(verify(&sign(SECRET, NOW - 300, BODY), BODY), Ok(NOW - 300));
    }

    #[test]
    fn a_delivery_from_the_future_is_refused() {
        let header = sign(SECRET, NOW + 301, BODY);
        assert!(matches!(
            verify(&header, BODY),
            Err(WebhookError::TimestampOutsideTolerance { .. })
        ));
        assert!(verify(&sign(SECRET, NOW + 60, BODY), BODY).is_ok());
    }

    #[test]
    fn the_tolerance_window_is_configurable() {
        let header = sign(SECRET, NOW - 1000, BODY);
        assert!(verify_signature(Some(&header), BODY, SECRET, NOW, 3600).is_ok());
    }

    #[test]
    fn any_matching_v1_signature_among_several_is_enough() {
        let good = sign(SECRET, NOW, BODY);
        let good_hex = good.split_once("v1=").unwrap().1;
        let wrong_hex = hex::encode([0u8; 32]);
        let header = format!("t={NOW},v1={wrong_hex},v1={good_hex},v0={wrong_hex}");
        assert_eq!(verify(&header, BODY), Ok(NOW));
        let header = format!("t={NOW}, v1={wrong_hex}, v1=not-hex, v1={good_hex}");
        assert_eq!(verify(&header, BODY), Ok(NOW));
    }

    #[test]
    fn a_header_with_only_v0_signatures_has_no_v1_signature() {
        let good = sign(SECRET, NOW, BODY);
        let good_hex = good.split_once("v1=").unwrap().1;
        assert_eq!(
            verify(&format!("t={NOW},v0={good_hex}"), BODY),
            Err(WebhookError::NoV1Signature)
        );
        assert_eq!(
            verify(&format!("t={NOW}"), BODY),
            Err(WebhookError::NoV1Signature)
        );
    }

    #[test]
    fn a_missing_header_is_refused() {
        assert_eq!(
            verify_signature(None, BODY, SECRET, NOW, DEFAULT_TOLERANCE_SECS),
            Err(WebhookError::MissingHeader)
        );
    }

    #[test]
    fn malformed_headers_are_refused() {
        let v1 = hex::encode([0u8; 32]);
        for header in [
            "".to_string(),
            "garbage".to_string(),
            format!("v1={v1}"),
            format!("t=yesterday,v1={v1}"),
            format!("t={NOW},t={NOW},v1={v1}"),
            format!("t={NOW},v1={v1},"),
            format!("t={NOW};v1={v1}"),
        ] {
            assert_eq!(
                verify(&header, BODY),
                Err(WebhookError::MalformedHeader),
                "header {header:?}"
            );
        }
    }

    #[test]
    fn a_verified_body_that_is_not_an_event_is_refused() {
        let body = br#"{"id":"evt_1","type":"x"}"#;
        let header = sign(SECRET, NOW, body);
        assert!(matches!(
            construct_event(Some(&header), body, SECRET, NOW),
            Err(WebhookError::InvalidPayload(_))
        ));
    }

    #[test]
    fn events_of_any_type_and_api_version_parse() {
        let body = br#"{"id":"evt_2","object":"event","type":"some.future.event","created":5,"api_version":"2099-01-01.zeta","data":{"object":{"id":"x_1","object":"thing","new_field":[1,2]},"previous_attributes":{}},"request":{"id":null}}"#;
        let event = Event::from_json(body).unwrap();
        assert_eq!(event.kind, "some.future.event");
        assert_eq!(event.data_object["new_field"][1], 2);
    }

    #[test]
    fn the_subscription_is_found_wherever_the_api_version_puts_it() {
        let event = |object: &str| {
            Event::from_json(
                format!(r#"{{"id":"evt","type":"t","created":1,"data":{{"object":{object}}}}}"#)
                    .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(
            event(r#"{"id":"sub_1","object":"subscription"}"#).subscription_id(),
            Some("sub_1")
        );
        assert_eq!(
            event(r#"{"id":"cs_1","object":"checkout.session","subscription":"sub_2","metadata":{"domain_id":"d"}}"#)
                .subscription_id(),
            Some("sub_2")
        );
        assert_eq!(
            event(r#"{"id":"in_1","object":"invoice","subscription":{"id":"sub_3"}}"#)
                .subscription_id(),
            Some("sub_3")
        );
        let checkout =
            event(r#"{"id":"cs_1","object":"checkout.session","metadata":{"domain_id":"d"}}"#);
        assert_eq!(checkout.subscription_id(), None);
        assert_eq!(checkout.metadata("domain_id"), Some("d"));
    }

    #[test]
    fn a_subscriptions_price_is_its_first_items_embedded_or_bare() {
        let event = |object: &str| {
            Event::from_json(
                format!(r#"{{"id":"evt","type":"t","created":1,"data":{{"object":{object}}}}}"#)
                    .as_bytes(),
            )
            .unwrap()
        };
        let embedded = r#"{"id":"sub_1","object":"subscription","items":{"object":"list","data":[{"id":"si_1","price":{"id":"price_pro","object":"price"}},{"id":"si_2","price":{"id":"price_other"}}]}}"#;
        assert_eq!(event(embedded).subscription_price(), Some("price_pro"));
        let bare = r#"{"id":"sub_1","object":"subscription","items":{"data":[{"id":"si_1","price":"price_team"}]}}"#;
        assert_eq!(event(bare).subscription_price(), Some("price_team"));
        let empty = r#"{"id":"sub_1","object":"subscription","items":{"data":[]}}"#;
        assert_eq!(event(empty).subscription_price(), None);
        let invoice = r#"{"id":"in_1","object":"invoice","items":{"data":[{"price":"price_x"}]}}"#;
        assert_eq!(event(invoice).subscription_price(), None);
    }
}
