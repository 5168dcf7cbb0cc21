//! BOSH (XEP-0124, XEP-0206) at `/http-bind` on the node's HTTP port: an XMPP stream carried
//! by a series of HTTP requests, each `<body/>` holding stanzas.
//!
//! A session is a c2s connection ([`super::c2s::run_bosh`]) whose transport is [`BoshIo`]:
//! the payloads of the client's requests are its input, and what the connection writes is
//! cut into top-level elements ([`crate::proto::framing::Framer`]) that wait in the
//! session's queue for the next request to carry them back. So authentication, binding,
//! limits and stanza handling are the c2s connection's own.
//!
//! ```text
//!   POST <body rid sid>stanzas</body> ──► rid check ──► session input ──► c2s connection
//!   response <body>queued elements</body> ◄── held up to `wait` s ◄── session queue ◄──┘
//! ```
//!
//! Simplifications: one request is held at a time (`hold` 1, `requests` 2: a newer
//! request releases the older one empty); a request whose `rid` is not the next one (or
//! within the window of `hold`) ends the session with `item-not-found` rather than
//! re-sending a lost response; no `ack`/`key` (XEP-0124 §14, §15).

use std::{
    collections::HashMap,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use quick_xml::{XmlVersion, events::Event, reader::Reader};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{Notify, mpsc},
    time::Instant,
};

use super::http::{HttpPeer, WebState};
use crate::proto::{element::escape_attr, framing::Framer, ns};

/// The namespace of `<body/>`.
pub const HTTPBIND: &str = "http://jabber.org/protocol/httpbind";
/// The longest a request is held (seconds), whatever the client asks.
const MAX_WAIT: u64 = 60;
/// Seconds without a request after which a session ends.
const INACTIVITY: u64 = 60;

/// The BOSH sessions of the node, by `sid`.
#[derive(Default)]
pub struct Sessions {
    by_sid: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    fn get(&self, sid: &str) -> Option<Arc<Session>> {
        self.lock().get(sid).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.by_sid.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One `<body/>` from the client, read (XEP-0124 §7, §9).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BodyRequest {
    pub rid: u64,
    pub sid: Option<String>,
    pub to: Option<String>,
    pub wait: Option<u64>,
    pub restart: bool,
    pub terminate: bool,
    /// The elements inside, as written.
    pub payload: String,
}

/// Reads a request body; `None` when it is not a BOSH `<body/>` with a `rid`.
pub fn parse_body(text: &str) -> Option<BodyRequest> {
    let mut reader = Reader::from_str(text);
    let (tag, empty) = loop {
        match reader.read_event().ok()? {
            Event::Start(t) => break (t, false),
            Event::Empty(t) => break (t, true),
            Event::Decl(_) | Event::Text(_) => {}
            _ => return None,
        }
    };
    if tag.local_name().into_inner() != "body" {
        return None;
    }
    let after = reader.buffer_position() as usize;
    let mut request = BodyRequest::default();
    let mut rid = None;
    for a in tag.attributes() {
        let a = a.ok()?;
        let value = a
            .normalized_value(XmlVersion::Implicit1_0)
            .ok()?
            .into_owned();
        match a.key.into_inner() {
            "rid" => rid = value.parse().ok(),
            "sid" => request.sid = Some(value),
            "to" => request.to = Some(value),
            "wait" => request.wait = value.parse().ok(),
            "xmpp:restart" => request.restart = value == "true" || value == "1",
            "type" => request.terminate = value == "terminate",
            _ => {}
        }
    }
    request.rid = rid?;
    if !empty {
        let end = text.rfind("</")?;
        request.payload = text.get(after..end)?.trim().to_string();
    }
    Some(request)
}

/// Whether `rid` may follow `last` (XEP-0124 §14: the next one, or a little ahead while
/// earlier requests are still on their way).
pub fn rid_acceptable(last: u64, rid: u64) -> bool {
    rid > last && rid <= last + 2
}

/// A `<body/>` carrying `elements`, with `attributes` as written.
fn body(attributes: &str, elements: &[String]) -> String {
    let mut out = format!("<body xmlns='{HTTPBIND}'{attributes}");
    if elements.is_empty() {
        out.push_str("/>");
        return out;
    }
    out.push('>');
    for e in elements {
        out.push_str(e);
    }
    out.push_str("</body>");
    out
}

fn terminate(condition: &str) -> Response {
    xml(
        StatusCode::OK,
        body(&format!(" type='terminate' condition='{condition}'"), &[]),
    )
}

fn xml(status: StatusCode, text: String) -> Response {
    let mut response = (status, text).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    cors(h);
    response
}

fn cors(h: &mut axum::http::HeaderMap) {
    // Web clients are served from other origins (XEP-0124 §16 allows it).
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, OPTIONS"),
    );
}

/// `OPTIONS /http-bind`: the CORS pre-flight of browsers.
pub async fn preflight() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    cors(response.headers_mut());
    response
}

/// One session: what its connection wrote and the client has not been sent yet.
pub struct Session {
    wait: u64,
    /// The domain of the stream (restarts name it again).
    domain: String,
    state: Mutex<SessionState>,
    notify: Notify,
}

struct SessionState {
    /// To the connection; `None` once the session ended on this side.
    input: Option<mpsc::UnboundedSender<Vec<u8>>>,
    output: Vec<String>,
    /// The stream ended (`</stream:stream>` written, or the connection is gone).
    closed: bool,
    last_rid: u64,
    /// Numbers requests, so a newer one releases an older one held.
    latest_request: u64,
    held: usize,
    last_seen: Instant,
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, bytes: Vec<u8>) {
        if let Some(input) = &self.lock().input {
            let _ = input.send(bytes);
        }
    }

    /// Waits for output (up to the session's `wait`), then the response. A terminating
    /// request (`until_closed`) waits for the stream to end instead, so its answer is the
    /// `type='terminate'` body with whatever the session said last (XEP-0124 §13).
    async fn answer(&self, attributes: &str, until_closed: bool) -> Response {
        let me = {
            let mut s = self.lock();
            s.latest_request += 1;
            s.held += 1;
            s.latest_request
        };
        // Older requests held go back now.
        self.notify.notify_waiters();
        let deadline = Instant::now() + Duration::from_secs(self.wait);
        let response = loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if until_closed {
                    if s.closed {
                        let out = std::mem::take(&mut s.output);
                        break xml(StatusCode::OK, body(" type='terminate'", &out));
                    }
                } else if !s.output.is_empty() {
                    let out = std::mem::take(&mut s.output);
                    break xml(StatusCode::OK, body(attributes, &out));
                }
                if s.closed {
                    break xml(StatusCode::OK, body(" type='terminate'", &[]));
                }
                if s.latest_request != me {
                    break xml(StatusCode::OK, body(attributes, &[]));
                }
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    let attributes = if until_closed { " type='terminate'" } else { attributes };
                    let out = std::mem::take(&mut self.lock().output);
                    break xml(StatusCode::OK, body(attributes, &out));
                }
            }
        };
        let mut s = self.lock();
        s.held -= 1;
        s.last_seen = Instant::now();
        response
    }
}

/// `POST /http-bind`.
pub async fn request(
    State(state): State<Arc<WebState>>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    text: String,
) -> Response {
    let Some(request) = parse_body(&text) else {
        return terminate("bad-request");
    };
    match &request.sid {
        None => create(&state, peer, request).await,
        Some(sid) => {
            let Some(session) = state.bosh.get(sid) else {
                return terminate("item-not-found");
            };
            {
                let mut s = session.lock();
                if !rid_acceptable(s.last_rid, request.rid) {
                    s.input = None;
                    s.closed = true;
                    drop(s);
                    session.notify.notify_waiters();
                    return terminate("item-not-found");
                }
                s.last_rid = request.rid;
                s.last_seen = Instant::now();
            }
            if request.restart {
                // XEP-0206 §5: a restart stands for a new stream header.
                let to = request.to.as_deref().unwrap_or(&session.domain);
                session.send(header(to).into_bytes());
            }
            if !request.payload.is_empty() {
                session.send(request.payload.into_bytes());
            }
            if request.terminate {
                session.send(b"</stream:stream>".to_vec());
            }
            session.answer("", request.terminate).await
        }
    }
}

/// The stream header a new session or a restart stands for.
fn header(to: &str) -> String {
    let mut h = format!(
        "<stream:stream xmlns='{}' xmlns:stream='{}' version='1.0' to=\"",
        ns::CLIENT,
        ns::STREAM
    );
    escape_attr(to, &mut h);
    h.push_str("\">");
    h
}

async fn create(state: &Arc<WebState>, peer: HttpPeer, request: BodyRequest) -> Response {
    let Some(to) = request.to.clone() else {
        return terminate("improper-addressing");
    };
    // Streams must be encrypted: plain HTTP is for loopback (a TLS-terminating proxy).
    if !peer.is_secure() && state.node.settings.node.require_tls {
        return terminate("policy-violation");
    }
    let Some(slot) = state.limits.admit(&state.node, peer.addr.ip()) else {
        return terminate("remote-connection-failed");
    };
    let sid = {
        let mut b = [0u8; 16];
        let _ = getrandom::fill(&mut b);
        hex::encode(b)
    };
    let wait = request.wait.unwrap_or(MAX_WAIT).clamp(1, MAX_WAIT);
    let (tx, rx) = mpsc::unbounded_channel();
    let session = Arc::new(Session {
        wait,
        domain: to.clone(),
        state: Mutex::new(SessionState {
            input: Some(tx),
            output: vec![],
            closed: false,
            last_rid: request.rid,
            latest_request: 0,
            held: 0,
            last_seen: Instant::now(),
        }),
        notify: Notify::new(),
    });
    state.bosh.lock().insert(sid.clone(), session.clone());
    let io = BoshIo {
        input: rx,
        pending: Vec::new(),
        read_at: 0,
        framer: Framer::default(),
        session: session.clone(),
    };
    tokio::spawn(super::c2s::run_bosh(
        state.node.clone(),
        io,
        peer.addr,
        peer.is_secure(),
        state.stop.clone(),
        slot,
    ));
    tokio::spawn(watch(state.clone(), sid.clone(), session.clone()));
    session.send(header(&to).into_bytes());
    let mut from = String::new();
    escape_attr(&to, &mut from);
    let attributes = format!(
        " xmlns:xmpp='urn:xmpp:xbosh' xmlns:stream='{}' sid='{sid}' wait='{wait}' hold='1' \
         requests='2' inactivity='{INACTIVITY}' polling='2' ver='1.11' from=\"{from}\" \
         xmpp:version='1.0' xmpp:restartlogic='true'",
        ns::STREAM
    );
    session.answer(&attributes, false).await
}

/// Ends the session after `INACTIVITY` seconds without a request, and forgets it once its
/// stream is over.
async fn watch(state: Arc<WebState>, sid: String, session: Arc<Session>) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        every.tick().await;
        let mut s = session.lock();
        if s.closed {
            break;
        }
        if s.held == 0 && s.last_seen.elapsed() > Duration::from_secs(INACTIVITY) {
            tracing::info!(sid, "BOSH session inactive: ending it");
            // The connection reads the end of its input: a broken stream.
            s.input = None;
            s.closed = true;
            break;
        }
    }
    state.bosh.lock().remove(&sid);
    session.notify.notify_waiters();
}

/// A BOSH session seen as the byte stream of an XMPP connection.
pub struct BoshIo {
    input: mpsc::UnboundedReceiver<Vec<u8>>,
    pending: Vec<u8>,
    read_at: usize,
    framer: Framer,
    session: Arc<Session>,
}

impl AsyncRead for BoshIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_at < this.pending.len() {
                let n = buf.remaining().min(this.pending.len() - this.read_at);
                buf.put_slice(&this.pending[this.read_at..this.read_at + n]);
                this.read_at += n;
                return Poll::Ready(Ok(()));
            }
            match this.input.poll_recv(cx) {
                Poll::Ready(Some(bytes)) => {
                    this.pending = bytes;
                    this.read_at = 0;
                }
                // The session ended on the HTTP side: end of stream.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for BoshIo {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().framer.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let messages = this.framer.messages();
        if messages.is_empty() {
            return Poll::Ready(Ok(()));
        }
        {
            let mut s = this.session.lock();
            for m in messages {
                if m.starts_with("<open ") {
                    // The session's response carries the stream's attributes.
                } else if m.starts_with("<close ") {
                    s.closed = true;
                } else {
                    s.output.push(m);
                }
            }
        }
        this.session.notify.notify_waiters();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl Drop for BoshIo {
    fn drop(&mut self) {
        self.session.lock().closed = true;
        self.session.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_request_names_its_rid_domain_and_wait() {
        let r = parse_body(
            "<body content='text/xml; charset=utf-8' hold='1' rid='1573741820' to='example.com' ver='1.6' wait='60' xml:lang='en' xmpp:version='1.0' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>",
        )
        .unwrap();
        assert_eq!(r.rid, 1573741820);
        assert_eq!(r.to.as_deref(), Some("example.com"));
        assert_eq!(r.wait, Some(60));
        assert_eq!(r.sid, None);
        assert!(r.payload.is_empty());
    }

    #[test]
    fn a_request_carries_its_stanzas_restart_and_terminate() {
        let r = parse_body(
            "<body rid='2' sid='abc' xmlns='http://jabber.org/protocol/httpbind'><message xmlns='jabber:client' to='b@x'><body>hi</body></message><presence xmlns='jabber:client'/></body>",
        )
        .unwrap();
        assert_eq!(r.sid.as_deref(), Some("abc"));
        assert_eq!(
            r.payload,
            "<message xmlns='jabber:client' to='b@x'><body>hi</body></message><presence xmlns='jabber:client'/>"
        );
        let r = parse_body("<body rid='3' sid='abc' xmpp:restart='true' xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh'/>").unwrap();
        assert!(r.restart && !r.terminate);
        let r = parse_body("<body rid='4' sid='abc' type='terminate' xmlns='http://jabber.org/protocol/httpbind'/>").unwrap();
        assert!(r.terminate);
    }

    #[test]
    fn bodies_without_a_rid_or_of_another_name_are_refused() {
        assert_eq!(parse_body("<body sid='a'/>"), None);
        assert_eq!(parse_body("<iq rid='1'/>"), None);
        assert_eq!(parse_body("not xml"), None);
    }

    #[test]
    fn rids_must_follow_one_another() {
        assert!(rid_acceptable(10, 11));
        assert!(rid_acceptable(10, 12));
        assert!(!rid_acceptable(10, 10), "a repeated rid");
        assert!(!rid_acceptable(10, 9));
        assert!(!rid_acceptable(10, 13), "too far ahead");
    }

    /// The `/http-bind` route over a real node, the client on loopback.
    #[allow(clippy::type_complexity)]
    async fn app() -> (
        axum::Router,
        tempfile::TempDir,
        tokio::sync::watch::Sender<bool>,
    ) {
        let (node, dir) = crate::node::testing::node_with_spec(
            serde_json::json!({"domain": "example.com", "generation": 1}),
            &[],
        )
        .await;
        // Kept by the test: a dropped sender reads as shutdown.
        let (stopper, stop) = tokio::sync::watch::channel(false);
        let state = Arc::new(WebState {
            limits: Arc::new(super::super::limits::ConnLimits::new(&node.settings.node)),
            node,
            stop,
            bosh: Sessions::default(),
        });
        let app = axum::Router::new()
            .route("/http-bind", axum::routing::post(request))
            .with_state(state);
        (app, dir, stopper)
    }

    #[tokio::test]
    async fn a_session_without_requests_for_its_inactivity_period_ends() {
        let (node, _dir) = crate::node::testing::node_with_spec(
            serde_json::json!({"domain": "example.com", "generation": 1}),
            &[],
        )
        .await;
        let (_stopper, stop) = tokio::sync::watch::channel(false);
        let state = Arc::new(WebState {
            limits: Arc::new(super::super::limits::ConnLimits::new(&node.settings.node)),
            node,
            stop,
            bosh: Sessions::default(),
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let session = Arc::new(Session {
            wait: 5,
            domain: "example.com".into(),
            state: Mutex::new(SessionState {
                input: Some(tx),
                output: vec![],
                closed: false,
                last_rid: 1,
                latest_request: 0,
                held: 0,
                last_seen: Instant::now() - Duration::from_secs(INACTIVITY + 1),
            }),
            notify: Notify::new(),
        });
        state.bosh.lock().insert("s1".into(), session.clone());
        tokio::time::timeout(
            Duration::from_secs(10),
            watch(state.clone(), "s1".into(), session.clone()),
        )
        .await
        .unwrap();
        // The connection reads the end of its stream, and the sid is forgotten.
        assert!(rx.recv().await.is_none());
        assert!(state.bosh.get("s1").is_none());
        let answer = session.answer("", false).await;
        let bytes = http_body_util::BodyExt::collect(answer.into_body())
            .await
            .unwrap()
            .to_bytes();
        assert!(String::from_utf8_lossy(&bytes).contains("type='terminate'"));
    }

    async fn post(app: &axum::Router, body: &str) -> String {
        use tower::ServiceExt;
        let mut req = axum::http::Request::post("/http-bind")
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(HttpPeer {
            addr: "127.0.0.1:40000".parse().unwrap(),
            tls: false,
        }));
        let response = app.clone().oneshot(req).await.unwrap();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_new_session_answers_with_its_sid_and_the_stream_features() {
        let (app, _dir, _stop) = app().await;
        let out = post(
            &app,
            &format!("<body xmlns='{HTTPBIND}' rid='100' to='example.com' wait='5' hold='1'/>"),
        )
        .await;
        assert!(out.contains(" sid='"), "{out}");
        assert!(out.contains("xmpp:version='1.0'"), "{out}");
        assert!(out.contains("<stream:features"), "{out}");
        assert!(
            out.contains("<mechanism>SCRAM-SHA-256</mechanism>"),
            "{out}"
        );
        let sid = out
            .split(" sid='")
            .nth(1)
            .unwrap()
            .split('\'')
            .next()
            .unwrap();
        // A repeated rid ends the session; after that the sid is unknown.
        let again = post(
            &app,
            &format!("<body xmlns='{HTTPBIND}' rid='100' sid='{sid}'/>"),
        )
        .await;
        assert!(again.contains("condition='item-not-found'"), "{again}");
    }

    #[tokio::test]
    async fn plain_http_from_another_host_gets_no_session_when_tls_is_required() {
        use tower::ServiceExt;
        let (app, _dir, _stop) = app().await;
        let mut req = axum::http::Request::post("/http-bind")
            .body(axum::body::Body::from(format!(
                "<body xmlns='{HTTPBIND}' rid='1' to='example.com'/>"
            )))
            .unwrap();
        req.extensions_mut().insert(ConnectInfo(HttpPeer {
            addr: "192.0.2.7:40000".parse().unwrap(),
            tls: false,
        }));
        let response = app.oneshot(req).await.unwrap();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let out = String::from_utf8_lossy(&bytes);
        assert!(out.contains("condition='policy-violation'"), "{out}");
    }

    #[tokio::test]
    async fn unknown_sessions_and_bad_bodies_are_refused() {
        let (app, _dir, _stop) = app().await;
        let out = post(
            &app,
            &format!("<body xmlns='{HTTPBIND}' rid='5' sid='nope'/>"),
        )
        .await;
        assert!(
            out.contains("type='terminate' condition='item-not-found'"),
            "{out}"
        );
        let out = post(&app, "<body/>").await;
        assert!(out.contains("condition='bad-request'"), "{out}");
        let out = post(&app, &format!("<body xmlns='{HTTPBIND}' rid='5'/>")).await;
        assert!(out.contains("condition='improper-addressing'"), "{out}");
    }

    #[test]
    fn responses_wrap_the_queued_elements() {
        assert_eq!(body("", &[]), format!("<body xmlns='{HTTPBIND}'/>"));
        assert_eq!(
            body(" sid='s'", &["<presence xmlns='jabber:client'/>".into()]),
            format!("<body xmlns='{HTTPBIND}' sid='s'><presence xmlns='jabber:client'/></body>")
        );
    }
}
