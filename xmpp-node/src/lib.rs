//! Rookery's node: the XMPP server every cluster node runs, and its node agent.
//!
//! - `proto/`: the protocol without I/O (XML, JIDs, SASL, stream negotiation, stanzas);
//! - `net/`: sockets and TLS, one task per connection;
//! - `store/`: vhosts, accounts and offline messages in SQLite or PostgreSQL;
//! - `router`, `im`: who is online, and what happens to each stanza;
//! - `server`: listeners, vhost reloads, `/metrics`, shutdown;
//! - `hostmeta`: XEP-0156 host-meta documents on the HTTP port;
//! - `upkeep`: once a minute, offline message retention and storage re-measurement;
//! - `control`: the HTTPS control API the panel drives, and enrollment (`join`).

pub mod accounts;
pub mod config;
pub mod control;
pub mod hostmeta;
pub mod im;
pub mod metrics;
pub mod net;
pub mod node;
pub mod proto;
pub mod router;
pub mod server;
pub mod store;
pub mod upkeep;
pub mod xep;

/// The node's version, reported to the panel, in disco and on `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The default ports of a node (see DESIGN.md): c2s, c2s direct TLS, s2s, HTTP, control API.
pub mod ports {
    pub const C2S: u16 = 5222;
    pub const C2S_DIRECT_TLS: u16 = 5223;
    pub const S2S: u16 = 5269;
    pub const HTTP: u16 = 5280;
    pub const CONTROL: u16 = 5290;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_ports_are_distinct() {
        use super::ports::*;
        let mut all = vec![C2S, C2S_DIRECT_TLS, S2S, HTTP, CONTROL];
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 5);
    }
}
