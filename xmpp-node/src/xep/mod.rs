//! Extensions with state of their own: vCards (XEP-0054), blocking (XEP-0191), private XML
//! storage (XEP-0049), and the server's contact addresses (XEP-0157, from the vhost spec).
//! The stanza handlers in `im` hand them the queries; enforcement of blocks happens where
//! stanzas are delivered.

pub mod avatar;
pub mod blocking;
pub mod bookmarks;
pub mod caps;
pub mod pep;
pub mod private;
pub mod serverinfo;
pub mod vcard;
