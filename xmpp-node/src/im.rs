//! What happens to a stanza a bound client sends (RFC 6120 §8, RFC 6121 §8): answered by
//! the server itself (ping, disco, version, time, last activity, roster), routed to a
//! local session, stored offline, sent to another server, or bounced with the right error.
//!
//! Federation (issue 10): a stanza from another server goes through the same code, sent by
//! a handle that stands for its remote sender ([`from_remote`], `SessionHandle::remote`),
//! so answers and errors go back over the outgoing links (`net::s2s_pool`); a stanza for a
//! domain neither hosted here nor one of its services goes out over them. Remote senders
//! get what the server answers anyone (disco, ping, version, vCards…), not what only an
//! account's own sessions may ask (roster, private storage, archive, carbons), and not the
//! local services yet (group chat, upload and proxy serve their vhost's users). The vhosts'
//! federation policy is checked in [`handle`] for every stanza between two domains, in
//! both directions and between two vhosts of this node alike (no shortcut for those).
//!
//! Presence and rosters (RFC 6121 §2-§4): the subscription state machine and roster rules
//! live in `proto::roster` as pure functions; here each subscription stanza is run through
//! the sender's side (outbound) and, for a local contact, the recipient's side (inbound;
//! a remote contact's server runs that side), each change stored by
//! `Store::update_contact`, followed by the roster pushes, deliveries and presence it
//! calls for. Presence broadcasts go to the contacts with a `from`/`both` subscription,
//! wherever they are; initial presence is answered with the presence of the local
//! `to`/`both` contacts and probes the remote ones, and brings the pending subscription
//! requests; directed presence is remembered per session so its targets hear when the
//! session goes offline, and [`session_ended`] says so for a connection that closed
//! without a word.
//!
//! Vhost limits: writes the store refuses because the domain's storage quota is used up
//! (an offline message, a new contact, a vCard) are answered with `resource-constraint`;
//! offline messages past the domain's retention are dropped rather than delivered late.
//! While a domain is frozen for a move (`control::moving`) nothing is stored for it: such
//! writes bounce with `resource-constraint` (wait) and offline messages stay where they are.

use std::{collections::HashSet, sync::Arc};

use crate::{
    control::moving::moving_text,
    node::Node,
    proto::{
        element::Element,
        jid::Jid,
        ns, register,
        roster::{
            self, Contact, Direction, Edit, PresenceNotice, RosterAnswer, RosterSet, RosterVersion,
            SubscriptionKind,
        },
        sm::Unacked,
        stanza::{Condition, error_reply, iq_result},
    },
    router::{SessionHandle, message_targets},
    store::StoreError,
    upkeep,
    xep::{blocking, caps, carbons, mam, pep, private, push, serverinfo, services, vcard},
};

/// The text of the error for a contact beyond the roster limit.
const ROSTER_FULL: &str = "Your contact list is full; remove a contact before adding another.";

/// The text of the error for a write refused by the domain's storage quota.
pub fn storage_full_text(domain: &str, what: &str) -> String {
    format!("The storage of {domain} is full: {what}.")
}

/// The hot path without the async machinery (and the boxed future it needs): a message to
/// a full JID that is online here, between accounts whose block lists are in memory (they
/// are loaded at bind). Gives the stanza back when it needs the full path of [`handle`].
/// It must apply the same rules as `handle` → `message` for this case: nothing blocked
/// either way, the target session bound, the domain hosted.
pub fn route_fast(node: &Node, me: &SessionHandle, stanza: Element) -> Result<(), Element> {
    if stanza.name() != "message" || matches!(stanza.attr("type"), Some("groupchat" | "error")) {
        return Err(stanza);
    }
    let Some(to) = stanza.attr("to").and_then(|t| Jid::parse(t).ok()) else {
        return Err(stanza);
    };
    // Another domain, even on this node, takes the full path: its federation policy.
    if to.node().is_none()
        || to.resource().is_none()
        || to.domain() != me.jid.domain()
        || !node.is_hosted(to.domain())
    {
        return Err(stanza);
    }
    let to_bare = to.bare();
    let Some(target) = node.router.session_of(&to_bare, &to) else {
        return Err(stanza);
    };
    // A detached session's user may need waking (XEP-0357): the full path does that.
    if target.is_detached() {
        return Err(stanza);
    }
    let (Some(mine), Some(theirs)) = (node.blocks.cached(&me.bare), node.blocks.cached(&to_bare))
    else {
        return Err(stanza);
    };
    if mine.iter().any(|item| blocking::matches(item, &to))
        || theirs.iter().any(|item| blocking::matches(item, &me.jid))
    {
        return Err(stanza);
    }
    // XEP-0313: archived from memory, or the full path reads the preferences.
    let Some(archiving) = mam::Archiving::cached(node, &me.jid, &to, &stanza) else {
        return Err(stanza);
    };
    let mut stanza = stanza;
    let sent_id = archiving.archive(node, &me.jid, &to, &mut stanza);
    if node.router.carbons_in_use() {
        carbons::sent(node, me, &to, &stanza, sent_id.as_deref());
        carbons::strip_private(&mut stanza);
        carbons::received(node, &to, &[target.id], &stanza);
    }
    node.metrics.stanza_routed();
    target.deliver(stanza);
    Ok(())
}

/// Handles one stanza from `me`'s session.
pub async fn handle(node: &Node, me: &Arc<SessionHandle>, stanza: Element) {
    // Whatever it writes is written before a freeze of its domain takes effect, or not.
    let _permit = node.writes.enter().await;
    // Federation policy (the vhost specs), the same for a remote server and for another
    // vhost of this node. RFC 6120 §8.3.3.9 names this case for `not-allowed`: the server
    // "does not allow any entity to perform the action (e.g., sending to entities at a
    // blacklisted domain)".
    if let Some(to) = target(&stanza)
        && to.domain() != me.jid.domain()
        && !node.federates(me.jid.domain(), to.domain())
    {
        let text = format!(
            "{} and {} do not exchange messages (federation policy).",
            me.jid.domain(),
            to.domain()
        );
        return bounce(me, &stanza, Condition::NotAllowed, Some(&text));
    }
    // XEP-0191 §3.6: nothing goes out to someone the user blocks.
    if let Some(to) = target(&stanza)
        && !me.remote
        && to.node().is_some()
        && blocking::blocks(node, &me.jid.bare(), &to).await
    {
        if stanza.name() != "presence" && !matches!(stanza.attr("type"), Some("error" | "result")) {
            me.deliver(blocking::blocked_error(&stanza));
        }
        return;
    }
    match stanza.name() {
        "message" => message(node, me, stanza).await,
        "presence" => presence(node, me, stanza).await,
        "iq" => iq(node, me, stanza).await,
        _ => {}
    }
}

fn bounce(me: &SessionHandle, stanza: &Element, condition: Condition, text: Option<&str>) {
    // Never answer an error with an error (RFC 6120 §8.3.1).
    if stanza.attr("type") != Some("error") {
        me.deliver(error_reply(stanza, condition, text));
    }
}

/// Bounces a stanza that would change the data of a domain frozen for a move; true if so.
fn refused_while_moving(
    node: &Node,
    me: &SessionHandle,
    stanza: &Element,
    domains: &[&str],
) -> bool {
    let Some(domain) = domains.iter().find(|d| node.is_frozen(d)) else {
        return false;
    };
    bounce(
        me,
        stanza,
        Condition::ResourceConstraint,
        Some(&moving_text(domain)),
    );
    true
}

fn target(stanza: &Element) -> Option<Jid> {
    stanza.attr("to").and_then(|t| Jid::parse(t).ok())
}

async fn message(node: &Node, me: &Arc<SessionHandle>, stanza: Element) {
    let Some(to) = target(&stanza) else {
        // A message without 'to' is for the sender's own bare JID (RFC 6120 §10.3.1).
        let mut stanza = stanza;
        stanza.set_attr("to", me.jid.bare().to_string());
        return Box::pin(message(node, me, stanza)).await;
    };
    if let Some(service) = services::service_of(node, to.domain()) {
        if me.remote {
            return bounce(
                me,
                &stanza,
                Condition::ServiceUnavailable,
                Some(SERVICES_LOCAL),
            );
        }
        return services::handle(node, me, service, stanza).await;
    }
    if !node.is_hosted(to.domain()) {
        return message_to_remote(node, me, &to, stanza).await;
    }
    let kind = stanza.attr("type").unwrap_or("normal").to_string();
    let Some(username) = to.node() else {
        // Messages to the server itself: nothing handles them.
        return bounce(me, &stanza, Condition::ServiceUnavailable, None);
    };
    // An online session proves the account exists: the store is asked only otherwise, so
    // routing between online users touches no database.
    let online = to.resource().and_then(|_| node.router.session(&to));
    if online.is_none() && !account_exists(node, to.domain(), username).await {
        return bounce(me, &stanza, Condition::ServiceUnavailable, None);
    }
    // XEP-0191 §3.5: a blocked sender's message is refused as if nobody were there.
    if blocking::blocks(node, &to.bare(), &me.jid).await {
        return bounce(me, &stanza, Condition::ServiceUnavailable, None);
    }
    // XEP-0313 and XEP-0359: into both archives, stamped, whether delivered or stored.
    let mut stanza = stanza;
    let archiving = mam::Archiving::resolve(node, &me.jid, &to, &stanza).await;
    let sent_id = archiving.archive(node, &me.jid, &to, &mut stanza);
    // XEP-0280: the sender's other resources see what it sent.
    carbons::sent(node, me, &to, &stanza, sent_id.as_deref());
    carbons::strip_private(&mut stanza);
    // XEP-0357: the sender and text, in case nobody can read it now and a device is woken.
    let wake = stanza
        .child_text("body", ns::CLIENT)
        .filter(|_| matches!(kind.as_str(), "chat" | "normal"));
    // To a full JID: that resource if it is online (RFC 6121 §8.5.3.1).
    if let Some(session) = online {
        node.metrics.stanza_routed();
        carbons::received(node, &to, &[session.id], &stanza);
        let asleep = session.is_detached();
        session.deliver(stanza);
        if asleep && let Some(body) = wake {
            push::notify(node, &to.bare(), &me.jid, &body).await;
        }
        return;
    }
    match kind.as_str() {
        "groupchat" => bounce(me, &stanza, Condition::ServiceUnavailable, None),
        "headline" => {
            for s in message_targets(&node.router.sessions(&to)) {
                s.deliver(stanza.clone());
            }
        }
        "error" => {
            if let Some(s) = node.router.sessions(&to).first() {
                s.deliver(stanza);
            }
        }
        _ => {
            let targets = message_targets(&node.router.sessions(&to));
            let asleep = targets.iter().all(|s| s.is_detached());
            if targets.is_empty() {
                store_offline(node, Some(me), &to, stanza).await;
            } else {
                node.metrics.stanza_routed();
                let ids: Vec<u64> = targets.iter().map(|s| s.id).collect();
                carbons::received(node, &to, &ids, &stanza);
                for s in targets {
                    s.deliver(stanza.clone());
                }
            }
            // Offline, or only detached sessions: the user's devices are woken.
            if asleep && let Some(body) = wake {
                push::notify(node, &to.bare(), &me.jid, &body).await;
            }
        }
    }
}

/// A local user's message to someone on another server: into the sender's archive, copied
/// to the sender's other resources (XEP-0280), then over the link to that server.
async fn message_to_remote(node: &Node, me: &Arc<SessionHandle>, to: &Jid, stanza: Element) {
    if me.remote {
        // Stanzas from other servers are for domains hosted here; nothing is relayed.
        return bounce(me, &stanza, Condition::ServiceUnavailable, None);
    }
    let mut stanza = stanza;
    let archiving = mam::Archiving::resolve(node, &me.jid, to, &stanza).await;
    let sent_id = archiving.archive(node, &me.jid, to, &mut stanza);
    carbons::sent(node, me, to, &stanza, sent_id.as_deref());
    carbons::strip_private(&mut stanza);
    to_remote(node, me, stanza);
}

/// Sends a stanza of `me` to another server; a node that cannot federate answers at once.
fn to_remote(node: &Node, me: &SessionHandle, stanza: Element) {
    let mut stanza = stanza;
    if stanza.attr("from").is_none() {
        stanza.set_attr("from", me.jid.to_string());
    }
    if let Some(to) = target(&stanza)
        && services::is_switched_off(node, to.domain())
    {
        let text = format!(
            "{} serves nothing: its vhost switched that service off.",
            to.domain()
        );
        return bounce(me, &stanza, Condition::RemoteServerNotFound, Some(&text));
    }
    if let Err(stanza) = node.s2s.send(stanza) {
        bounce(
            me,
            &stanza,
            Condition::RemoteServerNotFound,
            Some("This server does not connect to other servers."),
        );
    }
}

/// The text of the error for a remote entity addressing a local service.
const SERVICES_LOCAL: &str =
    "The services of this domain (group chat, upload, proxy) serve its own users only for now.";

/// A stanza from another server (`net::s2s` checked that its `from` and `to` are an
/// authenticated pair of domains): handled like a local user's, by a handle that stands
/// for the remote sender, so answers and errors go back over the outgoing links.
pub async fn from_remote(node: &Node, stanza: Element) {
    let Some(from) = stanza.attr("from").and_then(|f| Jid::parse(f).ok()) else {
        return;
    };
    if node.vhost_of(from.domain()).is_some() {
        // A peer speaking for one of our own domains: never believed.
        tracing::warn!(%from, "a stanza from another server claims a domain hosted here");
        return;
    }
    let me = SessionHandle::remote_sender(from, node.s2s.replies());
    handle(node, &me, stanza).await;
}

/// Delivers a stanza to a local entity by its `to` (errors the outgoing links bounced):
/// the session of a full JID, or the sessions of a bare JID.
pub fn deliver_local(node: &Node, stanza: Element) {
    let Some(to) = target(&stanza) else { return };
    if to.resource().is_some() {
        if let Some(s) = node.router.session(&to) {
            s.deliver(stanza);
        }
        return;
    }
    for s in node.router.sessions(&to) {
        s.deliver(stanza.clone());
    }
}

/// Sends presence to `to`: delivered here when its domain is hosted, else over the link
/// to its server.
fn send_presence(node: &Node, to: &Jid, stanza: Element) {
    if node.is_hosted(to.domain()) {
        deliver_presence(node, to, stanza);
    } else {
        // A node that cannot federate: presence is best effort.
        let _ = node.s2s.send(stanza);
    }
}

/// Stores a message for `to`'s next login; errors go back to the sender's session `me`
/// (`None`: the sender is not online here, nobody to tell).
async fn store_offline(node: &Node, me: Option<&SessionHandle>, to: &Jid, stanza: Element) {
    // Only messages worth reading later: with a body (XEP-0160 §3).
    if !stanza.has_child("body", ns::CLIENT) {
        return;
    }
    let bounce = |stanza: &Element, condition, text: Option<&str>| {
        if let Some(me) = me {
            bounce(me, stanza, condition, text);
        }
    };
    if node.is_frozen(to.domain()) {
        return bounce(
            &stanza,
            Condition::ResourceConstraint,
            Some(&moving_text(to.domain())),
        );
    }
    let username = to.node().unwrap_or_default();
    let mut stored = stanza.clone();
    stored.set_attr("to", to.bare().to_string());
    match node
        .store
        .store_offline(
            to.domain(),
            username,
            &stored.to_xml(),
            node.settings.max_offline_per_account,
        )
        .await
    {
        Ok(true) => {
            // The recipient may have sent its initial presence (and taken its offline
            // messages) while this one was being stored: then it is delivered now, not at
            // the next login.
            if let Some(s) = message_targets(&node.router.sessions(to)).first() {
                deliver_offline(node, s).await;
            }
        }
        Ok(false) => bounce(
            &stanza,
            Condition::ServiceUnavailable,
            Some("The recipient's offline storage is full."),
        ),
        Err(StoreError::StorageFull(domain, quota)) => {
            tracing::info!(vhost = %domain, quota, "an offline message was refused: the storage quota is used up");
            bounce(
                &stanza,
                Condition::ResourceConstraint,
                Some(&storage_full_text(
                    &domain,
                    "the message could not be stored for the offline recipient",
                )),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "storing an offline message failed");
            bounce(&stanza, Condition::InternalServerError, None);
        }
    }
}

pub async fn account_exists(node: &Node, domain: &str, username: &str) -> bool {
    node.store
        .account_exists(domain, username)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "account look-up failed");
            false
        })
}

// ---- presence (RFC 6121 §3, §4) ---------------------------------------------------------

async fn presence(node: &Node, me: &Arc<SessionHandle>, stanza: Element) {
    if let Some(service) = services::addressed(node, &stanza) {
        if me.remote {
            return bounce(
                me,
                &stanza,
                Condition::ServiceUnavailable,
                Some(SERVICES_LOCAL),
            );
        }
        return services::handle(node, me, service, stanza).await;
    }
    let kind = stanza.attr("type").unwrap_or("available").to_string();
    if let Some(sub) = SubscriptionKind::from_presence_type(&kind) {
        if me.remote {
            // From a contact on another server: the contact's side ran there; this is the
            // local user's side (RFC 6121 Appendix A.3), from the sender's bare JID.
            let Some(to) = target(&stanza) else { return };
            let mut s = stanza;
            s.set_attr("from", me.bare.to_string());
            s.set_attr("to", to.bare().to_string());
            return inbound_subscription(node, &me.bare, &to.bare(), sub, s).await;
        }
        return match target(&stanza) {
            Some(to) => outbound_subscription(node, me, sub, to, stanza).await,
            // A subscription without 'to' makes no sense (RFC 6121 §3.1).
            None => bounce(me, &stanza, Condition::BadRequest, None),
        };
    }
    if let Some(to) = target(&stanza)
        && to.node().is_some()
        && blocking::blocks(node, &to.bare(), &me.jid).await
    {
        return; // XEP-0191 §3.5: presence from a blocked entity is dropped silently.
    }
    match (target(&stanza), kind.as_str()) {
        (None, "available" | "unavailable") => {
            broadcast_own(node, me, stanza, kind == "available").await
        }
        // A probe or error without 'to' makes no sense (RFC 6121 §4.3).
        (None, _) => bounce(me, &stanza, Condition::BadRequest, None),
        (Some(to), _) if !node.is_hosted(to.domain()) => {
            if me.remote {
                return;
            }
            if kind == "available" || kind == "unavailable" {
                // Directed presence to another server: remembered like a local one.
                if me.is_available() {
                    me.note_directed(to, kind == "available");
                }
            }
            to_remote(node, me, stanza)
        }
        (Some(to), "probe") => probe(node, me, &to).await,
        (Some(to), "available" | "unavailable") => {
            directed_presence(node, me, to, stanza, kind == "available").await
        }
        (Some(to), "error") => deliver_presence(node, &to, stanza),
        (Some(_), _) => bounce(me, &stanza, Condition::BadRequest, None),
    }
}

/// Presence without 'to': initial (the session becomes available), updated, or final
/// (unavailable). It goes to the account's other resources and to the contacts subscribed
/// to the user; the first also probes the contacts the user is subscribed to and delivers
/// what waited (subscription requests, offline messages).
async fn broadcast_own(node: &Node, me: &Arc<SessionHandle>, stanza: Element, available: bool) {
    let was_available = me.is_available();
    let initial = available && !was_available;
    me.set_presence(available.then(|| stanza.clone()));
    for other in node.router.sessions(&me.jid) {
        if other.id == me.id {
            // RFC 6121 §4.2.2: the user's own resources get it too, including this one.
            me.deliver(stanza.clone());
            continue;
        }
        other.deliver(stanza.clone());
        if initial && let Some(p) = other.presence() {
            me.deliver(p);
        }
    }
    if !available {
        // Unavailable: the user leaves its rooms (XEP-0045 §7.14).
        services::session_ended(node, &me.jid).await;
    }
    if !available && !was_available {
        // Never available: nobody else was told otherwise (RFC 6121 §4.5.2).
        return;
    }
    let contacts = visible_contacts(node, &me.jid, contacts_of(node, &me.jid).await).await;
    let subscribers = broadcast_to_subscribers(node, &contacts, &stanza);
    if !available {
        announce_unavailable_to_directed(node, me, &stanza, &subscribers);
    }
    if initial {
        // RFC 6121 §4.2.2: probe the contacts the user is subscribed to. They are local, so
        // the "probe" is answered on the spot with each available resource's presence.
        for c in contacts.iter().filter(|c| c.state.subscription.has_to()) {
            if node.is_hosted(c.jid.domain()) {
                send_presence_of(node, &c.jid, |mut p| {
                    p.set_attr("to", me.jid.to_string());
                    me.deliver(p);
                });
            } else if node.federates(me.jid.domain(), c.jid.domain()) {
                // A contact elsewhere: its server answers the probe (RFC 6121 §4.3).
                let _ = node.s2s.send(
                    Element::new("presence", ns::CLIENT)
                        .with_attr("type", "probe")
                        .with_attr("from", me.jid.bare().to_string())
                        .with_attr("to", c.jid.bare().to_string()),
                );
            }
        }
        // RFC 6121 §3.1.3: requests wait until the user answers, and come again at each login.
        for c in contacts.iter().filter(|c| c.state.pending_in) {
            me.deliver(pending_request(c, &me.jid));
        }
        deliver_offline(node, me).await;
    }
    if available {
        // XEP-0115: learn what the client wants notified; XEP-0163 last items on login.
        caps::presence_sent(node, me, &stanza, initial).await;
    }
}

/// Sends a broadcast to every local contact subscribed to the user; returns their JIDs.
fn broadcast_to_subscribers(node: &Node, contacts: &[Contact], stanza: &Element) -> HashSet<Jid> {
    let mut sent = HashSet::new();
    let from = stanza.attr("from").and_then(|f| Jid::parse(f).ok());
    for c in contacts.iter().filter(|c| c.state.subscription.has_from()) {
        // Presence goes only where the federation policy lets stanzas go.
        if from
            .as_ref()
            .is_some_and(|f| !node.federates(f.domain(), c.jid.domain()))
        {
            continue;
        }
        let mut p = stanza.clone();
        p.set_attr("to", c.jid.to_string());
        send_presence(node, &c.jid, p);
        sent.insert(c.jid.clone());
    }
    sent
}

/// RFC 6121 §4.6.3: whoever got directed presence and is not a subscriber (who already got
/// the broadcast) learns that the user went offline.
fn announce_unavailable_to_directed(
    node: &Node,
    me: &SessionHandle,
    stanza: &Element,
    subscribers: &HashSet<Jid>,
) {
    for target in me.take_directed() {
        if subscribers.contains(&target.bare()) {
            continue;
        }
        let mut p = stanza.clone();
        p.set_attr("to", target.to_string());
        send_presence(node, &target, p);
    }
}

/// The stored subscription request of a contact, addressed to the user.
fn pending_request(c: &Contact, user: &Jid) -> Element {
    let fresh = || {
        Element::new("presence", ns::CLIENT)
            .with_attr("type", "subscribe")
            .with_attr("from", c.jid.to_string())
            .with_attr("to", user.bare().to_string())
    };
    c.request
        .as_deref()
        .and_then(|xml| crate::node::parse_stored(xml).ok())
        .unwrap_or_else(fresh)
}

/// Directed presence (RFC 6121 §4.6): delivered as addressed, and remembered while the
/// user is available so that the target hears when the user goes offline.
async fn directed_presence(
    node: &Node,
    me: &Arc<SessionHandle>,
    to: Jid,
    stanza: Element,
    available: bool,
) {
    let Some(username) = to.node() else {
        // To the server itself: nothing here keeps presence.
        return;
    };
    if to.bare() == me.jid.bare() {
        // To one of the user's own resources.
        return deliver_presence(node, &to, stanza);
    }
    // Presence to an account that does not exist is dropped silently (RFC 6121 §8.5.1).
    if !account_exists(node, to.domain(), username).await {
        return;
    }
    if me.is_available() {
        me.note_directed(to.clone(), available);
    }
    deliver_presence(node, &to, stanza);
}

/// A probe the client sent itself (RFC 6121 §4.3): answered with the contact's presence if
/// the user may see it.
async fn probe(node: &Node, me: &SessionHandle, to: &Jid) {
    let contact = to.bare();
    if contact.node().is_none() {
        return;
    }
    let allowed = contact == me.jid.bare()
        || match node.store.contact(&contact, &me.jid.bare()).await {
            Ok(c) => c.is_some_and(|c| c.state.subscription.has_from()),
            Err(e) => {
                tracing::error!(error = %e, "reading a roster for a probe failed");
                false
            }
        };
    if allowed {
        send_presence_of(node, &contact, |mut p| {
            p.set_attr("to", me.jid.to_string());
            me.deliver(p);
        });
    }
}

/// Calls `send` with the current presence of each available resource of `account`.
fn send_presence_of(node: &Node, account: &Jid, mut send: impl FnMut(Element)) {
    for s in node.router.sessions(account) {
        if let Some(mut p) = s.presence() {
            p.set_attr("from", s.jid.to_string());
            p.remove_attr("to");
            send(p);
        }
    }
}

/// Delivers presence to a local JID: a full JID's session, or every available resource of
/// a bare JID (RFC 6121 §8.5.2.1.1).
fn deliver_presence(node: &Node, to: &Jid, stanza: Element) {
    if to.resource().is_some() {
        if let Some(s) = node.router.session(to) {
            s.deliver(stanza);
        }
        return;
    }
    for s in node.router.sessions(to) {
        if s.is_available() {
            s.deliver(stanza.clone());
        }
    }
}

/// The user's presence (or its end) sent to a contact on the user's behalf: from each
/// available resource, after a subscription started or before it ends.
fn notify_contact(node: &Node, user: &Jid, contact: &Jid, notice: PresenceNotice) {
    if !node.federates(user.domain(), contact.domain()) {
        return;
    }
    send_presence_of(node, user, |mut p| {
        if notice == PresenceNotice::Unavailable {
            p = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_opt_attr("from", p.attr("from"));
        }
        p.set_attr("to", contact.to_string());
        send_presence(node, contact, p);
    });
}

/// The account's contacts (empty, logged, if the store fails: presence is best effort).
async fn contacts_of(node: &Node, account: &Jid) -> Vec<Contact> {
    match node.store.roster(&account.bare()).await {
        Ok((_, contacts)) => contacts,
        Err(e) => {
            tracing::error!(error = %e, "reading a roster failed");
            Vec::new()
        }
    }
}

/// A session ended (the connection closed, with or without unavailable presence): if it
/// was available, everyone who saw it go online sees it go offline (RFC 6121 §4.5.2).
pub async fn session_ended(node: &Node, me: &Arc<SessionHandle>) {
    services::session_ended(node, &me.jid).await;
    if !me.is_available() {
        return;
    }
    let _permit = node.writes.enter().await;
    me.set_presence(None);
    // Replaced by a new session with the same resource that is already online: what
    // others see now is the successor, not an ending (RFC 6120 §7.7.2.2).
    if node
        .router
        .session(&me.jid)
        .is_some_and(|s| s.id != me.id && s.is_available())
    {
        return;
    }
    let unavailable = Element::new("presence", ns::CLIENT)
        .with_attr("type", "unavailable")
        .with_attr("from", me.jid.to_string());
    for other in node.router.sessions(&me.jid) {
        if other.id != me.id {
            other.deliver(unavailable.clone());
        }
    }
    let contacts = visible_contacts(node, &me.jid, contacts_of(node, &me.jid).await).await;
    let subscribers = broadcast_to_subscribers(node, &contacts, &unavailable);
    announce_unavailable_to_directed(node, me, &unavailable, &subscribers);
    // XEP-0012: when the account's last session ends, remember when and with what status.
    if node.router.sessions(&me.jid).iter().all(|s| s.id == me.id)
        && !node.is_frozen(me.jid.domain())
        && let Some(user) = me.jid.node()
        && let Err(e) = node
            .store
            .set_last_activity(me.jid.domain(), user, "")
            .await
    {
        tracing::warn!(error = %e, "recording last activity failed");
    }
}

/// Stanzas a session's client never acknowledged (XEP-0198 §4), when the session ends for
/// good: each is treated as a stanza for an unavailable resource (RFC 6121 §8.5.3.2), so
/// none is lost without a word. Call it after the session left the router and before
/// [`session_ended`].
///
/// Messages (`normal`, `chat`) go to the account's other available resources, else into
/// offline storage when they have a body, else back to their sender as
/// `service-unavailable`; each carries a XEP-0203 delay from when it was first sent.
/// Headlines go to other resources or nowhere, as for any unavailable resource; a
/// `groupchat` message and an `iq` request bounce; errors, results and presence (which is
/// state, announced again by [`session_ended`]) end here.
pub async fn unacked_stanzas(node: &Node, me: &SessionHandle, unacked: Vec<Unacked>) {
    if unacked.is_empty() {
        return;
    }
    let _permit = node.writes.enter().await;
    let domain = me.jid.domain();
    tracing::info!(
        count = unacked.len(),
        "handing on stanzas the client did not acknowledge"
    );
    for u in unacked {
        let stamp = crate::node::format_utc(u.sent_at);
        let stanza = match u.delayed(domain, &stamp) {
            Ok(stanza) => stanza,
            Err(e) => {
                tracing::error!(error = %e, "an unacknowledged stanza does not parse back");
                continue;
            }
        };
        // The sender's session, for an error: stanzas here carry their sender's full JID.
        let sender = stanza
            .attr("from")
            .and_then(|f| Jid::parse(f).ok())
            .and_then(|f| node.router.session(&f));
        let bounce_back = |condition| {
            if let Some(s) = &sender {
                bounce(s, &stanza, condition, None);
            }
        };
        let kind = stanza.attr("type").unwrap_or(match stanza.name() {
            "message" => "normal",
            _ => "",
        });
        match (stanza.name(), kind) {
            ("message", "normal" | "chat") => {
                let targets = message_targets(&node.router.sessions(&me.bare));
                if !targets.is_empty() {
                    for s in targets {
                        s.deliver(stanza.clone());
                    }
                } else if stanza.has_child("body", ns::CLIENT) {
                    store_offline(node, sender.as_deref(), &me.bare, stanza).await;
                } else {
                    bounce_back(Condition::ServiceUnavailable);
                }
            }
            ("message", "headline") => {
                for s in message_targets(&node.router.sessions(&me.bare)) {
                    s.deliver(stanza.clone());
                }
            }
            ("message", "groupchat") | ("iq", "get" | "set") => {
                bounce_back(Condition::ServiceUnavailable)
            }
            _ => {}
        }
    }
}

/// Contacts presence may flow to: neither side blocks the other (XEP-0191).
async fn visible_contacts(node: &Node, user: &Jid, contacts: Vec<Contact>) -> Vec<Contact> {
    let mut visible = Vec::with_capacity(contacts.len());
    for c in contacts {
        if !blocking::blocks(node, &user.bare(), &c.jid).await
            && !blocking::blocks(node, &c.jid, user).await
        {
            visible.push(c);
        }
    }
    visible
}

// ---- subscriptions (RFC 6121 §3, Appendix A) --------------------------------------------

/// A subscription stanza from the user: the user's side of the state machine (A.2), then,
/// if routed, the contact's side (A.3).
async fn outbound_subscription(
    node: &Node,
    me: &SessionHandle,
    kind: SubscriptionKind,
    to: Jid,
    stanza: Element,
) {
    let user = me.jid.bare();
    let contact = to.bare();
    if contact.node().is_none() || contact == user {
        // No subscriptions with the server itself or with oneself.
        return;
    }
    if refused_while_moving(node, me, &stanza, &[user.domain(), contact.domain()]) {
        return;
    }
    let changed = node
        .store
        .update_contact(&user, &contact, |stored| {
            let (edit, t, after) =
                Contact::change(stored, &contact, Direction::Outbound, kind, None);
            (edit, (t, after))
        })
        .await;
    let ((t, after), version) = match changed {
        Ok(r) => r,
        Err(StoreError::RosterFull(n)) => {
            tracing::info!(limit = n, "subscription refused: the roster is full");
            return bounce(me, &stanza, Condition::NotAllowed, Some(ROSTER_FULL));
        }
        Err(StoreError::StorageFull(domain, _)) => {
            let text = storage_full_text(&domain, "the contact was not added");
            return bounce(me, &stanza, Condition::ResourceConstraint, Some(&text));
        }
        Err(e) => {
            tracing::error!(error = %e, "a subscription change failed");
            return bounce(me, &stanza, Condition::InternalServerError, None);
        }
    };
    if t.push
        && let (Some(v), Some(c)) = (&version, &after)
    {
        push_to_interested(node, &user, v, c.item());
    }
    if t.notice == Some(PresenceNotice::Unavailable) {
        notify_contact(node, &user, &contact, PresenceNotice::Unavailable);
    }
    if t.forward {
        // RFC 6121 §3.1.2: stamped with the user's bare JID, addressed to the contact's.
        let mut s = stanza;
        s.set_attr("from", user.to_string());
        s.set_attr("to", contact.to_string());
        inbound_subscription(node, &user, &contact, kind, s).await;
    }
    if t.notice == Some(PresenceNotice::Available) {
        notify_contact(node, &user, &contact, PresenceNotice::Available);
        pep::subscription_approved(node, &user, &contact).await;
    }
}

/// A subscription stanza from `from` reaching the local account `to`: the contact's side
/// of the state machine (RFC 6121 Appendix A.3).
async fn inbound_subscription(
    node: &Node,
    from: &Jid,
    to: &Jid,
    kind: SubscriptionKind,
    stanza: Element,
) {
    // A contact on another server: its server runs the contact's side.
    if !node.is_hosted(to.domain()) {
        let _ = node.s2s.send(stanza);
        return;
    }
    let Some(username) = to.node() else { return };
    if !account_exists(node, to.domain(), username).await {
        // RFC 6121 §3.1.3: a request to nobody is answered "unsubscribed"; anything else
        // is dropped.
        if kind == SubscriptionKind::Subscribe {
            let reply = subscription_stanza(to, from, SubscriptionKind::Unsubscribed);
            Box::pin(inbound_subscription(
                node,
                to,
                from,
                SubscriptionKind::Unsubscribed,
                reply,
            ))
            .await;
        }
        return;
    }
    let request = (kind == SubscriptionKind::Subscribe).then(|| stanza.to_xml());
    let changed = node
        .store
        .update_contact(to, from, |stored| {
            let (edit, t, after) = Contact::change(stored, from, Direction::Inbound, kind, request);
            (edit, (t, after))
        })
        .await;
    let ((t, after), version) = match changed {
        Ok(r) => r,
        Err(StoreError::RosterFull(n)) => {
            // A request to an account whose roster is full is dropped, as for a
            // stranger's request the user never sees.
            tracing::info!(
                limit = n,
                "an inbound subscription change was dropped: the roster is full"
            );
            return;
        }
        Err(StoreError::StorageFull(domain, quota)) => {
            tracing::info!(vhost = %domain, quota, "an inbound subscription change was dropped: the storage quota is used up");
            return;
        }
        Err(e) => {
            tracing::error!(error = %e, "a subscription change failed");
            return;
        }
    };
    if t.push
        && let (Some(v), Some(c)) = (&version, &after)
    {
        push_to_interested(node, to, v, c.item());
    }
    if t.notice == Some(PresenceNotice::Unavailable) {
        notify_contact(node, to, from, PresenceNotice::Unavailable);
    }
    if t.forward {
        // A request nobody sees now is stored and comes at the next login.
        deliver_presence(node, to, stanza);
    }
    if let Some(reply) = t.auto_reply {
        // The server answers for the user (pre-approved, or already subscribed); that
        // answer never calls for another.
        let answer = subscription_stanza(to, from, reply);
        Box::pin(inbound_subscription(node, to, from, reply, answer)).await;
    }
    if t.notice == Some(PresenceNotice::Available) {
        notify_contact(node, to, from, PresenceNotice::Available);
        pep::subscription_approved(node, to, from).await;
    }
}

/// `<presence from='from' to='to' type='kind'/>` between two bare JIDs.
fn subscription_stanza(from: &Jid, to: &Jid, kind: SubscriptionKind) -> Element {
    Element::new("presence", ns::CLIENT)
        .with_attr("type", kind.as_str())
        .with_attr("from", from.bare().to_string())
        .with_attr("to", to.bare().to_string())
}

// ---- the roster (RFC 6121 §2, XEP-0237) -------------------------------------------------

/// Sends a roster push of `item` to every interested resource of the account.
fn push_to_interested(node: &Node, account: &Jid, version: &RosterVersion, item: Element) {
    for s in node.router.sessions(account) {
        if s.is_interested() {
            let id = format!("push-{}", random_id());
            s.deliver(roster::push(&s.jid, &id, version, item.clone()));
        }
    }
}

pub fn random_id() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// A roster get or set from the user (to no one or to the user's bare JID).
async fn roster_iq(node: &Node, me: &Arc<SessionHandle>, iq: Element) {
    let Some(query) = iq.children().next().cloned() else {
        return;
    };
    let user = me.jid.bare();
    if iq.attr("type") == Some("get") {
        // RFC 6121 §2.2: from now on this resource gets pushes.
        me.set_interested();
        let (version, contacts) = match node.store.roster(&user).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reading a roster failed");
                return bounce(me, &iq, Condition::InternalServerError, None);
            }
        };
        let mut reply = iq_result(&iq);
        if let RosterAnswer::Full(q) = roster::answer_get(query.attr("ver"), &version, &contacts) {
            reply.append_child(q);
        }
        me.deliver(reply);
        return;
    }
    match roster::parse_set(&query) {
        Err((condition, text)) => bounce(me, &iq, condition, Some(text)),
        // A removal also changes the contact's side, when the contact is local.
        Ok(RosterSet::Update { .. }) if refused_while_moving(node, me, &iq, &[user.domain()]) => {}
        Ok(RosterSet::Remove { ref jid })
            if refused_while_moving(node, me, &iq, &[user.domain(), jid.domain()]) => {}
        Ok(RosterSet::Update { jid, name, groups }) => {
            let changed = node
                .store
                .update_contact(&user, &jid, |stored| {
                    let mut c = stored.unwrap_or_else(|| Contact::new(jid.clone()));
                    c.listed = true;
                    c.name = name;
                    c.groups = groups;
                    (Edit::Save(c.clone()), c)
                })
                .await;
            match changed {
                Ok((c, Some(version))) => {
                    // RFC 6121 §2.3.2: every interested resource, the one that asked included.
                    push_to_interested(node, &user, &version, c.item());
                    me.deliver(iq_result(&iq));
                }
                Ok((_, None)) => {
                    me.deliver(iq_result(&iq));
                }
                Err(StoreError::RosterFull(_)) => {
                    bounce(me, &iq, Condition::NotAllowed, Some(ROSTER_FULL));
                }
                Err(StoreError::StorageFull(domain, _)) => {
                    let text = storage_full_text(&domain, "the contact was not added");
                    bounce(me, &iq, Condition::ResourceConstraint, Some(&text));
                }
                Err(e) => {
                    tracing::error!(error = %e, "a roster set failed");
                    bounce(me, &iq, Condition::InternalServerError, None);
                }
            }
        }
        Ok(RosterSet::Remove { jid }) => {
            let removed = node
                .store
                .update_contact(&user, &jid, |stored| match stored {
                    Some(c) if c.listed => (Edit::Delete, Some(c)),
                    _ => (Edit::Keep, None),
                })
                .await;
            match removed {
                Ok((Some(old), Some(version))) => {
                    push_to_interested(node, &user, &version, roster::removed_item(&jid));
                    me.deliver(iq_result(&iq));
                    // RFC 6121 §2.5.2: the contact loses its subscription and its request
                    // is denied; the user's own subscription (or request) is cancelled.
                    if old.state.subscription.has_from() {
                        notify_contact(node, &user, &jid, PresenceNotice::Unavailable);
                    }
                    for kind in old.removal_notices() {
                        let s = subscription_stanza(&user, &jid, kind);
                        inbound_subscription(node, &user, &jid, kind, s).await;
                    }
                }
                Ok(_) => bounce(
                    me,
                    &iq,
                    Condition::ItemNotFound,
                    Some("The item is not in the roster."),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "a roster removal failed");
                    bounce(me, &iq, Condition::InternalServerError, None);
                }
            }
        }
    }
}

async fn deliver_offline(node: &Node, me: &SessionHandle) {
    let (Some(username), domain) = (me.jid.node(), me.jid.domain()) else {
        return;
    };
    if node.is_frozen(domain) {
        // They go along with the domain's data and are delivered on its new node.
        return;
    }
    // Past the domain's retention a message is dropped, even before upkeep deletes it.
    let cutoff = node
        .host(domain)
        .and_then(|h| h.policy.as_ref()?.offline_retention_days)
        .map(|days| upkeep::offline_cutoff(crate::node::unix_now(), days));
    match node.store.take_offline(domain, username).await {
        Ok(messages) => {
            for (xml, at) in messages {
                if cutoff.is_some_and(|c| at < c) {
                    continue;
                }
                match crate::node::parse_stored(&xml) {
                    Ok(mut m) => {
                        // XEP-0203: when it originally arrived (unless it says already: an
                        // unacknowledged stanza stored after XEP-0198 gave up on it).
                        if !m.has_child("delay", ns::DELAY) {
                            m.append_child(
                                Element::new("delay", ns::DELAY)
                                    .with_attr("from", domain)
                                    .with_attr("stamp", crate::node::format_utc(at)),
                            );
                        }
                        me.deliver(m);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a stored offline message could not be parsed")
                    }
                }
            }
        }
        Err(e) => tracing::error!(error = %e, "reading offline messages failed"),
    }
}

async fn iq(node: &Node, me: &Arc<SessionHandle>, stanza: Element) {
    let kind = stanza.attr("type").unwrap_or_default();
    if !matches!(kind, "get" | "set" | "result" | "error")
        || (matches!(kind, "get" | "set") && stanza.children().count() != 1)
    {
        return bounce(me, &stanza, Condition::BadRequest, None);
    }
    let to = target(&stanza);
    if let Some(service) = to
        .as_ref()
        .and_then(|t| services::service_of(node, t.domain()))
    {
        if me.remote {
            return bounce(
                me,
                &stanza,
                Condition::ServiceUnavailable,
                Some(SERVICES_LOCAL),
            );
        }
        return services::handle(node, me, service, stanza).await;
    }
    let for_server = match &to {
        None => true,
        Some(t) => t.node().is_none() && t.resource().is_none() && node.is_hosted(t.domain()),
    };
    let for_own_account = to
        .as_ref()
        .is_some_and(|t| t.resource().is_none() && *t == me.jid.bare());
    let is_roster = stanza
        .children()
        .next()
        .is_some_and(|q| q.is("query", ns::ROSTER));
    if is_roster && matches!(kind, "get" | "set") && (to.is_none() || for_own_account) {
        return roster_iq(node, me, stanza).await;
    }
    if me.remote {
        return iq_from_remote(node, me, stanza, to, for_server).await;
    }
    // XEP-0077 after login: the account's own password change and removal, at its server.
    if for_server && register::is_register_iq(&stanza) {
        return crate::xep::register::handle(node, me, &stanza).await;
    }
    if matches!(kind, "get" | "set")
        && let Some(payload) = stanza.children().next()
    {
        let account = match &to {
            None => Some(me.jid.bare()),
            Some(t)
                if t.node().is_some() && t.resource().is_none() && node.is_hosted(t.domain()) =>
            {
                Some(t.clone())
            }
            _ => None,
        };
        if let Some(account) = account {
            let writes =
                kind == "set" && (payload.is("vCard", ns::VCARD) || payload.ns() == ns::BLOCKING);
            if writes && refused_while_moving(node, me, &stanza, &[account.domain()]) {
                return;
            }
            if payload.is("query", ns::PRIVATE) {
                if kind == "set"
                    && account == me.jid.bare()
                    && refused_while_moving(node, me, &stanza, &[account.domain()])
                {
                    return;
                }
                me.deliver(private::handle(node, &me.jid, &account, &stanza).await);
                return;
            }
            if payload.is("vCard", ns::VCARD) {
                me.deliver(vcard::handle(node, &me.jid, &account, &stanza).await);
                return;
            }
            if payload.ns() == push::NS && account == me.jid.bare() && kind == "set" {
                if refused_while_moving(node, me, &stanza, &[account.domain()]) {
                    return;
                }
                me.deliver(push::handle(node, me, &stanza).await);
                return;
            }
            if payload.ns() == mam::NS {
                return mam::handle(node, me, &account, &stanza).await;
            }
            if payload.ns() == ns::BLOCKING && account == me.jid.bare() {
                return blocking_iq(node, me, &stanza).await;
            }
            if payload.ns() == pep::PUBSUB || payload.ns() == pep::PUBSUB_OWNER {
                return pep::handle(node, me, &account, &stanza).await;
            }
            if payload.is("query", ns::DISCO_ITEMS) && to.is_some() {
                me.deliver(pep::disco_items(node, me, &account, &stanza).await);
                return;
            }
            if payload.is("query", ns::LAST) && account != me.jid.bare() {
                me.deliver(last_activity(node, &me.jid, &account, &stanza).await);
                return;
            }
        }
    }
    if for_server || (for_own_account && matches!(kind, "get" | "set")) {
        if matches!(kind, "result" | "error") {
            // Answers to our capabilities queries go to caps; to our pings and roster
            // pushes, nowhere.
            caps::on_answer(node, me, &stanza).await;
            return;
        }
        return answer(node, me, stanza, for_server);
    }
    let Some(to) = to else { return };
    if !node.is_hosted(to.domain()) {
        return to_remote(node, me, stanza);
    }
    iq_to_local(node, me, stanza, to).await
}

/// An iq to a local account other than the sender's own, or to one of its resources.
async fn iq_to_local(node: &Node, me: &Arc<SessionHandle>, stanza: Element, to: Jid) {
    let kind = stanza.attr("type").unwrap_or_default();
    if to.resource().is_some() {
        if to.node().is_some() && blocking::blocks(node, &to.bare(), &me.jid).await {
            return bounce(me, &stanza, Condition::ServiceUnavailable, None);
        }
        match node.router.session(&to) {
            Some(s) => {
                node.metrics.stanza_routed();
                s.deliver(stanza);
            }
            None => bounce(me, &stanza, Condition::ServiceUnavailable, None),
        }
        return;
    }
    // An iq to someone else's bare JID: the server answers for the account. Errors may
    // be an app server's answer to a push notification sent in the account's name.
    if matches!(kind, "get" | "set") {
        bounce(me, &stanza, Condition::ServiceUnavailable, None);
    } else if kind == "error" {
        push::on_error(node, &me.jid, &to, &stanza).await;
    }
}

/// An iq from an entity on another server to this one: the server answers what it answers
/// anyone (disco, ping, version, time, uptime; an account's vCard, disco items, PEP items
/// and last activity), full JIDs get theirs forwarded, the rest is `service-unavailable`.
async fn iq_from_remote(
    node: &Node,
    me: &Arc<SessionHandle>,
    stanza: Element,
    to: Option<Jid>,
    for_server: bool,
) {
    let Some(to) = to else { return };
    let kind = stanza.attr("type").unwrap_or_default();
    if for_server {
        return match kind {
            "get" => answer(node, me, stanza, true),
            "set" => bounce(me, &stanza, Condition::ServiceUnavailable, None),
            // Answers to the server's own queries: none are sent to other servers yet.
            _ => {}
        };
    }
    if to.node().is_some()
        && to.resource().is_none()
        && kind == "get"
        && let Some(payload) = stanza.children().next()
    {
        if payload.is("vCard", ns::VCARD) {
            me.deliver(vcard::handle(node, &me.jid, &to, &stanza).await);
            return;
        }
        if payload.is("query", ns::DISCO_ITEMS) {
            me.deliver(pep::disco_items(node, me, &to, &stanza).await);
            return;
        }
        if payload.is("query", ns::LAST) {
            me.deliver(last_activity(node, &me.jid, &to, &stanza).await);
            return;
        }
        // A contact's client on another server reads the account's PEP nodes (OMEMO device
        // lists and bundles, avatars, nicknames), with the same access rules as a local
        // contact's.
        if payload.is("pubsub", pep::PUBSUB) {
            return pep::handle(node, me, &to, &stanza).await;
        }
        if payload.is("query", ns::DISCO_INFO) || payload.is("ping", ns::PING) {
            return answer(node, me, stanza.clone(), false);
        }
    }
    iq_to_local(node, me, stanza, to).await
}

/// Queries the server answers itself (to the domain, or to the user's own bare JID).
fn answer(node: &Node, me: &SessionHandle, iq: Element, for_server: bool) {
    let Some(payload) = iq.children().next().cloned() else {
        return;
    };
    let get = iq.attr("type") == Some("get");
    let reply = |child: Option<Element>| {
        let mut r = iq_result(&iq);
        if let Some(c) = child {
            r.append_child(c);
        }
        r
    };
    let response = match (payload.ns(), payload.name(), get) {
        (ns::PING, "ping", true) => reply(None),
        (carbons::NS, "enable" | "disable", false) if !me.remote => {
            carbons::handle(node, me, &payload);
            reply(None)
        }
        (ns::DISCO_INFO, "query", true) if payload.attr("node").is_none() => {
            let mut q = Element::new("query", ns::DISCO_INFO);
            if for_server {
                q.append_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "server")
                        .with_attr("type", "im")
                        .with_attr("name", "Rookery"),
                );
                for f in [
                    ns::DISCO_INFO,
                    ns::DISCO_ITEMS,
                    ns::PING,
                    ns::VERSION,
                    ns::TIME,
                    ns::LAST,
                    ns::ROSTER,
                    ns::VCARD,
                    ns::BLOCKING,
                    carbons::NS,
                    // In-band password change and removal work for every account.
                    ns::REGISTER,
                ] {
                    q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
                }
                // XEP-0157: the domain's contact addresses, from its spec.
                let domain = target(&iq)
                    .map_or_else(|| me.jid.domain().to_string(), |t| t.domain().to_string());
                if let Some(form) = node
                    .host(&domain)
                    .and_then(|h| serverinfo::form(&h.policy.as_ref()?.contacts))
                {
                    q.append_child(form);
                }
            } else {
                q.append_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "account")
                        .with_attr("type", "registered"),
                );
                q.append_child(
                    Element::new("feature", ns::DISCO_INFO).with_attr("var", ns::DISCO_INFO),
                );
                let account = target(&iq).unwrap_or_else(|| me.jid.bare());
                for f in mam::account_features(node, account.domain()) {
                    q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
                }
                if push::enabled(node, account.domain()) {
                    q.append_child(
                        Element::new("feature", ns::DISCO_INFO).with_attr("var", push::NS),
                    );
                }
                // XEP-0163 §6: the account is a PEP service.
                q.append_child(
                    Element::new("identity", ns::DISCO_INFO)
                        .with_attr("category", "pubsub")
                        .with_attr("type", "pep"),
                );
                for f in pep::ACCOUNT_FEATURES {
                    q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", *f));
                }
            }
            reply(Some(q))
        }
        // XEP-0030 §4.2: the domain's services are its items.
        (ns::DISCO_ITEMS, "query", true) if for_server && payload.attr("node").is_none() => {
            let domain =
                target(&iq).map_or_else(|| me.jid.domain().to_string(), |t| t.domain().to_string());
            reply(Some(services::disco_items(node, &domain)))
        }
        (ns::DISCO_ITEMS, "query", true) => reply(Some(Element::new("query", ns::DISCO_ITEMS))),
        (ns::VERSION, "query", true) if for_server => reply(Some(
            Element::new("query", ns::VERSION)
                .with_child(Element::new("name", ns::VERSION).with_text("Rookery"))
                .with_child(Element::new("version", ns::VERSION).with_text(crate::VERSION)),
        )),
        (ns::TIME, "time", true) if for_server => reply(Some(
            Element::new("time", ns::TIME)
                .with_child(Element::new("tzo", ns::TIME).with_text("+00:00"))
                .with_child(
                    Element::new("utc", ns::TIME)
                        .with_text(crate::node::format_utc(crate::node::unix_now())),
                ),
        )),
        (ns::LAST, "query", true) if for_server => reply(Some(
            Element::new("query", ns::LAST)
                .with_attr("seconds", node.started.elapsed().as_secs().to_string()),
        )),
        _ => error_reply(&iq, Condition::ServiceUnavailable, None),
    };
    me.deliver(response);
}

// ---- blocking (XEP-0191) and last activity (XEP-0012) -------------------------------------

async fn blocking_iq(node: &Node, me: &Arc<SessionHandle>, iq: &Element) {
    let before = if iq.attr("type") == Some("set") {
        blocking::current(node, &me.jid.bare()).await
    } else {
        me.set_blocklist_requested();
        Default::default()
    };
    let (reply, push) = blocking::handle(node, &me.jid, iq).await;
    me.deliver(reply);
    let Some(push) = push else { return };
    // XEP-0191 §3.3: pushed to the resources that requested the block list.
    for s in node
        .router
        .sessions(&me.jid)
        .into_iter()
        .filter(|s| s.blocklist_requested())
    {
        let mut p = push.clone();
        p.set_attr("to", s.jid.to_string());
        s.deliver(p);
    }
    // XEP-0191 §3.3: a newly blocked contact sees the user go offline.
    let after = blocking::current(node, &me.jid.bare()).await;
    for blocked in after.iter().filter(|j| !before.contains(*j)) {
        for s in node
            .router
            .sessions(&me.jid)
            .iter()
            .filter(|s| s.is_available())
        {
            let unavailable = Element::new("presence", ns::CLIENT)
                .with_attr("type", "unavailable")
                .with_attr("from", s.jid.to_string())
                .with_attr("to", blocked.to_string());
            deliver_presence(node, blocked, unavailable);
        }
    }
}

/// XEP-0012 §4: how long an account has been offline, for the account's subscribers.
async fn last_activity(node: &Node, from: &Jid, account: &Jid, iq: &Element) -> Element {
    let (Some(user), domain) = (account.node(), account.domain()) else {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    };
    if !account_exists(node, domain, user).await {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    }
    let contacts = contacts_of(node, account).await;
    let subscribed = contacts
        .iter()
        .any(|c| c.jid == from.bare() && c.state.subscription.has_from());
    if !subscribed {
        return error_reply(iq, Condition::Forbidden, None);
    }
    let query = |seconds: i64, status: &str| {
        iq_result(iq).with_child(
            Element::new("query", ns::LAST)
                .with_attr("seconds", seconds.max(0).to_string())
                .with_text(status),
        )
    };
    if node
        .router
        .sessions(account)
        .iter()
        .any(|s| s.is_available())
    {
        return query(0, "");
    }
    match node.store.last_activity(domain, user).await {
        Ok(Some((at, status))) => query(crate::node::unix_now() - at, &status),
        Ok(None) => error_reply(iq, Condition::ServiceUnavailable, None),
        Err(e) => {
            tracing::error!(error = %e, "reading last activity failed");
            error_reply(iq, Condition::InternalServerError, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::Row;

    use super::*;
    use crate::node::testing::{apply_spec, bind, delivered, node_with_spec, stanza};

    const DOMAIN: &str = "example.com";

    /// The error of an error reply: (type, condition, text).
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

    /// Sets the quota to what the vhost stores now plus `room` bytes (a new generation).
    async fn leave_room(node: &Node, generation: i64, room: i64) {
        let stored = node.store.measure_storage(DOMAIN).await.unwrap();
        apply_spec(
            node,
            // Without archives, which would take room of their own (see `xep::mam`).
            json!({"domain": DOMAIN, "generation": generation,
                   "limits": {"storage_quota_bytes": stored + room},
                   "features": {"archive": false}}),
        )
        .await;
    }

    fn chat(to: &str, body: &str) -> Element {
        stanza(&format!(
            "<message xmlns='jabber:client' from='alice@example.com/desk' to='{to}' type='chat' id='m1'><body>{body}</body></message>"
        ))
    }

    fn unacked(stanza: Element) -> Unacked {
        Unacked {
            seq: 1,
            xml: crate::proto::c2s::write_stanza(&stanza),
            sent_at: 1_795_683_600,
        }
    }

    /// What was delivered to remote senders (sent back over the links).
    fn replies(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<crate::router::Delivery>,
    ) -> Vec<Element> {
        delivered(rx)
    }

    #[tokio::test]
    async fn a_remote_message_is_delivered_and_errors_go_back_to_the_remote_sender() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let mut back = node.s2s.take_replies().unwrap();
        let (alice, mut rx) = bind(&node, "alice@example.com/desk");
        handle(
            &node,
            &alice,
            stanza("<presence xmlns='jabber:client' from='alice@example.com/desk'/>"),
        )
        .await;
        delivered(&mut rx);
        from_remote(&node, stanza("<message xmlns='jabber:client' from='juliet@peer.test/balcony' to='alice@example.com' type='chat' id='r1'><body>hi</body></message>")).await;
        let got = delivered(&mut rx);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].attr("from"), Some("juliet@peer.test/balcony"));
        assert_eq!(got[0].child_text("body", ns::CLIENT).as_deref(), Some("hi"));
        assert!(replies(&mut back).is_empty());
        // To nobody: the remote sender gets the error, over the links.
        from_remote(&node, stanza("<message xmlns='jabber:client' from='juliet@peer.test/balcony' to='nobody@example.com' type='chat' id='r2'><body>hi</body></message>")).await;
        let errors = replies(&mut back);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].attr("to"), Some("juliet@peer.test/balcony"));
        assert_eq!(error_of(&errors[0]).1, "service-unavailable");
        // A peer may not speak for a domain hosted here.
        from_remote(&node, stanza("<message xmlns='jabber:client' from='mallory@example.com/x' to='alice@example.com' type='chat'><body>forged</body></message>")).await;
        assert!(delivered(&mut rx).is_empty() && replies(&mut back).is_empty());
    }

    #[tokio::test]
    async fn a_remote_iq_to_the_server_is_answered_and_local_only_queries_are_refused() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let mut back = node.s2s.take_replies().unwrap();
        from_remote(&node, stanza("<iq xmlns='jabber:client' from='peer.test' to='example.com' type='get' id='d1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
        from_remote(&node, stanza("<iq xmlns='jabber:client' from='juliet@peer.test/b' to='alice@example.com' type='get' id='v1'><vCard xmlns='vcard-temp'/></iq>")).await;
        from_remote(&node, stanza("<iq xmlns='jabber:client' from='juliet@peer.test/b' to='alice@example.com' type='get' id='p1'><query xmlns='jabber:iq:private'><x xmlns='a:b'/></query></iq>")).await;
        let answers = replies(&mut back);
        assert_eq!(answers.len(), 3, "{answers:?}");
        assert_eq!(
            (answers[0].attr("id"), answers[0].attr("type")),
            (Some("d1"), Some("result"))
        );
        assert_eq!(answers[0].attr("to"), Some("peer.test"));
        assert_eq!(
            (answers[1].attr("id"), answers[1].attr("type")),
            (Some("v1"), Some("result"))
        );
        assert_eq!(answers[2].attr("id"), Some("p1"));
        assert_eq!(error_of(&answers[2]).1, "service-unavailable");
    }

    #[tokio::test]
    async fn a_remote_contact_reads_an_open_pep_node_and_not_a_presence_one() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let mut back = node.s2s.take_replies().unwrap();
        let (alice, mut rx) = bind(&node, "alice@example.com/desk");
        let publish = |id: &str, node_name: &str, access: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node_name}'><item id='current'><x xmlns='urn:test'>{id}</x></item></publish><publish-options><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='pubsub#access_model'><value>{access}</value></field></x></publish-options></pubsub></iq>"
            ))
        };
        handle(
            &node,
            &alice,
            publish("d1", "urn:xmpp:omemo:2:devices", "open"),
        )
        .await;
        handle(
            &node,
            &alice,
            publish("n1", "http://jabber.org/protocol/nick", "presence"),
        )
        .await;
        let results = delivered(&mut rx);
        assert!(
            results
                .iter()
                .filter(|r| r.attr("type") == Some("result"))
                .count()
                == 2,
            "{results:?}"
        );
        let items = |id: &str, node_name: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' from='juliet@peer.test/b' to='alice@example.com' type='get' id='{id}'><pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node_name}'/></pubsub></iq>"
            ))
        };
        from_remote(&node, items("g1", "urn:xmpp:omemo:2:devices")).await;
        from_remote(&node, items("g2", "http://jabber.org/protocol/nick")).await;
        let answers = replies(&mut back);
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert_eq!(answers[0].attr("type"), Some("result"), "{:?}", answers[0]);
        assert_eq!(answers[0].attr("to"), Some("juliet@peer.test/b"));
        assert!(
            format!("{:?}", answers[0]).contains("d1"),
            "{:?}",
            answers[0]
        );
        // Juliet is not subscribed to alice's presence: the nickname is not hers to read.
        assert_eq!(answers[1].attr("type"), Some("error"), "{:?}", answers[1]);
    }

    #[tokio::test]
    async fn a_remote_subscription_request_reaches_the_user_and_the_approval_updates_the_roster() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let (alice, mut rx) = bind(&node, "alice@example.com/desk");
        handle(
            &node,
            &alice,
            stanza("<presence xmlns='jabber:client' from='alice@example.com/desk'/>"),
        )
        .await;
        delivered(&mut rx);
        from_remote(&node, stanza("<presence xmlns='jabber:client' from='juliet@peer.test/balcony' to='alice@example.com' type='subscribe'/>")).await;
        let got = delivered(&mut rx);
        assert!(
            got.iter().any(|p| p.attr("type") == Some("subscribe")
                && p.attr("from") == Some("juliet@peer.test")),
            "{got:?}"
        );
        let alice_bare = Jid::parse("alice@example.com").unwrap();
        let juliet = Jid::parse("juliet@peer.test").unwrap();
        let c = node
            .store
            .contact(&alice_bare, &juliet)
            .await
            .unwrap()
            .unwrap();
        assert!(c.state.pending_in);
        handle(&node, &alice, stanza("<presence xmlns='jabber:client' from='alice@example.com/desk' to='juliet@peer.test' type='subscribed'/>")).await;
        let c = node
            .store
            .contact(&alice_bare, &juliet)
            .await
            .unwrap()
            .unwrap();
        assert!(c.state.subscription.has_from() && !c.state.pending_in);
        // Juliet's server confirms nothing more: her approval of alice's request, later.
        handle(&node, &alice, stanza("<presence xmlns='jabber:client' from='alice@example.com/desk' to='juliet@peer.test' type='subscribe'/>")).await;
        from_remote(&node, stanza("<presence xmlns='jabber:client' from='juliet@peer.test' to='alice@example.com' type='subscribed'/>")).await;
        let c = node
            .store
            .contact(&alice_bare, &juliet)
            .await
            .unwrap()
            .unwrap();
        assert!(
            c.state.subscription.has_to() && c.state.subscription.has_from(),
            "both"
        );
        // Now her presence reaches alice.
        delivered(&mut rx);
        from_remote(&node, stanza("<presence xmlns='jabber:client' from='juliet@peer.test/balcony' to='alice@example.com'/>")).await;
        let got = delivered(&mut rx);
        assert!(
            got.iter()
                .any(|p| p.attr("from") == Some("juliet@peer.test/balcony")
                    && p.attr("type").is_none()),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn a_probe_from_a_subscribed_remote_contact_is_answered_over_the_links() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let mut back = node.s2s.take_replies().unwrap();
        let (alice, _rx) = bind(&node, "alice@example.com/desk");
        handle(&node, &alice, stanza("<presence xmlns='jabber:client' from='alice@example.com/desk'><status>here</status></presence>")).await;
        from_remote(&node, stanza("<presence xmlns='jabber:client' from='juliet@peer.test' to='alice@example.com' type='probe'/>")).await;
        assert!(replies(&mut back).is_empty(), "not subscribed: nothing");
        from_remote(&node, stanza("<presence xmlns='jabber:client' from='juliet@peer.test' to='alice@example.com' type='subscribe'/>")).await;
        handle(&node, &alice, stanza("<presence xmlns='jabber:client' from='alice@example.com/desk' to='juliet@peer.test' type='subscribed'/>")).await;
        replies(&mut back);
        from_remote(&node, stanza("<presence xmlns='jabber:client' from='juliet@peer.test' to='alice@example.com' type='probe'/>")).await;
        let got = replies(&mut back);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].attr("from"), Some("alice@example.com/desk"));
        assert_eq!(got[0].attr("to"), Some("juliet@peer.test"));
        assert_eq!(
            got[0].child_text("status", ns::CLIENT).as_deref(),
            Some("here")
        );
    }

    #[tokio::test]
    async fn federation_policy_refuses_with_not_allowed_both_ways_and_between_local_vhosts() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1, "features": {"federation_allow": ["peer.test", "other.com"]}}),
            &["alice"],
        )
        .await;
        apply_spec(
            &node,
            json!({"domain": "other.com", "generation": 1, "features": {"federation": false}}),
        )
        .await;
        node.store
            .add_account("other.com", "bob", "a-password-1", 1)
            .await
            .unwrap();
        let mut back = node.s2s.take_replies().unwrap();
        let (alice, mut rx) = bind(&node, "alice@example.com/desk");
        // Not on the allow-list: refused by alice's own server.
        handle(&node, &alice, chat("carol@elsewhere.test", "hi")).await;
        let got = delivered(&mut rx);
        assert_eq!(error_of(&got[0]).1, "not-allowed");
        // On the list, from outside: accepted; from elsewhere: refused back to the sender.
        from_remote(&node, stanza("<message xmlns='jabber:client' from='carol@elsewhere.test/x' to='alice@example.com' type='chat' id='e1'><body>hi</body></message>")).await;
        let refused = replies(&mut back);
        assert_eq!(error_of(&refused[0]).1, "not-allowed");
        assert!(delivered(&mut rx).is_empty());
        // Another vhost of this node that does not federate: the same rule, no shortcut.
        let (bob, mut bob_rx) = bind(&node, "bob@other.com/phone");
        handle(&node, &alice, chat("bob@other.com/phone", "hi bob")).await;
        assert_eq!(error_of(&delivered(&mut rx)[0]).1, "not-allowed");
        assert!(delivered(&mut bob_rx).is_empty());
        handle(&node, &bob, stanza("<message xmlns='jabber:client' from='bob@other.com/phone' to='alice@example.com/desk' type='chat'><body>x</body></message>")).await;
        assert_eq!(error_of(&delivered(&mut bob_rx)[0]).1, "not-allowed");
        assert!(delivered(&mut rx).is_empty());
        // Within a domain, federation plays no part.
        apply_spec(
            &node,
            json!({"domain": DOMAIN, "generation": 2, "features": {"federation": false}}),
        )
        .await;
        let (alice2, _rx2) = bind(&node, "alice@example.com/laptop");
        handle(&node, &alice2, chat("alice@example.com/desk", "to myself")).await;
        assert!(
            delivered(&mut rx)
                .iter()
                .any(|m| m.child_text("body", ns::CLIENT).as_deref() == Some("to myself"))
        );
    }

    #[tokio::test]
    async fn unacked_messages_go_to_the_accounts_other_available_resource_with_a_delay() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        let (phone, _phone_rx) = bind(&node, "bob@example.com/phone");
        let (laptop, mut laptop_rx) = bind(&node, "bob@example.com/laptop");
        laptop.set_presence(Some(Element::new("presence", ns::CLIENT)));
        node.router.unbind(&phone);
        unacked_stanzas(
            &node,
            &phone,
            vec![unacked(chat("bob@example.com/phone", "hi"))],
        )
        .await;
        let got = delivered(&mut laptop_rx);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].child_text("body", ns::CLIENT).as_deref(), Some("hi"));
        let delay = got[0].get_child("delay", ns::DELAY).unwrap();
        assert_eq!(delay.attr("stamp"), Some("2026-11-26T09:00:00Z"));
        assert_eq!(
            node.store.take_offline(DOMAIN, "bob").await.unwrap().len(),
            0
        );
    }

    #[tokio::test]
    async fn unacked_messages_without_another_resource_are_stored_offline_or_bounced() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        let (_desk, mut desk_rx) = bind(&node, "alice@example.com/desk");
        let (phone, _phone_rx) = bind(&node, "bob@example.com/phone");
        node.router.unbind(&phone);
        let typing = stanza(
            "<message xmlns='jabber:client' from='alice@example.com/desk' to='bob@example.com/phone' type='chat' id='t1'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
        );
        let ping = stanza(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' to='bob@example.com/phone' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
        );
        let presence = stanza(
            "<presence xmlns='jabber:client' from='alice@example.com/desk' to='bob@example.com/phone'/>",
        );
        unacked_stanzas(
            &node,
            &phone,
            vec![
                unacked(chat("bob@example.com/phone", "hi")),
                unacked(typing),
                unacked(ping),
                unacked(presence),
            ],
        )
        .await;
        // The message with a body waits for bob's next login, with when it was first sent.
        let stored = node.store.take_offline(DOMAIN, "bob").await.unwrap();
        assert_eq!(stored.len(), 1);
        assert!(stored[0].0.contains("<body>hi</body>"), "{}", stored[0].0);
        assert!(
            stored[0].0.contains("2026-11-26T09:00:00Z"),
            "{}",
            stored[0].0
        );
        // The rest goes back to its sender as errors, but presence, which is state.
        let bounced = delivered(&mut desk_rx);
        let ids: Vec<_> = bounced.iter().map(|b| b.attr("id").unwrap()).collect();
        assert_eq!(ids, ["t1", "p1"]);
        for b in &bounced {
            assert_eq!(error_of(b).1, "service-unavailable");
        }
    }

    #[tokio::test]
    async fn block_list_changes_are_pushed_only_to_resources_that_requested_the_list() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let (desk, mut desk_rx) = bind(&node, "alice@example.com/desk");
        let (phone, mut phone_rx) = bind(&node, "alice@example.com/phone");
        let (_watch, mut watch_rx) = bind(&node, "alice@example.com/watch");
        let get = stanza(
            "<iq xmlns='jabber:client' from='alice@example.com/phone' type='get' id='g1'><blocklist xmlns='urn:xmpp:blocking'/></iq>",
        );
        handle(&node, &phone, get).await;
        assert_eq!(delivered(&mut phone_rx).len(), 1, "the list itself");
        let block = stanza(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='b1'><block xmlns='urn:xmpp:blocking'><item jid='spam@example.net'/></block></iq>",
        );
        handle(&node, &desk, block).await;
        // The desk gets its result but no push: it never asked for the list.
        let desk_got = delivered(&mut desk_rx);
        assert_eq!(desk_got.len(), 1);
        assert_eq!(desk_got[0].attr("type"), Some("result"));
        let pushes = delivered(&mut phone_rx);
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].attr("type"), Some("set"));
        assert_eq!(pushes[0].attr("to"), Some("alice@example.com/phone"));
        assert!(pushes[0].has_child("block", ns::BLOCKING));
        assert!(delivered(&mut watch_rx).is_empty());
    }

    #[tokio::test]
    async fn an_offline_message_past_the_storage_quota_bounces_and_delivery_frees_the_room() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        leave_room(&node, 2, 400).await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let body = "x".repeat(150);
        handle(&node, &alice, chat("bob@example.com", &body)).await;
        assert!(delivered(&mut to_alice).is_empty(), "the first is stored");
        handle(&node, &alice, chat("bob@example.com", &body)).await;
        let bounced = delivered(&mut to_alice);
        assert_eq!(bounced.len(), 1);
        let (kind, condition, text) = error_of(&bounced[0]);
        assert_eq!(
            (kind.as_str(), condition.as_str()),
            ("wait", "resource-constraint")
        );
        assert!(text.contains("storage of example.com is full"), "{text}");
        assert_eq!(bounced[0].attr("to"), Some("alice@example.com/desk"));

        // Bob comes online and gets the first: its room is free again.
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        handle(
            &node,
            &bob,
            stanza("<presence xmlns='jabber:client' from='bob@example.com/phone'/>"),
        )
        .await;
        let messages: Vec<_> = delivered(&mut to_bob)
            .into_iter()
            .filter(|s| s.name() == "message")
            .collect();
        assert_eq!(messages.len(), 1);
        handle(
            &node,
            &bob,
            stanza(
                "<presence xmlns='jabber:client' from='bob@example.com/phone' type='unavailable'/>",
            ),
        )
        .await;
        node.router.unbind(&bob);
        handle(&node, &alice, chat("bob@example.com", &body)).await;
        assert!(delivered(&mut to_alice).is_empty(), "stored again");
    }

    #[tokio::test]
    async fn a_vcard_that_grows_past_the_storage_quota_is_refused() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        leave_room(&node, 2, 200).await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let set = |note: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='v'><vCard xmlns='vcard-temp'><NOTE>{note}</NOTE></vCard></iq>"
            ))
        };
        handle(&node, &alice, set("short")).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
        handle(&node, &alice, set(&"long".repeat(100))).await;
        let (kind, condition, text) = error_of(&delivered(&mut to_alice)[0]);
        assert_eq!(
            (kind.as_str(), condition.as_str()),
            ("wait", "resource-constraint")
        );
        assert!(text.contains("vCard was not changed"), "{text}");
        // A vCard no larger than the stored one still fits.
        handle(&node, &alice, set("tiny")).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
    }

    #[tokio::test]
    async fn a_roster_item_past_the_storage_quota_is_refused_and_removing_one_frees_room() {
        let (node, _dir) =
            node_with_spec(json!({"domain": DOMAIN, "generation": 1}), &["alice"]).await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let add = |jid: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='r'><query xmlns='jabber:iq:roster'><item jid='{jid}' name='A friend'/></query></iq>"
            ))
        };
        handle(&node, &alice, add("first@example.net")).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
        leave_room(&node, 2, 10).await;
        handle(&node, &alice, add("second@example.net")).await;
        let (_, condition, _) = error_of(&delivered(&mut to_alice)[0]);
        assert_eq!(condition, "resource-constraint");
        // Renaming a stored contact is no new item.
        handle(&node, &alice, add("first@example.net")).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
        handle(
            &node,
            &alice,
            stanza("<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='x'><query xmlns='jabber:iq:roster'><item jid='first@example.net' subscription='remove'/></query></iq>"),
        )
        .await;
        delivered(&mut to_alice);
        handle(&node, &alice, add("second@example.net")).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
    }

    #[tokio::test]
    async fn offline_messages_past_the_retention_are_not_delivered() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1, "limits": {"offline_retention_days": 2}}),
            &["alice", "bob"],
        )
        .await;
        let (alice, _) = bind(&node, "alice@example.com/desk");
        handle(&node, &alice, chat("bob@example.com", "old")).await;
        sqlx::query("UPDATE offline_messages SET created_at = created_at - 3 * 86400")
            .execute(&node.store.db)
            .await
            .unwrap();
        handle(&node, &alice, chat("bob@example.com", "new")).await;
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        handle(
            &node,
            &bob,
            stanza("<presence xmlns='jabber:client' from='bob@example.com/phone'/>"),
        )
        .await;
        let bodies: Vec<String> = delivered(&mut to_bob)
            .iter()
            .filter_map(|s| s.child_text("body", ns::CLIENT))
            .collect();
        assert_eq!(bodies, vec!["new".to_string()]);
        let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM offline_messages")
            .fetch_one(&node.store.db)
            .await
            .unwrap()
            .get("n");
        assert_eq!(left, 0, "the expired one is gone too");
    }

    #[tokio::test]
    async fn the_servers_disco_info_carries_the_specs_contact_addresses() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1, "contacts": {
                "abuse": ["mailto:abuse@example.com"],
                "support": ["xmpp:help@example.com", "https://example.com/help"]}}),
            &["alice"],
        )
        .await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let disco = |to: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' from='alice@example.com/desk' {to} type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            ))
        };
        for to in ["to='example.com'", ""] {
            handle(&node, &alice, disco(to)).await;
            let reply = delivered(&mut to_alice).remove(0);
            let query = reply.get_child("query", ns::DISCO_INFO).unwrap();
            let form = query.get_child("x", ns::DATA_FORMS).unwrap();
            let vars: Vec<&str> = form.children().filter_map(|f| f.attr("var")).collect();
            assert_eq!(
                vars,
                ["FORM_TYPE", "abuse-addresses", "support-addresses"],
                "{to}"
            );
        }
        // Not on an account's disco#info, and not once the spec drops the contacts.
        handle(&node, &alice, disco("to='alice@example.com'")).await;
        let reply = delivered(&mut to_alice).remove(0);
        assert!(!reply.to_xml().contains(ns::DATA_FORMS));
        apply_spec(&node, json!({"domain": DOMAIN, "generation": 2})).await;
        handle(&node, &alice, disco("to='example.com'")).await;
        let reply = delivered(&mut to_alice).remove(0);
        assert!(reply.get_child("query", ns::DISCO_INFO).is_some());
        assert!(
            !reply.to_xml().contains(ns::DATA_FORMS),
            "{}",
            reply.to_xml()
        );
    }
}
