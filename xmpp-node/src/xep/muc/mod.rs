//! Multi-user chat (XEP-0045) at `conference.<vhost>`, with occupant ids (XEP-0421), self-
//! ping (XEP-0410) and the rooms' message archives (XEP-0313 at the room's JID).
//!
//! `xep::services` hands every stanza addressed to the service or one of its rooms to
//! [`handle`]. The service answers disco itself (its public rooms are its items); a room's
//! stanza runs through the room's state machine ([`room::Room`], no I/O) while the rooms'
//! lock is held, then what the room returned is delivered to local sessions and stored:
//! a persistent room is saved whole when its configuration, subject or affiliations
//! change and forgotten when it is destroyed or made temporary; its groupchat messages go
//! into `muc_archive`. A vhost's persistent rooms are loaded from the store the first time
//! its service is used (after a start, or after the vhost moved here).
//!
//! Rooms are created by joining, only by accounts of the vhost itself, up to the spec's
//! `limits.max_rooms`; `limits.max_room_occupants` caps every room's occupants. A session
//! that goes unavailable or ends leaves every room it is in ([`session_ended`]).
//!
//! Not yet: federation (occupants are local sessions), occupants' vCards and other iq
//! passed on to occupants (answered `service-unavailable`), voice requests, registration
//! with a room, filtering a room's archive by `with`, reserved nicks, invitations to users
//! who are offline (they are dropped), block lists (XEP-0191) applied to what rooms send. One lock guards every room of the node (held only
//! while a room computes, never across I/O); a lock per room is the next step if it is ever
//! contended.
//!
//! Limits: a message past the vhost's storage quota is delivered with its stanza-id but not
//! archived; the rooms' archives keep the vhost's `limits.archive_retention_days`
//! (`mam::expire`).

pub mod room;

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
};

use prometheus_client::metrics::gauge::Gauge;
use room::{Affiliation, NS_MUC, NS_OCCUPANT_ID, Out, Room, Saved};

use crate::{
    control::moving::moving_text,
    node::{Node, unix_now},
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    router::{SessionHandle, message_targets},
    store::{StoreError, archive::ROOM_ARCHIVE, muc::StoredRoom},
    xep::mam,
};

/// The features of the service itself.
pub fn service_features(node: &Node, vhost: &str) -> Vec<&'static str> {
    let mut f = vec![ns::DISCO_INFO, ns::DISCO_ITEMS, NS_MUC, NS_OCCUPANT_ID];
    if mam::enabled(node, vhost) {
        f.push(mam::NS);
    }
    f
}

/// The rooms of the loaded vhosts, and which rooms each session is in.
pub struct Muc {
    /// By vhost, then by room localpart. A vhost is here once its rooms were loaded.
    vhosts: Mutex<HashMap<String, HashMap<String, Room>>>,
    /// Full JID of a session → the bare JIDs of the rooms it joined (may be stale: leaving
    /// a room one is not in does nothing).
    joined: Mutex<HashMap<Jid, HashSet<Jid>>>,
    /// `metrics.muc_rooms`: rooms in memory.
    rooms_gauge: Gauge,
}

impl Muc {
    pub fn new(rooms_gauge: Gauge) -> Self {
        Self {
            vhosts: Mutex::default(),
            joined: Mutex::default(),
            rooms_gauge,
        }
    }

    /// Drops a vhost's rooms from memory (the vhost is gone, or its data replaced).
    pub fn forget_domain(&self, vhost: &str) {
        if let Some(rooms) = self
            .vhosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(vhost)
        {
            self.rooms_gauge.dec_by(rooms.len() as i64);
        }
    }

    fn note_joined(&self, session: &Jid, room: &Jid, joined: bool) {
        let mut map = self.joined.lock().unwrap_or_else(|p| p.into_inner());
        if joined {
            map.entry(session.clone()).or_default().insert(room.clone());
        } else if let Some(rooms) = map.get_mut(session) {
            rooms.remove(room);
            if rooms.is_empty() {
                map.remove(session);
            }
        }
    }
}

/// The spec's room limits of a vhost: (max rooms, max occupants per room).
fn limits(node: &Node, vhost: &str) -> (Option<i64>, Option<i64>) {
    node.host(vhost)
        .and_then(|h| {
            h.policy
                .as_ref()
                .map(|p| (p.max_rooms, p.max_room_occupants))
        })
        .unwrap_or((None, None))
}

/// Whether the vhost's spec allows group chat.
pub fn enabled(node: &Node, vhost: &str) -> bool {
    node.host(vhost)
        .is_some_and(|h| h.policy.as_ref().is_none_or(|p| p.features.muc))
}

async fn ensure_loaded(node: &Node, vhost: &str, service: &str) {
    if node
        .muc
        .vhosts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains_key(vhost)
    {
        return;
    }
    let stored = match node.store.muc_rooms(vhost).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(vhost, error = %e, "loading the rooms failed");
            Vec::new()
        }
    };
    let mut rooms = HashMap::new();
    for s in stored {
        let Ok(jid) = Jid::from_parts(Some(&s.room), service, None) else {
            continue;
        };
        let saved: Saved = serde_json::from_str(&s.config).unwrap_or_else(|e| {
            tracing::warn!(vhost, room = %s.room, error = %e, "a stored room's configuration cannot be read");
            Saved::default()
        });
        let affiliations = s
            .affiliations
            .iter()
            .filter_map(|(j, a, r)| Some((Jid::parse(j).ok()?, Affiliation::parse(a)?, r.clone())))
            .collect();
        rooms.insert(s.room.clone(), Room::restored(jid, saved, affiliations));
    }
    tracing::info!(vhost, rooms = rooms.len(), "rooms loaded");
    let mut vhosts = node.muc.vhosts.lock().unwrap_or_else(|p| p.into_inner());
    // Another stanza may have loaded them meanwhile: the first load stays.
    if let std::collections::hash_map::Entry::Vacant(e) = vhosts.entry(vhost.to_string()) {
        node.muc.rooms_gauge.inc_by(rooms.len() as i64);
        e.insert(rooms);
    }
}

fn random_salt() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// Handles a stanza from `me` to `conference.<vhost>` (`service`) or one of its rooms.
pub async fn handle(node: &Node, me: &SessionHandle, vhost: &str, service: &str, stanza: Element) {
    let Some(to) = stanza.attr("to").and_then(|t| Jid::parse(t).ok()) else {
        return;
    };
    let bounce = |c, text: Option<&str>| {
        if stanza.attr("type") != Some("error") {
            me.deliver(room::error(&stanza, c, text));
        }
    };
    ensure_loaded(node, vhost, service).await;
    let Some(room_name) = to.node().map(str::to_string) else {
        if to.resource().is_some() {
            return bounce(Condition::ItemNotFound, None);
        }
        return service_stanza(node, me, vhost, service, &stanza);
    };
    let room_jid = to.bare();
    let nick = to.resource().map(str::to_string);
    // Archive queries read the store: the room only says whether the user may.
    if stanza.name() == "iq"
        && nick.is_none()
        && stanza.children().next().is_some_and(|p| p.ns() == mam::NS)
    {
        return room_mam(node, me, vhost, &room_name, &room_jid, &stanza).await;
    }
    let writes = stanza.name() == "iq"
        && stanza.attr("type") == Some("set")
        && stanza
            .children()
            .next()
            .is_some_and(|p| p.ns() == room::NS_OWNER || p.ns() == room::NS_ADMIN);
    if writes && node.is_frozen(vhost) {
        return bounce(Condition::ResourceConstraint, Some(&moving_text(vhost)));
    }
    let (max_rooms, max_occupants) = limits(node, vhost);
    let archiving = mam::enabled(node, vhost) && !node.is_frozen(vhost);
    let now = unix_now();
    let next_id = || node.mam.ids.next();
    // Runs the room; what it returns is sent and stored once the lock is released.
    let (out, save, was_persistent) = {
        let mut vhosts = node.muc.vhosts.lock().unwrap_or_else(|p| p.into_inner());
        let rooms = vhosts.entry(vhost.to_string()).or_default();
        let is_join = stanza.name() == "presence"
            && stanza.attr("type").is_none()
            && nick.is_some()
            && !rooms.contains_key(&room_name);
        if is_join {
            if me.jid.domain() != vhost {
                return bounce(
                    Condition::NotAllowed,
                    Some("Only accounts of this domain may create rooms here."),
                );
            }
            if max_rooms.is_some_and(|m| rooms.len() as i64 >= m) {
                return bounce(
                    Condition::ResourceConstraint,
                    Some("This domain has as many rooms as its plan allows."),
                );
            }
            rooms.insert(
                room_name.clone(),
                Room::new(room_jid.clone(), me.jid.clone(), random_salt()),
            );
            node.muc.rooms_gauge.inc();
        }
        let Some(room) = rooms.get_mut(&room_name) else {
            drop(vhosts);
            return match stanza.name() {
                "presence" => {}
                _ => bounce(Condition::ItemNotFound, Some("There is no such room.")),
            };
        };
        room.max_users_limit = max_occupants.and_then(|m| u32::try_from(m).ok());
        room.archiving = archiving;
        let was_persistent = room.config.persistent && !is_join;
        let out = match stanza.name() {
            "presence" => match &nick {
                Some(n) => room.presence(&me.jid, n, &stanza, now),
                None => Out {
                    send: vec![room::error(
                        &stanza,
                        Condition::JidMalformed,
                        Some("Join a room as room@service/nickname."),
                    )],
                    ..Default::default()
                },
            },
            "message" => room.message(&me.jid, nick.as_deref(), &stanza, now, &next_id),
            _ => room.iq(&me.jid, nick.as_deref(), &stanza),
        };
        // A join that failed leaves no new room behind.
        let out = if is_join && room.is_empty() {
            Out {
                destroyed: true,
                ..out
            }
        } else {
            out
        };
        node.muc
            .note_joined(&me.jid, &room_jid, room.occupant_of(&me.jid).is_some());
        let save = (room.config.persistent && !room.locked && (out.changed || !was_persistent))
            .then(|| stored(&room_name, room));
        if out.destroyed {
            rooms.remove(&room_name);
            node.muc.rooms_gauge.dec();
        }
        if stanza.name() == "message"
            && stanza.attr("type") == Some("groupchat")
            && !out.send.iter().any(|s| s.attr("type") == Some("error"))
        {
            node.metrics.muc_messages.inc();
        }
        (out, save, was_persistent)
    };
    send_all(node, out.send);
    persist(node, vhost, &room_name, out.destroyed, was_persistent, save).await;
    if let Some(a) = out.archive
        && let Err(e) = node
            .store
            .insert_muc_message(
                vhost,
                &room_name,
                &a.id,
                a.at_us,
                &a.sender.to_string(),
                &a.nick,
                &a.message.to_xml(),
            )
            .await
    {
        match e {
            // Delivered all the same, but not kept.
            StoreError::StorageFull(_, quota) => {
                tracing::info!(
                    vhost,
                    quota,
                    "a room's message was not archived: the storage quota is used up"
                )
            }
            e => {
                tracing::error!(vhost, room = %room_name, error = %e, "archiving a room's message failed")
            }
        }
    }
}

fn stored(name: &str, room: &Room) -> StoredRoom {
    StoredRoom {
        room: name.to_string(),
        config: serde_json::to_string(&room.saved()).expect("a room's state serialises"),
        affiliations: room
            .affiliations
            .iter()
            .map(|(j, (a, r))| (j.to_string(), a.as_str().to_string(), r.clone()))
            .collect(),
    }
}

/// Saves or forgets a room after a change.
async fn persist(
    node: &Node,
    vhost: &str,
    room: &str,
    destroyed: bool,
    was_persistent: bool,
    save: Option<StoredRoom>,
) {
    if node.is_frozen(vhost) {
        return;
    }
    let result = match (destroyed, save) {
        // Its archive goes with it, whether it was persistent or not.
        (true, _) => node.store.delete_muc_room(vhost, room, false).await,
        (false, Some(s)) => node.store.save_muc_room(vhost, &s).await,
        (false, None) if was_persistent && !room_is_persistent(node, vhost, room) => {
            node.store.delete_muc_room(vhost, room, true).await
        }
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::error!(vhost, room, error = %e, "saving a room failed");
    }
}

fn room_is_persistent(node: &Node, vhost: &str, room: &str) -> bool {
    node.muc
        .vhosts
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(vhost)
        .and_then(|r| r.get(room))
        .is_some_and(|r| r.config.persistent)
}

/// Delivers what a room sent: to a full JID's session, or a bare JID's available ones.
fn send_all(node: &Node, stanzas: Vec<Element>) {
    for s in stanzas {
        let Some(to) = s.attr("to").and_then(|t| Jid::parse(t).ok()) else {
            continue;
        };
        if to.resource().is_some() {
            if let Some(session) = node.router.session(&to) {
                node.metrics.stanza_routed();
                session.deliver(s);
            }
        } else {
            for session in message_targets(&node.router.sessions(&to)) {
                session.deliver(s.clone());
            }
        }
    }
}

/// A stanza to the service itself: disco and ping.
fn service_stanza(node: &Node, me: &SessionHandle, vhost: &str, service: &str, stanza: &Element) {
    if stanza.name() != "iq" {
        if stanza.name() == "message" && stanza.attr("type") != Some("error") {
            me.deliver(error_reply(stanza, Condition::ServiceUnavailable, None));
        }
        return;
    }
    let kind = stanza.attr("type").unwrap_or_default();
    if !matches!(kind, "get" | "set") {
        return;
    }
    let Some(payload) = stanza.children().next() else {
        me.deliver(error_reply(stanza, Condition::BadRequest, None));
        return;
    };
    let reply = match (payload.ns(), payload.name(), kind) {
        (ns::DISCO_INFO, "query", "get") if payload.attr("node").is_none() => {
            let mut q = Element::new("query", ns::DISCO_INFO).with_child(
                Element::new("identity", ns::DISCO_INFO)
                    .with_attr("category", "conference")
                    .with_attr("type", "text")
                    .with_attr("name", "Chatrooms"),
            );
            for f in service_features(node, vhost) {
                q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
            }
            iq_result(stanza).with_child(q)
        }
        (ns::DISCO_ITEMS, "query", "get") if payload.attr("node").is_none() => {
            let mut q = Element::new("query", ns::DISCO_ITEMS);
            let vhosts = node.muc.vhosts.lock().unwrap_or_else(|p| p.into_inner());
            let mut public: Vec<(&String, &Room)> = vhosts
                .get(vhost)
                .map(|rooms| {
                    rooms
                        .iter()
                        .filter(|(_, r)| r.config.public && !r.locked)
                        .collect()
                })
                .unwrap_or_default();
            public.sort_by(|a, b| a.0.cmp(b.0));
            for (name, r) in public {
                let label = if r.config.name.is_empty() {
                    name.as_str()
                } else {
                    &r.config.name
                };
                q.append_child(
                    Element::new("item", ns::DISCO_ITEMS)
                        .with_attr("jid", format!("{name}@{service}"))
                        .with_attr("name", label),
                );
            }
            iq_result(stanza).with_child(q)
        }
        (ns::PING, "ping", "get") => iq_result(stanza),
        _ => error_reply(stanza, Condition::ServiceUnavailable, None),
    };
    me.deliver(reply);
}

/// XEP-0313 at a room: its groupchat messages, for whoever may read them.
async fn room_mam(
    node: &Node,
    me: &SessionHandle,
    vhost: &str,
    name: &str,
    room_jid: &Jid,
    iq: &Element,
) {
    let refuse = |c, text: Option<&str>| {
        me.deliver(error_reply(iq, c, text));
    };
    if !mam::enabled(node, vhost) {
        return refuse(Condition::ServiceUnavailable, None);
    }
    let allowed = {
        let vhosts = node.muc.vhosts.lock().unwrap_or_else(|p| p.into_inner());
        vhosts
            .get(vhost)
            .and_then(|r| r.get(name))
            .map(|r| r.may_read_archive(&me.jid))
    };
    match allowed {
        None => return refuse(Condition::ItemNotFound, Some("There is no such room.")),
        Some(false) => {
            return refuse(
                Condition::Forbidden,
                Some("Only the room's occupants and members may read its archive."),
            );
        }
        Some(true) => {}
    }
    let Some(payload) = iq.children().next() else {
        return;
    };
    match (payload.name(), iq.attr("type")) {
        ("query", Some("get")) => {
            me.deliver(iq_result(iq).with_child(mam::query_form()));
        }
        ("query", Some("set")) => {
            let q = match mam::parse_query(payload) {
                Ok(q) => q,
                Err((c, text)) => return refuse(c, Some(&text)),
            };
            if q.filter.with.is_some() {
                return refuse(
                    Condition::FeatureNotImplemented,
                    Some("A room's archive is not filtered by with."),
                );
            }
            let page = node
                .store
                .archive_page_in(ROOM_ARCHIVE, vhost, name, &q.filter, &q.from, q.max)
                .await;
            mam::send_page(me, room_jid, iq, &q, page);
        }
        _ => refuse(Condition::ServiceUnavailable, None),
    }
}

/// The session `me` went unavailable or ended: it leaves every room it is in.
pub async fn session_ended(node: &Node, me: &Jid) {
    let rooms = node
        .muc
        .joined
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(me)
        .unwrap_or_default();
    for room_jid in rooms {
        let (Some(name), service) = (room_jid.node(), room_jid.domain()) else {
            continue;
        };
        let Some(vhost) = service.strip_prefix(crate::xep::services::MUC_PREFIX) else {
            continue;
        };
        let (out, was_persistent) = {
            let mut vhosts = node.muc.vhosts.lock().unwrap_or_else(|p| p.into_inner());
            let Some(rooms) = vhosts.get_mut(vhost) else {
                continue;
            };
            let Some(room) = rooms.get_mut(name) else {
                continue;
            };
            let was_persistent = room.config.persistent;
            let out = room.gone(me);
            if out.destroyed {
                rooms.remove(name);
                node.muc.rooms_gauge.dec();
            }
            (out, was_persistent)
        };
        send_all(node, out.send);
        if out.destroyed {
            persist(node, vhost, name, true, was_persistent, None).await;
        }
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
    const ROOM: &str = "tea@conference.example.com";

    async fn node() -> (std::sync::Arc<Node>, tempfile::TempDir) {
        node_with_spec(
            json!({"domain": DOMAIN, "generation": 1, "limits": {"max_rooms": 2}}),
            &["alice", "bob"],
        )
        .await
    }

    fn join(from: &str, nick: &str) -> Element {
        stanza(&format!(
            "<presence xmlns='jabber:client' from='{from}' to='{ROOM}/{nick}'><x xmlns='{NS_MUC}'/></presence>"
        ))
    }

    fn configure(from: &str, persistent: bool) -> Element {
        stanza(&format!(
            "<iq xmlns='jabber:client' type='set' id='c' from='{from}' to='{ROOM}'><query xmlns='{}'><x xmlns='jabber:x:data' type='submit'><field var='muc#roomconfig_persistentroom'><value>{}</value></field><field var='muc#roomconfig_roomname'><value>Tea room</value></field></x></query></iq>",
            room::NS_OWNER,
            u8::from(persistent)
        ))
    }

    #[tokio::test]
    async fn a_room_is_created_listed_in_disco_and_a_persistent_one_survives_a_restart() {
        let (node, _dir) = node().await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        im::handle(&node, &alice, join("alice@example.com/desk", "Alice")).await;
        im::handle(&node, &alice, configure("alice@example.com/desk", true)).await;
        let got = delivered(&mut to_alice);
        assert_eq!(got.last().unwrap().attr("type"), Some("result"));
        // The vhost lists its conference service, the service its public room.
        im::handle(&node, &alice, stanza("<iq xmlns='jabber:client' type='get' id='i' from='alice@example.com/desk' to='example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")).await;
        let items = delivered(&mut to_alice).remove(0);
        assert!(
            items.to_xml().contains("conference.example.com"),
            "{}",
            items.to_xml()
        );
        im::handle(&node, &alice, stanza("<iq xmlns='jabber:client' type='get' id='i' from='alice@example.com/desk' to='conference.example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")).await;
        let items = delivered(&mut to_alice).remove(0);
        let item = items
            .get_child("query", ns::DISCO_ITEMS)
            .unwrap()
            .children()
            .next()
            .unwrap()
            .clone();
        assert_eq!(
            (item.attr("jid"), item.attr("name")),
            (Some(ROOM), Some("Tea room"))
        );
        // Stored; after the rooms are forgotten (a restart), it comes back with its owner.
        node.muc.forget_domain(DOMAIN);
        im::session_ended(&node, &alice).await;
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        im::handle(&node, &bob, join("bob@example.com/phone", "Bob")).await;
        let got = delivered(&mut to_bob);
        assert!(
            got.iter().all(|s| s.attr("type") != Some("error")),
            "{got:?}"
        );
        let own = got.iter().find(|p| p.name() == "presence").unwrap();
        let item = own
            .get_child("x", room::NS_USER)
            .unwrap()
            .get_child("item", room::NS_USER)
            .unwrap();
        assert_eq!(
            item.attr("affiliation"),
            Some("none"),
            "bob is no owner: the room was not recreated"
        );
    }

    #[tokio::test]
    async fn a_persistent_room_moves_with_its_vhost_to_another_node() {
        let (a, _da) = node().await;
        let (alice, mut to_alice) = bind(&a, "alice@example.com/desk");
        im::handle(&a, &alice, join("alice@example.com/desk", "Alice")).await;
        im::handle(&a, &alice, configure("alice@example.com/desk", true)).await;
        assert_eq!(
            delivered(&mut to_alice).last().unwrap().attr("type"),
            Some("result")
        );
        let exported = a.store.export_vhost(DOMAIN).await.unwrap();
        let (b, _db) = node().await;
        b.store.import_vhost(DOMAIN, &exported).await.unwrap();
        b.muc.forget_domain(DOMAIN);
        // On the new node the room is there, named, with alice still its owner.
        let (bob, mut to_bob) = bind(&b, "bob@example.com/phone");
        im::handle(&b, &bob, stanza("<iq xmlns='jabber:client' type='get' id='i' from='bob@example.com/phone' to='conference.example.com'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>")).await;
        let items = delivered(&mut to_bob).remove(0).to_xml();
        assert!(
            items.contains(ROOM) && items.contains("Tea room"),
            "{items}"
        );
        im::handle(&b, &bob, stanza(&format!("<iq xmlns='jabber:client' type='get' id='o' from='bob@example.com/phone' to='{ROOM}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"))).await;
        let info = delivered(&mut to_bob).remove(0).to_xml();
        assert!(info.contains("muc_persistent"), "{info}");
        let (alice_b, mut to_alice_b) = bind(&b, "alice@example.com/desk");
        im::handle(&b, &alice_b, join("alice@example.com/desk", "Alice")).await;
        let own = delivered(&mut to_alice_b)
            .into_iter()
            .find(|p| p.name() == "presence" && p.to_xml().contains("Alice"))
            .unwrap();
        assert!(
            own.to_xml().contains("affiliation=\"owner\"")
                || own.to_xml().contains("affiliation='owner'"),
            "{}",
            own.to_xml()
        );
    }

    #[tokio::test]
    async fn a_temporary_room_ends_when_its_last_occupant_goes_offline() {
        let (node, _dir) = node().await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        alice.set_presence(Some(Element::new("presence", ns::CLIENT)));
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        bob.set_presence(Some(Element::new("presence", ns::CLIENT)));
        im::handle(&node, &alice, join("alice@example.com/desk", "Alice")).await;
        im::handle(&node, &alice, configure("alice@example.com/desk", false)).await;
        im::handle(&node, &bob, join("bob@example.com/phone", "Bob")).await;
        delivered(&mut to_alice);
        delivered(&mut to_bob);
        // Bob's session ends: alice sees him leave.
        node.router.unbind(&bob);
        im::session_ended(&node, &bob).await;
        let got = delivered(&mut to_alice);
        assert!(
            got.iter().any(|p| p.attr("type") == Some("unavailable")
                && p.attr("from") == Some(&*format!("{ROOM}/Bob"))),
            "{got:?}"
        );
        // Alice goes unavailable: the room is gone.
        im::handle(&node, &alice, stanza("<presence xmlns='jabber:client' from='alice@example.com/desk' type='unavailable'/>")).await;
        assert!(!node.muc.vhosts.lock().unwrap()[DOMAIN].contains_key("tea"));
    }

    #[tokio::test]
    async fn a_mediated_invitation_reaches_the_invitees_available_sessions() {
        let (node, _dir) = node().await;
        let (alice, _to_alice) = bind(&node, "alice@example.com/desk");
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        bob.set_presence(Some(Element::new("presence", ns::CLIENT)));
        im::handle(&node, &alice, join("alice@example.com/desk", "Alice")).await;
        im::handle(&node, &alice, configure("alice@example.com/desk", false)).await;
        im::handle(&node, &alice, stanza(&format!("<message xmlns='jabber:client' from='alice@example.com/desk' to='{ROOM}' id='i1'><x xmlns='{}'><invite to='bob@example.com'><reason>tea?</reason></invite></x></message>", room::NS_USER))).await;
        let got = delivered(&mut to_bob);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].attr("from"), Some(ROOM));
    }

    #[tokio::test]
    async fn room_messages_are_archived_and_queried_at_the_room() {
        let (node, _dir) = node().await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        im::handle(&node, &alice, join("alice@example.com/desk", "Alice")).await;
        im::handle(&node, &alice, configure("alice@example.com/desk", false)).await;
        for i in 0..3 {
            im::handle(&node, &alice, stanza(&format!("<message xmlns='jabber:client' type='groupchat' from='alice@example.com/desk' to='{ROOM}'><body>m{i}</body></message>"))).await;
        }
        delivered(&mut to_alice);
        im::handle(&node, &alice, stanza(&format!("<iq xmlns='jabber:client' type='set' id='q' from='alice@example.com/desk' to='{ROOM}'><query xmlns='urn:xmpp:mam:2' queryid='x'><set xmlns='http://jabber.org/protocol/rsm'><max>2</max></set></query></iq>"))).await;
        let got = delivered(&mut to_alice);
        assert_eq!(got.len(), 3, "{got:?}");
        let body = |m: &Element| {
            let fwd = m
                .get_child("result", mam::NS)
                .unwrap()
                .get_child("forwarded", mam::NS_FORWARD)
                .unwrap();
            assert_eq!(m.attr("from"), Some(ROOM));
            fwd.get_child("message", ns::CLIENT)
                .unwrap()
                .child_text("body", ns::CLIENT)
                .unwrap()
        };
        assert_eq!((body(&got[0]), body(&got[1])), ("m0".into(), "m1".into()));
        let fin = got[2].get_child("fin", mam::NS).unwrap();
        assert!(
            fin.to_xml().contains("<count>3</count>"),
            "{}",
            fin.to_xml()
        );
        // Bob, not in this open public room, may read it too; a ban would stop him.
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        im::handle(&node, &bob, stanza(&format!("<iq xmlns='jabber:client' type='set' id='q' from='bob@example.com/phone' to='{ROOM}'><query xmlns='urn:xmpp:mam:2'/></iq>"))).await;
        assert_eq!(delivered(&mut to_bob).len(), 4);
    }

    #[tokio::test]
    async fn room_messages_past_the_retention_expire_with_the_user_archives() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1, "limits": {"archive_retention_days": 2}}),
            &["alice"],
        )
        .await;
        let (alice, _to_alice) = bind(&node, "alice@example.com/desk");
        im::handle(&node, &alice, join("alice@example.com/desk", "Alice")).await;
        im::handle(&node, &alice, configure("alice@example.com/desk", true)).await;
        for body in ["old", "new"] {
            im::handle(&node, &alice, stanza(&format!("<message xmlns='jabber:client' type='groupchat' from='alice@example.com/desk' to='{ROOM}'><body>{body}</body></message>"))).await;
        }
        sqlx::query("UPDATE muc_archive SET created_us = created_us - 3 * 86400000000 WHERE stanza LIKE '%old%'")
            .execute(&node.store.db)
            .await
            .unwrap();
        let dropped = mam::expire(&node, unix_now()).await;
        assert_eq!(dropped, vec![(DOMAIN.to_string(), 1)]);
        let left = node
            .store
            .archive_page_in(
                ROOM_ARCHIVE,
                DOMAIN,
                "tea",
                &Default::default(),
                &crate::store::archive::PageFrom::Start,
                10,
            )
            .await
            .unwrap();
        assert_eq!(left.count, 1);
        assert!(left.items[0].stanza.contains("new"));
    }

    #[tokio::test]
    async fn a_room_message_past_the_storage_quota_is_delivered_but_not_archived() {
        let (node, _dir) = node().await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        im::handle(&node, &alice, join("alice@example.com/desk", "Alice")).await;
        im::handle(&node, &alice, configure("alice@example.com/desk", false)).await;
        let stored = node.store.measure_storage(DOMAIN).await.unwrap();
        crate::node::testing::apply_spec(&node, json!({"domain": DOMAIN, "generation": 2, "limits": {"storage_quota_bytes": stored + 100}})).await;
        delivered(&mut to_alice);
        im::handle(&node, &alice, stanza(&format!("<message xmlns='jabber:client' type='groupchat' from='alice@example.com/desk' to='{ROOM}'><body>{}</body></message>", "x".repeat(200)))).await;
        assert_eq!(delivered(&mut to_alice).len(), 1, "delivered");
        let page = node
            .store
            .archive_page_in(
                ROOM_ARCHIVE,
                DOMAIN,
                "tea",
                &Default::default(),
                &crate::store::archive::PageFrom::Start,
                10,
            )
            .await
            .unwrap();
        assert_eq!(page.count, 0, "not archived");
    }

    #[tokio::test]
    async fn rooms_are_limited_by_the_spec_and_switched_off_with_the_feature() {
        let (node, _dir) = node().await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        for room in ["a", "b", "c"] {
            im::handle(&node, &alice, stanza(&format!("<presence xmlns='jabber:client' from='alice@example.com/desk' to='{room}@conference.example.com/Alice'/>"))).await;
        }
        let got = delivered(&mut to_alice);
        let errors: Vec<_> = got
            .iter()
            .filter(|s| s.attr("type") == Some("error"))
            .collect();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].attr("from"),
            Some("c@conference.example.com/Alice")
        );
        crate::node::testing::apply_spec(
            &node,
            json!({"domain": DOMAIN, "generation": 2, "features": {"muc": false}}),
        )
        .await;
        im::handle(&node, &alice, stanza("<iq xmlns='jabber:client' type='get' id='i' from='alice@example.com/desk' to='conference.example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
        let got = delivered(&mut to_alice);
        assert_eq!(got[0].attr("type"), Some("error"));
    }
}
