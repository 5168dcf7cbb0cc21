//! XEP-0049 Private XML Storage (`jabber:iq:private`): an account keeps XML elements on
//! the server that only it can read, one per namespace and element name (XEP-0048
//! bookmarks live here). A set stores each child of the query in place of the stored one
//! with its namespace and name; a get answers each child with the stored element, or the
//! empty element when none is stored. The data counts toward the vhost's storage quota; a
//! vhost frozen for a move refuses sets before they get here (`im`). XEP-0049 defines no
//! disco feature, so nothing is advertised.

use crate::{
    node::{Node, parse_stored},
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    store::{PrivateItem, StoreError},
    xep::bookmarks::{self, LEGACY},
};

/// Namespaces reserved by XMPP itself (XEP-0049 §2.3 lets a server refuse them): an element
/// written without a namespace of its own falls in `jabber:iq:private`, hence here too.
fn is_reserved(namespace: &str) -> bool {
    namespace.starts_with("jabber:")
}

/// Answers a private storage get or set from `from` addressed to the account `owner` (a
/// bare JID, the sender's own when the iq had no `to`).
pub async fn handle(node: &Node, from: &Jid, owner: &Jid, iq: &Element) -> Element {
    if from.bare() != *owner {
        return error_reply(
            iq,
            Condition::Forbidden,
            Some("Private XML storage belongs to its account alone."),
        );
    }
    let (Some(username), domain) = (owner.node(), owner.domain()) else {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    };
    let Some(query) = iq.get_child("query", ns::PRIVATE) else {
        return error_reply(iq, Condition::BadRequest, None);
    };
    let children: Vec<&Element> = query.children().collect();
    if children.is_empty() {
        return error_reply(
            iq,
            Condition::NotAcceptable,
            Some("The query must hold the element to store or to read."),
        );
    }
    if children.iter().any(|c| is_reserved(c.ns())) {
        return error_reply(
            iq,
            Condition::NotAcceptable,
            Some("Namespaces starting with jabber: are reserved."),
        );
    }
    match iq.attr("type") {
        Some("get") => {
            let mut answer = Element::new("query", ns::PRIVATE);
            for wanted in children {
                let stored = match node
                    .store
                    .private_xml(domain, username, wanted.ns(), wanted.name())
                    .await
                {
                    Ok(stored) => stored,
                    Err(e) => {
                        tracing::error!(error = %e, "reading private XML failed");
                        return error_reply(iq, Condition::InternalServerError, None);
                    }
                };
                let element = stored
                    .and_then(|xml| {
                        parse_stored(&xml)
                            .inspect_err(
                                |e| tracing::warn!(error = %e, "stored private XML cannot be read"),
                            )
                            .ok()
                    })
                    .unwrap_or_else(|| Element::new(wanted.name(), wanted.ns()));
                answer.append_child(element);
            }
            iq_result(iq).with_child(answer)
        }
        Some("set") => {
            let items: Vec<PrivateItem> = children
                .iter()
                .map(|c| PrivateItem {
                    namespace: c.ns().to_string(),
                    name: c.name().to_string(),
                    xml: c.to_xml(),
                })
                .collect();
            match node.store.set_private_xml(domain, username, &items).await {
                Ok(()) => {
                    // XEP-0402 #compat: the PEP bookmarks follow.
                    if let Some(storage) = children.iter().rfind(|c| c.is("storage", LEGACY)) {
                        bookmarks::private_set(node, owner, storage).await;
                    }
                    iq_result(iq)
                }
                Err(StoreError::StorageFull(domain, _)) => error_reply(
                    iq,
                    Condition::ResourceConstraint,
                    Some(&crate::im::storage_full_text(&domain, "nothing was stored")),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "storing private XML failed");
                    error_reply(iq, Condition::InternalServerError, None)
                }
            }
        }
        _ => error_reply(iq, Condition::BadRequest, None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        im,
        node::testing::{bind, delivered, node_with_spec, stanza},
    };

    const DOMAIN: &str = "example.com";

    /// The condition of an error reply.
    fn condition_of(reply: &Element) -> String {
        assert_eq!(reply.attr("type"), Some("error"), "{}", reply.to_xml());
        let error = reply.get_child("error", ns::CLIENT).unwrap();
        error
            .children()
            .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
            .unwrap()
            .name()
            .to_string()
    }

    /// An iq from alice's desk resource with `attrs` and a private query holding `inner`.
    fn iq(attrs: &str, inner: &str) -> Element {
        stanza(&format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' id='p' {attrs}><query xmlns='jabber:iq:private'>{inner}</query></iq>"
        ))
    }

    /// Sends one stanza as alice and returns the one answer.
    async fn ask(node: &Node, stanza: Element) -> Element {
        let (alice, mut to_alice) = bind(node, "alice@example.com/desk");
        im::handle(node, &alice, stanza).await;
        let mut answers = delivered(&mut to_alice);
        assert_eq!(answers.len(), 1, "{answers:?}");
        answers.remove(0)
    }

    #[tokio::test]
    async fn a_set_of_several_elements_reads_back_one_by_one_and_a_missing_one_is_empty() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let set = iq(
            "type='set'",
            "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>\
             <storage xmlns='storage:bookmarks'><conference jid='council@conference.example.com' autojoin='true' name='Council'><nick>Ham</nick></conference></storage>",
        );
        let reply = ask(&node, set).await;
        assert_eq!(reply.attr("type"), Some("result"), "{}", reply.to_xml());

        for (to, inner) in [
            ("", "<storage xmlns='storage:bookmarks'/>"),
            (
                "to='alice@example.com'",
                "<storage xmlns='storage:bookmarks'/>",
            ),
        ] {
            let reply = ask(&node, iq(&format!("type='get' {to}"), inner)).await;
            assert_eq!(reply.attr("type"), Some("result"), "{}", reply.to_xml());
            let query = reply.get_child("query", ns::PRIVATE).unwrap();
            let storage = query.get_child("storage", "storage:bookmarks").unwrap();
            let room = storage
                .get_child("conference", "storage:bookmarks")
                .unwrap();
            assert_eq!(room.attr("jid"), Some("council@conference.example.com"));
            assert_eq!(room.child_text("nick", "storage:bookmarks").unwrap(), "Ham");
            assert_eq!(query.children().count(), 1, "only what was asked");
        }
        let reply = ask(&node, iq("type='get'", "<exodus xmlns='exodus:prefs'/>")).await;
        let exodus = reply
            .get_child("query", ns::PRIVATE)
            .and_then(|q| q.get_child("exodus", "exodus:prefs"))
            .unwrap();
        assert_eq!(
            exodus.child_text("defaultnick", "exodus:prefs").unwrap(),
            "Hamlet"
        );

        // Nothing stored under this name: the empty element.
        let reply = ask(&node, iq("type='get'", "<other xmlns='exodus:prefs'/>")).await;
        let query = reply.get_child("query", ns::PRIVATE).unwrap();
        let empty = query.get_child("other", "exodus:prefs").unwrap();
        assert_eq!(empty.children().count(), 0);
        assert_eq!(empty.text(), "");
    }

    #[tokio::test]
    async fn reserved_namespaces_empty_queries_and_other_users_storage_are_refused() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        for (attrs, inner, want) in [
            (
                "type='set'",
                "<vCard xmlns='jabber:x:foo'/>",
                "not-acceptable",
            ),
            (
                "type='get'",
                "<vCard xmlns='jabber:x:foo'/>",
                "not-acceptable",
            ),
            // A child without a namespace of its own is in jabber:iq:private.
            ("type='set'", "<prefs/>", "not-acceptable"),
            (
                "type='set'",
                "<query xmlns='jabber:iq:private'/>",
                "not-acceptable",
            ),
            ("type='get'", "", "not-acceptable"),
            ("type='set'", "", "not-acceptable"),
            (
                "type='get' to='bob@example.com'",
                "<a xmlns='x:y'/>",
                "forbidden",
            ),
            (
                "type='set' to='bob@example.com'",
                "<a xmlns='x:y'/>",
                "forbidden",
            ),
        ] {
            let reply = ask(&node, iq(attrs, inner)).await;
            assert_eq!(condition_of(&reply), want, "{attrs} {inner}");
        }
        // A refused set with a valid element beside the reserved one stores nothing.
        ask(
            &node,
            iq("type='set'", "<a xmlns='x:y'/><b xmlns='jabber:b'/>"),
        )
        .await;
        assert_eq!(
            node.store
                .private_xml(DOMAIN, "alice", "x:y", "a")
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_set_past_the_quota_or_while_the_vhost_moves_is_refused() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let stored = node.store.measure_storage(DOMAIN).await.unwrap();
        crate::node::testing::apply_spec(
            &node,
            json!({"domain": DOMAIN, "generation": 2,
                   "limits": {"storage_quota_bytes": stored + 200}}),
        )
        .await;
        let big = format!("<a xmlns='x:y'>{}</a>", "z".repeat(300));
        let reply = ask(&node, iq("type='set'", &big)).await;
        assert_eq!(condition_of(&reply), "resource-constraint");
        let reply = ask(&node, iq("type='set'", "<a xmlns='x:y'>small</a>")).await;
        assert_eq!(reply.attr("type"), Some("result"));

        node.store.set_vhost_move(DOMAIN, None).await.unwrap();
        node.reload_vhosts().await.unwrap();
        let reply = ask(&node, iq("type='set'", "<a xmlns='x:y'>other</a>")).await;
        assert_eq!(condition_of(&reply), "resource-constraint");
        // Reading still works while frozen.
        let reply = ask(&node, iq("type='get'", "<a xmlns='x:y'/>")).await;
        let a = reply
            .get_child("query", ns::PRIVATE)
            .and_then(|q| q.get_child("a", "x:y"))
            .unwrap();
        assert_eq!(a.text(), "small");
    }
}
