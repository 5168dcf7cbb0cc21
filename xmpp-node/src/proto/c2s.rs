//! Client-to-server stream negotiation (RFC 6120 §4–§7) as a state machine without I/O.
//!
//! The connection feeds it parsed [`StreamEvent`]s and the answers to what it asked for
//! (credentials, the bound resource), and it returns [`Output`]s: bytes to send, "start TLS
//! now", "restart the parser", "look up this account", and, once a resource is bound, the
//! client's stanzas with their `from` stamped, ready for routing.
//!
//! ```text
//!  header ─► features(starttls) ─► <starttls/> ─► TLS ─► header ─► features(mechanisms)
//!    ─► <auth/> ⇄ <challenge/>/<response/> ─► <success/> ─► header ─► features(bind)
//!    ─► <iq><bind/></iq> ─► bound: stanzas flow
//!                    └─► <resume/> (XEP-0198) ─► the connection resumes a session ─► bound
//! ```
//!
//! Stream management (XEP-0198, [`super::sm`]) is offered after authentication when the node
//! runs it; its elements (`<enable/>`, `<r/>`, `<a/>`, `<resume/>`) come out as
//! [`Output::Sm`] for the connection, which owns the per-session state because that state
//! outlives a broken stream.
//!
//! In-band registration (XEP-0077, [`super::register`]) is offered before authentication
//! where the domain lets people create accounts from their app (and once TLS is up when
//! TLS is required): a `jabber:iq:register` get is answered here, a set comes out as
//! [`Output::Register`] for the connection, which creates the account and answers with
//! [`C2s::on_registered`]; the client then authenticates on the same stream.
//!
//! Every stream header is checked against how the node serves the domain ([`HostAccess`]):
//! a domain that is not hosted gets `host-unknown`, a suspended one `policy-violation`,
//! a moved one `see-other-host` naming its new host (RFC 6120 §4.9.3.19). The connection
//! ends open sessions with the same [`StreamError`] when the domain's policy changes.

use std::{borrow::Cow, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD as B64};

use super::{
    element::Element,
    jid::Jid,
    ns,
    parser::{ParseError, StreamEvent, StreamHeader},
    register::{self, Refusal, Request},
    sasl::{self, Mechanism, SaslError, ScramCredentials, ScramHash, ScramServer},
    sm,
    stanza::{self, Condition},
};

/// What the connection must do next.
#[derive(Debug, PartialEq, Eq)]
pub enum Output {
    /// Write these bytes.
    Send(String),
    /// `<proceed/>` is queued: flush it, run the TLS handshake, then call [`C2s::on_tls`].
    StartTls,
    /// The stream restarts: give the parser a fresh start.
    ResetParser,
    /// Look up the SCRAM keys of an account and answer with [`C2s::on_credentials`].
    LookupCredentials {
        vhost: String,
        username: String,
        hash: ScramHash,
    },
    /// Before authentication: create this account (XEP-0077 §3.1) and answer with
    /// [`C2s::on_registered`].
    Register {
        iq_id: String,
        username: String,
        password: String,
    },
    /// An authentication attempt failed (for per-IP and per-account slow-down).
    AuthFailed { username: Option<String> },
    /// The client authenticated as this bare JID.
    Authenticated(Jid),
    /// The client asks for a resource (`None`: make one up). Answer with [`C2s::on_bound`].
    Bind {
        resource: Option<String>,
        iq_id: String,
    },
    /// A stanza from the bound client, `from` stamped with its full JID.
    Stanza(Element),
    /// A stream management element (XEP-0198) after authentication, or what to answer a
    /// malformed one. Answer `<resume/>` with [`C2s::on_resumed`] when it succeeds.
    Sm(Result<sm::Nonza, sm::Rejection>),
    /// XEP-0352: the client is active (`true`) or inactive again.
    Csi(bool),
    /// Close the connection once everything before this is written.
    Close,
}

/// A stream error (RFC 6120 §4.9): the condition, the content of a condition that has one
/// (`see-other-host` names the host), a sentence for people, and an application-specific
/// condition (XEP-0198's `<handled-count-too-high/>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    pub condition: &'static str,
    pub content: Option<String>,
    pub text: Option<Cow<'static, str>>,
    pub app: Option<Element>,
}

impl StreamError {
    pub fn new(condition: &'static str, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            condition,
            content: None,
            text: Some(text.into()),
            app: None,
        }
    }

    /// With an application-specific condition element (RFC 6120 §4.9.4).
    pub fn with_app(mut self, app: Option<Element>) -> Self {
        self.app = app;
        self
    }

    /// `<see-other-host>host</see-other-host>` (RFC 6120 §4.9.3.19): reconnect there.
    pub fn see_other_host(host: &str) -> Self {
        Self {
            condition: "see-other-host",
            content: Some(host.to_string()),
            text: Some(format!("This domain is now served by {host}; reconnect there.").into()),
            app: None,
        }
    }
}

/// How the node serves a domain, as far as stream negotiation cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAccess {
    /// Not hosted here.
    Unknown,
    /// Hosted, and open to its users.
    Open,
    /// Hosted, but its provider suspended it: nobody logs in, data is kept.
    Suspended,
    /// Being moved to another node (`host` or `host:port`).
    MovedTo(String),
}

/// The text a suspended domain's users see.
pub const SUSPENDED_TEXT: &str = "This domain is suspended by its provider; contact them.";

impl HostAccess {
    /// The stream error that refuses a new stream to the domain, or ends an open one;
    /// `None` when the domain is open.
    pub fn refusal(&self) -> Option<StreamError> {
        match self {
            HostAccess::Open => None,
            HostAccess::Unknown => Some(StreamError::new(
                "host-unknown",
                "This domain is not served here.",
            )),
            HostAccess::Suspended => Some(StreamError::new("policy-violation", SUSPENDED_TEXT)),
            HostAccess::MovedTo(host) => Some(StreamError::see_other_host(host)),
        }
    }
}

/// Fixed facts about the connection and the node.
#[derive(Clone)]
pub struct C2sConfig {
    /// STARTTLS can be offered (the node has TLS configured).
    pub starttls_available: bool,
    /// Nothing but STARTTLS before TLS.
    pub require_tls: bool,
    /// Failed SASL attempts before the stream is closed.
    pub max_auth_failures: u32,
    /// The SCRAM iteration count shown for unknown users (as for real ones).
    pub scram_iterations: u32,
    /// How a domain is served here (asked at every stream header).
    pub host_access: Arc<dyn Fn(&str) -> HostAccess + Send + Sync>,
    /// Offer XEP-0198 stream management after authentication.
    pub stream_management: bool,
    /// Whether a domain lets people register in-band (XEP-0077; asked at every header).
    pub registration: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

#[derive(Debug)]
enum State {
    /// Waiting for the client's stream header.
    Header,
    /// Header answered with features; waiting for STARTTLS or SASL.
    PreAuth,
    /// Waiting for the account's credentials from the store.
    AwaitCredentials {
        mechanism: Mechanism,
        scram: Option<ScramServer>,
        plain_password: Option<String>,
    },
    /// Challenge sent; waiting for the client's response.
    Challenged {
        scram: ScramServer,
    },
    /// Authenticated; waiting for the bind request.
    Bind,
    /// Bind requested; waiting for the connection to register the resource.
    AwaitBound,
    Bound {
        jid: Jid,
    },
    Closed,
}

pub struct C2s {
    cfg: C2sConfig,
    state: State,
    tls: bool,
    /// tls-exporter keying material of this connection (RFC 9266), once TLS is up.
    channel_binding: Option<Vec<u8>>,
    /// The hosted domain the client asked for.
    domain: Option<String>,
    authenticated: Option<Jid>,
    auth_failures: u32,
    header_sent: bool,
    /// The user name of the SASL exchange in progress.
    pending_user: Option<String>,
}

impl C2s {
    pub fn new(cfg: C2sConfig) -> Self {
        Self {
            cfg,
            state: State::Header,
            tls: false,
            channel_binding: None,
            domain: None,
            authenticated: None,
            auth_failures: 0,
            header_sent: false,
            pending_user: None,
        }
    }

    /// TLS is up (after STARTTLS, or from the first byte for direct TLS).
    pub fn on_tls(&mut self, channel_binding: Option<Vec<u8>>) -> Vec<Output> {
        self.tls = true;
        self.channel_binding = channel_binding;
        self.state = State::Header;
        self.header_sent = false;
        vec![Output::ResetParser]
    }

    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The bound full JID, once bound.
    pub fn jid(&self) -> Option<&Jid> {
        match &self.state {
            State::Bound { jid, .. } => Some(jid),
            _ => None,
        }
    }

    /// The authenticated account (bare JID), once SASL succeeded.
    pub fn authenticated(&self) -> Option<&Jid> {
        self.authenticated.as_ref()
    }

    /// The hosted domain of this stream, once the header named it.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Feeds one parsed event.
    pub fn on_event(&mut self, event: StreamEvent) -> Vec<Output> {
        if self.is_closed() {
            return vec![];
        }
        match event {
            StreamEvent::StreamOpen(header) => self.on_header(header),
            StreamEvent::StreamClose => {
                self.state = State::Closed;
                vec![Output::Send("</stream:stream>".into()), Output::Close]
            }
            StreamEvent::Stanza(element) => self.on_element(element),
        }
    }

    /// The parser failed: the matching stream error, then close.
    pub fn on_parse_error(&mut self, error: &ParseError) -> Vec<Output> {
        self.stream_error(error.condition(), None)
    }

    /// Ends the stream with a stream error (RFC 6120 §4.9).
    pub fn stream_error(&mut self, condition: &str, text: Option<&str>) -> Vec<Output> {
        self.end_with(condition, None, text, None)
    }

    /// Ends the stream with `error` (a kick from the node, a refused domain).
    pub fn send_stream_error(&mut self, error: &StreamError) -> Vec<Output> {
        self.end_with(
            error.condition,
            error.content.as_deref(),
            error.text.as_deref(),
            error.app.as_ref(),
        )
    }

    fn end_with(
        &mut self,
        condition: &str,
        content: Option<&str>,
        text: Option<&str>,
        app: Option<&Element>,
    ) -> Vec<Output> {
        if self.is_closed() {
            return vec![];
        }
        let mut out = String::new();
        if !self.header_sent {
            out.push_str(&self.header(None));
        }
        let mut condition = Element::new(condition, ns::STREAMS_ERRORS);
        if let Some(c) = content {
            condition = condition.with_text(c);
        }
        let mut error = Element::new("error", ns::STREAM).with_child(condition);
        if let Some(t) = text {
            error.append_child(
                Element::new("text", ns::STREAMS_ERRORS)
                    .with_attr("xml:lang", "en")
                    .with_text(t),
            );
        }
        if let Some(app) = app {
            error.append_child(app.clone());
        }
        out.push_str(&write_stream_child(&error));
        out.push_str("</stream:stream>");
        self.state = State::Closed;
        vec![Output::Send(out), Output::Close]
    }

    /// Ends a bound stream cleanly (server shutdown).
    pub fn close(&mut self) -> Vec<Output> {
        if self.is_closed() {
            return vec![];
        }
        self.state = State::Closed;
        vec![Output::Send("</stream:stream>".into()), Output::Close]
    }

    fn header(&self, id: Option<&str>) -> String {
        let from = self
            .domain
            .as_deref()
            .map(|d| format!(" from='{}'", escape(d)))
            .unwrap_or_default();
        let id = id.map(str::to_owned).unwrap_or_else(random_id);
        format!(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='{id}'{from} version='1.0' xml:lang='en'>"
        )
    }

    fn on_header(&mut self, header: StreamHeader) -> Vec<Output> {
        if !matches!(self.state, State::Header) {
            return self.stream_error(
                "not-well-formed",
                Some("A stream header inside the stream."),
            );
        }
        if header.default_ns != ns::CLIENT {
            return self.stream_error("invalid-namespace", None);
        }
        let Some(to) = header.to.as_deref() else {
            return self.stream_error(
                "host-unknown",
                Some("The stream header names no domain ('to')."),
            );
        };
        let domain = match Jid::parse(to) {
            Ok(j) if j.node().is_none() && j.resource().is_none() => j.domain().to_string(),
            _ => {
                return self
                    .stream_error("host-unknown", Some("The stream's 'to' is not a domain."));
            }
        };
        if let Some(previous) = &self.domain
            && *previous != domain
        {
            return self.stream_error(
                "host-unknown",
                Some("A restarted stream must name the same domain."),
            );
        }
        // Asked again at every restart: a domain suspended or moved meanwhile ends here.
        let access = (self.cfg.host_access)(&domain);
        if let Some(refusal) = access.refusal() {
            if access != HostAccess::Unknown {
                // The answering header names the domain the client asked for.
                self.domain = Some(domain);
            }
            return self.send_stream_error(&refusal);
        }
        self.domain = Some(domain);
        match header.version.as_deref() {
            Some(v) if major_version(v) >= Some(1) => {}
            _ => return self.stream_error("unsupported-version", Some("Rookery speaks XMPP 1.0.")),
        }
        let mut out = self.header(None);
        self.header_sent = true;
        let mut features = Element::new("features", ns::STREAM);
        if self.authenticated.is_some() {
            features.append_child(Element::new("bind", ns::BIND));
            features.append_child(
                Element::new("session", ns::SESSION)
                    .with_child(Element::new("optional", ns::SESSION)),
            );
            features.append_child(Element::new("ver", ns::ROSTER_VER));
            features.append_child(Element::new("sub", ns::PRE_APPROVAL));
            if self.cfg.stream_management {
                features.append_child(sm::feature());
            }
            features.append_child(super::csi::feature());
            self.state = State::Bind;
        } else {
            if !self.tls && self.cfg.starttls_available {
                let mut starttls = Element::new("starttls", ns::TLS);
                if self.cfg.require_tls {
                    starttls.append_child(Element::new("required", ns::TLS));
                }
                features.append_child(starttls);
            }
            if self.tls || !self.cfg.require_tls {
                let mut mechanisms = Element::new("mechanisms", ns::SASL);
                for m in sasl::offered(self.tls, self.channel_binding.is_some()) {
                    mechanisms
                        .append_child(Element::new("mechanism", ns::SASL).with_text(m.name()));
                }
                features.append_child(mechanisms);
                if self.channel_binding.is_some() {
                    features.append_child(
                        Element::new("sasl-channel-binding", "urn:xmpp:sasl-cb:0").with_child(
                            Element::new("channel-binding", "urn:xmpp:sasl-cb:0")
                                .with_attr("type", "tls-exporter"),
                        ),
                    );
                }
                if self.registration_open() {
                    features.append_child(register::feature());
                }
            }
            self.state = State::PreAuth;
        }
        out.push_str(&write_stream_child(&features));
        vec![Output::Send(out)]
    }

    fn on_element(&mut self, e: Element) -> Vec<Output> {
        // The hot path: a bound session's stanza, without taking the state apart.
        if let State::Bound { jid } = &self.state {
            return match bound_stanza(e, jid) {
                Ok(outputs) => outputs,
                Err(e) => match self.sm_element(&e) {
                    Some(out) => out,
                    None => match super::csi::parse(&e) {
                        Some(active) => vec![Output::Csi(active)],
                        None => self.stream_error("unsupported-stanza-type", None),
                    },
                },
            };
        }
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Header => {
                self.state = State::Header;
                self.stream_error("not-well-formed", Some("Expected a stream header."))
            }
            State::PreAuth => self.pre_auth(e),
            State::Challenged { scram } => self.sasl_response(e, scram),
            State::AwaitCredentials {
                mechanism,
                scram,
                plain_password,
            } => {
                // The client must wait for our answer; anything now is out of order.
                self.state = State::AwaitCredentials {
                    mechanism,
                    scram,
                    plain_password,
                };
                self.stream_error(
                    "policy-violation",
                    Some("Wait for the server's SASL answer."),
                )
            }
            State::Bind => self.bind(e),
            State::AwaitBound => {
                self.state = State::AwaitBound;
                self.stream_error("policy-violation", Some("Wait for the bind result."))
            }
            State::Bound { .. } => unreachable!("handled above"),
            State::Closed => vec![],
        }
    }

    fn pre_auth(&mut self, e: Element) -> Vec<Output> {
        self.state = State::PreAuth;
        if e.is("starttls", ns::TLS) {
            if self.tls || !self.cfg.starttls_available {
                return self.stream_error(
                    "policy-violation",
                    Some("TLS is not available on this stream."),
                );
            }
            return vec![
                Output::Send("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".into()),
                Output::StartTls,
            ];
        }
        if e.is("auth", ns::SASL) {
            if !self.tls && self.cfg.require_tls {
                return vec![sasl_failure("encryption-required", None)];
            }
            return self.sasl_auth(e);
        }
        if e.is("abort", ns::SASL) {
            return vec![sasl_failure("aborted", None)];
        }
        // Never before TLS when TLS is required: the password would travel in the clear.
        if register::is_register_iq(&e) && (self.tls || !self.cfg.require_tls) {
            return self.register_iq(&e);
        }
        if stanza::is_stanza(&e) {
            return self.stream_error("not-authorized", Some("Authenticate first."));
        }
        self.stream_error("unsupported-stanza-type", None)
    }

    /// Whether the stream's domain lets people register in-band.
    fn registration_open(&self) -> bool {
        self.domain
            .as_deref()
            .is_some_and(|d| (self.cfg.registration)(d))
    }

    /// A `jabber:iq:register` get or set before authentication (XEP-0077 §3.1).
    fn register_iq(&mut self, e: &Element) -> Vec<Output> {
        let domain = self.domain.clone().unwrap_or_default();
        let refuse = |refusal: Refusal| vec![Output::Send(write_stanza(&refusal.error(e)))];
        if !self.registration_open() {
            return refuse(Refusal::Off { domain });
        }
        match register::parse(e) {
            Request::Fields => {
                let reply = stanza::iq_result(e).with_child(register::fields(&domain));
                vec![Output::Send(write_stanza(&reply))]
            }
            Request::Set { username, password } => vec![Output::Register {
                iq_id: e.attr("id").unwrap_or_default().to_string(),
                username,
                password,
            }],
            Request::Remove => refuse(Refusal::NotAuthorized(
                "Log in first to delete your account.",
            )),
            Request::Invalid(why) => refuse(Refusal::NotAcceptable(why.into())),
        }
    }

    /// The connection's answer to [`Output::Register`]: the account exists now, or why not.
    /// The stream stays as it was; the client logs in next (or tries another name).
    pub fn on_registered(&mut self, iq_id: &str, outcome: Result<(), Refusal>) -> Vec<Output> {
        if !matches!(self.state, State::PreAuth) {
            return vec![];
        }
        let request = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", iq_id);
        let reply = match outcome {
            Ok(()) => stanza::iq_result(&request),
            Err(refusal) => refusal.error(&request),
        };
        vec![Output::Send(write_stanza(&reply))]
    }

    fn sasl_auth(&mut self, e: Element) -> Vec<Output> {
        let offered = sasl::offered(self.tls, self.channel_binding.is_some());
        let mechanism = match e.attr("mechanism").and_then(Mechanism::parse) {
            Some(m) if offered.contains(&m) => m,
            _ => return vec![sasl_failure("invalid-mechanism", None)],
        };
        let payload = match decode_payload(&e.text()) {
            Ok(p) => p,
            Err(_) => return self.auth_failed(SaslError::IncorrectEncoding),
        };
        let vhost = self.domain.clone().unwrap_or_default();
        match mechanism {
            Mechanism::Plain => match sasl::parse_plain(&payload) {
                Ok(plain) => {
                    if plain
                        .authzid
                        .as_deref()
                        .is_some_and(|z| !self.authzid_matches(z, &plain.authcid))
                    {
                        return self.auth_failed(SaslError::InvalidAuthzid);
                    }
                    self.pending_user = Some(plain.authcid.clone());
                    self.state = State::AwaitCredentials {
                        mechanism,
                        scram: None,
                        plain_password: Some(plain.password),
                    };
                    vec![Output::LookupCredentials {
                        vhost,
                        username: plain.authcid,
                        hash: ScramHash::Sha256,
                    }]
                }
                Err(err) => self.auth_failed(err),
            },
            scram_mechanism => {
                let hash = scram_mechanism.scram_hash().unwrap_or(ScramHash::Sha256);
                let mut scram =
                    match ScramServer::for_mechanism(scram_mechanism, self.channel_binding.clone())
                    {
                        Ok(s) => s.with_unknown_user_iterations(self.cfg.scram_iterations),
                        Err(e) => return self.auth_failed(e),
                    };
                match scram.client_first(&payload) {
                    Ok(first) => {
                        if first
                            .authzid
                            .as_deref()
                            .is_some_and(|z| !self.authzid_matches(z, &first.username))
                        {
                            return self.auth_failed(SaslError::InvalidAuthzid);
                        }
                        self.pending_user = Some(first.username.clone());
                        self.state = State::AwaitCredentials {
                            mechanism,
                            scram: Some(scram),
                            plain_password: None,
                        };
                        vec![Output::LookupCredentials {
                            vhost,
                            username: first.username,
                            hash,
                        }]
                    }
                    Err(err) => self.auth_failed(err),
                }
            }
        }
    }

    /// The store's answer to [`Output::LookupCredentials`] (`None`: no such account).
    pub fn on_credentials(&mut self, creds: Option<ScramCredentials>) -> Vec<Output> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::AwaitCredentials {
                scram: Some(mut scram),
                ..
            } => {
                let challenge = scram.server_first(creds.as_ref());
                self.state = State::Challenged { scram };
                vec![Output::Send(format!(
                    "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
                    B64.encode(challenge)
                ))]
            }
            State::AwaitCredentials {
                scram: None,
                plain_password: Some(password),
                ..
            } => {
                // Unknown users cost the same key derivation as a wrong password.
                match sasl::verify_plain(creds.as_ref(), &password) {
                    Ok(()) => self.auth_succeeded(None),
                    Err(e) => self.auth_failed(e),
                }
            }
            other => {
                self.state = other;
                vec![]
            }
        }
    }

    fn sasl_response(&mut self, e: Element, mut scram: ScramServer) -> Vec<Output> {
        if e.is("abort", ns::SASL) {
            self.state = State::PreAuth;
            return vec![sasl_failure("aborted", None)];
        }
        if !e.is("response", ns::SASL) {
            self.state = State::PreAuth;
            return self.stream_error("policy-violation", Some("Expected a SASL response."));
        }
        let payload = match decode_payload(&e.text()) {
            Ok(p) => p,
            Err(_) => return self.auth_failed(SaslError::IncorrectEncoding),
        };
        match scram.client_final(&payload) {
            Ok(server_final) => self.auth_succeeded(Some(server_final)),
            Err(err) => self.auth_failed(err),
        }
    }

    fn auth_succeeded(&mut self, additional: Option<Vec<u8>>) -> Vec<Output> {
        let username = self.pending_user.take().unwrap_or_default();
        let domain = self.domain.clone().unwrap_or_default();
        let Ok(jid) = Jid::from_parts(Some(&username), &domain, None) else {
            return self.auth_failed(SaslError::NotAuthorized);
        };
        self.authenticated = Some(jid.clone());
        // Bound to the TLS session for SASL alone: not needed once authenticated.
        self.channel_binding = None;
        self.state = State::Header;
        self.header_sent = false;
        let success = match additional {
            Some(data) => format!(
                "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</success>",
                B64.encode(data)
            ),
            None => "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".into(),
        };
        vec![
            Output::Send(success),
            Output::Authenticated(jid),
            Output::ResetParser,
        ]
    }

    fn auth_failed(&mut self, err: SaslError) -> Vec<Output> {
        self.auth_failures += 1;
        let username = self.pending_user.take();
        self.state = State::PreAuth;
        let mut out = vec![
            Output::AuthFailed { username },
            sasl_failure(err.condition(), None),
        ];
        if self.auth_failures >= self.cfg.max_auth_failures {
            out.extend(self.stream_error(
                "policy-violation",
                Some("Too many failed authentication attempts."),
            ));
        }
        out
    }

    fn authzid_matches(&self, authzid: &str, username: &str) -> bool {
        let domain = self.domain.as_deref().unwrap_or_default();
        match (
            Jid::parse(authzid),
            Jid::from_parts(Some(username), domain, None),
        ) {
            (Ok(z), Ok(me)) => z == me,
            _ => false,
        }
    }

    /// An XEP-0198 element, when stream management is offered and `e` is one.
    fn sm_element(&self, e: &Element) -> Option<Vec<Output>> {
        if !self.cfg.stream_management {
            return None;
        }
        sm::parse(e).map(|nonza| vec![Output::Sm(nonza)])
    }

    fn bind(&mut self, e: Element) -> Vec<Output> {
        self.state = State::Bind;
        if let Some(out) = self.sm_element(&e) {
            return out;
        }
        if !stanza::is_stanza(&e) {
            return self.stream_error("unsupported-stanza-type", None);
        }
        let is_set = e.name() == "iq" && e.attr("type") == Some("set");
        if is_set && let Some(bind) = e.get_child("bind", ns::BIND) {
            let iq_id = e.attr("id").unwrap_or_default().to_string();
            let resource = bind
                .child_text("resource", ns::BIND)
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty());
            if let (Some(r), Some(bare)) = (&resource, &self.authenticated)
                && bare.with_resource(r).is_err()
            {
                let reply = stanza::error_reply(
                    &e,
                    Condition::BadRequest,
                    Some("This resource is not allowed."),
                );
                return vec![Output::Send(write_stanza(&reply))];
            }
            self.state = State::AwaitBound;
            return vec![Output::Bind { resource, iq_id }];
        }
        if is_set && e.has_child("session", ns::SESSION) {
            return vec![Output::Send(write_stanza(&stanza::iq_result(&e)))];
        }
        self.stream_error("not-authorized", Some("Bind a resource first."))
    }

    /// The connection could not bind: the domain's limit on concurrent sessions (`max`)
    /// is reached. The client gets `resource-constraint` (type `wait`) and may try again.
    pub fn on_bind_refused(&mut self, iq_id: &str, max: i64) -> Vec<Output> {
        if !matches!(self.state, State::AwaitBound) {
            return vec![];
        }
        self.state = State::Bind;
        let request = Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", iq_id);
        let text = format!(
            "{} allows at most {max} sessions at once; close another session or try again later.",
            self.domain.as_deref().unwrap_or("This domain")
        );
        let reply = stanza::error_reply(&request, Condition::ResourceConstraint, Some(&text));
        vec![Output::Send(write_stanza(&reply))]
    }

    /// The connection resumed a session bound to `jid` (XEP-0198 §5): the stream is bound
    /// without a new resource binding. The connection wrote `<resumed/>` itself.
    pub fn on_resumed(&mut self, jid: Jid) {
        if matches!(self.state, State::Bind) {
            self.state = State::Bound { jid };
        }
    }

    /// The connection registered `jid` (the requested resource, or one it made up).
    pub fn on_bound(&mut self, jid: Jid, iq_id: &str) -> Vec<Output> {
        self.state = State::Bound { jid: jid.clone() };
        let reply = Element::new("iq", ns::CLIENT)
            .with_attr("type", "result")
            .with_attr("id", iq_id)
            .with_child(
                Element::new("bind", ns::BIND)
                    .with_child(Element::new("jid", ns::BIND).with_text(jid.to_string())),
            );
        vec![Output::Send(write_stanza(&reply))]
    }
}

/// A bound session's stanza: stamped with its sender, its `to` checked and normalised.
/// `Err` (giving it back) when it is not a stanza at all: a stream management element, or
/// something that ends the stream with unsupported-stanza-type.
fn bound_stanza(mut e: Element, jid: &Jid) -> Result<Vec<Output>, Element> {
    if !stanza::is_stanza(&e) {
        return Err(e);
    }
    // RFC 6120 §8.1.2.1: the server stamps the sender's full JID.
    e.set_attr("from", jid.to_string());
    if let Some(to) = e.attr("to") {
        match Jid::parse(to) {
            // Most clients write addresses in their canonical form already.
            Ok(t) if t.is_written_as(to) => {}
            Ok(t) => {
                let normalized = t.to_string();
                e.set_attr("to", normalized);
            }
            Err(_) => {
                if e.attr("type") == Some("error") {
                    return Ok(vec![]);
                }
                let reply = stanza::error_reply(&e, Condition::JidMalformed, None);
                return Ok(vec![Output::Send(write_stanza(&reply))]);
            }
        }
    }
    if e.name() == "iq" && e.has_child("session", ns::SESSION) && e.attr("type") == Some("set") {
        return Ok(vec![Output::Send(write_stanza(&stanza::iq_result(&e)))]);
    }
    Ok(vec![Output::Stanza(e)])
}

/// A stanza as it is written into a `jabber:client` stream.
pub fn write_stanza(e: &Element) -> String {
    let mut out = String::new();
    e.write_to(&mut out, ns::CLIENT);
    out
}

/// A stream-level element (`stream:features`, `stream:error`) with the `stream:` prefix.
fn write_stream_child(e: &Element) -> String {
    let mut out = format!("<stream:{}>", e.name());
    for c in e.children() {
        c.write_to(&mut out, ns::STREAM);
    }
    out.push_str(&format!("</stream:{}>", e.name()));
    out
}

fn sasl_failure(condition: &str, text: Option<&str>) -> Output {
    let mut failure =
        Element::new("failure", ns::SASL).with_child(Element::new(condition, ns::SASL));
    if let Some(t) = text {
        failure.append_child(
            Element::new("text", ns::SASL)
                .with_attr("xml:lang", "en")
                .with_text(t),
        );
    }
    Output::Send(failure.to_xml())
}

/// SASL payloads are base64; `=` alone is an empty response (RFC 6120 §6.4.2).
fn decode_payload(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let t = text.trim();
    if t.is_empty() || t == "=" {
        return Ok(Vec::new());
    }
    B64.decode(t)
}

fn major_version(v: &str) -> Option<u32> {
    v.split('.').next()?.parse().ok()
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    super::element::escape_attr(s, &mut out);
    out
}

fn random_id() -> String {
    let mut b = [0u8; 12];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        parser::{Limits, StreamParser},
        sasl::{derive_credentials, test_support::client_final_message},
    };

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";
    const EXPORTER: &[u8] = b"exporter-bytes-of-this-tls-conn!";

    struct Harness {
        c2s: C2s,
        parser: StreamParser,
    }

    fn harness() -> Harness {
        let cfg = C2sConfig {
            starttls_available: true,
            require_tls: true,
            max_auth_failures: 3,
            scram_iterations: 4096,
            host_access: Arc::new(|d: &str| match d {
                "example.com" => HostAccess::Open,
                "suspended.example" => HostAccess::Suspended,
                "moved.example" => HostAccess::MovedTo("node2.example.net:5222".into()),
                _ => HostAccess::Unknown,
            }),
            stream_management: true,
            registration: Arc::new(|d: &str| d == "example.com"),
        };
        Harness {
            c2s: C2s::new(cfg),
            parser: StreamParser::new(Limits::default()),
        }
    }

    impl Harness {
        /// Feeds client bytes; returns every output, resetting the parser when told to.
        fn send(&mut self, xml: &str) -> Vec<Output> {
            self.parser.feed(xml.as_bytes());
            let mut all = Vec::new();
            loop {
                let outputs = match self.parser.next_event() {
                    Ok(Some(event)) => self.c2s.on_event(event),
                    Ok(None) => break,
                    Err(e) => {
                        // The parser stays failed; one stream error is all there is.
                        all.extend(self.c2s.on_parse_error(&e));
                        break;
                    }
                };
                let reset = outputs.contains(&Output::ResetParser);
                all.extend(outputs);
                if reset {
                    self.parser.reset();
                }
            }
            all
        }

        fn tls(&mut self) {
            assert_eq!(
                self.c2s.on_tls(Some(EXPORTER.to_vec())),
                vec![Output::ResetParser]
            );
            self.parser.reset();
        }

        /// STARTTLS, then a new header: returns the features offered over TLS.
        fn through_tls(&mut self) -> String {
            sent(&self.send(HEADER));
            let out = self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            assert_eq!(out.last(), Some(&Output::StartTls));
            self.tls();
            sent(&self.send(HEADER))
        }
    }

    fn sent(outputs: &[Output]) -> String {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn b64(s: &[u8]) -> String {
        B64.encode(s)
    }

    #[test]
    fn starttls_is_required_before_anything_else() {
        let mut h = harness();
        let features = sent(&h.send(HEADER));
        assert!(
            features.starts_with("<?xml version='1.0'?><stream:stream "),
            "{features}"
        );
        assert!(features.contains("from='example.com'"));
        assert!(features.contains("<stream:features><starttls xmlns=\"urn:ietf:params:xml:ns:xmpp-tls\"><required/></starttls></stream:features>"), "{features}");
        assert!(
            !features.contains("mechanisms"),
            "no SASL before TLS when TLS is required"
        );
        let out = h.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGp1bGlldABwYXNz</auth>");
        assert!(
            sent(&out).contains("<encryption-required/>"),
            "{}",
            sent(&out)
        );
        let out = h.send("<message to='romeo@example.com'><body>hi</body></message>");
        assert!(
            sent(&out).contains(
                "<stream:error><not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"
            ),
            "{}",
            sent(&out)
        );
        assert_eq!(out.last(), Some(&Output::Close));
        assert!(h.c2s.is_closed());
    }

    #[test]
    fn a_domain_not_hosted_here_gets_host_unknown_after_a_header() {
        let mut h = harness();
        let out = h.send(&HEADER.replace("example.com", "elsewhere.example"));
        let text = sent(&out);
        assert!(
            text.starts_with("<?xml version='1.0'?><stream:stream "),
            "{text}"
        );
        assert!(
            text.contains("<host-unknown xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"),
            "{text}"
        );
        assert!(text.ends_with("</stream:stream>"));
        assert_eq!(out.last(), Some(&Output::Close));
    }

    #[test]
    fn a_stream_without_version_one_is_unsupported() {
        let mut h = harness();
        let text = sent(&h.send(&HEADER.replace("' version='1.0'>", "'>")));
        assert!(text.contains("<unsupported-version"), "{text}");
    }

    #[test]
    fn bad_xml_ends_the_stream_with_the_parsers_condition() {
        let mut h = harness();
        sent(&h.send(HEADER));
        let text = sent(&h.send("<message><body>&lol;</body></message>"));
        assert!(text.contains("<restricted-xml"), "{text}");
    }

    #[test]
    fn scram_sha_256_plus_over_starttls_authenticates_and_binds() {
        let mut h = harness();
        let features = h.through_tls();
        for m in [
            "SCRAM-SHA-256-PLUS",
            "SCRAM-SHA-256",
            "SCRAM-SHA-1-PLUS",
            "SCRAM-SHA-1",
            "PLAIN",
        ] {
            assert!(
                features.contains(&format!("<mechanism>{m}</mechanism>")),
                "{m}: {features}"
            );
        }
        assert!(
            features.contains("<channel-binding type=\"tls-exporter\"/>"),
            "{features}"
        );
        assert!(!features.contains("starttls"), "no STARTTLS inside TLS");

        let gs2 = "p=tls-exporter,,";
        let client_first = format!("{gs2}n=juliet,r=clientnonce123456");
        let out = h.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>{}</auth>",
            b64(client_first.as_bytes())
        ));
        assert_eq!(
            out,
            vec![Output::LookupCredentials {
                vhost: "example.com".into(),
                username: "juliet".into(),
                hash: ScramHash::Sha256
            }]
        );
        let creds = derive_credentials(ScramHash::Sha256, "r0meo-r0meo", b"sixteen byte slt", 4096)
            .unwrap();
        let challenge = sent(&h.c2s.on_credentials(Some(creds)));
        let server_first = challenge
            .strip_prefix("<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>")
            .and_then(|c| c.strip_suffix("</challenge>"))
            .map(|c| String::from_utf8(B64.decode(c).unwrap()).unwrap())
            .unwrap();
        let mut cbind = gs2.as_bytes().to_vec();
        cbind.extend_from_slice(EXPORTER);
        let client_final = client_final_message(
            ScramHash::Sha256,
            "r0meo-r0meo",
            "n=juliet,r=clientnonce123456",
            &server_first,
            &cbind,
        );
        let out = h.send(&format!(
            "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</response>",
            b64(client_final.as_bytes())
        ));
        assert!(
            sent(&out).starts_with("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"),
            "{}",
            sent(&out)
        );
        let juliet = Jid::parse("juliet@example.com").unwrap();
        assert!(out.contains(&Output::Authenticated(juliet.clone())));
        assert_eq!(out.last(), Some(&Output::ResetParser));
        h.parser.reset();

        let features = sent(&h.send(HEADER));
        assert!(
            features.contains("<bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"/>"),
            "{features}"
        );
        let out = h.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>");
        assert_eq!(
            out,
            vec![Output::Bind {
                resource: Some("balcony".into()),
                iq_id: "b1".into()
            }]
        );
        let full = juliet.with_resource("balcony").unwrap();
        let reply = sent(&h.c2s.on_bound(full.clone(), "b1"));
        assert_eq!(
            reply,
            "<iq type=\"result\" id=\"b1\"><bind xmlns=\"urn:ietf:params:xml:ns:xmpp-bind\"><jid>juliet@example.com/balcony</jid></bind></iq>"
        );

        // Bound: stanzas come out with the sender stamped, whatever 'from' the client wrote.
        let out = h.send("<message to='Romeo@Example.com' from='mallory@evil.example' type='chat'><body>hi</body></message>");
        let Some(Output::Stanza(m)) = out.first() else {
            panic!("{out:?}")
        };
        assert_eq!(m.attr("from"), Some("juliet@example.com/balcony"));
        assert_eq!(m.attr("to"), Some("romeo@example.com"));
        // A malformed address is bounced with jid-malformed.
        let out = h.send("<message to='a@b@c' id='m2'><body>x</body></message>");
        assert!(sent(&out).contains("<jid-malformed"), "{}", sent(&out));
        // Closing the stream is answered with a close.
        let out = h.send("</stream:stream>");
        assert_eq!(
            out,
            vec![Output::Send("</stream:stream>".into()), Output::Close]
        );
    }

    #[test]
    fn a_downgraded_channel_binding_is_refused() {
        let mut h = harness();
        h.through_tls();
        // The client says "y" (it supports binding but thinks we don't) although -PLUS was offered.
        let out = h.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{}</auth>",
            b64(b"y,,n=juliet,r=abcdefabcdef")
        ));
        assert!(
            matches!(out.first(), Some(Output::AuthFailed { .. })),
            "{out:?}"
        );
        assert!(
            sent(&out).contains("<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\">"),
            "{}",
            sent(&out)
        );
    }

    #[test]
    fn three_failed_attempts_close_the_stream() {
        let mut h = harness();
        h.through_tls();
        let creds = derive_credentials(
            ScramHash::Sha256,
            "the-right-one",
            b"sixteen byte slt",
            4096,
        )
        .unwrap();
        for attempt in 1..=3 {
            let out = h.send(&format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                b64(b"\0juliet\0a-wrong-one")
            ));
            assert_eq!(
                out.first(),
                Some(&Output::LookupCredentials {
                    vhost: "example.com".into(),
                    username: "juliet".into(),
                    hash: ScramHash::Sha256
                })
            );
            let out = h.c2s.on_credentials(Some(creds.clone()));
            assert_eq!(
                out.first(),
                Some(&Output::AuthFailed {
                    username: Some("juliet".into())
                })
            );
            assert!(sent(&out).contains("<failure xmlns=\"urn:ietf:params:xml:ns:xmpp-sasl\"><not-authorized/></failure>"), "{}", sent(&out));
            assert_eq!(h.c2s.is_closed(), attempt == 3, "attempt {attempt}");
        }
    }

    #[test]
    fn an_unknown_mechanism_is_refused_and_stanzas_before_bind_are_not_authorized() {
        let mut h = harness();
        h.through_tls();
        let out = h.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='DIGEST-MD5'/>");
        assert!(
            sent(&out).contains("<invalid-mechanism/>"),
            "{}",
            sent(&out)
        );
        let out = h.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            b64(b"\0juliet\0the-right-one")
        ));
        assert!(matches!(
            out.first(),
            Some(Output::LookupCredentials { .. })
        ));
        let creds = derive_credentials(
            ScramHash::Sha256,
            "the-right-one",
            b"sixteen byte slt",
            4096,
        )
        .unwrap();
        let out = h.c2s.on_credentials(Some(creds));
        assert!(sent(&out).contains("<success"), "{}", sent(&out));
        h.parser.reset();
        sent(&h.send(HEADER));
        let out = h.send("<message to='romeo@example.com'><body>too early</body></message>");
        assert!(
            sent(&out).contains("<not-authorized xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"),
            "{}",
            sent(&out)
        );
    }
    #[test]
    fn a_suspended_domain_refuses_streams_with_policy_violation_and_a_sentence() {
        let mut h = harness();
        let out = h.send(&HEADER.replace("example.com", "suspended.example"));
        let text = sent(&out);
        assert!(text.contains("from='suspended.example'"), "{text}");
        assert!(
            text.contains("<policy-violation xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\"/>"),
            "{text}"
        );
        assert!(text.contains(SUSPENDED_TEXT), "{text}");
        assert_eq!(out.last(), Some(&Output::Close));
    }

    #[test]
    fn a_moved_domain_sends_clients_to_the_other_host() {
        let mut h = harness();
        let text = sent(&h.send(&HEADER.replace("example.com", "moved.example")));
        assert!(
            text.contains("<see-other-host xmlns=\"urn:ietf:params:xml:ns:xmpp-streams\">node2.example.net:5222</see-other-host>"),
            "{text}"
        );
        assert!(text.ends_with("</stream:stream>"), "{text}");
    }

    #[test]
    fn a_kick_with_see_other_host_carries_the_host_as_content() {
        let mut h = harness();
        sent(&h.send(HEADER));
        let text = sent(
            &h.c2s
                .send_stream_error(&StreamError::see_other_host("[2001:db8::1]:5222")),
        );
        assert!(
            text.contains(">[2001:db8::1]:5222</see-other-host>"),
            "{text}"
        );
        assert!(h.c2s.is_closed());
    }

    /// PLAIN over TLS, then the restarted stream's features (bind offered).
    fn authenticated(h: &mut Harness) -> String {
        h.through_tls();
        h.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            b64(b"\0juliet\0the-right-one")
        ));
        let creds = derive_credentials(
            ScramHash::Sha256,
            "the-right-one",
            b"sixteen byte slt",
            4096,
        )
        .unwrap();
        assert!(sent(&h.c2s.on_credentials(Some(creds))).contains("<success"));
        h.parser.reset();
        sent(&h.send(HEADER)).to_string()
    }

    #[test]
    fn stream_management_is_offered_after_authentication_and_its_elements_reach_the_connection() {
        let mut h = harness();
        let features = authenticated(&mut h);
        assert!(
            features.contains("<sm xmlns=\"urn:xmpp:sm:3\"/>"),
            "{features}"
        );
        // Before binding: <resume/> is for the connection, which owns the registry.
        let out = h.send("<resume xmlns='urn:xmpp:sm:3' previd='some-id' h='3'/>");
        assert_eq!(
            out,
            vec![Output::Sm(Ok(sm::Nonza::Resume(sm::Resume {
                previd: "some-id".into(),
                h: 3
            })))]
        );
        // A resumed session is bound without a resource binding.
        let full = Jid::parse("juliet@example.com/balcony").unwrap();
        h.c2s.on_resumed(full.clone());
        assert_eq!(h.c2s.jid(), Some(&full));
        let out = h.send("<r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='2'/><message to='romeo@example.com'/>");
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0], Output::Sm(Ok(sm::Nonza::Request)));
        assert_eq!(out[1], Output::Sm(Ok(sm::Nonza::Ack(2))));
        assert!(matches!(&out[2], Output::Stanza(m) if m.name() == "message"));
        // XEP-0352 is offered with it, and its nonzas reach the connection.
        assert!(
            features.contains("<csi xmlns=\"urn:xmpp:csi:0\"/>"),
            "{features}"
        );
        let out = h.send("<inactive xmlns='urn:xmpp:csi:0'/><active xmlns='urn:xmpp:csi:0'/>");
        assert_eq!(out, vec![Output::Csi(false), Output::Csi(true)]);
        // Anything else that is not a stanza still ends the stream.
        let out = h.send("<foo xmlns='urn:example'/>");
        assert_eq!(out.last(), Some(&Output::Close));
    }

    #[test]
    fn an_ack_beyond_what_was_sent_ends_the_stream_naming_both_counts() {
        let mut h = harness();
        authenticated(&mut h);
        let error = sm::SmError::HandledCountTooHigh {
            h: 5,
            send_count: 2,
        }
        .stream_error();
        let out = sent(&h.c2s.send_stream_error(&error));
        assert!(out.contains("<undefined-condition"), "{out}");
        assert!(
            out.contains(
                "<handled-count-too-high xmlns=\"urn:xmpp:sm:3\" h=\"5\" send-count=\"2\"/>"
            ),
            "{out}"
        );
        assert!(h.c2s.is_closed());
    }

    #[test]
    fn without_stream_management_its_feature_is_not_offered() {
        let mut h = harness();
        h.c2s.cfg.stream_management = false;
        let features = authenticated(&mut h);
        assert!(!features.contains("urn:xmpp:sm:3"), "{features}");
        let out = h.send("<enable xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(out.last(), Some(&Output::Close));
    }

    #[test]
    fn binding_beyond_the_session_limit_is_a_resource_constraint_to_wait_on() {
        let mut h = harness();
        h.through_tls();
        h.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            b64(b"\0juliet\0the-right-one")
        ));
        let creds = derive_credentials(
            ScramHash::Sha256,
            "the-right-one",
            b"sixteen byte slt",
            4096,
        )
        .unwrap();
        assert!(sent(&h.c2s.on_credentials(Some(creds))).contains("<success"));
        h.parser.reset();
        sent(&h.send(HEADER));
        let out =
            h.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
        assert!(matches!(out.first(), Some(Output::Bind { .. })), "{out:?}");
        let text = sent(&h.c2s.on_bind_refused("b1", 5));
        assert!(
            text.contains("type=\"error\"") && text.contains("id=\"b1\""),
            "{text}"
        );
        assert!(
            text.contains("<error type=\"wait\"><resource-constraint"),
            "{text}"
        );
        assert!(
            text.contains("example.com allows at most 5 sessions at once"),
            "{text}"
        );
        // The client may try again later on the same stream.
        let out =
            h.send("<iq type='set' id='b2'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>");
        assert!(matches!(out.first(), Some(Output::Bind { .. })), "{out:?}");
    }

    const REGISTER_GET: &str = "<iq type='get' id='r1'><query xmlns='jabber:iq:register'/></iq>";

    #[test]
    fn registration_is_offered_only_after_tls_and_only_where_the_domain_allows_it() {
        let mut h = harness();
        let before = sent(&h.send(HEADER));
        assert!(!before.contains("iq-register"), "{before}");
        // Before TLS, a register query is a stanza before authentication like any other.
        let out = h.send(REGISTER_GET);
        assert!(sent(&out).contains("<not-authorized"), "{}", sent(&out));
        assert_eq!(out.last(), Some(&Output::Close));

        let mut h = harness();
        let features = h.through_tls();
        assert!(
            features.contains("<register xmlns=\"http://jabber.org/features/iq-register\"/>"),
            "{features}"
        );
        // The switch is asked at every header: off, neither offered nor answered.
        h.c2s.cfg.registration = Arc::new(|_: &str| false);
        h.c2s.state = State::Header;
        h.parser.reset();
        let features = sent(&h.send(HEADER));
        assert!(!features.contains("iq-register"), "{features}");
        let refused = sent(&h.send(REGISTER_GET));
        assert!(
            refused.contains("<error type=\"cancel\"><not-allowed"),
            "{refused}"
        );
        assert!(
            refused.contains("example.com does not let people create accounts"),
            "{refused}"
        );
        assert!(!h.c2s.is_closed(), "the client may still log in");
    }

    #[test]
    fn a_registration_is_asked_of_the_connection_and_the_client_then_logs_in() {
        let mut h = harness();
        h.through_tls();
        let form = sent(&h.send(REGISTER_GET));
        assert!(form.starts_with("<iq type=\"result\" id=\"r1\">"), "{form}");
        assert!(form.contains("<username/><password/>"), "{form}");

        let out = h.send("<iq type='set' id='r2'><query xmlns='jabber:iq:register'><username>Bill</username><password>Calliope</password></query></iq>");
        assert_eq!(
            out,
            vec![Output::Register {
                iq_id: "r2".into(),
                username: "Bill".into(),
                password: "Calliope".into()
            }]
        );
        let taken = sent(&h.c2s.on_registered(
            "r2",
            Err(Refusal::Taken {
                username: "bill".into(),
            }),
        ));
        assert!(taken.contains("id=\"r2\""), "{taken}");
        assert!(taken.contains("<conflict"), "{taken}");
        let done = sent(&h.c2s.on_registered("r3", Ok(())));
        assert_eq!(done, "<iq type=\"result\" id=\"r3\"/>");

        // Missing fields never reach the connection; <remove/> needs a login.
        let out = sent(&h.send("<iq type='set' id='r4'><query xmlns='jabber:iq:register'><username>bill</username></query></iq>"));
        assert!(out.contains("<not-acceptable"), "{out}");
        assert!(out.contains("Choose a password."), "{out}");
        let out = sent(&h.send(
            "<iq type='set' id='r5'><query xmlns='jabber:iq:register'><remove/></query></iq>",
        ));
        assert!(out.contains("<not-authorized"), "{out}");

        // Then SASL as usual, on the same stream.
        let out = h.send(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            b64(b"\0bill\0Calliope")
        ));
        assert!(
            matches!(out.first(), Some(Output::LookupCredentials { username, .. }) if username == "bill"),
            "{out:?}"
        );
    }

    #[test]
    fn without_required_tls_registration_is_offered_on_the_plain_stream() {
        let mut h = harness();
        h.c2s.cfg.require_tls = false;
        h.c2s.cfg.starttls_available = false;
        let features = sent(&h.send(HEADER));
        assert!(features.contains("iq-register"), "{features}");
        assert!(sent(&h.send(REGISTER_GET)).contains("type=\"result\""));
    }
}
