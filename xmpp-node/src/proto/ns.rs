//! XML namespaces of the protocols the node speaks.

pub const STREAM: &str = "http://etherx.jabber.org/streams";
pub const CLIENT: &str = "jabber:client";
pub const SERVER: &str = "jabber:server";
pub const STREAMS_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
pub const STANZAS_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
pub const TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
pub const SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
pub const ROSTER: &str = "jabber:iq:roster";
pub const ROSTER_VER: &str = "urn:xmpp:features:rosterver";
pub const PRE_APPROVAL: &str = "urn:xmpp:features:pre-approval";
pub const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
pub const VERSION: &str = "jabber:iq:version";
pub const PING: &str = "urn:xmpp:ping";
pub const VCARD: &str = "vcard-temp";
pub const BLOCKING: &str = "urn:xmpp:blocking";
pub const LAST: &str = "jabber:iq:last";
pub const TIME: &str = "urn:xmpp:time";
pub const DELAY: &str = "urn:xmpp:delay";
pub const DATA_FORMS: &str = "jabber:x:data";
/// The FORM_TYPE of XEP-0157 contact addresses.
pub const SERVER_INFO: &str = "http://jabber.org/network/serverinfo";
pub const XML: &str = "http://www.w3.org/XML/1998/namespace";
/// XEP-0198 Stream Management, version 3 of its protocol.
pub const SM: &str = "urn:xmpp:sm:3";
/// XEP-0049 Private XML Storage (no disco feature).
pub const PRIVATE: &str = "jabber:iq:private";
/// XEP-0077 in-band registration: the query, and the stream feature.
pub const REGISTER: &str = "jabber:iq:register";
pub const REGISTER_FEATURE: &str = "http://jabber.org/features/iq-register";
