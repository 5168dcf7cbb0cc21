//! Stanza helpers: kinds, error replies with the RFC 6120 §8.3 conditions, and the
//! routing-relevant attributes.

use super::{element::Element, ns};

/// The error types of RFC 6120 §8.3.2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorType {
    Auth,
    Cancel,
    Continue,
    Modify,
    Wait,
}

impl ErrorType {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::Auth => "auth",
            ErrorType::Cancel => "cancel",
            ErrorType::Continue => "continue",
            ErrorType::Modify => "modify",
            ErrorType::Wait => "wait",
        }
    }
}

/// Stanza error conditions (RFC 6120 §8.3.3), with the type the RFC suggests for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Conflict,
    FeatureNotImplemented,
    Forbidden,
    Gone,
    InternalServerError,
    ItemNotFound,
    JidMalformed,
    NotAcceptable,
    NotAllowed,
    NotAuthorized,
    PolicyViolation,
    RecipientUnavailable,
    Redirect,
    RegistrationRequired,
    RemoteServerNotFound,
    RemoteServerTimeout,
    ResourceConstraint,
    ServiceUnavailable,
    SubscriptionRequired,
    UndefinedCondition,
    UnexpectedRequest,
}

impl Condition {
    pub fn name(self) -> &'static str {
        use Condition::*;
        match self {
            BadRequest => "bad-request",
            Conflict => "conflict",
            FeatureNotImplemented => "feature-not-implemented",
            Forbidden => "forbidden",
            Gone => "gone",
            InternalServerError => "internal-server-error",
            ItemNotFound => "item-not-found",
            JidMalformed => "jid-malformed",
            NotAcceptable => "not-acceptable",
            NotAllowed => "not-allowed",
            NotAuthorized => "not-authorized",
            PolicyViolation => "policy-violation",
            RecipientUnavailable => "recipient-unavailable",
            Redirect => "redirect",
            RegistrationRequired => "registration-required",
            RemoteServerNotFound => "remote-server-not-found",
            RemoteServerTimeout => "remote-server-timeout",
            ResourceConstraint => "resource-constraint",
            ServiceUnavailable => "service-unavailable",
            SubscriptionRequired => "subscription-required",
            UndefinedCondition => "undefined-condition",
            UnexpectedRequest => "unexpected-request",
        }
    }

    /// The error type RFC 6120 §8.3.3 gives in its examples for the condition.
    pub fn default_type(self) -> ErrorType {
        use Condition::*;
        match self {
            BadRequest | JidMalformed | NotAcceptable | PolicyViolation | Redirect => {
                ErrorType::Modify
            }
            Forbidden | NotAuthorized | RegistrationRequired | SubscriptionRequired => {
                ErrorType::Auth
            }
            InternalServerError | RecipientUnavailable | RemoteServerTimeout
            | ResourceConstraint | UnexpectedRequest => ErrorType::Wait,
            _ => ErrorType::Cancel,
        }
    }
}

/// Whether an element is a stanza of the client namespace.
pub fn is_stanza(e: &Element) -> bool {
    e.ns() == ns::CLIENT && matches!(e.name(), "message" | "presence" | "iq")
}

/// The reply to `stanza` carrying an error (RFC 6120 §8.3.1): the same kind and id, `to`
/// and `from` swapped, the original payload dropped, an `<error/>` appended.
pub fn error_reply(stanza: &Element, condition: Condition, text: Option<&str>) -> Element {
    let mut reply = Element::new(stanza.name(), stanza.ns())
        .with_attr("type", "error")
        .with_opt_attr("id", stanza.attr("id"))
        .with_opt_attr("to", stanza.attr("from"))
        .with_opt_attr("from", stanza.attr("to"));
    let mut error = Element::new("error", stanza.ns())
        .with_attr("type", condition.default_type().as_str())
        .with_child(Element::new(condition.name(), ns::STANZAS_ERRORS));
    if let Some(t) = text {
        error.append_child(
            Element::new("text", ns::STANZAS_ERRORS)
                .with_attr("xml:lang", "en")
                .with_text(t),
        );
    }
    reply.append_child(error);
    reply
}

/// An empty `<iq type='result'/>` answering `iq`.
pub fn iq_result(iq: &Element) -> Element {
    Element::new("iq", iq.ns())
        .with_attr("type", "result")
        .with_opt_attr("id", iq.attr("id"))
        .with_opt_attr("to", iq.attr("from"))
        .with_opt_attr("from", iq.attr("to"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reply_swaps_addresses_and_drops_the_payload() {
        let iq = Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", "q1")
            .with_attr("from", "romeo@example.net/orchard")
            .with_attr("to", "example.net")
            .with_child(Element::new("query", "urn:unknown"));
        let reply = error_reply(&iq, Condition::ServiceUnavailable, Some("No such service."));
        assert_eq!(
            reply.to_xml(),
            "<iq xmlns=\"jabber:client\" type=\"error\" id=\"q1\" to=\"romeo@example.net/orchard\" from=\"example.net\"><error type=\"cancel\"><service-unavailable xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\"/><text xmlns=\"urn:ietf:params:xml:ns:xmpp-stanzas\" xml:lang=\"en\">No such service.</text></error></iq>"
        );
    }

    #[test]
    fn conditions_carry_the_rfcs_types() {
        assert_eq!(Condition::JidMalformed.default_type(), ErrorType::Modify);
        assert_eq!(Condition::NotAuthorized.default_type(), ErrorType::Auth);
        assert_eq!(
            Condition::ResourceConstraint.default_type(),
            ErrorType::Wait
        );
        assert_eq!(Condition::ItemNotFound.default_type(), ErrorType::Cancel);
    }
}
