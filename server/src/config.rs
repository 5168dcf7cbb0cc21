//! Settings of the panel: built-in defaults, then a TOML file, then `ROOKERY_`-prefixed
//! environment variables (`__` separates nested keys, e.g. `ROOKERY_LOGIN_LIMITS__PER_IP`).
//!
//! The defaults run a demo on loopback with SQLite under `./data/` and no outside services.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// Everything the panel reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Address the HTTP server binds.
    pub listen: SocketAddr,
    /// The address people reach the panel at; used in emailed links. An `https://` URL
    /// marks session cookies `Secure`.
    pub public_url: String,
    /// `sqlite://…` or `postgres://…`. Empty: SQLite at `<data_dir>/rookery.db`.
    pub database_url: String,
    /// Where the embedded database and generated files live.
    pub data_dir: PathBuf,
    /// Connection pool size.
    pub database_max_connections: u32,
    /// Seconds a panel process holds a leader lease (reconciler, node poller, prober,
    /// sweeps) without renewing it; a standby panel takes over after at most this long.
    pub lease_secs: i64,
    /// SMTP submission URL understood by lettre, e.g. `smtps://user:pass@mail.example.com`
    /// or `smtp://mail.example.com:587?tls=required`. Empty: mail goes to the log and the
    /// admin outbox only.
    #[serde(serialize_with = "serialize_secret")]
    pub smtp_url: Option<SecretString>,
    /// The From header of mail the panel sends.
    pub mail_from: String,
    /// Trust the last address of `X-Forwarded-For` (set only behind a reverse proxy).
    pub behind_proxy: bool,
    /// Seals secrets the panel keeps (node secrets): 64 hex digits, the same for every
    /// panel instance. Empty: `<data_dir>/secret.key`, generated on first start.
    #[serde(serialize_with = "serialize_plain_secret")]
    pub secret_key: String,
    pub session: SessionSettings,
    pub login_limits: LoginLimits,
    pub password_hashing: HashingSettings,
    pub provisioning: ProvisioningSettings,
    pub local_node: LocalNodeSettings,
    pub dns: DnsSettings,
    pub stripe: StripeSettings,
    pub ordering: OrderingSettings,
    pub probe: ProbeSettings,
    pub alerts: AlertSettings,
    pub api: ApiSettings,
}

/// The REST API under `/api/v1` (see `crate::api`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiSettings {
    /// Requests one API key may make per minute (a fixed one-minute window per key, counted
    /// in each panel process); anonymous requests (the OpenAPI document) count per address.
    pub rate_limit_per_minute: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 600,
        }
    }
}

/// Alerts: incident alerts to customers (email, signed webhook, XMPP) and node alerts to
/// the platform's admins, sent from an outbox with retries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AlertSettings {
    /// Queue incident alerts to customers and node alerts to admins. The delivery worker
    /// runs in every panel process either way: it also sends the organisations' outbound
    /// webhooks (`/o/<org>/webhooks`), which this does not switch off.
    pub enabled: bool,
    /// A domain hosted on this platform whose system account `rookery-alerts` sends XMPP
    /// alerts (the panel creates it on the domain's node). Empty: no XMPP alerts.
    pub xmpp_sender_domain: String,
    /// Allow webhook URLs with `http://` and to loopback or private addresses (tests,
    /// private deployments). Off: `https://` to public addresses only.
    pub webhook_allow_local: bool,
    /// Seconds one webhook call may take.
    pub webhook_timeout_secs: u64,
    /// Seconds one XMPP alert (log-in, message, close) may take.
    pub xmpp_timeout_secs: u64,
    /// How often the worker looks for due deliveries, milliseconds (it is also woken when
    /// something is queued).
    pub poll_interval_ms: u64,
    /// Seconds a failing delivery keeps being retried before it is given up.
    pub give_up_after_secs: i64,
    /// The longest wait between two attempts of a delivery, seconds (the backoff is 10 s,
    /// 30 s, 2 min, 10 min, 30 min, then hourly). Tests set 1 to retry at once.
    pub max_retry_delay_secs: i64,
    /// Node alerts go to every admin's email, and here too when set: a webhook (signed
    /// with `admin_webhook_secret`) and a chat address.
    pub admin_webhook_url: String,
    #[serde(serialize_with = "serialize_plain_secret")]
    pub admin_webhook_secret: String,
    pub admin_xmpp_jid: String,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            xmpp_sender_domain: String::new(),
            webhook_allow_local: false,
            webhook_timeout_secs: 10,
            xmpp_timeout_secs: 15,
            poll_interval_ms: 1000,
            give_up_after_secs: 86_400,
            max_retry_delay_secs: 3600,
            admin_webhook_url: String::new(),
            admin_webhook_secret: String::new(),
            admin_xmpp_jid: String::new(),
        }
    }
}

/// The uptime prober: a real XMPP login to every active domain each interval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeSettings {
    pub enabled: bool,
    /// Seconds between two probes of one domain (down to 1 for tests).
    pub interval_secs: u64,
    /// A probe taking longer fails with the stage `timeout`.
    pub timeout_secs: u64,
    /// Probes in progress at once.
    pub concurrency: usize,
    /// Whether the panel itself probes (as one location); remote `rookery probe` processes
    /// are more locations.
    pub panel_probes: bool,
    /// The panel's location name in the results.
    pub location: String,
    /// Locations that must see a domain fail for a round to count as down; 0: a majority
    /// of the active locations.
    pub quorum: usize,
    /// PEM files of the CAs (or certificates) probes trust; empty: the public web PKI, plus,
    /// when the local node runs, its generated certificates (the demo).
    pub trust_roots: Vec<PathBuf>,
    /// Consecutive failed rounds that open an incident, and good ones that close it.
    pub open_after: usize,
    pub close_after: usize,
    /// Days raw results and rounds are kept (daily roll-ups are kept for good).
    pub retention_days: i64,
    /// Days hourly roll-ups are kept (the 24-hour and 7-day figures need 8).
    pub hourly_retention_days: i64,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_secs: 60,
            timeout_secs: 10,
            concurrency: 32,
            panel_probes: true,
            location: "panel".into(),
            quorum: 0,
            trust_roots: Vec::new(),
            open_after: 3,
            close_after: 2,
            retention_days: 30,
            hourly_retention_days: 35,
        }
    }
}

/// What customers may order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderingSettings {
    /// Domains nobody can order, with everything under them: special-use names, and the
    /// provider's own domains (the panel's host and the DNS zone are added automatically).
    pub reserved_domains: Vec<String>,
}

impl Default for OrderingSettings {
    fn default() -> Self {
        Self {
            reserved_domains: [
                "localhost",
                "invalid",
                "local",
                "onion",
                "arpa",
                "internal",
                "alt",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}
/// Billing through Stripe. Without a secret key billing is off and every plan is free
/// (the demo).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StripeSettings {
    /// Stripe's API; tests point it at a local fake.
    pub api_base: String,
    /// `sk_live_…` / `sk_test_…`. Empty: billing off.
    #[serde(serialize_with = "serialize_plain_secret")]
    pub secret_key: String,
    /// The webhook endpoint's signing secret (`whsec_…`).
    #[serde(serialize_with = "serialize_plain_secret")]
    pub webhook_secret: String,
    /// Seconds a signed webhook may be old (Stripe's libraries use 300).
    pub webhook_tolerance_secs: i64,
    /// Days a domain stays active after a failed payment before it is suspended.
    pub grace_days: i64,
    /// Days a cancelled domain's data is kept (and can be exported) before deletion.
    pub retention_days: i64,
}

impl StripeSettings {
    pub fn enabled(&self) -> bool {
        !self.secret_key.trim().is_empty()
    }
}

impl Default for StripeSettings {
    fn default() -> Self {
        Self {
            api_base: "https://api.stripe.com".into(),
            secret_key: String::new(),
            webhook_secret: String::new(),
            webhook_tolerance_secs: 300,
            grace_days: 7,
            retention_days: 30,
        }
    }
}

/// The node pool: placement rules, the reconciler and the health poller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvisioningSettings {
    /// `spread` (least loaded node first) or `pack` (fill nodes in turn).
    pub placement_policy: crate::nodes::placement::Policy,
    /// Share of every node's capacity kept free, percent; the pool page warns past it.
    pub headroom_percent: u8,
    /// Labels every node hosting customer domains must carry, e.g. `{ region = "eu" }`.
    pub required_labels: std::collections::BTreeMap<String, String>,
    /// How often the reconciler looks for work, milliseconds.
    pub reconcile_interval_ms: u64,
    /// How often every node is polled for status and usage, seconds.
    pub poll_interval_secs: u64,
    /// Missed polls in a row after which a node is marked down.
    pub down_after_misses: i64,
    /// Seconds a join token stays valid.
    pub join_token_ttl_secs: i64,
    /// Timeout of one call to a node, seconds.
    pub node_timeout_secs: u64,
    /// Longest wait between retries of a failing domain, seconds.
    pub max_retry_secs: i64,
}

/// A node started inside the panel process and enrolled in its pool: the demo's "panel +
/// a local node". Off in production (the pool is made of `rookery-node` machines).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LocalNodeSettings {
    pub enabled: bool,
    /// Its data (SQLite, certificates) lives here; empty: `<data_dir>/node`.
    pub data_dir: Option<PathBuf>,
    pub c2s_listen: SocketAddr,
    pub c2s_tls_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub control_listen: SocketAddr,
    /// The SOCKS5 bytestreams proxy (XEP-0065); None: none.
    pub proxy65_listen: Option<SocketAddr>,
    /// Server-to-server streams from other XMPP servers (federation); None: none come in
    /// (the local node's users can still reach other servers).
    pub s2s_listen: Option<SocketAddr>,
}

/// The DNS records customers create, and how the panel checks them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DnsSettings {
    /// The provider's zone: every domain gets a stable name `<label>.<provider_zone>` in
    /// it, which its SRV records point at (the demo's default only works on this machine).
    pub provider_zone: String,
    /// The DNS server "Check DNS" asks, over UDP and TCP, e.g. `192.0.2.53:53`. Empty: the
    /// system resolver from `/etc/resolv.conf`.
    pub resolver: Option<SocketAddr>,
    /// How long one look-up may take, seconds.
    pub timeout_secs: u64,
    /// Ports of every node, used in the SRV records: client STARTTLS, client direct TLS
    /// (XEP-0368) and server-to-server. The same on all nodes, so a move changes no record.
    pub c2s_port: u16,
    pub c2s_tls_port: u16,
    pub s2s_port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionSettings {
    /// A session unused for this long is gone.
    pub idle_timeout_secs: i64,
    /// No session lives longer than this, used or not.
    pub absolute_timeout_secs: i64,
}

/// Failed log-ins allowed per window before further attempts are refused.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LoginLimits {
    pub window_secs: i64,
    pub per_account: i64,
    pub per_ip: i64,
}

/// argon2id cost. The defaults are OWASP's recommendation (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HashingSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            database_url: String::new(),
            data_dir: PathBuf::from("./data"),
            database_max_connections: 10,
            lease_secs: 15,
            smtp_url: None,
            mail_from: "Rookery <noreply@localhost>".into(),
            behind_proxy: false,
            session: SessionSettings::default(),
            login_limits: LoginLimits::default(),
            password_hashing: HashingSettings::default(),
            secret_key: String::new(),
            provisioning: ProvisioningSettings::default(),
            local_node: LocalNodeSettings::default(),
            dns: DnsSettings::default(),
            stripe: StripeSettings::default(),
            ordering: OrderingSettings::default(),
            probe: ProbeSettings::default(),
            alerts: AlertSettings::default(),
            api: ApiSettings::default(),
        }
    }
}

impl Default for ProvisioningSettings {
    fn default() -> Self {
        Self {
            placement_policy: Default::default(),
            headroom_percent: 20,
            required_labels: Default::default(),
            reconcile_interval_ms: 500,
            poll_interval_secs: 5,
            down_after_misses: 3,
            join_token_ttl_secs: 24 * 3600,
            node_timeout_secs: 10,
            max_retry_secs: 60,
        }
    }
}

impl Default for LocalNodeSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            data_dir: None,
            c2s_listen: SocketAddr::from(([127, 0, 0, 1], 5222)),
            c2s_tls_listen: SocketAddr::from(([127, 0, 0, 1], 5223)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 5280)),
            control_listen: SocketAddr::from(([127, 0, 0, 1], 5290)),
            proxy65_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7777))),
            s2s_listen: Some(SocketAddr::from(([127, 0, 0, 1], 5269))),
        }
    }
}

impl Default for DnsSettings {
    fn default() -> Self {
        Self {
            provider_zone: "xmpp.localhost".into(),
            resolver: None,
            timeout_secs: 5,
            c2s_port: 5222,
            c2s_tls_port: 5223,
            s2s_port: 5269,
        }
    }
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 12 * 3600,
            absolute_timeout_secs: 30 * 24 * 3600,
        }
    }
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            window_secs: 15 * 60,
            per_account: 5,
            per_ip: 30,
        }
    }
}

impl Default for HashingSettings {
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

fn serialize_secret<S: serde::Serializer>(
    v: &Option<SecretString>,
    s: S,
) -> Result<S::Ok, S::Error> {
    // Settings are only serialised to seed figment's defaults; a secret never leaves.
    match v {
        Some(_) => s.serialize_some("<redacted>"),
        None => s.serialize_none(),
    }
}

#[allow(clippy::ptr_arg)]
fn serialize_plain_secret<S: serde::Serializer>(v: &String, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if v.is_empty() { "" } else { "<redacted>" })
}

impl Settings {
    /// Defaults, then the TOML file (when given), then the environment.
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let settings = rookery_common::config::layered(Settings::default(), file, "ROOKERY_")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = url::Url::parse(&self.public_url)
            .with_context(|| format!("public_url {:?} is not a URL", self.public_url))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https"),
            "public_url must start with http:// or https://"
        );
        anyhow::ensure!(
            self.session.idle_timeout_secs > 0,
            "session.idle_timeout_secs must be positive"
        );
        anyhow::ensure!(
            self.login_limits.window_secs > 0,
            "login_limits.window_secs must be positive"
        );
        anyhow::ensure!(
            self.login_limits.per_account > 0 && self.login_limits.per_ip > 0,
            "login_limits.per_account and per_ip must be positive"
        );
        if self.stripe.enabled() {
            anyhow::ensure!(
                !self.stripe.webhook_secret.trim().is_empty(),
                "stripe.webhook_secret is needed when stripe.secret_key is set"
            );
        }
        anyhow::ensure!(
            self.stripe.grace_days >= 0 && self.stripe.retention_days >= 0,
            "stripe.grace_days and retention_days cannot be negative"
        );
        anyhow::ensure!(
            self.probe.interval_secs > 0
                && self.probe.timeout_secs > 0
                && self.probe.concurrency > 0,
            "probe.interval_secs, timeout_secs and concurrency must be positive"
        );
        anyhow::ensure!(
            self.probe.open_after > 0 && self.probe.close_after > 0,
            "probe.open_after and close_after must be positive"
        );
        anyhow::ensure!(
            self.api.rate_limit_per_minute > 0,
            "api.rate_limit_per_minute must be positive"
        );
        let p = &self.provisioning;
        anyhow::ensure!(
            p.headroom_percent <= 90,
            "provisioning.headroom_percent must be at most 90"
        );
        anyhow::ensure!(
            p.reconcile_interval_ms > 0 && p.poll_interval_secs > 0 && p.node_timeout_secs > 0,
            "provisioning intervals and timeouts must be positive"
        );
        anyhow::ensure!(
            p.down_after_misses > 0 && p.join_token_ttl_secs > 0 && p.max_retry_secs > 0,
            "provisioning.down_after_misses, join_token_ttl_secs and max_retry_secs must be positive"
        );
        crate::dns::validate_settings(&self.dns).context("dns")?;
        crate::alerts::validate_settings(&self.alerts).context("alerts")?;
        Ok(())
    }

    /// The database to use: the configured URL, or SQLite inside the data directory.
    pub fn effective_database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}/rookery.db?mode=rwc", self.data_dir.display())
        } else {
            self.database_url.clone()
        }
    }

    /// Cookies get `Secure` when people reach the panel over https.
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    /// `public_url` without a trailing slash, for building links.
    pub fn base_url(&self) -> &str {
        self.public_url.trim_end_matches('/')
    }
}

#[cfg(test)]
// figment::Jail's closures must return figment's (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_with_sqlite_in_the_data_dir() {
        let s = Settings::default();
        assert!(s.listen.ip().is_loopback());
        assert_eq!(s.listen.port(), 8080);
        assert_eq!(
            s.effective_database_url(),
            "sqlite://./data/rookery.db?mode=rwc"
        );
        assert!(!s.secure_cookies());
    }

    #[test]
    fn a_file_and_the_environment_override_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "panel.toml",
                "public_url = \"https://panel.example.com\"\n[login_limits]\nper_ip = 7\n",
            )?;
            jail.set_env("ROOKERY_LOGIN_LIMITS__PER_ACCOUNT", "3");
            jail.set_env("ROOKERY_LISTEN", "127.0.0.1:9999");
            let s = Settings::load(Some(std::path::Path::new("panel.toml")))
                .map_err(|e| e.to_string())?;
            assert_eq!(s.listen.port(), 9999);
            assert_eq!(s.login_limits.per_ip, 7);
            assert_eq!(s.login_limits.per_account, 3);
            assert!(s.secure_cookies());
            Ok(())
        });
    }

    #[test]
    fn a_bad_public_url_is_a_clear_error() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ROOKERY_PUBLIC_URL", "ftp://x");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("public_url"), "{err}");
            Ok(())
        });
    }
}
