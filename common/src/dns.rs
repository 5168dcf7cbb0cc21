//! A DNS resolver for the panel's record checks and the node's server-to-server look-ups:
//! the system's (`/etc/resolv.conf`), or one name server (UDP, then TCP), never the hosts
//! file, with a timeout per attempt.

use std::{net::SocketAddr, time::Duration};

use hickory_resolver::{
    Resolver, TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig},
    net::runtime::TokioRuntimeProvider,
};

/// Builds the resolver; the error says what went wrong in words.
pub fn resolver(
    server: Option<SocketAddr>,
    timeout: Duration,
    attempts: usize,
) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match server {
        Some(addr) => {
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = addr.port();
                    c
                })
                .collect();
            let ns = NameServerConfig::new(addr.ip(), true, connections);
            Resolver::builder_with_config(ResolverConfig::from_name_servers(vec![ns]), provider)
        }
        None => {
            Resolver::builder(provider).map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
        }
    };
    let o = builder.options_mut();
    o.timeout = timeout;
    o.attempts = attempts;
    o.use_hosts_file = ResolveHosts::Never;
    o.try_tcp_on_error = true;
    builder.build().map_err(|e| e.to_string())
}
