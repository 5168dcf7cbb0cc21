//! Moving a vhost between nodes, as a node sees it. The panel drives the move; each node
//! only has to keep the vhost's data still while it is copied, and send clients on at the
//! end:
//!
//! 1. the old node freezes the vhost (`PUT …/move`): its data stops changing, its sessions
//!    stay; the panel exports the data;
//! 2. the new node gets the spec, is frozen too and imports the data (so a repeated copy
//!    overwrites nothing written there), then is thawed (`DELETE …/move`) as the panel
//!    makes it the domain's node;
//! 3. the old node redirects (`PUT …/move` with `redirect_to`): its clients get
//!    `<see-other-host/>` naming a node that already holds their data; then it removes the
//!    vhost.
//!
//! Frozen means no write of the vhost's data gets through, whoever asks: control API
//! account changes get 409 `vhost_moving`; stanzas that would store something for its
//! users (an offline message from any vhost of this node, a roster or subscription change,
//! a vCard, a block list) bounce with a `resource-constraint` wait error, which tells the
//! sender to try again; offline messages stay stored instead of being taken at login, and
//! the last-activity time of a session ending meanwhile is not recorded. Nothing is held
//! back to be sent later: the node has no way yet to reach the new node for this domain.
//! (The `rookery-node user …` commands write to the store directly, past all this; upkeep
//! still deletes expired offline messages, which the new node expires as well.)
//!
//! Every such write holds a [`WritePermit`] while it checks and writes; a freeze waits
//! until the permits given out before it are back (`Node::reload_vhosts`), so when the
//! node answers the freeze no write that missed it can still land after the export.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::proto::c2s::HostAccess;

/// Lets writes of vhost data through one at a time with respect to freezes: many writes
/// at once, or one freeze.
#[derive(Debug, Default)]
pub struct WriteGate(RwLock<()>);

/// Held from the frozen check to the end of the write it allows.
#[derive(Debug)]
pub struct WritePermit<'a> {
    _held: RwLockReadGuard<'a, ()>,
}

/// Held while the set of frozen vhosts changes: no write is under way.
#[derive(Debug)]
pub struct Quiet<'a> {
    _held: RwLockWriteGuard<'a, ()>,
}

impl WriteGate {
    /// A permit to check whether a vhost is frozen and write if it is not. Never ask for
    /// a second one while holding one: a freeze waiting in between would never get in.
    pub async fn enter(&self) -> WritePermit<'_> {
        WritePermit {
            _held: self.0.read().await,
        }
    }

    /// Waits until every write under way is done, and keeps new ones out while held.
    pub async fn quiet(&self) -> Quiet<'_> {
        Quiet {
            _held: self.0.write().await,
        }
    }
}

/// Why a write to a vhost in a move is refused, for people (the panel shows it as is).
pub fn moving_text(domain: &str) -> String {
    format!("{domain} is moving to another server right now; try again in a moment.")
}

/// How clients get in while a vhost is moving: a suspension still wins; otherwise a
/// redirect sends them to the new node, and a freeze alone lets them in.
pub fn access_while_moving(access: HostAccess, redirect_to: Option<&str>) -> HostAccess {
    match (access, redirect_to) {
        (HostAccess::Open | HostAccess::MovedTo(_), Some(to)) => HostAccess::MovedTo(to.into()),
        (access, _) => access,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::{
        im,
        node::{
            Node,
            testing::{apply_spec, bind, delivered, node_with_spec, stanza},
        },
        proto::{element::Element, ns},
    };

    const DOMAIN: &str = "example.com";

    async fn freeze(node: &Node, domain: &str, redirect_to: Option<&str>) {
        node.store
            .set_vhost_move(domain, redirect_to)
            .await
            .unwrap();
        node.reload_vhosts().await.unwrap();
    }

    async fn thaw(node: &Node, domain: &str) {
        node.store.clear_vhost_move(domain).await.unwrap();
        node.reload_vhosts().await.unwrap();
    }

    /// The (type, condition, text) of an error reply.
    fn error_of(reply: &Element) -> (String, String, String) {
        assert_eq!(reply.attr("type"), Some("error"), "{}", reply.to_xml());
        let error = reply.get_child("error", ns::CLIENT).unwrap();
        let condition = error
            .children()
            .find(|c| c.ns() == ns::STANZAS_ERRORS && c.name() != "text")
            .unwrap();
        (
            error.attr("type").unwrap_or_default().to_string(),
            condition.name().to_string(),
            error
                .child_text("text", ns::STANZAS_ERRORS)
                .unwrap_or_default(),
        )
    }

    async fn offline_count(node: &Node) -> i64 {
        use sqlx::Row;
        sqlx::query("SELECT COUNT(*) AS n FROM offline_messages")
            .fetch_one(&node.store.db)
            .await
            .unwrap()
            .get("n")
    }

    #[test]
    fn a_redirect_sends_clients_on_but_a_suspension_still_wins() {
        let to = "node2.example.net:5222";
        assert_eq!(
            access_while_moving(HostAccess::Open, Some(to)),
            HostAccess::MovedTo(to.into())
        );
        assert_eq!(
            access_while_moving(HostAccess::Open, None),
            HostAccess::Open
        );
        assert_eq!(
            access_while_moving(HostAccess::Suspended, Some(to)),
            HostAccess::Suspended
        );
    }

    #[tokio::test]
    async fn a_freeze_waits_for_writes_under_way_and_later_writes_see_it() {
        let (node, _dir) = node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &[]).await;
        let permit = node.writes.enter().await;
        let freezing = tokio::spawn({
            let node = node.clone();
            async move { freeze(&node, DOMAIN, None).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !freezing.is_finished() && !node.is_frozen(DOMAIN),
            "the freeze waits for the write under way"
        );
        drop(permit);
        freezing.await.unwrap();
        let _permit = node.writes.enter().await;
        assert!(node.is_frozen(DOMAIN));
    }

    #[tokio::test]
    async fn writes_for_a_frozen_vhost_bounce_with_wait_and_its_stored_messages_stay() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        let other = apply_spec(&node, json!({"domain": "other.example", "generation": 1})).await;
        node.store
            .add_account(&other, "mallory", "a-password-1", 1)
            .await
            .unwrap();
        let (mallory, mut to_mallory) = bind(&node, "mallory@other.example/desk");
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let message = |id: &str| {
            stanza(&format!(
                "<message xmlns='jabber:client' to='bob@example.com' type='chat' id='{id}'><body>hi</body></message>"
            ))
        };
        im::handle(&node, &mallory, message("before")).await;
        assert_eq!(offline_count(&node).await, 1);

        freeze(&node, DOMAIN, None).await;
        // From another vhost of this node: bounced, nothing stored.
        im::handle(&node, &mallory, message("during")).await;
        let bounce = delivered(&mut to_mallory).pop().expect("a bounce");
        let (kind, condition, text) = error_of(&bounce);
        assert_eq!(
            (kind.as_str(), condition.as_str()),
            ("wait", "resource-constraint")
        );
        assert_eq!(text, moving_text(DOMAIN));
        assert_eq!(offline_count(&node).await, 1);
        // The vhost's own users: a roster change and a subscription bounce too.
        for refused in [
            "<iq xmlns='jabber:client' type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='bob@example.com'/></query></iq>",
            "<presence xmlns='jabber:client' to='mallory@other.example' type='subscribe'/>",
            "<iq xmlns='jabber:client' type='set' id='v1'><vCard xmlns='vcard-temp'><FN>A</FN></vCard></iq>",
        ] {
            im::handle(&node, &alice, stanza(refused)).await;
            let reply = delivered(&mut to_alice).pop().expect("an answer");
            assert_eq!(error_of(&reply).1, "resource-constraint", "{refused}");
        }
        assert!(
            node.store
                .roster(&alice.jid.bare())
                .await
                .unwrap()
                .1
                .is_empty()
        );
        // Bob logs in meanwhile: his message stays stored for the new node.
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        im::handle(&node, &bob, stanza("<presence xmlns='jabber:client'/>")).await;
        assert!(
            !delivered(&mut to_bob).iter().any(|s| s.name() == "message"),
            "not taken while frozen"
        );
        assert_eq!(offline_count(&node).await, 1);
        im::session_ended(&node, &bob).await;
        assert!(
            node.store
                .last_activity(DOMAIN, "bob")
                .await
                .unwrap()
                .is_none()
        );

        // Thawed (a move that stopped): writes go through again.
        thaw(&node, DOMAIN).await;
        im::handle(&node, &mallory, message("after")).await;
        assert!(delivered(&mut to_mallory).is_empty(), "stored, no bounce");
        assert_eq!(offline_count(&node).await, 2);
    }
}
