//! Services on subdomains of a vhost: `conference.<vhost>` (XEP-0045 group chat),
//! `upload.<vhost>` (XEP-0363 HTTP file upload) and `proxy.<vhost>` (XEP-0065 SOCKS5
//! bytestreams), one [`Kind`] each. `im` asks [`service_of`] about a stanza's `to` domain before it bounces a
//! domain it does not host: a subdomain of a hosted vhost whose spec switches the service
//! on goes to [`handle`], which hands it to the service's module. The vhost's disco#items
//! lists its services ([`disco_items`]), as XEP-0030 §4.2 has servers announce them.

use crate::{
    node::Node,
    proto::{element::Element, jid::Jid, ns},
    router::SessionHandle,
    xep::{muc, proxy, upload},
};

/// The label of the group chat service under its vhost.
pub const MUC_PREFIX: &str = "conference.";

/// A kind of service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// XEP-0045 multi-user chat.
    Muc,
    /// XEP-0363 HTTP file upload.
    Upload,
    /// XEP-0065 SOCKS5 bytestreams proxy.
    Proxy,
}

impl Kind {
    const ALL: &[Kind] = &[Kind::Muc, Kind::Upload, Kind::Proxy];

    fn prefix(self) -> &'static str {
        match self {
            Kind::Muc => MUC_PREFIX,
            Kind::Upload => upload::PREFIX,
            Kind::Proxy => proxy::PREFIX,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Muc => "Chatrooms",
            Kind::Upload => "HTTP File Upload",
            Kind::Proxy => "SOCKS5 Bytestreams",
        }
    }

    /// Whether the vhost's spec switches the service on.
    fn enabled(self, node: &Node, vhost: &str) -> bool {
        match self {
            Kind::Muc => muc::enabled(node, vhost),
            Kind::Upload => upload::enabled(node, vhost),
            Kind::Proxy => proxy::enabled(node, vhost),
        }
    }
}

/// A service the node runs for a vhost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub kind: Kind,
    pub vhost: String,
    /// The service's domain (`conference.example.com`).
    pub domain: String,
}

/// The service at `domain`, if it is one of a hosted vhost's and switched on.
pub fn service_of(node: &Node, domain: &str) -> Option<Service> {
    Kind::ALL.iter().find_map(|&kind| {
        let vhost = domain.strip_prefix(kind.prefix())?;
        (node.is_hosted(vhost) && kind.enabled(node, vhost)).then(|| Service {
            kind,
            vhost: vhost.to_string(),
            domain: domain.to_string(),
        })
    })
}

/// Whether `domain` is where a hosted vhost's service would be if its spec switched it on
/// (`conference.<vhost>` with group chat off…): a domain of this node that serves nothing,
/// not one to look for on the network.
pub fn is_switched_off(node: &Node, domain: &str) -> bool {
    Kind::ALL.iter().any(|&kind| {
        domain
            .strip_prefix(kind.prefix())
            .is_some_and(|vhost| node.is_hosted(vhost) && !kind.enabled(node, vhost))
    })
}

/// The service a stanza is addressed to, if any.
pub fn addressed(node: &Node, stanza: &Element) -> Option<Service> {
    let to = stanza.attr("to")?;
    // Most stanzas are for accounts: no JID parsing for them.
    if !Kind::ALL.iter().any(|k| to.contains(k.prefix())) {
        return None;
    }
    let to = Jid::parse(to).ok()?;
    service_of(node, to.domain())
}

/// Handles a stanza from `me` to `service` or an entity under it.
pub async fn handle(node: &Node, me: &SessionHandle, service: Service, stanza: Element) {
    match service.kind {
        Kind::Muc => muc::handle(node, me, &service.vhost, &service.domain, stanza).await,
        Kind::Upload => upload::handle(node, me, &service.vhost, stanza).await,
        Kind::Proxy => proxy::handle(node, me, &service.vhost, stanza).await,
    }
}

/// For services that answer queries only (upload, proxy): the type and payload of an iq
/// get or set to them. Anything else is answered here (service-unavailable for messages
/// and presence, bad-request for an empty iq) or dropped (answers), and is None.
pub fn query<'a>(me: &SessionHandle, stanza: &'a Element) -> Option<(&'a str, &'a Element)> {
    use crate::proto::stanza::{Condition, error_reply};
    let kind = stanza.attr("type").unwrap_or_default();
    if stanza.name() != "iq" {
        if kind != "error" {
            me.deliver(error_reply(stanza, Condition::ServiceUnavailable, None));
        }
        return None;
    }
    if !matches!(kind, "get" | "set") {
        return None; // Answers: these services ask nothing.
    }
    let payload = stanza.children().next();
    if payload.is_none() {
        me.deliver(error_reply(stanza, Condition::BadRequest, None));
    }
    Some(kind).zip(payload)
}

/// The vhost's disco#items: its switched-on services.
pub fn disco_items(node: &Node, vhost: &str) -> Element {
    let mut q = Element::new("query", ns::DISCO_ITEMS);
    for kind in Kind::ALL.iter().filter(|k| k.enabled(node, vhost)) {
        q.append_child(
            Element::new("item", ns::DISCO_ITEMS)
                .with_attr("jid", format!("{}{vhost}", kind.prefix()))
                .with_attr("name", kind.name()),
        );
    }
    q
}

/// A session went unavailable or ended: the services that keep per-session state forget
/// it (it leaves its rooms).
pub async fn session_ended(node: &Node, me: &Jid) {
    muc::session_ended(node, me).await;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::node::testing::{apply_spec, node_with_spec};

    #[tokio::test]
    async fn only_a_hosted_vhosts_switched_on_subdomains_are_services() {
        let (node, _dir) =
            node_with_spec(json!({"domain": "example.com", "generation": 1}), &[]).await;
        let muc = service_of(&node, "conference.example.com").unwrap();
        assert_eq!((muc.kind, muc.vhost.as_str()), (Kind::Muc, "example.com"));
        assert_eq!(service_of(&node, "example.com"), None);
        assert_eq!(service_of(&node, "conference.example.net"), None);
        assert_eq!(
            service_of(&node, "upload.example.com").map(|s| s.kind),
            Some(Kind::Upload)
        );
        // The proxy is listed only where the node runs one (this one listens nowhere).
        assert_eq!(service_of(&node, "proxy.example.com"), None);
        let items = disco_items(&node, "example.com");
        assert_eq!(
            items
                .children()
                .filter_map(|i| i.attr("jid"))
                .collect::<Vec<_>>(),
            ["conference.example.com", "upload.example.com"]
        );
        apply_spec(
            &node,
            json!({"domain": "example.com", "generation": 2, "features": {"muc": false, "upload": false}}),
        )
        .await;
        assert_eq!(service_of(&node, "conference.example.com"), None);
        assert_eq!(disco_items(&node, "example.com").children().count(), 0);
    }
}
