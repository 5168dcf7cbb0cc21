//! In-band registration (XEP-0077) without I/O: reading a `jabber:iq:register` query,
//! the registration form, and the answers to what the node decided.
//!
//! ```text
//!  before authentication (the stream's domain lets people register, TLS is up if required):
//!    <iq type='get'><query/></iq>            ─► instructions, <username/>, <password/>, a form
//!    <iq type='set'><query>name+password</query></iq>
//!        ─► the connection creates the account ─► result, or an error (see Refusal)
//!  after authentication (whatever the switch says; the account is the client's own):
//!    get ─► <registered/> with the user name
//!    set name+password ─► the password changes     set <remove/> ─► the account goes
//! ```
//!
//! [`parse`] turns a query into a [`Request`]; fields come as plain `<username/>` and
//! `<password/>` elements or in the XEP-0004 form [`fields`] offers (`jabber:iq:register`
//! form type, §4). Whatever the node refuses is a [`Refusal`], answered with the stanza error
//! XEP-0077 §3.1 names for it and a sentence for people ([`Refusal::error`]).

use super::{
    element::Element,
    ns,
    stanza::{self, Condition},
};

/// `<register xmlns='http://jabber.org/features/iq-register'/>`, offered in the stream
/// features of a domain that lets people register (§8).
pub fn feature() -> Element {
    Element::new("register", ns::REGISTER_FEATURE)
}

/// What a `jabber:iq:register` query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `get`: which fields to fill in (or, once logged in, what is registered).
    Fields,
    /// `set` with a user name and password: a new account before authentication, a new
    /// password after it (§3.3).
    Set { username: String, password: String },
    /// `set` with `<remove/>`: delete the account (§3.2).
    Remove,
    /// Not something this server can act on; the sentence says why.
    Invalid(&'static str),
}

/// Whether `iq` is a get or set carrying a `jabber:iq:register` query.
pub fn is_register_iq(iq: &Element) -> bool {
    stanza::is_stanza(iq)
        && iq.name() == "iq"
        && matches!(iq.attr("type"), Some("get" | "set"))
        && iq.get_child("query", ns::REGISTER).is_some()
}

/// Reads a `jabber:iq:register` get or set. A missing or empty user name or password is
/// [`Request::Invalid`] (§3.1: required information not provided).
pub fn parse(iq: &Element) -> Request {
    let Some(query) = iq.get_child("query", ns::REGISTER) else {
        return Request::Invalid("The query is not a jabber:iq:register query.");
    };
    if iq.attr("type") == Some("get") {
        return Request::Fields;
    }
    if query.has_child("remove", ns::REGISTER) {
        // §3.2: <remove/> comes alone.
        if query.children().count() != 1 {
            return Request::Invalid("<remove/> must be the only element of the query.");
        }
        return Request::Remove;
    }
    let (username, password) = match query.get_child("x", ns::DATA_FORMS) {
        Some(form) => (form_value(form, "username"), form_value(form, "password")),
        None => (
            query.child_text("username", ns::REGISTER),
            query.child_text("password", ns::REGISTER),
        ),
    };
    match (username, password) {
        (Some(u), _) if u.trim().is_empty() => Request::Invalid("Choose a user name."),
        (None, _) => Request::Invalid("Choose a user name."),
        (_, None) => Request::Invalid("Choose a password."),
        (Some(username), Some(password)) => Request::Set {
            username: username.trim().to_string(),
            password,
        },
    }
}

/// The value of a field of a submitted XEP-0004 form.
fn form_value(form: &Element, var: &str) -> Option<String> {
    form.children()
        .find(|f| f.is("field", ns::DATA_FORMS) && f.attr("var") == Some(var))
        .and_then(|f| f.child_text("value", ns::DATA_FORMS))
}

/// The answer to a `get` before authentication: instructions, the two fields, and the
/// same as an XEP-0004 form for clients that prefer forms (§4).
pub fn fields(domain: &str) -> Element {
    let instructions = format!("Choose a user name and a password for your account at {domain}.");
    let field = |var: &str, kind: &str, label: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_attr("type", kind)
            .with_attr("label", label)
            .with_child(Element::new("required", ns::DATA_FORMS))
    };
    let form = Element::new("x", ns::DATA_FORMS)
        .with_attr("type", "form")
        .with_child(
            Element::new("title", ns::DATA_FORMS).with_text(format!("Register at {domain}")),
        )
        .with_child(Element::new("instructions", ns::DATA_FORMS).with_text(instructions.clone()))
        .with_child(
            Element::new("field", ns::DATA_FORMS)
                .with_attr("var", "FORM_TYPE")
                .with_attr("type", "hidden")
                .with_child(Element::new("value", ns::DATA_FORMS).with_text(ns::REGISTER)),
        )
        .with_child(field("username", "text-single", "User name"))
        .with_child(field("password", "text-private", "Password"));
    Element::new("query", ns::REGISTER)
        .with_child(Element::new("instructions", ns::REGISTER).with_text(instructions))
        .with_child(Element::new("username", ns::REGISTER))
        .with_child(Element::new("password", ns::REGISTER))
        .with_child(form)
}

/// The answer to a `get` after authentication (§3.1, example 3): the account is
/// registered, under this user name.
pub fn registered(username: &str) -> Element {
    Element::new("query", ns::REGISTER)
        .with_child(Element::new("registered", ns::REGISTER))
        .with_child(Element::new("username", ns::REGISTER).with_text(username))
        .with_child(Element::new("password", ns::REGISTER))
}

/// Why the node does not do what a register query asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The domain does not let people create accounts from their app.
    Off { domain: String },
    /// The user name is taken.
    Taken { username: String },
    /// The user name or password breaks the rules; the sentence says which.
    NotAcceptable(String),
    /// The plan's account limit is reached.
    AccountLimit { domain: String, max: i64 },
    /// Too many accounts were created from this address lately.
    RateLimited { retry_after_secs: u64 },
    /// Removal or registration before logging in where it is not possible.
    NotAuthorized(&'static str),
    /// The domain is being moved to another node; the sentence says to try again.
    Moving(String),
    /// The store failed; logged where it happened.
    Internal,
}

impl Refusal {
    /// The stanza error condition (§3.1, §3.2, §3.3) and a sentence for people.
    pub fn condition(&self) -> (Condition, String) {
        match self {
            Refusal::Off { domain } => (
                Condition::NotAllowed,
                format!("{domain} does not let people create accounts from their app."),
            ),
            Refusal::Taken { username } => (
                Condition::Conflict,
                format!("The user name {username} is taken; choose another."),
            ),
            Refusal::NotAcceptable(why) => (Condition::NotAcceptable, why.clone()),
            Refusal::AccountLimit { domain, max } => (
                Condition::ResourceConstraint,
                format!("{domain} has reached its limit of {max} accounts."),
            ),
            // resource-constraint rather than policy-violation: RFC 3920 had no
            // policy-violation, and clients that still use its list (slixmpp) cannot read it.
            Refusal::RateLimited { retry_after_secs } => (
                Condition::ResourceConstraint,
                format!(
                    "Too many accounts were created from your address; try again in {} minutes.",
                    retry_after_secs.div_ceil(60).max(1)
                ),
            ),
            Refusal::NotAuthorized(why) => (Condition::NotAuthorized, (*why).to_string()),
            Refusal::Moving(why) => (Condition::ResourceConstraint, why.clone()),
            Refusal::Internal => (
                Condition::InternalServerError,
                "The account could not be changed; try again later.".into(),
            ),
        }
    }

    /// The error reply to `iq`.
    pub fn error(&self, iq: &Element) -> Element {
        let (condition, text) = self.condition();
        stanza::error_reply(iq, condition, Some(&text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::parse_stored;

    fn iq(xml: &str) -> Element {
        parse_stored(xml).unwrap()
    }

    #[test]
    fn a_get_asks_for_the_fields_and_they_come_plain_and_as_a_form() {
        assert_eq!(
            parse(&iq(
                "<iq type='get' id='r'><query xmlns='jabber:iq:register'/></iq>"
            )),
            Request::Fields
        );
        let xml = fields("example.com").to_xml();
        assert!(xml.contains("<username/><password/>"), "{xml}");
        assert!(xml.contains("at example.com"), "{xml}");
        assert!(
            xml.contains("<field var=\"password\" type=\"text-private\""),
            "{xml}"
        );
        assert!(xml.contains("<value>jabber:iq:register</value>"), "{xml}");
    }

    #[test]
    fn a_set_carries_the_name_and_password_plain_or_in_a_form() {
        let plain = iq(
            "<iq type='set' id='r'><query xmlns='jabber:iq:register'><username> bill </username><password>Calliope</password></query></iq>",
        );
        let expected = Request::Set {
            username: "bill".into(),
            password: "Calliope".into(),
        };
        assert_eq!(parse(&plain), expected);
        let form = iq(
            "<iq type='set' id='r'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>jabber:iq:register</value></field><field var='username'><value>bill</value></field><field var='password'><value>Calliope</value></field></x></query></iq>",
        );
        assert_eq!(parse(&form), expected);
    }

    #[test]
    fn missing_fields_and_a_crowded_remove_are_invalid() {
        for (xml, why) in [
            ("<password>x</password>", "Choose a user name."),
            (
                "<username>  </username><password>x</password>",
                "Choose a user name.",
            ),
            ("<username>bill</username>", "Choose a password."),
            (
                "<remove/><username>bill</username>",
                "<remove/> must be the only element of the query.",
            ),
        ] {
            let request = iq(&format!(
                "<iq type='set' id='r'><query xmlns='jabber:iq:register'>{xml}</query></iq>"
            ));
            assert_eq!(parse(&request), Request::Invalid(why), "{xml}");
        }
        assert_eq!(
            parse(&iq(
                "<iq type='set' id='r'><query xmlns='jabber:iq:register'><remove/></query></iq>"
            )),
            Request::Remove
        );
        // An empty password is read as such; the account rules refuse it.
        assert_eq!(
            parse(&iq(
                "<iq type='set' id='r'><query xmlns='jabber:iq:register'><username>bill</username><password/></query></iq>"
            )),
            Request::Set {
                username: "bill".into(),
                password: String::new()
            }
        );
    }

    #[test]
    fn refusals_carry_the_conditions_xep_0077_names_with_a_sentence() {
        let request = iq("<iq type='set' id='r7'><query xmlns='jabber:iq:register'/></iq>");
        let cases = [
            (
                Refusal::Off {
                    domain: "example.com".into(),
                },
                "<error type=\"cancel\"><not-allowed",
            ),
            (
                Refusal::Taken {
                    username: "bill".into(),
                },
                "<error type=\"cancel\"><conflict",
            ),
            (
                Refusal::NotAcceptable("The password is empty.".into()),
                "<error type=\"modify\"><not-acceptable",
            ),
            (
                Refusal::AccountLimit {
                    domain: "example.com".into(),
                    max: 3,
                },
                "<error type=\"wait\"><resource-constraint",
            ),
            (
                Refusal::RateLimited {
                    retry_after_secs: 61,
                },
                "<error type=\"wait\"><resource-constraint",
            ),
        ];
        for (refusal, expected) in cases {
            let xml = refusal.error(&request).to_xml();
            assert!(xml.contains("id=\"r7\""), "{xml}");
            assert!(xml.contains(expected), "{refusal:?}: {xml}");
            let (_, text) = refusal.condition();
            assert!(xml.contains(&text), "{xml}");
            assert!(text.ends_with('.'), "{text}");
        }
        assert!(
            Refusal::RateLimited {
                retry_after_secs: 61
            }
            .condition()
            .1
            .contains("in 2 minutes")
        );
    }

    #[test]
    fn only_register_gets_and_sets_are_register_iqs() {
        assert!(is_register_iq(&iq(
            "<iq type='get' id='r'><query xmlns='jabber:iq:register'/></iq>"
        )));
        assert!(!is_register_iq(&iq(
            "<iq type='result' id='r'><query xmlns='jabber:iq:register'/></iq>"
        )));
        assert!(!is_register_iq(&iq(
            "<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>"
        )));
    }
}
