//! XEP-0352 Client State Indication (`urn:xmpp:csi:0`): a phone in a pocket says
//! `<inactive/>`, and the server holds back what can wait — presence updates, chat states,
//! PEP notifications — so the radio sleeps; messages with a body, iq requests and
//! subscription requests still go at once, and take whatever was held with them (in order)
//! so the client's view stays consistent. `<active/>` sends everything held.
//!
//! Held presence is deduplicated: only the newest presence of each sender is kept, as that
//! is all a client shows. At most [`MAX_HELD`] stanzas are held; past that, they all go.
//! The connection owns a [`Held`] per session; this module decides, it does no I/O.

use super::{element::Element, ns};

pub const NS: &str = "urn:xmpp:csi:0";

/// Stanzas held for an inactive client before they are sent anyway.
pub const MAX_HELD: usize = 100;

const CHATSTATES: &str = "http://jabber.org/protocol/chatstates";
const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const CARBONS: &str = "urn:xmpp:carbons:2";
const FORWARD: &str = "urn:xmpp:forward:0";

/// `<csi xmlns='urn:xmpp:csi:0'/>`, offered among the stream features after authentication.
pub fn feature() -> Element {
    Element::new("csi", NS)
}

/// `Some(true)` for `<active/>`, `Some(false)` for `<inactive/>`, `None` otherwise.
pub fn parse(e: &Element) -> Option<bool> {
    match (e.ns(), e.name()) {
        (NS, "active") => Some(true),
        (NS, "inactive") => Some(false),
        _ => None,
    }
}

/// Whether a stanza for an inactive client can wait until it is active again (or until
/// something urgent goes out).
pub fn can_wait(stanza: &Element) -> bool {
    match stanza.name() {
        // Availability changes, not subscription requests or errors.
        "presence" => matches!(stanza.attr("type"), None | Some("unavailable")),
        "message" => {
            if stanza.attr("type") == Some("error") {
                return false;
            }
            // A carbon is as urgent as the message it copies.
            if let Some(inner) = ["sent", "received"]
                .iter()
                .find_map(|k| stanza.get_child(k, CARBONS))
                .and_then(|c| c.get_child("forwarded", FORWARD))
                .and_then(|f| f.get_child("message", ns::CLIENT))
            {
                return can_wait(inner);
            }
            if stanza.has_child("body", ns::CLIENT) {
                return false;
            }
            let mut children = stanza.children().peekable();
            children.peek().is_some()
                && children.all(|c| {
                    c.ns() == CHATSTATES
                        || c.is("event", PUBSUB_EVENT)
                        // What travels with a chat state: ids and the server's delay stamp.
                        || c.is("delay", ns::DELAY)
                        || c.name() == "stanza-id"
                        || c.name() == "origin-id"
                        || c.name() == "thread"
                })
        }
        _ => false,
    }
}

/// What an inactive client has not been sent yet, oldest first.
#[derive(Debug, Default)]
pub struct Held {
    stanzas: Vec<Element>,
}

impl Held {
    /// Holds a stanza that [`can_wait`]; a presence replaces the held presence of the same
    /// sender. `true`: more than [`MAX_HELD`] are held, send them now.
    pub fn hold(&mut self, stanza: Element) -> bool {
        if stanza.name() == "presence" {
            let from = stanza.attr("from");
            self.stanzas
                .retain(|s| s.name() != "presence" || s.attr("from") != from);
        }
        self.stanzas.push(stanza);
        self.stanzas.len() > MAX_HELD
    }

    pub fn is_empty(&self) -> bool {
        self.stanzas.is_empty()
    }

    /// Everything held, oldest first; nothing is held afterwards (and no memory kept).
    pub fn take(&mut self) -> Vec<Element> {
        std::mem::take(&mut self.stanzas)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_stanza(xml: &str) -> Element {
        crate::proto::parser::parse_stanza(xml).unwrap()
    }

    #[test]
    fn active_and_inactive_are_recognised() {
        assert_eq!(parse(&Element::new("active", NS)), Some(true));
        assert_eq!(parse(&Element::new("inactive", NS)), Some(false));
        assert_eq!(parse(&Element::new("inactive", "urn:other")), None);
        assert_eq!(parse(&Element::new("idle", NS)), None);
    }

    #[test]
    fn presence_updates_chat_states_and_pep_events_wait_and_the_rest_does_not() {
        let waits = [
            "<presence from='bob@example.com/desk'/>",
            "<presence from='bob@example.com/desk' type='unavailable'/>",
            "<message from='bob@example.com/desk' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message from='bob@example.com/desk' type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/><stanza-id xmlns='urn:xmpp:sid:0' by='alice@example.com' id='x'/></message>",
            "<message from='bob@example.com' type='headline'><event xmlns='http://jabber.org/protocol/pubsub#event'><items node='urn:xmpp:avatar:metadata'/></event></message>",
            "<message from='alice@example.com' type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat'><paused xmlns='http://jabber.org/protocol/chatstates'/></message></forwarded></received></message>",
        ];
        for xml in waits {
            assert!(can_wait(&parse_stanza(xml)), "{xml}");
        }
        let urgent = [
            "<message from='bob@example.com/desk' type='chat'><body>hi</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message from='bob@example.com/desk' type='chat'/>",
            "<message from='bob@example.com/desk' type='chat'><x xmlns='jabber:x:conference' jid='room@conference.example.com'/></message>",
            "<message from='bob@example.com/desk' type='error'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message from='alice@example.com' type='chat'><sent xmlns='urn:xmpp:carbons:2'><forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client' type='chat'><body>hi</body></message></forwarded></sent></message>",
            "<presence from='bob@example.com' type='subscribe'/>",
            "<presence from='bob@example.com/desk' type='error'/>",
            "<iq from='bob@example.com/desk' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
        ];
        for xml in urgent {
            assert!(!can_wait(&parse_stanza(xml)), "{xml}");
        }
    }

    #[test]
    fn only_the_newest_presence_of_each_sender_is_held_in_order() {
        let mut held = Held::default();
        assert!(!held.hold(parse_stanza(
            "<presence from='bob@example.com/desk' id='p1'/>"
        )));
        held.hold(parse_stanza(
            "<message from='bob@example.com/desk' id='c1'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        ));
        held.hold(parse_stanza(
            "<presence from='carol@example.com/home' id='q1'/>",
        ));
        held.hold(parse_stanza(
            "<presence from='bob@example.com/desk' id='p2'><show>away</show></presence>",
        ));
        let ids: Vec<String> = held
            .take()
            .iter()
            .map(|s| s.attr("id").unwrap().to_string())
            .collect();
        assert_eq!(ids, ["c1", "q1", "p2"]);
        assert!(held.is_empty());
    }

    #[test]
    fn past_the_limit_everything_goes() {
        let mut held = Held::default();
        for i in 0..MAX_HELD {
            assert!(!held.hold(parse_stanza(&format!(
                "<presence from='u{i}@example.com/r'/>"
            ))));
        }
        assert!(held.hold(parse_stanza("<presence from='last@example.com/r'/>")));
        assert_eq!(held.take().len(), MAX_HELD + 1);
    }
}
