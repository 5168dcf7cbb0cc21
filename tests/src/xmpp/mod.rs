//! A small XMPP client for tests and the load generator: STARTTLS with the node's pinned
//! certificate, SCRAM-SHA-256, bind, and reading top-level elements. Written for measuring and
//! probing the node, not as a general client library.

pub mod client;
pub mod scram;
pub mod xml;
