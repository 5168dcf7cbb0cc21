//! The node's Prometheus metrics, served on the HTTP port at `/metrics`.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VhostLabel {
    pub vhost: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub sessions: Family<VhostLabel, Gauge>,
    pub connections: Gauge,
    pub stanzas_in: Counter,
    pub stanzas_out: Counter,
    pub routed: Counter,
    pub auth: Family<OutcomeLabel, Counter>,
    pub queued: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rookery_node");
        let m = Self {
            sessions: Family::default(),
            connections: Gauge::default(),
            stanzas_in: Counter::default(),
            stanzas_out: Counter::default(),
            routed: Counter::default(),
            auth: Family::default(),
            queued: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "sessions",
            "Bound client sessions per vhost",
            m.sessions.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            m.connections.clone(),
        );
        registry.register(
            "stanzas_in",
            "Stanzas received from clients",
            m.stanzas_in.clone(),
        );
        registry.register(
            "stanzas_out",
            "Stanzas written to clients",
            m.stanzas_out.clone(),
        );
        registry.register(
            "stanzas_routed",
            "Stanzas routed between local sessions",
            m.routed.clone(),
        );
        registry.register("auth", "SASL authentications by outcome", m.auth.clone());
        registry.register(
            "delivery_queue",
            "Stanzas waiting in session queues",
            m.queued.clone(),
        );
        Self { registry, ..m }
    }

    pub fn stanza_routed(&self) {
        self.routed.inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
