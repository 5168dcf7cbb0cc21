//! Extensions with state of their own: vCards (XEP-0054) and blocking (XEP-0191). The
//! stanza handlers in `im` hand them the queries; enforcement of blocks happens where
//! stanzas are delivered.

pub mod blocking;
pub mod vcard;
