//! XEP-0163 Personal Eventing Protocol: a publish-subscribe service (XEP-0060) on each
//! account's bare JID, which is what OMEMO device lists and bundles, avatars, bookmarks
//! and nicknames are published to.
//!
//! Data flow: `im::iq` hands every `pubsub`/`pubsub#owner` query addressed to an account
//! (or to no one: the sender's own) to [`handle`]. Writes (publish, retract, configure,
//! purge, delete) are the owner's alone; a publish creates its node on the fly (auto-create)
//! with the configuration its XEP-0223 publish-options ask for, and refuses with
//! `<conflict/>` + `<precondition-not-met/>` options an existing node does not have. Reads
//! follow the node's access model ([`may_read`]): `presence` (the default: the owner and
//! the contacts with a `from`/`both` subscription), `open` (anyone) or `whitelist` (the
//! owner alone, no whitelist being kept). The stored rows are in `store::pep`.
//!
//! Notifications: each publish (retraction, purge, deletion) goes as a headline message
//! with an `#event` payload to the available resources of the owner and of the contacts
//! who may read the node, but only to those whose verified XEP-0115 capabilities
//! (`xep::caps`) list `NODE+notify` (filtered notifications, XEP-0163 §4.3). When a
//! resource comes online (or its capabilities get verified), [`came_online`] sends it the
//! last item of every node it is interested in, of its own account and of the contacts it
//! is subscribed to (`send_last_published_item`, default `on_sub_and_presence`).
//!
//! Limits: an item's payload holds at most [`MAX_ITEM_BYTES`], a node at most
//! [`MAX_ITEMS`] items, an account at most [`MAX_NODES`] nodes; the vhost's storage quota
//! applies, and a vhost frozen for a move refuses writes. Publish-options and node
//! configuration fields other than the four kept here are accepted and ignored.
//!
//! Two conversions ride on publishes: XEP-0398 (an avatar published to
//! `urn:xmpp:avatar:metadata` becomes the vCard's PHOTO) and XEP-0402 `#compat` (the
//! `urn:xmpp:bookmarks:1` node and XEP-0048 bookmarks in private XML storage are kept in
//! step, see `xep::bookmarks`).

use std::{collections::HashSet, sync::Arc};

use crate::{
    control::moving::moving_text,
    node::Node,
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    router::SessionHandle,
    store::{PepConfig, PepItem, Published, StoreError},
    xep::{avatar, blocking, bookmarks, caps},
};

pub const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
pub const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
pub const PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
pub const PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
const NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";

/// The largest payload of one item (an avatar's data included).
pub const MAX_ITEM_BYTES: usize = 256 * 1024;
/// The most items one node keeps (`max_items` = `max`).
pub const MAX_ITEMS: i64 = 256;
/// The most nodes one account has.
pub const MAX_NODES: i64 = 128;

/// The features advertised on an account's disco#info (PEP and its conversions), each
/// tested.
pub const ACCOUNT_FEATURES: &[&str] = &[
    avatar::CONVERSION,
    bookmarks::COMPAT,
    "http://jabber.org/protocol/pubsub#access-open",
    "http://jabber.org/protocol/pubsub#access-presence",
    "http://jabber.org/protocol/pubsub#access-whitelist",
    "http://jabber.org/protocol/pubsub#auto-create",
    "http://jabber.org/protocol/pubsub#config-node",
    "http://jabber.org/protocol/pubsub#delete-nodes",
    "http://jabber.org/protocol/pubsub#filtered-notifications",
    "http://jabber.org/protocol/pubsub#item-ids",
    "http://jabber.org/protocol/pubsub#last-published",
    "http://jabber.org/protocol/pubsub#persistent-items",
    "http://jabber.org/protocol/pubsub#publish",
    "http://jabber.org/protocol/pubsub#publish-options",
    "http://jabber.org/protocol/pubsub#purge-nodes",
    "http://jabber.org/protocol/pubsub#retract-items",
    "http://jabber.org/protocol/pubsub#retrieve-items",
];

/// A node's configuration before anyone asked otherwise.
pub fn default_config() -> PepConfig {
    PepConfig {
        access_model: "presence".into(),
        max_items: 1,
        persist_items: true,
        send_last: "on_sub_and_presence".into(),
    }
}

/// Who asks, as the node's owner sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    Owner,
    /// A contact with a `from` or `both` subscription: sees the owner's presence.
    Subscriber,
    Stranger,
}

/// Whether `who` may read items of a node with this access model.
pub fn may_read(access_model: &str, who: Relation) -> bool {
    matches!(
        (access_model, who),
        (_, Relation::Owner) | ("open", _) | ("presence", Relation::Subscriber)
    )
}

/// Whether a resource gets notifications of `node`: it may read it, it is the owner's
/// or a subscriber's (strangers subscribe explicitly, which PEP here does not offer) and
/// its capabilities ask for them.
pub fn wants_notification(
    access_model: &str,
    who: Relation,
    features: Option<&HashSet<String>>,
    node: &str,
) -> bool {
    who != Relation::Stranger
        && may_read(access_model, who)
        && features.is_some_and(|f| f.contains(&format!("{node}+notify")))
}

/// The fields of a submitted data form (`jabber:x:data`), as (var, values).
fn form_fields(x: &Element) -> Vec<(String, Vec<String>)> {
    x.children()
        .filter(|f| f.is("field", ns::DATA_FORMS))
        .map(|f| {
            (
                f.attr("var").unwrap_or_default().to_string(),
                f.children()
                    .filter(|v| v.is("value", ns::DATA_FORMS))
                    .map(Element::text)
                    .collect(),
            )
        })
        .collect()
}

/// Options asked for in a publish-options or configuration form: each known field set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub access_model: Option<String>,
    pub max_items: Option<i64>,
    pub persist_items: Option<bool>,
    pub send_last: Option<String>,
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// Reads the options of a form of type `form_type`; an error text for a value that is not
/// acceptable. Fields it does not know are ignored.
pub fn parse_options(x: &Element, form_type: &str) -> Result<Options, &'static str> {
    let fields = form_fields(x);
    let declared = fields
        .iter()
        .find(|(var, _)| var == "FORM_TYPE")
        .and_then(|(_, v)| v.first());
    if declared.is_some_and(|t| t != form_type) {
        return Err("The form is of another type.");
    }
    let mut o = Options::default();
    for (var, values) in fields {
        let Some(value) = values.first().map(|v| v.trim().to_string()) else {
            continue;
        };
        match var.as_str() {
            "pubsub#access_model" => {
                if !matches!(value.as_str(), "presence" | "open" | "whitelist") {
                    return Err("The access model is not supported.");
                }
                o.access_model = Some(value);
            }
            "pubsub#max_items" => {
                let n = if value == "max" {
                    MAX_ITEMS
                } else {
                    value.parse().map_err(|_| "max_items is not a number.")?
                };
                if n < 1 {
                    return Err("max_items must be at least 1.");
                }
                // More than a node keeps is as many as it keeps.
                o.max_items = Some(n.min(MAX_ITEMS));
            }
            "pubsub#persist_items" => {
                o.persist_items = Some(parse_bool(&value).ok_or("persist_items is not a boolean.")?)
            }
            "pubsub#send_last_published_item" => {
                if !matches!(value.as_str(), "never" | "on_sub" | "on_sub_and_presence") {
                    return Err("send_last_published_item is not supported.");
                }
                o.send_last = Some(value);
            }
            _ => {}
        }
    }
    Ok(o)
}

impl Options {
    /// `config` with these options applied.
    pub fn apply(&self, config: &PepConfig) -> PepConfig {
        PepConfig {
            access_model: self
                .access_model
                .clone()
                .unwrap_or_else(|| config.access_model.clone()),
            max_items: self.max_items.unwrap_or(config.max_items),
            persist_items: self.persist_items.unwrap_or(config.persist_items),
            send_last: self
                .send_last
                .clone()
                .unwrap_or_else(|| config.send_last.clone()),
        }
    }

    /// Whether an existing node's configuration has every option asked for (XEP-0223 §3:
    /// otherwise the publish fails with precondition-not-met).
    pub fn matches(&self, config: &PepConfig) -> bool {
        self.apply(config) == *config
    }
}

/// The configuration form of a node (XEP-0060 §8.2).
pub fn config_form(config: &PepConfig) -> Element {
    let field = |var: &str, value: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_child(Element::new("value", ns::DATA_FORMS).with_text(value))
    };
    Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "form")
        .with_child(field("FORM_TYPE", NODE_CONFIG).with_attr("type", "hidden"))
        .with_child(
            field("pubsub#access_model", &config.access_model).with_attr("type", "list-single"),
        )
        .with_child(
            field("pubsub#max_items", &config.max_items.to_string())
                .with_attr("type", "text-single"),
        )
        .with_child(
            field(
                "pubsub#persist_items",
                if config.persist_items { "1" } else { "0" },
            )
            .with_attr("type", "boolean"),
        )
        .with_child(
            field("pubsub#send_last_published_item", &config.send_last)
                .with_attr("type", "list-single"),
        )
}

/// A pubsub error: a stanza condition with an optional `pubsub#errors` condition.
fn pubsub_error(
    iq: &Element,
    condition: Condition,
    app: Option<&str>,
    text: Option<&str>,
) -> Element {
    let mut reply = error_reply(iq, condition, text);
    if let (Some(app), Some(error)) = (app, reply.get_child_mut("error", ns::CLIENT)) {
        let mut e = Element::new(app, PUBSUB_ERRORS);
        if app == "unsupported" {
            e.set_attr("feature", "subscribe");
        }
        error.append_child(e);
    }
    reply
}

/// An `<item id>` holding its stored payload, in namespace `ns`.
fn item_element(item: &PepItem, ns: &str) -> Element {
    let mut e = Element::new("item", ns).with_attr("id", item.id.clone());
    if !item.payload.is_empty() {
        match crate::node::parse_stored(&item.payload) {
            Ok(p) => {
                e.append_child(p);
            }
            Err(e) => tracing::warn!(error = %e, "a stored PEP item cannot be read"),
        }
    }
    e
}

/// A notification of `owner`'s node to `to`: `<message type='headline'><event>…`.
fn event_message(owner: &Jid, to: &Jid, payload: Element) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("type", "headline")
        .with_attr("from", owner.to_string())
        .with_attr("to", to.to_string())
        .with_attr("id", format!("pep-{}", crate::im::random_id()))
        .with_child(Element::new("event", PUBSUB_EVENT).with_child(payload))
}

/// How `who` relates to the account `owner` (bare JIDs).
async fn relation(node: &Node, owner: &Jid, who: &Jid) -> Relation {
    if who.bare() == *owner {
        return Relation::Owner;
    }
    if blocking::blocks(node, owner, who).await {
        return Relation::Stranger;
    }
    match node.store.contact(owner, &who.bare()).await {
        Ok(Some(c)) if c.state.subscription.has_from() => Relation::Subscriber,
        Ok(_) => Relation::Stranger,
        Err(e) => {
            tracing::error!(error = %e, "reading a roster for PEP failed");
            Relation::Stranger
        }
    }
}

/// Sends `payload` (an `<items>`, `<purge>` or `<delete>`) to every resource that wants
/// notifications of `owner`'s node `name`.
pub async fn notify(node: &Node, owner: &Jid, name: &str, access_model: &str, payload: &Element) {
    let mut audience: Vec<(Relation, Arc<SessionHandle>)> = node
        .router
        .sessions(owner)
        .into_iter()
        .map(|s| (Relation::Owner, s))
        .collect();
    if access_model != "whitelist"
        && let Ok((_, contacts)) = node.store.roster(owner).await
    {
        for c in contacts.iter().filter(|c| c.state.subscription.has_from()) {
            if !node.is_hosted(c.jid.domain())
                || blocking::blocks(node, owner, &c.jid).await
                || blocking::blocks(node, &c.jid, owner).await
            {
                continue;
            }
            for s in node.router.sessions(&c.jid) {
                audience.push((Relation::Subscriber, s));
            }
        }
    }
    for (who, s) in audience {
        if s.is_available()
            && wants_notification(
                access_model,
                who,
                caps::features_of(node, &s).as_deref(),
                name,
            )
        {
            s.deliver(event_message(owner, &s.jid, payload.clone()));
        }
    }
}

/// A resource came online (or its capabilities were just verified): the last item of each
/// node it wants notifications of, of its own account and of the contacts whose presence
/// it sees.
pub async fn came_online(node: &Node, me: &SessionHandle) {
    let Some(features) = caps::features_of(node, me) else {
        return;
    };
    let mut accounts = vec![(me.bare.clone(), Relation::Owner)];
    if let Ok((_, contacts)) = node.store.roster(&me.bare).await {
        for c in contacts.iter().filter(|c| c.state.subscription.has_to()) {
            if node.is_hosted(c.jid.domain()) && c.jid.node().is_some() {
                accounts.push((c.jid.bare(), Relation::Subscriber));
            }
        }
    }
    for (account, who) in accounts {
        if who != Relation::Owner
            && (blocking::blocks(node, &account, &me.jid).await
                || blocking::blocks(node, &me.bare, &account).await)
        {
            continue;
        }
        send_last_items(node, me, &features, &account, who, "on_sub_and_presence").await;
    }
}

/// `contact` was just allowed to see `owner`'s presence (RFC 6121: a `from` subscription
/// for it): its available resources get the last item of each node they want
/// (`send_last_published_item` other than `never`, XEP-0060 §6.1.7).
pub async fn subscription_approved(node: &Node, owner: &Jid, contact: &Jid) {
    if !node.is_hosted(contact.domain())
        || blocking::blocks(node, owner, contact).await
        || blocking::blocks(node, contact, owner).await
    {
        return;
    }
    for s in node.router.sessions(contact) {
        if let (true, Some(features)) = (s.is_available(), caps::features_of(node, &s)) {
            send_last_items(
                node,
                &s,
                &features,
                &owner.bare(),
                Relation::Subscriber,
                "on_sub",
            )
            .await;
        }
    }
}

/// Sends `me` the last item of each node of `account` it wants, whose
/// `send_last_published_item` is `least` or more (`on_sub` < `on_sub_and_presence`).
async fn send_last_items(
    node: &Node,
    me: &SessionHandle,
    features: &HashSet<String>,
    account: &Jid,
    who: Relation,
    least: &str,
) {
    let Some(user) = account.node() else { return };
    let last = match node.store.pep_last_items(account.domain(), user).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "reading last PEP items failed");
            return;
        }
    };
    for (name, config, item) in last {
        let sent = match least {
            "on_sub" => config.send_last != "never",
            _ => config.send_last == "on_sub_and_presence",
        };
        if !sent || !wants_notification(&config.access_model, who, Some(features), &name) {
            continue;
        }
        let mut m = event_message(
            account,
            &me.jid,
            Element::new("items", PUBSUB_EVENT)
                .with_attr("node", name.clone())
                .with_child(item_element(&item, PUBSUB_EVENT)),
        );
        m.append_child(
            Element::new("delay", ns::DELAY)
                .with_attr("from", account.to_string())
                .with_attr("stamp", crate::node::format_utc(item.published_at)),
        );
        me.deliver(m);
    }
}

/// Answers a `pubsub` or `pubsub#owner` query from `me` addressed to the account `owner`
/// (a bare JID; the sender's own when the iq had no `to`), notifying whoever it concerns.
pub async fn handle(node: &Node, me: &SessionHandle, owner: &Jid, iq: &Element) {
    let reply = answer(node, me, owner, iq).await;
    me.deliver(reply);
}

async fn answer(node: &Node, me: &SessionHandle, owner: &Jid, iq: &Element) -> Element {
    let (Some(user), domain) = (owner.node(), owner.domain()) else {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    };
    if me.bare != *owner && !crate::im::account_exists(node, domain, user).await {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    }
    let Some(query) = iq.children().next() else {
        return error_reply(iq, Condition::BadRequest, None);
    };
    let Some(op) = query.children().find(|c| c.name() != "publish-options") else {
        return error_reply(iq, Condition::BadRequest, None);
    };
    let set = iq.attr("type") == Some("set");
    let owner_only = set || query.ns() == PUBSUB_OWNER;
    if owner_only && me.bare != *owner {
        return error_reply(
            iq,
            Condition::Forbidden,
            Some("Only the account's owner changes its PEP nodes."),
        );
    }
    if set && node.is_frozen(domain) {
        return error_reply(
            iq,
            Condition::ResourceConstraint,
            Some(&moving_text(domain)),
        );
    }
    let Some(name) = op
        .attr("node")
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return pubsub_error(iq, Condition::BadRequest, Some("nodeid-required"), None);
    };
    let result = match (query.ns(), op.name(), set) {
        (PUBSUB, "publish", true) => publish(node, owner, user, &name, query, op, iq).await,
        (PUBSUB, "items", false) => items(node, me, owner, user, &name, op, iq).await,
        (PUBSUB, "retract", true) => retract(node, owner, &name, op, iq).await,
        (PUBSUB_OWNER, "configure", false) => {
            match node.store.pep_config(domain, user, &name).await {
                Ok(Some(config)) => Ok(iq_result(iq).with_child(
                    Element::new("pubsub", PUBSUB_OWNER).with_child(
                        Element::new("configure", PUBSUB_OWNER)
                            .with_attr("node", name.clone())
                            .with_child(config_form(&config)),
                    ),
                )),
                Ok(None) => Ok(error_reply(iq, Condition::ItemNotFound, None)),
                Err(e) => Err(e),
            }
        }
        (PUBSUB_OWNER, "configure", true) => configure(node, user, domain, &name, op, iq).await,
        (PUBSUB_OWNER, "purge" | "delete", true) => {
            let delete = op.name() == "delete";
            let config = node.store.pep_config(domain, user, &name).await;
            match node.store.clear_pep_node(domain, user, &name, delete).await {
                Ok(true) => {
                    if name == bookmarks::NODE {
                        bookmarks::node_changed(node, owner).await;
                    }
                    if let Ok(Some(config)) = config {
                        let event =
                            Element::new(op.name(), PUBSUB_EVENT).with_attr("node", name.clone());
                        notify(node, owner, &name, &config.access_model, &event).await;
                    }
                    Ok(iq_result(iq))
                }
                Ok(false) => Ok(error_reply(iq, Condition::ItemNotFound, None)),
                Err(e) => Err(e),
            }
        }
        (PUBSUB, "subscribe" | "unsubscribe" | "subscriptions" | "options", _) => Ok(pubsub_error(
            iq,
            Condition::FeatureNotImplemented,
            Some("unsupported"),
            Some(
                "PEP here notifies by presence and +notify; explicit subscriptions are not offered.",
            ),
        )),
        _ => Ok(error_reply(iq, Condition::FeatureNotImplemented, None)),
    };
    result.unwrap_or_else(|e| match e {
        StoreError::StorageFull(domain, _) => error_reply(
            iq,
            Condition::ResourceConstraint,
            Some(&crate::im::storage_full_text(
                &domain,
                "the item was not stored",
            )),
        ),
        e => {
            tracing::error!(error = %e, "a PEP request failed");
            error_reply(iq, Condition::InternalServerError, None)
        }
    })
}

async fn publish(
    node: &Node,
    owner: &Jid,
    user: &str,
    name: &str,
    query: &Element,
    op: &Element,
    iq: &Element,
) -> Result<Element, StoreError> {
    let domain = owner.domain();
    let items: Vec<&Element> = op.children().filter(|c| c.is("item", PUBSUB)).collect();
    let [item] = items.as_slice() else {
        return Ok(pubsub_error(
            iq,
            Condition::BadRequest,
            Some(if items.is_empty() {
                "item-required"
            } else {
                "invalid-payload"
            }),
            Some("A PEP publish carries exactly one item."),
        ));
    };
    let payloads: Vec<&Element> = item.children().collect();
    if payloads.len() > 1 {
        return Ok(pubsub_error(
            iq,
            Condition::BadRequest,
            Some("invalid-payload"),
            None,
        ));
    }
    let payload = payloads.first().map(|p| p.to_xml()).unwrap_or_default();
    if payload.len() > MAX_ITEM_BYTES {
        return Ok(pubsub_error(
            iq,
            Condition::NotAcceptable,
            Some("payload-too-big"),
            Some("The item is too large."),
        ));
    }
    let options = match query
        .get_child("publish-options", PUBSUB)
        .and_then(|p| p.get_child("x", ns::DATA_FORMS))
        .map(|x| parse_options(x, PUBLISH_OPTIONS))
        .transpose()
    {
        Ok(o) => o.unwrap_or_default(),
        Err(text) => {
            return Ok(pubsub_error(
                iq,
                Condition::Conflict,
                Some("precondition-not-met"),
                Some(text),
            ));
        }
    };
    let existing = node.store.pep_config(domain, user, name).await?;
    if let Some(config) = &existing
        && !options.matches(config)
    {
        return Ok(pubsub_error(
            iq,
            Condition::Conflict,
            Some("precondition-not-met"),
            Some("The node exists with another configuration than the publish-options ask for."),
        ));
    }
    let config = existing.unwrap_or_else(|| options.apply(&default_config()));
    let id = item
        .attr("id")
        .filter(|i| !i.is_empty())
        .map_or_else(crate::im::random_id, str::to_string);
    let Some(stored) = publish_item(node, owner, name, &config, &id, payload).await? else {
        return Ok(error_reply(
            iq,
            Condition::NotAllowed,
            Some("The account has as many PEP nodes as it may have."),
        ));
    };
    after_publish(node, owner, name, &stored).await;
    Ok(iq_result(iq).with_child(
        Element::new("pubsub", PUBSUB).with_child(
            Element::new("publish", PUBSUB)
                .with_attr("node", name)
                .with_child(Element::new("item", PUBSUB).with_attr("id", id)),
        ),
    ))
}

/// Stores an item of `owner`'s node `name` (created with `config` if new) and notifies
/// whoever wants it; `None` when the node would be one too many.
pub async fn publish_item(
    node: &Node,
    owner: &Jid,
    name: &str,
    config: &PepConfig,
    id: &str,
    payload: String,
) -> Result<Option<PepItem>, StoreError> {
    let user = owner.node().unwrap_or_default();
    let published = node
        .store
        .publish_pep_item(owner.domain(), user, name, config, MAX_NODES, id, &payload)
        .await?;
    if published == Published::TooManyNodes {
        return Ok(None);
    }
    // The configuration it has (an existing node keeps its own).
    let access_model = node
        .store
        .pep_config(owner.domain(), user, name)
        .await?
        .map_or_else(|| config.access_model.clone(), |c| c.access_model);
    let stored = PepItem {
        id: id.to_string(),
        payload,
        published_at: crate::node::unix_now(),
    };
    let event = Element::new("items", PUBSUB_EVENT)
        .with_attr("node", name)
        .with_child(item_element(&stored, PUBSUB_EVENT));
    notify(node, owner, name, &access_model, &event).await;
    Ok(Some(stored))
}

/// Retracts an item of `owner`'s node `name`, notifying whoever wants it when `tell`;
/// false if there was no such item.
pub async fn retract_item(
    node: &Node,
    owner: &Jid,
    name: &str,
    id: &str,
    tell: bool,
) -> Result<bool, StoreError> {
    let user = owner.node().unwrap_or_default();
    let Some(config) = node.store.pep_config(owner.domain(), user, name).await? else {
        return Ok(false);
    };
    if !node
        .store
        .retract_pep_item(owner.domain(), user, name, id)
        .await?
    {
        return Ok(false);
    }
    if tell {
        let event = Element::new("items", PUBSUB_EVENT)
            .with_attr("node", name)
            .with_child(Element::new("retract", PUBSUB_EVENT).with_attr("id", id));
        notify(node, owner, name, &config.access_model, &event).await;
    }
    Ok(true)
}

/// The conversions a change of some nodes calls for: XEP-0398 (avatar → vCard) and
/// XEP-0402 #compat (bookmarks → private storage).
async fn after_publish(node: &Node, owner: &Jid, name: &str, item: &PepItem) {
    match name {
        avatar::METADATA => avatar::metadata_published(node, owner, item).await,
        bookmarks::NODE => bookmarks::node_changed(node, owner).await,
        _ => {}
    }
}

async fn items(
    node: &Node,
    me: &SessionHandle,
    owner: &Jid,
    user: &str,
    name: &str,
    op: &Element,
    iq: &Element,
) -> Result<Element, StoreError> {
    let Some(config) = node.store.pep_config(owner.domain(), user, name).await? else {
        return Ok(error_reply(iq, Condition::ItemNotFound, None));
    };
    let who = relation(node, owner, &me.jid).await;
    if !may_read(&config.access_model, who) {
        let app = match config.access_model.as_str() {
            "presence" => "presence-subscription-required",
            _ => "closed-node",
        };
        return Ok(pubsub_error(iq, Condition::NotAuthorized, Some(app), None));
    }
    let ids: Vec<String> = op
        .children()
        .filter(|c| c.is("item", PUBSUB))
        .filter_map(|c| c.attr("id").map(str::to_string))
        .collect();
    let max = op.attr("max_items").and_then(|m| m.parse().ok());
    let found = node
        .store
        .pep_items(owner.domain(), user, name, &ids, max)
        .await?;
    let mut list = Element::new("items", PUBSUB).with_attr("node", name);
    for item in &found {
        list.append_child(item_element(item, PUBSUB));
    }
    Ok(iq_result(iq).with_child(Element::new("pubsub", PUBSUB).with_child(list)))
}

async fn retract(
    node: &Node,
    owner: &Jid,
    name: &str,
    op: &Element,
    iq: &Element,
) -> Result<Element, StoreError> {
    let Some(id) = op
        .get_child("item", PUBSUB)
        .and_then(|i| i.attr("id"))
        .map(str::to_string)
    else {
        return Ok(pubsub_error(
            iq,
            Condition::BadRequest,
            Some("item-required"),
            None,
        ));
    };
    let tell = matches!(op.attr("notify"), Some("1" | "true"));
    if !retract_item(node, owner, name, &id, tell).await? {
        return Ok(error_reply(iq, Condition::ItemNotFound, None));
    }
    if name == bookmarks::NODE {
        bookmarks::node_changed(node, owner).await;
    }
    Ok(iq_result(iq))
}

async fn configure(
    node: &Node,
    user: &str,
    domain: &str,
    name: &str,
    op: &Element,
    iq: &Element,
) -> Result<Element, StoreError> {
    let Some(config) = node.store.pep_config(domain, user, name).await? else {
        return Ok(error_reply(iq, Condition::ItemNotFound, None));
    };
    let Some(x) = op.get_child("x", ns::DATA_FORMS) else {
        return Ok(error_reply(iq, Condition::BadRequest, None));
    };
    if x.attr("type") == Some("cancel") {
        return Ok(iq_result(iq));
    }
    let options = match parse_options(x, NODE_CONFIG) {
        Ok(o) => o,
        Err(text) => return Ok(error_reply(iq, Condition::NotAcceptable, Some(text))),
    };
    node.store
        .configure_pep_node(domain, user, name, &options.apply(&config))
        .await?;
    Ok(iq_result(iq))
}

/// The disco#items of an account (XEP-0163 §7.2): its nodes `asker` may read, or the
/// items of one of them (`node` set).
pub async fn disco_items(node: &Node, me: &SessionHandle, owner: &Jid, iq: &Element) -> Element {
    let Some(user) = owner.node() else {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    };
    if me.bare != *owner && !crate::im::account_exists(node, owner.domain(), user).await {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    }
    let who = relation(node, owner, &me.jid).await;
    let asked = iq
        .get_child("query", ns::DISCO_ITEMS)
        .and_then(|q| q.attr("node"))
        .map(str::to_string);
    let mut q = Element::new("query", ns::DISCO_ITEMS).with_opt_attr("node", asked.clone());
    let listed = match &asked {
        None => node
            .store
            .pep_nodes(owner.domain(), user)
            .await
            .map(|nodes| {
                nodes
                    .into_iter()
                    .filter(|(_, c)| may_read(&c.access_model, who))
                    .map(|(n, _)| {
                        Element::new("item", ns::DISCO_ITEMS)
                            .with_attr("jid", owner.to_string())
                            .with_attr("node", n)
                    })
                    .collect::<Vec<_>>()
            }),
        Some(name) => match node.store.pep_config(owner.domain(), user, name).await {
            Ok(Some(c)) if may_read(&c.access_model, who) => node
                .store
                .pep_items(owner.domain(), user, name, &[], None)
                .await
                .map(|items| {
                    items
                        .into_iter()
                        .map(|i| {
                            Element::new("item", ns::DISCO_ITEMS)
                                .with_attr("jid", owner.to_string())
                                .with_attr("name", i.id)
                        })
                        .collect()
                }),
            Ok(_) => return error_reply(iq, Condition::ItemNotFound, None),
            Err(e) => Err(e),
        },
    };
    match listed {
        Ok(items) => {
            for i in items {
                q.append_child(i);
            }
            iq_result(iq).with_child(q)
        }
        Err(e) => {
            tracing::error!(error = %e, "listing PEP nodes failed");
            error_reply(iq, Condition::InternalServerError, None)
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

    const DEVICES: &str = "urn:xmpp:omemo:2:devices";

    fn form(form_type: &str, fields: &[(&str, &str)]) -> Element {
        let mut xml = format!(
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>{form_type}</value></field>"
        );
        for (var, value) in fields {
            xml.push_str(&format!(
                "<field var='{var}'><value>{value}</value></field>"
            ));
        }
        xml.push_str("</x>");
        stanza(&xml)
    }

    #[test]
    fn publish_options_apply_to_a_new_node_and_must_match_an_existing_one() {
        let o = parse_options(
            &form(
                PUBLISH_OPTIONS,
                &[
                    ("pubsub#access_model", "open"),
                    ("pubsub#max_items", "max"),
                    ("pubsub#deliver_payloads", "1"),
                ],
            ),
            PUBLISH_OPTIONS,
        )
        .unwrap();
        let created = o.apply(&default_config());
        assert_eq!(created.access_model, "open");
        assert_eq!(created.max_items, MAX_ITEMS);
        assert_eq!(created.send_last, "on_sub_and_presence");
        assert!(o.matches(&created));
        assert!(!o.matches(&default_config()));
        assert!(
            Options::default().matches(&default_config()),
            "no options match any node"
        );
        for bad in [
            ("pubsub#access_model", "authorize"),
            ("pubsub#max_items", "0"),
            ("pubsub#max_items", "many"),
            ("pubsub#persist_items", "perhaps"),
        ] {
            assert!(
                parse_options(&form(PUBLISH_OPTIONS, &[bad]), PUBLISH_OPTIONS).is_err(),
                "{bad:?}"
            );
        }
        assert!(parse_options(&form(NODE_CONFIG, &[]), PUBLISH_OPTIONS).is_err());
        let many = parse_options(
            &form(PUBLISH_OPTIONS, &[("pubsub#max_items", "1000")]),
            PUBLISH_OPTIONS,
        )
        .unwrap();
        assert_eq!(
            many.max_items,
            Some(MAX_ITEMS),
            "clamped to what a node keeps"
        );
    }

    #[test]
    fn access_models_decide_who_reads_and_who_is_notified() {
        use Relation::*;
        for (model, owner, subscriber, stranger) in [
            ("presence", true, true, false),
            ("open", true, true, true),
            ("whitelist", true, false, false),
        ] {
            assert_eq!(may_read(model, Owner), owner, "{model}");
            assert_eq!(may_read(model, Subscriber), subscriber, "{model}");
            assert_eq!(may_read(model, Stranger), stranger, "{model}");
        }
        let notify: HashSet<String> = [format!("{DEVICES}+notify")].into();
        let other: HashSet<String> = ["urn:xmpp:avatar:metadata+notify".to_string()].into();
        assert!(wants_notification(
            "presence",
            Subscriber,
            Some(&notify),
            DEVICES
        ));
        assert!(!wants_notification(
            "presence",
            Subscriber,
            Some(&other),
            DEVICES
        ));
        assert!(
            !wants_notification("presence", Subscriber, None, DEVICES),
            "caps unknown"
        );
        assert!(!wants_notification(
            "whitelist",
            Subscriber,
            Some(&notify),
            DEVICES
        ));
        assert!(!wants_notification(
            "open",
            Stranger,
            Some(&notify),
            DEVICES
        ));
        assert!(wants_notification(
            "whitelist",
            Owner,
            Some(&notify),
            DEVICES
        ));
    }

    /// A presence with caps `ver` whose features are cached as verified.
    fn presence_with_caps(node: &Node, from: &str, ver: &str, features: &[&str]) -> Element {
        node.caps.insert(
            ver.to_string(),
            Arc::new(features.iter().map(|f| f.to_string()).collect()),
        );
        stanza(&format!(
            "<presence xmlns='jabber:client' from='{from}'><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='{ver}'/></presence>"
        ))
    }

    fn publish_iq(id: &str, item: &str, options: &str) -> Element {
        stanza(&format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='{id}'><pubsub xmlns='{PUBSUB}'><publish node='{DEVICES}'><item id='current'><devices xmlns='urn:xmpp:omemo:2'><device id='{item}'/></devices></item></publish>{options}</pubsub></iq>"
        ))
    }

    fn events(stanzas: &[Element]) -> Vec<&Element> {
        stanzas
            .iter()
            .filter(|s| s.name() == "message" && s.has_child("event", PUBSUB_EVENT))
            .collect()
    }

    #[tokio::test]
    async fn a_publish_reaches_subscribed_resources_that_asked_for_it_and_the_last_item_comes_at_login()
     {
        let (node, _dir) = node_with_spec(
            json!({"domain": "example.com", "generation": 1}),
            &["alice", "bob", "carol", "dave"],
        )
        .await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        let (carol, mut to_carol) = bind(&node, "carol@example.com/pc");
        let (dave, mut to_dave) = bind(&node, "dave@example.com/pc");
        // bob and carol see alice's presence; dave does not.
        for (who, jid) in [(&bob, "bob"), (&carol, "carol")] {
            im::handle(&node, who, stanza(&format!("<presence xmlns='jabber:client' from='{jid}@example.com/x' to='alice@example.com' type='subscribe'/>"))).await;
            im::handle(&node, &alice, stanza(&format!("<presence xmlns='jabber:client' from='alice@example.com/desk' to='{jid}@example.com' type='subscribed'/>"))).await;
        }
        let wants = format!("{DEVICES}+notify");
        im::handle(
            &node,
            &alice,
            presence_with_caps(&node, "alice@example.com/desk", "A", &[]),
        )
        .await;
        im::handle(
            &node,
            &bob,
            presence_with_caps(&node, "bob@example.com/phone", "B", &[&wants]),
        )
        .await;
        im::handle(
            &node,
            &carol,
            presence_with_caps(&node, "carol@example.com/pc", "C", &[]),
        )
        .await;
        im::handle(
            &node,
            &dave,
            presence_with_caps(&node, "dave@example.com/pc", "B", &[&wants]),
        )
        .await;
        for rx in [&mut to_alice, &mut to_bob, &mut to_carol, &mut to_dave] {
            delivered(rx);
        }

        im::handle(&node, &alice, publish_iq("p1", "1", "")).await;
        let answers = delivered(&mut to_alice);
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(
            answers[0].attr("type"),
            Some("result"),
            "{}",
            answers[0].to_xml()
        );
        let to_b = delivered(&mut to_bob);
        let got = events(&to_b);
        assert_eq!(got.len(), 1, "{to_b:?}");
        assert_eq!(got[0].attr("type"), Some("headline"));
        assert_eq!(got[0].attr("from"), Some("alice@example.com"));
        let items = got[0]
            .get_child("event", PUBSUB_EVENT)
            .and_then(|e| e.get_child("items", PUBSUB_EVENT))
            .unwrap();
        assert_eq!(items.attr("node"), Some(DEVICES));
        assert!(
            items.to_xml().contains("device id=\"1\""),
            "{}",
            items.to_xml()
        );
        assert!(events(&delivered(&mut to_carol)).is_empty(), "no +notify");
        assert!(
            events(&delivered(&mut to_dave)).is_empty(),
            "no subscription"
        );

        // dave may not read a presence node, bob may.
        let get = |from: &str| {
            stanza(&format!(
                "<iq xmlns='jabber:client' from='{from}' to='alice@example.com' type='get' id='g'><pubsub xmlns='{PUBSUB}'><items node='{DEVICES}'/></pubsub></iq>"
            ))
        };
        im::handle(&node, &dave, get("dave@example.com/pc")).await;
        let refused = delivered(&mut to_dave);
        assert_eq!(
            refused[0].attr("type"),
            Some("error"),
            "{}",
            refused[0].to_xml()
        );
        assert!(
            refused[0]
                .to_xml()
                .contains("presence-subscription-required")
        );
        im::handle(&node, &bob, get("bob@example.com/phone")).await;
        let read = delivered(&mut to_bob);
        assert!(
            read[0].to_xml().contains("device id=\"1\""),
            "{}",
            read[0].to_xml()
        );

        // Options that do not match the node: conflict, precondition-not-met.
        let open = format!(
            "<publish-options>{}</publish-options>",
            form(PUBLISH_OPTIONS, &[("pubsub#access_model", "open")]).to_xml()
        );
        im::handle(&node, &alice, publish_iq("p2", "2", &open)).await;
        let refused = delivered(&mut to_alice);
        let xml = refused[0].to_xml();
        assert!(
            xml.contains("<conflict") && xml.contains("precondition-not-met"),
            "{xml}"
        );

        // bob's second resource gets the last item when it comes online.
        let (bob2, mut to_bob2) = bind(&node, "bob@example.com/laptop");
        im::handle(
            &node,
            &bob2,
            presence_with_caps(&node, "bob@example.com/laptop", "B", &[&wants]),
        )
        .await;
        let at_login = delivered(&mut to_bob2);
        let last = events(&at_login);
        assert_eq!(last.len(), 1, "{at_login:?}");
        assert!(last[0].has_child("delay", ns::DELAY));

        // Retract with notify, then the node is empty.
        im::handle(&node, &alice, stanza(&format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='r'><pubsub xmlns='{PUBSUB}'><retract node='{DEVICES}' notify='true'><item id='current'/></retract></pubsub></iq>"
        ))).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
        assert!(
            delivered(&mut to_bob)
                .iter()
                .any(|m| m.to_xml().contains("<retract id=\"current\""))
        );
        assert!(
            node.store
                .pep_items("example.com", "alice", DEVICES, &[], None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn writes_are_the_owners_and_refused_while_the_vhost_moves_and_max_items_keeps_the_newest()
     {
        let (node, _dir) = node_with_spec(
            json!({"domain": "example.com", "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        im::handle(&node, &bob, stanza(&format!(
            "<iq xmlns='jabber:client' from='bob@example.com/phone' to='alice@example.com' type='set' id='x'><pubsub xmlns='{PUBSUB}'><publish node='n'><item/></publish></pubsub></iq>"
        ))).await;
        assert!(delivered(&mut to_bob)[0].to_xml().contains("forbidden"));

        let two = format!(
            "<publish-options>{}</publish-options>",
            form(PUBLISH_OPTIONS, &[("pubsub#max_items", "2")]).to_xml()
        );
        for i in 0..3 {
            im::handle(&node, &alice, stanza(&format!(
                "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='p'><pubsub xmlns='{PUBSUB}'><publish node='n'><item id='i{i}'><x xmlns='y'/></item></publish>{two}</pubsub></iq>"
            ))).await;
            assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
        }
        let ids: Vec<String> = node
            .store
            .pep_items("example.com", "alice", "n", &[], None)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(ids, ["i2", "i1"]);

        // Configure get shows it; disco#items lists the node to its owner.
        im::handle(&node, &alice, stanza(&format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='get' id='c'><pubsub xmlns='{PUBSUB_OWNER}'><configure node='n'/></pubsub></iq>"
        ))).await;
        let config = delivered(&mut to_alice).remove(0).to_xml();
        assert!(
            config.contains("pubsub#max_items") && config.contains("<value>2</value>"),
            "{config}"
        );
        im::handle(&node, &alice, stanza(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' to='alice@example.com' type='get' id='d'><query xmlns='http://jabber.org/protocol/disco#items'/></iq>"
        )).await;
        assert!(delivered(&mut to_alice)[0].to_xml().contains("node=\"n\""));

        node.store
            .set_vhost_move("example.com", None)
            .await
            .unwrap();
        node.reload_vhosts().await.unwrap();
        im::handle(&node, &alice, stanza(&format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='p'><pubsub xmlns='{PUBSUB_OWNER}'><purge node='n'/></pubsub></iq>"
        ))).await;
        assert!(
            delivered(&mut to_alice)[0]
                .to_xml()
                .contains("resource-constraint")
        );
    }

    #[tokio::test]
    async fn configure_purge_and_delete_change_the_node_and_notify_the_owner() {
        let (node, _dir) = node_with_spec(
            json!({"domain": "example.com", "generation": 1}),
            &["alice"],
        )
        .await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let wants = format!("{DEVICES}+notify");
        im::handle(
            &node,
            &alice,
            presence_with_caps(&node, "alice@example.com/desk", "A", &[&wants]),
        )
        .await;
        let ask = |xml: String| {
            let node = node.clone();
            let alice = alice.clone();
            async move { im::handle(&node, &alice, stanza(&xml)).await }
        };
        ask(publish_iq("p1", "1", "").to_xml()).await;
        delivered(&mut to_alice);

        let config_set = format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='c'><pubsub xmlns='{PUBSUB_OWNER}'><configure node='{DEVICES}'>{}</configure></pubsub></iq>",
            form(
                NODE_CONFIG,
                &[("pubsub#access_model", "open"), ("pubsub#max_items", "5")]
            )
            .to_xml()
        );
        ask(config_set).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
        let config = node
            .store
            .pep_config("example.com", "alice", DEVICES)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (config.access_model.as_str(), config.max_items),
            ("open", 5)
        );

        ask(format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='u'><pubsub xmlns='{PUBSUB_OWNER}'><purge node='{DEVICES}'/></pubsub></iq>"
        )).await;
        let out = delivered(&mut to_alice);
        assert!(
            out.iter()
                .any(|s| s.attr("id") == Some("u") && s.attr("type") == Some("result")),
            "{out:?}"
        );
        assert!(
            out.iter().any(|s| s.to_xml().contains("<purge node=")),
            "{out:?}"
        );
        assert!(
            node.store
                .pep_items("example.com", "alice", DEVICES, &[], None)
                .await
                .unwrap()
                .is_empty()
        );

        ask(format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='d'><pubsub xmlns='{PUBSUB_OWNER}'><delete node='{DEVICES}'/></pubsub></iq>"
        )).await;
        let out = delivered(&mut to_alice);
        assert!(
            out.iter().any(|s| s.to_xml().contains("<delete node=")),
            "{out:?}"
        );
        assert!(
            node.store
                .pep_config("example.com", "alice", DEVICES)
                .await
                .unwrap()
                .is_none()
        );
        // A deleted node is gone for purges and reads.
        ask(format!(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='get' id='g'><pubsub xmlns='{PUBSUB}'><items node='{DEVICES}'/></pubsub></iq>"
        )).await;
        assert!(
            delivered(&mut to_alice)[0]
                .to_xml()
                .contains("item-not-found")
        );
    }

    #[tokio::test]
    async fn a_vcard_photo_becomes_the_avatar_and_private_bookmarks_become_pep_items() {
        let (node, _dir) = node_with_spec(
            json!({"domain": "example.com", "generation": 1}),
            &["alice"],
        )
        .await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        im::handle(&node, &alice, stanza(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='v'><vCard xmlns='vcard-temp'><FN>A</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>aGVsbG8=</BINVAL></PHOTO></vCard></iq>",
        )).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
        let id = avatar::image_id(b"hello");
        let meta = node
            .store
            .pep_items("example.com", "alice", avatar::METADATA, &[], None)
            .await
            .unwrap();
        assert_eq!(meta.len(), 1);
        assert!(meta[0].payload.contains(&id), "{}", meta[0].payload);
        let data = node
            .store
            .pep_items("example.com", "alice", avatar::DATA, &[id], None)
            .await
            .unwrap();
        assert!(data[0].payload.contains("aGVsbG8="));

        im::handle(&node, &alice, stanza(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='b'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='a@conference.example.com' autojoin='true'><nick>A</nick></conference><conference jid='b@conference.example.com'/></storage></query></iq>",
        )).await;
        assert_eq!(delivered(&mut to_alice)[0].attr("type"), Some("result"));
        let ids = |node: Arc<Node>| async move {
            let mut ids: Vec<String> = node
                .store
                .pep_items("example.com", "alice", bookmarks::NODE, &[], None)
                .await
                .unwrap()
                .into_iter()
                .map(|i| i.id)
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(
            ids(node.clone()).await,
            ["a@conference.example.com", "b@conference.example.com"]
        );
        let config = node
            .store
            .pep_config("example.com", "alice", bookmarks::NODE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(config.access_model, "whitelist");
        // One bookmark less in private storage: its item is retracted.
        im::handle(&node, &alice, stanza(
            "<iq xmlns='jabber:client' from='alice@example.com/desk' type='set' id='b'><query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'><conference jid='b@conference.example.com'/></storage></query></iq>",
        )).await;
        assert_eq!(ids(node.clone()).await, ["b@conference.example.com"]);
    }

    #[tokio::test]
    async fn a_contact_whose_subscription_is_approved_gets_the_last_items_at_once() {
        let (node, _dir) = node_with_spec(
            json!({"domain": "example.com", "generation": 1}),
            &["alice", "bob"],
        )
        .await;
        let (alice, mut to_alice) = bind(&node, "alice@example.com/desk");
        let (bob, mut to_bob) = bind(&node, "bob@example.com/phone");
        let wants = format!("{DEVICES}+notify");
        im::handle(
            &node,
            &alice,
            presence_with_caps(&node, "alice@example.com/desk", "A", &[]),
        )
        .await;
        im::handle(
            &node,
            &bob,
            presence_with_caps(&node, "bob@example.com/phone", "B", &[&wants]),
        )
        .await;
        im::handle(&node, &alice, publish_iq("p1", "7", "")).await;
        assert!(
            events(&delivered(&mut to_bob)).is_empty(),
            "not subscribed yet"
        );
        im::handle(&node, &bob, stanza("<presence xmlns='jabber:client' from='bob@example.com/phone' to='alice@example.com' type='subscribe'/>")).await;
        im::handle(&node, &alice, stanza("<presence xmlns='jabber:client' from='alice@example.com/desk' to='bob@example.com' type='subscribed'/>")).await;
        delivered(&mut to_alice);
        let out = delivered(&mut to_bob);
        let got = events(&out);
        assert_eq!(got.len(), 1, "{out:?}");
        assert!(got[0].to_xml().contains("device id=\"7\""));
    }
}
