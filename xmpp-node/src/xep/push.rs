//! XEP-0357 Push Notifications (`urn:xmpp:push:0`): a phone app that is not connected
//! (or whose stream broke and waits to be resumed) is woken through its maker's app
//! server. The client enables push with the app server's JID and a node; when a message
//! with a body reaches the account while none of its sessions can read it, the server
//! publishes a notification to each registered app server:
//!
//! ```text
//!  <iq type='set' from='alice@example.com' to=APP_SERVER>
//!    <pubsub xmlns='http://jabber.org/protocol/pubsub'>
//!      <publish node=NODE><item><notification xmlns='urn:xmpp:push:0'>
//!        <x type='submit'> FORM_TYPE urn:xmpp:push:summary [last-message-sender,
//!                           last-message-body] </x></notification></item></publish>
//!      <publish-options> the client's form, as it gave it </publish-options>
//!    </pubsub></iq>
//! ```
//!
//! The sender and text go in only where the vhost spec allows it
//! (`features.push_message_content`): the app server belongs to the app's maker, and by
//! default it learns only that something waits. `features.push` off switches push off for
//! the vhost (not advertised, enabling refused). Registrations persist (`store::push`)
//! and go with the account. An app server on a domain hosted here is reached directly (a
//! component-like account); one on another domain over federation, if the vhost's
//! federation policy lets it talk with that domain (else enabling it is refused with
//! `not-allowed`).
//! Each notification's id names its registration, so an app server that answers with a
//! permanent error (it no longer knows the device) has that registration removed.

use crate::{
    node::Node,
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    router::SessionHandle,
    store::{MAX_PUSH_REGISTRATIONS, PushRegistration},
};

pub const NS: &str = "urn:xmpp:push:0";
const SUMMARY: &str = "urn:xmpp:push:summary";
const PUBSUB: &str = "http://jabber.org/protocol/pubsub";

/// Whether the vhost offers push notifications.
pub fn enabled(node: &Node, domain: &str) -> bool {
    node.host(domain)
        .is_some_and(|h| h.policy.as_ref().is_none_or(|p| p.features.push))
}

fn content_allowed(node: &Node, domain: &str) -> bool {
    node.host(domain).is_some_and(|h| {
        h.policy
            .as_ref()
            .is_some_and(|p| p.features.push_message_content)
    })
}

/// What an `<enable/>` or `<disable/>` asks.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Enable(PushRegistration),
    Disable {
        app_server: String,
        node: Option<String>,
    },
}

/// Reads an `<enable/>` or `<disable/>`; `Err` is the sentence for a bad request.
pub fn parse(payload: &Element) -> Result<Request, &'static str> {
    let app_server = payload
        .attr("jid")
        .and_then(|j| Jid::parse(j).ok())
        .ok_or("The app server's 'jid' is missing or not a JID.")?
        .to_string();
    let node = payload.attr("node").filter(|n| !n.is_empty());
    match payload.name() {
        "enable" => {
            let node = node.ok_or("Enabling push needs a 'node'.")?;
            let options = payload
                .get_child("x", ns::DATA_FORMS)
                .map(|x| x.to_xml())
                .unwrap_or_default();
            Ok(Request::Enable(PushRegistration {
                app_server,
                node: node.to_string(),
                options,
            }))
        }
        "disable" => Ok(Request::Disable {
            app_server,
            node: node.map(str::to_string),
        }),
        _ => Err("Push is enabled with <enable/> and disabled with <disable/>."),
    }
}

/// Answers an enable or disable iq from `me` for its own account.
pub async fn handle(node: &Node, me: &SessionHandle, iq: &Element) -> Element {
    let Some(payload) = iq.children().next() else {
        return error_reply(iq, Condition::BadRequest, None);
    };
    let (domain, Some(username)) = (me.bare.domain(), me.bare.node()) else {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    };
    if !enabled(node, domain) {
        return error_reply(
            iq,
            Condition::ServiceUnavailable,
            Some("Push notifications are off for this domain."),
        );
    }
    let request = match parse(payload) {
        Ok(r) => r,
        Err(text) => return error_reply(iq, Condition::BadRequest, Some(text)),
    };
    match request {
        Request::Enable(registration) => {
            let app = Jid::parse(&registration.app_server).expect("parsed above");
            if !node.federates(domain, app.domain()) {
                return error_reply(
                    iq,
                    Condition::NotAllowed,
                    Some("This domain does not exchange messages with the app server's domain."),
                );
            }
            match node
                .store
                .enable_push(domain, username, &registration)
                .await
            {
                Ok(true) => iq_result(iq),
                Ok(false) => error_reply(
                    iq,
                    Condition::ResourceConstraint,
                    Some(&format!(
                        "An account keeps at most {MAX_PUSH_REGISTRATIONS} push registrations; disable one first."
                    )),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "storing a push registration failed");
                    error_reply(iq, Condition::InternalServerError, None)
                }
            }
        }
        Request::Disable {
            app_server,
            node: n,
        } => {
            match node
                .store
                .disable_push(domain, username, &app_server, n.as_deref())
                .await
            {
                Ok(_) => iq_result(iq),
                Err(e) => {
                    tracing::error!(error = %e, "removing a push registration failed");
                    error_reply(iq, Condition::InternalServerError, None)
                }
            }
        }
    }
}

/// The notification for one registration (§5): a summary, with the sender and text only
/// when `content` is given.
pub fn notification(
    account: &Jid,
    registration: &PushRegistration,
    id: &str,
    content: Option<(&Jid, &str)>,
) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
    };
    let mut form = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "submit")
        .with_child(field("FORM_TYPE", SUMMARY).with_attr("type", "hidden"));
    if let Some((sender, body)) = content {
        form.append_child(field("last-message-sender", &sender.to_string()));
        form.append_child(field("last-message-body", body));
    }
    let mut pubsub = Element::new("pubsub", PUBSUB).with_child(
        Element::new("publish", PUBSUB)
            .with_attr("node", registration.node.as_str())
            .with_child(
                Element::new("item", PUBSUB)
                    .with_child(Element::new("notification", NS).with_child(form)),
            ),
    );
    if let Ok(options) = crate::proto::parser::parse_stanza(&registration.options) {
        pubsub.append_child(Element::new("publish-options", PUBSUB).with_child(options));
    }
    Element::new("iq", ns::CLIENT)
        .with_attr("type", "set")
        .with_attr("id", id)
        .with_attr("from", account.to_string())
        .with_attr("to", registration.app_server.as_str())
        .with_child(pubsub)
}

/// A message from `sender` with text `body` reached `account` and none of its sessions can
/// read it now (all offline or detached): every registered app server is told.
pub async fn notify(node: &Node, account: &Jid, sender: &Jid, body: &str) {
    let (domain, Some(username)) = (account.domain(), account.node()) else {
        return;
    };
    if !enabled(node, domain) {
        return;
    }
    let registrations = match node.store.push_registrations(domain, username).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "reading push registrations failed");
            return;
        }
    };
    let content = content_allowed(node, domain).then_some((sender, body));
    for registration in &registrations {
        let Ok(app) = Jid::parse(&registration.app_server) else {
            continue;
        };
        let id = notification_id(&registration.node);
        if !node.is_hosted(app.domain()) {
            // Over federation; if the app server cannot be reached, the bounce comes back
            // as an error to the account and `on_error` removes the registration.
            if !node.federates(domain, app.domain()) {
                continue;
            }
            match node
                .s2s
                .send(notification(account, registration, &id, content))
            {
                Ok(()) => {
                    node.metrics.push_sent.inc();
                }
                Err(_) => {
                    tracing::info!(app_server = %app, "a push notification could not go to its app server's domain")
                }
            }
            continue;
        }
        // An app server hosted here: a full JID's session, or the first session of an
        // account.
        let target = match app.resource() {
            Some(_) => node.router.session(&app),
            None => node.router.sessions(&app).into_iter().next(),
        };
        let Some(target) = target else {
            tracing::info!(app_server = %app, "a push notification found its app server offline");
            continue;
        };
        target.deliver(notification(account, registration, &id, content));
        node.metrics.push_sent.inc();
    }
}

/// A notification's iq id: random, then the registration's node (hex), so the app
/// server's answer names the registration it is about.
fn notification_id(node: &str) -> String {
    format!("push-{}.{}", crate::im::random_id(), hex::encode(node))
}

/// An app server answered a notification to `account` with an error. A permanent one
/// (`cancel` or `auth`: the app server no longer knows the device, or refuses us) removes
/// that registration, as XEP-0357 §7 advises; a temporary one (`wait`, `modify`) keeps it.
/// Anything else is not ours: false.
pub async fn on_error(node: &Node, from: &Jid, account: &Jid, iq: &Element) -> bool {
    let Some(push_node) = iq
        .attr("id")
        .and_then(|id| id.strip_prefix("push-"))
        .and_then(|rest| rest.split_once('.'))
        .and_then(|(_, h)| hex::decode(h).ok())
        .and_then(|b| String::from_utf8(b).ok())
    else {
        return false;
    };
    let (Some(username), "error") = (account.node(), iq.attr("type").unwrap_or_default()) else {
        return false;
    };
    let kind = iq
        .get_child("error", ns::CLIENT)
        .and_then(|e| e.attr("type"))
        .unwrap_or("cancel");
    if !matches!(kind, "cancel" | "auth") {
        return true;
    }
    // The registration names the app server as the client gave it: full or bare.
    for app_server in [from.to_string(), from.bare().to_string()] {
        match node
            .store
            .disable_push(account.domain(), username, &app_server, Some(&push_node))
            .await
        {
            Ok(0) => {}
            Ok(_) => {
                tracing::info!(account = %account, app_server = %app_server, "the app server refused a push notification: its registration is removed");
                node.metrics.push_disabled.inc();
                return true;
            }
            Err(e) => {
                tracing::error!(error = %e, "removing a refused push registration failed");
                return true;
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(xml: &str) -> Element {
        crate::proto::parser::parse_stanza(&format!("<iq type='set' id='1'>{xml}</iq>"))
            .unwrap()
            .children()
            .next()
            .unwrap()
            .clone()
    }

    #[test]
    fn enable_and_disable_are_read_with_their_options_and_bad_ones_refused() {
        let enable = payload(
            "<enable xmlns='urn:xmpp:push:0' jid='push.example.net' node='yxs32'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value></field><field var='secret'><value>eruio234vzxc2kla-91</value></field></x></enable>",
        );
        let Ok(Request::Enable(r)) = parse(&enable) else {
            panic!("not an enable")
        };
        assert_eq!(
            (r.app_server.as_str(), r.node.as_str()),
            ("push.example.net", "yxs32")
        );
        assert!(r.options.contains("eruio234vzxc2kla-91"), "{}", r.options);
        assert_eq!(
            parse(&payload(
                "<disable xmlns='urn:xmpp:push:0' jid='push.example.net'/>"
            )),
            Ok(Request::Disable {
                app_server: "push.example.net".into(),
                node: None
            })
        );
        assert!(
            parse(&payload(
                "<enable xmlns='urn:xmpp:push:0' jid='push.example.net'/>"
            ))
            .is_err()
        );
        assert!(parse(&payload("<enable xmlns='urn:xmpp:push:0' node='n'/>")).is_err());
        assert!(
            parse(&payload(
                "<enable xmlns='urn:xmpp:push:0' jid='@@' node='n'/>"
            ))
            .is_err()
        );
    }

    #[test]
    fn a_notification_carries_the_summary_and_the_options_and_content_only_when_allowed() {
        let account = Jid::parse("juliet@example.com").unwrap();
        let romeo = Jid::parse("romeo@example.com/orchard").unwrap();
        let registration = PushRegistration {
            app_server: "push.example.com".into(),
            node: "yxs32".into(),
            options: "<x xmlns='jabber:x:data' type='submit'><field var='secret'><value>s3</value></field></x>".into(),
        };
        let quiet = notification(&account, &registration, "p1", None).to_xml();
        assert!(quiet.contains("urn:xmpp:push:summary"), "{quiet}");
        assert!(
            quiet.contains("node=\"yxs32\"") || quiet.contains("node='yxs32'"),
            "{quiet}"
        );
        assert!(
            quiet.contains("publish-options") && quiet.contains("s3"),
            "{quiet}"
        );
        assert!(!quiet.contains("last-message"), "{quiet}");
        let told = notification(&account, &registration, "p2", Some((&romeo, "Hi"))).to_xml();
        assert!(
            told.contains("last-message-sender") && told.contains("romeo@example.com/orchard"),
            "{told}"
        );
        assert!(told.contains("<value>Hi</value>"), "{told}");
    }
}

#[cfg(test)]
mod answers {
    use serde_json::json;

    use super::*;
    use crate::{
        im,
        node::testing::{bind, delivered, node_with_spec, stanza},
    };

    #[tokio::test]
    async fn an_app_server_on_another_domain_is_enabled_when_the_policy_lets_the_domains_talk() {
        let (node, _dir) = node_with_spec(
            json!({"domain": "example.com", "generation": 1,
                   "features": {"federation_allow": ["push.partner.test"]}}),
            &["alice"],
        )
        .await;
        let (alice, mut rx) = bind(&node, "alice@example.com/phone");
        let enable = |app: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' from='alice@example.com/phone' type='set' id='e-{app}'><enable xmlns='urn:xmpp:push:0' jid='{app}' node='n1'/></iq>"
            ))
        };
        im::handle(&node, &alice, enable("push.partner.test")).await;
        im::handle(&node, &alice, enable("push.elsewhere.test")).await;
        let answers = delivered(&mut rx);
        assert_eq!(answers.len(), 2, "{answers:?}");
        assert_eq!(answers[0].attr("type"), Some("result"), "{:?}", answers[0]);
        assert_eq!(answers[1].attr("type"), Some("error"), "{:?}", answers[1]);
        assert!(
            answers[1].to_xml().contains("not-allowed"),
            "{:?}",
            answers[1]
        );
        let stored = node
            .store
            .push_registrations("example.com", "alice")
            .await
            .unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].app_server, "push.partner.test");
    }

    #[tokio::test]
    async fn a_permanent_error_from_the_app_server_removes_the_registration_a_temporary_one_not() {
        let (node, _dir) = node_with_spec(
            json!({"domain": "example.com", "generation": 1}),
            &["alice", "app"],
        )
        .await;
        let alice = Jid::parse("alice@example.com").unwrap();
        let sender = Jid::parse("bob@example.com/x").unwrap();
        for n in ["n1", "n2"] {
            let r = PushRegistration {
                app_server: "app@example.com".into(),
                node: n.into(),
                options: String::new(),
            };
            assert!(
                node.store
                    .enable_push("example.com", "alice", &r)
                    .await
                    .unwrap()
            );
        }
        let (app, mut rx) = bind(&node, "app@example.com/server");
        notify(&node, &alice, &sender, "hi").await;
        let sent = delivered(&mut rx);
        assert_eq!(sent.len(), 2);
        let answer = |n: &Element, kind: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' type='error' id='{}' to='alice@example.com'><error type='{kind}'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
                n.attr("id").unwrap()
            ))
        };
        let of = |node_name: &str| {
            sent.iter()
                .find(|s| {
                    s.to_xml().contains(&format!("node=\"{node_name}\""))
                        || s.to_xml().contains(&format!("node='{node_name}'"))
                })
                .unwrap()
                .clone()
        };
        // A temporary error keeps n1; a permanent one removes n2 only.
        im::handle(&node, &app, answer(&of("n1"), "wait")).await;
        im::handle(&node, &app, answer(&of("n2"), "cancel")).await;
        let left: Vec<String> = node
            .store
            .push_registrations("example.com", "alice")
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.node)
            .collect();
        assert_eq!(left, ["n1"]);
        assert_eq!(node.metrics.push_disabled.get(), 1);
        // An error with an id that is not a notification's does nothing.
        let other = stanza(
            "<iq xmlns='jabber:client' type='error' id='push-zz' to='alice@example.com'><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        );
        im::handle(&node, &app, other).await;
        assert_eq!(
            node.store
                .push_registrations("example.com", "alice")
                .await
                .unwrap()
                .len(),
            1
        );
    }
}
