//! RFC 7395 framing: XMPP over WebSocket, translated to and from the byte stream the rest
//! of the node speaks.
//!
//! Over TCP an XMPP stream is one long XML document. Over WebSocket each message is one
//! complete XML document: `<open/>` and `<close/>` (namespace
//! `urn:ietf:params:xml:ns:xmpp-framing`) replace the stream header and the closing
//! `</stream:stream>`, and every other message is one top-level element that declares its
//! own namespaces. So the WebSocket transport needs no protocol code of its own:
//!
//! ```text
//!   message in ──unframe──► bytes for the stream parser (a header for <open/>, the end
//!                           tag for <close/>, the element as is otherwise)
//!   bytes out  ──Framer───► messages (<open/> for a header, <close/> for the end tag,
//!                           one message per top-level element, namespaces declared)
//! ```
//!
//! The same sans-io stream state machine ([`super::c2s`]) serves both transports.

use std::borrow::Cow;

use quick_xml::{
    XmlVersion,
    events::{BytesStart, Event},
    reader::Reader,
};

use super::{element::escape_attr, ns};

/// The namespace of `<open/>` and `<close/>` (RFC 7395 §3.3).
pub const FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// The bytes one incoming WebSocket message stands for in the XMPP stream: `<open/>`
/// becomes a stream header carrying its `to`, `version` and `xml:lang`; `<close/>` becomes
/// `</stream:stream>`; anything else (a stanza, `<auth/>`, …) goes as it is, and the
/// stream parser judges it.
pub fn unframe(message: &str) -> Cow<'_, str> {
    let Some((name, tag)) = root_tag(message) else {
        return Cow::Borrowed(message);
    };
    match name.as_str() {
        "open" => {
            let mut header = format!(
                "<stream:stream xmlns='{}' xmlns:stream='{}'",
                ns::CLIENT,
                ns::STREAM
            );
            for (key, value) in tag {
                if matches!(key.as_str(), "to" | "from" | "version" | "xml:lang" | "id") {
                    header.push_str(&format!(" {key}=\""));
                    escape_attr(&value, &mut header);
                    header.push('"');
                }
            }
            header.push('>');
            Cow::Owned(header)
        }
        "close" => Cow::Borrowed("</stream:stream>"),
        _ => Cow::Borrowed(message),
    }
}

/// The local name and attributes of the message's root, when the root is a framing
/// element (`open` or `close` in [`FRAMING`]).
#[allow(clippy::type_complexity)]
fn root_tag(message: &str) -> Option<(String, Vec<(String, String)>)> {
    let trimmed = message.trim_start();
    if !(trimmed.starts_with("<open") || trimmed.starts_with("<close")) {
        return None;
    }
    let mut reader = Reader::from_str(trimmed);
    let tag = match reader.read_event().ok()? {
        Event::Start(t) | Event::Empty(t) => t,
        _ => return None,
    };
    let name = tag.name().into_inner().to_string();
    if name != "open" && name != "close" {
        return None;
    }
    let mut attributes = vec![];
    let mut framing = false;
    for a in tag.attributes() {
        let a = a.ok()?;
        let key = a.key.into_inner().to_string();
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .ok()?
            .into_owned();
        if key == "xmlns" {
            framing = value == FRAMING;
        } else {
            attributes.push((key, value));
        }
    }
    framing.then_some((name, attributes))
}

/// Cuts the bytes the stream state machine writes into WebSocket messages. Whatever is not
/// a complete top-level construct yet stays buffered until more is written.
#[derive(Default)]
pub struct Framer {
    pending: String,
}

impl Framer {
    /// Adds written bytes (the state machine writes whole UTF-8 strings).
    pub fn write(&mut self, bytes: &[u8]) {
        self.pending.push_str(&String::from_utf8_lossy(bytes));
    }

    /// The complete messages written so far, in order.
    pub fn messages(&mut self) -> Vec<String> {
        if self.pending.is_empty() {
            return vec![];
        }
        let (messages, used) = frame(&self.pending);
        self.pending.drain(..used);
        messages
    }

    /// Whether bytes wait for the rest of their element.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// Splits `out` into messages; returns them and how many bytes they used.
fn frame(out: &str) -> (Vec<String>, usize) {
    let mut reader = Reader::from_str(out);
    let config = reader.config_mut();
    config.check_end_names = false;
    config.allow_unmatched_ends = true;
    config.expand_empty_elements = false;
    let mut messages = vec![];
    let mut used = 0;
    let mut depth = 0usize;
    // Where the current top-level element starts, and the declaration it lacks.
    let mut start = 0;
    let mut lacks: Option<&'static str> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let event = match reader.read_event() {
            Ok(Event::Eof) | Err(_) => break,
            Ok(e) => e,
        };
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(tag) if depth == 0 && tag.name().into_inner() == "stream:stream" => {
                messages.push(open(&tag));
                used = after;
            }
            Event::End(tag) if depth == 0 && tag.name().into_inner() == "stream:stream" => {
                messages.push(format!("<close xmlns='{FRAMING}'/>"));
                used = after;
            }
            Event::Start(tag) => {
                if depth == 0 {
                    start = before;
                    lacks = missing_declaration(&tag);
                }
                depth += 1;
            }
            Event::Empty(tag) if depth == 0 => {
                messages.push(declare(&out[before..after], missing_declaration(&tag)));
                used = after;
            }
            Event::End(_) if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    messages.push(declare(&out[start..after], lacks));
                    used = after;
                }
            }
            // Declarations and whitespace between elements are not messages.
            _ if depth == 0 => used = after,
            _ => {}
        }
    }
    (messages, used)
}

/// `<open/>` answering a stream header, with its `from`, `id`, `version` and `xml:lang`.
fn open(header: &BytesStart<'_>) -> String {
    let mut open = format!("<open xmlns='{FRAMING}'");
    for a in header.attributes().flatten() {
        let key = a.key.into_inner();
        if matches!(key, "from" | "to" | "id" | "version" | "xml:lang")
            && let Ok(value) = a.normalized_value(XmlVersion::Implicit1_0)
        {
            open.push_str(&format!(" {key}=\""));
            escape_attr(&value, &mut open);
            open.push('"');
        }
    }
    open.push_str("/>");
    open
}

/// The namespace declaration a top-level element written inside the stream relies on
/// (RFC 7395 §3.3.3: each message declares its own).
fn missing_declaration(tag: &BytesStart<'_>) -> Option<&'static str> {
    let name = tag.name().into_inner();
    let (wanted, decl) = match name.split_once(':') {
        Some(("stream", _)) => (
            "xmlns:stream",
            " xmlns:stream='http://etherx.jabber.org/streams'",
        ),
        Some(_) => return None,
        None => ("xmlns", " xmlns='jabber:client'"),
    };
    let declared = tag
        .attributes()
        .flatten()
        .any(|a| a.key.into_inner() == wanted);
    (!declared).then_some(decl)
}

/// The element with `decl` added to its start tag.
fn declare(element: &str, decl: Option<&str>) -> String {
    let Some(decl) = decl else {
        return element.to_string();
    };
    let name_end = element[1..]
        .find(|c: char| c.is_whitespace() || c == '>' || c == '/')
        .map_or(element.len(), |i| i + 1);
    let mut out = String::with_capacity(element.len() + decl.len());
    out.push_str(&element[..name_end]);
    out.push_str(decl);
    out.push_str(&element[name_end..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_becomes_a_stream_header_with_its_domain_and_version() {
        let header = unframe(
            "<open xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\" to=\"example.com\" version=\"1.0\"/>",
        );
        assert_eq!(
            header,
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to=\"example.com\" version=\"1.0\">"
        );
    }

    #[test]
    fn a_close_becomes_the_streams_end_tag() {
        assert_eq!(
            unframe("<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>"),
            "</stream:stream>"
        );
    }

    #[test]
    fn stanzas_and_foreign_opens_pass_unchanged() {
        let m = "<message xmlns='jabber:client' to='a@b'><body>hi</body></message>";
        assert_eq!(unframe(m), m);
        let foreign = "<open xmlns='urn:example'/>";
        assert_eq!(unframe(foreign), foreign);
    }

    #[test]
    fn attribute_values_are_escaped_again_in_the_header() {
        let header =
            unframe("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='a&apos;&quot;b'/>");
        assert!(header.ends_with(" to=\"a&apos;&quot;b\">"), "{header}");
    }

    #[test]
    fn a_header_and_features_become_an_open_and_a_features_message() {
        let mut f = Framer::default();
        f.write(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x1' from='example.com' version='1.0' xml:lang='en'><stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>");
        assert_eq!(
            f.messages(),
            vec![
                "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id=\"x1\" from=\"example.com\" version=\"1.0\" xml:lang=\"en\"/>".to_string(),
                "<stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>".to_string(),
            ]
        );
        assert!(f.is_empty());
    }

    #[test]
    fn each_stanza_is_its_own_message_and_declares_jabber_client() {
        let mut f = Framer::default();
        f.write(b"<message to='a@b' id='1'><body>x &amp; y</body></message><presence/><iq xmlns='jabber:client' type='result' id='2'/>");
        assert_eq!(
            f.messages(),
            vec![
                "<message xmlns='jabber:client' to='a@b' id='1'><body>x &amp; y</body></message>",
                "<presence xmlns='jabber:client'/>",
                "<iq xmlns='jabber:client' type='result' id='2'/>",
            ]
        );
    }

    #[test]
    fn an_element_written_in_parts_is_sent_once_complete() {
        let mut f = Framer::default();
        f.write(b"<message to='a@b'><body>hel");
        assert!(f.messages().is_empty());
        assert!(!f.is_empty());
        f.write(b"lo</body></message><r xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(
            f.messages(),
            vec![
                "<message xmlns='jabber:client' to='a@b'><body>hello</body></message>",
                "<r xmlns='urn:xmpp:sm:3'/>",
            ]
        );
        assert!(f.is_empty());
    }

    #[test]
    fn a_stream_error_and_the_end_tag_become_an_error_and_a_close() {
        let mut f = Framer::default();
        f.write(b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>");
        assert_eq!(
            f.messages(),
            vec![
                "<stream:error xmlns:stream='http://etherx.jabber.org/streams'><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
            ]
        );
    }
}
