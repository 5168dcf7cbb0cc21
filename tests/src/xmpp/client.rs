//! One benchmark session: TCP, the stream header, STARTTLS (trusting exactly the node's
//! self-signed certificate), SASL SCRAM-SHA-256, resource binding, then stanzas out and in.
//! Every answer is checked; anything unexpected ends the run with the server's words.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::{Context, bail, ensure};
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::{
        Resumption,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{
    scram::{ScramClient, new_nonce, salted_password},
    xml::{El, Frame, Framer},
};

const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_SM: &str = "urn:xmpp:sm:3";

/// Accepts exactly one certificate (the node's self-signed one), byte for byte; the
/// handshake signatures are still checked with ring.
#[derive(Debug)]
struct PinnedCert {
    der: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.der.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS client that trusts only the certificate in `cert_pem`. Session resumption is
/// off: every login pays for a full handshake, as a client connecting for the first time.
pub fn tls_connector(cert_pem: &std::path::Path) -> anyhow::Result<TlsConnector> {
    let der = CertificateDer::from_pem_file(cert_pem)
        .with_context(|| format!("reading {}", cert_pem.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert { der, provider }))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// (user, salt, iterations): what a salted password depends on, besides the password.
type SaltKey = (String, Vec<u8>, u32);

/// Salted passwords by (user, salt, iterations), as real clients keep them: PBKDF2 would
/// otherwise make the generator, not the node, the bottleneck (DESIGN.md).
#[derive(Default)]
pub struct SaltCache {
    map: Mutex<HashMap<SaltKey, [u8; 32]>>,
    pub misses: AtomicU64,
}

impl SaltCache {
    pub fn insert(&self, user: &str, salt: &[u8], iterations: u32, salted: [u8; 32]) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((user.to_string(), salt.to_vec(), iterations), salted);
    }

    async fn get(&self, user: &str, password: &str, salt: &[u8], iterations: u32) -> [u8; 32] {
        let key = (user.to_string(), salt.to_vec(), iterations);
        if let Some(s) = self.map.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return *s;
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let (password, salt_owned) = (password.to_string(), salt.to_vec());
        let salted = tokio::task::spawn_blocking(move || {
            salted_password(&password, &salt_owned, iterations)
        })
        .await
        .expect("PBKDF2 does not panic");
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, salted);
        salted
    }
}

/// Where and how sessions log in.
pub struct LoginConfig {
    pub addr: SocketAddr,
    pub domain: String,
    pub tls: TlsConnector,
    pub keys: Arc<SaltCache>,
    pub resource: String,
    /// Send initial presence after binding.
    pub presence: bool,
}

#[derive(Clone)]
pub struct Account {
    pub user: String,
    pub password: String,
}

/// An authenticated, bound session.
pub struct Session {
    /// The full JID the server bound.
    pub jid: String,
    stream: TlsStream<TcpStream>,
    framer: Framer,
    /// Stanzas received since stream management was enabled (XEP-0198), when it is.
    handled: Option<u32>,
}

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en' to='";

/// Reads until the framer yields a frame.
async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
) -> anyhow::Result<Frame> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(frame) = framer.next_frame()? {
            return Ok(frame);
        }
        let n = stream
            .read(&mut buf)
            .await
            .context("reading from the node")?;
        if n == 0 {
            bail!("the node closed the connection");
        }
        framer.feed(&buf[..n]);
    }
}

/// The next top-level element; a stream error or a closed stream is an error.
async fn read_element<S: AsyncRead + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
) -> anyhow::Result<El> {
    match read_frame(stream, framer).await? {
        Frame::Element(e) if e.name == "error" => bail!("stream error from the node: {e:?}"),
        Frame::Element(e) => Ok(e),
        Frame::StreamClose => bail!("the node closed the stream"),
        Frame::StreamOpen(h) => bail!("a second stream header: {h}"),
    }
}

/// Opens a stream and returns the node's features.
async fn open_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    framer: &mut Framer,
    domain: &str,
) -> anyhow::Result<El> {
    framer.reset();
    stream
        .write_all(format!("{HEADER}{domain}'>").as_bytes())
        .await?;
    stream.flush().await?;
    match read_frame(stream, framer).await? {
        Frame::StreamOpen(_) => {}
        other => bail!("expected the node's stream header, got {other:?}"),
    }
    let features = read_element(stream, framer).await?;
    ensure!(
        features.name == "features",
        "expected stream features, got {features:?}"
    );
    Ok(features)
}

fn expect(e: &El, name: &str, ns: &str) -> anyhow::Result<()> {
    ensure!(
        e.name == name && e.attr("xmlns") == Some(ns),
        "expected <{name} xmlns='{ns}'/>, got {e:?}"
    );
    Ok(())
}

fn sasl_payload(e: &El) -> anyhow::Result<String> {
    let bytes = B64
        .decode(e.text.trim())
        .with_context(|| format!("SASL data is not base64: {e:?}"))?;
    String::from_utf8(bytes).context("SASL data is not UTF-8")
}

impl Session {
    /// TCP → STARTTLS → SCRAM-SHA-256 → bind (→ presence).
    pub async fn login(cfg: &LoginConfig, account: &Account) -> anyhow::Result<Session> {
        let mut tcp = TcpStream::connect(cfg.addr)
            .await
            .with_context(|| format!("connecting to {}", cfg.addr))?;
        tcp.set_nodelay(true)?;
        let mut framer = Framer::default();
        let features = open_stream(&mut tcp, &mut framer, &cfg.domain).await?;
        ensure!(
            features.child("starttls").is_some(),
            "the node offers no STARTTLS: {features:?}"
        );
        tcp.write_all(format!("<starttls xmlns='{NS_TLS}'/>").as_bytes())
            .await?;
        let proceed = read_element(&mut tcp, &mut framer).await?;
        expect(&proceed, "proceed", NS_TLS)?;
        ensure!(
            framer.pending() == 0,
            "the node sent data after <proceed/> in the clear"
        );
        let name = ServerName::try_from(cfg.domain.clone()).context("the domain as a TLS name")?;
        let mut tls = cfg.tls.connect(name, tcp).await.context("TLS handshake")?;

        // SASL SCRAM-SHA-256.
        let features = open_stream(&mut tls, &mut framer, &cfg.domain).await?;
        let mechanisms = features
            .child("mechanisms")
            .with_context(|| format!("no SASL mechanisms offered: {features:?}"))?;
        ensure!(
            mechanisms
                .children
                .iter()
                .any(|m| m.name == "mechanism" && m.text == "SCRAM-SHA-256"),
            "SCRAM-SHA-256 is not offered: {mechanisms:?}"
        );
        let mut scram = ScramClient::new(&account.user, new_nonce())?;
        tls.write_all(
            format!(
                "<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-256'>{}</auth>",
                B64.encode(scram.client_first())
            )
            .as_bytes(),
        )
        .await?;
        tls.flush().await?;
        let challenge = read_element(&mut tls, &mut framer).await?;
        expect(&challenge, "challenge", NS_SASL)?;
        let server_first = sasl_payload(&challenge)?;
        let asked = scram.read_server_first(&server_first)?;
        let salted = cfg
            .keys
            .get(
                &account.user,
                &account.password,
                &asked.salt,
                asked.iterations,
            )
            .await;
        let client_final = scram.client_final(&server_first, &salted)?;
        tls.write_all(
            format!(
                "<response xmlns='{NS_SASL}'>{}</response>",
                B64.encode(client_final)
            )
            .as_bytes(),
        )
        .await?;
        tls.flush().await?;
        let success = read_element(&mut tls, &mut framer).await?;
        expect(&success, "success", NS_SASL)?;
        scram.verify_server_final(&sasl_payload(&success)?)?;

        // Bind.
        let features = open_stream(&mut tls, &mut framer, &cfg.domain).await?;
        ensure!(
            features.child("bind").is_some(),
            "the node offers no resource binding: {features:?}"
        );
        tls.write_all(
            format!(
                "<iq type='set' id='bind'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
                cfg.resource
            )
            .as_bytes(),
        )
        .await?;
        tls.flush().await?;
        let bound = read_element(&mut tls, &mut framer).await?;
        ensure!(
            bound.name == "iq"
                && bound.attr("type") == Some("result")
                && bound.attr("id") == Some("bind"),
            "bind failed: {bound:?}"
        );
        let jid = bound
            .child("bind")
            .and_then(|b| b.child("jid"))
            .map(|j| j.text.clone())
            .with_context(|| format!("no JID in the bind result: {bound:?}"))?;
        let expected = format!("{}@{}/{}", account.user, cfg.domain, cfg.resource);
        ensure!(jid == expected, "bound {jid}, asked for {expected}");
        let mut session = Session {
            jid,
            stream: tls,
            framer,
            handled: None,
        };
        if cfg.presence {
            session.send("<presence/>").await?;
            // The node reflects initial presence to the session itself (RFC 6121 §4.2.2).
            let echo = session.next_element().await?;
            ensure!(
                echo.name == "presence",
                "expected own presence, got {echo:?}"
            );
        }
        Ok(session)
    }

    /// Writes and flushes.
    pub async fn send(&mut self, xml: &str) -> anyhow::Result<()> {
        self.stream.write_all(xml.as_bytes()).await?;
        self.stream.flush().await?;
        Ok(())
    }

    /// The next top-level element from the node. With stream management on, the node's
    /// requests for an acknowledgement are answered here and never returned.
    pub async fn next_element(&mut self) -> anyhow::Result<El> {
        loop {
            let e = read_element(&mut self.stream, &mut self.framer).await?;
            let Some(handled) = &mut self.handled else {
                return Ok(e);
            };
            if e.attr("xmlns") == Some(NS_SM) {
                if e.name == "r" {
                    let h = *handled;
                    self.send(&format!("<a xmlns='{NS_SM}' h='{h}'/>")).await?;
                    continue;
                }
                return Ok(e);
            }
            if matches!(e.name.as_str(), "message" | "presence" | "iq") {
                *handled = handled.wrapping_add(1);
            }
            return Ok(e);
        }
    }

    /// Enables XEP-0198 stream management with resumption; from then on the node's
    /// acknowledgement requests are answered by [`Session::next_element`].
    pub async fn enable_stream_management(&mut self) -> anyhow::Result<()> {
        self.send(&format!("<enable xmlns='{NS_SM}' resume='true'/>"))
            .await?;
        let enabled = read_element(&mut self.stream, &mut self.framer).await?;
        ensure!(
            enabled.name == "enabled" && enabled.attr("resume") == Some("true"),
            "stream management was not enabled: {enabled:?}"
        );
        self.handled = Some(0);
        Ok(())
    }
}
