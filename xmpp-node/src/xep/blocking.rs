//! XEP-0191 blocking command: each account keeps a list of blocked JIDs. Stanzas from a
//! blocked entity are not delivered to the account, and the account's own stanzas to a
//! blocked entity are refused with `not-acceptable` + `<blocked/>`.
//!
//! Matching follows the privacy-list rules the XEP refers to: an item `user@domain/res`
//! matches exactly, `user@domain` any of its resources, `domain/res` that resource of the
//! domain, `domain` everything from it.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use crate::{
    node::Node,
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
};

pub const ERRORS_NS: &str = "urn:xmpp:blocking:errors";

/// Block lists in memory, loaded on first use and updated with every change.
#[derive(Default)]
pub struct BlockCache {
    lists: RwLock<HashMap<Jid, Arc<HashSet<Jid>>>>,
}

impl BlockCache {
    /// The account's list if it is in memory (loaded at bind), without touching the store.
    pub fn cached(&self, owner: &Jid) -> Option<Arc<HashSet<Jid>>> {
        self.get(owner)
    }

    fn get(&self, owner: &Jid) -> Option<Arc<HashSet<Jid>>> {
        self.lists
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(owner)
            .cloned()
    }

    /// Drops an account's cached list (the account was deleted).
    pub fn forget(&self, owner: &Jid) {
        self.lists
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&owner.bare());
    }

    /// Drops the cached lists of a vhost's accounts (its data was replaced or deleted).
    pub fn forget_domain(&self, domain: &str) {
        self.lists
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|owner, _| owner.domain() != domain);
    }

    fn put(&self, owner: Jid, list: HashSet<Jid>) {
        // Most accounts block nobody: they all share one empty list.
        let list = if list.is_empty() {
            empty()
        } else {
            Arc::new(list)
        };
        self.lists
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner, list);
    }
}

fn empty() -> Arc<HashSet<Jid>> {
    static EMPTY: std::sync::OnceLock<Arc<HashSet<Jid>>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Default::default).clone()
}

/// Whether `item` on a block list covers `entity`.
pub fn matches(item: &Jid, entity: &Jid) -> bool {
    if item.domain() != entity.domain() {
        return false;
    }
    match (item.node(), item.resource()) {
        (None, None) => true,
        (None, Some(r)) => entity.node().is_none() && entity.resource() == Some(r),
        (Some(n), None) => entity.node() == Some(n),
        (Some(n), Some(r)) => entity.node() == Some(n) && entity.resource() == Some(r),
    }
}

async fn list(node: &Node, owner: &Jid) -> Arc<HashSet<Jid>> {
    if let Some(l) = node.blocks.get(owner) {
        return l;
    }
    let (Some(user), domain) = (owner.node(), owner.domain()) else {
        return Arc::default();
    };
    let loaded: HashSet<Jid> = match node.store.blocklist(domain, user).await {
        Ok(items) => items.iter().filter_map(|j| Jid::parse(j).ok()).collect(),
        Err(e) => {
            tracing::error!(error = %e, "reading a block list failed");
            return Arc::default();
        }
    };
    node.blocks.put(owner.clone(), loaded);
    node.blocks.get(owner).unwrap_or_else(empty)
}

/// The account's block list as it stands.
pub async fn current(node: &Node, owner: &Jid) -> HashSet<Jid> {
    (*list(node, &owner.bare()).await).clone()
}

/// Whether the account `owner` (bare) blocks `entity`.
pub async fn blocks(node: &Node, owner: &Jid, entity: &Jid) -> bool {
    if owner.node().is_none() || !node.is_hosted(owner.domain()) {
        return false;
    }
    list(node, &owner.bare())
        .await
        .iter()
        .any(|item| matches(item, entity))
}

/// The error for a stanza the sender may not send because they block the recipient.
pub fn blocked_error(stanza: &Element) -> Element {
    let mut reply = error_reply(stanza, Condition::NotAcceptable, None);
    if let Some(error) = reply.get_child_mut("error", stanza.ns()) {
        error.append_child(Element::new("blocked", ERRORS_NS));
    }
    reply
}

/// Handles a blocklist get, block or unblock from `me` (full JID). Returns the reply and the
/// push to send to the account's other interested resources, if the list changed.
pub async fn handle(node: &Node, me: &Jid, iq: &Element) -> (Element, Option<Element>) {
    let owner = me.bare();
    let (Some(user), domain) = (owner.node(), owner.domain()) else {
        return (error_reply(iq, Condition::ServiceUnavailable, None), None);
    };
    let payload = iq.children().next();
    match (iq.attr("type"), payload.map(|p| p.name())) {
        (Some("get"), Some("blocklist")) => {
            let mut items = list(node, &owner)
                .await
                .iter()
                .map(|j| j.to_string())
                .collect::<Vec<_>>();
            items.sort();
            let mut q = Element::new("blocklist", ns::BLOCKING);
            for i in items {
                q.append_child(Element::new("item", ns::BLOCKING).with_attr("jid", i));
            }
            (iq_result(iq).with_child(q), None)
        }
        (Some("set"), Some(kind @ ("block" | "unblock"))) => {
            let Some(payload) = payload else {
                return (error_reply(iq, Condition::BadRequest, None), None);
            };
            let mut jids = Vec::new();
            for item in payload.children().filter(|c| c.is("item", ns::BLOCKING)) {
                match item.attr("jid").map(Jid::parse) {
                    Some(Ok(j)) => jids.push(j),
                    _ => return (error_reply(iq, Condition::JidMalformed, None), None),
                }
            }
            if kind == "block" && jids.is_empty() {
                return (
                    error_reply(
                        iq,
                        Condition::BadRequest,
                        Some("Name at least one JID to block."),
                    ),
                    None,
                );
            }
            let texts: Vec<String> = jids.iter().map(|j| j.to_string()).collect();
            let stored = if kind == "block" {
                node.store.block(domain, user, &texts).await
            } else {
                node.store.unblock(domain, user, &texts).await
            };
            if let Err(e) = stored {
                tracing::error!(error = %e, "changing a block list failed");
                return (error_reply(iq, Condition::InternalServerError, None), None);
            }
            let mut current: HashSet<Jid> = (*list(node, &owner).await).clone();
            if kind == "block" {
                current.extend(jids);
            } else if jids.is_empty() {
                current.clear();
            } else {
                for j in &jids {
                    current.remove(j);
                }
            }
            node.blocks.put(owner.clone(), current);
            // XEP-0191 §3.3: the change is pushed to every resource that asked for the list.
            let mut push_payload = Element::new(kind, ns::BLOCKING);
            for t in texts {
                push_payload.append_child(Element::new("item", ns::BLOCKING).with_attr("jid", t));
            }
            let push = Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", format!("push-{}", crate::node::unix_now()))
                .with_child(push_payload);
            (iq_result(iq), Some(push))
        }
        _ => (error_reply(iq, Condition::BadRequest, None), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn items_match_like_privacy_list_jids() {
        let romeo_phone = j("romeo@montague.example/phone");
        assert!(matches(&j("romeo@montague.example/phone"), &romeo_phone));
        assert!(!matches(&j("romeo@montague.example/laptop"), &romeo_phone));
        assert!(matches(&j("romeo@montague.example"), &romeo_phone));
        assert!(matches(&j("montague.example"), &romeo_phone));
        assert!(
            !matches(&j("montague.example/phone"), &romeo_phone),
            "a domain/resource item matches only the domain's own resource"
        );
        assert!(matches(
            &j("montague.example/phone"),
            &j("montague.example/phone")
        ));
        assert!(!matches(&j("capulet.example"), &romeo_phone));
    }

    #[test]
    fn the_blocked_error_is_not_acceptable_with_the_blocked_element() {
        let m = Element::new("message", ns::CLIENT)
            .with_attr("to", "romeo@montague.example")
            .with_attr("from", "juliet@capulet.example/balcony");
        let e = blocked_error(&m);
        let error = e.get_child("error", ns::CLIENT).unwrap();
        assert_eq!(error.attr("type"), Some("modify"));
        assert!(error.has_child("not-acceptable", ns::STANZAS_ERRORS));
        assert!(error.has_child("blocked", ERRORS_NS));
    }
}
