//! Events as they leave the panel: one JSON envelope, the body of every webhook,
//!
//! ```json
//! {"type": "incident.opened", "id": "…", "created_at": 1764147600,
//!  "data": {"domain": "chat.example.com", "stage": "connect", …}}
//! ```
//!
//! and the short texts an email or a chat message says about it, made from the same data,
//! so the worker needs nothing but the stored payload.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::{format_ts, new_id};

/// An incident on a customer's domain opened.
pub const INCIDENT_OPENED: &str = "incident.opened";
/// An incident on a customer's domain closed.
pub const INCIDENT_CLOSED: &str = "incident.closed";
/// A node stopped answering the panel (admins only).
pub const NODE_DOWN: &str = "node.down";
/// A node answers again (admins only).
pub const NODE_UP: &str = "node.up";
/// The "Send a test alert" button.
pub const ALERT_TEST: &str = "alert.test";

/// The envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub event_type: String,
    /// The same on every retry and every channel: receivers deduplicate on it.
    pub id: String,
    /// Unix seconds, UTC.
    pub created_at: i64,
    pub data: Value,
}

impl Event {
    pub fn new(event_type: &str, created_at: i64, data: impl Serialize) -> Self {
        Self {
            event_type: event_type.into(),
            id: new_id(),
            created_at,
            data: serde_json::to_value(data).unwrap_or(Value::Null),
        }
    }

    /// An event whose id is derived from `key` (the same key, the same id), for events that
    /// may be raised again for the same thing: a Stripe event Stripe sends twice, or one
    /// whose processing crashed before it was recorded. The outbox keeps one delivery per
    /// event id and destination, so a repeat queues nothing.
    pub fn derived(event_type: &str, key: &str, created_at: i64, data: impl Serialize) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("{event_type}\n{key}").as_bytes());
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self {
            id: uuid::Builder::from_sha1_bytes(bytes)
                .into_uuid()
                .to_string(),
            ..Self::new(event_type, created_at, data)
        }
    }

    /// The JSON body, exactly as signed and sent.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event serialises")
    }
}

/// What `incident.opened` and `incident.closed` carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentData {
    pub domain: String,
    pub domain_id: String,
    pub incident_id: String,
    /// The probe step that failed: connect, tls, auth, bind, ping, message or timeout.
    pub stage: String,
    pub error: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub duration_secs: Option<i64>,
    /// The domain's page in the panel.
    pub status_url: String,
}

/// What `node.down` and `node.up` carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeData {
    pub node: String,
    pub node_id: String,
    pub error: Option<String>,
    pub at: i64,
    /// The node's page in the panel.
    pub status_url: String,
}

/// What `alert.test` carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestData {
    pub organisation: String,
    pub message: String,
}

/// A subject line and a text, for email and chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub subject: String,
    pub body: String,
}

/// What people read about an event (from its stored JSON).
pub fn describe(event: &Event) -> Text {
    let parsed = match event.event_type.as_str() {
        INCIDENT_OPENED | INCIDENT_CLOSED => {
            serde_json::from_value::<IncidentData>(event.data.clone())
                .ok()
                .map(|d| incident_text(&event.event_type, &d))
        }
        NODE_DOWN | NODE_UP => serde_json::from_value::<NodeData>(event.data.clone())
            .ok()
            .map(|d| node_text(&event.event_type, &d)),
        ALERT_TEST => serde_json::from_value::<TestData>(event.data.clone())
            .ok()
            .map(|d| Text {
                subject: "[Rookery] Test alert".into(),
                body: d.message,
            }),
        _ => None,
    };
    parsed.unwrap_or_else(|| Text {
        subject: format!("[Rookery] {}", event.event_type),
        body: serde_json::to_string_pretty(&event.data).unwrap_or_default(),
    })
}

fn incident_text(kind: &str, d: &IncidentData) -> Text {
    let reason = d
        .error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    if kind == INCIDENT_OPENED {
        Text {
            subject: format!("[Rookery] {} is down", d.domain),
            body: format!(
                "{domain} is down: logins fail at the {stage} step{reason} since {since}.\n{url}",
                domain = d.domain,
                stage = d.stage,
                since = format_ts(d.started_at),
                url = d.status_url
            ),
        }
    } else {
        let lasted = d
            .duration_secs
            .map(|s| format!(" after {}", human_duration(s)))
            .unwrap_or_default();
        Text {
            subject: format!("[Rookery] {} is back up", d.domain),
            body: format!(
                "{domain} is back up{lasted}: logins work again since {at}. The incident started {since} at the {stage} step{reason}.\n{url}",
                domain = d.domain,
                at = d.ended_at.map(format_ts).unwrap_or_default(),
                since = format_ts(d.started_at),
                stage = d.stage,
                url = d.status_url
            ),
        }
    }
}

fn node_text(kind: &str, d: &NodeData) -> Text {
    if kind == NODE_DOWN {
        let reason = d
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        Text {
            subject: format!("[Rookery] node {} is down", d.node),
            body: format!(
                "Node {} stopped answering the panel at {}{reason}.\n{}",
                d.node,
                format_ts(d.at),
                d.status_url
            ),
        }
    } else {
        Text {
            subject: format!("[Rookery] node {} is back up", d.node),
            body: format!(
                "Node {} answers the panel again since {}.\n{}",
                d.node,
                format_ts(d.at),
                d.status_url
            ),
        }
    }
}

/// `45 s`, `3 min`, `2 h 5 min`, `3 d 4 h`.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 if (secs % 3600) / 60 == 0 => format!("{} h", secs / 3600),
        3600..86_400 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        _ if (secs % 86_400) / 3600 == 0 => format!("{} d", secs / 86_400),
        _ => format!("{} d {} h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_event_id_follows_from_its_type_and_key_alone() {
        let a = Event::derived("invoice.paid", "evt_1", 10, serde_json::json!({"n": 1}));
        let again = Event::derived("invoice.paid", "evt_1", 99, serde_json::json!({"n": 2}));
        assert_eq!(a.id, again.id, "a repeat of the same Stripe event");
        assert_eq!(a.id.len(), 36, "shaped like the other event ids: {}", a.id);
        assert_ne!(a.id, Event::derived("invoice.paid", "evt_2", 10, 1).id);
        assert_ne!(a.id, Event::derived("domain.up", "evt_1", 10, 1).id);
        assert_ne!(a.id, Event::new("invoice.paid", 10, 1).id);
        assert_eq!(a.event_type, "invoice.paid");
        assert_eq!(a.created_at, 10);
    }

    fn incident(ended: Option<i64>) -> IncidentData {
        IncidentData {
            domain: "chat.example.com".into(),
            domain_id: "d1".into(),
            incident_id: "i1".into(),
            stage: "connect".into(),
            error: Some("cannot connect to 10.0.0.5:5222: Connection refused".into()),
            started_at: 1_764_147_600,
            ended_at: ended,
            duration_secs: ended.map(|e| e - 1_764_147_600),
            status_url: "https://panel.example.com/o/o1/domains/d1".into(),
        }
    }

    #[test]
    fn the_envelope_has_type_id_created_at_and_data() {
        let event = Event::new(INCIDENT_OPENED, 1_764_147_601, incident(None));
        let json: Value = serde_json::from_str(&event.to_json()).unwrap();
        assert_eq!(json["type"], "incident.opened");
        assert_eq!(json["id"], event.id.as_str());
        assert_eq!(json["created_at"], 1_764_147_601);
        assert_eq!(json["data"]["domain"], "chat.example.com");
        assert_eq!(json["data"]["stage"], "connect");
        assert_eq!(json["data"]["ended_at"], Value::Null);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn incident_texts_say_what_failed_since_when_and_for_how_long() {
        let opened = describe(&Event::new(INCIDENT_OPENED, 0, incident(None)));
        assert_eq!(opened.subject, "[Rookery] chat.example.com is down");
        assert_eq!(
            opened.body,
            "chat.example.com is down: logins fail at the connect step (cannot connect to 10.0.0.5:5222: Connection refused) since 2025-11-26 09:00 UTC.\nhttps://panel.example.com/o/o1/domains/d1"
        );
        let closed = describe(&Event::new(
            INCIDENT_CLOSED,
            0,
            incident(Some(1_764_147_600 + 185)),
        ));
        assert_eq!(closed.subject, "[Rookery] chat.example.com is back up");
        assert!(
            closed
                .body
                .starts_with("chat.example.com is back up after 3 min: logins work again since 2025-11-26 09:03 UTC."),
            "{}",
            closed.body
        );
    }

    #[test]
    fn unknown_events_fall_back_to_their_type_and_data() {
        let event = Event::new(
            "domain.created",
            0,
            serde_json::json!({"domain": "x.example"}),
        );
        let text = describe(&event);
        assert_eq!(text.subject, "[Rookery] domain.created");
        assert!(text.body.contains("x.example"));
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(45), "45 s");
        assert_eq!(human_duration(185), "3 min");
        assert_eq!(human_duration(7200), "2 h");
        assert_eq!(human_duration(7500), "2 h 5 min");
        assert_eq!(human_duration(86_400 * 3 + 3600 * 4), "3 d 4 h");
        assert_eq!(human_duration(-5), "0 s");
    }
}
