//! Rookery's node: the XMPP server every cluster node runs, and its node agent (the
//! control API the panel provisions virtual hosts through).
//!
//! This crate is the skeleton the node issues fill in: `proto/` (sans-io XML, stanzas,
//! SASL, stream states), `net/` (sockets, TLS), `store/`, `control/`, one module per XEP
//! with state. For now it only knows who it is.

/// The node's version, reported to the panel and on `--version`.
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
        all.dedup();
        assert_eq!(all.len(), 5);
    }
}
