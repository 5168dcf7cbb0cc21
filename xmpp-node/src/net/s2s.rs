//! Server-to-server connections (issue 10 groundwork): the sockets under the sans-io
//! machines of `proto::s2s`. [`serve_incoming`] runs a stream a peer opened (STARTTLS
//! with our certificate by SNI, asking for the peer's certificate; dialback checks over a
//! verifier connection); [`connect`] opens a stream to a peer (resolved by
//! `s2s_resolve`, TLS naming the peer by SNI and verifying its certificate, ours offered
//! for SASL EXTERNAL) and returns it ready for stanzas. The node's side (routing, queues,
//! bounces, the listeners) is `net::s2s_pool` and `server`. Limits of incoming streams:
//! a deadline to authenticate, a stanza rate, a cap of streams per remote domain.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    client::ResolvesClientCert,
    pki_types::{ServerName, TrustAnchor, UnixTime},
    sign::CertifiedKey,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{
    s2s_resolve::{self, PeerTarget},
    s2s_tls::verified_domains,
};
use crate::proto::{
    element::Element,
    parser::{Limits, StreamEvent, StreamParser},
    s2s::{InOutput, OutOutput, S2sIn, S2sOut},
};

/// Seconds one connection attempt of an outgoing stream may take to authenticate (the
/// caller bounds all attempts together too).
pub const NEGOTIATION_SECS: u64 = 30;

/// Our certificate for a local domain, if we have one to offer.
pub type OurCert = Arc<dyn Fn(&str) -> Option<Arc<CertifiedKey>> + Send + Sync>;

/// What TLS needs on both sides of s2s streams.
pub struct S2sTls {
    /// Our certificates by SNI; peers are asked for theirs (`AnyClientCert`).
    pub server: Arc<ServerConfig>,
    /// Trust anchors for peer certificates.
    pub anchors: Vec<TrustAnchor<'static>>,
    pub roots: Arc<RootCertStore>,
    /// Our certificate for a local domain, offered to peers for SASL EXTERNAL.
    pub our_cert: OurCert,
    /// Refuse peers whose certificate does not verify, instead of going on with dialback.
    pub require_verified: bool,
}

/// TLS on a stream that began in plain text (STARTTLS): our certificate is chosen by SNI,
/// or, when the peer sends none (Prosody 0.12 does not on s2s), by the domain the
/// stream's header named, which is the one the peer means to reach.
async fn accept_for(
    tls: &S2sTls,
    tcp: TcpStream,
    local: Option<&str>,
) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    let start =
        tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp).await?;
    let config = match (start.client_hello().server_name(), local) {
        (None, Some(local)) => match (tls.our_cert)(local) {
            Some(key) => {
                let mut config = (*tls.server).clone();
                config.cert_resolver = Arc::new(FixedCert(key));
                Arc::new(config)
            }
            None => tls.server.clone(),
        },
        _ => tls.server.clone(),
    };
    start.into_stream(config).await
}

/// One certificate whatever the client hello says.
#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Where peers are: the static host map, then DNS.
pub struct Connector {
    pub tls: Arc<S2sTls>,
    pub static_hosts: BTreeMap<String, String>,
    pub resolver: hickory_resolver::TokioResolver,
}

/// What an incoming stream hands to the node.
#[derive(Debug)]
pub enum Incoming {
    /// `certificate`: the peer's certificate proved `remote` (SASL EXTERNAL, or dialback
    /// accepted at once per XEP-0344); else a dialback check did.
    Authorized {
        local: String,
        remote: String,
        certificate: bool,
    },
    Stanza(Element),
}

#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks a peer's server certificate with the web PKI and the configured CA. When
/// [`S2sTls::require_verified`] is off, a certificate that does not verify is let through
/// and noted: the stream then authenticates with dialback, which rests on DNS (XEP-0220),
/// as most of the XMPP network allows. The TLS signatures are checked either way.
#[derive(Debug)]
struct PeerCertCheck {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    require: bool,
    verified: std::sync::atomic::AtomicBool,
}

impl rustls::client::danger::ServerCertVerifier for PeerCertCheck {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(v) => Ok(v),
            Err(e) if self.require => Err(e),
            Err(e) => {
                tracing::info!(error = %e, "the peer's certificate does not verify: dialback only");
                self.verified
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                Ok(rustls::client::danger::ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn client_config(tls: &S2sTls, local: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let inner = rustls::client::WebPkiServerVerifier::builder(tls.roots.clone())
        .build()
        .context("the trust anchors of peers")?;
    let check = Arc::new(PeerCertCheck {
        inner,
        require: tls.require_verified,
        verified: std::sync::atomic::AtomicBool::new(true),
    });
    let builder = ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(check);
    Ok(Arc::new(match (tls.our_cert)(local) {
        Some(key) => builder.with_client_cert_resolver(Arc::new(FixedClientCert(key))),
        None => builder.with_no_client_auth(),
    }))
}

/// Reads until at least one event is complete; None at the end of the stream.
async fn next_events<S: AsyncRead + Unpin>(
    io: &mut S,
    parser: &mut StreamParser,
    buf: &mut [u8],
) -> anyhow::Result<Option<Vec<StreamEvent>>> {
    loop {
        let mut events = Vec::new();
        while let Some(ev) = parser.next_event()? {
            events.push(ev);
        }
        if !events.is_empty() {
            return Ok(Some(events));
        }
        let n = io.read(buf).await?;
        if n == 0 {
            return Ok(None);
        }
        parser.feed(&buf[..n]);
    }
}

/// Why a phase of a stream ended.
enum Stop {
    StartTls,
    Closed,
}

/// A place among a remote domain's incoming streams, or None at its limit.
pub type AdmitPeer = Arc<dyn Fn(&str) -> Option<Box<dyn Send>> + Send + Sync>;

/// The limits of one incoming stream.
#[derive(Clone)]
pub struct InLimits {
    /// Until a first domain pair is authenticated.
    pub pre_auth: Duration,
    /// Stanzas per second (a burst of twice this); past it, `policy-violation`.
    pub stanzas_per_second: u32,
    /// Called when a remote domain is authenticated on the stream: a place among that
    /// domain's incoming streams, held while the stream lives, or None (refused: the
    /// stream ends with `policy-violation`).
    pub admit_peer: AdmitPeer,
}

/// What one incoming stream tracks across its phases (before and after TLS).
struct InTrack {
    deadline: tokio::time::Instant,
    authorized: bool,
    tokens: f64,
    tokens_at: tokio::time::Instant,
    /// Places among remote domains' streams ([`InLimits::admit_peer`]).
    places: Vec<Box<dyn Send>>,
    peers: std::collections::HashSet<String>,
    /// Domains the peer's certificate proved.
    proven: Vec<String>,
    /// Direct TLS: the peer's certificate chain, checked against the domain its header
    /// names before the header reaches the machine.
    chain: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
}

impl InTrack {
    /// Takes one stanza's token; false when the peer is over its rate.
    fn take_token(&mut self, rate: u32) -> bool {
        let rate = f64::from(rate.max(1));
        let now = tokio::time::Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.tokens_at).as_secs_f64() * rate).min(rate * 2.0);
        self.tokens_at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// How an incoming stream ended, for logs and metrics.
#[derive(Debug, thiserror::Error)]
pub enum InError {
    #[error("the peer did not authenticate in time")]
    Timeout,
    #[error("the peer sent stanzas faster than allowed")]
    Rate,
    #[error("the peer has too many streams open")]
    TooMany,
    #[error("the stream is not well-formed: {0}")]
    NotWellFormed(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Runs a stream a peer opened to us until it ends; stanzas and authorizations go to
/// `to_node`. Dialback keys are checked through `connector`. `direct_tls`: TLS from the
/// first byte (XEP-0368), the handshake still to do.
pub async fn serve_incoming(
    tcp: TcpStream,
    direct_tls: bool,
    cfg: crate::proto::s2s::S2sConfig,
    connector: Arc<Connector>,
    limits: InLimits,
    to_node: mpsc::Sender<Incoming>,
) -> Result<(), InError> {
    let now = tokio::time::Instant::now();
    let track = InTrack {
        deadline: now + limits.pre_auth,
        authorized: false,
        tokens: f64::from(limits.stanzas_per_second) * 2.0,
        tokens_at: now,
        places: Vec::new(),
        peers: Default::default(),
        proven: Vec::new(),
        chain: None,
    };
    let mut cx = InCtx {
        parser: StreamParser::new(Limits::default()),
        connector: &connector,
        limits: &limits,
        track,
        to_node: &to_node,
    };
    let mut tcp = tcp;
    if direct_tls {
        let acceptor = TlsAcceptor::from(connector.tls.server.clone());
        let mut tls = tokio::time::timeout_at(cx.track.deadline, acceptor.accept(tcp))
            .await
            .map_err(|_| InError::Timeout)?
            .context("TLS with the peer")?;
        cx.track.chain = Some(peer_chain(&tls));
        let mut machine = S2sIn::new(cfg, Some(Vec::new()));
        incoming_phase(&mut tls, &mut machine, &mut cx).await?;
        return Ok(());
    }
    let mut machine = S2sIn::new(cfg, None);
    match incoming_phase(&mut tcp, &mut machine, &mut cx).await? {
        Stop::Closed => return Ok(()),
        Stop::StartTls => {}
    }
    let local = machine.local().map(str::to_owned);
    let mut tls = tokio::time::timeout_at(
        cx.track.deadline,
        accept_for(&connector.tls, tcp, local.as_deref()),
    )
    .await
    .map_err(|_| InError::Timeout)?
    .context("TLS with the peer")?;
    let chain = peer_chain(&tls);
    let claimed: Vec<String> = machine.remote().into_iter().collect();
    let claimed: Vec<&str> = claimed.iter().map(String::as_str).collect();
    let proven = verified_domains(&chain, &connector.tls.anchors, &claimed, UnixTime::now());
    cx.track.proven.clone_from(&proven);
    let _ = machine.on_tls(proven);
    cx.parser.reset();
    incoming_phase(&mut tls, &mut machine, &mut cx).await?;
    Ok(())
}

/// What the phases of one incoming stream (before and after TLS) share.
struct InCtx<'a> {
    parser: StreamParser,
    /// Where dialback checks go.
    connector: &'a Arc<Connector>,
    limits: &'a InLimits,
    track: InTrack,
    /// Where authorizations and stanzas go.
    to_node: &'a mpsc::Sender<Incoming>,
}

fn peer_chain(
    tls: &tokio_rustls::server::TlsStream<TcpStream>,
) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    tls.get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|d| d.clone().into_owned()).collect())
        .unwrap_or_default()
}

/// Writes a stream error and ends the stream.
async fn refuse<S: AsyncWrite + Unpin>(
    io: &mut S,
    machine: &mut S2sIn,
    condition: &str,
    text: &str,
) {
    for o in machine.fail(condition, text) {
        if let InOutput::Send(s) = o {
            let _ = io.write_all(s.as_bytes()).await;
        }
    }
    let _ = io.flush().await;
}

async fn incoming_phase<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    machine: &mut S2sIn,
    cx: &mut InCtx<'_>,
) -> Result<Stop, InError> {
    let InCtx {
        parser,
        connector,
        limits,
        track,
        to_node,
    } = cx;
    let (connector, limits, to_node): (&Arc<Connector>, &InLimits, &mpsc::Sender<Incoming>) =
        (connector, limits, to_node);
    let mut buf = vec![0u8; 16 * 1024];
    let (checked_tx, mut checked_rx) = mpsc::channel::<(String, String, bool)>(8);
    loop {
        let outputs = tokio::select! {
            events = next_events(io, parser, &mut buf) => match events {
                Ok(Some(events)) => {
                    let mut outputs = Vec::new();
                    for e in events {
                        if let StreamEvent::StreamOpen(h) = &e
                            && let Some(chain) = track.chain.take()
                        {
                            // Direct TLS: the certificate is checked for the domain the
                            // first header names, before the machine answers it.
                            let claimed: Vec<&str> = h.from.as_deref().into_iter().collect();
                            let proven = verified_domains(&chain, &connector.tls.anchors, &claimed, UnixTime::now());
                            track.proven.clone_from(&proven);
                            let _ = machine.on_tls(proven);
                        }
                        if matches!(e, StreamEvent::Stanza(ref s) if matches!(s.name(), "message" | "presence" | "iq"))
                            && !track.take_token(limits.stanzas_per_second)
                        {
                            refuse(io, machine, "policy-violation", "Too many stanzas per second.").await;
                            return Err(InError::Rate);
                        }
                        outputs.extend(machine.feed(e));
                    }
                    outputs
                }
                Ok(None) => return Ok(Stop::Closed),
                Err(e) => {
                    refuse(io, machine, "not-well-formed", "The stream is not well-formed XML.").await;
                    return Err(InError::NotWellFormed(format!("{e:#}")));
                }
            },
            Some((local, remote, valid)) = checked_rx.recv() => machine.on_dialback_checked(&local, &remote, valid),
            _ = tokio::time::sleep_until(track.deadline), if !track.authorized => {
                refuse(io, machine, "connection-timeout", "The stream did not authenticate in time.").await;
                return Err(InError::Timeout);
            }
        };
        for o in outputs {
            match o {
                InOutput::Send(s) => io.write_all(s.as_bytes()).await.context("writing")?,
                InOutput::StartTls => {
                    io.flush().await.context("writing")?;
                    return Ok(Stop::StartTls);
                }
                InOutput::ResetParser => parser.reset(),
                InOutput::VerifyDialback {
                    local,
                    remote,
                    stream_id,
                    key,
                } => {
                    let (connector, tx) = (connector.clone(), checked_tx.clone());
                    tokio::spawn(async move {
                        let valid = check_dialback(&connector, &local, &remote, &stream_id, &key)
                            .await
                            .unwrap_or_else(|e| {
                                tracing::info!(%remote, error = format!("{e:#}"), "a dialback check failed");
                                false
                            });
                        let _ = tx.send((local, remote, valid)).await;
                    });
                }
                InOutput::Authorized { local, remote } => {
                    if track.peers.insert(remote.clone()) {
                        match (limits.admit_peer)(&remote) {
                            Some(place) => track.places.push(place),
                            None => {
                                refuse(
                                    io,
                                    machine,
                                    "policy-violation",
                                    "Too many streams from your domain.",
                                )
                                .await;
                                return Err(InError::TooMany);
                            }
                        }
                    }
                    track.authorized = true;
                    let certificate = track.proven.contains(&remote);
                    let _ = to_node
                        .send(Incoming::Authorized {
                            local,
                            remote,
                            certificate,
                        })
                        .await;
                }
                InOutput::Stanza(e) => {
                    let _ = to_node.send(Incoming::Stanza(e)).await;
                }
                InOutput::Close => {
                    io.flush().await.context("writing")?;
                    return Ok(Stop::Closed);
                }
            }
        }
        io.flush().await.context("writing")?;
    }
}

/// An outgoing stream, authenticated and ready for stanzas from `local` to `remote`.
pub struct OutStream {
    io: tokio_rustls::client::TlsStream<TcpStream>,
    pub local: String,
    pub remote: String,
}

impl OutStream {
    /// Writes a stanza (in the client namespace inside the node) as a server stanza.
    pub async fn send(&mut self, stanza: &Element) -> std::io::Result<()> {
        let mut s = stanza.clone();
        s.switch_ns(crate::proto::ns::CLIENT, crate::proto::ns::SERVER);
        self.io.write_all(s.to_xml().as_bytes()).await?;
        self.io.flush().await
    }

    /// Reads what the peer sends on this stream (nothing but a stream error or the end:
    /// stanzas come on the streams the peer opens) and returns when the stream ends.
    /// Cancel-safe: a select can drop it to write a stanza and call it again.
    pub async fn closed(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let said = String::from_utf8_lossy(&buf[..n]);
                    if said.contains("</stream:stream>") {
                        tracing::info!(remote = %self.remote, said = %said, "the peer ended an outgoing stream");
                        return;
                    }
                }
            }
        }
    }

    /// Ends the stream.
    pub async fn close(mut self) {
        let _ = self.io.write_all(b"</stream:stream>").await;
        let _ = self.io.shutdown().await;
    }
}

/// Opens a stream to each place `remote` names, in order, until one authenticates.
async fn open(
    connector: &Connector,
    local: &str,
    remote: &str,
    mut machine: impl FnMut() -> S2sOut,
    want_check: bool,
) -> anyhow::Result<(Option<OutStream>, Option<bool>)> {
    let targets = s2s_resolve::resolve(&connector.resolver, &connector.static_hosts, remote).await;
    if targets.is_empty() {
        bail!("{remote} offers no server-to-server service (its SRV record is '.')");
    }
    let mut last = None;
    for target in targets {
        match tokio::time::timeout(
            Duration::from_secs(NEGOTIATION_SECS),
            open_one(connector, local, remote, &target, machine(), want_check),
        )
        .await
        {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => last = Some(e.context(format!("{}:{}", target.host, target.port))),
            Err(_) => last = Some(anyhow::anyhow!("{}:{} timed out", target.host, target.port)),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no place to connect to")))
}

async fn open_one(
    connector: &Connector,
    local: &str,
    remote: &str,
    target: &PeerTarget,
    mut machine: S2sOut,
    want_check: bool,
) -> anyhow::Result<(Option<OutStream>, Option<bool>)> {
    let mut tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    let mut parser = StreamParser::new(Limits::default());
    let mut buf = vec![0u8; 16 * 1024];
    if !target.direct_tls {
        let mut pending = machine.start();
        // Plain phase: until `<proceed/>`.
        'plain: loop {
            for o in std::mem::take(&mut pending) {
                match o {
                    OutOutput::Send(s) => tcp.write_all(s.as_bytes()).await?,
                    OutOutput::StartTls => break 'plain,
                    OutOutput::Failed(why) => bail!(why),
                    OutOutput::Close => bail!("the stream closed"),
                    _ => {}
                }
            }
            match next_events(&mut tcp, &mut parser, &mut buf).await? {
                Some(events) => {
                    pending = events.into_iter().flat_map(|e| machine.feed(e)).collect()
                }
                None => bail!("the peer closed the connection"),
            }
        }
    }
    let name = ServerName::try_from(remote.to_string()).context("the peer's domain")?;
    let mut config = client_config(&connector.tls, local)?;
    if target.direct_tls {
        // XEP-0368: the ALPN protocol of server-to-server streams.
        let mut c = (*config).clone();
        c.alpn_protocols = vec![b"xmpp-server".to_vec()];
        config = Arc::new(c);
    }
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .context("TLS with the peer (its certificate must be valid for its domain)")?;
    parser.reset();
    let mut pending = machine.on_tls();
    loop {
        for o in std::mem::take(&mut pending) {
            match o {
                OutOutput::Send(s) => tls.write_all(s.as_bytes()).await?,
                OutOutput::ResetParser => parser.reset(),
                OutOutput::Ready if !want_check => {
                    tls.flush().await?;
                    return Ok((
                        Some(OutStream {
                            io: tls,
                            local: local.into(),
                            remote: remote.into(),
                        }),
                        None,
                    ));
                }
                OutOutput::Checked(valid) => {
                    let _ = tls.write_all(b"</stream:stream>").await;
                    return Ok((None, Some(valid)));
                }
                OutOutput::Failed(why) => bail!(why),
                OutOutput::Close => bail!("the stream closed"),
                _ => {}
            }
        }
        tls.flush().await?;
        match next_events(&mut tls, &mut parser, &mut buf).await? {
            Some(events) => pending = events.into_iter().flat_map(|e| machine.feed(e)).collect(),
            None => bail!("the peer closed the connection"),
        }
    }
}

/// Opens an authenticated stream from `local` to `remote`.
pub async fn connect(
    connector: &Connector,
    local: &str,
    remote: &str,
    dialback_secret: &str,
) -> anyhow::Result<OutStream> {
    let (stream, _) = open(
        connector,
        local,
        remote,
        || S2sOut::new(local, remote, dialback_secret),
        false,
    )
    .await?;
    stream.context("the stream ended before it was ready")
}

/// Asks `remote`'s authoritative server whether `key` (given to `local` on stream
/// `stream_id`) is its own.
pub async fn check_dialback(
    connector: &Connector,
    local: &str,
    remote: &str,
    stream_id: &str,
    key: &str,
) -> anyhow::Result<bool> {
    let (_, checked) = open(
        connector,
        local,
        remote,
        || S2sOut::verifier(local, remote, stream_id, key),
        true,
    )
    .await?;
    checked.context("the authoritative server gave no answer")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::net::SocketAddr;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::{
        crypto::ring::sign::any_supported_type,
        pki_types::{CertificateDer, PrivateKeyDer},
        server::ResolvesServerCertUsingSni,
    };

    use super::*;
    use crate::proto::{c2s::HostAccess, ns, s2s::S2sConfig};

    pub(crate) const SECRET: &str = "test dialback secret";

    fn ca() -> (Issuer<'static, KeyPair>, CertificateDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        (Issuer::new(params, key), der)
    }

    fn certified(
        issuer: &Issuer<'static, KeyPair>,
        ca: &CertificateDer<'static>,
        name: &str,
    ) -> Arc<CertifiedKey> {
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        let der = PrivateKeyDer::try_from(key.serialize_der()).unwrap();
        Arc::new(CertifiedKey::new(
            vec![cert.der().clone(), ca.clone()],
            any_supported_type(&der).unwrap(),
        ))
    }

    /// A listener serving `a.local` and `peer.test` (both "local" to it, one secret), and a
    /// connector that finds both there; `peer_has_cert`: peer.test offers its certificate.
    /// Also counts the connections the listener accepted.
    pub(crate) async fn setup(
        peer_has_cert: bool,
    ) -> (
        Arc<Connector>,
        mpsc::Receiver<Incoming>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        setup_trusting(peer_has_cert, true, false, false).await
    }

    /// `trusted`: the certificates chain to the CA both sides trust (else to one they do
    /// not know); `require`: peers' certificates must verify.
    async fn setup_trusting(
        peer_has_cert: bool,
        trusted: bool,
        require: bool,
        direct: bool,
    ) -> (
        Arc<Connector>,
        mpsc::Receiver<Incoming>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (issuer, ca_der) = ca();
        let keys: BTreeMap<String, Arc<CertifiedKey>> = ["a.local", "peer.test"]
            .into_iter()
            .map(|d| (d.to_string(), certified(&issuer, &ca_der, d)))
            .collect();
        let mut sni = ResolvesServerCertUsingSni::new();
        for (d, k) in &keys {
            sni.add(d, (**k).clone()).unwrap();
        }
        let server = ServerConfig::builder()
            .with_client_cert_verifier(super::super::s2s_tls::AnyClientCert::new())
            .with_cert_resolver(Arc::new(sni));
        let trusted_der = if trusted { ca_der.clone() } else { ca().1 };
        let mut roots = RootCertStore::empty();
        roots.add(trusted_der.clone()).unwrap();
        let anchors = vec![
            webpki::anchor_from_trusted_cert(&trusted_der)
                .unwrap()
                .to_owned(),
        ];
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let tls = Arc::new(S2sTls {
            server: Arc::new(server),
            anchors,
            roots: Arc::new(roots),
            our_cert: Arc::new(move |d: &str| {
                (peer_has_cert || d != "peer.test")
                    .then(|| keys.get(d).cloned())
                    .flatten()
            }),
            require_verified: require,
        });
        let static_hosts: BTreeMap<String, String> = ["a.local", "peer.test"]
            .into_iter()
            .map(|d| {
                let place = if direct {
                    format!("tls:{addr}")
                } else {
                    addr.to_string()
                };
                (d.to_string(), place)
            })
            .collect();
        let connector = Arc::new(Connector {
            tls,
            static_hosts,
            resolver: s2s_resolve::resolver(
                Some("127.0.0.1:9".parse().unwrap()),
                Duration::from_secs(1),
            )
            .unwrap(),
        });
        let (tx, rx) = mpsc::channel(16);
        let accepting = connector.clone();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let cfg = S2sConfig {
                    host_access: Arc::new(|_| HostAccess::Open),
                    federates: Arc::new(|_, _| true),
                    dialback_secret: SECRET.into(),
                };
                let (connector, tx) = (accepting.clone(), tx.clone());
                tokio::spawn(async move {
                    let limits = InLimits {
                        pre_auth: Duration::from_secs(10),
                        stanzas_per_second: 100,
                        admit_peer: Arc::new(|_| Some(Box::new(()))),
                    };
                    let _ = serve_incoming(tcp, direct, cfg, connector, limits, tx).await;
                });
            }
        });
        (connector, rx, accepted)
    }

    /// Sends one message from peer.test to a.local; how many connections it took.
    async fn exchange(peer_has_cert: bool) -> usize {
        exchange_over(peer_has_cert, false).await
    }

    /// Like [`exchange`]; `direct`: TLS from the first byte (XEP-0368).
    async fn exchange_over(peer_has_cert: bool, direct: bool) -> usize {
        let (connector, mut rx, accepted) =
            setup_trusting(peer_has_cert, true, false, direct).await;
        let mut out = connect(&connector, "peer.test", "a.local", SECRET)
            .await
            .unwrap();
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("from", "juliet@peer.test/balcony")
            .with_attr("to", "romeo@a.local")
            .with_child(Element::new("body", ns::CLIENT).with_text("hello across servers"));
        out.send(&msg).await.unwrap();
        let mut authorized = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap()
            {
                Incoming::Authorized { local, remote, .. } => {
                    assert_eq!((local.as_str(), remote.as_str()), ("a.local", "peer.test"));
                    authorized = true;
                }
                Incoming::Stanza(e) => {
                    assert!(authorized, "stanzas only after authentication");
                    assert_eq!(e.ns(), ns::CLIENT);
                    assert_eq!(
                        e.child_text("body", ns::CLIENT).as_deref(),
                        Some("hello across servers")
                    );
                    break;
                }
            }
        }
        out.close().await;
        accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[tokio::test]
    async fn a_stanza_crosses_after_sasl_external_with_a_verified_certificate() {
        assert_eq!(exchange(true).await, 1, "no dialback check needed");
    }

    #[tokio::test]
    async fn a_stanza_crosses_after_dialback_when_the_peer_has_no_certificate() {
        assert_eq!(
            exchange(false).await,
            2,
            "the stream and the dialback check"
        );
    }

    #[tokio::test]
    async fn certificates_that_do_not_verify_leave_dialback_unless_verification_is_required() {
        let (connector, mut rx, accepted) = setup_trusting(true, false, false, false).await;
        let mut out = connect(&connector, "peer.test", "a.local", SECRET)
            .await
            .unwrap();
        let msg = Element::new("message", ns::CLIENT)
            .with_attr("from", "juliet@peer.test/balcony")
            .with_attr("to", "romeo@a.local")
            .with_child(Element::new("body", ns::CLIENT).with_text("over dialback"));
        out.send(&msg).await.unwrap();
        loop {
            let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .unwrap()
                .unwrap();
            if let Incoming::Stanza(e) = got {
                assert_eq!(
                    e.child_text("body", ns::CLIENT).as_deref(),
                    Some("over dialback")
                );
                break;
            }
        }
        assert_eq!(
            accepted.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "the certificate proved nothing: a dialback check was needed"
        );
        let (strict, _rx, _) = setup_trusting(true, false, true, false).await;
        let refused = connect(&strict, "peer.test", "a.local", SECRET).await;
        assert!(refused.is_err(), "verification required: no stream");
    }

    /// A listener running one incoming stream with `limits`; the address, and how the
    /// stream ended.
    async fn limited_listener(
        pre_auth: Duration,
    ) -> (SocketAddr, tokio::sync::oneshot::Receiver<String>) {
        let (connector, _, _) = setup(true).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let cfg = S2sConfig {
                host_access: Arc::new(|_| HostAccess::Open),
                federates: Arc::new(|_, _| true),
                dialback_secret: SECRET.into(),
            };
            let limits = InLimits {
                pre_auth,
                stanzas_per_second: 10,
                admit_peer: Arc::new(|_| Some(Box::new(()))),
            };
            let (tx, _rx) = mpsc::channel(4);
            let ended = serve_incoming(tcp, false, cfg, connector, limits, tx).await;
            let _ = done_tx.send(match ended {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            });
        });
        (addr, done_rx)
    }

    async fn read_all(tcp: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut got)).await;
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_peer_that_does_not_authenticate_in_time_gets_connection_timeout() {
        let (addr, done) = limited_listener(Duration::from_millis(300)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='peer.test' to='a.local' version='1.0'>").await.unwrap();
        let said = read_all(&mut tcp).await;
        assert!(said.contains("<connection-timeout"), "{said}");
        assert_eq!(done.await.unwrap(), "the peer did not authenticate in time");
    }

    #[tokio::test]
    async fn a_peer_sending_garbage_gets_not_well_formed() {
        let (addr, done) = limited_listener(Duration::from_secs(10)).await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' from='peer.test' to='a.local' version='1.0'><a></b>").await.unwrap();
        let said = read_all(&mut tcp).await;
        assert!(said.contains("<not-well-formed"), "{said}");
        assert!(
            done.await
                .unwrap()
                .starts_with("the stream is not well-formed")
        );
    }

    #[test]
    fn the_stanza_rate_allows_a_burst_of_twice_the_rate_then_refuses() {
        let now = tokio::time::Instant::now();
        let mut track = InTrack {
            deadline: now,
            authorized: true,
            tokens: 20.0,
            tokens_at: now,
            places: Vec::new(),
            peers: Default::default(),
            proven: Vec::new(),
            chain: None,
        };
        let taken = (0..100).take_while(|_| track.take_token(10)).count();
        assert!((20..=21).contains(&taken), "{taken}");
    }

    #[tokio::test]
    async fn direct_tls_streams_authenticate_with_certificates_and_with_dialback() {
        assert_eq!(exchange_over(true, true).await, 1, "SASL EXTERNAL");
        assert_eq!(exchange_over(false, true).await, 2, "dialback");
    }

    #[tokio::test]
    async fn a_wrong_dialback_secret_is_refused() {
        let (connector, _rx, _) = setup(false).await;
        let refused = connect(&connector, "peer.test", "a.local", "not the secret").await;
        assert!(refused.is_err());
    }
}
