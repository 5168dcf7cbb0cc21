//! XEP-0157 contact addresses: the addresses a vhost spec lists under `contacts` (kind →
//! URIs) are served in the server's disco#info answer as an XEP-0128 data form of
//! FORM_TYPE `http://jabber.org/network/serverinfo`, one `<kind>-addresses` field per
//! kind that has addresses. A vhost without any serves no form.

use std::collections::BTreeMap;

use crate::proto::{element::Element, ns};

/// The contact form for disco#info, or None when there are no addresses.
pub fn form(contacts: &BTreeMap<String, Vec<String>>) -> Option<Element> {
    let mut fields = contacts
        .iter()
        .filter(|(_, addresses)| !addresses.is_empty())
        .peekable();
    fields.peek()?;
    let value = |v: &str| Element::new("value", ns::DATA_FORMS).with_text(v);
    let mut x = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "result")
        .with_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(value(ns::SERVER_INFO)),
        );
    // A BTreeMap: fields in kind order, so the answer (and its XEP-0115 hash) is stable.
    for (kind, addresses) in fields {
        let mut field = Element::new("field", ns::DATA_FORMS)
            .with_attr("var", format!("{kind}-addresses"))
            .with_attr("type", "list-multi");
        for a in addresses {
            field.append_child(value(a));
        }
        x.append_child(field);
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_addresses_means_no_form() {
        assert!(form(&BTreeMap::new()).is_none());
        assert!(form(&BTreeMap::from([("abuse".into(), vec![])])).is_none());
    }

    #[test]
    fn each_kind_with_addresses_becomes_one_field_after_the_form_type() {
        let contacts = BTreeMap::from([
            (
                "support".to_string(),
                vec![
                    "xmpp:help@example.com".to_string(),
                    "https://example.com/help".to_string(),
                ],
            ),
            (
                "abuse".to_string(),
                vec!["mailto:abuse@example.com".to_string()],
            ),
            ("sales".to_string(), vec![]),
        ]);
        let x = form(&contacts).unwrap();
        assert_eq!(
            x.to_xml(),
            "<x xmlns=\"jabber:x:data\" type=\"result\">\
             <field var=\"FORM_TYPE\" type=\"hidden\"><value>http://jabber.org/network/serverinfo</value></field>\
             <field var=\"abuse-addresses\" type=\"list-multi\"><value>mailto:abuse@example.com</value></field>\
             <field var=\"support-addresses\" type=\"list-multi\"><value>xmpp:help@example.com</value><value>https://example.com/help</value></field>\
             </x>"
        );
    }
}
