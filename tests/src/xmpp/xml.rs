//! Just enough XML for a benchmark client: cut the server's byte stream into the stream
//! header, top-level elements and the stream close ([`Framer`]), and read one element into
//! a small tree with quick-xml ([`El`]). The node writes well-formed XML with no comments,
//! DTDs or processing instructions past the XML declaration; anything else is an error.

use anyhow::{Context, bail};
use quick_xml::{XmlVersion, events::Event};

/// One unit of the server's stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// `<stream:stream …>` (its start tag, as written).
    StreamOpen(String),
    /// A complete top-level element: features, SASL, a stanza.
    Element(El),
    /// `</stream:stream>`.
    StreamClose,
}

/// Splits bytes into [`Frame`]s, however they were chunked.
#[derive(Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Where scanning resumes.
    at: usize,
    /// 0: before the stream header; 1: inside the stream; 2+: inside an element.
    depth: usize,
    /// Where the top-level element being scanned starts.
    start: usize,
}

impl Framer {
    pub fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet part of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// A new stream after STARTTLS or SASL: the old one's state is gone.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            let Some(lt) = self.buf[self.at..].iter().position(|&b| b == b'<') else {
                if self.depth <= 1 {
                    self.check_whitespace(self.buf.len())?;
                    self.consume(self.buf.len());
                }
                return Ok(None);
            };
            let lt = self.at + lt;
            if self.depth <= 1 {
                self.check_whitespace(lt)?;
            }
            let Some(gt) = tag_end(&self.buf[lt..]) else {
                self.at = lt;
                return Ok(None);
            };
            let end = lt + gt + 1;
            let tag = &self.buf[lt..end];
            self.at = end;
            match tag.get(1) {
                Some(b'?') if self.depth == 0 => {
                    self.consume(end);
                }
                Some(b'?' | b'!') => bail!(
                    "unexpected markup from the server: {}",
                    String::from_utf8_lossy(tag)
                ),
                Some(b'/') => {
                    self.depth = self.depth.checked_sub(1).context("a stray end tag")?;
                    match self.depth {
                        0 => {
                            self.consume(end);
                            return Ok(Some(Frame::StreamClose));
                        }
                        1 => {
                            let element = El::parse(utf8(&self.buf[self.start..end])?)?;
                            self.consume(end);
                            return Ok(Some(Frame::Element(element)));
                        }
                        _ => {}
                    }
                }
                _ => {
                    let empty = tag.len() >= 2 && tag[tag.len() - 2] == b'/';
                    match self.depth {
                        0 => {
                            let header = utf8(tag)?.to_string();
                            if empty || !header.starts_with("<stream:stream") {
                                bail!("expected a stream header, got {header}");
                            }
                            self.depth = 1;
                            self.consume(end);
                            return Ok(Some(Frame::StreamOpen(header)));
                        }
                        1 if empty => {
                            let element = El::parse(utf8(tag)?)?;
                            self.consume(end);
                            return Ok(Some(Frame::Element(element)));
                        }
                        1 => {
                            self.start = lt;
                            self.depth = 2;
                        }
                        _ if !empty => self.depth += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    fn check_whitespace(&self, up_to: usize) -> anyhow::Result<()> {
        let text = &self.buf[self.at..up_to];
        if !text.iter().all(u8::is_ascii_whitespace) {
            bail!(
                "text outside any element: {:?}",
                String::from_utf8_lossy(text)
            );
        }
        Ok(())
    }

    fn consume(&mut self, end: usize) {
        self.buf.drain(..end);
        self.at = 0;
        self.start = 0;
    }
}

/// Index of the `>` closing the tag that starts `bytes`, skipping quoted attribute values.
fn tag_end(bytes: &[u8]) -> Option<usize> {
    let mut quote = None;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match (quote, b) {
            (None, b'"' | b'\'') => quote = Some(b),
            (Some(q), _) if b == q => quote = None,
            (None, b'>') => return Some(i),
            _ => {}
        }
    }
    None
}

fn utf8(bytes: &[u8]) -> anyhow::Result<&str> {
    std::str::from_utf8(bytes).context("the server sent invalid UTF-8")
}

/// An element: local name, attributes as written, children, and its own text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct El {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<El>,
    pub text: String,
}

impl El {
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn child(&self, name: &str) -> Option<&El> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Parses one complete element.
    pub fn parse(xml: &str) -> anyhow::Result<El> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut stack: Vec<El> = Vec::new();
        loop {
            let event = reader
                .read_event()
                .with_context(|| format!("parsing {xml}"))?;
            let done = match event {
                Event::Start(ref tag) | Event::Empty(ref tag) => {
                    let empty = matches!(event, Event::Empty(_));
                    let mut el = El {
                        name: tag.local_name().as_ref().to_string(),
                        ..El::default()
                    };
                    for attribute in tag.attributes() {
                        let attribute = attribute.with_context(|| format!("parsing {xml}"))?;
                        el.attrs.push((
                            attribute.key.as_ref().to_string(),
                            attribute
                                .normalized_value(XmlVersion::Implicit1_0)
                                .with_context(|| format!("parsing {xml}"))?
                                .into_owned(),
                        ));
                    }
                    stack.push(el);
                    empty && close(&mut stack)
                }
                Event::End(_) => close(&mut stack),
                Event::Text(text) => {
                    push_text(&mut stack, &text.xml_content(XmlVersion::Implicit1_0))?;
                    false
                }
                Event::CData(data) => {
                    push_text(&mut stack, &data.xml_content(XmlVersion::Implicit1_0))?;
                    false
                }
                Event::GeneralRef(reference) => {
                    let c = match reference.resolve_char_ref()? {
                        Some(c) => c,
                        None => match &*reference {
                            "lt" => '<',
                            "gt" => '>',
                            "amp" => '&',
                            "quot" => '"',
                            "apos" => '\'',
                            other => bail!("unknown entity &{other}; in {xml}"),
                        },
                    };
                    push_text(&mut stack, c.encode_utf8(&mut [0; 4]))?;
                    false
                }
                Event::Eof => bail!("incomplete element: {xml}"),
                other => bail!("unexpected {other:?} in {xml}"),
            };
            if done {
                let root = stack.pop().context("no element")?;
                return Ok(root);
            }
        }
    }
}

/// Closes the innermost element; true when that was the root.
fn close(stack: &mut Vec<El>) -> bool {
    if stack.len() == 1 {
        return true;
    }
    if let Some(el) = stack.pop()
        && let Some(parent) = stack.last_mut()
    {
        parent.children.push(el);
    }
    false
}

fn push_text(stack: &mut [El], text: &str) -> anyhow::Result<()> {
    match stack.last_mut() {
        Some(el) => {
            el.text.push_str(text);
            Ok(())
        }
        None => bail!("text outside the element"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='a>b' version='1.0'>\
        <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features> \n\
        <proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
        <message from='a@b/c' to=\"d@e/f\"><body>1 &lt; 2 &amp; &#x263A;</body></message>\
        </stream:stream>";

    fn frames(chunk: usize) -> Vec<Frame> {
        let mut framer = Framer::default();
        let mut out = vec![];
        for piece in STREAM.as_bytes().chunks(chunk) {
            framer.feed(piece);
            while let Some(f) = framer.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(framer.pending(), 0);
        out
    }

    #[test]
    fn a_stream_is_cut_into_the_same_frames_however_it_is_chunked() {
        let whole = frames(STREAM.len());
        assert_eq!(whole.len(), 5);
        assert!(matches!(&whole[0], Frame::StreamOpen(h) if h.contains("id='a>b'")));
        let Frame::Element(features) = &whole[1] else {
            panic!("{whole:?}")
        };
        assert_eq!(features.name, "features");
        assert!(
            features
                .child("starttls")
                .unwrap()
                .child("required")
                .is_some()
        );
        let Frame::Element(proceed) = &whole[2] else {
            panic!()
        };
        assert_eq!(proceed.name, "proceed");
        assert!(proceed.children.is_empty());
        let Frame::Element(message) = &whole[3] else {
            panic!()
        };
        assert_eq!(message.attr("to"), Some("d@e/f"));
        assert_eq!(message.child("body").unwrap().text, "1 < 2 & \u{263A}");
        assert_eq!(whole[4], Frame::StreamClose);
        for chunk in [1, 2, 3, 7, 64] {
            assert_eq!(frames(chunk), whole, "chunks of {chunk}");
        }
    }

    #[test]
    fn unexpected_markup_is_an_error() {
        let mut framer = Framer::default();
        framer.feed(b"<stream:stream version='1.0'><!-- hi --><a/>");
        assert!(matches!(
            framer.next_frame(),
            Ok(Some(Frame::StreamOpen(_)))
        ));
        assert!(framer.next_frame().is_err());

        let mut framer = Framer::default();
        framer.feed(b"<stream:stream version='1.0'>junk<a/>");
        framer.next_frame().unwrap();
        assert!(framer.next_frame().is_err());
    }
}
