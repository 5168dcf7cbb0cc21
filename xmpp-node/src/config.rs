//! Settings of a node: built-in defaults (loopback, SQLite under `./data/`), then a TOML
//! file (`--config node.toml`), then `ROOKERY_NODE_`-prefixed environment variables (`__`
//! separates nested keys, e.g. `ROOKERY_NODE_LIMITS__MAX_STANZA_BYTES`).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf};

use rookery_common::control::NodeCapacity;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeSettings {
    /// Where the embedded database and generated certificates live.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; empty: SQLite at `<data_dir>/node.db`.
    pub database_url: String,
    /// Client-to-server with STARTTLS (RFC 6120).
    pub c2s_listen: SocketAddr,
    /// Client-to-server with TLS from the first byte (XEP-0368).
    pub c2s_tls_listen: SocketAddr,
    /// HTTP and HTTPS on one port (the vhosts' certificates by SNI): host-meta,
    /// `/healthz`, `/metrics`, XMPP over WebSocket (`/xmpp-websocket`) and BOSH
    /// (`/http-bind`).
    pub http_listen: SocketAddr,
    /// The base URL web clients reach the HTTP port at, announced in host-meta (XEP-0156)
    /// with `/xmpp-websocket` (`https` becoming `wss`) and `/http-bind`. `{vhost}` stands for the
    /// domain asked about. Empty: `https://<public_host>:<http_listen's port>`.
    pub public_http_url: String,
    /// Where uploaded files (XEP-0363) are kept; empty: `<data_dir>/uploads`. Upload slots
    /// name URLs under [`NodeSettings::public_http_base`].
    pub upload_dir: PathBuf,
    /// The SOCKS5 bytestreams proxy (XEP-0065) of every vhost (`proxy.<vhost>`); clients
    /// reach it at `public_host` and this port. None: no proxy.
    pub proxy65_listen: Option<SocketAddr>,
    /// Refuse c2s features other than STARTTLS before TLS (RFC 6120 recommends it).
    pub require_tls: bool,
    /// PEM certificate chain and key used when a client names no hosted domain.
    pub fallback_cert: Option<PathBuf>,
    pub fallback_key: Option<PathBuf>,
    /// SCRAM iteration count for new passwords.
    pub scram_iterations: u32,
    pub limits: Limits,
    /// The control API (HTTPS, for the panel).
    pub control_listen: SocketAddr,
    /// The host name clients and the panel reach this node at.
    pub public_host: String,
    /// What this node can carry, as told to the panel at enrollment and in its status.
    pub capacity: NodeCapacity,
    /// Labels placement can require, e.g. `region = "eu-west"`.
    pub labels: BTreeMap<String, String>,
    /// The control API's bearer secret, set by hand (demos, tests). Without it, the
    /// credentials `rookery-node join` stored in `<data_dir>/control.json` are used.
    #[serde(skip_serializing)]
    pub control_secret: Option<SecretString>,
    /// PEM certificate chain and key of the control API; without them a self-signed pair
    /// is generated once under `<data_dir>/certs/_control.crt` (the panel pins it).
    pub control_cert: Option<PathBuf>,
    pub control_key: Option<PathBuf>,
    /// Server-to-server streams with STARTTLS (RFC 6120), from other servers of the XMPP
    /// network and other nodes of the pool. None: no incoming federation (outgoing streams
    /// still work, dialback included: peers verify our keys over streams we accept, so
    /// without a listener only peers that trust our certificates accept us).
    pub s2s_listen: Option<SocketAddr>,
    /// Server-to-server streams with TLS from the first byte (XEP-0368). None: none.
    pub s2s_tls_listen: Option<SocketAddr>,
    /// Where peer domains are, before DNS: `domain = "host:port"` (a `tls:` prefix means
    /// TLS from the first byte, XEP-0368). In the environment, one string:
    /// `ROOKERY_NODE_S2S_HOSTS="a.test=127.0.0.1:5270,b.test=[::1]:5271"`.
    #[serde(deserialize_with = "host_map")]
    pub s2s_hosts: BTreeMap<String, String>,
    /// A PEM file of CA certificates peers' certificates may also chain to (a private CA
    /// for tests and private federations), besides the public web PKI's.
    pub s2s_ca_file: Option<PathBuf>,
    /// Refuse peers whose certificate does not verify for their domain. Off: such a peer
    /// is authenticated with server dialback (XEP-0220), which rests on DNS, as most of
    /// the XMPP network accepts; on: only verified certificates (SASL EXTERNAL, XEP-0178).
    pub s2s_require_verified_certs: bool,
    /// The DNS server SRV records of peers are asked from, e.g. `192.0.2.53:53`. None: the
    /// system's (`/etc/resolv.conf`).
    pub s2s_resolver: Option<SocketAddr>,
}

/// A static host map: a table, or the one-string form `a=host:port,b=host:port`.
fn host_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        Table(BTreeMap<String, String>),
        Text(String),
    }
    let map = match Form::deserialize(d)? {
        Form::Table(t) => t,
        Form::Text(s) => parse_host_map(&s).map_err(serde::de::Error::custom)?,
    };
    map.into_iter()
        .map(|(domain, place)| {
            check_place(&place)
                .map(|()| (domain.trim().to_ascii_lowercase(), place.trim().to_string()))
                .map_err(|why| {
                    serde::de::Error::custom(format!("s2s_hosts: {domain} = \"{place}\": {why}"))
                })
        })
        .collect()
}

/// `a=host:port,b=host:port` (spaces allowed around the separators).
pub fn parse_host_map(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((d, p)) if !d.trim().is_empty() && !p.trim().is_empty() => {
                Ok((d.trim().to_string(), p.trim().to_string()))
            }
            _ => Err(format!(
                "s2s_hosts: \"{entry}\" is not domain=host:port (entries are separated by commas)"
            )),
        })
        .collect()
}

/// `host:port`, `[v6]:port`, or either with a `tls:` prefix (XEP-0368).
fn check_place(place: &str) -> Result<(), String> {
    let place = place.trim();
    let place = place.strip_prefix("tls:").unwrap_or(place);
    let (host, port) = if let Some(rest) = place.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or("an unclosed [")?;
        v6.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{v6} is not an IPv6 address"))?;
        (v6, after.strip_prefix(':').ok_or("a port must follow ]")?)
    } else {
        place.rsplit_once(':').ok_or("host:port is needed")?
    };
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .map(|_| ())
        .ok_or_else(|| format!("{port} is not a port"))
}

/// Hardening limits; each closes only the offending stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub max_stanza_bytes: usize,
    pub max_depth: usize,
    pub max_attributes: usize,
    /// Elements in one stanza.
    pub max_elements: usize,
    /// Open client connections, in total and per remote address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Contacts one roster may hold; adding more is refused with `not-allowed`.
    pub max_roster_items: i64,
    /// Seconds a connection may take to authenticate and bind.
    pub pre_auth_timeout_secs: u64,
    /// Stanzas per second a session may send (a burst of twice this is allowed).
    pub stanzas_per_second: u32,
    /// Seconds of silence after which the server pings a client, and then gives up.
    pub idle_ping_secs: u64,
    pub ping_timeout_secs: u64,
    /// XEP-0198: the longest time, in seconds, a broken stream is kept for resumption; 0
    /// turns resumption off (acknowledgements still work).
    pub sm_resume_secs: u32,
    /// XEP-0198: stanzas written between two requests for an acknowledgement.
    pub sm_request_every: u32,
    /// XEP-0198: the most stanzas a session keeps waiting for an acknowledgement; past it
    /// the stream ends and they go to other resources or offline storage.
    pub sm_max_unacked: usize,
    /// XEP-0077: accounts one client address (an IPv6 /64) may create in-band per hour, on
    /// domains that let people register; past it registrations are refused until the
    /// oldest is an hour old. 0: no limit.
    pub registrations_per_ip_per_hour: u32,
    /// XEP-0363: the largest file one upload may be when the vhost's spec does not say.
    pub upload_max_file_bytes: i64,
    /// Seconds an incoming server-to-server stream may take to authenticate a domain.
    pub s2s_pre_auth_timeout_secs: u64,
    /// Seconds an outgoing server-to-server stream may take to resolve, connect and
    /// authenticate; past it, what waited for it bounces with `remote-server-timeout`.
    pub s2s_connect_timeout_secs: u64,
    /// Incoming streams one remote domain may have open, and unauthenticated incoming
    /// streams one address may have open.
    pub s2s_connections_per_peer: usize,
    /// Stanzas per second an incoming stream may carry (a burst of twice this is allowed);
    /// past it the stream ends with `policy-violation`.
    pub s2s_stanzas_per_second: u32,
    /// Stanzas waiting for one outgoing stream; past it they bounce with
    /// `resource-constraint`.
    pub s2s_queue_stanzas: usize,
    /// Seconds after which an outgoing stream nothing was sent on is closed.
    pub s2s_idle_secs: u64,
    /// MiB of SQLite page cache for the archive writer's connection: the index pages a
    /// batch dirties stay in memory until its commit (two per account with rows in the
    /// batch). Ignored on PostgreSQL.
    pub archive_cache_mib: u32,
    /// The niceness (Linux) of the thread that runs the archive writer's SQLite
    /// statements. Above 0, routing goes first on a saturated machine and the writer sheds
    /// what it cannot keep up with (counted); 0 (the default) lets it compete, which keeps
    /// the archive complete up to a higher load (measured: README, issue 8).
    pub archive_writer_nice: i32,
}

impl Limits {
    /// How the node runs stream management (XEP-0198).
    pub fn sm(&self) -> crate::proto::sm::SmConfig {
        crate::proto::sm::SmConfig {
            request_every: self.sm_request_every,
            max_unacked: self.sm_max_unacked,
            max_resume_secs: Some(self.sm_resume_secs).filter(|s| *s > 0),
        }
    }
}

impl NodeSettings {
    /// Where uploaded files are kept.
    pub fn upload_dir(&self) -> PathBuf {
        if self.upload_dir.as_os_str().is_empty() {
            self.data_dir.join("uploads")
        } else {
            self.upload_dir.clone()
        }
    }
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: String::new(),
            c2s_listen: SocketAddr::from(([127, 0, 0, 1], 5222)),
            c2s_tls_listen: SocketAddr::from(([127, 0, 0, 1], 5223)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 5280)),
            public_http_url: String::new(),
            upload_dir: PathBuf::new(),
            proxy65_listen: Some(SocketAddr::from(([127, 0, 0, 1], 7777))),
            require_tls: true,
            fallback_cert: None,
            fallback_key: None,
            scram_iterations: 4096,
            limits: Limits::default(),
            control_listen: SocketAddr::from(([127, 0, 0, 1], crate::ports::CONTROL)),
            public_host: "127.0.0.1".into(),
            capacity: NodeCapacity::default(),
            labels: BTreeMap::new(),
            control_secret: None,
            control_cert: None,
            control_key: None,
            s2s_listen: Some(SocketAddr::from(([127, 0, 0, 1], crate::ports::S2S))),
            s2s_tls_listen: None,
            s2s_hosts: BTreeMap::new(),
            s2s_ca_file: None,
            s2s_require_verified_certs: false,
            s2s_resolver: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attributes: 64,
            max_elements: 4096,
            max_connections: 200_000,
            max_connections_per_ip: 2_000,
            max_roster_items: crate::store::DEFAULT_MAX_ROSTER_ITEMS,
            pre_auth_timeout_secs: 30,
            stanzas_per_second: 200,
            idle_ping_secs: 300,
            ping_timeout_secs: 60,
            sm_resume_secs: 300,
            sm_request_every: 5,
            sm_max_unacked: 500,
            registrations_per_ip_per_hour: 5,
            upload_max_file_bytes: 100 * 1024 * 1024,
            s2s_pre_auth_timeout_secs: 30,
            s2s_connect_timeout_secs: 15,
            s2s_connections_per_peer: 8,
            s2s_stanzas_per_second: 500,
            s2s_queue_stanzas: 1000,
            s2s_idle_secs: 600,
            archive_cache_mib: 64,
            archive_writer_nice: 0,
        }
    }
}

impl NodeSettings {
    pub fn load(file: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let s = rookery_common::config::layered(NodeSettings::default(), file, "ROOKERY_NODE_")?;
        anyhow::ensure!(
            s.scram_iterations >= 4096,
            "scram_iterations must be at least 4096 (RFC 7677)"
        );
        anyhow::ensure!(
            s.limits.max_stanza_bytes >= 10_000,
            "limits.max_stanza_bytes must be at least 10000 (RFC 6120 13.12)"
        );
        anyhow::ensure!(
            s.fallback_cert.is_some() == s.fallback_key.is_some(),
            "fallback_cert and fallback_key go together"
        );
        anyhow::ensure!(
            s.control_cert.is_some() == s.control_key.is_some(),
            "control_cert and control_key go together"
        );
        if let Some(secret) = &s.control_secret {
            anyhow::ensure!(
                secret.expose_secret().len() >= 16,
                "control_secret must be at least 16 characters long"
            );
        }
        anyhow::ensure!(
            !s.public_host.trim().is_empty(),
            "public_host must name this node's host"
        );
        anyhow::ensure!(
            s.capacity.max_vhosts >= 0 && s.capacity.max_sessions >= 0,
            "capacity.max_vhosts and capacity.max_sessions must not be negative"
        );
        let l = &s.limits;
        anyhow::ensure!(
            l.s2s_pre_auth_timeout_secs > 0
                && l.s2s_connect_timeout_secs > 0
                && l.s2s_connections_per_peer > 0
                && l.s2s_stanzas_per_second > 0
                && l.s2s_queue_stanzas > 0
                && l.s2s_idle_secs > 0,
            "the limits.s2s_* settings must be above 0"
        );
        Ok(s)
    }

    /// The base URL of the HTTP port for `vhost`'s clients, without a trailing slash.
    pub fn public_http_base(&self, vhost: &str) -> String {
        let url = if self.public_http_url.trim().is_empty() {
            format!("https://{}:{}", self.public_host, self.http_listen.port())
        } else {
            self.public_http_url.trim().replace("{vhost}", vhost)
        };
        url.trim_end_matches('/').to_string()
    }

    pub fn effective_database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}/node.db?mode=rwc", self.data_dir.display())
        } else {
            self.database_url.clone()
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn defaults_bind_loopback_on_the_standard_ports() {
        let s = NodeSettings::default();
        assert!(s.c2s_listen.ip().is_loopback() && s.c2s_tls_listen.ip().is_loopback());
        assert_eq!(
            (
                s.c2s_listen.port(),
                s.c2s_tls_listen.port(),
                s.http_listen.port()
            ),
            (5222, 5223, 5280)
        );
        assert_eq!(
            s.effective_database_url(),
            "sqlite://./data/node.db?mode=rwc"
        );
        assert_eq!(s.limits.max_stanza_bytes, 256 * 1024);
        assert_eq!(s.control_listen, "127.0.0.1:5290".parse().unwrap());
        assert!(s.control_secret.is_none());
    }

    #[test]
    fn the_deployment_example_is_a_valid_configuration() {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy/rookery-node.example.toml");
        figment::Jail::expect_with(|_| {
            let s = NodeSettings::load(Some(&example)).map_err(|e| format!("{e:#}"))?;
            assert_eq!(s.public_host, "node1.example.net");
            assert_eq!(s.labels.get("region").map(String::as_str), Some("eu-west"));
            Ok(())
        });
    }

    #[test]
    fn the_control_secret_capacity_and_labels_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("ROOKERY_NODE_CONTROL_SECRET", "a-secret-of-twenty-chars");
            jail.set_env("ROOKERY_NODE_CAPACITY__MAX_VHOSTS", "7");
            jail.set_env("ROOKERY_NODE_LABELS__REGION", "eu-west");
            let s = NodeSettings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                s.control_secret.as_ref().map(|x| x.expose_secret()),
                Some("a-secret-of-twenty-chars")
            );
            assert!(!format!("{s:?}").contains("twenty"), "never in logs");
            assert_eq!(s.capacity.max_vhosts, 7);
            assert_eq!(s.capacity.max_sessions, 100_000);
            assert_eq!(s.labels.get("region").map(String::as_str), Some("eu-west"));
            jail.set_env("ROOKERY_NODE_CONTROL_SECRET", "short");
            let e = NodeSettings::load(None).unwrap_err().to_string();
            assert!(e.contains("at least 16"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn the_environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "require_tls = false\n[limits]\nmax_depth = 10\n",
            )?;
            jail.set_env("ROOKERY_NODE_LIMITS__MAX_DEPTH", "12");
            jail.set_env("ROOKERY_NODE_LIMITS__SM_RESUME_SECS", "2");
            let s = NodeSettings::load(Some(std::path::Path::new("node.toml")))
                .map_err(|e| e.to_string())?;
            assert!(!s.require_tls);
            assert_eq!(s.limits.max_depth, 12);
            assert_eq!(s.limits.sm().max_resume_secs, Some(2));
            assert_eq!(
                NodeSettings::default().limits.sm().max_resume_secs,
                Some(300)
            );
            Ok(())
        });
    }

    #[test]
    fn the_s2s_host_map_comes_from_a_string_in_the_environment_or_a_table() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "ROOKERY_NODE_S2S_HOSTS",
                "a.test=127.0.0.1:5270, B.test=[::1]:5271,c.test=tls:localhost:5223",
            );
            jail.set_env("ROOKERY_NODE_S2S_LISTEN", "127.0.0.1:5999");
            jail.set_env("ROOKERY_NODE_LIMITS__S2S_QUEUE_STANZAS", "5");
            let s = NodeSettings::load(None).map_err(|e| format!("{e:#}"))?;
            assert_eq!(s.s2s_hosts.len(), 3);
            assert_eq!(s.s2s_hosts["a.test"], "127.0.0.1:5270");
            assert_eq!(s.s2s_hosts["b.test"], "[::1]:5271");
            assert_eq!(s.s2s_hosts["c.test"], "tls:localhost:5223");
            assert_eq!(s.s2s_listen, Some("127.0.0.1:5999".parse().unwrap()));
            assert_eq!(s.limits.s2s_queue_stanzas, 5);
            jail.set_env("ROOKERY_NODE_S2S_HOSTS", "a.test=nowhere");
            let e = format!("{:#}", NodeSettings::load(None).unwrap_err());
            assert!(e.contains("a.test") && e.contains("host:port"), "{e}");
            jail.clear_env();
            jail.create_file(
                "node.toml",
                "[s2s_hosts]\n\"peer.test\" = \"127.0.0.1:5271\"\n",
            )?;
            let s = NodeSettings::load(Some(std::path::Path::new("node.toml")))
                .map_err(|e| format!("{e:#}"))?;
            assert_eq!(s.s2s_hosts["peer.test"], "127.0.0.1:5271");
            Ok(())
        });
    }

    #[test]
    fn federation_is_on_by_default_with_the_standard_port_and_limits() {
        let s = NodeSettings::default();
        assert_eq!(s.s2s_listen.map(|a| a.port()), Some(5269));
        assert!(s.s2s_tls_listen.is_none() && s.s2s_hosts.is_empty());
        assert_eq!(s.limits.s2s_pre_auth_timeout_secs, 30);
        assert_eq!(s.limits.s2s_queue_stanzas, 1000);
    }

    #[test]
    fn the_public_http_base_names_the_vhost_or_defaults_to_the_public_host() {
        let mut s = NodeSettings::default();
        assert_eq!(s.public_http_base("example.com"), "https://127.0.0.1:5280");
        s.public_http_url = "https://{vhost}:8443/".into();
        assert_eq!(
            s.public_http_base("example.com"),
            "https://example.com:8443"
        );
    }
}
