//! Logging and metrics: `tracing` to the terminal (human-readable) or as JSON lines, and the
//! Prometheus registry behind `/metrics`.

use std::sync::Arc;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides the default filter.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    let registry = tracing_subscriber::registry().with(filter);
    // A second init (tests start many apps in one process) is harmless.
    let _ = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_target(false).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true))
            .try_init(),
    };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DomainLabels {
    pub domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub domain: String,
    pub outcome: &'static str,
}

/// The panel's metrics, registered once per application.
pub struct Metrics {
    pub registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Histogram,
    pub logins: Family<OutcomeLabels, Counter>,
    pub signups: Counter,
    pub mail: Family<OutcomeLabels, Counter>,
    pub active_sessions: Gauge,
    /// Probes by domain and outcome (ok, or the failing stage).
    pub probes: Family<ProbeLabels, Counter>,
    /// 1 when the domain's last probe succeeded, 0 when it failed.
    pub probe_up: Family<DomainLabels, Gauge>,
    /// The last probe's duration (a full login), milliseconds.
    pub probe_duration_ms: Family<DomainLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("rookery");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ]);
        let logins = Family::<OutcomeLabels, Counter>::default();
        let signups = Counter::default();
        let mail = Family::<OutcomeLabels, Counter>::default();
        let active_sessions = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests served",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to serve an HTTP request",
            http_duration.clone(),
        );
        registry.register("logins", "Log-in attempts by outcome", logins.clone());
        registry.register("signups", "Accounts created", signups.clone());
        registry.register(
            "mail",
            "Mail handed to the transport, by outcome",
            mail.clone(),
        );
        registry.register(
            "active_sessions",
            "Unexpired browser sessions (sampled at scrape)",
            active_sessions.clone(),
        );
        let probes = Family::<ProbeLabels, Counter>::default();
        let probe_up = Family::<DomainLabels, Gauge>::default();
        let probe_duration_ms = Family::<DomainLabels, Gauge>::default();
        registry.register(
            "probes",
            "Uptime probes by domain and outcome (ok or the failing stage)",
            probes.clone(),
        );
        registry.register(
            "probe_up",
            "1 when the domain's last probe logged in, 0 when it failed",
            probe_up.clone(),
        );
        registry.register(
            "probe_duration_milliseconds",
            "Duration of the domain's last probe (a full XMPP login)",
            probe_duration_ms.clone(),
        );
        Arc::new(Self {
            registry,
            probes,
            probe_up,
            probe_duration_ms,
            http_requests,
            http_duration,
            logins,
            signups,
            mail,
            active_sessions,
        })
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
