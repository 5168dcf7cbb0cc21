//! XEP-0398 User Avatar to vCard-Based Avatars Conversion (`urn:xmpp:pep-vcard-conversion:0`):
//! one avatar for clients of either kind. When an account publishes XEP-0084 metadata
//! (`urn:xmpp:avatar:metadata`), the image it names is read from the account's
//! `urn:xmpp:avatar:data` node and put in its vCard as PHOTO (empty metadata, "no avatar",
//! removes the PHOTO). The other way, a vCard set with a PHOTO publishes its image to both
//! nodes, unless the metadata already names that image (so the two directions do not feed
//! each other). Failures are logged: the publish or the vCard set that caused them stands.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use sha1::Digest;

use crate::{
    node::{Node, parse_stored},
    proto::{element::Element, jid::Jid, ns},
    store::PepItem,
    xep::pep,
};

pub const DATA: &str = "urn:xmpp:avatar:data";
pub const METADATA: &str = "urn:xmpp:avatar:metadata";
pub const CONVERSION: &str = "urn:xmpp:pep-vcard-conversion:0";

/// The image a metadata payload names for the vCard: the `<info>` without `url` (the one
/// whose data is in PEP), as (id, type); `None` for "no avatar".
pub fn named_image(metadata: &Element) -> Option<(String, String)> {
    metadata
        .children()
        .filter(|c| c.is("info", METADATA) && c.attr("url").is_none())
        .find_map(|i| {
            Some((
                i.attr("id")?.to_string(),
                i.attr("type").unwrap_or("image/png").to_string(),
            ))
        })
}

/// `vcard` with its PHOTO replaced by this image (type, base64), or removed.
pub fn with_photo(mut vcard: Element, photo: Option<(&str, &str)>) -> Element {
    vcard.remove_children(|c| c.is("PHOTO", ns::VCARD));
    if let Some((kind, binval)) = photo {
        vcard.append_child(
            Element::new("PHOTO", ns::VCARD)
                .with_child(Element::new("TYPE", ns::VCARD).with_text(kind))
                .with_child(Element::new("BINVAL", ns::VCARD).with_text(binval)),
        );
    }
    vcard
}

/// The PHOTO of a vCard: (type, decoded bytes).
pub fn photo_of(vcard: &Element) -> Option<(String, Vec<u8>)> {
    let photo = vcard.get_child("PHOTO", ns::VCARD)?;
    let binval: String = photo
        .child_text("BINVAL", ns::VCARD)?
        .split_whitespace()
        .collect();
    let bytes = B64.decode(binval).ok()?;
    let kind = photo
        .child_text("TYPE", ns::VCARD)
        .unwrap_or_else(|| "image/png".into());
    Some((kind, bytes))
}

/// XEP-0084 §4.2: an image's id is the hex SHA-1 of its bytes.
pub fn image_id(bytes: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(bytes))
}

/// Metadata was published: the vCard's PHOTO follows it.
pub async fn metadata_published(node: &Node, owner: &Jid, item: &PepItem) {
    let (Some(user), domain) = (owner.node(), owner.domain()) else {
        return;
    };
    let Ok(metadata) = parse_stored(&item.payload) else {
        return;
    };
    let photo = match named_image(&metadata) {
        None => None,
        Some((id, kind)) => {
            let data = match node
                .store
                .pep_items(domain, user, DATA, &[id], Some(1))
                .await
            {
                Ok(items) => items.into_iter().next(),
                Err(e) => {
                    tracing::error!(error = %e, "reading avatar data failed");
                    return;
                }
            };
            // The data is published first (XEP-0084 §4.1); without it there is no image.
            let Some(binval) = data
                .and_then(|d| parse_stored(&d.payload).ok())
                .map(|d| d.text().split_whitespace().collect::<String>())
            else {
                return;
            };
            Some((kind, binval))
        }
    };
    let card = match node.store.vcard(domain, user).await {
        Ok(stored) => stored
            .and_then(|xml| parse_stored(&xml).ok())
            .unwrap_or_else(|| Element::new("vCard", ns::VCARD)),
        Err(e) => {
            tracing::error!(error = %e, "reading a vCard failed");
            return;
        }
    };
    let card = with_photo(card, photo.as_ref().map(|(k, b)| (k.as_str(), b.as_str())));
    if let Err(e) = node.store.set_vcard(domain, user, &card.to_xml()).await {
        tracing::warn!(error = %e, "the avatar could not be copied into the vCard");
    }
}

/// A vCard was set: its PHOTO, if any and new, is published as the XEP-0084 avatar.
pub async fn vcard_set(node: &Node, owner: &Jid, vcard: &Element) {
    let (Some(user), domain) = (owner.node(), owner.domain()) else {
        return;
    };
    let Some((kind, bytes)) = photo_of(vcard) else {
        return;
    };
    let id = image_id(&bytes);
    let current = node
        .store
        .pep_items(domain, user, METADATA, &[], Some(1))
        .await
        .ok()
        .and_then(|items| items.into_iter().next())
        .and_then(|i| parse_stored(&i.payload).ok())
        .and_then(|m| named_image(&m));
    if current.is_some_and(|(current, _)| current == id) {
        return;
    }
    let config = pep::default_config();
    let data = Element::new("data", DATA).with_text(B64.encode(&bytes));
    let metadata = Element::new("metadata", METADATA).with_child(
        Element::new("info", METADATA)
            .with_attr("id", id.clone())
            .with_attr("bytes", bytes.len().to_string())
            .with_attr("type", kind),
    );
    for (name, payload) in [(DATA, data), (METADATA, metadata)] {
        if let Err(e) = pep::publish_item(node, owner, name, &config, &id, payload.to_xml()).await {
            tracing::warn!(error = %e, "the vCard's photo could not be published as the avatar");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::testing::stanza;

    #[test]
    fn the_image_without_url_is_the_one_put_in_the_vcard() {
        let m = stanza(&format!(
            "<metadata xmlns='{METADATA}'><info id='u' url='https://x/y.png' type='image/png' bytes='1'/><info id='abc' type='image/jpeg' bytes='3'/></metadata>"
        ));
        assert_eq!(named_image(&m), Some(("abc".into(), "image/jpeg".into())));
        assert_eq!(
            named_image(&stanza(&format!("<metadata xmlns='{METADATA}'/>"))),
            None
        );
    }

    #[test]
    fn a_photo_replaces_the_old_one_keeps_the_rest_and_decodes_back() {
        let card = stanza(
            "<vCard xmlns='vcard-temp'><FN>Alice</FN><PHOTO><TYPE>image/gif</TYPE><BINVAL>AAAA</BINVAL></PHOTO></vCard>",
        );
        let card = with_photo(card, Some(("image/png", "aGVs\nbG8=")));
        assert_eq!(card.child_text("FN", ns::VCARD).unwrap(), "Alice");
        assert_eq!(card.children().filter(|c| c.name() == "PHOTO").count(), 1);
        let (kind, bytes) = photo_of(&card).unwrap();
        assert_eq!(
            (kind.as_str(), bytes.as_slice()),
            ("image/png", &b"hello"[..])
        );
        assert_eq!(
            image_id(b"hello"),
            "aaf4c61ddcc5e8a2dabede0f3b482cd9aea9434d"
        );
        assert!(photo_of(&with_photo(card, None)).is_none());
    }
}
