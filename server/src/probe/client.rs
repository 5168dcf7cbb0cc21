//! The probe's XMPP client: the stages of [`probe`] over a socket.
//!
//! [`XmlStream`] is the only place bytes are read: at most [`READ_CHUNK`] per read, fed
//! to the node's bounded [`StreamParser`] with limits sized for a login (nothing a server
//! says to a fresh session comes near them). Each stage is a function that sends what
//! the stage needs and reads until its answer, skipping (a bounded number of) unrelated
//! stanzas; its `Err` is the short reason a result shows, built by the `describe_*`
//! functions from what the server said.

use std::{collections::HashMap, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use rookery_node::proto::{
    element::Element,
    ns,
    parser::{Limits, StreamEvent, StreamParser},
};
use rustls::pki_types::ServerName;
use secrecy::ExposeSecret;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    time::Instant,
};
use tokio_rustls::TlsConnector;

use super::{
    Outcome, ProbeResult, ProbeTarget, Stage, StageClock,
    scram::{ScramClient, new_nonce, salted_password},
};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 4096;

/// What a server may make the probe parse: a login's features, SASL payloads, a bind
/// result and two small stanzas are far below these.
const LIMITS: Limits = Limits {
    max_stanza_bytes: 64 * 1024,
    max_depth: 16,
    max_attributes: 32,
    max_elements: 512,
};

/// Stanzas the probe ignores while waiting for an answer before it gives up.
const MAX_UNRELATED: usize = 32;

/// How long the clean close waits for the server's `</stream:stream>`.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Untrusted text in a result is cut to this many characters.
const MAX_REASON_CHARS: usize = 160;

/// Logs in to `target` and exercises the session; see the module documentation of
/// [`crate::probe`]. Never fails: every problem is a [`ProbeResult`].
#[tracing::instrument(skip_all, fields(domain = %target.domain, host = %target.host))]
pub async fn probe(target: &ProbeTarget, timeout: Duration) -> ProbeResult {
    let result = measured(timeout, async |clock| run(target, clock).await).await;
    tracing::debug!(ok = result.ok, stage = ?result.failed_stage, error = ?result.error, "probe done");
    result
}

/// Runs `stages` under `timeout` and turns how it ended into a result.
async fn measured(
    timeout: Duration,
    stages: impl AsyncFnOnce(&mut StageClock) -> Result<(), String>,
) -> ProbeResult {
    let mut clock = StageClock::new(Instant::now());
    let outcome = match tokio::time::timeout(timeout, stages(&mut clock)).await {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(reason)) => Outcome::Failed(reason),
        Err(_) => Outcome::TimedOut(timeout),
    };
    clock.finish(outcome, Instant::now())
}

async fn run(target: &ProbeTarget, clock: &mut StageClock) -> Result<(), String> {
    clock.enter(Stage::Connect, Instant::now());
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
    // Small writes, each waiting for an answer: Nagle would only add latency.
    let _ = tcp.set_nodelay(true);

    clock.enter(Stage::Tls, Instant::now());
    let tls = starttls(tcp, target).await?;

    let mut xml = XmlStream::new(tls);
    session(&mut xml, target, clock).await?;
    xml.close().await;
    Ok(())
}

/// The `Tls` stage: STARTTLS on a plain stream, then the handshake.
async fn starttls(
    tcp: TcpStream,
    target: &ProbeTarget,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut xml = XmlStream::new(tcp);
    let features = xml.open_stream(&target.domain).await?;
    if !features.has_child("starttls", ns::TLS) {
        return Err("the server does not offer STARTTLS".into());
    }
    xml.send(&Element::new("starttls", ns::TLS)).await?;
    let answer = xml.next_element().await?;
    if answer.is("failure", ns::TLS) {
        return Err("the server refused STARTTLS".into());
    }
    if !answer.is("proceed", ns::TLS) {
        return Err(unexpected(&answer, "<proceed/>"));
    }
    // Anything after <proceed/> arrived in the clear, where anyone could have put it.
    if xml.parser.buffered() > 0 {
        return Err("the server sent data in the clear after <proceed/>".into());
    }
    let name = ServerName::try_from(target.domain.clone())
        .map_err(|_| format!("{} is not a valid TLS server name", clip(&target.domain)))?;
    TlsConnector::from(target.tls.clone())
        .connect(name, xml.io)
        .await
        .map_err(|e| format!("TLS handshake failed: {e}"))
}

/// The stages after TLS: `Auth`, `Bind`, `Ping`, `Message`.
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut XmlStream<S>,
    target: &ProbeTarget,
    clock: &mut StageClock,
) -> Result<(), String> {
    clock.enter(Stage::Auth, Instant::now());
    authenticate(xml, target).await?;
    clock.enter(Stage::Bind, Instant::now());
    let jid = bind(xml, target).await?;
    clock.enter(Stage::Ping, Instant::now());
    ping(xml, &target.domain).await?;
    clock.enter(Stage::Message, Instant::now());
    message_to_self(xml, &jid).await?;
    clock.complete(Instant::now());
    Ok(())
}

/// SASL SCRAM-SHA-256 on a new stream; the server must prove it knows the account.
async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut XmlStream<S>,
    target: &ProbeTarget,
) -> Result<(), String> {
    let features = xml.open_stream(&target.domain).await?;
    let mechanisms = features
        .get_child("mechanisms", ns::SASL)
        .ok_or("the server offers no SASL mechanisms")?;
    if !mechanisms
        .children()
        .any(|m| m.is("mechanism", ns::SASL) && m.text().trim() == "SCRAM-SHA-256")
    {
        return Err("the server does not offer SCRAM-SHA-256".into());
    }
    let mut scram = ScramClient::new(&target.username, new_nonce());
    xml.send(
        &Element::new("auth", ns::SASL)
            .with_attr("mechanism", "SCRAM-SHA-256")
            .with_text(B64.encode(scram.client_first())),
    )
    .await?;

    let server_first = match sasl_answer(&xml.next_element().await?)? {
        SaslAnswer::Challenge(data) => data,
        SaslAnswer::Success(_) => return Err("the server let us in without a proof".into()),
    };
    let asked = scram
        .read_server_first(&server_first)
        .map_err(|e| e.to_string())?;
    let salted = salted_cached(target, &asked.salt, asked.iterations).await?;
    let client_final = scram.client_final(&salted).map_err(|e| e.to_string())?;
    xml.send(&Element::new("response", ns::SASL).with_text(B64.encode(client_final)))
        .await?;

    // RFC 6120 §6.3.10: the server's final message comes with <success/>, or (from older
    // servers) in one more <challenge/> that an empty <response/> answers.
    let mut verified = false;
    loop {
        match sasl_answer(&xml.next_element().await?)? {
            SaslAnswer::Challenge(data) if !verified => {
                scram
                    .verify_server_final(&data)
                    .map_err(|e| e.to_string())?;
                verified = true;
                xml.send(&Element::new("response", ns::SASL)).await?;
            }
            SaslAnswer::Challenge(_) => return Err("the server sent a third SASL challenge".into()),
            SaslAnswer::Success(data) if data.is_empty() && !verified => {
                return Err("the server's SASL success carries no SCRAM signature".into());
            }
            SaslAnswer::Success(data) => {
                if !data.is_empty() {
                    scram
                        .verify_server_final(&data)
                        .map_err(|e| e.to_string())?;
                }
                return Ok(());
            }
        }
    }
}

/// Salted passwords computed so far, by a digest of (domain, user, password, salt,
/// iterations). PBKDF2 is most of a probe's CPU; like real clients, the prober computes it
/// once per account and salt, and again only when the server's salt or iteration count (or
/// the password) changes. Every login still runs the whole SCRAM exchange and checks the
/// server's signature.
static SALTED: std::sync::Mutex<Option<HashMap<[u8; 32], [u8; 32]>>> = std::sync::Mutex::new(None);

/// Entries kept at most; past it the cache starts over (one entry per probed domain).
const SALTED_MAX: usize = 200_000;

async fn salted_cached(
    target: &ProbeTarget,
    salt: &[u8],
    iterations: u32,
) -> Result<[u8; 32], String> {
    use sha2::{Digest, Sha256};
    let mut key = Sha256::new();
    for part in [
        target.domain.as_bytes(),
        target.username.as_bytes(),
        target.password.expose_secret().as_bytes(),
        salt,
    ] {
        key.update((part.len() as u64).to_be_bytes());
        key.update(part);
    }
    key.update(iterations.to_be_bytes());
    let key: [u8; 32] = key.finalize().into();
    if let Some(found) = SALTED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .and_then(|m| m.get(&key))
    {
        return Ok(*found);
    }
    // PBKDF2 is CPU work (thousands of HMACs): off the async workers.
    let password = target.password.clone();
    let salt = salt.to_vec();
    let salted = tokio::task::spawn_blocking(move || {
        salted_password(password.expose_secret().as_bytes(), &salt, iterations)
    })
    .await
    .map_err(|e| format!("computing the SCRAM key failed: {e}"))?;
    let mut cache = SALTED.lock().unwrap_or_else(|p| p.into_inner());
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= SALTED_MAX {
        map.clear();
    }
    map.insert(key, salted);
    Ok(salted)
}

/// A SASL answer's payload, decoded; `<failure/>` is an `Err` naming its condition.
enum SaslAnswer {
    Challenge(String),
    Success(String),
}

fn sasl_answer(element: &Element) -> Result<SaslAnswer, String> {
    if element.is("failure", ns::SASL) {
        return Err(describe_sasl_failure(element));
    }
    let is_challenge = element.is("challenge", ns::SASL);
    if !is_challenge && !element.is("success", ns::SASL) {
        return Err(unexpected(element, "a SASL answer"));
    }
    let text = element.text();
    let text = text.trim();
    // RFC 6120 §6.4.2: "=" is an empty payload.
    let bytes = if text == "=" {
        Vec::new()
    } else {
        B64.decode(text)
            .map_err(|_| "the server's SASL data is not base64".to_string())?
    };
    let data =
        String::from_utf8(bytes).map_err(|_| "the server's SASL data is not UTF-8".to_string())?;
    Ok(if is_challenge {
        SaslAnswer::Challenge(data)
    } else {
        SaslAnswer::Success(data)
    })
}

/// Binds a fresh resource on a new stream (so probes from several locations never
/// replace each other's sessions); returns the full JID the server bound.
async fn bind<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut XmlStream<S>,
    target: &ProbeTarget,
) -> Result<String, String> {
    let features = xml.open_stream(&target.domain).await?;
    if !features.has_child("bind", ns::BIND) {
        return Err("the server offers no resource binding".into());
    }
    let id = random_id("bind");
    let resource = random_id("rookery-probe");
    xml.send(
        &Element::new("iq", ns::CLIENT)
            .with_attr("type", "set")
            .with_attr("id", &id)
            .with_child(
                Element::new("bind", ns::BIND)
                    .with_child(Element::new("resource", ns::BIND).with_text(resource)),
            ),
    )
    .await?;
    let answer = xml.answer_to(&id).await?;
    if answer.attr("type") != Some("result") {
        return Err(format!(
            "the server refused to bind a resource: {}",
            describe_stanza_error(&answer)
        ));
    }
    let jid = answer
        .get_child("bind", ns::BIND)
        .and_then(|b| b.child_text("jid", ns::BIND))
        .ok_or("the bind result has no JID")?;
    let jid = jid.trim();
    let bare = format!("{}@{}", target.username, target.domain);
    match jid.split_once('/') {
        Some((b, r)) if b.eq_ignore_ascii_case(&bare) && !r.is_empty() => {}
        _ => {
            return Err(format!(
                "the server bound {}, not a resource of {}",
                clip(jid),
                clip(&bare)
            ));
        }
    }

    // RFC 3921 sessions: obsolete (RFC 6121), but an old server that insists gets one.
    let session = features.get_child("session", ns::SESSION);
    if session.is_some_and(|s| !s.has_child("optional", ns::SESSION)) {
        let id = random_id("session");
        xml.send(
            &Element::new("iq", ns::CLIENT)
                .with_attr("type", "set")
                .with_attr("id", &id)
                .with_child(Element::new("session", ns::SESSION)),
        )
        .await?;
        let answer = xml.answer_to(&id).await?;
        if answer.attr("type") != Some("result") {
            return Err(format!(
                "the server refused the session: {}",
                describe_stanza_error(&answer)
            ));
        }
    }
    Ok(jid.to_string())
}

/// XEP-0199: an `<iq type='get'><ping/></iq>` to the domain must get a result from it.
async fn ping<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut XmlStream<S>,
    domain: &str,
) -> Result<(), String> {
    let id = random_id("ping");
    xml.send(
        &Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", &id)
            .with_attr("to", domain)
            .with_child(Element::new("ping", ns::PING)),
    )
    .await?;
    let answer = xml.answer_to(&id).await?;
    if answer.attr("type") != Some("result") {
        return Err(format!(
            "the server answered the ping with {}",
            describe_stanza_error(&answer)
        ));
    }
    match answer.attr("from") {
        None => Ok(()),
        Some(from) if from.eq_ignore_ascii_case(domain) => Ok(()),
        Some(from) => Err(format!("the ping was answered by {}", clip(from))),
    }
}

/// A chat message with a unique id and body to our own full JID must come back, unchanged
/// and from that JID: the server's routing works end to end.
async fn message_to_self<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut XmlStream<S>,
    jid: &str,
) -> Result<(), String> {
    let id = random_id("probe");
    let body = format!("Rookery availability probe {id}");
    xml.send(
        &Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("id", &id)
            .with_attr("to", jid)
            .with_child(Element::new("body", ns::CLIENT).with_text(&body)),
    )
    .await?;
    let mut unrelated = 0;
    loop {
        let stanza = xml.next_element().await?;
        let ours = stanza.is("message", ns::CLIENT)
            && (stanza.attr("id") == Some(id.as_str())
                || stanza.child_text("body", ns::CLIENT).as_deref() == Some(body.as_str()));
        if !ours {
            xml.skip_unrelated(&stanza, &mut unrelated).await?;
            continue;
        }
        if stanza.attr("type") == Some("error") {
            return Err(format!(
                "the message bounced: {}",
                describe_stanza_error(&stanza)
            ));
        }
        if stanza.child_text("body", ns::CLIENT).as_deref() != Some(body.as_str()) {
            return Err("the message came back with another body".into());
        }
        return match stanza.attr("from") {
            Some(from) if from.eq_ignore_ascii_case(jid) => Ok(()),
            from => Err(format!(
                "the message came back from {}",
                clip(from.unwrap_or("nobody"))
            )),
        };
    }
}

/// Logs in as `target`'s account (the probe's steps: TCP, STARTTLS with the certificate
/// verified, SCRAM-SHA-256, bind), sends one `<message type='chat'>` with `body` to `to`,
/// and closes the stream cleanly: how XMPP alerts are sent. The error is a short reason
/// for a delivery log; the whole exchange is bounded by `timeout`.
pub async fn send_message(
    target: &ProbeTarget,
    to: &str,
    body: &str,
    timeout: Duration,
) -> Result<(), String> {
    let exchange = async {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|e| format!("cannot connect to {}:{}: {e}", target.host, target.port))?;
        let _ = tcp.set_nodelay(true);
        let tls = starttls(tcp, target).await?;
        let mut xml = XmlStream::new(tls);
        authenticate(&mut xml, target).await.map_err(|e| {
            format!(
                "logging in as {}@{} failed: {e}",
                target.username, target.domain
            )
        })?;
        bind(&mut xml, target).await?;
        deliver_message(&mut xml, &target.domain, to, body).await?;
        xml.close().await;
        Ok(())
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no answer from {} within {}",
            target.host,
            super::human_duration(timeout)
        )),
    }
}

/// Sends the message, then a ping to the domain: the server answers the ping after it has
/// handled the message, so a bounce that comes at once arrives before the ping's answer.
async fn deliver_message<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut XmlStream<S>,
    domain: &str,
    to: &str,
    body: &str,
) -> Result<(), String> {
    let id = random_id("alert");
    xml.send(
        &Element::new("message", ns::CLIENT)
            .with_attr("type", "chat")
            .with_attr("id", &id)
            .with_attr("to", to)
            .with_child(Element::new("body", ns::CLIENT).with_text(body)),
    )
    .await?;
    let ping_id = random_id("ping");
    xml.send(
        &Element::new("iq", ns::CLIENT)
            .with_attr("type", "get")
            .with_attr("id", &ping_id)
            .with_attr("to", domain)
            .with_child(Element::new("ping", ns::PING)),
    )
    .await?;
    let mut unrelated = 0;
    loop {
        let stanza = xml.next_element().await?;
        if stanza.is("message", ns::CLIENT)
            && stanza.attr("id") == Some(id.as_str())
            && stanza.attr("type") == Some("error")
        {
            return Err(format!(
                "the message to {} bounced: {}",
                clip(to),
                describe_stanza_error(&stanza)
            ));
        }
        if stanza.is("iq", ns::CLIENT)
            && stanza.attr("id") == Some(ping_id.as_str())
            && matches!(stanza.attr("type"), Some("result" | "error"))
        {
            return Ok(());
        }
        xml.skip_unrelated(&stanza, &mut unrelated).await?;
    }
}

/// A byte stream read as XMPP: bounded reads into the node's stream parser.
struct XmlStream<S> {
    io: S,
    parser: StreamParser,
    buf: Box<[u8; READ_CHUNK]>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> XmlStream<S> {
    fn new(io: S) -> Self {
        Self {
            io,
            parser: StreamParser::new(LIMITS),
            buf: Box::new([0; READ_CHUNK]),
        }
    }

    async fn send_raw(&mut self, xml: &str) -> Result<(), String> {
        self.io
            .write_all(xml.as_bytes())
            .await
            .map_err(|e| format!("writing to the server failed: {e}"))?;
        self.io
            .flush()
            .await
            .map_err(|e| format!("writing to the server failed: {e}"))
    }

    async fn send(&mut self, element: &Element) -> Result<(), String> {
        let mut xml = String::new();
        element.write_to(&mut xml, ns::CLIENT);
        self.send_raw(&xml).await
    }

    /// Sends a new stream header (forgetting the old stream), reads the server's and its
    /// features.
    async fn open_stream(&mut self, domain: &str) -> Result<Element, String> {
        self.parser.reset();
        self.send_raw(&stream_header(domain)).await?;
        match self.next_event().await? {
            StreamEvent::StreamOpen(header) if header.version.as_deref() == Some("1.0") => {}
            StreamEvent::StreamOpen(_) => return Err("the server does not speak XMPP 1.0".into()),
            _ => return Err("the server did not open a stream".into()),
        }
        let features = self.next_element().await?;
        if !features.is("features", ns::STREAM) {
            return Err(unexpected(&features, "stream features"));
        }
        Ok(features)
    }

    async fn next_event(&mut self) -> Result<StreamEvent, String> {
        loop {
            match self.parser.next_event() {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {}
                Err(e) => return Err(format!("the server sent bad XML: {e}")),
            }
            let n = self
                .io
                .read(&mut self.buf[..])
                .await
                .map_err(|e| format!("reading from the server failed: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.parser.feed(&self.buf[..n]);
        }
    }

    /// The next top-level element; a stream error or the end of the stream is an `Err`.
    async fn next_element(&mut self) -> Result<Element, String> {
        match self.next_event().await? {
            StreamEvent::Stanza(e) if e.is("error", ns::STREAM) => Err(describe_stream_error(&e)),
            StreamEvent::Stanza(e) => Ok(e),
            StreamEvent::StreamClose => Err("the server closed the stream".into()),
            StreamEvent::StreamOpen(_) => Err("the server restarted the stream".into()),
        }
    }

    /// Reads until the `<iq type='result|error'>` with this id.
    async fn answer_to(&mut self, id: &str) -> Result<Element, String> {
        let mut unrelated = 0;
        loop {
            let stanza = self.next_element().await?;
            if stanza.is("iq", ns::CLIENT)
                && stanza.attr("id") == Some(id)
                && matches!(stanza.attr("type"), Some("result" | "error"))
            {
                return Ok(stanza);
            }
            self.skip_unrelated(&stanza, &mut unrelated).await?;
        }
    }

    /// Counts a stanza the probe did not wait for; answers a request (RFC 6120 §8.2.3
    /// wants every iq get/set answered): a ping with a result, anything else with
    /// `service-unavailable`.
    async fn skip_unrelated(&mut self, stanza: &Element, seen: &mut usize) -> Result<(), String> {
        *seen += 1;
        if *seen > MAX_UNRELATED {
            return Err("the server sent too many unexpected stanzas".into());
        }
        if !stanza.is("iq", ns::CLIENT) || !matches!(stanza.attr("type"), Some("get" | "set")) {
            return Ok(());
        }
        let mut answer = Element::new("iq", ns::CLIENT)
            .with_opt_attr("id", stanza.attr("id"))
            .with_opt_attr("to", stanza.attr("from"));
        if stanza.has_child("ping", ns::PING) {
            answer.set_attr("type", "result");
        } else {
            answer.set_attr("type", "error");
            answer.append_child(
                Element::new("error", ns::CLIENT)
                    .with_attr("type", "cancel")
                    .with_child(Element::new("service-unavailable", ns::STANZAS_ERRORS)),
            );
        }
        self.send(&answer).await
    }

    /// `</stream:stream>`, a short wait for the server's, then the transport's close (the
    /// TLS close_notify). Problems here do not fail the probe: every stage passed.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            self.send_raw("</stream:stream>").await?;
            while !matches!(self.next_event().await?, StreamEvent::StreamClose) {}
            Ok::<(), String>(())
        })
        .await;
        let _ = tokio::time::timeout(CLOSE_GRACE, self.io.shutdown()).await;
    }
}

fn stream_header(domain: &str) -> String {
    let mut to = String::new();
    rookery_node::proto::element::escape_attr(domain, &mut to);
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{}' xmlns:stream='{}' to='{to}' version='1.0' xml:lang='en'>",
        ns::CLIENT,
        ns::STREAM
    )
}

/// `prefix-` and 16 random hex digits.
fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator works");
    format!("{prefix}-{}", hex::encode(bytes))
}

/// "see-other-host 1.2.3.4", "policy-violation: This domain is suspended…", "conflict".
fn describe_stream_error(error: &Element) -> String {
    describe_condition(error, ns::STREAMS_ERRORS, "an unspecified stream error")
}

/// "not-authorized", "account-disabled: …".
fn describe_sasl_failure(failure: &Element) -> String {
    describe_condition(failure, ns::SASL, "an unspecified SASL failure")
}

/// The condition of the `<error/>` in a stanza: "service-unavailable", "item-not-found: …".
fn describe_stanza_error(stanza: &Element) -> String {
    match stanza.get_child("error", ns::CLIENT) {
        Some(error) => describe_condition(error, ns::STANZAS_ERRORS, "an unspecified error"),
        None => "an error without a condition".into(),
    }
}

/// The first child in `condition_ns` other than `<text/>` names the condition; its text
/// (the host of `see-other-host`) follows with a space, the `<text/>` after a colon.
fn describe_condition(element: &Element, condition_ns: &str, unnamed: &str) -> String {
    let condition = element
        .children()
        .find(|c| c.ns() == condition_ns && c.name() != "text");
    let mut reason = match condition {
        Some(c) => {
            let content = c.text();
            let content = content.trim();
            if content.is_empty() {
                clip(c.name())
            } else {
                format!("{} {}", clip(c.name()), clip(content))
            }
        }
        None => unnamed.to_string(),
    };
    if let Some(text) = element.child_text("text", condition_ns) {
        let text = text.trim();
        if !text.is_empty() {
            reason.push_str(": ");
            reason.push_str(&clip(text));
        }
    }
    reason
}

/// "expected <proceed/>, got <failure/>".
fn unexpected(element: &Element, wanted: &str) -> String {
    format!("expected {wanted}, got <{}/>", clip(element.name()))
}

/// Untrusted text, at most [`MAX_REASON_CHARS`] characters, without control characters.
fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON_CHARS)
        .collect();
    if text.chars().count() > MAX_REASON_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;
    use tokio::io::DuplexStream;

    fn parse(xml: &str) -> Element {
        let mut parser = StreamParser::new(LIMITS);
        parser.feed(stream_header("example.com").as_bytes());
        parser.feed(format!("<wrapper xmlns:stream='{}'>{xml}</wrapper>", ns::STREAM).as_bytes());
        assert!(matches!(
            parser.next_event(),
            Ok(Some(StreamEvent::StreamOpen(_)))
        ));
        match parser.next_event() {
            Ok(Some(StreamEvent::Stanza(wrapper))) => wrapper.children().next().unwrap().clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stream_errors_name_their_condition_content_and_text() {
        let suspended = parse(
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams' xml:lang='en'>This domain is suspended by its provider; contact them.</text></stream:error>",
        );
        assert_eq!(
            describe_stream_error(&suspended),
            "policy-violation: This domain is suspended by its provider; contact them."
        );
        let moved = parse(
            "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>1.2.3.4</see-other-host></stream:error>",
        );
        assert_eq!(describe_stream_error(&moved), "see-other-host 1.2.3.4");
        let empty = parse("<stream:error/>");
        assert_eq!(describe_stream_error(&empty), "an unspecified stream error");
    }

    #[test]
    fn sasl_failures_and_stanza_errors_name_their_condition() {
        let failure =
            parse("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
        assert_eq!(describe_sasl_failure(&failure), "not-authorized");
        let disabled = parse(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><account-disabled/><text>Unpaid.</text></failure>",
        );
        assert_eq!(
            describe_sasl_failure(&disabled),
            "account-disabled: Unpaid."
        );
        let bounced = parse(
            "<iq type='error' id='x'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
        );
        assert_eq!(describe_stanza_error(&bounced), "service-unavailable");
        let bare = parse("<iq type='error' id='x'/>");
        assert_eq!(describe_stanza_error(&bare), "an error without a condition");
    }

    #[test]
    fn what_a_server_says_is_clipped_and_stripped_of_control_characters() {
        let long = "x".repeat(1000);
        let error = parse(&format!(
            "<stream:error><see-other-host xmlns='urn:ietf:params:xml:ns:xmpp-streams'>a&#10;b{long}</see-other-host></stream:error>"
        ));
        let reason = describe_stream_error(&error);
        assert!(reason.starts_with("see-other-host a b"), "{reason}");
        assert!(reason.chars().count() <= "see-other-host ".len() + MAX_REASON_CHARS + 1);
    }

    #[test]
    fn sasl_payloads_are_decoded_and_an_equals_sign_is_empty() {
        let challenge = parse(&format!(
            "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
            B64.encode("r=abc")
        ));
        assert!(matches!(sasl_answer(&challenge), Ok(SaslAnswer::Challenge(d)) if d == "r=abc"));
        let success = parse("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>=</success>");
        assert!(matches!(sasl_answer(&success), Ok(SaslAnswer::Success(d)) if d.is_empty()));
        let junk = parse("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>!!!</success>");
        assert!(sasl_answer(&junk).is_err());
    }

    // A scripted server over an in-memory pipe for the stages after TLS.

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Script {
        Normal,
        RejectPassword,
        ForgedSignature,
        SilentPing,
        BounceMessage,
        GarbageAfterBind,
    }

    const PASSWORD: &str = "pencil";
    const SALT: &[u8] = b"rookery-salt";

    fn target() -> ProbeTarget {
        ProbeTarget {
            host: "127.0.0.1".into(),
            port: 5222,
            domain: "example.com".into(),
            username: "probe".into(),
            password: PASSWORD.into(),
            tls: super::super::tls_config_webpki(),
        }
    }

    fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data);
        mac.finalize().into_bytes().to_vec()
    }

    /// The server side of the session, as the node plays it (after TLS).
    async fn serve(io: DuplexStream, script: Script) {
        let mut xml = XmlStream::new(io);
        let header = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' from='example.com' id='s1' version='1.0'>";
        let mut client_first_bare = String::new();
        let mut server_first = String::new();
        loop {
            let Ok(event) = xml.next_event().await else {
                return;
            };
            let stanza = match event {
                StreamEvent::StreamOpen(_) => {
                    let features = if client_first_bare.is_empty() {
                        "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256</mechanism></mechanisms>"
                    } else {
                        "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                    };
                    let _ = xml
                        .send_raw(&format!(
                            "{header}<stream:features>{features}</stream:features>"
                        ))
                        .await;
                    continue;
                }
                StreamEvent::StreamClose => {
                    let _ = xml.send_raw("</stream:stream>").await;
                    return;
                }
                StreamEvent::Stanza(s) => s,
            };
            let data = String::from_utf8(B64.decode(stanza.text().trim()).unwrap_or_default())
                .unwrap_or_default();
            let reply = match stanza.name() {
                "auth" => {
                    client_first_bare = data.trim_start_matches("n,,").to_string();
                    let nonce = client_first_bare.split("r=").nth(1).unwrap_or_default();
                    server_first = format!("r={nonce}server,s={},i=4096", B64.encode(SALT));
                    format!(
                        "<challenge xmlns='{}'>{}</challenge>",
                        ns::SASL,
                        B64.encode(&server_first)
                    )
                }
                "response" if script == Script::RejectPassword => {
                    format!("<failure xmlns='{}'><not-authorized/></failure>", ns::SASL)
                }
                "response" => {
                    let without_proof = data.split(",p=").next().unwrap_or_default();
                    let auth_message =
                        format!("{client_first_bare},{server_first},{without_proof}");
                    let salted = salted_password(PASSWORD.as_bytes(), SALT, 4096);
                    let key = if script == Script::ForgedSignature {
                        b"not the server key".to_vec()
                    } else {
                        hmac(&salted, b"Server Key")
                    };
                    let v = format!("v={}", B64.encode(hmac(&key, auth_message.as_bytes())));
                    xml.parser.reset();
                    format!("<success xmlns='{}'>{}</success>", ns::SASL, B64.encode(v))
                }
                "iq" if stanza.has_child("bind", ns::BIND) => {
                    let id = stanza.attr("id").unwrap_or_default();
                    let garbage = if script == Script::GarbageAfterBind {
                        "<<<"
                    } else {
                        ""
                    };
                    format!(
                        "<iq type='result' id='{id}'><bind xmlns='{}'><jid>probe@example.com/r1</jid></bind></iq>{garbage}",
                        ns::BIND
                    )
                }
                "iq" if script == Script::SilentPing => continue,
                "iq" => format!(
                    "<iq type='result' id='{}' from='example.com'/>",
                    stanza.attr("id").unwrap_or_default()
                ),
                "message" if script == Script::BounceMessage => {
                    let mut bounce = stanza.clone();
                    bounce.set_attr("type", "error");
                    bounce.set_attr("from", "probe@example.com/r1");
                    bounce.append_child(
                        Element::new("error", ns::CLIENT)
                            .with_attr("type", "cancel")
                            .with_child(Element::new("recipient-unavailable", ns::STANZAS_ERRORS)),
                    );
                    bounce.to_string()
                }
                "message" => {
                    // A server ping and a stray presence first: the probe must answer the
                    // one and skip the other.
                    let mut echo = stanza.clone();
                    echo.set_attr("from", "probe@example.com/r1");
                    let mut out = String::from(
                        "<iq type='get' id='s2c' from='example.com'><ping xmlns='urn:xmpp:ping'/></iq><presence from='x@example.com'/>",
                    );
                    echo.write_to(&mut out, ns::CLIENT);
                    out
                }
                _ => return,
            };
            if xml.send_raw(&reply).await.is_err() {
                return;
            }
        }
    }

    async fn scripted(script: Script, timeout: Duration) -> ProbeResult {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(server, script));
        let target = target();
        measured(timeout, async |clock| {
            let mut xml = XmlStream::new(client);
            session(&mut xml, &target, clock).await?;
            xml.close().await;
            Ok(())
        })
        .await
    }

    /// Logs in to the scripted server and sends an alert message to `to`.
    async fn scripted_alert(script: Script, to: &str) -> Result<(), String> {
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve(server, script));
        let target = target();
        let mut xml = XmlStream::new(client);
        authenticate(&mut xml, &target).await?;
        bind(&mut xml, &target).await?;
        deliver_message(&mut xml, &target.domain, to, "example.com is down").await?;
        xml.close().await;
        Ok(())
    }

    #[tokio::test]
    async fn an_alert_message_is_sent_and_confirmed_by_the_ping_after_it() {
        // The scripted server echoes the message (not an error) and answers the ping.
        assert_eq!(
            scripted_alert(Script::Normal, "ops@example.com").await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn a_bounced_alert_message_is_an_error_naming_the_condition() {
        let err = scripted_alert(Script::BounceMessage, "ops@example.com")
            .await
            .unwrap_err();
        assert_eq!(
            err,
            "the message to ops@example.com bounced: recipient-unavailable"
        );
    }

    #[tokio::test]
    async fn a_scripted_session_passes_every_stage_after_tls() {
        let result = scripted(Script::Normal, Duration::from_secs(10)).await;
        assert!(result.ok, "{result:?}");
        let stages: Vec<_> = result.stages.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            stages,
            [Stage::Auth, Stage::Bind, Stage::Ping, Stage::Message]
        );
    }

    #[tokio::test]
    async fn a_rejected_password_fails_auth_with_the_sasl_condition() {
        let result = scripted(Script::RejectPassword, Duration::from_secs(10)).await;
        assert_eq!(result.failed_stage, Some(Stage::Auth));
        assert_eq!(result.error.as_deref(), Some("not-authorized"));
        assert!(result.stages.is_empty());
    }

    #[tokio::test]
    async fn a_server_that_cannot_prove_it_knows_the_account_fails_auth() {
        let result = scripted(Script::ForgedSignature, Duration::from_secs(10)).await;
        assert_eq!(result.failed_stage, Some(Stage::Auth));
        assert!(
            result
                .error
                .as_deref()
                .unwrap()
                .contains("signature is wrong"),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn an_unanswered_ping_times_out_during_ping() {
        let result = scripted(Script::SilentPing, Duration::from_millis(700)).await;
        assert_eq!(result.failed_stage, Some(Stage::Timeout));
        assert_eq!(result.during, Some(Stage::Ping));
        assert_eq!(
            result.error.as_deref(),
            Some("no answer to the ping within 700 ms")
        );
        assert_eq!(result.stages.len(), 2);
    }

    #[tokio::test]
    async fn a_bounced_message_fails_the_message_stage() {
        let result = scripted(Script::BounceMessage, Duration::from_secs(10)).await;
        assert_eq!(result.failed_stage, Some(Stage::Message));
        assert_eq!(
            result.error.as_deref(),
            Some("the message bounced: recipient-unavailable")
        );
    }

    #[tokio::test]
    async fn bad_xml_from_the_server_ends_the_probe() {
        let result = scripted(Script::GarbageAfterBind, Duration::from_secs(10)).await;
        assert_eq!(result.failed_stage, Some(Stage::Ping));
        assert!(
            result
                .error
                .as_deref()
                .unwrap()
                .starts_with("the server sent bad XML"),
            "{result:?}"
        );
    }
}
