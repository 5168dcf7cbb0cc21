//! The XMPP protocol without I/O: XML elements and the incremental stream parser, JIDs,
//! SASL, stream negotiation and stanza handling. Everything here takes input and returns
//! output; the socket code in `net` only moves bytes, so every rule is unit-testable.

pub mod c2s;
pub mod csi;
pub mod element;
pub mod framing;
pub mod jid;
pub mod ns;
pub mod parser;
pub mod redact;
pub mod register;
pub mod roster;
pub mod s2s;
pub mod sasl;
pub mod sm;
pub mod stanza;
