//! Settings of a node: built-in defaults (loopback, SQLite under `./data/`), then a TOML
//! file (`--config node.toml`), then `ROOKERY_NODE_`-prefixed environment variables (`__`
//! separates nested keys, e.g. `ROOKERY_NODE_LIMITS__MAX_STANZA_BYTES`).

use std::{net::SocketAddr, path::PathBuf};

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
    /// HTTP: `/metrics` (later WebSocket, BOSH, uploads).
    pub http_listen: SocketAddr,
    /// Refuse c2s features other than STARTTLS before TLS (RFC 6120 recommends it).
    pub require_tls: bool,
    /// PEM certificate chain and key used when a client names no hosted domain.
    pub fallback_cert: Option<PathBuf>,
    pub fallback_key: Option<PathBuf>,
    /// SCRAM iteration count for new passwords.
    pub scram_iterations: u32,
    pub limits: Limits,
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
    /// Seconds a connection may take to authenticate and bind.
    pub pre_auth_timeout_secs: u64,
    /// Stanzas per second a session may send (a burst of twice this is allowed).
    pub stanzas_per_second: u32,
    /// Seconds of silence after which the server pings a client, and then gives up.
    pub idle_ping_secs: u64,
    pub ping_timeout_secs: u64,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            database_url: String::new(),
            c2s_listen: SocketAddr::from(([127, 0, 0, 1], 5222)),
            c2s_tls_listen: SocketAddr::from(([127, 0, 0, 1], 5223)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 5280)),
            require_tls: true,
            fallback_cert: None,
            fallback_key: None,
            scram_iterations: 4096,
            limits: Limits::default(),
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
            pre_auth_timeout_secs: 30,
            stanzas_per_second: 200,
            idle_ping_secs: 300,
            ping_timeout_secs: 60,
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
        Ok(s)
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
    }

    #[test]
    fn the_environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "require_tls = false\n[limits]\nmax_depth = 10\n",
            )?;
            jail.set_env("ROOKERY_NODE_LIMITS__MAX_DEPTH", "12");
            let s = NodeSettings::load(Some(std::path::Path::new("node.toml")))
                .map_err(|e| e.to_string())?;
            assert!(!s.require_tls);
            assert_eq!(s.limits.max_depth, 12);
            Ok(())
        });
    }
}
