//! XEP-0198 Stream Management (v1.6, namespace `urn:xmpp:sm:3`) as per-stream state without
//! I/O: acknowledgements of stanzas in both directions, and the pure logic of resuming a
//! stream that broke.
//!
//! Both ends of a managed stream count the stanzas they *handle* (§4): the client counts what
//! the server sent, the server counts what the client sent. Either side asks with `<r/>` and
//! the other answers `<a h='…'/>` with its count, so the asker learns which of its stanzas
//! arrived. The server keeps every stanza it wrote until the client's count covers it; if the
//! connection breaks, the client comes back with `<resume previd='…' h='…'/>` and the server
//! writes again exactly what the client missed (§5).
//!
//! ```text
//!  bound ─► <enable resume='true'/> ─► enable() ─► <enabled id='…' resume='true' max='…'/>
//!
//!  client stanza  ─► on_inbound_stanza()   h += 1 (only <message/>, <presence/>, <iq/>)
//!  <r/>           ─► on_request()          ─► <a h='h'/>
//!  stanza written ─► on_outbound()         queued as seq = sent + 1; `true`: write <r/>
//!  <a h='n'/>     ─► on_ack(n)             releases the queue up to seq n
//!
//!  connection lost ─► detach(): the state waits `max` seconds in the caller's registry
//!  new stream, authenticated, not bound
//!      <resume previd h/> ─► resume() ─► <resumed h previd/> + the stanzas after h
//!                                   └─► <failed h?><item-not-found/></failed>
//!  timeout, clean close, or overflow ─► take_unacked(): offline storage or bounce (§4)
//! ```
//!
//! What this module does not do: hold the registry of detached sessions, run the resume
//! timer, or write anything. The connection feeds it events; the registry and the timer
//! live with the sessions (`router`, `net::c2s`).
//!
//! Counters are `u32` and wrap from 2^32−1 to 0 (§4): every comparison here is
//! modular, so a stream that lives past four billion stanzas keeps working.

use std::{borrow::Cow, collections::VecDeque};

use super::{c2s::StreamError, element::Element, jid::Jid, ns, stanza::Condition};

/// How a node runs stream management.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmConfig {
    /// Ask the client for an ack (`<r/>`) once this many stanzas were written since the last
    /// request. 1 asks after every stanza; larger values trade quicker release of the queue
    /// for fewer round trips. 0 is read as 1.
    pub request_every: u32,
    /// The most stanzas kept waiting for an ack. One more ends the stream with
    /// `resource-constraint`: a client that never acks must not grow the queue forever.
    pub max_unacked: usize,
    /// The longest time, in seconds, a broken stream is kept for resumption; `None`: the
    /// node does not offer resumption (acks still work).
    pub max_resume_secs: Option<u32>,
}

impl Default for SmConfig {
    fn default() -> Self {
        Self {
            request_every: 5,
            max_unacked: 500,
            max_resume_secs: Some(300),
        }
    }
}

/// How far stream negotiation has come, as far as the ordering rules of §3 and §5 care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage<'a> {
    /// SASL has not succeeded yet: no stream management at all.
    Unauthenticated,
    /// Authenticated as this account (bare JID), no resource bound: the only moment a
    /// `<resume/>` is allowed.
    Authenticated(&'a Jid),
    /// Bound to this full JID: the only moment an `<enable/>` is allowed.
    Bound(&'a Jid),
}

/// A stanza written to the client that its acks do not cover yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unacked {
    /// The value of the client's `h` that acknowledges this stanza.
    pub seq: u32,
    /// The stanza as written on the stream (`jabber:client`, no `xmlns`): a few hundred
    /// bytes in one allocation, where the parsed element would take a dozen; it is parsed
    /// again only in the rare case it must go somewhere else.
    pub xml: String,
    /// When it was first written (Unix seconds), for the `<delay/>` of a late delivery.
    pub sent_at: i64,
}

impl Unacked {
    /// The stanza with a XEP-0203 `<delay from='…' stamp='…'/>` saying when it was first
    /// sent, as §4 recommends for stanzas that end up in offline storage or at another
    /// resource.
    /// `stamp` is the XEP-0082 form of [`Unacked::sent_at`]. A stanza that already carries
    /// a delay from `from` (an offline message delivered earlier) keeps its original one.
    /// `Err`: the text does not parse back (never for what the node wrote itself).
    pub fn delayed(&self, from: &str, stamp: &str) -> Result<Element, String> {
        let mut stanza = super::parser::parse_stanza(&self.xml)?;
        let stamped = stanza
            .children()
            .any(|c| c.is("delay", ns::DELAY) && c.attr("from") == Some(from));
        if !stamped {
            stanza.append_child(
                Element::new("delay", ns::DELAY)
                    .with_attr("from", from)
                    .with_attr("stamp", stamp),
            );
        }
        Ok(stanza)
    }
}

/// What remains of a resumable session after its resume window closed: enough to answer a
/// late `<resume/>` with `<failed h='…'/>` (§5), so the client learns which of its own
/// stanzas the server handled before it starts over. The registry may keep these far
/// longer than the sessions themselves: they are small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub id: String,
    pub owner: Jid,
    /// How many of the client's stanzas the server handled.
    pub h: u32,
}

/// The state of stream management on one stream.
///
/// Created disabled with the stream; [`StreamManagement::enable`] switches it on after
/// resource binding. When the connection breaks, a resumable state outlives the stream (the
/// caller keeps it, [`StreamManagement::detach`]ed, for [`StreamManagement::resume_timeout`]
/// seconds) and moves to the new stream through [`resume`].
#[derive(Debug)]
pub struct StreamManagement {
    cfg: SmConfig,
    enabled: bool,
    /// The SM-ID (§5): opaque to the client, the key of the resumption registry.
    id: Option<String>,
    /// The full JID bound when SM was enabled: only this account may resume it.
    owner: Option<Jid>,
    /// `Some(seconds)`: resumable, for that long after the stream breaks.
    resume_secs: Option<u32>,
    /// Inbound `h`: stanzas handled from the client.
    handled: u32,
    /// Stanzas written to the client (the `h` that would ack all of them).
    sent: u32,
    /// The client's last `h`.
    acked: u32,
    /// Stanzas `acked + 1 ..= sent`, oldest first; `len() == sent - acked` (modulo 2^32).
    queue: VecDeque<Unacked>,
    /// Stanzas written since the last `<r/>`.
    since_request: u32,
    /// The stream is gone; the state waits for a `<resume/>`.
    detached: bool,
}

impl StreamManagement {
    /// The state of a new stream: not enabled.
    pub fn new(cfg: SmConfig) -> Self {
        Self {
            cfg,
            enabled: false,
            id: None,
            owner: None,
            resume_secs: None,
            handled: 0,
            sent: 0,
            acked: 0,
            queue: VecDeque::new(),
            since_request: 0,
            detached: false,
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the client may resume this stream after it breaks.
    pub fn is_resumable(&self) -> bool {
        self.enabled && self.resume_secs.is_some()
    }

    /// The SM-ID given in `<enabled/>`, once enabled.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The full JID of the session, once enabled.
    pub fn owner(&self) -> Option<&Jid> {
        self.owner.as_ref()
    }

    /// How long (seconds) to keep the state after the stream breaks; `None`: not resumable,
    /// hand the unacked stanzas on at once.
    pub fn resume_timeout(&self) -> Option<u32> {
        self.resume_secs.filter(|_| self.enabled)
    }

    /// Inbound `h`: how many stanzas from the client were handled.
    pub fn handled(&self) -> u32 {
        self.handled
    }

    /// How many stanzas were written to the client (modulo 2^32).
    pub fn sent(&self) -> u32 {
        self.sent
    }

    /// The client's last acknowledged `h`.
    pub fn acked(&self) -> u32 {
        self.acked
    }

    /// The stanzas the client has not acknowledged, oldest first.
    pub fn unacked(&self) -> impl ExactSizeIterator<Item = &Unacked> {
        self.queue.iter()
    }

    /// Takes every unacknowledged stanza out, oldest first, when the session ends for good
    /// (resume window over, clean `</stream:stream>`, queue overflow). §4: the server
    /// "SHOULD treat unacknowledged stanzas in the same way that it would treat a stanza
    /// sent to an unavailable resource": offline storage, another resource, or an error to
    /// the sender (RFC 6121 §8.5); see [`Unacked::delayed`]. Nothing is decided here.
    pub fn take_unacked(&mut self) -> Vec<Unacked> {
        // Everything sent is now someone else's responsibility: the invariant
        // `queue.len() == sent - acked` holds with an empty queue.
        self.acked = self.sent;
        self.queue.drain(..).collect()
    }

    /// What a later `<resume/>` still deserves to learn once the state itself is dropped.
    pub fn tombstone(&self) -> Option<Tombstone> {
        if !self.is_resumable() {
            return None;
        }
        Some(Tombstone {
            id: self.id.clone()?,
            owner: self.owner.clone()?,
            h: self.handled,
        })
    }

    /// Answers `<enable/>` (§3): `<enabled/>`, or the `<failed/>` that refuses it.
    ///
    /// The order rules: the client "MUST NOT attempt to enable stream management until
    /// after it has completed Resource Binding unless it is resuming a previous session",
    /// and the server "SHALL enforce this order" with `<failed><unexpected-request/>`. A
    /// client enables at most once per stream. §3 says a server SHOULD answer a second
    /// `<enable/>` with a stream error; like Prosody and other deployed servers, this one
    /// answers the same recoverable `<failed><unexpected-request/>` instead: the stream is
    /// otherwise fine and the running state is kept.
    ///
    /// Resumption is granted when the client asks (`resume='true'`) and the node offers it;
    /// the window (`max`, seconds) is the client's preference capped by the node's. `id` is
    /// the SM-ID, fresh and unguessable (random): it names the session in the registry and
    /// is only shown to the client when the stream is resumable. Both counters start at
    /// zero now (§4).
    pub fn enable(
        &mut self,
        stage: Stage<'_>,
        request: &Enable,
        id: impl Into<String>,
    ) -> Result<Element, Failed> {
        let jid = match stage {
            Stage::Unauthenticated => {
                return Err(Failed::new(Condition::UnexpectedRequest)
                    .with_text("Authenticate before enabling stream management."));
            }
            Stage::Authenticated(_) => {
                return Err(Failed::new(Condition::UnexpectedRequest)
                    .with_text("Bind a resource before enabling stream management."));
            }
            Stage::Bound(jid) => jid,
        };
        if self.enabled {
            return Err(Failed::new(Condition::UnexpectedRequest)
                .with_text("Stream management is already enabled."));
        }
        let resume_secs = match (request.resume, self.cfg.max_resume_secs) {
            (true, Some(ours)) => Some(request.max.map_or(ours, |theirs| theirs.min(ours))),
            _ => None,
        };
        *self = Self {
            enabled: true,
            id: Some(id.into()),
            owner: Some(jid.clone()),
            resume_secs,
            ..Self::new(self.cfg.clone())
        };
        let mut enabled = Element::new("enabled", ns::SM);
        if let Some(max) = resume_secs {
            enabled.set_attr("id", self.id.clone().unwrap_or_default());
            enabled.set_attr("resume", "true");
            enabled.set_attr("max", max.to_string());
        }
        Ok(enabled)
    }

    /// The client sent a stanza and the server took responsibility for it (routed, stored,
    /// answered, or bounced with an error: all of these are "handled", §4). Only
    /// `<message/>`, `<presence/>` and `<iq/>` count ([`super::stanza::is_stanza`]); SM's
    /// own elements never do. Before `<enable/>` nothing is counted.
    pub fn on_inbound_stanza(&mut self) {
        if self.enabled {
            // §4: "reset from 2^32-1 back to zero (rather than being incremented to 2^32)".
            self.handled = self.handled.wrapping_add(1);
        }
    }

    /// Answers the client's `<r/>` with `<a h='…'/>` (§4): the answer "MUST NOT be withheld
    /// for any condition other than a timeout".
    pub fn on_request(&self) -> Result<Element, SmError> {
        if !self.enabled {
            return Err(SmError::NotEnabled("r"));
        }
        Ok(ack(self.handled))
    }

    /// Records a stanza just written to the client (call it after writing, in writing order).
    ///
    /// `Ok(true)`: write [`request`] (`<r/>`) now; [`SmConfig::request_every`] stanzas went
    /// out since the last one. While detached the stanza is queued for the resumed stream
    /// and no request is due. Past [`SmConfig::max_unacked`] the answer is
    /// [`SmError::QueueFull`]: end the stream with `resource-constraint`. The stanza is
    /// queued even then, so [`StreamManagement::take_unacked`] hands it on with the rest.
    /// Without stream management the stanza is dropped: there is nothing to track.
    pub fn on_outbound(&mut self, xml: String, now: i64) -> Result<bool, SmError> {
        if !self.enabled {
            return Ok(false);
        }
        self.sent = self.sent.wrapping_add(1);
        self.queue.push_back(Unacked {
            seq: self.sent,
            xml,
            sent_at: now,
        });
        if self.queue.len() > self.cfg.max_unacked {
            return Err(SmError::QueueFull {
                max: self.cfg.max_unacked,
            });
        }
        if self.detached {
            return Ok(false);
        }
        self.since_request += 1;
        if self.since_request >= self.cfg.request_every.max(1) {
            self.since_request = 0;
            return Ok(true);
        }
        Ok(false)
    }

    /// For an idle timer: `<r/>` when stanzas went out since the last request, so a lone
    /// stanza below the request cadence is not left unconfirmed.
    pub fn idle_request(&mut self) -> Option<Element> {
        if !self.enabled || self.detached || self.since_request == 0 {
            return None;
        }
        self.since_request = 0;
        Some(request())
    }

    /// The client acknowledged stanzas up to `h` (§4), with `<a/>` or in `<resume/>`:
    /// releases them from the queue and returns how many.
    ///
    /// Acks are cumulative, so the released stanzas are exactly the prefix of the queue
    /// between the last `h` and this one. An `h` beyond what was sent (or going backwards,
    /// which modulo 2^32 reads as far ahead) is [`SmError::HandledCountTooHigh`]: §4 says
    /// to end the stream with `undefined-condition` and `<handled-count-too-high/>`.
    pub fn on_ack(&mut self, h: u32) -> Result<usize, SmError> {
        if !self.enabled {
            return Err(SmError::NotEnabled("a"));
        }
        let released = h.wrapping_sub(self.acked) as usize;
        if released > self.queue.len() {
            return Err(SmError::HandledCountTooHigh {
                h,
                send_count: self.sent,
            });
        }
        self.queue.drain(..released);
        self.acked = h;
        Ok(released)
    }

    /// The stream broke without `</stream:stream>`: keep the state for a `<resume/>`. New
    /// stanzas for the session are still queued with [`StreamManagement::on_outbound`] and
    /// go out after `<resumed/>`.
    pub fn detach(&mut self) {
        self.detached = true;
        self.since_request = 0;
    }

    pub fn is_detached(&self) -> bool {
        self.detached
    }

    /// Takes the state over on a new stream (§5): the client's `h` acks what it got, and
    /// everything after it is written again.
    fn resume_with(&mut self, client_h: u32, jid: Jid) -> Result<Resumed, SmError> {
        let released = self.on_ack(client_h)?;
        self.detached = false;
        self.since_request = 0;
        let resend: Vec<String> = self.queue.iter().map(|u| u.xml.clone()).collect();
        Ok(Resumed {
            answer: Element::new("resumed", ns::SM)
                .with_attr("h", self.handled.to_string())
                .with_attr("previd", self.id.clone().unwrap_or_default()),
            request_ack: !resend.is_empty(),
            resend,
            released,
            jid,
        })
    }
}

/// What the registry knows about the `previd` of a `<resume/>`.
#[derive(Debug)]
pub enum Previous<'a> {
    /// No session by that id: never existed, or long forgotten.
    Unknown,
    /// The session's window closed; only its tombstone is left.
    Expired(&'a Tombstone),
    /// The session's state: detached, or still attached to a stream the server has not
    /// noticed is dead (§5: that stream gets a `conflict` stream error and is closed).
    Found(&'a mut StreamManagement),
}

/// A successful resumption (§5).
#[derive(Debug, PartialEq, Eq)]
pub struct Resumed {
    /// `<resumed h='…' previd='…'/>`: the server's inbound `h`, so the client resends what
    /// the server missed.
    pub answer: Element,
    /// The stanzas after the client's `h`, oldest first: write them right after `answer`.
    /// They stay queued until acked; their sequence numbers carry over ("the sequence
    /// values are carried over from the previous session and are not reset").
    pub resend: Vec<String>,
    /// Write `<r/>` after the resent stanzas, to learn soon that they arrived.
    pub request_ack: bool,
    /// How many stanzas the client's `h` released.
    pub released: usize,
    /// The full JID the session had: the new stream is bound to it without a new bind.
    pub jid: Jid,
}

/// Answers `<resume previd='…' h='…'/>` (§5), given what the registry found for `previd`.
///
/// The rules, in the order they apply:
/// - only after authentication and before resource binding, else
///   `<failed><unexpected-request/></failed>`;
/// - an unknown id: `<failed><item-not-found/></failed>`; an expired one: the same with
///   the old inbound `h` (§5, XEP v1.6), so the client knows which of its stanzas got
///   through and resends only the rest;
/// - a session of another account, or one that was not resumable: `item-not-found` too,
///   without `h`. §9 demands authentication before resumption so sessions cannot be
///   hijacked; the account must also be the session's own, and a stranger holding its id
///   learns nothing about it;
/// - a client `h` beyond what the session sent: the `handled-count-too-high` stream error
///   (§4). The state is left untouched: the caller decides whether it waits on.
///
/// On success the state is attached again: the caller moves it to the new stream, kicks the
/// old stream if it is still open, writes [`Resumed::answer`] and [`Resumed::resend`], and
/// binds the stream to [`Resumed::jid`]. After a `<failed/>` the client may bind a resource
/// as usual ("the server SHOULD allow the client to bind a resource at this point").
pub fn resume(
    stage: Stage<'_>,
    request: &Resume,
    previous: Previous<'_>,
) -> Result<Resumed, Rejection> {
    let account = match stage {
        Stage::Unauthenticated => {
            return Err(Failed::new(Condition::UnexpectedRequest)
                .with_text("Authenticate before resuming a session.")
                .into());
        }
        Stage::Bound(_) => {
            return Err(Failed::new(Condition::UnexpectedRequest)
                .with_text("A session cannot be resumed after a resource is bound.")
                .into());
        }
        Stage::Authenticated(account) => account.bare(),
    };
    match previous {
        Previous::Unknown => Err(Failed::item_not_found(None).into()),
        Previous::Expired(t) if t.id == request.previd && t.owner.bare() == account => {
            Err(Failed::item_not_found(Some(t.h)).into())
        }
        Previous::Expired(_) => Err(Failed::item_not_found(None).into()),
        Previous::Found(sm) => {
            let owner = match &sm.owner {
                Some(owner)
                    if sm.is_resumable()
                        && sm.id.as_deref() == Some(request.previd.as_str())
                        && owner.bare() == account =>
                {
                    owner.clone()
                }
                _ => return Err(Failed::item_not_found(None).into()),
            };
            Ok(sm.resume_with(request.h, owner)?)
        }
    }
}

/// `<sm xmlns='urn:xmpp:sm:3'/>`, the stream feature (§2), offered once authenticated.
pub fn feature() -> Element {
    Element::new("sm", ns::SM)
}

/// `<r xmlns='urn:xmpp:sm:3'/>`: "how many of my stanzas did you handle?" (§4).
pub fn request() -> Element {
    Element::new("r", ns::SM)
}

/// `<a xmlns='urn:xmpp:sm:3' h='…'/>`: "I handled `h` of yours" (§4).
pub fn ack(h: u32) -> Element {
    Element::new("a", ns::SM).with_attr("h", h.to_string())
}

/// The client's `<enable/>` (§3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enable {
    /// `resume='true'`: the client wants to be able to resume.
    pub resume: bool,
    /// The client's preferred longest resumption window, in seconds.
    pub max: Option<u32>,
}

/// The client's `<resume/>` (§5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resume {
    /// The SM-ID of the stream to resume.
    pub previd: String,
    /// How many of the server's stanzas the client handled on that stream.
    pub h: u32,
}

/// A stream management element from the client. XEP-0360 calls these "nonzas": top-level
/// elements that are not stanzas and are never counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nonza {
    Enable(Enable),
    /// `<r/>`: answer with [`StreamManagement::on_request`].
    Request,
    /// `<a h='…'/>`: give to [`StreamManagement::on_ack`].
    Ack(u32),
    Resume(Resume),
}

/// Reads a top-level element from the client: `None` when it is not in the SM namespace,
/// else the nonza or what to answer.
///
/// Values follow the XEP's schema: `h` and `max` are `xs:unsignedInt` (0 to 2^32−1),
/// `resume` is `xs:boolean` (`true`, `1`, `false`, `0`). A bad `<enable/>` or `<resume/>`
/// is refused with `<failed><bad-request/></failed>` (§6: negotiation errors are
/// recoverable). A bad `<a/>` ends the stream with `bad-format`: an ack that cannot be read
/// leaves the queue in an unknown state. Elements only a server sends (`<enabled/>`,
/// `<failed/>`, …) end it with `unsupported-stanza-type`.
pub fn parse(e: &Element) -> Option<Result<Nonza, Rejection>> {
    if e.ns() != ns::SM {
        return None;
    }
    let bad_request = |text: &'static str| -> Rejection {
        Failed::new(Condition::BadRequest).with_text(text).into()
    };
    Some(match e.name() {
        "enable" => {
            let resume = match e.attr("resume").map(parse_bool) {
                None => Ok(false),
                Some(Some(b)) => Ok(b),
                Some(None) => Err(bad_request("'resume' must be true or false.")),
            };
            let max = match e.attr("max").map(parse_u32) {
                None => Ok(None),
                Some(Some(m)) => Ok(Some(m)),
                Some(None) => Err(bad_request(
                    "'max' must be a number of seconds (an unsigned 32-bit integer).",
                )),
            };
            match (resume, max) {
                (Ok(resume), Ok(max)) => Ok(Nonza::Enable(Enable { resume, max })),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        "r" => Ok(Nonza::Request),
        "a" => match e.attr("h").and_then(parse_u32) {
            Some(h) => Ok(Nonza::Ack(h)),
            None => Err(SmError::BadAck.into()),
        },
        "resume" => {
            let previd = e.attr("previd").filter(|p| !p.is_empty());
            let h = e.attr("h").and_then(parse_u32);
            match (previd, h) {
                (Some(previd), Some(h)) => Ok(Nonza::Resume(Resume {
                    previd: previd.to_string(),
                    h,
                })),
                (None, _) => Err(bad_request("<resume/> needs the 'previd' of the stream.")),
                (_, None) => Err(bad_request(
                    "<resume/> needs an 'h' that is an unsigned 32-bit integer.",
                )),
            }
        }
        other => Err(SmError::Unsupported(other.to_string()).into()),
    })
}

/// `xs:unsignedInt` (whitespace collapsed): 0 to 4294967295, an optional `+`.
fn parse_u32(s: &str) -> Option<u32> {
    s.trim().parse().ok()
}

/// `xs:boolean`: `true`, `false`, `1`, `0`.
fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// A refused `<enable/>` or `<resume/>` (§6): `<failed/>` with a stanza error condition.
/// The stream goes on; after a failed resume the client binds a resource as usual.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream management refused: {}", .condition.name())]
pub struct Failed {
    pub condition: Condition,
    /// The server's inbound `h` of the session a `<resume/>` named, when still known (§5).
    pub h: Option<u32>,
    pub text: Option<Cow<'static, str>>,
}

impl Failed {
    pub fn new(condition: Condition) -> Self {
        Self {
            condition,
            h: None,
            text: None,
        }
    }

    /// The answer to a `<resume/>` naming a session that is gone or not the client's (§5).
    pub fn item_not_found(h: Option<u32>) -> Self {
        Self {
            h,
            ..Self::new(Condition::ItemNotFound)
        }
    }

    pub fn with_text(mut self, text: impl Into<Cow<'static, str>>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// `<failed xmlns='urn:xmpp:sm:3' h='…'><condition/><text/></failed>`.
    pub fn to_element(&self) -> Element {
        let mut failed = Element::new("failed", ns::SM)
            .with_opt_attr("h", self.h.map(|h| h.to_string()))
            .with_child(Element::new(self.condition.name(), ns::STANZAS_ERRORS));
        if let Some(text) = &self.text {
            failed.append_child(
                Element::new("text", ns::STANZAS_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(text.as_ref()),
            );
        }
        failed
    }
}

/// A misuse of stream management that ends the stream with a stream error (RFC 6120 §4.9).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SmError {
    /// The client acked more stanzas than it was sent (§4).
    #[error("You acknowledged {h} stanzas, but I only sent you {send_count} so far.")]
    HandledCountTooHigh { h: u32, send_count: u32 },
    /// More stanzas wait for an ack than the node keeps.
    #[error("More than {max} stanzas wait for your acknowledgement.")]
    QueueFull { max: usize },
    /// `<a/>` without an `h` that is an unsigned 32-bit integer.
    #[error("<a/> needs an 'h' that is an unsigned 32-bit integer.")]
    BadAck,
    /// `<r/>` or `<a/>` before stream management was enabled.
    #[error("<{0}/> before stream management was enabled.")]
    NotEnabled(&'static str),
    /// An SM element a client does not send (`<enabled/>`, `<failed/>`, unknown names).
    #[error("<{0}/> is not a stream management element a client sends.")]
    Unsupported(String),
}

impl SmError {
    /// The RFC 6120 stream error condition.
    pub fn condition(&self) -> &'static str {
        match self {
            SmError::HandledCountTooHigh { .. } => "undefined-condition",
            SmError::QueueFull { .. } => "resource-constraint",
            SmError::BadAck => "bad-format",
            SmError::NotEnabled(_) | SmError::Unsupported(_) => "unsupported-stanza-type",
        }
    }

    /// The stream error, with this error's sentence as its `<text/>`.
    pub fn stream_error(&self) -> StreamError {
        StreamError::new(self.condition(), self.to_string()).with_app(self.app_condition())
    }

    /// The application-specific condition that goes next to the RFC condition in
    /// `<stream:error/>`: `<handled-count-too-high h='…' send-count='…'/>` (§4).
    pub fn app_condition(&self) -> Option<Element> {
        match self {
            SmError::HandledCountTooHigh { h, send_count } => Some(
                Element::new("handled-count-too-high", ns::SM)
                    .with_attr("h", h.to_string())
                    .with_attr("send-count", send_count.to_string()),
            ),
            _ => None,
        }
    }
}

/// What to answer an SM element that cannot be honoured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Write [`Failed::to_element`]; the stream goes on.
    #[error(transparent)]
    Failed(#[from] Failed),
    /// End the stream with [`SmError::stream_error`].
    #[error(transparent)]
    Stream(#[from] SmError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::parser::{Limits, StreamEvent, StreamParser};

    /// A XEP example as this crate serialises it (double quotes).
    fn xep(example: &str) -> String {
        example.replace('\'', "\"")
    }

    /// Parses one top-level element as the client would send it.
    fn from_client(xml: &str) -> Element {
        let mut p = StreamParser::new(Limits::default());
        p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>");
        p.feed(xml.as_bytes());
        loop {
            match p.next_event().unwrap() {
                Some(StreamEvent::Stanza(e)) => return e,
                Some(_) => continue,
                None => panic!("no element in {xml}"),
            }
        }
    }

    fn romeo() -> Jid {
        Jid::parse("romeo@montague.example/orchard").unwrap()
    }

    fn account() -> Jid {
        Jid::parse("romeo@montague.example").unwrap()
    }

    /// A message as written on a client stream.
    fn message(n: u32) -> String {
        format!("<message to='romeo@montague.example/orchard' id='m{n}'/>")
    }

    fn cfg(request_every: u32, max_unacked: usize) -> SmConfig {
        SmConfig {
            request_every,
            max_unacked,
            max_resume_secs: Some(300),
        }
    }

    /// An enabled, resumable state with id `some-long-sm-id`.
    fn enabled(cfg: SmConfig) -> StreamManagement {
        let mut sm = StreamManagement::new(cfg);
        let jid = romeo();
        sm.enable(
            Stage::Bound(&jid),
            &Enable {
                resume: true,
                max: None,
            },
            "some-long-sm-id",
        )
        .unwrap();
        sm
    }

    fn send(sm: &mut StreamManagement, n: u32) {
        for i in 0..n {
            sm.on_outbound(message(i), 1_000 + i64::from(i)).unwrap();
        }
    }

    fn ids(stanzas: &[String]) -> Vec<String> {
        stanzas
            .iter()
            .map(|s| {
                let stanza = super::super::parser::parse_stanza(s).unwrap();
                stanza.attr("id").unwrap().to_string()
            })
            .collect()
    }

    fn resume_request(h: u32) -> Resume {
        Resume {
            previd: "some-long-sm-id".into(),
            h,
        }
    }

    fn failed(r: Result<Resumed, Rejection>) -> Failed {
        match r {
            Err(Rejection::Failed(f)) => f,
            other => panic!("expected <failed/>, got {other:?}"),
        }
    }

    // --- enabling (§3) ---

    #[test]
    fn enabling_with_resumption_answers_like_the_xeps_example() {
        let mut sm = StreamManagement::new(cfg(5, 100));
        let jid = romeo();
        let request = match parse(&from_client(
            "<enable xmlns='urn:xmpp:sm:3' resume='true'/>",
        )) {
            Some(Ok(Nonza::Enable(e))) => e,
            other => panic!("{other:?}"),
        };
        let enabled = sm
            .enable(Stage::Bound(&jid), &request, "some-long-sm-id")
            .unwrap();
        assert_eq!(
            enabled.to_xml(),
            xep("<enabled xmlns='urn:xmpp:sm:3' id='some-long-sm-id' resume='true' max='300'/>")
        );
        assert!(sm.is_enabled() && sm.is_resumable());
        assert_eq!(sm.resume_timeout(), Some(300));
        assert_eq!(sm.owner(), Some(&jid));
        assert_eq!((sm.handled(), sm.sent(), sm.acked()), (0, 0, 0));
    }

    #[test]
    fn enabling_without_resumption_answers_a_bare_enabled() {
        let jid = romeo();
        let mut sm = StreamManagement::new(cfg(5, 100));
        let enabled = sm
            .enable(Stage::Bound(&jid), &Enable::default(), "id")
            .unwrap();
        assert_eq!(enabled.to_xml(), xep("<enabled xmlns='urn:xmpp:sm:3'/>"));
        assert!(sm.is_enabled() && !sm.is_resumable());
        assert_eq!(sm.resume_timeout(), None);
        assert_eq!(sm.tombstone(), None);
    }

    #[test]
    fn a_node_without_resumption_enables_acks_only() {
        let jid = romeo();
        let mut sm = StreamManagement::new(SmConfig {
            max_resume_secs: None,
            ..cfg(5, 100)
        });
        let request = Enable {
            resume: true,
            max: Some(60),
        };
        let enabled = sm.enable(Stage::Bound(&jid), &request, "id").unwrap();
        assert_eq!(enabled.to_xml(), xep("<enabled xmlns='urn:xmpp:sm:3'/>"));
        assert!(!sm.is_resumable());
    }

    #[test]
    fn the_resumption_window_is_the_clients_wish_capped_by_the_nodes() {
        let jid = romeo();
        for (asked, granted) in [(Some(60), 60), (Some(3_600), 300), (None, 300)] {
            let mut sm = StreamManagement::new(cfg(5, 100));
            let request = Enable {
                resume: true,
                max: asked,
            };
            let enabled = sm.enable(Stage::Bound(&jid), &request, "id").unwrap();
            assert_eq!(enabled.attr("max"), Some(granted.to_string().as_str()));
            assert_eq!(sm.resume_timeout(), Some(granted));
        }
    }

    #[test]
    fn enable_before_resource_binding_fails_with_unexpected_request() {
        let bare = account();
        let mut sm = StreamManagement::new(SmConfig::default());
        let refused = sm
            .enable(Stage::Authenticated(&bare), &Enable::default(), "id")
            .unwrap_err();
        assert_eq!(refused.condition, Condition::UnexpectedRequest);
        // §3's example, plus a sentence for the developer.
        assert_eq!(
            refused.to_element().to_xml(),
            xep(
                "<failed xmlns='urn:xmpp:sm:3'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas' xml:lang='en'>Bind a resource before enabling stream management.</text></failed>"
            )
        );
        assert!(!sm.is_enabled());
    }

    #[test]
    fn enable_before_authentication_fails_too() {
        let mut sm = StreamManagement::new(SmConfig::default());
        let refused = sm
            .enable(Stage::Unauthenticated, &Enable::default(), "id")
            .unwrap_err();
        assert_eq!(refused.condition, Condition::UnexpectedRequest);
        assert!(!sm.is_enabled());
    }

    #[test]
    fn a_second_enable_fails_and_keeps_the_running_state() {
        let jid = romeo();
        let mut sm = enabled(cfg(5, 100));
        sm.on_inbound_stanza();
        send(&mut sm, 2);
        let refused = sm
            .enable(Stage::Bound(&jid), &Enable::default(), "other-id")
            .unwrap_err();
        assert_eq!(refused.condition, Condition::UnexpectedRequest);
        assert_eq!(
            refused.text.as_deref(),
            Some("Stream management is already enabled.")
        );
        assert_eq!(sm.id(), Some("some-long-sm-id"));
        assert_eq!((sm.handled(), sm.sent(), sm.unacked().len()), (1, 2, 2));
    }

    #[test]
    fn the_stream_feature_is_an_empty_sm_element() {
        assert_eq!(feature().to_xml(), xep("<sm xmlns='urn:xmpp:sm:3'/>"));
    }

    // --- inbound counting and <r/> (§4) ---

    #[test]
    fn inbound_stanzas_are_counted_only_once_enabled() {
        let jid = romeo();
        let mut sm = StreamManagement::new(SmConfig::default());
        sm.on_inbound_stanza();
        assert_eq!(sm.handled(), 0);
        sm.enable(Stage::Bound(&jid), &Enable::default(), "id")
            .unwrap();
        sm.on_inbound_stanza();
        sm.on_inbound_stanza();
        assert_eq!(sm.handled(), 2);
    }

    #[test]
    fn a_request_is_answered_with_the_inbound_count() {
        let mut sm = enabled(SmConfig::default());
        assert_eq!(
            sm.on_request().unwrap().to_xml(),
            xep("<a xmlns='urn:xmpp:sm:3' h='0'/>")
        );
        for _ in 0..3 {
            sm.on_inbound_stanza();
        }
        assert_eq!(
            sm.on_request().unwrap().to_xml(),
            xep("<a xmlns='urn:xmpp:sm:3' h='3'/>")
        );
    }

    #[test]
    fn the_inbound_count_wraps_from_two_to_the_32_minus_one_to_zero() {
        let mut sm = enabled(SmConfig::default());
        sm.handled = u32::MAX - 1;
        sm.on_inbound_stanza();
        assert_eq!(sm.handled(), u32::MAX);
        sm.on_inbound_stanza();
        assert_eq!(sm.handled(), 0);
        sm.on_inbound_stanza();
        assert_eq!(sm.on_request().unwrap().attr("h"), Some("1"));
    }

    #[test]
    fn requests_and_acks_before_enable_end_the_stream() {
        let mut sm = StreamManagement::new(SmConfig::default());
        let err = sm.on_request().unwrap_err();
        assert_eq!(err, SmError::NotEnabled("r"));
        assert_eq!(err.condition(), "unsupported-stanza-type");
        assert_eq!(sm.on_ack(0).unwrap_err(), SmError::NotEnabled("a"));
    }

    // --- outbound queue and acks (§4) ---

    #[test]
    fn outbound_stanzas_are_queued_with_their_sequence_numbers() {
        let mut sm = enabled(cfg(100, 100));
        send(&mut sm, 3);
        let queued: Vec<(u32, i64)> = sm.unacked().map(|u| (u.seq, u.sent_at)).collect();
        assert_eq!(queued, [(1, 1_000), (2, 1_001), (3, 1_002)]);
        assert_eq!(sm.sent(), 3);
    }

    #[test]
    fn without_stream_management_nothing_is_queued() {
        let mut sm = StreamManagement::new(SmConfig::default());
        assert_eq!(sm.on_outbound(message(1), 0), Ok(false));
        assert_eq!(sm.unacked().len(), 0);
        assert_eq!(sm.sent(), 0);
        assert_eq!(sm.idle_request(), None);
    }

    #[test]
    fn an_ack_releases_exactly_the_acknowledged_prefix() {
        let mut sm = enabled(cfg(100, 100));
        send(&mut sm, 5);
        assert_eq!(sm.on_ack(2), Ok(2));
        let left: Vec<u32> = sm.unacked().map(|u| u.seq).collect();
        assert_eq!(left, [3, 4, 5]);
        assert_eq!(sm.acked(), 2);
        // The same h again releases nothing; acks are cumulative.
        assert_eq!(sm.on_ack(2), Ok(0));
        assert_eq!(sm.on_ack(5), Ok(3));
        assert_eq!(sm.unacked().len(), 0);
        assert_eq!(sm.on_ack(5), Ok(0));
    }

    #[test]
    fn an_ack_of_zero_on_a_fresh_stream_is_fine() {
        let mut sm = enabled(SmConfig::default());
        assert_eq!(sm.on_ack(0), Ok(0));
    }

    #[test]
    fn an_ack_beyond_what_was_sent_ends_the_stream_as_the_xep_says() {
        let mut sm = enabled(cfg(100, 100));
        send(&mut sm, 8);
        let err = sm.on_ack(10).unwrap_err();
        assert_eq!(
            err,
            SmError::HandledCountTooHigh {
                h: 10,
                send_count: 8
            }
        );
        // §4's example: undefined-condition, the SM condition, and the sentence.
        let stream_error = err.stream_error();
        assert_eq!(stream_error.condition, "undefined-condition");
        assert_eq!(
            stream_error.text.as_deref(),
            Some("You acknowledged 10 stanzas, but I only sent you 8 so far.")
        );
        assert_eq!(
            err.app_condition().unwrap().to_xml(),
            xep("<handled-count-too-high xmlns='urn:xmpp:sm:3' h='10' send-count='8'/>")
        );
        // Nothing was released.
        assert_eq!(sm.unacked().len(), 8);
        assert_eq!(sm.acked(), 0);
    }

    #[test]
    fn an_ack_going_backwards_is_refused_like_one_too_high() {
        let mut sm = enabled(cfg(100, 100));
        send(&mut sm, 5);
        sm.on_ack(4).unwrap();
        assert!(matches!(
            sm.on_ack(3),
            Err(SmError::HandledCountTooHigh {
                h: 3,
                send_count: 5
            })
        ));
        assert_eq!(sm.unacked().len(), 1);
    }

    #[test]
    fn outbound_sequence_numbers_and_acks_wrap_around() {
        let mut sm = enabled(cfg(100, 100));
        sm.sent = u32::MAX - 1;
        sm.acked = u32::MAX - 1;
        send(&mut sm, 4);
        let seqs: Vec<u32> = sm.unacked().map(|u| u.seq).collect();
        assert_eq!(seqs, [u32::MAX, 0, 1, 2]);
        // h = 0 acks the stanza numbered 2^32 - 1 and the one numbered 0.
        assert_eq!(sm.on_ack(0), Ok(2));
        assert_eq!(sm.unacked().map(|u| u.seq).collect::<Vec<_>>(), [1, 2]);
        assert!(matches!(
            sm.on_ack(3),
            Err(SmError::HandledCountTooHigh { .. })
        ));
        assert_eq!(sm.on_ack(2), Ok(2));
    }

    #[test]
    fn an_ack_is_requested_every_n_stanzas() {
        let mut sm = enabled(cfg(3, 100));
        let asked: Vec<bool> = (0..7)
            .map(|i| sm.on_outbound(message(i), 0).unwrap())
            .collect();
        assert_eq!(asked, [false, false, true, false, false, true, false]);
        assert_eq!(request().to_xml(), xep("<r xmlns='urn:xmpp:sm:3'/>"));
    }

    #[test]
    fn with_a_cadence_of_one_every_stanza_is_followed_by_a_request() {
        for every in [0, 1] {
            let mut sm = enabled(cfg(every, 100));
            assert!((0..4).all(|i| sm.on_outbound(message(i), 0).unwrap()));
        }
    }

    #[test]
    fn acks_do_not_reset_the_request_cadence() {
        let mut sm = enabled(cfg(2, 100));
        assert!(!sm.on_outbound(message(1), 0).unwrap());
        sm.on_ack(1).unwrap();
        assert!(sm.on_outbound(message(2), 0).unwrap());
    }

    #[test]
    fn an_idle_timer_requests_an_ack_for_stanzas_below_the_cadence() {
        let mut sm = enabled(cfg(5, 100));
        assert_eq!(sm.idle_request(), None);
        send(&mut sm, 2);
        assert_eq!(sm.idle_request(), Some(request()));
        assert_eq!(sm.idle_request(), None, "once per batch");
        // The cadence starts over after an idle request.
        let asked: Vec<bool> = (0..5)
            .map(|i| sm.on_outbound(message(i), 0).unwrap())
            .collect();
        assert_eq!(asked, [false, false, false, false, true]);
    }

    #[test]
    fn past_the_queue_limit_the_stream_ends_with_resource_constraint() {
        let mut sm = enabled(cfg(100, 3));
        send(&mut sm, 3);
        let err = sm.on_outbound(message(4), 0).unwrap_err();
        assert_eq!(err, SmError::QueueFull { max: 3 });
        assert_eq!(err.stream_error().condition, "resource-constraint");
        assert_eq!(err.app_condition(), None);
        // The stanza that overflowed is kept, so it is handed on with the others.
        let unacked = sm.take_unacked();
        assert_eq!(unacked.len(), 4);
        assert_eq!(ids(&[unacked[3].xml.clone()]), ["m4"]);
    }

    #[test]
    fn acks_make_room_below_the_queue_limit() {
        let mut sm = enabled(cfg(100, 3));
        send(&mut sm, 3);
        sm.on_ack(2).unwrap();
        send(&mut sm, 2);
        assert_eq!(sm.unacked().len(), 3);
    }

    // --- unacked stanzas when the session ends (§4) ---

    #[test]
    fn taking_the_unacked_stanzas_hands_them_on_oldest_first() {
        let mut sm = enabled(cfg(100, 100));
        send(&mut sm, 4);
        sm.on_ack(1).unwrap();
        let unacked = sm.take_unacked();
        let seqs: Vec<u32> = unacked.iter().map(|u| u.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(unacked[0].sent_at, 1_001);
        assert_eq!(sm.unacked().len(), 0);
        // The counters stay consistent: a later ack of everything sent is not "too high".
        assert_eq!(sm.on_ack(4), Ok(0));
        send(&mut sm, 1);
        assert_eq!(sm.unacked().next().map(|u| u.seq), Some(5));
    }

    #[test]
    fn an_unacked_stanza_carries_a_delay_when_delivered_late() {
        let unacked = Unacked {
            seq: 1,
            xml: message(1),
            sent_at: 0,
        };
        let late = unacked
            .delayed("montague.example", "2026-11-26T09:00:00Z")
            .unwrap();
        assert_eq!(
            late.to_xml(),
            xep(
                "<message xmlns='jabber:client' to='romeo@montague.example/orchard' id='m1'><delay xmlns='urn:xmpp:delay' from='montague.example' stamp='2026-11-26T09:00:00Z'/></message>"
            )
        );
        // A stanza that already says when it first arrived keeps that.
        let mut written = String::new();
        late.write_to(&mut written, ns::CLIENT);
        let again = Unacked {
            seq: 2,
            xml: written,
            sent_at: 0,
        }
        .delayed("montague.example", "2026-11-27T10:00:00Z")
        .unwrap();
        assert_eq!(again, late);
    }

    // --- resumption (§5) ---

    /// A session that sent five stanzas, had two acked, handled three from the client, and
    /// lost its connection.
    fn broken_session() -> StreamManagement {
        let mut sm = enabled(cfg(100, 100));
        for _ in 0..3 {
            sm.on_inbound_stanza();
        }
        send(&mut sm, 5);
        sm.on_ack(2).unwrap();
        sm.detach();
        sm
    }

    fn resume_broken(sm: &mut StreamManagement, h: u32) -> Result<Resumed, Rejection> {
        let bare = account();
        resume(
            Stage::Authenticated(&bare),
            &resume_request(h),
            Previous::Found(sm),
        )
    }

    #[test]
    fn resuming_answers_like_the_xeps_example_and_resends_what_the_client_missed() {
        let mut sm = broken_session();
        let request = match parse(&from_client(
            "<resume xmlns='urn:xmpp:sm:3' h='3' previd='some-long-sm-id'/>",
        )) {
            Some(Ok(Nonza::Resume(r))) => r,
            other => panic!("{other:?}"),
        };
        let bare = account();
        let resumed = resume(
            Stage::Authenticated(&bare),
            &request,
            Previous::Found(&mut sm),
        )
        .unwrap();
        assert_eq!(
            resumed.answer.to_xml(),
            xep("<resumed xmlns='urn:xmpp:sm:3' h='3' previd='some-long-sm-id'/>")
        );
        assert_eq!(ids(&resumed.resend), ["m3", "m4"]);
        assert_eq!(resumed.released, 1);
        assert!(resumed.request_ack);
        assert_eq!(resumed.jid, romeo());
        assert!(!sm.is_detached());
    }

    #[test]
    fn resuming_resends_the_stanzas_after_the_clients_h() {
        // The queue holds seq 3, 4, 5 (ids m2, m3, m4); the client acked 2 before.
        for (h, resent, released) in [
            (2, vec!["m2", "m3", "m4"], 0),
            (4, vec!["m4"], 2),
            (5, vec![], 3),
        ] {
            let mut sm = broken_session();
            let resumed = resume_broken(&mut sm, h).unwrap();
            assert_eq!(ids(&resumed.resend), resent, "h = {h}");
            assert_eq!(resumed.released, released, "h = {h}");
            assert_eq!(resumed.request_ack, !resent.is_empty());
            // Resent stanzas stay queued until acked.
            assert_eq!(sm.unacked().len(), resent.len());
        }
    }

    #[test]
    fn resuming_with_h_zero_resends_everything_never_acked() {
        let mut sm = enabled(cfg(100, 100));
        send(&mut sm, 3);
        sm.detach();
        let resumed = resume_broken(&mut sm, 0).unwrap();
        assert_eq!(ids(&resumed.resend), ["m0", "m1", "m2"]);
    }

    #[test]
    fn resuming_with_an_h_too_high_ends_the_stream_and_keeps_the_state() {
        let mut sm = broken_session();
        let err = resume_broken(&mut sm, 6).unwrap_err();
        assert_eq!(
            err,
            Rejection::Stream(SmError::HandledCountTooHigh {
                h: 6,
                send_count: 5
            })
        );
        assert!(sm.is_detached());
        assert_eq!(sm.unacked().len(), 3);
        assert_eq!(sm.acked(), 2);
    }

    #[test]
    fn counters_carry_over_into_the_resumed_stream() {
        let mut sm = broken_session();
        resume_broken(&mut sm, 4).unwrap();
        sm.on_inbound_stanza();
        assert_eq!(sm.on_request().unwrap().attr("h"), Some("4"));
        send(&mut sm, 1);
        assert_eq!(sm.unacked().map(|u| u.seq).collect::<Vec<_>>(), [5, 6]);
        assert_eq!(sm.on_ack(6), Ok(2));
    }

    #[test]
    fn stanzas_for_a_detached_session_are_queued_and_sent_on_resumption() {
        let mut sm = broken_session();
        // No <r/> for a stream that is not there, whatever the cadence.
        let mut sm_every_one = enabled(cfg(1, 100));
        sm_every_one.detach();
        assert_eq!(sm_every_one.on_outbound(message(9), 0), Ok(false));
        assert_eq!(sm_every_one.idle_request(), None);

        sm.on_outbound(message(5), 2_000).unwrap();
        let resumed = resume_broken(&mut sm, 5).unwrap();
        assert_eq!(ids(&resumed.resend), ["m5"]);
    }

    #[test]
    fn an_unknown_session_fails_with_item_not_found() {
        let bare = account();
        let refused = failed(resume(
            Stage::Authenticated(&bare),
            &resume_request(0),
            Previous::Unknown,
        ));
        assert_eq!(
            refused.to_element().to_xml(),
            xep(
                "<failed xmlns='urn:xmpp:sm:3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
            )
        );
    }

    #[test]
    fn an_expired_session_fails_with_the_h_it_reached() {
        let mut sm = broken_session();
        let tombstone = sm.tombstone().unwrap();
        assert_eq!(
            tombstone,
            Tombstone {
                id: "some-long-sm-id".into(),
                owner: romeo(),
                h: 3
            }
        );
        let _ = sm.take_unacked();
        let bare = account();
        let refused = failed(resume(
            Stage::Authenticated(&bare),
            &resume_request(4),
            Previous::Expired(&tombstone),
        ));
        assert_eq!(
            refused.to_element().to_xml(),
            xep(
                "<failed xmlns='urn:xmpp:sm:3' h='3'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
            )
        );
    }

    #[test]
    fn another_accounts_session_looks_unknown() {
        let juliet = Jid::parse("juliet@capulet.example").unwrap();
        let mut sm = broken_session();
        let refused = failed(resume(
            Stage::Authenticated(&juliet),
            &resume_request(2),
            Previous::Found(&mut sm),
        ));
        assert_eq!(refused, Failed::item_not_found(None));
        let tombstone = sm.tombstone().unwrap();
        let refused = failed(resume(
            Stage::Authenticated(&juliet),
            &resume_request(2),
            Previous::Expired(&tombstone),
        ));
        assert_eq!(refused.h, None, "no count for a stranger");
        assert!(sm.is_detached());
        assert_eq!(sm.unacked().len(), 3);
    }

    #[test]
    fn a_session_that_was_not_resumable_cannot_be_resumed() {
        let jid = romeo();
        let mut sm = StreamManagement::new(cfg(100, 100));
        sm.enable(Stage::Bound(&jid), &Enable::default(), "some-long-sm-id")
            .unwrap();
        sm.detach();
        let refused = failed(resume_broken(&mut sm, 0));
        assert_eq!(refused, Failed::item_not_found(None));
    }

    #[test]
    fn resume_must_come_after_authentication_and_before_binding() {
        let jid = romeo();
        let mut sm = broken_session();
        let refused = failed(resume(
            Stage::Unauthenticated,
            &resume_request(2),
            Previous::Found(&mut sm),
        ));
        assert_eq!(refused.condition, Condition::UnexpectedRequest);
        let refused = failed(resume(
            Stage::Bound(&jid),
            &resume_request(2),
            Previous::Found(&mut sm),
        ));
        assert_eq!(refused.condition, Condition::UnexpectedRequest);
        assert_eq!(
            refused.text.as_deref(),
            Some("A session cannot be resumed after a resource is bound.")
        );
        assert!(
            sm.is_detached(),
            "a refused resume leaves the session waiting"
        );
    }

    #[test]
    fn a_resumed_session_cannot_enable_again() {
        let jid = romeo();
        let mut sm = broken_session();
        resume_broken(&mut sm, 2).unwrap();
        let refused = sm
            .enable(Stage::Bound(&jid), &Enable::default(), "x")
            .unwrap_err();
        assert_eq!(refused.condition, Condition::UnexpectedRequest);
    }

    // --- parsing (§3–§5, schema) ---

    fn parsed(xml: &str) -> Option<Result<Nonza, Rejection>> {
        parse(&from_client(xml))
    }

    fn bad_request(xml: &str) -> bool {
        matches!(parsed(xml), Some(Err(Rejection::Failed(f))) if f.condition == Condition::BadRequest)
    }

    #[test]
    fn enable_is_parsed_with_its_booleans_and_max() {
        let cases = [
            ("<enable xmlns='urn:xmpp:sm:3'/>", false, None),
            ("<enable xmlns='urn:xmpp:sm:3' resume='true'/>", true, None),
            ("<enable xmlns='urn:xmpp:sm:3' resume='1'/>", true, None),
            (
                "<enable xmlns='urn:xmpp:sm:3' resume='false'/>",
                false,
                None,
            ),
            (
                "<enable xmlns='urn:xmpp:sm:3' resume='0' max='60'/>",
                false,
                Some(60),
            ),
            (
                "<enable xmlns='urn:xmpp:sm:3' resume='true' max='4294967295'/>",
                true,
                Some(u32::MAX),
            ),
        ];
        for (xml, resume, max) in cases {
            assert_eq!(
                parsed(xml),
                Some(Ok(Nonza::Enable(Enable { resume, max }))),
                "{xml}"
            );
        }
    }

    #[test]
    fn a_malformed_enable_fails_with_bad_request() {
        assert!(bad_request("<enable xmlns='urn:xmpp:sm:3' resume='yes'/>"));
        assert!(bad_request("<enable xmlns='urn:xmpp:sm:3' max='-1'/>"));
        assert!(bad_request(
            "<enable xmlns='urn:xmpp:sm:3' max='4294967296'/>"
        ));
    }

    #[test]
    fn requests_and_acks_are_parsed() {
        assert_eq!(
            parsed("<r xmlns='urn:xmpp:sm:3'/>"),
            Some(Ok(Nonza::Request))
        );
        assert_eq!(
            parsed("<a xmlns='urn:xmpp:sm:3' h='0'/>"),
            Some(Ok(Nonza::Ack(0)))
        );
        assert_eq!(
            parsed("<a xmlns='urn:xmpp:sm:3' h='4294967295'/>"),
            Some(Ok(Nonza::Ack(u32::MAX)))
        );
    }

    #[test]
    fn an_ack_without_a_valid_h_ends_the_stream_with_bad_format() {
        for xml in [
            "<a xmlns='urn:xmpp:sm:3'/>",
            "<a xmlns='urn:xmpp:sm:3' h=''/>",
            "<a xmlns='urn:xmpp:sm:3' h='-1'/>",
            "<a xmlns='urn:xmpp:sm:3' h='4294967296'/>",
            "<a xmlns='urn:xmpp:sm:3' h='ten'/>",
        ] {
            assert_eq!(
                parsed(xml),
                Some(Err(Rejection::Stream(SmError::BadAck))),
                "{xml}"
            );
        }
        assert_eq!(SmError::BadAck.condition(), "bad-format");
    }

    #[test]
    fn resume_is_parsed_and_validated() {
        assert_eq!(
            parsed("<resume xmlns='urn:xmpp:sm:3' h='7' previd='some-long-sm-id'/>"),
            Some(Ok(Nonza::Resume(Resume {
                previd: "some-long-sm-id".into(),
                h: 7
            })))
        );
        assert!(bad_request("<resume xmlns='urn:xmpp:sm:3' h='7'/>"));
        assert!(bad_request(
            "<resume xmlns='urn:xmpp:sm:3' h='7' previd=''/>"
        ));
        assert!(bad_request("<resume xmlns='urn:xmpp:sm:3' previd='x'/>"));
        assert!(bad_request(
            "<resume xmlns='urn:xmpp:sm:3' h='4294967296' previd='x'/>"
        ));
    }

    #[test]
    fn elements_outside_the_namespace_are_not_stream_management() {
        assert_eq!(parsed("<r xmlns='urn:xmpp:sm:2'/>"), None);
        assert_eq!(parsed("<message/>"), None);
    }

    #[test]
    fn server_side_elements_from_a_client_end_the_stream() {
        for name in ["enabled", "resumed", "failed", "sm", "x"] {
            let xml = format!("<{name} xmlns='urn:xmpp:sm:3'/>");
            match parsed(&xml) {
                Some(Err(Rejection::Stream(e))) => {
                    assert_eq!(e.condition(), "unsupported-stanza-type", "{name}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
