//! The incremental, bounded XMPP stream parser (RFC 6120 §4 and §11).
//!
//! An XMPP stream is one long XML document that never has to end: the root element
//! `<stream:stream>` opens when the client connects and closes when it leaves, and every
//! direct child of the root (a stanza, or `<starttls/>`, `<auth/>`, …) is a unit of work.
//! This module turns the bytes read from a socket into those units:
//!
//! ```text
//!   feed(bytes) ──► buffer ──► one markup construct or text run at a time
//!                                 │  (quick-xml parses each complete tag)
//!                                 ▼
//!                   namespace scopes + element stack (kept across feeds)
//!                                 │
//!                                 ▼
//!   next_event() ◄── StreamOpen(header) | Stanza(Element) | StreamClose
//! ```
//!
//! **Incremental.** Bytes arrive in arbitrary chunks, one byte at a time in the worst case.
//! The parser keeps its state (open elements, namespace bindings, the stanza being built)
//! between calls and only ever re-examines the unfinished tail of the buffer: at most one
//! incomplete tag, or a few bytes of a text run. Text is consumed as it arrives (holding back
//! only a partial `&…;` reference, a partial UTF-8 character, or a `\r`/`]` whose meaning
//! depends on the next byte), and the search for the end of an incomplete tag resumes where
//! it stopped, quote state included. So a 256 KiB stanza fed byte by byte costs time
//! proportional to its size, not to its size squared. quick-xml is handed only complete
//! constructs, each through a fresh `Reader` over exactly those bytes; the stream-level
//! state (which end tag closes which start tag, which prefix means which namespace) is ours.
//!
//! **Bounded.** Everything an attacker controls has a limit, checked while the data
//! accumulates rather than after: the raw size of a stanza (and of input buffered but not
//! yet consumed), the nesting depth, and the attributes per element. A 10 MiB stanza fails
//! once it passes the limit; 10 000 nested elements fail at the 65th.
//!
//! **Restricted.** RFC 6120 §11.1 forbids comments, processing instructions, DTDs and
//! entity references other than the five predefined ones. They are refused as soon as
//! their first bytes are recognised and nothing is ever expanded, so a "billion laughs"
//! document fails at `<!D` without a single entity being defined.
//!
//! **Namespaces** are resolved here: an [`Element`] carries its namespace URI, never a
//! prefix, and `xmlns` declarations are not kept as attributes. Elements without a prefix
//! inherit the stream's content namespace, so `<message/>` in a client stream is
//! `message` in `jabber:client`. Attributes keep their names as written (`xml:lang`); an
//! element with a prefixed attribute (`q:a`) also keeps `xmlns:q`, because [`Element`] has
//! no namespaces for attributes and would otherwise serialise an unbound prefix.
//!
//! Every error maps to the stream error condition the RFC names ([`ParseError::condition`]).
//! After an error the parser stays failed: the stream is over.

use std::collections::HashMap;

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesDecl, BytesStart, Event};
use quick_xml::reader::Reader;

use super::element::Element;
use super::ns;

/// How much an untrusted peer may make the parser hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Raw bytes of one top-level element (a stanza), counted from its `<` to its end tag;
    /// also caps input that is buffered but not yet consumed (an unfinished tag).
    pub max_stanza_bytes: usize,
    /// Element nesting below the stream root: a stanza is at depth 1.
    pub max_depth: usize,
    /// Attributes written in one start tag, namespace declarations included.
    pub max_attributes: usize,
    /// Elements in one stanza: bytes alone do not bound memory, as 256 KiB of `<a/>` would
    /// become tens of thousands of elements.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: 256 * 1024,
            max_depth: 64,
            max_attributes: 64,
            max_elements: 4096,
        }
    }
}

/// What the parser found in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    /// The stream header `<stream:stream …>` arrived (yielded as soon as its start tag is
    /// complete).
    StreamOpen(StreamHeader),
    /// A complete top-level child of the stream (a stanza, or `<starttls/>`, `<auth/>`, …),
    /// yielded when its end tag arrives.
    Stanza(Element),
    /// `</stream:stream>`.
    StreamClose,
}

/// The attributes of a stream header (RFC 6120 §4.7) and its content namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamHeader {
    pub to: Option<String>,
    pub from: Option<String>,
    pub id: Option<String>,
    pub version: Option<String>,
    /// `xml:lang`.
    pub lang: Option<String>,
    /// The default namespace declared on the root: `jabber:client` or `jabber:server`.
    pub default_ns: String,
}

/// Why the stream cannot go on; [`ParseError::condition`] names the stream error to send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The bytes are not well-formed XML (or not namespace-well-formed).
    #[error("not well-formed XML: {0}")]
    NotWellFormed(String),
    /// A construct RFC 6120 §11.1 forbids: comments, processing instructions, DTDs,
    /// entity references other than the predefined ones.
    #[error("{0} are not allowed in XMPP")]
    RestrictedXml(&'static str),
    /// The root is not `stream` in `http://etherx.jabber.org/streams`, or the content
    /// namespace is neither `jabber:client` nor `jabber:server`.
    #[error("the stream root or its content namespace is not an XMPP one")]
    InvalidNamespace,
    /// A prefix was used without being declared.
    #[error("namespace prefix `{0}` is not declared")]
    BadNamespacePrefix(String),
    /// The stream declares an encoding other than UTF-8, or is not valid UTF-8.
    #[error("the stream is not UTF-8")]
    UnsupportedEncoding,
    /// A stanza (or input buffered but not yet consumed) passed `max_stanza_bytes`.
    #[error("a stanza exceeds the size limit")]
    StanzaTooBig,
    /// Elements nest deeper than `max_depth`.
    #[error("elements nest deeper than the limit")]
    TooDeep,
    /// A stanza holds more than `max_elements` elements.
    #[error("a stanza holds too many elements")]
    TooManyElements,
    /// A start tag has more than `max_attributes` attributes.
    #[error("an element has more attributes than the limit")]
    TooManyAttributes,
    /// Well-formed XML the node cannot process (an XML version other than 1.0).
    #[error("unprocessable XML: {0}")]
    BadFormat(String),
}

impl ParseError {
    /// The RFC 6120 §4.9.3 stream error condition (its element name) for this error.
    pub fn condition(&self) -> &'static str {
        match self {
            Self::NotWellFormed(_) => "not-well-formed",
            Self::RestrictedXml(_) => "restricted-xml",
            Self::InvalidNamespace => "invalid-namespace",
            Self::BadNamespacePrefix(_) => "bad-namespace-prefix",
            Self::UnsupportedEncoding => "unsupported-encoding",
            Self::StanzaTooBig
            | Self::TooDeep
            | Self::TooManyAttributes
            | Self::TooManyElements => "policy-violation",
            Self::BadFormat(_) => "bad-format",
        }
    }
}

/// Turns received bytes into [`StreamEvent`]s; see the module documentation.
///
/// Usage: after every [`feed`](Self::feed), call [`next_event`](Self::next_event) until it
/// returns `Ok(None)` (or an error), so that buffered input is always consumed.
#[derive(Debug)]
pub struct StreamParser {
    limits: Limits,
    input: Input,
    tree: Tree,
    /// Set once; every later call returns it again.
    error: Option<ParseError>,
}

impl StreamParser {
    /// A parser waiting for a new stream, with the given limits.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            input: Input::default(),
            tree: Tree::default(),
            error: None,
        }
    }

    /// Appends received bytes. Any chunking works, down to one byte at a time. Bytes fed
    /// after an error are dropped.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.input.compact();
        self.input.buf.extend_from_slice(bytes);
    }

    /// Frees the input buffer and the element stack when nothing is pending, so an idle
    /// connection holds no parser memory (called between reads; the next `feed` allocates).
    pub fn release_idle_memory(&mut self) {
        if self.input.pos == self.input.buf.len() {
            self.input.buf = Vec::new();
            self.input.pos = 0;
        }
        if self.tree.stack.is_empty() {
            self.tree.stack = Vec::new();
        }
    }

    /// The next complete event. `Ok(None)` means "need more input", not an error.
    pub fn next_event(&mut self) -> Result<Option<StreamEvent>, ParseError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        let result = self.step();
        if let Err(error) = &result {
            self.error = Some(error.clone());
            self.input = Input::default();
        }
        result
    }

    /// Restarts the stream after STARTTLS or SASL success (RFC 6120 §4.3.3):
    /// forgets everything, including bytes fed but not yet consumed (after STARTTLS those
    /// are plaintext that must not be trusted); the next bytes start a new stream with a
    /// new header. The limits are kept.
    pub fn reset(&mut self) {
        *self = Self::new(self.limits);
    }

    /// Bytes fed but not yet consumed, for memory accounting.
    pub fn buffered(&self) -> usize {
        self.input.buf.len() - self.input.pos
    }

    /// Consumes input until an event is complete or the input runs out.
    fn step(&mut self) -> Result<Option<StreamEvent>, ParseError> {
        if self.tree.close_pending {
            self.tree.close_pending = false;
            self.tree.phase = Phase::Closed;
            return Ok(Some(StreamEvent::StreamClose));
        }
        loop {
            let tail = &self.input.buf[self.input.pos..];
            let Some(&first) = tail.first() else { break };
            if !self.input.bom_checked {
                match byte_order_mark(tail) {
                    Bom::NeedMore => break,
                    Bom::Utf8 => self.input.pos += UTF8_BOM.len(),
                    Bom::Foreign => return Err(ParseError::UnsupportedEncoding),
                    Bom::None => {}
                }
                self.input.bom_checked = true;
                continue;
            }
            let step = if first == b'<' {
                self.markup()?
            } else {
                self.text()?
            };
            match step {
                Step::Event(event) => return Ok(Some(event)),
                Step::Consumed => {}
                Step::NeedMore => break,
            }
        }
        // Whatever is left is an unfinished tag or text run: it counts toward the stanza
        // it belongs to (or alone, between stanzas), so a peer cannot make us buffer an
        // endless start tag.
        if self.tree.stanza_bytes + self.buffered() > self.limits.max_stanza_bytes {
            return Err(ParseError::StanzaTooBig);
        }
        self.input.compact();
        Ok(None)
    }

    /// Handles the markup construct starting at the `<` under the cursor.
    fn markup(&mut self) -> Result<Step, ParseError> {
        let limits = self.limits;
        let tail = &self.input.buf[self.input.pos..];
        let mut pending = match self.input.pending {
            Some(pending) => pending,
            None => match classify(tail, !self.tree.started)? {
                Some(kind) => Pending {
                    kind,
                    scanned: 1,
                    quote: None,
                },
                None => return Ok(Step::NeedMore),
            },
        };
        let Some(end) = find_markup_end(tail, &mut pending) else {
            self.input.pending = Some(pending);
            return Ok(Step::NeedMore);
        };
        self.input.pending = None;
        let len = end + 1;
        let in_stanza = !self.tree.stack.is_empty();
        let size = if in_stanza {
            self.tree.stanza_bytes + len
        } else {
            len
        };
        if size > limits.max_stanza_bytes {
            return Err(ParseError::StanzaTooBig);
        }

        // quick-xml sees exactly one complete construct; our own checks on its boundaries
        // match its rules, which the position check below confirms.
        let markup = &tail[..len];
        let mut reader = Reader::from_reader(markup);
        let config = reader.config_mut();
        config.check_end_names = false; // the reader is fresh for every tag: we check
        config.allow_unmatched_ends = true;
        config.expand_empty_elements = false;
        let event = reader.read_event().map_err(xml_error)?;
        if reader.buffer_position() != len as u64 {
            return Err(not_well_formed("a tag ends where it should not"));
        }
        let out = match event {
            Event::Start(tag) => self.tree.start(&tag, false, &limits)?,
            Event::Empty(tag) => self.tree.start(&tag, true, &limits)?,
            Event::End(tag) => self.tree.end(tag.name().into_inner())?,
            Event::CData(data) => {
                self.tree.cdata(&data.into_inner())?;
                None
            }
            Event::Decl(decl) => {
                check_declaration(&decl)?;
                None
            }
            Event::Comment(_) => return Err(ParseError::RestrictedXml("comments")),
            Event::PI(_) => return Err(ParseError::RestrictedXml("processing instructions")),
            Event::DocType(_) => return Err(ParseError::RestrictedXml("DTDs")),
            Event::Text(_) | Event::GeneralRef(_) | Event::Eof => {
                return Err(not_well_formed("unexpected content in a tag"));
            }
        };
        self.tree.started = true;
        self.input.pos += len;
        self.tree.stanza_bytes = if self.tree.stack.is_empty() { 0 } else { size };
        Ok(match out {
            Some(event) => Step::Event(event),
            None => Step::Consumed,
        })
    }

    /// Handles the character data under the cursor, up to the next `<` or as much of it as
    /// can be decoded without knowing the bytes still to come.
    fn text(&mut self) -> Result<Step, ParseError> {
        let tail = &self.input.buf[self.input.pos..];
        let (run, terminated) = match tail.iter().position(|&b| b == b'<') {
            Some(at) => (&tail[..at], true),
            None => (tail, false),
        };
        if self.tree.stack.is_empty() {
            // Between stanzas (and around the root) only whitespace may appear: the
            // keepalives clients send. It is dropped.
            if !run.iter().all(|&b| is_xml_whitespace(b)) {
                return Err(not_well_formed("text outside a stanza"));
            }
            self.tree.started = true;
            self.input.pos += run.len();
            return Ok(Step::Consumed);
        }
        let cut = if terminated {
            run.len()
        } else {
            safe_text_cut(run)?
        };
        if cut == 0 {
            return Ok(Step::NeedMore);
        }
        let size = self.tree.stanza_bytes + cut;
        if size > self.limits.max_stanza_bytes {
            return Err(ParseError::StanzaTooBig);
        }
        // Bytes that are not UTF-8 end the stream, but only after the text before them is
        // decoded: the first error is then the same however the input was chunked.
        let (text, valid) = match std::str::from_utf8(&run[..cut]) {
            Ok(text) => (text, true),
            Err(e) => (utf8_prefix(run, e), false),
        };
        self.tree.text(text)?;
        if !valid {
            return Err(ParseError::UnsupportedEncoding);
        }
        self.input.pos += cut;
        self.tree.stanza_bytes = size;
        Ok(Step::Consumed)
    }
}

/// What one parsing step achieved.
enum Step {
    Event(StreamEvent),
    Consumed,
    NeedMore,
}

// ---------------------------------------------------------------------------------------
// The byte buffer and the search for the end of a markup construct.

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Received bytes; `buf[pos..]` is not consumed yet.
#[derive(Debug, Default)]
struct Input {
    buf: Vec<u8>,
    pos: usize,
    /// The construct at `pos` is incomplete; where its search for an end stopped.
    pending: Option<Pending>,
    /// Whether the start of this stream was checked for a byte order mark.
    bom_checked: bool,
}

impl Input {
    /// Drops consumed bytes, but only once they are at least half the buffer, so that the
    /// copying stays proportional to the input (a byte-at-a-time feed of a long tag would
    /// otherwise move the whole tag for every byte).
    fn compact(&mut self) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
            // A past large stanza should not pin its buffer for the connection's lifetime.
            if self.buf.capacity() > 64 * 1024 {
                self.buf.shrink_to(4096);
            }
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// The kind of markup construct being read; fixed by its first few bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MarkupKind {
    /// `<name …>`, `<name …/>` or `</name>`: ends at the first `>` outside quotes.
    Tag,
    /// `<![CDATA[…]]>`.
    CData,
    /// The XML declaration `<?xml …?>`.
    Declaration,
}

/// How far the search for the end of an incomplete construct got, relative to its `<`.
#[derive(Clone, Copy, Debug)]
struct Pending {
    kind: MarkupKind,
    scanned: usize,
    /// For tags: the quote character of the attribute value the scan stopped in.
    quote: Option<u8>,
}

/// Decides what the `<` at the start of `tail` opens, refusing what XMPP forbids as soon as
/// it is recognisable. `Ok(None)`: not enough bytes yet to tell.
fn classify(tail: &[u8], at_stream_start: bool) -> Result<Option<MarkupKind>, ParseError> {
    const CDATA: &[u8] = b"<![CDATA[";
    const XML_DECL: &[u8] = b"<?xml";
    let Some(&second) = tail.get(1) else {
        return Ok(None);
    };
    match second {
        b'!' => match tail.get(2) {
            None => Ok(None),
            Some(b'-') => Err(ParseError::RestrictedXml("comments")),
            Some(b'D' | b'd') => Err(ParseError::RestrictedXml("DTDs")),
            Some(b'[') => {
                let n = tail.len().min(CDATA.len());
                if tail[..n] != CDATA[..n] {
                    Err(not_well_formed("unknown `<![` markup"))
                } else if n < CDATA.len() {
                    Ok(None)
                } else {
                    Ok(Some(MarkupKind::CData))
                }
            }
            Some(_) => Err(not_well_formed("unknown `<!` markup")),
        },
        b'?' => {
            let n = tail.len().min(XML_DECL.len());
            if tail[..n] != XML_DECL[..n] {
                return Err(ParseError::RestrictedXml("processing instructions"));
            }
            match tail.get(XML_DECL.len()) {
                None => Ok(None),
                // An XML declaration is only one at the very start of the stream; later
                // it is a processing instruction with a reserved name.
                Some(&b) if (is_xml_whitespace(b) || b == b'?') && at_stream_start => {
                    Ok(Some(MarkupKind::Declaration))
                }
                Some(_) => Err(ParseError::RestrictedXml("processing instructions")),
            }
        }
        _ => Ok(Some(MarkupKind::Tag)),
    }
}

/// Finds the index of the `>` that ends the construct at the start of `tail`, resuming the
/// search where `pending` says it stopped; on failure, records how far it got.
fn find_markup_end(tail: &[u8], pending: &mut Pending) -> Option<usize> {
    let found = match pending.kind {
        MarkupKind::Tag => {
            // The same rule as quick-xml's element parser: `>` ends the tag unless it is
            // inside a single- or double-quoted attribute value.
            let mut quote = pending.quote;
            let mut found = None;
            for (i, &b) in tail.iter().enumerate().skip(pending.scanned) {
                match (quote, b) {
                    (Some(q), b) if b == q => quote = None,
                    (Some(_), _) => {}
                    (None, b'>') => {
                        found = Some(i);
                        break;
                    }
                    (None, b'"' | b'\'') => quote = Some(b),
                    (None, _) => {}
                }
            }
            pending.quote = quote;
            found
        }
        // Terminators are searched from slightly before the last scanned position, in
        // case the previous chunk ended inside one.
        MarkupKind::CData => find_from(tail, b"]]>", pending.scanned.saturating_sub(2).max(9)),
        MarkupKind::Declaration => find_from(tail, b"?>", pending.scanned.saturating_sub(1).max(5)),
    };
    if found.is_none() {
        pending.scanned = tail.len();
    }
    found
}

/// The index of the last byte of the first `needle` in `haystack[from..]`.
fn find_from(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|at| from + at + needle.len() - 1)
}

enum Bom {
    NeedMore,
    Utf8,
    Foreign,
    None,
}

/// Looks at the first bytes of a stream: a UTF-8 byte order mark is skipped, the marks of
/// UTF-16 and UTF-32 (and the NUL bytes their ASCII characters start with) are refused.
fn byte_order_mark(tail: &[u8]) -> Bom {
    let n = tail.len().min(UTF8_BOM.len());
    if tail[..n] == UTF8_BOM[..n] {
        return if n == UTF8_BOM.len() {
            Bom::Utf8
        } else {
            Bom::NeedMore
        };
    }
    match tail.first() {
        Some(0x00 | 0xFE | 0xFF) => Bom::Foreign,
        _ => Bom::None,
    }
}

/// How much of an unterminated text run can be decoded now. Held back: a reference whose
/// `;` has not arrived, a partial UTF-8 character, a `\r` (its `\n` may follow) and up to
/// two `]` (a `>` may follow, and `]]>` is forbidden in text).
fn safe_text_cut(run: &[u8]) -> Result<usize, ParseError> {
    let mut cut = run.len();
    if let Some(amp) = run.iter().rposition(|&b| b == b'&') {
        // A reference longer than any acceptable one is decoded now, and refused.
        if !run[amp..].contains(&b';') && run.len() - amp < MAX_REFERENCE_LEN {
            cut = amp;
        }
    }
    if let Err(e) = std::str::from_utf8(&run[..cut]) {
        // A partial character waits for its end; an invalid one is reported once the
        // text before it is decoded.
        if e.error_len().is_some() && e.valid_up_to() == 0 {
            return Err(ParseError::UnsupportedEncoding);
        }
        cut = e.valid_up_to();
    }
    if cut > 0 && run[cut - 1] == b'\r' {
        cut -= 1;
    } else {
        for _ in 0..2 {
            if cut > 0 && run[cut - 1] == b']' {
                cut -= 1;
            }
        }
    }
    Ok(cut)
}

/// The valid UTF-8 text before the error `e` found in `bytes`.
fn utf8_prefix(bytes: &[u8], e: std::str::Utf8Error) -> &str {
    std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The tree: namespaces, the element stack and the stream's phases.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    /// Before the stream header.
    #[default]
    Prolog,
    /// Inside `<stream:stream>`.
    Open,
    /// After `</stream:stream>`: only whitespace may follow.
    Closed,
}

/// The parse state that lives across feeds.
#[derive(Debug, Default)]
struct Tree {
    phase: Phase,
    /// Whether anything but a byte order mark was consumed (an XML declaration must come
    /// first).
    started: bool,
    /// The root's name as written (`stream:stream`), which its end tag must repeat.
    root_qname: String,
    scopes: Scopes,
    /// Open elements below the root; the first is the stanza being built.
    stack: Vec<OpenElement>,
    /// Raw bytes of the current stanza consumed so far.
    stanza_bytes: usize,
    /// Elements of the current stanza opened so far.
    stanza_elements: usize,
    /// The root was an empty-element tag: the close follows the open.
    close_pending: bool,
}

#[derive(Debug)]
struct OpenElement {
    /// The name as written, which the end tag must repeat.
    qname: String,
    element: Element,
    /// Prefixes this element declared ("" for the default namespace), undone at its end.
    declared: Vec<String>,
}

impl Tree {
    fn start(
        &mut self,
        tag: &BytesStart<'_>,
        empty: bool,
        limits: &Limits,
    ) -> Result<Option<StreamEvent>, ParseError> {
        match self.phase {
            Phase::Closed => return Err(not_well_formed("an element after the stream closed")),
            Phase::Open if self.stack.len() >= limits.max_depth => return Err(ParseError::TooDeep),
            Phase::Open | Phase::Prolog => {}
        }
        if self.phase == Phase::Open {
            // The stack holds what is open below the root: empty means a new stanza starts.
            self.stanza_elements = if self.stack.is_empty() {
                1
            } else {
                self.stanza_elements + 1
            };
            if self.stanza_elements > limits.max_elements {
                return Err(ParseError::TooManyElements);
            }
        }
        let qname = tag.name().into_inner();
        let (prefix, local) = split_qname(qname)?;
        let (declarations, attributes) = read_attributes(tag, limits.max_attributes)?;

        // Declarations apply to the element that carries them and to its attributes.
        let mut declared = Vec::with_capacity(declarations.len());
        for (declared_prefix, uri) in declarations {
            if self.scopes.declare(declared_prefix, uri)? {
                declared.push(declared_prefix.to_owned());
            }
        }
        let namespace = self.scopes.resolve_element(prefix)?.to_owned();
        let mut qualified: Vec<(&str, &str)> = Vec::new();
        let mut redeclare: Vec<(&str, &str)> = Vec::new();
        for (name, _) in &attributes {
            // Unprefixed attributes are in no namespace; prefixed ones must resolve, and
            // `a:x` and `b:x` are the same attribute if `a` and `b` mean the same.
            if let (Some(attr_prefix), attr_local) = split_qname(name)? {
                let uri = self.scopes.resolve_prefix(attr_prefix)?;
                if qualified.contains(&(uri, attr_local)) {
                    return Err(not_well_formed("an attribute appears twice"));
                }
                qualified.push((uri, attr_local));
                if attr_prefix != "xml" && !redeclare.iter().any(|&(p, _)| p == attr_prefix) {
                    redeclare.push((attr_prefix, uri));
                }
            }
        }

        if self.phase == Phase::Prolog {
            return self
                .open_stream(qname, &namespace, local, attributes, empty)
                .map(Some);
        }
        let mut element = Element::new(local, namespace);
        // `Element` has no namespaces for attributes: a prefixed one keeps its name as
        // written, so its prefix is declared on the element itself (the one exception to
        // dropping declarations). Otherwise the element would serialise, and be routed to
        // another stream, with an unbound prefix.
        for (attr_prefix, uri) in redeclare {
            element.set_attr(format!("xmlns:{attr_prefix}"), uri);
        }
        for (name, value) in attributes {
            element.set_attr(name, value);
        }
        if empty {
            self.scopes.undeclare(&declared);
            return Ok(self.finish(element));
        }
        self.stack.push(OpenElement {
            qname: qname.to_owned(),
            element,
            declared,
        });
        Ok(None)
    }

    /// The root start tag: checks it is an XMPP stream and reads its header.
    fn open_stream(
        &mut self,
        qname: &str,
        namespace: &str,
        local: &str,
        attributes: Vec<(&str, String)>,
        empty: bool,
    ) -> Result<StreamEvent, ParseError> {
        if local != "stream" || namespace != ns::STREAM {
            return Err(ParseError::InvalidNamespace);
        }
        let default_ns = self.scopes.resolve_element(None)?;
        if default_ns != ns::CLIENT && default_ns != ns::SERVER {
            return Err(ParseError::InvalidNamespace);
        }
        let mut header = StreamHeader {
            default_ns: default_ns.to_owned(),
            ..StreamHeader::default()
        };
        for (name, value) in attributes {
            let slot = match name {
                "to" => &mut header.to,
                "from" => &mut header.from,
                "id" => &mut header.id,
                "version" => &mut header.version,
                "xml:lang" => &mut header.lang,
                _ => continue,
            };
            *slot = Some(value);
        }
        self.root_qname = qname.to_owned();
        self.phase = Phase::Open;
        self.close_pending = empty;
        Ok(StreamEvent::StreamOpen(header))
    }

    fn end(&mut self, qname: &str) -> Result<Option<StreamEvent>, ParseError> {
        split_qname(qname)?;
        match self.stack.pop() {
            Some(open) => {
                if open.qname != qname {
                    return Err(not_well_formed(&format!(
                        "`</{}>` closes `<{}>`",
                        excerpt(qname),
                        excerpt(&open.qname)
                    )));
                }
                self.scopes.undeclare(&open.declared);
                Ok(self.finish(open.element))
            }
            None if self.phase == Phase::Open && qname == self.root_qname => {
                self.phase = Phase::Closed;
                Ok(Some(StreamEvent::StreamClose))
            }
            None => Err(not_well_formed(&format!(
                "`</{}>` closes nothing",
                excerpt(qname)
            ))),
        }
    }

    /// A complete element: a stanza if it is top-level, else a child of its parent.
    fn finish(&mut self, element: Element) -> Option<StreamEvent> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.element.append_child(element);
                None
            }
            None => Some(StreamEvent::Stanza(element)),
        }
    }

    /// Escaped character data inside a stanza.
    fn text(&mut self, raw: &str) -> Result<(), ParseError> {
        let mut text = String::new();
        decode_chars(raw, Mode::Text, &mut text)?;
        if let Some(open) = self.stack.last_mut() {
            open.element.append_text(text);
        }
        Ok(())
    }

    /// The content of a CDATA section: character data that needs no unescaping.
    fn cdata(&mut self, raw: &str) -> Result<(), ParseError> {
        let mut text = String::new();
        decode_chars(raw, Mode::CData, &mut text)?;
        match self.stack.last_mut() {
            Some(open) => open.element.append_text(text),
            None if self.phase == Phase::Open && text.chars().all(|c| c.is_ascii_whitespace()) => {}
            None => return Err(not_well_formed("text outside a stanza")),
        }
        Ok(())
    }
}

/// In-scope namespace declarations: for each prefix, a stack of URIs (innermost last).
/// The default namespace is the prefix "".
#[derive(Debug, Default)]
struct Scopes {
    bindings: HashMap<String, Vec<String>>,
}

impl Scopes {
    /// Applies one declaration (`xmlns="…"` has prefix ""); `Ok(false)` if it needs no
    /// undoing (the `xml` prefix, which is predeclared).
    fn declare(&mut self, prefix: &str, uri: String) -> Result<bool, ParseError> {
        const XMLNS: &str = "http://www.w3.org/2000/xmlns/";
        if prefix == "xml" {
            return if uri == ns::XML {
                Ok(false)
            } else {
                Err(not_well_formed("the xml prefix cannot be redeclared"))
            };
        }
        if prefix == "xmlns" || uri == ns::XML || uri == XMLNS {
            return Err(not_well_formed(
                "a reserved namespace or prefix is declared",
            ));
        }
        if !prefix.is_empty() && uri.is_empty() {
            return Err(not_well_formed("a prefix cannot be undeclared in XML 1.0"));
        }
        self.bindings
            .entry(prefix.to_owned())
            .or_default()
            .push(uri);
        Ok(true)
    }

    /// Undoes an element's declarations when it ends.
    fn undeclare(&mut self, prefixes: &[String]) {
        for prefix in prefixes {
            if let Some(uris) = self.bindings.get_mut(prefix) {
                uris.pop();
                if uris.is_empty() {
                    self.bindings.remove(prefix);
                }
            }
        }
    }

    /// The namespace of an element name: a prefix must be declared; no prefix means the
    /// default namespace, or none.
    fn resolve_element(&self, prefix: Option<&str>) -> Result<&str, ParseError> {
        match prefix {
            Some(prefix) => self.resolve_prefix(prefix),
            None => Ok(self.lookup("").unwrap_or("")),
        }
    }

    fn resolve_prefix(&self, prefix: &str) -> Result<&str, ParseError> {
        self.lookup(prefix)
            .ok_or_else(|| ParseError::BadNamespacePrefix(excerpt(prefix).to_owned()))
    }

    fn lookup(&self, prefix: &str) -> Option<&str> {
        if prefix == "xml" {
            return Some(ns::XML);
        }
        self.bindings
            .get(prefix)
            .and_then(|uris| uris.last())
            .map(String::as_str)
    }
}

/// The attributes of a start tag, split into namespace declarations (prefix, URI) and the
/// others (name as written, unescaped value). Counts them before anything else.
#[allow(clippy::type_complexity)]
fn read_attributes<'t>(
    tag: &'t BytesStart<'_>,
    max: usize,
) -> Result<(Vec<(&'t str, String)>, Vec<(&'t str, String)>), ParseError> {
    let mut declarations = Vec::new();
    let mut attributes = Vec::new();
    for (count, attribute) in tag.attributes().enumerate() {
        if count >= max {
            return Err(ParseError::TooManyAttributes);
        }
        let attribute = attribute.map_err(|e| match e {
            AttrError::Duplicated(..) => not_well_formed("an attribute appears twice"),
            e => not_well_formed(&e.to_string()),
        })?;
        let name = attribute.key.into_inner();
        let mut value = String::with_capacity(attribute.value.len());
        decode_chars(&attribute.value, Mode::Attribute, &mut value)?;
        if name == "xmlns" {
            declarations.push(("", value));
        } else if let Some(prefix) = name.strip_prefix("xmlns:") {
            if !is_ncname(prefix) {
                return Err(not_well_formed("an invalid namespace prefix"));
            }
            declarations.push((prefix, value));
        } else {
            attributes.push((name, value));
        }
    }
    Ok((declarations, attributes))
}

/// Checks the XML declaration: XML 1.0 in UTF-8 is all XMPP speaks (RFC 6120 §11.6, §11.8).
fn check_declaration(decl: &BytesDecl<'_>) -> Result<(), ParseError> {
    let version = decl.version().map_err(xml_error)?;
    if version != "1.0" {
        return Err(ParseError::BadFormat(format!(
            "XML version {} is not 1.0",
            excerpt(&version)
        )));
    }
    match decl.encoding() {
        None => Ok(()),
        Some(Ok(encoding)) if encoding.eq_ignore_ascii_case("UTF-8") => Ok(()),
        Some(Ok(_)) => Err(ParseError::UnsupportedEncoding),
        Some(Err(e)) => Err(not_well_formed(&e.to_string())),
    }
}

// ---------------------------------------------------------------------------------------
// Names, characters and references.

/// Splits `prefix:local`, checking both parts are XML names without colons.
fn split_qname(name: &str) -> Result<(Option<&str>, &str), ParseError> {
    let (prefix, local) = match name.split_once(':') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    };
    if !is_ncname(local) || prefix.is_some_and(|p| !is_ncname(p)) {
        return Err(not_well_formed(&format!(
            "`{}` is not a valid name",
            excerpt(name)
        )));
    }
    Ok((prefix, local))
}

/// An XML name without colons (Namespaces in XML 1.0, `NCName`).
fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c != ':' && is_name_start_char(c) => chars.all(|c| c != ':' && is_name_char(c)),
        _ => false,
    }
}

/// XML 1.0 (fifth edition) `NameStartChar`.
fn is_name_start_char(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

/// XML 1.0 (fifth edition) `NameChar`.
fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c,
            '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// XML 1.0 `Char`: what may appear in a document at all, even as a character reference.
fn is_xml_char(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r'
        | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

fn is_xml_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The longest reference worth waiting for (`&#x0010FFFF;` is 12 bytes; named ones other
/// than the predefined five are refused anyway).
const MAX_REFERENCE_LEN: usize = 32;

/// Where character data comes from; decides which characters are special.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    Attribute,
    CData,
}

/// Decodes raw character data into `out`: resolves references (not in CDATA), normalises
/// line ends (and, in attribute values, whitespace to spaces, XML 1.0 §3.3.3), and refuses
/// characters XML forbids.
fn decode_chars(raw: &str, mode: Mode, out: &mut String) -> Result<(), ParseError> {
    let bytes = raw.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let (replacement, skip) = match bytes[i] {
            b'&' if mode != Mode::CData => {
                let name_start = i + 1;
                let window = &bytes[name_start..bytes.len().min(name_start + MAX_REFERENCE_LEN)];
                let Some(len) = window.iter().position(|&b| b == b';') else {
                    return Err(not_well_formed("an `&` that starts no reference"));
                };
                (
                    resolve_reference(&raw[name_start..name_start + len])?,
                    len + 2,
                )
            }
            b'\r' => {
                let skip = if bytes.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                (if mode == Mode::Attribute { ' ' } else { '\n' }, skip)
            }
            b'\n' | b'\t' if mode == Mode::Attribute => (' ', 1),
            b'<' if mode == Mode::Attribute => {
                return Err(not_well_formed("`<` in an attribute value"));
            }
            b'>' if mode == Mode::Text && i >= 2 && &bytes[i - 2..i] == b"]]" => {
                return Err(not_well_formed("`]]>` in text"));
            }
            // U+FFFE and U+FFFF, the only non-characters of the BMP that Rust's `char` allows.
            0xEF if bytes.get(i + 1) == Some(&0xBF)
                && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)) =>
            {
                return Err(not_well_formed("a character XML forbids"));
            }
            b if b < 0x20 && b != b'\t' && b != b'\n' => {
                return Err(not_well_formed("a control character"));
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&raw[copied..i]);
        out.push(replacement);
        i += skip;
        copied = i;
    }
    out.push_str(&raw[copied..]);
    Ok(())
}

/// The character a reference (`amp`, `#60`, `#x1F600`: what is between `&` and `;`)
/// stands for. Only the five predefined entities exist: nothing is ever expanded.
fn resolve_reference(name: &str) -> Result<char, ParseError> {
    match name {
        "lt" => return Ok('<'),
        "gt" => return Ok('>'),
        "amp" => return Ok('&'),
        "apos" => return Ok('\''),
        "quot" => return Ok('"'),
        _ => {}
    }
    let Some(number) = name.strip_prefix('#') else {
        return Err(if is_ncname(name) {
            ParseError::RestrictedXml("entity references")
        } else {
            not_well_formed("a malformed reference")
        });
    };
    let (digits, radix) = match number.strip_prefix('x') {
        Some(hex) => (hex, 16),
        None => (number, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(not_well_formed("a malformed character reference"));
    }
    u32::from_str_radix(digits, radix)
        .ok()
        .and_then(char::from_u32)
        .filter(|&c| is_xml_char(c))
        .ok_or_else(|| not_well_formed("a character reference to a character XML forbids"))
}

// ---------------------------------------------------------------------------------------
// Errors.

fn not_well_formed(why: &str) -> ParseError {
    ParseError::NotWellFormed(why.to_owned())
}

/// Maps a quick-xml error on a complete construct.
fn xml_error(e: quick_xml::Error) -> ParseError {
    match e {
        quick_xml::Error::Encoding(_) => ParseError::UnsupportedEncoding,
        quick_xml::Error::InvalidAttr(AttrError::Duplicated(..)) => {
            not_well_formed("an attribute appears twice")
        }
        e => not_well_formed(&e.to_string()),
    }
}

/// At most 64 bytes of peer-supplied text, for error messages.
fn excerpt(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Parses one stanza written as XML text in the `jabber:client` namespace without `xmlns`
/// (as stored offline, or as written to a client stream).
pub fn parse_stanza(xml: &str) -> Result<super::element::Element, String> {
    let mut parser = StreamParser::new(Limits {
        max_stanza_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    });
    parser.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='stored' version='1.0'>");
    parser.feed(xml.as_bytes());
    loop {
        match parser.next_event().map_err(|e| format!("{e:?}"))? {
            Some(StreamEvent::Stanza(e)) => return Ok(e),
            Some(_) => continue,
            None => return Err("the stanza is incomplete".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::element::Node;

    const HEADER: &str = "<?xml version='1.0'?><stream:stream to='example.com' \
        xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' \
        xml:lang='en'>";

    /// Drains every event, stopping at the first error.
    fn drain(parser: &mut StreamParser) -> Result<Vec<StreamEvent>, ParseError> {
        let mut events = Vec::new();
        while let Some(event) = parser.next_event()? {
            events.push(event);
        }
        Ok(events)
    }

    /// Feeds `chunks` one after the other, draining after each.
    fn parse_chunks<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<Vec<StreamEvent>, ParseError> {
        let mut parser = StreamParser::new(Limits::default());
        let mut events = Vec::new();
        for chunk in chunks {
            parser.feed(chunk);
            events.extend(drain(&mut parser)?);
        }
        Ok(events)
    }

    fn parse(xml: &str) -> Result<Vec<StreamEvent>, ParseError> {
        parse_chunks([xml.as_bytes()])
    }

    fn parse_bytewise(xml: &str) -> Result<Vec<StreamEvent>, ParseError> {
        parse_chunks(xml.as_bytes().chunks(1))
    }

    /// The stanzas of a stream that starts with [`HEADER`].
    fn stanzas(body: &str) -> Vec<Element> {
        let events = parse(&format!("{HEADER}{body}")).unwrap();
        events
            .into_iter()
            .filter_map(|e| match e {
                StreamEvent::Stanza(s) => Some(s),
                _ => None,
            })
            .collect()
    }

    fn error_of(xml: &str) -> ParseError {
        parse(xml).unwrap_err()
    }

    #[test]
    fn a_client_stream_yields_its_header_each_stanza_and_the_close() {
        let xml = format!(
            "{HEADER}<message to='juliet@example.com' type='chat' id='m1'><body>Art thou not Romeo?</body>\
             </message><iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq></stream:stream>"
        );
        let events = parse(&xml).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(
            events[0],
            StreamEvent::StreamOpen(StreamHeader {
                to: Some("example.com".into()),
                from: None,
                id: None,
                version: Some("1.0".into()),
                lang: Some("en".into()),
                default_ns: ns::CLIENT.into(),
            })
        );
        let StreamEvent::Stanza(message) = &events[1] else {
            panic!("{:?}", events[1])
        };
        assert!(message.is("message", ns::CLIENT));
        assert_eq!(message.attr("to"), Some("juliet@example.com"));
        assert_eq!(
            message.child_text("body", ns::CLIENT).as_deref(),
            Some("Art thou not Romeo?")
        );
        let StreamEvent::Stanza(iq) = &events[2] else {
            panic!("{:?}", events[2])
        };
        assert!(iq.is("iq", ns::CLIENT));
        assert!(iq.has_child("ping", ns::PING));
        assert_eq!(events[3], StreamEvent::StreamClose);
    }

    #[test]
    fn the_header_is_yielded_before_any_stanza_arrives() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(HEADER.as_bytes());
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        assert_eq!(parser.next_event(), Ok(None));
        parser.feed(b"<presence/>");
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::Stanza(_)))
        ));
    }

    #[test]
    fn feeding_one_byte_at_a_time_yields_the_same_events() {
        let xml = format!(
            "\u{FEFF}{HEADER}\n<message to='a@b' id='&quot;x&quot;'><body>caf\u{E9} \u{1F600} &amp; &#x1F600; \
             <![CDATA[<raw> & ]]]]>\r\n</body><x xmlns='urn:x' xmlns:y='urn:y' y:k='v'><y:z/></x></message>\
             \n  <presence/>\t</stream:stream>  "
        );
        let whole = parse(&xml).unwrap();
        assert_eq!(whole.len(), 4);
        assert_eq!(parse_bytewise(&xml).unwrap(), whole);
    }

    #[test]
    fn a_stanza_split_at_every_byte_boundary_parses_identically() {
        let body = "<message xml:lang='fr' to='romeo@example.net'><body>a &lt; b &#233;t\u{E9} \u{1F600}\r\n]]</body>\
                    <thread parent='p'>t</thread><stream:error/></message> <iq/></stream:stream>";
        let xml = format!("{HEADER}{body}");
        let expected = parse(&xml).unwrap();
        assert_eq!(expected.len(), 4);
        for at in 0..=xml.len() {
            let (a, b) = xml.as_bytes().split_at(at);
            assert_eq!(
                parse_chunks([a, b]).unwrap(),
                expected,
                "split at byte {at}"
            );
        }
    }

    #[test]
    fn an_error_is_the_same_however_the_bytes_are_chunked() {
        for body in [
            &b"<message><body>a &b \xFF</body></message>"[..],
            b"<message><body>&amp; &#1;\xC3\x28</body></message>",
            b"<message><body>&amp;\xC3\x28 &#1;</body></message>",
            b"<message><body>x]]>y</body></message>",
            b"<message a='1' a='2'/>",
            b"<message><!-- x --></message>",
        ] {
            let xml = [HEADER.as_bytes(), body].concat();
            let whole = parse_chunks([&xml[..]]).unwrap_err();
            assert_eq!(parse_chunks(xml.chunks(1)).unwrap_err(), whole);
            for at in 0..=xml.len() {
                let (a, b) = xml.split_at(at);
                assert_eq!(
                    parse_chunks([a, b]).unwrap_err(),
                    whole,
                    "split at byte {at}"
                );
            }
        }
    }

    #[test]
    fn whitespace_keepalives_between_stanzas_are_ignored() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(HEADER.as_bytes());
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        for _ in 0..100 {
            parser.feed(b" \n\r\t");
            assert_eq!(parser.next_event(), Ok(None));
            assert_eq!(parser.buffered(), 0);
        }
        parser.feed(b"<presence/> ");
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::Stanza(_)))
        ));
        assert_eq!(parser.next_event(), Ok(None));
    }

    #[test]
    fn text_between_stanzas_is_not_well_formed() {
        let error = error_of(&format!("{HEADER}<presence/>hello"));
        assert_eq!(error.condition(), "not-well-formed");
    }

    #[test]
    fn a_prefixed_stream_child_and_a_child_with_its_own_default_namespace_resolve() {
        let all = stanzas(
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
             </stream:features><iq type='set'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>balcony</resource></bind><other/></iq>\
             <p:iq xmlns:p='jabber:client' xmlns:q='urn:q'><q:query q:a='1' b='2'/></p:iq>",
        );
        let features = &all[0];
        assert!(features.is("features", ns::STREAM));
        let starttls = features.get_child("starttls", ns::TLS).unwrap();
        assert!(starttls.has_child("required", ns::TLS));
        let iq = &all[1];
        let bind = iq.get_child("bind", ns::BIND).unwrap();
        assert_eq!(
            bind.child_text("resource", ns::BIND).as_deref(),
            Some("balcony")
        );
        // The child's default namespace ended with it.
        assert!(iq.has_child("other", ns::CLIENT));
        // Declarations are not attributes; prefixes are resolved away.
        let prefixed = &all[2];
        assert!(prefixed.is("iq", ns::CLIENT));
        assert_eq!(prefixed.attrs().count(), 0);
        let query = prefixed.get_child("query", "urn:q").unwrap();
        assert_eq!(query.attr("b"), Some("2"));
    }

    #[test]
    fn a_prefixed_attribute_keeps_its_name_and_the_declaration_of_its_prefix() {
        let all = stanzas(
            "<message xmlns:q='urn:q'><x xml:lang='en' q:a='1' b='2'><q:y q:c='3'/></x></message>",
        );
        let x = all[0].get_child("x", ns::CLIENT).unwrap();
        assert_eq!(
            x.attrs().collect::<Vec<_>>(),
            [
                ("xmlns:q", "urn:q"),
                ("xml:lang", "en"),
                ("q:a", "1"),
                ("b", "2")
            ]
        );
        assert!(
            x.get_child("y", "urn:q")
                .is_some_and(|y| y.attr("q:c") == Some("3"))
        );
        // So the element serialises to XML that parses back to the same element.
        let mut xml = String::new();
        all[0].write_to(&mut xml, ns::CLIENT);
        assert_eq!(stanzas(&xml), all);
    }

    #[test]
    fn a_server_stream_has_the_server_content_namespace() {
        let events = parse(
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' \
             xmlns:db='jabber:server:dialback' from='a.example' id='s1'><db:result/>",
        )
        .unwrap();
        let StreamEvent::StreamOpen(header) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(header.default_ns, ns::SERVER);
        assert_eq!(header.from.as_deref(), Some("a.example"));
        assert_eq!(header.id.as_deref(), Some("s1"));
        let StreamEvent::Stanza(result) = &events[1] else {
            panic!("{events:?}")
        };
        assert!(result.is("result", "jabber:server:dialback"));
    }

    #[test]
    fn xml_lang_is_kept_on_the_header_and_on_stanzas() {
        let events = parse(&format!(
            "{HEADER}<message xml:lang='de'><body xml:lang='fr'>x</body></message>"
        ))
        .unwrap();
        let StreamEvent::StreamOpen(header) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(header.lang.as_deref(), Some("en"));
        let StreamEvent::Stanza(message) = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!(message.attr("xml:lang"), Some("de"));
        assert_eq!(
            message
                .get_child("body", ns::CLIENT)
                .and_then(|b| b.attr("xml:lang")),
            Some("fr")
        );
    }

    #[test]
    fn escaped_text_and_attributes_round_trip() {
        let all = stanzas(
            "<message id='a&amp;b&lt;c&quot;d&apos;' to=\"x&#10;y\tz\"><body>1 &lt; 2 &amp;&amp; \u{1F600} \
             = &#x1F600; &#128512; &gt;</body></message>",
        );
        let message = &all[0];
        assert_eq!(message.attr("id"), Some("a&b<c\"d'"));
        // A character reference keeps its newline; a literal tab is normalised to a space.
        assert_eq!(message.attr("to"), Some("x\ny z"));
        let body = message.child_text("body", ns::CLIENT).unwrap();
        assert_eq!(body, "1 < 2 && \u{1F600} = \u{1F600} \u{1F600} >");

        // What the element serialises to parses back to the same element.
        let mut xml = String::new();
        message.write_to(&mut xml, ns::CLIENT);
        assert_eq!(stanzas(&xml), std::slice::from_ref(message));
    }

    #[test]
    fn line_ends_are_normalised_and_cdata_is_text() {
        let all = stanzas("<message><body>a\r\nb\rc<![CDATA[<d> & e\r\n]]>f</body></message>");
        assert_eq!(
            all[0].child_text("body", ns::CLIENT).as_deref(),
            Some("a\nb\nc<d> & e\nf")
        );
        let nodes = all[0].get_child("body", ns::CLIENT).unwrap().nodes();
        assert!(matches!(nodes, [Node::Text(_)]));
    }

    #[test]
    fn a_billion_laughs_document_fails_at_the_doctype() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(b"<?xml version='1.0'?>\n<!D");
        assert_eq!(parser.next_event(), Err(ParseError::RestrictedXml("DTDs")));

        let laughs = "<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n \
             <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n \
             <!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">\n]>\n\
             <stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>\
             <message><body>&lol3;</body></message>";
        assert_eq!(error_of(laughs).condition(), "restricted-xml");
        // Inside a stream too.
        assert_eq!(
            error_of(&format!("{HEADER}<!DOCTYPE x>")).condition(),
            "restricted-xml"
        );
    }

    #[test]
    fn comments_and_processing_instructions_are_restricted() {
        for xml in [
            format!("{HEADER}<!-- hello -->"),
            format!("{HEADER}<message><!-- hello --></message>"),
            format!("{HEADER}<message><?php echo 1; ?></message>"),
            format!("{HEADER}<?xml version='1.0'?>"),
            "<!-- before the stream -->".to_owned(),
            "<?xml-stylesheet href='x'?>".to_owned(),
        ] {
            assert_eq!(error_of(&xml).condition(), "restricted-xml", "{xml}");
        }
        // As soon as they are recognisable.
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(format!("{HEADER}<message><!-").as_bytes());
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        assert_eq!(
            parser.next_event(),
            Err(ParseError::RestrictedXml("comments"))
        );
    }

    #[test]
    fn an_unknown_entity_is_restricted_and_a_malformed_reference_is_not_well_formed() {
        let error = error_of(&format!("{HEADER}<message><body>&foo;</body></message>"));
        assert_eq!(error, ParseError::RestrictedXml("entity references"));
        assert_eq!(
            error_of(&format!("{HEADER}<message a='&foo;'/>")).condition(),
            "restricted-xml"
        );
        for bad in [
            "a & b",
            "&#0;",
            "&#xD800;",
            "&#x110000;",
            "&#;",
            "&#x;",
            "&#12a;",
            "&#X41;",
            "&;",
        ] {
            let error = error_of(&format!("{HEADER}<message><body>{bad}</body></message>"));
            assert_eq!(error.condition(), "not-well-formed", "{bad}");
        }
    }

    #[test]
    fn forbidden_characters_and_cdata_ends_in_text_are_not_well_formed() {
        for bad in ["a\u{1}b", "a]]>b", "\u{FFFE}"] {
            let error = error_of(&format!("{HEADER}<message><body>{bad}</body></message>"));
            assert_eq!(error.condition(), "not-well-formed", "{bad:?}");
        }
        assert_eq!(
            error_of(&format!("{HEADER}<message a='<'/>")).condition(),
            "not-well-formed"
        );
    }

    #[test]
    fn a_root_in_the_wrong_namespace_is_an_invalid_namespace() {
        for xml in [
            "<stream:stream xmlns='jabber:client' xmlns:stream='urn:wrong'>",
            "<stream:stream xmlns='urn:wrong' xmlns:stream='http://etherx.jabber.org/streams'>",
            "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
            "<stream:flow xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>",
            "<html xmlns='jabber:client'>",
        ] {
            assert_eq!(error_of(xml), ParseError::InvalidNamespace, "{xml}");
        }
    }

    #[test]
    fn an_unbound_prefix_is_a_bad_namespace_prefix() {
        assert_eq!(
            error_of("<stream:stream xmlns='jabber:client'>"),
            ParseError::BadNamespacePrefix("stream".into())
        );
        let error = error_of(&format!("{HEADER}<message><foo:bar/></message>"));
        assert_eq!(error.condition(), "bad-namespace-prefix");
        let error = error_of(&format!("{HEADER}<message foo:bar='1'/>"));
        assert_eq!(error.condition(), "bad-namespace-prefix");
        // A declaration ends with its element.
        let error = error_of(&format!(
            "{HEADER}<message><x xmlns:p='urn:p'/><p:y/></message>"
        ));
        assert_eq!(error, ParseError::BadNamespacePrefix("p".into()));
    }

    #[test]
    fn a_foreign_encoding_or_invalid_utf8_is_unsupported() {
        assert_eq!(
            error_of("<?xml version='1.0' encoding='ISO-8859-1'?><stream:stream>"),
            ParseError::UnsupportedEncoding
        );
        let utf8 = HEADER.replace("version='1.0'?>", "version='1.0' encoding='utf-8'?>");
        assert!(matches!(
            parse(&utf8).as_deref(),
            Ok([StreamEvent::StreamOpen(_)])
        ));
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(b"\xFF\xFE<\0s\0");
        assert_eq!(parser.next_event(), Err(ParseError::UnsupportedEncoding));
        for bad in [
            &b"<message><body>\xC3\x28</body></message>"[..],
            b"<message a='\xFF'/>",
            b"<m\xE9ssage/>",
        ] {
            let mut parser = StreamParser::new(Limits::default());
            parser.feed(HEADER.as_bytes());
            parser.feed(bad);
            assert_eq!(
                drain(&mut parser),
                Err(ParseError::UnsupportedEncoding),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_xml_declaration_other_than_version_1_0_is_bad_format() {
        assert_eq!(error_of("<?xml version='1.1'?>").condition(), "bad-format");
    }

    #[test]
    fn a_300_kib_body_is_a_policy_violation_without_buffering_it() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(HEADER.as_bytes());
        parser.feed(b"<message><body>");
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        let chunk = [b'a'; 1024];
        let mut fed = 0;
        let error = loop {
            assert!(fed < 300 * 1024, "no error after {fed} bytes");
            parser.feed(&chunk);
            fed += chunk.len();
            match parser.next_event() {
                Ok(None) => assert!(parser.buffered() < 16, "text is consumed as it arrives"),
                Ok(Some(event)) => panic!("{event:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(error, ParseError::StanzaTooBig);
        assert_eq!(error.condition(), "policy-violation");
        assert!(fed <= 256 * 1024 + chunk.len());
    }

    #[test]
    fn an_endless_start_tag_is_a_policy_violation_once_past_the_limit() {
        let limits = Limits {
            max_stanza_bytes: 4096,
            ..Limits::default()
        };
        let mut parser = StreamParser::new(limits);
        parser.feed(HEADER.as_bytes());
        parser.feed(b"<message a='");
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        let mut fed = 0;
        let error = loop {
            parser.feed(b"0123456789abcdef");
            fed += 16;
            match parser.next_event() {
                Ok(None) => assert!(fed <= 4096),
                Ok(Some(event)) => panic!("{event:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(error, ParseError::StanzaTooBig);
    }

    #[test]
    fn a_stanza_at_the_size_limit_passes_and_one_byte_more_fails() {
        let stanza =
            |len: usize| format!("<message><body>{}</body></message>", "a".repeat(len - 32));
        assert_eq!(stanza(1000).len(), 1000);
        let limits = Limits {
            max_stanza_bytes: 1000,
            ..Limits::default()
        };
        for (len, ok) in [(1000, true), (1001, false)] {
            for chunk in [1, 7, 5000] {
                let mut parser = StreamParser::new(limits);
                let xml = format!("{HEADER}{}", stanza(len));
                let mut result = Ok(Vec::new());
                for c in xml.as_bytes().chunks(chunk) {
                    parser.feed(c);
                    result = drain(&mut parser);
                    if result.is_err() {
                        break;
                    }
                }
                assert_eq!(result.is_ok(), ok, "{len} bytes fed {chunk} at a time");
            }
        }
    }

    #[test]
    fn ten_thousand_nested_elements_fail_at_depth_65() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(HEADER.as_bytes());
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        for depth in 1..=10_000 {
            parser.feed(b"<a>");
            match parser.next_event() {
                Ok(None) => assert!(depth <= 64),
                Err(e) => {
                    assert_eq!((depth, e), (65, ParseError::TooDeep));
                    return;
                }
                Ok(Some(event)) => panic!("{event:?}"),
            }
        }
        panic!("10 000 nested elements were accepted");
    }

    #[test]
    fn sixty_four_nested_elements_are_fine() {
        let xml = format!("{HEADER}{}{}", "<a>".repeat(64), "</a>".repeat(64));
        assert_eq!(parse(&xml).unwrap().len(), 2);
    }

    #[test]
    fn too_many_attributes_are_a_policy_violation() {
        let tag = |n: usize| {
            let attrs: String = (0..n).map(|i| format!(" a{i}='{i}'")).collect();
            format!("{HEADER}<message{attrs}/>")
        };
        assert_eq!(parse(&tag(64)).unwrap().len(), 2);
        let error = error_of(&tag(65));
        assert_eq!(error, ParseError::TooManyAttributes);
        assert_eq!(error.condition(), "policy-violation");
    }

    #[test]
    fn duplicate_attributes_are_not_well_formed() {
        for xml in [
            "<message id='1' id='2'/>",
            "<message xmlns:a='urn:x' xmlns:b='urn:x' a:k='1' b:k='2'/>",
            "<message xmlns:a='urn:x' xmlns:a='urn:y'/>",
            "<message xmlns='urn:x' xmlns:='urn:y'/>",
        ] {
            assert_eq!(
                error_of(&format!("{HEADER}{xml}")).condition(),
                "not-well-formed",
                "{xml}"
            );
        }
    }

    #[test]
    fn mismatched_end_tags_are_not_well_formed() {
        for xml in [
            "<message><body></message></body>",
            "<message></stream:stream>",
            "</message>",
            "<a:message xmlns:a='jabber:client' xmlns:b='jabber:client'></b:message>",
        ] {
            assert_eq!(
                error_of(&format!("{HEADER}{xml}")).condition(),
                "not-well-formed",
                "{xml}"
            );
        }
        assert_eq!(error_of("</stream:stream>").condition(), "not-well-formed");
    }

    #[test]
    fn malformed_tags_are_not_well_formed() {
        for xml in [
            "<>",
            "< message/>",
            "<1message/>",
            "<message a/>",
            "<message a=b/>",
            "<a:b:c/>",
            "<![FOO[x]]>",
        ] {
            assert_eq!(
                error_of(&format!("{HEADER}{xml}")).condition(),
                "not-well-formed",
                "{xml}"
            );
        }
    }

    #[test]
    fn only_whitespace_may_follow_the_stream_close() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(format!("{HEADER}</stream:stream>\n ").as_bytes());
        assert_eq!(drain(&mut parser).unwrap().len(), 2);
        parser.feed(b"<message/>");
        assert_eq!(
            parser.next_event().unwrap_err().condition(),
            "not-well-formed"
        );
    }

    #[test]
    fn an_empty_root_opens_and_closes_the_stream() {
        let events = parse(
            "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'/>",
        )
        .unwrap();
        assert!(matches!(
            &events[..],
            [StreamEvent::StreamOpen(_), StreamEvent::StreamClose]
        ));
    }

    #[test]
    fn the_parser_stays_failed_after_an_error() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(format!("{HEADER}<message><!-- x -->").as_bytes());
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        let error = parser.next_event().unwrap_err();
        assert_eq!(error.condition(), "restricted-xml");
        parser.feed(b"</message><presence/>");
        assert_eq!(parser.next_event(), Err(error.clone()));
        assert_eq!(parser.next_event(), Err(error));
        assert_eq!(parser.buffered(), 0);
    }

    #[test]
    fn reset_forgets_the_old_stream_and_a_new_header_works() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(
            format!("{HEADER}<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><injected")
                .as_bytes(),
        );
        let events = drain(&mut parser).unwrap();
        assert!(matches!(&events[1], StreamEvent::Stanza(s) if s.is("starttls", ns::TLS)));
        parser.reset();
        assert_eq!(parser.buffered(), 0);
        // A new stream, with its own XML declaration, in which the old prefix means nothing.
        parser.feed(
            HEADER
                .replace("to='example.com'", "to='example.org'")
                .as_bytes(),
        );
        parser.feed(b"<message/>");
        let events = drain(&mut parser).unwrap();
        let StreamEvent::StreamOpen(header) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(header.to.as_deref(), Some("example.org"));
        assert!(matches!(&events[1], StreamEvent::Stanza(s) if s.is("message", ns::CLIENT)));
    }

    #[test]
    fn a_long_text_fed_byte_by_byte_never_piles_up_in_the_buffer() {
        let mut parser = StreamParser::new(Limits::default());
        parser.feed(format!("{HEADER}<message><body>").as_bytes());
        drain(&mut parser).unwrap();
        let text = "x&amp;\u{E9}\r\n]]".repeat(2000);
        for byte in text.as_bytes() {
            parser.feed(std::slice::from_ref(byte));
            assert_eq!(parser.next_event(), Ok(None));
            assert!(parser.buffered() <= 6);
        }
        parser.feed(b"</body></message>");
        let events = drain(&mut parser).unwrap();
        let [StreamEvent::Stanza(message)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(
            message.child_text("body", ns::CLIENT),
            Some("x&\u{E9}\n]]".repeat(2000))
        );
    }

    #[test]
    fn each_error_maps_to_its_stream_error_condition() {
        let cases = [
            (ParseError::NotWellFormed(String::new()), "not-well-formed"),
            (ParseError::RestrictedXml("comments"), "restricted-xml"),
            (ParseError::InvalidNamespace, "invalid-namespace"),
            (
                ParseError::BadNamespacePrefix("p".into()),
                "bad-namespace-prefix",
            ),
            (ParseError::UnsupportedEncoding, "unsupported-encoding"),
            (ParseError::StanzaTooBig, "policy-violation"),
            (ParseError::TooDeep, "policy-violation"),
            (ParseError::TooManyAttributes, "policy-violation"),
            (ParseError::BadFormat(String::new()), "bad-format"),
        ];
        for (error, condition) in cases {
            assert_eq!(error.condition(), condition);
        }
    }
}

#[cfg(test)]
mod element_limit_tests {
    use super::*;

    #[test]
    fn a_stanza_with_too_many_elements_is_a_policy_violation() {
        let limits = Limits {
            max_elements: 100,
            ..Limits::default()
        };
        let mut p = StreamParser::new(limits);
        p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>");
        assert!(matches!(
            p.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        // 99 children plus the stanza itself: allowed.
        p.feed(format!("<message>{}</message>", "<a/>".repeat(99)).as_bytes());
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
        // The count starts again with every stanza; one more element is one too many.
        p.feed(format!("<message>{}</message>", "<a/>".repeat(100)).as_bytes());
        let err = p.next_event().unwrap_err();
        assert_eq!(err, ParseError::TooManyElements);
        assert_eq!(err.condition(), "policy-violation");
    }
}

#[cfg(test)]
mod idle_memory_tests {
    use super::*;

    #[test]
    fn releasing_idle_memory_keeps_a_partial_stanza_and_the_stream_state() {
        let mut p = StreamParser::new(Limits::default());
        p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>");
        assert!(matches!(
            p.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        p.feed(b"<message><body>hel");
        assert!(matches!(p.next_event(), Ok(None)));
        p.release_idle_memory();
        p.feed(b"lo</body></message>");
        let Ok(Some(StreamEvent::Stanza(m))) = p.next_event() else {
            panic!("no stanza")
        };
        assert_eq!(
            m.child_text("body", "jabber:client").as_deref(),
            Some("hello")
        );
        assert!(matches!(p.next_event(), Ok(None)));
        p.release_idle_memory();
        assert_eq!(p.buffered(), 0);
        p.feed(b"<presence/>");
        assert!(matches!(p.next_event(), Ok(Some(StreamEvent::Stanza(_)))));
    }
}
