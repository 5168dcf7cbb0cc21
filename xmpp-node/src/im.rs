//! What happens to a stanza a bound client sends (RFC 6120 §8, RFC 6121 §8): answered by
//! the server itself (ping, disco, version, time, last activity, roster), routed to a
//! local session, stored offline, or bounced with the right error.

use std::sync::Arc;

use crate::{
    node::Node,
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    router::{SessionHandle, message_targets},
};

/// Handles one stanza from `me`'s session.
pub async fn handle(node: &Node, me: &Arc<SessionHandle>, stanza: Element) {
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
    if !node.is_hosted(to.domain()) {
        return bounce(
            me,
            &stanza,
            Condition::RemoteServerNotFound,
            Some("Federation with other servers is not available yet."),
        );
    }
    let kind = stanza.attr("type").unwrap_or("normal");
    let Some(username) = to.node() else {
        // Messages to the server itself: nothing handles them.
        return bounce(me, &stanza, Condition::ServiceUnavailable, None);
    };
    if !account_exists(node, to.domain(), username).await {
        return bounce(me, &stanza, Condition::ServiceUnavailable, None);
    }
    // To a full JID: that resource if it is online (RFC 6121 §8.5.3.1).
    if to.resource().is_some()
        && let Some(session) = node.router.session(&to)
    {
        node.metrics.stanza_routed();
        session.deliver(stanza);
        return;
    }
    match kind {
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
            if targets.is_empty() {
                store_offline(node, me, &to, stanza).await;
            } else {
                node.metrics.stanza_routed();
                for s in targets {
                    s.deliver(stanza.clone());
                }
            }
        }
    }
}

async fn store_offline(node: &Node, me: &SessionHandle, to: &Jid, stanza: Element) {
    // Only messages worth reading later: with a body (XEP-0160 §3).
    if !stanza.has_child("body", ns::CLIENT) {
        return;
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
        Ok(true) => {}
        Ok(false) => bounce(
            me,
            &stanza,
            Condition::ServiceUnavailable,
            Some("The recipient's offline storage is full."),
        ),
        Err(e) => {
            tracing::error!(error = %e, "storing an offline message failed");
            bounce(me, &stanza, Condition::InternalServerError, None);
        }
    }
}

async fn account_exists(node: &Node, domain: &str, username: &str) -> bool {
    node.store
        .account_exists(domain, username)
        .await
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "account look-up failed");
            false
        })
}

async fn presence(node: &Node, me: &Arc<SessionHandle>, stanza: Element) {
    let kind = stanza.attr("type").unwrap_or("available").to_string();
    match target(&stanza) {
        None => match kind.as_str() {
            "available" | "unavailable" => {
                broadcast_own(node, me, stanza, kind == "available").await
            }
            // A probe or subscription without 'to' makes no sense (RFC 6121 §4.3, §3.1).
            _ => bounce(me, &stanza, Condition::BadRequest, None),
        },
        Some(to) => {
            // Directed presence and subscription stanzas go to the addressed account's sessions.
            if !node.is_hosted(to.domain()) {
                return bounce(
                    me,
                    &stanza,
                    Condition::RemoteServerNotFound,
                    Some("Federation with other servers is not available yet."),
                );
            }
            let sessions = match to.resource() {
                Some(_) => node.router.session(&to).into_iter().collect(),
                None => node.router.sessions(&to),
            };
            for s in sessions {
                s.deliver(stanza.clone());
            }
        }
    }
}

/// Initial, updated and final presence: kept on the session and shown to the account's
/// other resources; the first one also delivers what waited offline.
async fn broadcast_own(node: &Node, me: &Arc<SessionHandle>, stanza: Element, available: bool) {
    let initial = available && me.presence().is_none();
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
    if initial {
        deliver_offline(node, me).await;
    }
}

async fn deliver_offline(node: &Node, me: &SessionHandle) {
    let (Some(username), domain) = (me.jid.node(), me.jid.domain()) else {
        return;
    };
    match node.store.take_offline(domain, username).await {
        Ok(messages) => {
            for (xml, at) in messages {
                match crate::node::parse_stored(&xml) {
                    Ok(mut m) => {
                        // XEP-0203: when it originally arrived.
                        m.append_child(
                            Element::new("delay", ns::DELAY)
                                .with_attr("from", domain)
                                .with_attr("stamp", crate::node::format_utc(at)),
                        );
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
    let for_server = match &to {
        None => true,
        Some(t) => t.node().is_none() && t.resource().is_none() && node.is_hosted(t.domain()),
    };
    let for_own_account = to
        .as_ref()
        .is_some_and(|t| t.resource().is_none() && *t == me.jid.bare());
    if for_server || (for_own_account && matches!(kind, "get" | "set")) {
        if matches!(kind, "result" | "error") {
            return; // answers to our own pings
        }
        return answer(node, me, stanza, for_server);
    }
    let Some(to) = to else { return };
    if !node.is_hosted(to.domain()) {
        return bounce(
            me,
            &stanza,
            Condition::RemoteServerNotFound,
            Some("Federation with other servers is not available yet."),
        );
    }
    if to.resource().is_some() {
        match node.router.session(&to) {
            Some(s) => {
                node.metrics.stanza_routed();
                s.deliver(stanza);
            }
            None => bounce(me, &stanza, Condition::ServiceUnavailable, None),
        }
        return;
    }
    // An iq to someone else's bare JID: the server answers for the account.
    if matches!(kind, "get" | "set") {
        bounce(me, &stanza, Condition::ServiceUnavailable, None);
    }
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
                ] {
                    q.append_child(Element::new("feature", ns::DISCO_INFO).with_attr("var", f));
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
            }
            reply(Some(q))
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
        (ns::ROSTER, "query", true) => reply(Some(Element::new("query", ns::ROSTER))),
        (ns::ROSTER, "query", false) => error_reply(
            &iq,
            Condition::FeatureNotImplemented,
            Some("Roster changes are not stored yet."),
        ),
        _ => error_reply(&iq, Condition::ServiceUnavailable, None),
    };
    me.deliver(response);
}
