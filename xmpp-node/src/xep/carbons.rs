//! XEP-0280 Message Carbons (`urn:xmpp:carbons:2`): every resource of an account that
//! enabled carbons sees the account's one-to-one conversations whole, the messages its
//! other resources send and the ones they receive, so a phone and a laptop agree.
//!
//! ```text
//!  alice/phone ── message ──► bob@example.com ──► bob's resources got the original
//!      └─► alice's other carbon resources: <message from=alice to=alice/laptop>
//!              <sent><forwarded><message …original/></forwarded></sent></message>
//!  bob/desk ── message ──► alice/phone (or alice's bare JID)
//!      └─► alice's carbon resources that did not get it: <received><forwarded>…
//! ```
//!
//! Which messages (§6): type `chat`, or `normal` with a body; never errors, group chat or
//! headlines; never one marked `<private xmlns='urn:xmpp:carbons:2'/>` (§7, the element
//! is removed from what the recipient gets) or `<no-copy xmlns='urn:xmpp:hints'/>`
//! (XEP-0334). The state is a flag per session ([`crate::router::Router::set_carbons`]); a
//! node-wide count of resources with carbons on lets the routing hot path skip all of
//! this when nobody uses it. A sent copy carries the sender's archive id
//! (`<stanza-id by='alice@example.com'/>`, XEP-0359) when the message was archived, a
//! received copy the recipient's (stamped on the original already), so clients match
//! carbons with their message archive.

use crate::{
    node::Node,
    proto::{element::Element, jid::Jid, ns},
    router::SessionHandle,
    xep::mam::{NS_FORWARD, NS_HINTS, NS_SID},
};

pub const NS: &str = "urn:xmpp:carbons:2";

/// Whether a message is carbon-copied (§6, §7).
pub fn eligible(stanza: &Element) -> bool {
    if stanza.name() != "message"
        || stanza.has_child("private", NS)
        || stanza.has_child("no-copy", NS_HINTS)
        // Already a carbon (or a forwarded copy of one): never copied again.
        || stanza.has_child("sent", NS)
        || stanza.has_child("received", NS)
    {
        return false;
    }
    match stanza.attr("type").unwrap_or("normal") {
        "chat" => true,
        "normal" => stanza.has_child("body", ns::CLIENT),
        _ => false,
    }
}

/// Removes `<private/>` from a message before it is delivered (§7).
pub fn strip_private(stanza: &mut Element) {
    if stanza.has_child("private", NS) {
        stanza.remove_children(|c| c.is("private", NS));
    }
}

/// `<message from=bare to=resource type=…><{kind}><forwarded><message/></forwarded>…`.
fn wrap(kind: &str, owner: &Jid, to: &Jid, original: &Element) -> Element {
    let forwarded = Element::new("forwarded", NS_FORWARD).with_child(original.clone());
    Element::new("message", ns::CLIENT)
        .with_attr("from", owner.to_string())
        .with_attr("to", to.to_string())
        .with_attr("type", original.attr("type").unwrap_or("normal"))
        .with_child(Element::new(kind, NS).with_child(forwarded))
}

/// Copies a message `me` sent to `me`'s other resources with carbons on (§5). `sent_id`:
/// its id in the sender's archive, named in the copy.
pub fn sent(node: &Node, me: &SessionHandle, to: &Jid, stanza: &Element, sent_id: Option<&str>) {
    if !node.router.carbons_in_use() || !eligible(stanza) || to.bare() == me.bare {
        return;
    }
    let others: Vec<_> = node
        .router
        .sessions(&me.bare)
        .into_iter()
        .filter(|s| s.id != me.id && s.carbons())
        .collect();
    if others.is_empty() {
        return;
    }
    // The recipient's stanza-id (stamped by now) is the recipient's business: the copy
    // names the message's id in the sender's archive instead.
    let mut original = stanza.clone();
    original.remove_children(|c| c.is("stanza-id", NS_SID));
    if let Some(id) = sent_id {
        original.append_child(
            Element::new("stanza-id", NS_SID)
                .with_attr("by", me.bare.to_string())
                .with_attr("id", id),
        );
    }
    for s in others {
        s.deliver(wrap("sent", &me.bare, &s.jid, &original));
    }
}

/// Copies a message delivered to the account `to` (to the sessions `delivered`, by id) to
/// its other resources with carbons on (§6). Call it with the stanza as delivered.
pub fn received(node: &Node, to: &Jid, delivered: &[u64], stanza: &Element) {
    if !node.router.carbons_in_use() || !eligible(stanza) {
        return;
    }
    let bare = to.bare();
    for s in node.router.sessions(&bare) {
        if s.carbons() && !delivered.contains(&s.id) {
            s.deliver(wrap("received", &bare, &s.jid, stanza));
        }
    }
}

/// Answers `<enable/>` and `<disable/>` (§3, §4); `None` for anything else.
pub fn handle(node: &Node, me: &SessionHandle, payload: &Element) -> Option<bool> {
    if payload.ns() != NS {
        return None;
    }
    let on = match payload.name() {
        "enable" => true,
        "disable" => false,
        _ => return None,
    };
    node.router.set_carbons(me, on);
    Some(on)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::testing::{bind, delivered, node_with_spec, stanza};

    fn message(attrs: &str, inner: &str) -> Element {
        stanza(&format!(
            "<message xmlns='jabber:client' from='alice@example.com/phone' to='bob@example.com/desk' {attrs}>{inner}</message>"
        ))
    }

    #[test]
    fn chats_and_normal_messages_with_a_body_are_copied_and_nothing_else() {
        assert!(eligible(&message("type='chat'", "<body>hi</body>")));
        // Chat states and receipts of a chat are part of the conversation too.
        assert!(eligible(&message(
            "type='chat'",
            "<active xmlns='http://jabber.org/protocol/chatstates'/>"
        )));
        assert!(eligible(&message("", "<body>hi</body>")));
        assert!(!eligible(&message("type='normal'", "")));
        for kind in ["error", "groupchat", "headline"] {
            assert!(!eligible(&message(
                &format!("type='{kind}'"),
                "<body>hi</body>"
            )));
        }
        assert!(!eligible(&message(
            "type='chat'",
            "<body>hi</body><private xmlns='urn:xmpp:carbons:2'/>"
        )));
        assert!(!eligible(&message(
            "type='chat'",
            "<body>hi</body><no-copy xmlns='urn:xmpp:hints'/>"
        )));
        assert!(!eligible(&message(
            "type='chat'",
            "<received xmlns='urn:xmpp:carbons:2'/>"
        )));
    }

    #[test]
    fn the_private_marker_is_removed_before_delivery() {
        let mut m = message(
            "type='chat'",
            "<body>hi</body><private xmlns='urn:xmpp:carbons:2'/>",
        );
        strip_private(&mut m);
        assert!(!m.has_child("private", NS));
        assert!(m.has_child("body", ns::CLIENT));
    }

    #[tokio::test]
    async fn copies_go_to_the_other_resources_that_enabled_carbons_only() {
        let (node, _dir) = node_with_spec(
            serde_json::json!({"domain": "example.com", "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        let (phone, mut phone_rx) = bind(&node, "alice@example.com/phone");
        let (laptop, mut laptop_rx) = bind(&node, "alice@example.com/laptop");
        let (_tablet, mut tablet_rx) = bind(&node, "alice@example.com/tablet");
        // Nobody enabled carbons yet: nothing is copied.
        let chat = message(
            "type='chat' id='m1'",
            "<body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.com' id='B1'/>",
        );
        let bob = Jid::parse("bob@example.com/desk").unwrap();
        sent(&node, &phone, &bob, &chat, Some("A1"));
        assert!(delivered(&mut laptop_rx).is_empty());

        let enable = Element::new("enable", NS);
        assert_eq!(handle(&node, &phone, &enable), Some(true));
        assert_eq!(handle(&node, &laptop, &enable), Some(true));
        // Enabling twice counts once; the count follows sessions that end.
        assert_eq!(handle(&node, &laptop, &enable), Some(true));
        let (spare, _spare_rx) = bind(&node, "alice@example.com/spare");
        handle(&node, &spare, &enable);
        node.router.unbind(&spare);
        node.router.set_carbons(&phone, false);
        node.router.set_carbons(&laptop, false);
        assert!(!node.router.carbons_in_use());
        handle(&node, &phone, &enable);
        handle(&node, &laptop, &enable);
        sent(&node, &phone, &bob, &chat, Some("A1"));
        let copies = delivered(&mut laptop_rx);
        assert_eq!(copies.len(), 1);
        let copy = &copies[0];
        assert_eq!(copy.attr("from"), Some("alice@example.com"));
        assert_eq!(copy.attr("to"), Some("alice@example.com/laptop"));
        let inner = copy
            .get_child("sent", NS)
            .and_then(|s| s.get_child("forwarded", NS_FORWARD))
            .and_then(|f| f.get_child("message", ns::CLIENT))
            .expect("a forwarded message");
        assert_eq!(inner.attr("id"), Some("m1"));
        let sids: Vec<_> = inner
            .children()
            .filter(|c| c.is("stanza-id", NS_SID))
            .collect();
        assert_eq!(sids.len(), 1, "only the sender's archive id: {inner:?}");
        let sid = sids[0];
        assert_eq!(
            (sid.attr("by"), sid.attr("id")),
            (Some("alice@example.com"), Some("A1"))
        );
        // Not to the sender itself, nor to a resource without carbons.
        assert!(delivered(&mut phone_rx).is_empty());
        assert!(delivered(&mut tablet_rx).is_empty());

        // Received: a copy for every carbon resource that did not get the original.
        let incoming = stanza(
            "<message xmlns='jabber:client' from='bob@example.com/desk' to='alice@example.com/phone' type='chat' id='b1'><body>hello</body></message>",
        );
        let alice = Jid::parse("alice@example.com/phone").unwrap();
        received(&node, &alice, &[phone.id], &incoming);
        let copies = delivered(&mut laptop_rx);
        assert_eq!(copies.len(), 1);
        assert!(copies[0].get_child("received", NS).is_some());
        assert!(delivered(&mut phone_rx).is_empty());
        assert!(delivered(&mut tablet_rx).is_empty());

        // Disabled: no more copies.
        assert_eq!(
            handle(&node, &laptop, &Element::new("disable", NS)),
            Some(false)
        );
        received(&node, &alice, &[phone.id], &incoming);
        assert!(delivered(&mut laptop_rx).is_empty());
        assert_eq!(handle(&node, &laptop, &Element::new("other", NS)), None);
    }
}
