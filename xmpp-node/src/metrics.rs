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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    /// `in` (a peer opened it) or `out` (this node did).
    pub direction: &'static str,
}

/// Server-to-server federation (`net::s2s_pool`, the s2s listeners).
#[derive(Clone, Debug, Default)]
pub struct S2sMetrics {
    /// Open authenticated streams by direction.
    pub streams: Family<DirectionLabel, Gauge>,
    /// Stanzas received from and sent to peers.
    pub stanzas: Family<DirectionLabel, Counter>,
    /// Incoming streams refused or closed for a limit, by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Stanzas waiting for outgoing streams.
    pub queue: Gauge,
    /// Stanzas bounced because their peer could not be reached (or its queue was full).
    pub bounced: Counter,
    /// Peer domains authenticated on incoming streams, by how: `certificate` (SASL
    /// EXTERNAL, XEP-0178) or `dialback` (XEP-0220).
    pub authenticated: Family<MethodLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    pub method: &'static str,
}

impl S2sMetrics {
    pub fn stream(&self, direction: &'static str) -> Gauge {
        self.streams
            .get_or_create(&DirectionLabel { direction })
            .clone()
    }

    pub fn stanza(&self, direction: &'static str) {
        self.stanzas
            .get_or_create(&DirectionLabel { direction })
            .inc();
    }

    pub fn authenticated(&self, method: &'static str) {
        self.authenticated
            .get_or_create(&MethodLabel { method })
            .inc();
    }

    pub fn refuse(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// The message archive's writer (XEP-0313, `store::archive`).
#[derive(Clone, Debug, Default)]
pub struct ArchiveMetrics {
    /// Rows written to the database.
    pub written: Counter,
    /// Rows waiting for the writer.
    pub queued: Gauge,
    /// Messages not archived, by reason (`queue_full`, `write_failed`, `quota`, `moving`).
    pub not_archived: Family<ReasonLabel, Counter>,
}

impl ArchiveMetrics {
    pub fn dropped(&self, reason: &'static str) {
        self.not_archived
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

pub struct Metrics {
    pub s2s: S2sMetrics,
    registry: Registry,
    pub archive: ArchiveMetrics,
    pub sessions: Family<VhostLabel, Gauge>,
    pub connections: Gauge,
    pub stanzas_in: Counter,
    pub stanzas_out: Counter,
    /// XEP-0357 notifications sent to app servers.
    pub push_sent: Counter,
    /// XEP-0357 registrations removed because their app server refused a notification.
    pub push_disabled: Counter,
    pub routed: Counter,
    pub auth: Family<OutcomeLabel, Counter>,
    pub queued: Gauge,
    /// Group chat rooms in memory (XEP-0045): every room in use, and the persistent rooms
    /// of the vhosts whose service was used since the start.
    pub muc_rooms: Gauge,
    /// Groupchat messages sent to rooms' occupants.
    pub muc_messages: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rookery_node");
        let m = Self {
            sessions: Family::default(),
            connections: Gauge::default(),
            stanzas_in: Counter::default(),
            stanzas_out: Counter::default(),
            push_sent: Counter::default(),
            push_disabled: Counter::default(),
            routed: Counter::default(),
            auth: Family::default(),
            queued: Gauge::default(),
            muc_rooms: Gauge::default(),
            muc_messages: Counter::default(),
            archive: ArchiveMetrics::default(),
            s2s: S2sMetrics::default(),
            registry: Registry::default(),
        };
        registry.register(
            "s2s_streams",
            "Open server-to-server streams by direction",
            m.s2s.streams.clone(),
        );
        registry.register(
            "s2s_stanzas",
            "Stanzas received from (in) and sent to (out) other servers",
            m.s2s.stanzas.clone(),
        );
        registry.register(
            "s2s_refused",
            "Incoming server-to-server streams refused or closed, by reason",
            m.s2s.refused.clone(),
        );
        registry.register(
            "s2s_queue",
            "Stanzas waiting for an outgoing server-to-server stream",
            m.s2s.queue.clone(),
        );
        registry.register(
            "s2s_authenticated",
            "Peer domains authenticated on incoming server-to-server streams, by method",
            m.s2s.authenticated.clone(),
        );
        registry.register(
            "s2s_bounced",
            "Stanzas bounced because the remote server could not be reached",
            m.s2s.bounced.clone(),
        );
        registry.register(
            "archive_written",
            "Messages written to archives (XEP-0313)",
            m.archive.written.clone(),
        );
        registry.register(
            "archive_queue",
            "Archived messages waiting to be written",
            m.archive.queued.clone(),
        );
        registry.register(
            "archive_dropped",
            "Messages that were to be archived and were not, by reason",
            m.archive.not_archived.clone(),
        );
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
            "push_sent",
            "Push notifications sent to app servers (XEP-0357)",
            m.push_sent.clone(),
        );
        registry.register(
            "push_disabled",
            "Push registrations removed because their app server refused a notification",
            m.push_disabled.clone(),
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
        registry.register(
            "muc_rooms",
            "Group chat rooms in memory (XEP-0045)",
            m.muc_rooms.clone(),
        );
        registry.register(
            "muc_messages",
            "Groupchat messages sent to rooms' occupants",
            m.muc_messages.clone(),
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
