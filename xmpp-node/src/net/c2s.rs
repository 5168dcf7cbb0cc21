//! One client connection: reads bytes into the parser, feeds events to [`C2s`], carries
//! out what it asks (write, TLS, credential look-ups, bind), and writes stanzas routed to
//! the session. Limits: a pre-authentication deadline, a stanza rate, idle pings, and
//! whatever the parser refuses — each ends only this connection.
//!
//! Stream management (XEP-0198, [`crate::proto::sm`]): the connection owns the session's
//! [`StreamManagement`] state, counts the client's stanzas, queues every stanza it writes
//! until acked (one push per stanza, nothing when SM is off) and asks for acks at the
//! configured cadence. When the socket breaks without `</stream:stream>` and the session is
//! resumable, the task *detaches* instead of ending: the session stays bound, deliveries are
//! queued, and the task waits for a `<resume/>` on another connection ([`super::sm`]), the
//! resume timeout, or shutdown. A session that ends for good hands its unacknowledged
//! stanzas to [`im::unacked_stanzas`] before [`im::session_ended`] announces it offline.

use std::{
    collections::{HashMap, VecDeque},
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use rustls::ServerConfig;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tracing::Instrument;

use super::{bosh::BoshIo, websocket::WsIo};
use crate::{
    control::usage::VhostCounters,
    im,
    metrics::OutcomeLabel,
    net::sm::{Handover, Lookup, SessionState, Takeover, new_id},
    node::Node,
    proto::{
        c2s::{C2s, C2sConfig, Output, StreamError, write_stanza},
        csi,
        element::Element,
        jid::Jid,
        ns,
        parser::{Limits, StreamParser},
        sm::{
            self, Nonza, Previous, Rejection, Resumed, SmError, Stage, StreamManagement, Unacked,
        },
        stanza::is_stanza,
    },
    router::{Delivery, SessionHandle},
};

/// `<r xmlns='urn:xmpp:sm:3'/>`, written as is on the hot path.
const SM_REQUEST: &str = "<r xmlns='urn:xmpp:sm:3'/>";

/// A resumption the old connection agreed to, waiting to be handed to the new one.
type PendingHandover = (
    Resumed,
    tokio::sync::oneshot::Sender<Result<Handover, Rejection>>,
);

/// The connection's transport: a TCP socket before or after TLS, a WebSocket (RFC 7395,
/// its messages seen as a byte stream by [`WsIo`]), or a BOSH session ([`BoshIo`]).
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    WebSocket(Box<WsIo>),
    /// A BOSH session (XEP-0206): request payloads in, queued elements out.
    Bosh(Box<BoshIo>),
    /// Only while the socket is being handed to the TLS handshake.
    Upgrading,
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::WebSocket(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Bosh(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::WebSocket(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Bosh(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Upgrading => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::WebSocket(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Bosh(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Upgrading => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::WebSocket(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Bosh(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Upgrading => Poll::Ready(Ok(())),
        }
    }
}

/// Failed authentications per client address and per account, to slow guessing down.
#[derive(Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl AuthThrottle {
    /// How long to wait before answering a failure for these keys.
    pub fn record_failure(&self, keys: &[String]) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Old entries fade: a quiet quarter hour forgives.
        map.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(900));
        let mut worst = 0;
        for k in keys {
            let entry = map.entry(k.clone()).or_insert((0, now));
            entry.0 += 1;
            entry.1 = now;
            worst = worst.max(entry.0);
        }
        delay_for(worst)
    }

    pub fn record_success(&self, account: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account);
    }
}

/// 0.25 s after the first failure, doubling, at most 8 s.
pub fn delay_for(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis((250u64 << (failures - 1).min(5)).min(8_000))
}

/// Numbers connections for the logs (the `session` field of every line of a connection).
static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Runs one client TCP connection to its end. `slot` is the connection's place in the
/// node's connection limits: dropped when the socket goes, which for a resumable session is
/// before the session ends (it waits detached, holding no connection).
pub fn run(
    node: Arc<Node>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Arc<ServerConfig>,
    direct_tls: bool,
    shutdown: watch::Receiver<bool>,
    slot: Box<dyn Send>,
) -> impl Future<Output = ()> + Send {
    let _ = tcp.set_nodelay(true);
    let start = if direct_tls {
        Start::DirectTls
    } else {
        Start::Plain
    };
    connection(node, Io::Plain(tcp), peer, Some(tls), start, shutdown, slot)
}

/// Runs one XMPP-over-WebSocket connection (RFC 7395) to its end, as [`run`] does a TCP
/// one. `secure`: the WebSocket is encrypted (HTTPS, or a TLS-terminating proxy on
/// loopback), so SASL is offered as after TLS; there is no STARTTLS on a WebSocket.
pub fn run_websocket(
    node: Arc<Node>,
    socket: WsIo,
    peer: SocketAddr,
    secure: bool,
    shutdown: watch::Receiver<bool>,
    slot: Box<dyn Send>,
) -> impl Future<Output = ()> + Send {
    let start = if secure { Start::Secure } else { Start::Plain };
    let io = Io::WebSocket(Box::new(socket));
    connection(node, io, peer, None, start, shutdown, slot)
}

/// Runs one BOSH session's stream (XEP-0206) to its end, as [`run_websocket`] does.
pub fn run_bosh(
    node: Arc<Node>,
    io: BoshIo,
    peer: SocketAddr,
    secure: bool,
    shutdown: watch::Receiver<bool>,
    slot: Box<dyn Send>,
) -> impl Future<Output = ()> + Send {
    let start = if secure { Start::Secure } else { Start::Plain };
    connection(
        node,
        Io::Bosh(Box::new(io)),
        peer,
        None,
        start,
        shutdown,
        slot,
    )
}

/// How a connection's stream starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    /// In the clear (STARTTLS is offered when the transport can do it).
    Plain,
    /// With a TLS handshake, before any XMPP (XEP-0368).
    DirectTls,
    /// Encrypted already, below the stream (WebSocket over HTTPS).
    Secure,
}

async fn connection(
    node: Arc<Node>,
    io: Io,
    peer: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
    start: Start,
    shutdown: watch::Receiver<bool>,
    slot: Box<dyn Send>,
) {
    let session = NEXT_CONNECTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let span = tracing::info_span!("c2s", session, peer = %peer, vhost = tracing::field::Empty, jid = tracing::field::Empty);
    // The connection is made inside the instrumented future: made outside and moved in, it
    // would take room twice in every connection's task.
    async move {
        let mut conn = Connection::new(node, peer.ip(), tls, shutdown);
        conn.slot = Some(slot);
        if let Err(e) = conn.serve(io, start).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
        conn.finish().await;
    }
    .instrument(span)
    .await
}

struct Connection {
    node: Arc<Node>,
    ip: IpAddr,
    /// For STARTTLS; `None` where the transport cannot start TLS (WebSocket).
    tls: Option<Arc<ServerConfig>>,
    shutdown: watch::Receiver<bool>,
    c2s: C2s,
    parser: StreamParser,
    io: Io,
    out: String,
    tx: mpsc::UnboundedSender<Delivery>,
    rx: mpsc::UnboundedReceiver<Delivery>,
    session: Option<Arc<SessionHandle>>,
    /// The bound vhost's usage counters, looked up once at bind.
    counters: Option<Arc<VhostCounters>>,
    last_activity: Instant,
    ping_sent: Option<Instant>,
    tokens: f64,
    tokens_at: Instant,
    vhost_recorded: bool,
    /// XEP-0198 state of the bound session (disabled until `<enable/>`).
    sm: StreamManagement,
    /// The session is in the resumption registry: `<resume/>`s for it arrive as
    /// [`Delivery::Takeover`] on its own queue.
    registered: bool,
    /// The client stopped answering pings: its stream is dead, as if the socket broke.
    timed_out: bool,
    /// The connection's place in the node's limits, while it has a socket.
    slot: Option<Box<dyn Send>>,
    /// XEP-0352: the client said it is inactive; what can wait is held in `held`.
    inactive: bool,
    held: csi::Held,
}

impl Connection {
    fn new(
        node: Arc<Node>,
        ip: IpAddr,
        tls: Option<Arc<ServerConfig>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let hosts = node.clone();
        let registration = node.clone();
        let cfg = C2sConfig {
            starttls_available: tls.is_some(),
            require_tls: node.settings.node.require_tls,
            max_auth_failures: 3,
            scram_iterations: node.settings.node.scram_iterations,
            host_access: Arc::new(move |d: &str| hosts.access(d)),
            stream_management: true,
            registration: Arc::new(move |d: &str| crate::xep::register::open_on(&registration, d)),
        };
        let sm = StreamManagement::new(node.settings.node.limits.sm());
        let limits = &node.settings.node.limits;
        let parser = StreamParser::new(Limits {
            max_stanza_bytes: limits.max_stanza_bytes,
            max_depth: limits.max_depth,
            max_attributes: limits.max_attributes,
            max_elements: limits.max_elements,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let burst = f64::from(limits.stanzas_per_second) * 2.0;
        Self {
            c2s: C2s::new(cfg),
            parser,
            io: Io::Upgrading,
            out: String::new(),
            tx,
            rx,
            session: None,
            counters: None,
            last_activity: Instant::now(),
            ping_sent: None,
            tokens: burst,
            tokens_at: Instant::now(),
            vhost_recorded: false,
            sm,
            registered: false,
            timed_out: false,
            slot: None,
            inactive: false,
            held: csi::Held::default(),
            node,
            ip,
            tls,
            shutdown,
        }
    }

    async fn serve(&mut self, io: Io, start: Start) -> anyhow::Result<()> {
        self.io = io;
        let pre_auth_deadline = Instant::now()
            + Duration::from_secs(self.node.settings.node.limits.pre_auth_timeout_secs);
        if start == Start::Secure {
            // The parser is fresh: the reset this asks for changes nothing.
            let _ = self.c2s.on_tls(None);
        }
        if start == Start::DirectTls {
            // Boxed: a one-off future this big would otherwise enlarge every connection's task.
            let outputs = Box::pin(self.start_tls(pre_auth_deadline)).await?;
            self.drive(outputs).await?;
        }
        // Held for the connection's lifetime, so small: TLS keeps its own record buffer, and a
        // bigger stanza just takes more reads (the parser is incremental).
        let mut buf = vec![0u8; 512];
        // One timer for the connection's life, re-armed lazily: activity only ever moves the
        // deadline later, so it is checked when the timer fires rather than reset on every
        // stanza (which would touch the timer wheel twice per stanza).
        let timer = tokio::time::sleep_until(self.next_deadline(pre_auth_deadline));
        tokio::pin!(timer);
        let mut timer_bound = self.session.is_some();
        loop {
            if self.c2s.is_closed() {
                break;
            }
            if timer_bound != self.session.is_some() {
                // Bound since: the idle deadline replaces the pre-authentication one.
                timer_bound = self.session.is_some();
                timer.as_mut().reset(self.next_deadline(pre_auth_deadline));
            }
            tokio::select! {
                read = self.io.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        break;
                    }
                    self.last_activity = Instant::now();
                    self.ping_sent = None;
                    self.parser.feed(&buf[..n]);
                    self.process_input(pre_auth_deadline).await?;
                }
                Some(delivery) = self.rx.recv() => {
                    let mut next = Some(delivery);
                    let mut outputs = vec![];
                    let mut moved = false;
                    // Write whatever else is queued in the same syscall.
                    while let Some(delivery) = next.take() {
                        match delivery {
                            Delivery::Stanza(stanza) => match self.write_delivery(*stanza) {
                                Ok(()) => next = self.rx.try_recv().ok(),
                                Err(e) => outputs = self.c2s.send_stream_error(&e.stream_error()),
                            },
                            Delivery::Kick(kick) => outputs = self.c2s.send_stream_error(&kick),
                            // A <resume/> for this session on another connection (§5): the
                            // client lost this one without the server noticing.
                            Delivery::Takeover(request) => {
                                moved = self.on_takeover(*request, false);
                                if !moved {
                                    next = self.rx.try_recv().ok();
                                }
                            }
                        }
                    }
                    if moved {
                        // The session moved before anything is written here: this socket may
                        // be dead, and the new connection must not wait on it. It ends with
                        // `conflict`, briefly.
                        let outputs = self.c2s.send_stream_error(&StreamError::new(
                            "conflict",
                            "The session was resumed on another connection.",
                        ));
                        for output in outputs {
                            if let Output::Send(s) = output {
                                self.out.push_str(&s);
                            }
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(2), self.flush()).await;
                        break;
                    }
                    self.drive(outputs).await?;
                    self.flush().await?;
                }
                () = &mut timer => {
                    let due = self.next_deadline(pre_auth_deadline);
                    if due > Instant::now() {
                        timer.as_mut().reset(due);
                        continue;
                    }
                    if self.on_timer(pre_auth_deadline).await? {
                        break;
                    }
                    timer.as_mut().reset(self.next_deadline(pre_auth_deadline));
                }
                _ = self.shutdown.changed() => {
                    let outputs = self.c2s.stream_error("system-shutdown", Some("The server is restarting; reconnect in a moment."));
                    self.drive(outputs).await?;
                    break;
                }
            }
        }
        self.flush().await?;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.io.shutdown()).await;
        Ok(())
    }

    /// Takes one stanza routed to the session: held if the client is inactive and it can
    /// wait (XEP-0352), else written, after whatever was held.
    fn write_delivery(&mut self, stanza: Element) -> Result<(), SmError> {
        if let Some(me) = &self.session {
            me.taken();
        }
        if self.inactive {
            if csi::can_wait(&stanza) {
                if !self.held.hold(stanza) {
                    return Ok(());
                }
                // Too much held: it all goes now.
                return self.write_held();
            }
            self.write_held()?;
        }
        self.write_now(stanza)
    }

    /// Writes what an inactive client was not sent yet.
    fn write_held(&mut self) -> Result<(), SmError> {
        for stanza in self.held.take() {
            self.write_now(stanza)?;
        }
        Ok(())
    }

    /// Writes one stanza and, with stream management, queues it until acked (and asks for
    /// an ack when due). `Err`: too many wait for an ack.
    fn write_now(&mut self, stanza: Element) -> Result<(), SmError> {
        self.node.metrics.stanzas_out.inc();
        if let Some(c) = &self.counters
            && stanza.name() == "message"
        {
            c.message_out();
        }
        let start = self.out.len();
        stanza.write_to(&mut self.out, ns::CLIENT);
        if self.sm.is_enabled()
            && self
                .sm
                .on_outbound(self.out[start..].to_string(), crate::node::unix_now())?
        {
            self.out.push_str(SM_REQUEST);
        }
        Ok(())
    }

    /// Another connection's `<resume/>` for this session: `true` when the session moved
    /// there (this connection has no session any more). `detached`: this connection lost
    /// its socket already, and stays detached if the session comes back.
    fn on_takeover(&mut self, request: Takeover, detached: bool) -> bool {
        let Some((resumed, reply)) = self.agree_to_resume(request) else {
            return false;
        };
        match self.hand_over(resumed, reply) {
            Ok(()) => true,
            // The resuming connection went away meanwhile: carry on here.
            Err(state) => {
                self.restore(state);
                if detached {
                    self.sm.detach();
                }
                false
            }
        }
    }

    /// Answers another connection's `<resume/>` for this session: `Some` when the session
    /// is to move there (the state says resumed already), else the refusal is sent back.
    fn agree_to_resume(&mut self, request: Takeover) -> Option<PendingHandover> {
        let stage = Stage::Authenticated(&request.account);
        match sm::resume(stage, &request.request, Previous::Found(&mut self.sm)) {
            Ok(resumed) => Some((resumed, request.reply)),
            Err(refused) => {
                let _ = request.reply.send(Err(refused));
                None
            }
        }
    }

    fn next_deadline(&self, pre_auth: Instant) -> Instant {
        let limits = &self.node.settings.node.limits;
        if self.session.is_none() {
            return pre_auth;
        }
        match self.ping_sent {
            Some(at) => at + Duration::from_secs(limits.ping_timeout_secs),
            None => self.last_activity + Duration::from_secs(limits.idle_ping_secs),
        }
    }

    /// Returns true when the connection should end.
    async fn on_timer(&mut self, pre_auth: Instant) -> anyhow::Result<bool> {
        let now = Instant::now();
        if self.session.is_none() {
            if now >= pre_auth {
                let outputs = self
                    .c2s
                    .stream_error("connection-timeout", Some("Authenticate sooner."));
                self.drive(outputs).await?;
                return Ok(true);
            }
            return Ok(false);
        }
        if let Some(at) = self.ping_sent {
            if now >= at + Duration::from_secs(self.node.settings.node.limits.ping_timeout_secs) {
                self.timed_out = true;
                let outputs = self
                    .c2s
                    .stream_error("connection-timeout", Some("No answer to ping."));
                self.drive(outputs).await?;
                return Ok(true);
            }
            return Ok(false);
        }
        if let (Some(jid), Some(domain)) = (
            self.c2s.jid().cloned(),
            self.c2s.domain().map(str::to_owned),
        ) {
            let ping = Element::new("iq", ns::CLIENT)
                .with_attr("type", "get")
                .with_attr("id", format!("ping-{}", crate::node::unix_now()))
                .with_attr("from", domain)
                .with_attr("to", jid.to_string())
                .with_child(Element::new("ping", ns::PING));
            self.out.push_str(&write_stanza(&ping));
            // Stanzas below the ack cadence are not left unconfirmed for long.
            if let Some(r) = self.sm.idle_request() {
                r.write_to(&mut self.out, ns::CLIENT);
            }
            self.flush().await?;
            self.ping_sent = Some(now);
        }
        Ok(false)
    }

    async fn process_input(&mut self, pre_auth: Instant) -> anyhow::Result<()> {
        loop {
            if self.c2s.is_closed() {
                break;
            }
            let outputs = match self.parser.next_event() {
                Ok(Some(event)) => {
                    if let crate::proto::parser::StreamEvent::Stanza(stanza) = &event
                        && self.session.is_some()
                    {
                        // XEP-0198 §4: handled once routed, stored, answered or bounced, which
                        // this event is before the next one is read.
                        if self.sm.is_enabled() && is_stanza(stanza) {
                            self.sm.on_inbound_stanza();
                        }
                        self.node.metrics.stanzas_in.inc();
                        if let Some(c) = &self.counters
                            && stanza.name() == "message"
                        {
                            c.message_in();
                        }
                        self.throttle().await;
                    }
                    self.log_in(&event);
                    self.c2s.on_event(event)
                }
                Ok(None) => {
                    self.parser.release_idle_memory();
                    break;
                }
                Err(e) => {
                    tracing::info!(
                        condition = e.condition(),
                        "closing a stream that sent bad XML"
                    );
                    self.c2s.on_parse_error(&e)
                }
            };
            if self.drive(outputs).await? {
                // TLS started: bytes buffered before the handshake do not count.
                let _ = pre_auth;
            }
        }
        self.flush().await
    }

    /// Waits for a token of the session's stanza rate.
    async fn throttle(&mut self) {
        let rate = f64::from(self.node.settings.node.limits.stanzas_per_second.max(1));
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.tokens_at).as_secs_f64() * rate).min(rate * 2.0);
        self.tokens_at = now;
        if self.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - self.tokens) / rate);
            tokio::time::sleep(wait).await;
            self.tokens = 1.0;
            self.tokens_at = Instant::now();
        }
        self.tokens -= 1.0;
    }

    /// Carries out outputs (and those they lead to). Returns true if TLS was started.
    async fn drive(&mut self, outputs: Vec<Output>) -> anyhow::Result<bool> {
        let mut queue: VecDeque<Output> = outputs.into();
        let mut started_tls = false;
        while let Some(output) = queue.pop_front() {
            match output {
                Output::Send(s) => self.out.push_str(&s),
                Output::StartTls => {
                    self.flush().await?;
                    let deadline = Instant::now()
                        + Duration::from_secs(self.node.settings.node.limits.pre_auth_timeout_secs);
                    queue.extend(Box::pin(self.start_tls(deadline)).await?);
                    started_tls = true;
                }
                Output::ResetParser => self.parser.reset(),
                Output::LookupCredentials {
                    vhost,
                    username,
                    hash,
                } => {
                    let creds = match self.node.store.credentials(&vhost, &username, hash).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::error!(error = %e, "credential look-up failed");
                            None
                        }
                    };
                    queue.extend(self.c2s.on_credentials(creds));
                }
                // XEP-0077: an account asked for before authentication.
                Output::Register {
                    iq_id,
                    username,
                    password,
                } => {
                    let domain = self.c2s.domain().unwrap_or_default().to_string();
                    let outcome = Box::pin(crate::xep::register::register(
                        &self.node, self.ip, &domain, &username, &password,
                    ))
                    .await;
                    queue.extend(self.c2s.on_registered(&iq_id, outcome));
                }
                Output::AuthFailed { username } => {
                    self.node
                        .metrics
                        .auth
                        .get_or_create(&OutcomeLabel { outcome: "failure" })
                        .inc();
                    let mut keys = vec![format!("ip:{}", self.ip)];
                    if let (Some(u), Some(d)) = (username, self.c2s.domain()) {
                        keys.push(format!("account:{u}@{d}"));
                    }
                    let delay = self.node.auth_throttle.record_failure(&keys);
                    tracing::info!(delay_ms = delay.as_millis() as u64, "authentication failed");
                    tokio::time::sleep(delay).await;
                }
                Output::Authenticated(jid) => {
                    self.node
                        .metrics
                        .auth
                        .get_or_create(&OutcomeLabel { outcome: "success" })
                        .inc();
                    self.node
                        .auth_throttle
                        .record_success(&format!("account:{jid}"));
                    tracing::info!(%jid, "authenticated");
                }
                Output::Bind { resource, iq_id } => {
                    let host = self.node.host(self.c2s.domain().unwrap_or_default());
                    // Suspended, moved or removed since the stream header?
                    let refusal = match &host {
                        Some(h) => h.access.refusal(),
                        None => Some(StreamError::new(
                            "host-gone",
                            "This domain is no longer served here.",
                        )),
                    };
                    if let Some(error) = refusal {
                        queue.extend(self.c2s.send_stream_error(&error));
                        continue;
                    }
                    let Some(host) = host else { continue };
                    let jid = self.choose_resource(resource)?;
                    // A session that replaces one of the same full JID takes its place.
                    let limit = if self.node.router.is_bound(&jid) {
                        None
                    } else {
                        host.max_sessions()
                    };
                    if !host.counters.try_add_session(limit) {
                        tracing::info!(
                            max_sessions = limit,
                            "bind refused: the domain's session limit is reached"
                        );
                        queue.extend(self.c2s.on_bind_refused(&iq_id, limit.unwrap_or(0)));
                        continue;
                    }
                    self.counters = Some(host.counters.clone());
                    let handle = self.node.router.bind(jid.clone(), self.tx.clone());
                    self.node
                        .metrics
                        .sessions
                        .get_or_create(&crate::metrics::VhostLabel {
                            vhost: jid.domain().to_string(),
                        })
                        .inc();
                    tracing::Span::current().record("jid", tracing::field::display(&jid));
                    tracing::info!("resource bound");
                    // Load the account's block list now, so routing its messages never waits
                    // for the store (XEP-0191 checks run on every stanza).
                    crate::xep::blocking::current(&self.node, &jid.bare()).await;
                    crate::xep::mam::load_prefs(&self.node, &jid).await;
                    self.session = Some(handle);
                    queue.extend(self.c2s.on_bound(jid, &iq_id));
                }
                Output::Stanza(stanza) => {
                    if let Some(me) = self.session.clone()
                        && let Err(stanza) = im::route_fast(&self.node, &me, stanza)
                    {
                        // Boxed: inline, its ~4 KiB state would be part of every idle session.
                        Box::pin(im::handle(&self.node, &me, stanza)).await;
                    }
                }
                // Acks go back and forth all the time on a managed stream: answered here.
                Output::Sm(Ok(Nonza::Request)) => match self.sm.on_request() {
                    Ok(a) => self.out.push_str(&write_stanza(&a)),
                    Err(e) => queue.extend(self.refuse(e.into())),
                },
                Output::Sm(Ok(Nonza::Ack(h))) => {
                    if let Err(e) = self.sm.on_ack(h) {
                        queue.extend(self.refuse(e.into()));
                    }
                }
                // Boxed: rare, and its state would otherwise enlarge every `drive`.
                Output::Sm(Ok(nonza)) => queue.extend(Box::pin(self.negotiate_sm(nonza)).await),
                Output::Sm(Err(refused)) => queue.extend(self.refuse(refused)),
                Output::Csi(active) => {
                    self.inactive = !active;
                    if active && let Err(e) = self.write_held() {
                        queue.extend(self.c2s.send_stream_error(&e.stream_error()));
                    }
                }
                Output::Close => {
                    self.flush().await?;
                }
            }
        }
        if !self.vhost_recorded
            && let Some(domain) = self.c2s.domain()
        {
            tracing::Span::current().record("vhost", domain);
            self.vhost_recorded = true;
        }
        Ok(started_tls)
    }

    /// Writes a `<failed/>`, or ends the stream for a misuse of stream management.
    fn refuse(&mut self, refused: Rejection) -> Vec<Output> {
        match refused {
            Rejection::Failed(f) => vec![Output::Send(write_stanza(&f.to_element()))],
            Rejection::Stream(e) => self.c2s.send_stream_error(&e.stream_error()),
        }
    }

    /// `<enable/>` or `<resume/>` from the client (XEP-0198 §3, §5).
    async fn negotiate_sm(&mut self, nonza: Nonza) -> Vec<Output> {
        let bound = self.c2s.jid().cloned();
        let account = self.c2s.authenticated().cloned();
        let stage = match (&bound, &account) {
            (Some(jid), _) => Stage::Bound(jid),
            (None, Some(account)) => Stage::Authenticated(account),
            (None, None) => Stage::Unauthenticated,
        };
        match nonza {
            Nonza::Enable(request) => {
                let id = new_id();
                match self.sm.enable(stage, &request, id.clone()) {
                    Ok(enabled) => {
                        if self.sm.is_resumable() {
                            self.node.router.resumable.register(&id, self.tx.clone());
                            self.registered = true;
                        }
                        tracing::info!(
                            resumable = self.sm.is_resumable(),
                            "stream management enabled"
                        );
                        vec![Output::Send(write_stanza(&enabled))]
                    }
                    Err(refused) => self.refuse(refused.into()),
                }
            }
            Nonza::Request | Nonza::Ack(_) => vec![],
            Nonza::Resume(request) => {
                let Stage::Authenticated(account) = stage else {
                    return match sm::resume(stage, &request, Previous::Unknown) {
                        Ok(_) => vec![],
                        Err(refused) => self.refuse(refused),
                    };
                };
                let account = account.clone();
                match self.take_over(account.clone(), request.clone()).await {
                    Some(Ok(handover)) => self.adopt(handover).await,
                    Some(Err(refused)) => self.refuse(refused),
                    // The owner ended the session meanwhile: what is left is its tombstone.
                    None => {
                        let tombstone = match self.node.router.resumable.lookup(&request.previd) {
                            Lookup::Expired(t) => Some(t),
                            _ => None,
                        };
                        let previous = match &tombstone {
                            Some(t) => Previous::Expired(t),
                            None => Previous::Unknown,
                        };
                        match sm::resume(Stage::Authenticated(&account), &request, previous) {
                            Ok(_) => vec![],
                            Err(refused) => self.refuse(refused),
                        }
                    }
                }
            }
        }
    }

    /// Asks the owner of the session `request` names to hand it over. `None`: no owner
    /// answered (unknown, expired, or gone meanwhile).
    async fn take_over(
        &mut self,
        account: Jid,
        request: sm::Resume,
    ) -> Option<Result<Handover, Rejection>> {
        let Lookup::Live(owner) = self.node.router.resumable.lookup(&request.previd) else {
            return None;
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let takeover = Takeover {
            account,
            request,
            reply,
        };
        owner.send(Delivery::Takeover(Box::new(takeover))).ok()?;
        // Bounded: an owner stuck on a dead socket must not hold this connection forever.
        let asked = async { answer.await.ok() };
        tokio::time::timeout(Duration::from_secs(10), asked)
            .await
            .ok()
            .flatten()
    }

    /// Continues a resumed session on this stream: `<resumed/>`, the stanzas the client
    /// missed, and from then on the session's own queue.
    async fn adopt(&mut self, handover: Handover) -> Vec<Output> {
        let Handover { resumed, state } = handover;
        let jid = resumed.jid.clone();
        // This stream's own channel was never bound to anything.
        self.tx = state.tx;
        self.rx = state.rx;
        self.sm = state.sm;
        self.session = Some(state.handle);
        self.counters = state.counters;
        self.registered = true;
        if let Some(me) = &self.session {
            me.set_detached(false);
        }
        resumed.answer.write_to(&mut self.out, ns::CLIENT);
        for stanza in &resumed.resend {
            self.out.push_str(stanza);
        }
        if resumed.request_ack {
            self.out.push_str(SM_REQUEST);
        }
        tracing::Span::current().record("jid", tracing::field::display(&jid));
        tracing::info!(
            resent = resumed.resend.len(),
            acked = resumed.released,
            "session resumed"
        );
        self.c2s.on_resumed(jid);
        vec![]
    }

    /// The vhost's stanza log (its runtime debug switch), credentials redacted.
    fn log_in(&self, event: &crate::proto::parser::StreamEvent) {
        let Some(domain) = self.c2s.domain() else {
            return;
        };
        if !self.node.logs_stanzas(domain) {
            return;
        }
        if let crate::proto::parser::StreamEvent::Stanza(e) = event {
            tracing::info!(direction = "in", xml = %crate::proto::redact::redact(&e.to_xml()), "stanza log");
        }
    }

    fn choose_resource(&self, requested: Option<String>) -> anyhow::Result<Jid> {
        let bare = Jid::from_parts(
            self.c2s_user().as_deref(),
            self.c2s.domain().unwrap_or_default(),
            None,
        )?;
        // A requested resource is honoured (a clash replaces the older session); without
        // one the server makes one up (RFC 6120 §7.6.2.1).
        let resource = requested.unwrap_or_else(|| format!("rookery-{}", random_suffix()));
        Ok(bare.with_resource(&resource)?)
    }

    fn c2s_user(&self) -> Option<String> {
        self.c2s
            .authenticated()
            .and_then(|j| j.node().map(str::to_owned))
    }

    async fn start_tls(&mut self, deadline: Instant) -> anyhow::Result<Vec<Output>> {
        let Some(config) = self.tls.clone() else {
            anyhow::bail!("TLS requested on a transport without it");
        };
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Upgrading) else {
            anyhow::bail!("TLS requested twice");
        };
        let accept = TlsAcceptor::from(config).accept(tcp);
        let tls = tokio::time::timeout_at(deadline, accept)
            .await
            .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
        let binding = {
            let (_, conn) = tls.get_ref();
            conn.export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", None)
                .ok()
        };
        self.io = Io::Tls(Box::new(tls));
        Ok(self.c2s.on_tls(binding))
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.out);
        if self.c2s.domain().is_some_and(|d| self.node.logs_stanzas(d)) {
            tracing::info!(direction = "out", xml = %crate::proto::redact::redact(&data), "stanza log");
        }
        self.io.write_all(data.as_bytes()).await?;
        self.io.flush().await?;
        Ok(())
    }

    /// After the stream: a session whose stream broke (no `</stream:stream>`, no stream
    /// error from the server, or no answer to pings) waits detached for a resumption if it
    /// is resumable; otherwise, or when nobody resumes it in time, it ends.
    async fn finish(&mut self) {
        let broken = !self.c2s.is_closed() || self.timed_out;
        // Boxed, both: once per connection, and their states (store writes among them)
        // would otherwise enlarge every connection's task for its whole life.
        if self.session.is_some()
            && self.sm.is_resumable()
            && broken
            && Box::pin(self.linger()).await
        {
            return;
        }
        Box::pin(self.cleanup()).await;
    }

    /// Sends the session's state to the connection that resumed it; gives it back if that
    /// connection went away meanwhile.
    fn hand_over(
        &mut self,
        resumed: Resumed,
        reply: tokio::sync::oneshot::Sender<Result<Handover, Rejection>>,
    ) -> Result<(), Box<SessionState>> {
        let Some(handle) = self.session.take() else {
            return Ok(());
        };
        self.registered = false;
        let (_, idle) = tokio::sync::mpsc::unbounded_channel();
        let state = SessionState {
            sm: std::mem::replace(
                &mut self.sm,
                StreamManagement::new(self.node.settings.node.limits.sm()),
            ),
            handle,
            rx: std::mem::replace(&mut self.rx, idle),
            tx: self.tx.clone(),
            counters: self.counters.take(),
        };
        match reply.send(Ok(Handover { resumed, state })) {
            Ok(()) => {
                tracing::info!("session handed to the connection that resumed it");
                Ok(())
            }
            Err(Ok(handover)) => Err(Box::new(handover.state)),
            Err(Err(_)) => Ok(()),
        }
    }

    fn restore(&mut self, state: Box<SessionState>) {
        self.sm = state.sm;
        self.session = Some(state.handle);
        self.rx = state.rx;
        self.tx = state.tx;
        self.counters = state.counters;
        self.registered = true;
    }

    /// Detached: the stream is gone, the session stays bound and queues what is routed to
    /// it, for at most the resume timeout. `true`: another connection resumed it and has it.
    async fn linger(&mut self) -> bool {
        let secs = self.sm.resume_timeout().unwrap_or(0);
        self.sm.detach();
        tracing::info!(
            resume_secs = secs,
            unacked = self.sm.unacked().len(),
            "connection lost; the session waits for resumption"
        );
        // What an inactive client was not sent yet waits with the rest, to be sent on resume.
        let now = crate::node::unix_now();
        for stanza in self.held.take() {
            if self.sm.on_outbound(write_stanza(&stanza), now).is_err() {
                return false;
            }
        }
        self.inactive = false;
        if let Some(me) = &self.session {
            me.set_detached(true);
        }
        // The socket, its buffers and its place in the connection limits go now: a detached
        // session is only its queue.
        self.io = Io::Upgrading;
        self.out = String::new();
        self.slot = None;
        let deadline = Instant::now() + Duration::from_secs(u64::from(secs));
        loop {
            tokio::select! {
                delivery = self.rx.recv() => match delivery {
                    Some(Delivery::Stanza(stanza)) => {
                        if let Some(me) = &self.session {
                            me.taken();
                        }
                        let xml = write_stanza(&stanza);
                        if let Err(e) = self.sm.on_outbound(xml, crate::node::unix_now()) {
                            tracing::info!(error = %e, "a detached session's queue overflowed");
                            return false;
                        }
                    }
                    Some(Delivery::Takeover(request)) => {
                        if self.on_takeover(*request, true) {
                            return true;
                        }
                    }
                    // Replaced by a new session with the same resource, or its domain left.
                    Some(Delivery::Kick(_)) | None => return false,
                },
                () = tokio::time::sleep_until(deadline) => {
                    tracing::info!("the resume timeout ended the session");
                    return false;
                }
                _ = self.shutdown.changed() => return false,
            }
        }
    }

    /// Ends the session for good: out of the router and the resumption registry, its
    /// unacknowledged stanzas handed on, then announced offline.
    async fn cleanup(&mut self) {
        if std::mem::take(&mut self.registered)
            && let Some(id) = self.sm.id()
        {
            // Requests that raced with the end are dropped with the queue below: their
            // connections see no answer and look for the tombstone.
            self.node
                .router
                .resumable
                .unregister(id, self.sm.tombstone());
        }
        if let Some(c) = self.counters.take() {
            c.remove_session();
        }
        if let Some(me) = self.session.take() {
            self.node.router.unbind(&me);
            self.node
                .metrics
                .sessions
                .get_or_create(&crate::metrics::VhostLabel {
                    vhost: me.jid.domain().to_string(),
                })
                .dec();
            if self.sm.is_enabled() {
                // Written but not acked, then queued but never written: nothing is lost.
                let mut unacked = self.sm.take_unacked();
                let now = crate::node::unix_now();
                while let Ok(delivery) = self.rx.try_recv() {
                    if let Delivery::Stanza(stanza) = delivery {
                        me.taken();
                        unacked.push(Unacked {
                            seq: 0,
                            xml: write_stanza(&stanza),
                            sent_at: now,
                        });
                    }
                }
                im::unacked_stanzas(&self.node, &me, unacked).await;
            }
            // RFC 6121 §4.5.2: a session that ends without unavailable presence gets one.
            im::session_ended(&self.node, &me).await;
        }
    }
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every connection's task is as big as its biggest state; the rare paths (the end of a
    /// session, stream management negotiation, waiting detached) must not make it bigger
    /// than serving the stream does, or every idle connection pays for them. (Found by
    /// heaptrack: the task had grown by 1.4 KiB, a copy of `Connection` among it.)
    #[tokio::test]
    async fn the_rare_paths_do_not_enlarge_every_connections_task() {
        let (node, _dir) = crate::node::testing::node_with_spec(
            serde_json::json!({"domain": "example.com", "generation": 1}),
            &[],
        )
        .await;
        let tls = crate::net::tls::server_config(node.certs.clone(), &[]);
        let (_stop, shutdown) = watch::channel(false);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let task = run(
            node.clone(),
            TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap(),
            "127.0.0.1:5222".parse().unwrap(),
            tls.clone(),
            false,
            shutdown.clone(),
            Box::new(()),
        );
        let task = std::mem::size_of_val(&task);
        let mut conn = Connection::new(node, [127, 0, 0, 1].into(), Some(tls), shutdown);
        let serve = std::mem::size_of_val(&conn.serve(Io::Plain(tcp), Start::Plain));
        let finish = std::mem::size_of_val(&conn.finish());
        let negotiate = std::mem::size_of_val(&conn.negotiate_sm(Nonza::Request));
        let conn = std::mem::size_of_val(&conn);
        println!(
            "run {task} B, connection {conn} B, serve {serve} B, finish {finish} B, negotiate_sm {negotiate} B"
        );
        assert!(finish <= serve, "finish {finish} B > serve {serve} B");
        // The task holds one connection and one serving state, plus a little: not two copies.
        assert!(task <= conn + serve + 512, "run {task} B");
    }

    #[test]
    fn failed_authentications_slow_down_exponentially_to_a_cap() {
        assert_eq!(delay_for(0), Duration::ZERO);
        assert_eq!(delay_for(1), Duration::from_millis(250));
        assert_eq!(delay_for(2), Duration::from_millis(500));
        assert_eq!(delay_for(4), Duration::from_millis(2000));
        assert_eq!(delay_for(30), Duration::from_millis(8000));
    }

    #[test]
    fn the_throttle_counts_per_address_and_account_and_forgives_success() {
        let t = AuthThrottle::default();
        let keys = vec!["ip:127.0.0.1".to_string(), "account:a@b".to_string()];
        assert_eq!(t.record_failure(&keys), Duration::from_millis(250));
        assert_eq!(t.record_failure(&keys), Duration::from_millis(500));
        t.record_success("account:a@b");
        // The address still remembers.
        assert_eq!(t.record_failure(&keys[..1]), Duration::from_millis(1000));
    }
}
