//! Server-to-server stream negotiation (RFC 6120 for `jabber:server` streams) as state
//! machines without I/O: [`S2sIn`] for a stream a peer server opened to this node,
//! [`S2sOut`] for one this node opened to a peer. The socket code (`net::s2s`, issue 10)
//! feeds them parsed [`StreamEvent`]s and does what their outputs say.
//!
//! TLS comes first, always: an incoming stream offers nothing but STARTTLS until TLS is
//! up, and an outgoing stream to a peer that offers no TLS fails. Then a peer domain is
//! authenticated in one of two ways:
//! - SASL EXTERNAL (XEP-0178): the peer's TLS certificate verified for the domain it
//!   names; the connection tells [`S2sIn::on_tls`] which domains that is.
//! - Server dialback (XEP-0220) otherwise: the peer sends a key ([`dialback_key`],
//!   XEP-0185: an HMAC of both domains and the stream id under this node's secret) that
//!   the receiving side checks with the peer's authoritative server over a separate stream
//!   ([`S2sOut::verifier`], `<db:verify/>`), which answers from its own secret
//!   ([`S2sIn`] answers `<db:verify/>` itself). A certificate verified for the domain
//!   makes the check unnecessary, as XEP-0344 allows.
//!
//! Each (local domain, remote domain) pair is authenticated on its own, so one stream can
//! carry several (dialback multiplexing); a stanza whose `from` and `to` are not an
//! authenticated pair ends the stream with `<invalid-from/>`. Whether a local domain
//! federates with a remote one at all (the vhost spec's policy) is asked through
//! [`S2sConfig::federates`].

use std::{collections::HashSet, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::{
    c2s::HostAccess,
    element::{Element, escape_attr},
    jid::Jid,
    ns,
    parser::{StreamEvent, StreamHeader},
};

pub const NS_DIALBACK: &str = "jabber:server:dialback";
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";

/// XEP-0185's dialback key: HMAC-SHA256 under the hex SHA-256 of the node's secret, over
/// "receiving originating stream-id", in hex.
pub fn dialback_key(secret: &str, receiving: &str, originating: &str, stream_id: &str) -> String {
    let key = hex::encode(Sha256::digest(secret.as_bytes()));
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{receiving} {originating} {stream_id}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a local domain (first) federates with a remote one (second).
pub type FederationPolicy = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Fixed facts of the node for s2s streams.
#[derive(Clone)]
pub struct S2sConfig {
    /// How a local domain is served (asked at every stream header and dialback request).
    pub host_access: Arc<dyn Fn(&str) -> HostAccess + Send + Sync>,
    /// Whether the local domain (first) federates with the remote one (second).
    pub federates: FederationPolicy,
    /// The secret dialback keys are made with.
    pub dialback_secret: String,
}

fn attr(s: &str) -> String {
    let mut out = String::new();
    escape_attr(s, &mut out);
    out
}

fn stream_header(id: Option<&str>, from: Option<&str>, to: Option<&str>) -> String {
    let mut h = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'",
    );
    for (name, value) in [("id", id), ("from", from), ("to", to)] {
        if let Some(v) = value {
            h.push_str(&format!(" {name}='{}'", attr(v)));
        }
    }
    h.push('>');
    h
}

fn stream_error(condition: &str, text: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns='{}'/><text xmlns='{}' xml:lang='en'>{}</text></stream:error></stream:stream>",
        ns::STREAMS_ERRORS,
        ns::STREAMS_ERRORS,
        {
            let mut t = String::new();
            super::element::escape_text(text, &mut t);
            t
        }
    )
}

/// A domain out of a stream attribute: a bare domain JID, normalised.
fn domain_of(value: Option<&str>) -> Option<String> {
    match Jid::parse(value?) {
        Ok(j) if j.node().is_none() && j.resource().is_none() => Some(j.domain().to_string()),
        _ => None,
    }
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

// ---- incoming ------------------------------------------------------------------------------

/// What the connection of an incoming stream must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum InOutput {
    Send(String),
    /// `<proceed/>` is queued: flush it, run the TLS handshake (asking for the peer's
    /// certificate), then call [`S2sIn::on_tls`].
    StartTls,
    ResetParser,
    /// Check `key` with the authoritative server of `remote` (a `<db:verify/>` stream,
    /// [`S2sOut::verifier`]) and answer with [`S2sIn::on_dialback_checked`].
    VerifyDialback {
        local: String,
        remote: String,
        stream_id: String,
        key: String,
    },
    /// `remote` may send stanzas to `local` on this stream from now on.
    Authorized {
        local: String,
        remote: String,
    },
    /// A stanza from an authenticated peer domain to a local one.
    Stanza(Element),
    Close,
}

#[derive(Debug, PartialEq, Eq)]
enum InState {
    Header,
    Open,
    Closed,
}

/// A stream a peer server opened to this node.
pub struct S2sIn {
    cfg: S2sConfig,
    state: InState,
    tls: bool,
    stream_id: String,
    /// The local domain the header named, and the peer's domain, when it said.
    local: Option<String>,
    remote: Option<String>,
    /// Domains the peer's TLS certificate is verified for.
    cert_domains: Vec<String>,
    /// Authenticated (local, remote) pairs.
    authorized: HashSet<(String, String)>,
    /// Dialback checks waiting for their answer.
    pending: HashSet<(String, String)>,
}

impl S2sIn {
    /// A new stream; `direct_tls` when TLS is up from the first byte (XEP-0368), with the
    /// domains the peer's certificate is verified for.
    pub fn new(cfg: S2sConfig, direct_tls: Option<Vec<String>>) -> Self {
        let tls = direct_tls.is_some();
        Self {
            cfg,
            state: InState::Header,
            tls,
            stream_id: random_id(),
            local: None,
            remote: None,
            cert_domains: direct_tls.unwrap_or_default(),
            authorized: HashSet::new(),
            pending: HashSet::new(),
        }
    }

    /// The id of the current stream (dialback keys are bound to it).
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    pub fn is_closed(&self) -> bool {
        self.state == InState::Closed
    }

    /// The local domain the stream's header named (its `to`).
    pub fn local(&self) -> Option<&str> {
        self.local.as_deref()
    }

    /// The peer's domain, as its stream header named it.
    pub fn remote(&self) -> Option<String> {
        self.remote.clone()
    }

    /// TLS is up; `cert_domains` are the domains the peer's certificate is verified for
    /// (none when it sent no certificate or one that does not verify).
    pub fn on_tls(&mut self, cert_domains: Vec<String>) -> Vec<InOutput> {
        self.tls = true;
        self.cert_domains = cert_domains;
        self.state = InState::Header;
        vec![InOutput::ResetParser]
    }

    pub fn feed(&mut self, event: StreamEvent) -> Vec<InOutput> {
        if self.state == InState::Closed {
            return vec![];
        }
        match event {
            StreamEvent::StreamOpen(h) => self.on_header(h),
            StreamEvent::StreamClose => {
                self.state = InState::Closed;
                vec![InOutput::Send("</stream:stream>".into()), InOutput::Close]
            }
            StreamEvent::Stanza(e) => self.on_element(e),
        }
    }

    /// Ends the stream with a stream error.
    pub fn fail(&mut self, condition: &str, text: &str) -> Vec<InOutput> {
        let mut out = String::new();
        if self.state == InState::Header {
            out.push_str(&stream_header(
                Some(&self.stream_id),
                self.local.as_deref(),
                None,
            ));
        }
        out.push_str(&stream_error(condition, text));
        self.state = InState::Closed;
        vec![InOutput::Send(out), InOutput::Close]
    }

    fn on_header(&mut self, h: StreamHeader) -> Vec<InOutput> {
        if self.state != InState::Header {
            return self.fail("not-well-formed", "A stream header inside the stream.");
        }
        if h.default_ns != ns::SERVER {
            return self.fail("invalid-namespace", "Server streams are in jabber:server.");
        }
        let Some(local) = domain_of(h.to.as_deref()) else {
            return self.fail(
                "host-unknown",
                "The stream header names no domain of ours ('to').",
            );
        };
        self.local = Some(local.clone());
        if let Some(refusal) = (self.cfg.host_access)(&local).refusal() {
            let condition = if refusal.condition == "see-other-host" {
                "host-gone"
            } else {
                refusal.condition
            };
            return self.fail(
                condition,
                refusal.text.as_deref().unwrap_or("Not served here."),
            );
        }
        self.remote = domain_of(h.from.as_deref());
        if h.version.as_deref().and_then(|v| v.split('.').next()) != Some("1") {
            return self.fail(
                "unsupported-version",
                "This server needs XMPP 1.0 streams (for TLS).",
            );
        }
        self.stream_id = random_id();
        self.state = InState::Open;
        let mut out = stream_header(Some(&self.stream_id), Some(&local), self.remote.as_deref());
        out.push_str("<stream:features>");
        if !self.tls {
            out.push_str(&format!(
                "<starttls xmlns='{}'><required/></starttls>",
                ns::TLS
            ));
        } else {
            let authenticated = self.authorized.iter().any(|(l, _)| *l == local);
            if !authenticated
                && let Some(remote) = &self.remote
                && self.cert_domains.contains(remote)
            {
                out.push_str(&format!(
                    "<mechanisms xmlns='{}'><mechanism>EXTERNAL</mechanism></mechanisms>",
                    ns::SASL
                ));
            }
            out.push_str(&format!(
                "<dialback xmlns='{NS_DIALBACK_FEATURE}'><errors/></dialback>"
            ));
        }
        out.push_str("</stream:features>");
        vec![InOutput::Send(out)]
    }

    fn on_element(&mut self, e: Element) -> Vec<InOutput> {
        if self.state != InState::Open {
            return self.fail("not-authorized", "Nothing before the stream header.");
        }
        if e.is("starttls", ns::TLS) {
            if self.tls {
                return self.fail("policy-violation", "TLS is up already.");
            }
            return vec![
                InOutput::Send(format!("<proceed xmlns='{}'/>", ns::TLS)),
                InOutput::StartTls,
            ];
        }
        if !self.tls {
            return self.fail(
                "policy-violation",
                "This server requires TLS first (STARTTLS).",
            );
        }
        if e.is("auth", ns::SASL) {
            return self.on_auth(&e);
        }
        if e.ns() == NS_DIALBACK && e.name() == "result" {
            return self.on_db_result(&e);
        }
        if e.ns() == NS_DIALBACK && e.name() == "verify" {
            return self.on_db_verify(&e);
        }
        if e.ns() == ns::SERVER && matches!(e.name(), "message" | "presence" | "iq") {
            return self.on_stanza(e);
        }
        self.fail(
            "unsupported-stanza-type",
            "This element is not understood here.",
        )
    }

    fn on_auth(&mut self, e: &Element) -> Vec<InOutput> {
        let local = self.local.clone().unwrap_or_default();
        let failure = |condition: &str| {
            InOutput::Send(format!(
                "<failure xmlns='{}'><{condition}/></failure>",
                ns::SASL
            ))
        };
        if e.attr("mechanism") != Some("EXTERNAL") {
            return vec![failure("invalid-mechanism")];
        }
        let text = e.text();
        let identity = match text.trim() {
            "" | "=" => self.remote.clone(),
            t => B64
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|d| domain_of(Some(&d))),
        };
        let Some(remote) = identity.filter(|r| self.cert_domains.contains(r)) else {
            return vec![failure("not-authorized")];
        };
        if !(self.cfg.federates)(&local, &remote) {
            return vec![failure("not-authorized")];
        }
        self.authorized.insert((local.clone(), remote.clone()));
        self.state = InState::Header;
        vec![
            InOutput::Send(format!("<success xmlns='{}'/>", ns::SASL)),
            InOutput::ResetParser,
            InOutput::Authorized { local, remote },
        ]
    }

    /// `<db:result from=remote to=local>key</db:result>`: the peer asks to send as `remote`.
    fn on_db_result(&mut self, e: &Element) -> Vec<InOutput> {
        let (Some(remote), Some(local)) = (domain_of(e.attr("from")), domain_of(e.attr("to")))
        else {
            return self.fail(
                "improper-addressing",
                "A dialback request needs 'from' and 'to'.",
            );
        };
        let error = |condition: &str| {
            InOutput::Send(format!(
                "<db:result type='error' from='{}' to='{}'><error type='cancel'><{condition} xmlns='{}'/></error></db:result>",
                attr(&local),
                attr(&remote),
                ns::STANZAS_ERRORS
            ))
        };
        if (self.cfg.host_access)(&local) != HostAccess::Open {
            return vec![error("item-not-found")];
        }
        if !(self.cfg.federates)(&local, &remote) {
            return vec![error("not-authorized")];
        }
        let pair = (local.clone(), remote.clone());
        if self.authorized.contains(&pair) {
            return vec![InOutput::Send(db_result_valid(&local, &remote))];
        }
        if self.cert_domains.contains(&remote) {
            // The certificate proves the domain already (XEP-0344).
            self.authorized.insert(pair);
            return vec![
                InOutput::Send(db_result_valid(&local, &remote)),
                InOutput::Authorized { local, remote },
            ];
        }
        if !self.pending.insert(pair) {
            return vec![]; // A check of this pair is running.
        }
        vec![InOutput::VerifyDialback {
            local,
            remote,
            stream_id: self.stream_id.clone(),
            key: e.text().trim().to_string(),
        }]
    }

    /// The authoritative server's answer to a dialback check.
    pub fn on_dialback_checked(&mut self, local: &str, remote: &str, valid: bool) -> Vec<InOutput> {
        let pair = (local.to_string(), remote.to_string());
        if !self.pending.remove(&pair) || self.state == InState::Closed {
            return vec![];
        }
        if !valid {
            // XEP-0220 §2.4: an invalid key ends the stream.
            let mut out = vec![InOutput::Send(format!(
                "<db:result type='invalid' from='{}' to='{}'/>",
                attr(local),
                attr(remote)
            ))];
            out.extend(self.fail("not-authorized", "The dialback key did not verify."));
            return out;
        }
        self.authorized.insert(pair);
        vec![
            InOutput::Send(db_result_valid(local, remote)),
            InOutput::Authorized {
                local: local.to_string(),
                remote: remote.to_string(),
            },
        ]
    }

    /// `<db:verify from=receiving to=us id=stream>key</db:verify>`: is this our key?
    fn on_db_verify(&mut self, e: &Element) -> Vec<InOutput> {
        let (Some(receiving), Some(local), Some(id)) = (
            domain_of(e.attr("from")),
            domain_of(e.attr("to")),
            e.attr("id"),
        ) else {
            return self.fail(
                "improper-addressing",
                "A dialback check needs 'from', 'to' and 'id'.",
            );
        };
        let expected = dialback_key(&self.cfg.dialback_secret, &receiving, &local, id);
        let valid = (self.cfg.host_access)(&local) == HostAccess::Open
            && subtle_eq(expected.as_bytes(), e.text().trim().as_bytes());
        vec![InOutput::Send(format!(
            "<db:verify type='{}' from='{}' to='{}' id='{}'/>",
            if valid { "valid" } else { "invalid" },
            attr(&local),
            attr(&receiving),
            attr(id)
        ))]
    }

    fn on_stanza(&mut self, mut e: Element) -> Vec<InOutput> {
        let from = e.attr("from").and_then(|f| Jid::parse(f).ok());
        let to = e.attr("to").and_then(|t| Jid::parse(t).ok());
        let (Some(from), Some(to)) = (from, to) else {
            return self.fail(
                "improper-addressing",
                "Stanzas between servers need 'from' and 'to'.",
            );
        };
        if !self
            .authorized
            .contains(&(to.domain().to_string(), from.domain().to_string()))
        {
            return self.fail(
                "invalid-from",
                "The stanza's 'from' and 'to' are not domains this stream is authenticated for.",
            );
        }
        e.switch_ns(ns::SERVER, ns::CLIENT);
        vec![InOutput::Stanza(e)]
    }
}

fn db_result_valid(local: &str, remote: &str) -> String {
    format!(
        "<db:result type='valid' from='{}' to='{}'/>",
        attr(local),
        attr(remote)
    )
}

/// Compares in constant time.
fn subtle_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

// ---- outgoing ------------------------------------------------------------------------------

/// What the connection of an outgoing stream must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum OutOutput {
    Send(String),
    /// `<proceed/>` arrived: run the TLS handshake (naming the remote domain by SNI and
    /// verifying its certificate), then call [`S2sOut::on_tls`].
    StartTls,
    ResetParser,
    /// The stream may carry stanzas from the local domain to the remote one.
    Ready,
    /// A dialback check's answer (verifier streams only).
    Checked(bool),
    /// The stream cannot be used; queued stanzas bounce.
    Failed(String),
    Close,
}

#[derive(Debug, PartialEq, Eq)]
enum OutState {
    /// Header sent; waiting for the peer's header and features.
    Negotiating,
    /// SASL EXTERNAL sent.
    Authenticating,
    /// `<db:result/>` sent.
    Dialback,
    /// `<db:verify/>` sent (verifier).
    Verifying,
    Ready,
    Closed,
}

/// What an outgoing stream is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Purpose {
    /// Carry stanzas from `local` to `remote`.
    Send,
    /// Ask `remote` (the authoritative server) whether a key it made is its own.
    Verify { stream_id: String, key: String },
}

/// A stream this node opened to a peer server.
pub struct S2sOut {
    local: String,
    remote: String,
    secret: String,
    purpose: Purpose,
    state: OutState,
    tls: bool,
    sasl_done: bool,
    external_refused: bool,
    stream_id: Option<String>,
}

impl S2sOut {
    /// A stream to carry stanzas from `local` to `remote`.
    pub fn new(local: &str, remote: &str, dialback_secret: &str) -> Self {
        Self::with_purpose(local, remote, dialback_secret, Purpose::Send)
    }

    /// A stream that checks a dialback key with `remote`'s authoritative server: `local`
    /// received a stream (`stream_id`) claiming to be `remote`, with `key`.
    pub fn verifier(local: &str, remote: &str, stream_id: &str, key: &str) -> Self {
        Self::with_purpose(
            local,
            remote,
            "",
            Purpose::Verify {
                stream_id: stream_id.into(),
                key: key.into(),
            },
        )
    }

    fn with_purpose(local: &str, remote: &str, secret: &str, purpose: Purpose) -> Self {
        Self {
            local: local.into(),
            remote: remote.into(),
            secret: secret.into(),
            purpose,
            state: OutState::Negotiating,
            tls: false,
            sasl_done: false,
            external_refused: false,
            stream_id: None,
        }
    }

    /// The first bytes: the stream header.
    pub fn start(&mut self) -> Vec<OutOutput> {
        vec![OutOutput::Send(stream_header(
            None,
            Some(&self.local),
            Some(&self.remote),
        ))]
    }

    pub fn is_ready(&self) -> bool {
        self.state == OutState::Ready
    }

    /// TLS is up (its certificate check passed or failed in the connection, which says
    /// whether to go on): restart the stream.
    pub fn on_tls(&mut self) -> Vec<OutOutput> {
        self.tls = true;
        self.state = OutState::Negotiating;
        let mut out = vec![OutOutput::ResetParser];
        out.extend(self.start());
        out
    }

    fn failed(&mut self, why: impl Into<String>) -> Vec<OutOutput> {
        self.state = OutState::Closed;
        vec![
            OutOutput::Send("</stream:stream>".into()),
            OutOutput::Failed(why.into()),
            OutOutput::Close,
        ]
    }

    pub fn feed(&mut self, event: StreamEvent) -> Vec<OutOutput> {
        if self.state == OutState::Closed {
            return vec![];
        }
        match event {
            StreamEvent::StreamOpen(h) => {
                if h.default_ns != ns::SERVER {
                    return self.failed("the peer answered with a stream not in jabber:server");
                }
                self.stream_id = h.id;
                vec![]
            }
            StreamEvent::StreamClose => {
                self.state = OutState::Closed;
                vec![
                    OutOutput::Send("</stream:stream>".into()),
                    OutOutput::Failed("the peer closed the stream".into()),
                    OutOutput::Close,
                ]
            }
            StreamEvent::Stanza(e) => self.on_element(e),
        }
    }

    fn on_element(&mut self, e: Element) -> Vec<OutOutput> {
        if e.is("features", ns::STREAM) {
            return self.on_features(&e);
        }
        if e.is("proceed", ns::TLS) {
            return vec![OutOutput::StartTls];
        }
        if e.is("error", ns::STREAM) {
            let condition = e
                .children()
                .find(|c| c.ns() == ns::STREAMS_ERRORS && c.name() != "text")
                .map(|c| c.name().to_string())
                .unwrap_or_else(|| "undefined-condition".into());
            return self.failed(format!("the peer ended the stream: {condition}"));
        }
        if e.is("success", ns::SASL) && self.state == OutState::Authenticating {
            self.sasl_done = true;
            self.state = OutState::Negotiating;
            let mut out = vec![OutOutput::ResetParser];
            out.extend(self.start());
            return out;
        }
        if e.is("failure", ns::SASL) && self.state == OutState::Authenticating {
            // The peer does not accept our certificate: dialback instead.
            self.external_refused = true;
            return self.dialback();
        }
        if e.ns() == NS_DIALBACK && e.name() == "result" && self.state == OutState::Dialback {
            return match e.attr("type") {
                Some("valid") => {
                    self.state = OutState::Ready;
                    vec![OutOutput::Ready]
                }
                Some(t) => {
                    let t = t.to_string();
                    self.failed(format!("the peer refused our dialback key ({t})"))
                }
                None => vec![],
            };
        }
        if e.ns() == NS_DIALBACK && e.name() == "verify" && self.state == OutState::Verifying {
            let valid = e.attr("type") == Some("valid");
            self.state = OutState::Closed;
            return vec![
                OutOutput::Checked(valid),
                OutOutput::Send("</stream:stream>".into()),
                OutOutput::Close,
            ];
        }
        vec![]
    }

    fn on_features(&mut self, features: &Element) -> Vec<OutOutput> {
        if !self.tls {
            return if features.has_child("starttls", ns::TLS) {
                vec![OutOutput::Send(format!("<starttls xmlns='{}'/>", ns::TLS))]
            } else {
                self.failed("the peer offers no TLS")
            };
        }
        if let Purpose::Verify { stream_id, key } = &self.purpose {
            let verify = format!(
                "<db:verify from='{}' to='{}' id='{}'>{}</db:verify>",
                attr(&self.local),
                attr(&self.remote),
                attr(stream_id),
                attr(key)
            );
            self.state = OutState::Verifying;
            return vec![OutOutput::Send(verify)];
        }
        if self.sasl_done {
            self.state = OutState::Ready;
            return vec![OutOutput::Ready];
        }
        let external = features
            .get_child("mechanisms", ns::SASL)
            .is_some_and(|m| m.children().any(|c| c.text().trim() == "EXTERNAL"));
        if external && !self.external_refused {
            self.state = OutState::Authenticating;
            return vec![OutOutput::Send(format!(
                "<auth xmlns='{}' mechanism='EXTERNAL'>{}</auth>",
                ns::SASL,
                B64.encode(&self.local)
            ))];
        }
        if features.has_child("dialback", NS_DIALBACK_FEATURE) || !external {
            return self.dialback();
        }
        self.failed("the peer offers no way to authenticate")
    }

    fn dialback(&mut self) -> Vec<OutOutput> {
        let Some(id) = self.stream_id.clone() else {
            return self.failed("the peer's stream header had no id, which dialback needs");
        };
        let key = dialback_key(&self.secret, &self.remote, &self.local, &id);
        self.state = OutState::Dialback;
        vec![OutOutput::Send(format!(
            "<db:result from='{}' to='{}'>{key}</db:result>",
            attr(&self.local),
            attr(&self.remote)
        ))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::parser::StreamParser;

    /// Parses what one side sent as the other side's events.
    fn events(parser: &mut StreamParser, bytes: &str) -> Vec<StreamEvent> {
        parser.feed(bytes.as_bytes());
        let mut out = Vec::new();
        while let Some(ev) = parser.next_event().unwrap() {
            out.push(ev);
        }
        out
    }

    fn config(secret: &str) -> S2sConfig {
        S2sConfig {
            host_access: Arc::new(|d: &str| {
                if d.ends_with(".local") {
                    HostAccess::Open
                } else {
                    HostAccess::Unknown
                }
            }),
            federates: Arc::new(|_l: &str, r: &str| r != "blocked.example"),
            dialback_secret: secret.into(),
        }
    }

    fn sent_in(out: &[InOutput]) -> String {
        out.iter()
            .filter_map(|o| match o {
                InOutput::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn sent_out(out: &[OutOutput]) -> String {
        out.iter()
            .filter_map(|o| match o {
                OutOutput::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn dialback_keys_follow_xep_0185() {
        // The example of XEP-0185 §3.
        assert_eq!(
            hex::encode(Sha256::digest(b"s3cr3tf0rd14lb4ck")),
            "a7136eb1f46c9ef18c5e78c36ca257067c69b3d518285f0b18a96c33beae9acc"
        );
        let k = dialback_key(
            "s3cr3tf0rd14lb4ck",
            "example.net",
            "example.com",
            "D60000229F",
        );
        assert_eq!(k.len(), 64);
        assert_ne!(
            k,
            dialback_key(
                "s3cr3tf0rd14lb4ck",
                "example.net",
                "example.com",
                "D60000229E"
            )
        );
        assert_ne!(
            k,
            dialback_key("another secret", "example.net", "example.com", "D60000229F")
        );
    }

    /// Runs an outgoing and an incoming machine against each other over in-memory
    /// "sockets" until nothing moves; the dialback check is answered by `check`.
    fn converse(
        out: &mut S2sOut,
        inn: &mut S2sIn,
        cert_domains: Vec<String>,
        check: &dyn Fn(&str, &str, &str, &str) -> bool,
    ) -> (Vec<OutOutput>, Vec<InOutput>) {
        let mut to_in = StreamParser::new(Default::default());
        let mut to_out = StreamParser::new(Default::default());
        let mut out_log = Vec::new();
        let mut in_log = Vec::new();
        let mut pending_out: Vec<OutOutput> = out.start();
        let mut pending_in: Vec<InOutput> = Vec::new();
        for _ in 0..50 {
            if pending_out.is_empty() && pending_in.is_empty() {
                break;
            }
            for o in std::mem::take(&mut pending_out) {
                match &o {
                    OutOutput::Send(bytes) => {
                        for ev in events(&mut to_in, bytes) {
                            pending_in.extend(inn.feed(ev));
                        }
                    }
                    OutOutput::StartTls => {
                        // Both sides restart their parsers over TLS.
                        to_in = StreamParser::new(Default::default());
                        to_out = StreamParser::new(Default::default());
                        let _ = inn.on_tls(cert_domains.clone());
                        pending_out.extend(out.on_tls());
                    }
                    OutOutput::ResetParser => to_out = StreamParser::new(Default::default()),
                    _ => {}
                }
                out_log.push(o);
            }
            for i in std::mem::take(&mut pending_in) {
                match &i {
                    InOutput::Send(bytes) => {
                        for ev in events(&mut to_out, bytes) {
                            pending_out.extend(out.feed(ev));
                        }
                    }
                    InOutput::ResetParser => to_in = StreamParser::new(Default::default()),
                    InOutput::VerifyDialback {
                        local,
                        remote,
                        stream_id,
                        key,
                    } => {
                        let ok = check(local, remote, stream_id, key);
                        pending_in.extend(inn.on_dialback_checked(local, remote, ok));
                    }
                    _ => {}
                }
                in_log.push(i);
            }
        }
        (out_log, in_log)
    }

    #[test]
    fn dialback_authenticates_after_starttls_and_the_authoritative_check() {
        let mut out = S2sOut::new("peer.example", "a.local", "peer-secret");
        let mut inn = S2sIn::new(config("our-secret"), None);
        // The authoritative server of peer.example is a second S2sIn with its secret.
        let check = |local: &str, remote: &str, stream_id: &str, key: &str| {
            let mut auth = S2sIn::new(config("peer-secret"), Some(vec![]));
            let verify = Element::new("verify", NS_DIALBACK)
                .with_attr("from", local)
                .with_attr("to", remote)
                .with_attr("id", stream_id)
                .with_text(key);
            // The authoritative side must serve `remote`: give it an access that does.
            auth.cfg.host_access = Arc::new(|_| HostAccess::Open);
            auth.state = InState::Open;
            sent_in(&auth.on_element(verify)).contains("type='valid'")
        };
        let (out_log, in_log) = converse(&mut out, &mut inn, vec![], &check);
        assert!(out_log.contains(&OutOutput::StartTls), "{out_log:?}");
        assert!(out.is_ready(), "{out_log:?}\n{in_log:?}");
        assert!(in_log.contains(&InOutput::Authorized {
            local: "a.local".into(),
            remote: "peer.example".into()
        }));
        // Stanzas of the pair pass, renamespaced; others end the stream.
        let msg = Element::new("message", ns::SERVER)
            .with_attr("from", "juliet@peer.example/x")
            .with_attr("to", "romeo@a.local");
        let passed = inn.on_element(msg);
        assert!(
            matches!(&passed[0], InOutput::Stanza(e) if e.ns() == ns::CLIENT),
            "{passed:?}"
        );
        let spoofed = Element::new("message", ns::SERVER)
            .with_attr("from", "eve@other.example")
            .with_attr("to", "romeo@a.local");
        let ended = inn.on_element(spoofed);
        assert!(
            sent_in(&ended).contains("invalid-from") && inn.is_closed(),
            "{ended:?}"
        );
    }

    #[test]
    fn a_key_that_does_not_verify_ends_the_stream() {
        let mut out = S2sOut::new("peer.example", "a.local", "peer-secret");
        let mut inn = S2sIn::new(config("our-secret"), None);
        let (out_log, in_log) = converse(&mut out, &mut inn, vec![], &|_, _, _, _| false);
        assert!(!out.is_ready());
        assert!(
            out_log.iter().any(|o| matches!(o, OutOutput::Failed(_))),
            "{out_log:?}"
        );
        assert!(sent_in(&in_log).contains("type='invalid'"), "{in_log:?}");
    }

    #[test]
    fn a_verified_certificate_authenticates_with_sasl_external() {
        let mut out = S2sOut::new("peer.example", "a.local", "peer-secret");
        let mut inn = S2sIn::new(config("our-secret"), None);
        let (out_log, in_log) = converse(
            &mut out,
            &mut inn,
            vec!["peer.example".into()],
            &|_, _, _, _| panic!("no dialback needed"),
        );
        assert!(out.is_ready(), "{out_log:?}\n{in_log:?}");
        assert!(sent_out(&out_log).contains("mechanism='EXTERNAL'"));
        assert!(in_log.contains(&InOutput::Authorized {
            local: "a.local".into(),
            remote: "peer.example".into()
        }));
    }

    #[test]
    fn streams_are_refused_without_tls_for_unknown_domains_and_by_policy() {
        // No STARTTLS offered by the peer: the outgoing stream fails.
        let mut out = S2sOut::new("peer.example", "a.local", "s");
        let _ = out.start();
        let mut p = StreamParser::new(Default::default());
        let mut results = Vec::new();
        for ev in events(
            &mut p,
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' id='x' version='1.0'><stream:features/>",
        ) {
            results.extend(out.feed(ev));
        }
        assert!(
            results
                .iter()
                .any(|o| matches!(o, OutOutput::Failed(w) if w.contains("no TLS"))),
            "{results:?}"
        );

        // An unknown local domain: host-unknown.
        let mut inn = S2sIn::new(config("s"), None);
        let mut p = StreamParser::new(Default::default());
        let mut got = Vec::new();
        for ev in events(
            &mut p,
            "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='nope.example' from='peer.example' version='1.0'>",
        ) {
            got.extend(inn.feed(ev));
        }
        assert!(sent_in(&got).contains("host-unknown"), "{got:?}");

        // Dialback before TLS: policy-violation.
        let mut inn = S2sIn::new(config("s"), None);
        let mut p = StreamParser::new(Default::default());
        let mut got = Vec::new();
        for ev in events(
            &mut p,
            "<stream:stream xmlns='jabber:server' xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' to='a.local' from='peer.example' version='1.0'><db:result from='peer.example' to='a.local'>k</db:result>",
        ) {
            got.extend(inn.feed(ev));
        }
        assert!(sent_in(&got).contains("policy-violation"), "{got:?}");

        // A blocked peer (the vhost's federation policy): the dialback request is refused.
        let mut inn = S2sIn::new(config("s"), Some(vec![]));
        inn.state = InState::Open;
        inn.local = Some("a.local".into());
        let refused = inn.on_element(
            Element::new("result", NS_DIALBACK)
                .with_attr("from", "blocked.example")
                .with_attr("to", "a.local")
                .with_text("k"),
        );
        assert!(sent_in(&refused).contains("not-authorized"), "{refused:?}");
    }
}
