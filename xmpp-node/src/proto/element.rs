//! XML elements as the node handles them: a name in a namespace, attributes, and child
//! nodes. Stanzas are elements; the parser builds them, the stream state machines read and
//! write them, and [`Element::write_to`] serialises them back with correct escaping.
//!
//! Namespaces are resolved: an element knows its namespace URI, not the prefix it was
//! written with. When serialising, `xmlns` is written only where an element's namespace
//! differs from its parent's, so a stanza in a `jabber:client` stream carries none.

use std::fmt;

/// An XML element with resolved namespace.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Element {
    name: String,
    ns: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
}

/// A child of an element: another element or character data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

impl Element {
    /// An empty element `name` in namespace `ns`.
    pub fn new(name: impl Into<String>, ns: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ns: ns.into(),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Adds (or replaces) an attribute; for building.
    pub fn with_attr(
        mut self,
        name: impl Into<String> + AsRef<str>,
        value: impl Into<String>,
    ) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Adds an attribute if `value` is `Some`; for building.
    pub fn with_opt_attr(
        mut self,
        name: impl Into<String> + AsRef<str>,
        value: Option<impl Into<String>>,
    ) -> Self {
        if let Some(v) = value {
            self.set_attr(name, v);
        }
        self
    }

    /// Appends a child element; for building.
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Appends character data; for building.
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.append_text(text);
        self
    }

    /// The local name (`message`, `query`, …).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace URI.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Whether this is `name` in `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn set_ns(&mut self, ns: impl Into<String>) {
        self.ns = ns.into();
    }

    /// Moves this element and every descendant in namespace `from` to namespace `to`: a
    /// stanza's own namespace is its stream's (`jabber:client` inside the node,
    /// `jabber:server` between servers), and so is that of its children without another
    /// (`<body/>`, `<error/>`, `<status/>`…).
    pub fn switch_ns(&mut self, from: &str, to: &str) {
        if self.ns == from {
            self.ns = to.to_string();
        }
        for c in self.children_mut() {
            c.switch_ns(from, to);
        }
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set_attr(&mut self, name: impl Into<String> + AsRef<str>, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name.as_ref()) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.into(), value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let at = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(at).1)
    }

    pub fn attrs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// All child nodes, elements and text, in order.
    pub fn nodes(&self) -> &[Node] {
        &self.children
    }

    /// The child elements, in order.
    pub fn children(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    pub fn children_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element `name` in `ns`.
    pub fn get_child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.children().find(|c| c.is(name, ns))
    }

    pub fn get_child_mut(&mut self, name: &str, ns: &str) -> Option<&mut Element> {
        self.children_mut().find(|c| c.is(name, ns))
    }

    /// Whether a child element `name` in `ns` exists.
    pub fn has_child(&self, name: &str, ns: &str) -> bool {
        self.get_child(name, ns).is_some()
    }

    /// Appends a child element and returns it for further building.
    pub fn append_child(&mut self, child: Element) -> &mut Element {
        self.children.push(Node::Element(child));
        match self.children.last_mut() {
            Some(Node::Element(e)) => e,
            _ => unreachable!("an element was just pushed"),
        }
    }

    /// Appends character data, merging with a preceding text node.
    pub fn append_text(&mut self, text: impl Into<String>) {
        let text = text.into();
        if text.is_empty() {
            return;
        }
        match self.children.last_mut() {
            Some(Node::Text(t)) => t.push_str(&text),
            _ => self.children.push(Node::Text(text)),
        }
    }

    /// Removes the child elements for which `remove` is true.
    pub fn remove_children(&mut self, mut remove: impl FnMut(&Element) -> bool) {
        self.children.retain(|n| match n {
            Node::Element(e) => !remove(e),
            Node::Text(_) => true,
        });
    }

    /// Removes every child node.
    pub fn clear_children(&mut self) {
        self.children.clear();
    }

    /// The concatenated character data directly inside this element.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// The text of the first child `name` in `ns`, if present.
    pub fn child_text(&self, name: &str, ns: &str) -> Option<String> {
        self.get_child(name, ns).map(Element::text)
    }

    /// Serialises the element as it appears inside a parent in namespace `parent_ns`.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns=\"");
            escape_attr(&self.ns, out);
            out.push('"');
        }
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            escape_attr(v, out);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for n in &self.children {
            match n {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_text(t, out),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// The element as a stand-alone XML fragment (with its `xmlns`).
    pub fn to_xml(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out, "");
        out
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_xml())
    }
}

/// Escapes character data.
pub fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
}

/// Escapes an attribute value for double quotes.
pub fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_the_stream_namespace_moves_the_children_of_that_namespace_only() {
        let mut m = Element::new("message", "jabber:client")
            .with_child(Element::new("body", "jabber:client").with_text("hi"))
            .with_child(Element::new(
                "active",
                "http://jabber.org/protocol/chatstates",
            ));
        m.switch_ns("jabber:client", "jabber:server");
        assert_eq!(
            m.to_xml(),
            r#"<message xmlns="jabber:server"><body>hi</body><active xmlns="http://jabber.org/protocol/chatstates"/></message>"#
        );
    }

    #[test]
    fn a_stanza_in_its_streams_namespace_carries_no_xmlns() {
        let msg = Element::new("message", "jabber:client")
            .with_attr("to", "juliet@capulet.example")
            .with_attr("type", "chat")
            .with_child(
                Element::new("body", "jabber:client").with_text("Wherefore <art> thou & \"why\"?"),
            );
        let mut out = String::new();
        msg.write_to(&mut out, "jabber:client");
        assert_eq!(
            out,
            "<message to=\"juliet@capulet.example\" type=\"chat\"><body>Wherefore &lt;art&gt; thou &amp; \"why\"?</body></message>"
        );
    }

    #[test]
    fn a_child_in_another_namespace_declares_it() {
        let iq = Element::new("iq", "jabber:client")
            .with_attr("type", "result")
            .with_attr("id", "a'b\"c")
            .with_child(Element::new("ping", "urn:xmpp:ping"));
        assert_eq!(
            iq.to_xml(),
            "<iq xmlns=\"jabber:client\" type=\"result\" id=\"a&apos;b&quot;c\"><ping xmlns=\"urn:xmpp:ping\"/></iq>"
        );
    }

    #[test]
    fn text_merges_and_children_are_found_by_name_and_namespace() {
        let mut e = Element::new("x", "a");
        e.append_text("one ");
        e.append_text("two");
        e.append_child(Element::new("y", "b")).set_attr("k", "v");
        assert_eq!(e.text(), "one two");
        assert_eq!(e.get_child("y", "b").and_then(|c| c.attr("k")), Some("v"));
        assert!(e.get_child("y", "a").is_none());
        e.remove_children(|c| c.is("y", "b"));
        assert!(!e.has_child("y", "b"));
    }

    #[test]
    fn attributes_are_replaced_not_duplicated() {
        let mut e = Element::new("x", "a").with_attr("id", "1");
        e.set_attr("id", "2");
        assert_eq!(e.attrs().count(), 1);
        assert_eq!(e.remove_attr("id").as_deref(), Some("2"));
        assert_eq!(e.attr("id"), None);
    }
}
