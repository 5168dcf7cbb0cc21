//! XEP-0054 vcard-temp: each account stores one vCard, which it sets and anyone on the node
//! can read (an empty `<vCard/>` when none is set). A set that would pass the domain's
//! storage quota is refused with `resource-constraint`.

use crate::{
    node::Node,
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    store::StoreError,
};

/// The largest vCard stored (avatars belong in PEP, XEP-0084).
pub const MAX_VCARD_BYTES: usize = 64 * 1024;

/// Answers a vCard get or set from `from` addressed to `owner` (a bare JID).
pub async fn handle(node: &Node, from: &Jid, owner: &Jid, iq: &Element) -> Element {
    let (Some(username), domain) = (owner.node(), owner.domain()) else {
        return error_reply(iq, Condition::ServiceUnavailable, None);
    };
    match iq.attr("type") {
        Some("get") => match node.store.vcard(domain, username).await {
            Ok(stored) => {
                let card = stored
                    .and_then(|xml| crate::node::parse_stored(&xml).ok())
                    .unwrap_or_else(|| Element::new("vCard", ns::VCARD));
                iq_result(iq).with_child(card)
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a vCard failed");
                error_reply(iq, Condition::InternalServerError, None)
            }
        },
        Some("set") => {
            if from.bare() != *owner {
                return error_reply(
                    iq,
                    Condition::Forbidden,
                    Some("Only the owner can change a vCard."),
                );
            }
            let Some(card) = iq.get_child("vCard", ns::VCARD) else {
                return error_reply(iq, Condition::BadRequest, None);
            };
            let xml = card.to_xml();
            if xml.len() > MAX_VCARD_BYTES {
                return error_reply(
                    iq,
                    Condition::NotAcceptable,
                    Some("The vCard is too large."),
                );
            }
            match node.store.set_vcard(domain, username, &xml).await {
                Ok(()) => {
                    // XEP-0398: a new PHOTO becomes the PEP avatar.
                    crate::xep::avatar::vcard_set(node, owner, card).await;
                    iq_result(iq)
                }
                Err(StoreError::StorageFull(domain, _)) => error_reply(
                    iq,
                    Condition::ResourceConstraint,
                    Some(&crate::im::storage_full_text(
                        &domain,
                        "the vCard was not changed",
                    )),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "storing a vCard failed");
                    error_reply(iq, Condition::InternalServerError, None)
                }
            }
        }
        _ => error_reply(iq, Condition::BadRequest, None),
    }
}
