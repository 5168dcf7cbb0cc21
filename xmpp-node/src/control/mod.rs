//! The node agent: the HTTPS control API the panel calls (`api`), the rules for vhost specs
//! (`spec`), usage figures (`usage`), moving a vhost to another node (`moving`), and
//! enrollment into a panel's pool (`join`).
//!
//! Data flow: `rookery-node join` posts this node's facts and its control certificate's
//! SHA-256 to the panel and stores what the panel answers (a node id and the SHA-256 of
//! the secret the panel will present) in `<data_dir>/control.json`. `serve` then listens on
//! `control_listen` with that certificate; every request carries the secret as a bearer
//! token, compared by digest in constant time. A spec the panel PUTs is validated, stored
//! and applied to the running node before the answer goes out.
//!
//! Without a secret (neither `control_secret` nor `control.json`) the API does not listen;
//! the node says so once and starts it within a second of `join` writing `control.json`.

pub mod api;
pub mod join;
pub mod moving;
pub mod spec;
pub mod usage;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use rustls::{ServerConfig, pki_types::CertificateDer, sign::CertifiedKey};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc, watch},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::{config::NodeSettings, net::tls, node::Node};

/// The file `join` writes into the data folder.
pub const CREDENTIALS_FILE: &str = "control.json";

/// What enrollment leaves on the node: who it is in the pool, and the digest of the secret
/// the panel presents (the secret itself is not kept).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub node_id: String,
    pub panel_url: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
}

impl Credentials {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(CREDENTIALS_FILE)
    }

    /// The stored credentials, if `join` ran.
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(data_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes `control.json` (mode 0600) in place of any earlier one.
    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let json = serde_json::to_string_pretty(self).expect("credentials serialise");
        write_atomically(&Self::path(data_dir), json.as_bytes(), true)
    }

    fn digest(&self) -> anyhow::Result<[u8; 32]> {
        hex::decode(&self.secret_sha256)
            .ok()
            .and_then(|d| <[u8; 32]>::try_from(d).ok())
            .context("control.json: secret_sha256 is not 64 hex digits")
    }
}

/// Writes a file through a temporary one and a rename, so readers never see half of it;
/// `private`: mode 0600.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    if private {
        tls::write_private(&tmp, bytes)?;
    } else {
        std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The secret digest requests are checked against. With a configured `control_secret` it
/// is fixed; otherwise it follows `control.json`, which `join` may write at any time.
pub struct Auth {
    digest: RwLock<Option<[u8; 32]>>,
    /// `control.json` and the modification time it had when read (None: fixed secret).
    file: Option<(PathBuf, RwLock<Option<SystemTime>>)>,
}

impl Auth {
    pub fn new(settings: &NodeSettings) -> anyhow::Result<Self> {
        if let Some(secret) = &settings.control_secret {
            let digest: [u8; 32] = Sha256::digest(secret.expose_secret().as_bytes()).into();
            return Ok(Self {
                digest: RwLock::new(Some(digest)),
                file: None,
            });
        }
        let auth = Self {
            digest: RwLock::new(None),
            file: Some((Credentials::path(&settings.data_dir), RwLock::new(None))),
        };
        auth.refresh()?;
        Ok(auth)
    }

    /// A fixed secret, for tests.
    pub fn with_secret(secret: &str) -> Self {
        Self {
            digest: RwLock::new(Some(Sha256::digest(secret.as_bytes()).into())),
            file: None,
        }
    }

    /// The digest of the expected secret (None: not enrolled, every request is refused).
    pub fn digest(&self) -> Option<[u8; 32]> {
        *self.digest.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads `control.json` if it changed; true when it did.
    pub fn refresh(&self) -> anyhow::Result<bool> {
        let Some((path, seen)) = &self.file else {
            return Ok(false);
        };
        let modified = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if modified == *seen.read().unwrap_or_else(|p| p.into_inner()) {
            return Ok(false);
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let digest = Credentials::load(dir)?.map(|c| c.digest()).transpose()?;
        *self.digest.write().unwrap_or_else(|p| p.into_inner()) = digest;
        *seen.write().unwrap_or_else(|p| p.into_inner()) = modified;
        Ok(true)
    }
}

/// The control API's certificate and key.
pub struct ControlCert {
    pub key: Arc<CertifiedKey>,
    /// SHA-256 of the leaf certificate (DER), hex: what the panel pins.
    pub sha256: String,
}

/// The configured certificate, or the self-signed one under `<data_dir>/certs/`
/// (generated on first use, for `public_host`, `localhost` and `127.0.0.1`).
pub fn control_cert(settings: &NodeSettings) -> anyhow::Result<ControlCert> {
    let (cert, key) = match (&settings.control_cert, &settings.control_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = settings.data_dir.join("certs");
            let (c, k) = (dir.join("_control.crt"), dir.join("_control.key"));
            if !c.exists() || !k.exists() {
                let mut names = vec![settings.public_host.trim().to_string()];
                for n in ["localhost", "127.0.0.1"] {
                    if !names.iter().any(|x| x == n) {
                        names.push(n.to_string());
                    }
                }
                tls::generate_self_signed(&c, &k, names)
                    .context("generating the control API's certificate")?;
                tracing::info!(cert = %c.display(), "generated the control API's self-signed certificate");
            }
            (c, k)
        }
    };
    let key = tls::load_pem(&cert, &key).context("the control API's certificate")?;
    let leaf: &CertificateDer<'_> = key.cert.first().context("no certificate")?;
    let sha256 = hex::encode(Sha256::digest(leaf.as_ref()));
    Ok(ControlCert {
        key: Arc::new(key),
        sha256,
    })
}

/// The control API's socket and TLS, bound before `Server::run`.
pub struct Bound {
    listener: TcpListener,
    tls: Arc<ServerConfig>,
}

impl Bound {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }
}

/// Binds the control API if the node has a secret; otherwise logs how to enroll.
pub async fn bind(settings: &NodeSettings, auth: &Auth) -> anyhow::Result<Option<Bound>> {
    if auth.digest().is_none() {
        tracing::warn!(
            "the control API is off until this node is enrolled: run `rookery-node join <panel-url> --token <join-token>` (or set control_secret)"
        );
        return Ok(None);
    }
    bind_now(settings).await.map(Some)
}

async fn bind_now(settings: &NodeSettings) -> anyhow::Result<Bound> {
    let cert = control_cert(settings)?;
    let listener = TcpListener::bind(settings.control_listen)
        .await
        .with_context(|| format!("binding the control API to {}", settings.control_listen))?;
    Ok(Bound {
        listener,
        tls: tls::single_cert_config(cert.key),
    })
}

/// Serves the control API until `stop`; when it was not bound (no secret yet), waits for
/// `control.json` first. Follows changes of `control.json` every second.
pub async fn run(
    node: Arc<Node>,
    auth: Arc<Auth>,
    bound: Option<Bound>,
    mut stop: watch::Receiver<bool>,
) {
    let mut bound = bound;
    let mut bind_failed = false;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        if let Some(b) = bound.take() {
            let addr = b.local_addr();
            tracing::info!(control = %addr, "control API listening");
            let state = api::ControlState::new(node.clone(), auth.clone());
            let app = api::router(state).into_make_service_with_connect_info::<api::PeerAddr>();
            let serve = axum::serve(TlsListener::new(b.listener, b.tls), app)
                .with_graceful_shutdown({
                    let mut stop = stop.clone();
                    async move {
                        let _ = stop.changed().await;
                    }
                });
            let follow = follow_credentials(auth.clone(), stop.clone());
            tokio::select! {
                r = serve => if let Err(e) = r { tracing::error!(error = %e, "the control API stopped") },
                () = follow => {}
            }
            return;
        }
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        match auth.refresh() {
            Ok(_) if auth.digest().is_some() => match bind_now(&node.settings.node).await {
                Ok(b) => {
                    tracing::info!("enrolled: starting the control API");
                    bound = Some(b);
                }
                Err(e) if !bind_failed => {
                    bind_failed = true;
                    tracing::error!(error = format!("{e:#}"), "the control API cannot start");
                }
                Err(_) => {}
            },
            Ok(_) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "control.json cannot be read"),
        }
    }
}

/// Re-reads `control.json` each second while the API runs (a node may be enrolled again).
async fn follow_credentials(auth: Arc<Auth>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        match auth.refresh() {
            Ok(true) => tracing::info!("control.json changed: using its secret"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = format!("{e:#}"), "control.json cannot be read"),
        }
    }
}

/// TLS connections for axum: a task accepts TCP connections and runs their handshakes
/// (bounded in number and time, so a slow client holds up nobody), and hands finished
/// ones to `accept`.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: Arc<ServerConfig>) -> Self {
        let local = listener.local_addr().expect("bound");
        let (tx, rx) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_tls(listener, TlsAcceptor::from(tls), tx));
        Self {
            rx,
            local,
            acceptor,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(128));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "control API: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "control API: too many TLS handshakes at once; connection dropped");
            continue;
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
            match handshake.await {
                Ok(Ok(tls)) => {
                    drop(permit);
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(%peer, error = %e, "control API: TLS handshake failed")
                }
                Err(_) => tracing::info!(%peer, "control API: TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The acceptor is gone (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Where the TLS material of a spec is kept: `<data_dir>/certs/managed/<domain>.crt|.key`
/// (a folder of its own, so these never clash with generated self-signed pairs).
pub fn managed_cert_paths(data_dir: &Path, domain: &str) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("certs").join("managed");
    (
        dir.join(format!("{domain}.crt")),
        dir.join(format!("{domain}.key")),
    )
}

/// Writes a spec's certificate chain and key (0600) for `domain`; returns their paths.
pub fn write_managed_cert(
    data_dir: &Path,
    domain: &str,
    cert_pem: &str,
    key_pem: &str,
) -> anyhow::Result<(String, String)> {
    let (cert, key) = managed_cert_paths(data_dir, domain);
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomically(&key, key_pem.as_bytes(), true)?;
    write_atomically(&cert, cert_pem.as_bytes(), false)?;
    let text = |p: PathBuf| {
        std::path::absolute(&p)
            .unwrap_or(p)
            .to_str()
            .map(str::to_owned)
            .context("the data folder's path is not UTF-8")
    };
    Ok((text(cert)?, text(key)?))
}

/// Removes a spec's certificate files, if there are any.
pub fn remove_managed_cert(data_dir: &Path, domain: &str) {
    let (cert, key) = managed_cert_paths(data_dir, domain);
    let _ = std::fs::remove_file(cert);
    let _ = std::fs::remove_file(key);
}
