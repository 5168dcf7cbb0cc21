//! Extensions with state of their own: vCards (XEP-0054), blocking (XEP-0191), private XML
//! storage (XEP-0049), message archives with stanza ids (XEP-0313, XEP-0359), the server's contact addresses (XEP-0157, from the vhost spec), entity
//! capabilities (XEP-0115) and PEP (XEP-0163) with the avatar (XEP-0398) and bookmark
//! (XEP-0402) conversions that ride on it; the services on a vhost's subdomains (`services`),
//! group chat (XEP-0045, `muc`) first.
//! The stanza handlers in `im` hand them the queries; enforcement of blocks happens where
//! stanzas are delivered.

pub mod avatar;
pub mod blocking;
pub mod bookmarks;
pub mod caps;
pub mod carbons;
pub mod mam;
pub mod muc;
pub mod pep;
pub mod private;
pub mod proxy;
pub mod push;
pub mod register;
pub mod serverinfo;
pub mod services;
pub mod upload;
pub mod vcard;
