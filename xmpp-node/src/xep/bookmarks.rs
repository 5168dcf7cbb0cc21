//! XEP-0402 PEP Native Bookmarks with `urn:xmpp:bookmarks:1#compat`: an account's
//! bookmarks live as items of its `urn:xmpp:bookmarks:1` node (one per room, the room's
//! JID as item id) and, for older clients, as XEP-0048 `<storage xmlns='storage:bookmarks'/>`
//! in private XML storage (XEP-0049). Each side is rewritten from the other when it
//! changes: a publish, retraction, purge or deletion on the node rewrites the private
//! storage ([`node_changed`], keeping its `<url/>` bookmarks, which XEP-0402 does not
//! carry), and a private storage set publishes what changed and retracts what went
//! ([`private_set`], with notifications). Each direction writes only the other side's
//! storage, so they do not feed each other.

use crate::{
    node::{Node, parse_stored},
    proto::{element::Element, jid::Jid},
    store::{PepConfig, PrivateItem},
    xep::pep,
};

pub const NODE: &str = "urn:xmpp:bookmarks:1";
pub const COMPAT: &str = "urn:xmpp:bookmarks:1#compat";
pub const LEGACY: &str = "storage:bookmarks";

/// The node's configuration XEP-0402 §3 asks for: the owner's alone, every item kept.
pub fn config() -> PepConfig {
    PepConfig {
        access_model: "whitelist".into(),
        max_items: pep::MAX_ITEMS,
        persist_items: true,
        send_last: "never".into(),
    }
}

fn is_true(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

/// A XEP-0402 item (room JID, `<conference/>`) as a XEP-0048 `<conference/>`.
pub fn legacy_conference(jid: &str, conference: &Element) -> Element {
    let mut c = Element::new("conference", LEGACY)
        .with_attr("jid", jid)
        .with_attr(
            "autojoin",
            if is_true(conference.attr("autojoin")) {
                "true"
            } else {
                "false"
            },
        )
        .with_opt_attr("name", conference.attr("name"));
    for child in ["nick", "password"] {
        if let Some(t) = conference.child_text(child, NODE) {
            c.append_child(Element::new(child, LEGACY).with_text(t));
        }
    }
    c
}

/// A XEP-0048 `<conference/>` as a XEP-0402 item: (room JID, `<conference/>`).
pub fn native_conference(legacy: &Element) -> Option<(String, Element)> {
    let jid = legacy.attr("jid")?.to_string();
    let mut c = Element::new("conference", NODE)
        .with_opt_attr("name", legacy.attr("name"))
        .with_attr(
            "autojoin",
            if is_true(legacy.attr("autojoin")) {
                "true"
            } else {
                "false"
            },
        );
    for child in ["nick", "password"] {
        if let Some(t) = legacy.child_text(child, LEGACY) {
            c.append_child(Element::new(child, NODE).with_text(t));
        }
    }
    Some((jid, c))
}

/// The XEP-0048 storage for these XEP-0402 items, keeping the `<url/>`s of `old`.
pub fn to_storage(items: &[(String, Element)], old: Option<&Element>) -> Element {
    let mut storage = Element::new("storage", LEGACY);
    for (jid, c) in items {
        storage.append_child(legacy_conference(jid, c));
    }
    for url in old
        .into_iter()
        .flat_map(|o| o.children())
        .filter(|c| c.is("url", LEGACY))
    {
        storage.append_child(url.clone());
    }
    storage
}

/// The node's items, as (room JID, `<conference/>`), oldest first.
async fn native_items(node: &Node, owner: &Jid) -> Option<Vec<(String, Element)>> {
    let user = owner.node()?;
    let mut items = node
        .store
        .pep_items(owner.domain(), user, NODE, &[], None)
        .await
        .inspect_err(|e| tracing::error!(error = %e, "reading bookmarks failed"))
        .ok()?;
    items.reverse();
    Some(
        items
            .into_iter()
            .filter_map(|i| {
                let c = parse_stored(&i.payload).ok()?;
                c.is("conference", NODE).then_some((i.id, c))
            })
            .collect(),
    )
}

/// The node changed: private storage follows.
pub async fn node_changed(node: &Node, owner: &Jid) {
    let Some(user) = owner.node() else { return };
    let Some(items) = native_items(node, owner).await else {
        return;
    };
    let old = node
        .store
        .private_xml(owner.domain(), user, LEGACY, "storage")
        .await
        .ok()
        .flatten()
        .and_then(|xml| parse_stored(&xml).ok());
    let storage = to_storage(&items, old.as_ref());
    let item = PrivateItem {
        namespace: LEGACY.into(),
        name: "storage".into(),
        xml: storage.to_xml(),
    };
    if let Err(e) = node
        .store
        .set_private_xml(owner.domain(), user, &[item])
        .await
    {
        tracing::warn!(error = %e, "bookmarks could not be copied into private storage");
    }
}

/// XEP-0048 bookmarks were stored in private storage: the node follows.
pub async fn private_set(node: &Node, owner: &Jid, storage: &Element) {
    let Some(current) = native_items(node, owner).await else {
        return;
    };
    let wanted: Vec<(String, Element)> = storage
        .children()
        .filter(|c| c.is("conference", LEGACY))
        .filter_map(native_conference)
        .collect();
    for (jid, c) in &wanted {
        let same = current
            .iter()
            .any(|(id, old)| id == jid && legacy_conference(id, old) == legacy_conference(jid, c));
        if same {
            continue;
        }
        if let Err(e) = pep::publish_item(node, owner, NODE, &config(), jid, c.to_xml()).await {
            tracing::warn!(error = %e, "a bookmark could not be published");
            return;
        }
    }
    for (id, _) in current
        .iter()
        .filter(|(id, _)| !wanted.iter().any(|(j, _)| j == id))
    {
        if let Err(e) = pep::retract_item(node, owner, NODE, id, true).await {
            tracing::warn!(error = %e, "a bookmark could not be retracted");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::testing::stanza;

    #[test]
    fn bookmarks_convert_both_ways_and_urls_stay_in_private_storage() {
        let old = stanza(
            "<storage xmlns='storage:bookmarks'>\
               <conference jid='council@conference.example.com' autojoin='1' name='Council'><nick>Ham</nick></conference>\
               <url name='Site' url='https://example.com/'/>\
             </storage>",
        );
        let native: Vec<(String, Element)> = old
            .children()
            .filter(|c| c.is("conference", LEGACY))
            .filter_map(native_conference)
            .collect();
        assert_eq!(native.len(), 1);
        let (jid, c) = &native[0];
        assert_eq!(jid, "council@conference.example.com");
        assert_eq!(c.attr("autojoin"), Some("true"));
        assert_eq!(c.child_text("nick", NODE).unwrap(), "Ham");
        let back = to_storage(&native, Some(&old));
        let conf = back.get_child("conference", LEGACY).unwrap();
        assert_eq!(conf.attr("name"), Some("Council"));
        assert_eq!(conf.child_text("nick", LEGACY).unwrap(), "Ham");
        assert!(back.has_child("url", LEGACY));
    }
}
