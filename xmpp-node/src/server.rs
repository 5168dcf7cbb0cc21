//! `rookery-node serve`: opens the store, loads the vhosts and their certificates, listens
//! for clients (STARTTLS and direct TLS), for other servers (s2s, STARTTLS and direct TLS,
//! with per-domain and per-address caps; their stanzas go to `im::from_remote`, the
//! outgoing links' bounces to local delivery), for HTTP and HTTPS on one port (`/metrics`,
//! host-meta, WebSocket, BOSH) and for the panel (the control API, once the node has a
//! secret), follows vhost changes made by the CLI while it runs, runs `upkeep` (offline
//! retention, storage re-measurement) every minute, and drains on SIGTERM or Ctrl-C.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{
    net::{TcpListener, TcpSocket},
    sync::watch,
};

use crate::{
    config::NodeSettings,
    control,
    net::{
        self,
        limits::{ConnLimits, PeerCounts, PeerPlace},
    },
    node::Node,
    proto::s2s::S2sConfig,
    store::Store,
    upkeep,
};

/// A started node: its listeners are bound; `run` serves until `shutdown` fires.
pub struct Server {
    pub node: Arc<Node>,
    c2s: TcpListener,
    c2s_tls: TcpListener,
    http: TcpListener,
    proxy65: Option<TcpListener>,
    /// Server-to-server listeners: STARTTLS, and TLS from the first byte (XEP-0368).
    s2s: Option<TcpListener>,
    s2s_tls: Option<TcpListener>,
    control: Option<control::Bound>,
    control_auth: Arc<control::Auth>,
}

impl Server {
    pub async fn start(settings: NodeSettings) -> anyhow::Result<Self> {
        let mut store = Store::open(&settings.effective_database_url()).await?;
        store.max_roster_items = settings.limits.max_roster_items;
        let fallback = settings
            .fallback_cert
            .as_deref()
            .zip(settings.fallback_key.as_deref());
        let certs = Arc::new(net::tls::CertResolver::new(&settings.data_dir, fallback)?);
        let c2s = listen(settings.c2s_listen).await?;
        let c2s_tls = listen(settings.c2s_tls_listen).await?;
        let http = TcpListener::bind(settings.http_listen)
            .await
            .with_context(|| format!("binding {}", settings.http_listen))?;
        let proxy65 = match settings.proxy65_listen {
            Some(addr) => Some(listen(addr).await?),
            None => None,
        };
        let s2s = listen_s2s(settings.s2s_listen).await;
        let s2s_tls = listen_s2s(settings.s2s_tls_listen).await;
        // Port 0 picks a free port: URLs the node hands out name the one it got.
        let mut settings = settings;
        settings.http_listen = http.local_addr()?;
        if let Some(p) = &proxy65 {
            settings.proxy65_listen = Some(p.local_addr()?);
        }
        let control_auth = Arc::new(control::Auth::new(&settings)?);
        let control = control::bind(&settings, &control_auth).await?;
        let node = Node::new(settings, store, certs);
        node.reload_vhosts().await?;
        if let Some(p) = &proxy65 {
            node.proxy.set_port(p.local_addr()?.port());
        }
        start_federation(&node).await?;
        Ok(Self {
            node,
            s2s,
            s2s_tls,
            c2s,
            c2s_tls,
            http,
            proxy65,
            control,
            control_auth,
        })
    }

    /// The control API's address, when it listens (the node has a secret).
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.as_ref().map(control::Bound::local_addr)
    }

    pub fn c2s_addr(&self) -> SocketAddr {
        self.c2s.local_addr().expect("bound")
    }

    pub fn c2s_tls_addr(&self) -> SocketAddr {
        self.c2s_tls.local_addr().expect("bound")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound")
    }

    /// Where server-to-server streams are accepted (None: nowhere).
    pub fn s2s_addr(&self) -> Option<SocketAddr> {
        self.s2s.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let node = self.node.clone();
        let starttls = net::tls::server_config(node.certs.clone(), &[]);
        let direct = net::tls::server_config(node.certs.clone(), &[b"xmpp-client"]);
        let limits = Arc::new(ConnLimits::new(&node.settings.node));
        tracing::info!(c2s = %self.c2s_addr(), c2s_tls = %self.c2s_tls_addr(), http = %self.http_addr(), "node listening");
        let control = tokio::spawn(control::run(
            node.clone(),
            self.control_auth.clone(),
            self.control,
            stop_rx.clone(),
        ));
        let mut tasks = vec![
            tokio::spawn(accept_loop(
                node.clone(),
                self.c2s,
                starttls,
                false,
                limits.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(accept_loop(
                node.clone(),
                self.c2s_tls,
                direct,
                true,
                limits.clone(),
                stop_rx.clone(),
            )),
            tokio::spawn(watch_vhosts(node.clone(), stop_rx.clone())),
            tokio::spawn(upkeep::run(node.clone(), stop_rx.clone())),
            tokio::spawn(serve_http(
                node.clone(),
                self.http,
                limits.clone(),
                stop_rx.clone(),
            )),
            control,
        ];
        let peers = S2sPeers {
            by_domain: PeerCounts::new(node.settings.node.limits.s2s_connections_per_peer),
            by_ip: PeerCounts::new(node.settings.node.limits.s2s_connections_per_peer),
        };
        for (listener, direct_tls) in [(self.s2s, false), (self.s2s_tls, true)] {
            if let Some(listener) = listener {
                tracing::info!(addr = ?listener.local_addr().ok(), direct_tls, "accepting server-to-server streams");
                tasks.push(tokio::spawn(s2s_accept_loop(
                    node.clone(),
                    listener,
                    direct_tls,
                    peers.clone(),
                    stop_rx.clone(),
                )));
            }
        }
        if let Some(mut bounces) = node.s2s.take_bounces() {
            let node = node.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(error) = bounces.recv().await {
                    crate::im::deliver_local(&node, error);
                }
            }));
        }
        if let Some(listener) = self.proxy65 {
            tasks.push(tokio::spawn(crate::xep::proxy::serve(
                node.clone(),
                listener,
                stop_rx.clone(),
            )));
        }
        shutdown.await;
        tracing::info!("shutting down: closing client streams");
        let _ = stop_tx.send(true);
        node.s2s.stop();
        // Give sessions a moment to send their closing stream errors, and detached ones
        // (XEP-0198) to store what their clients never acknowledged.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while (limits.in_use() || node.router.count() > 0) && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for t in tasks {
            t.abort();
        }
        // Archived messages still queued are written before the database closes.
        node.mam.writer.flush().await;
        node.store.db.close().await;
        tracing::info!("node stopped");
        Ok(())
    }
}

async fn listen(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("binding {addr}"))?;
    // Login storms: a deep accept queue (DESIGN.md).
    socket
        .listen(1024)
        .with_context(|| format!("listening on {addr}"))
}

async fn accept_loop(
    node: Arc<Node>,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    direct_tls: bool,
    limits: Arc<ConnLimits>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Some(slot) = limits.admit(&node, peer.ip()) else {
            continue;
        };
        let (node, tls, stop) = (node.clone(), tls.clone(), stop.clone());
        tokio::spawn(net::c2s::run(node, tcp, peer, tls, direct_tls, stop, slot));
    }
}

/// Binds a server-to-server listener. A port in use is not fatal: the node still serves
/// its clients and sends to other servers (a panel's embedded node next to a standalone
/// one, for instance), and says loudly that peers cannot reach it.
async fn listen_s2s(addr: Option<SocketAddr>) -> Option<TcpListener> {
    let addr = addr?;
    match listen(addr).await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "no incoming server-to-server streams: the s2s port cannot be bound (set s2s_listen)"
            );
            None
        }
    }
}

/// Makes the outgoing links able to connect: TLS (our certificates by SNI, the trust
/// anchors), where peers are, and the dialback secret (kept in the store, so keys stay
/// valid across restarts).
async fn start_federation(node: &Arc<Node>) -> anyhow::Result<()> {
    let settings = &node.settings.node;
    let anchors =
        net::s2s_tls::trust_anchors(settings.s2s_ca_file.as_deref()).context("s2s_ca_file")?;
    let roots = rustls::RootCertStore {
        roots: anchors.clone(),
    };
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_client_cert_verifier(net::s2s_tls::AnyClientCert::new())
    .with_cert_resolver(node.certs.clone());
    server.alpn_protocols = vec![b"xmpp-server".to_vec()];
    let certs = node.certs.clone();
    let tls = Arc::new(net::s2s::S2sTls {
        server: Arc::new(server),
        anchors,
        roots: Arc::new(roots),
        our_cert: Arc::new(move |domain: &str| certs.for_domain(domain)),
        require_verified: settings.s2s_require_verified_certs,
    });
    let resolver = net::s2s_resolve::resolver(settings.s2s_resolver, Duration::from_secs(5))
        .context("the DNS resolver for peers (s2s_resolver)")?;
    let connector = Arc::new(net::s2s::Connector {
        tls,
        static_hosts: settings.s2s_hosts.clone(),
        resolver,
    });
    let secret = node
        .store
        .node_secret("dialback")
        .await
        .context("the dialback secret")?;
    node.s2s.start(connector, secret);
    Ok(())
}

/// Incoming server-to-server streams per remote domain, and unauthenticated ones per
/// address.
#[derive(Clone)]
struct S2sPeers {
    by_domain: Arc<PeerCounts<String>>,
    by_ip: Arc<PeerCounts<std::net::IpAddr>>,
}

async fn s2s_accept_loop(
    node: Arc<Node>,
    listener: TcpListener,
    direct_tls: bool,
    peers: S2sPeers,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Some(unauthenticated) = peers.by_ip.admit(peer.ip()) else {
            tracing::warn!(%peer, "server-to-server stream refused: too many unauthenticated streams from this address");
            node.metrics.s2s.refuse("per_ip");
            continue;
        };
        let (node, peers, stop) = (node.clone(), peers.clone(), stop.clone());
        tokio::spawn(s2s_serve(
            node,
            tcp,
            peer,
            direct_tls,
            peers,
            unauthenticated,
            stop,
        ));
    }
}

/// Runs one incoming server-to-server stream; its stanzas are handled one after the
/// other, as they came, by `im::from_remote`.
async fn s2s_serve(
    node: Arc<Node>,
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    direct_tls: bool,
    peers: S2sPeers,
    unauthenticated: PeerPlace<std::net::IpAddr>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(connector) = node.s2s.connector() else {
        return;
    };
    let Ok(secret) = node.store.node_secret("dialback").await else {
        tracing::error!("the dialback secret cannot be read");
        return;
    };
    let (access_node, policy_node) = (node.clone(), node.clone());
    let cfg = S2sConfig {
        host_access: Arc::new(move |domain: &str| access_node.access(domain)),
        federates: Arc::new(move |local: &str, remote: &str| policy_node.federates(local, remote)),
        dialback_secret: secret,
    };
    let limits = &node.settings.node.limits;
    // The address's place is given back once a domain is authenticated; each domain
    // authenticated on the stream takes one of its own.
    let unauthenticated = std::sync::Mutex::new(Some(unauthenticated));
    let metrics = node.metrics.s2s.clone();
    let in_limits = net::s2s::InLimits {
        pre_auth: Duration::from_secs(limits.s2s_pre_auth_timeout_secs),
        stanzas_per_second: limits.s2s_stanzas_per_second,
        admit_peer: Arc::new(move |remote: &str| {
            drop(
                unauthenticated
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take(),
            );
            let place = peers.by_domain.admit(remote.to_string())?;
            let open = metrics.stream("in");
            open.inc();
            Some(Box::new((place, OpenStream(open))) as Box<dyn Send>)
        }),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let handler = node.clone();
    let handling = tokio::spawn(async move {
        while let Some(incoming) = rx.recv().await {
            match incoming {
                net::s2s::Incoming::Authorized {
                    local,
                    remote,
                    certificate,
                } => {
                    let method = if certificate {
                        "certificate"
                    } else {
                        "dialback"
                    };
                    handler.metrics.s2s.authenticated(method);
                    tracing::info!(%local, %remote, method, "a peer domain is authenticated");
                }
                net::s2s::Incoming::Stanza(stanza) => {
                    handler.metrics.s2s.stanza("in");
                    Box::pin(crate::im::from_remote(&handler, stanza)).await;
                }
            }
        }
    });
    let serving = net::s2s::serve_incoming(tcp, direct_tls, cfg, connector, in_limits, tx);
    tokio::select! {
        ended = serving => match ended {
            Ok(()) => tracing::debug!(%peer, "an incoming server-to-server stream ended"),
            Err(e) => {
                let reason = match &e {
                    net::s2s::InError::Timeout => "timeout",
                    net::s2s::InError::Rate => "rate",
                    net::s2s::InError::TooMany => "per_domain",
                    net::s2s::InError::NotWellFormed(_) => "not_well_formed",
                    net::s2s::InError::Other(_) => "error",
                };
                node.metrics.s2s.refuse(reason);
                tracing::info!(%peer, reason, error = format!("{e:#}"), "an incoming server-to-server stream ended");
            }
        },
        _ = stop.changed() => {}
    }
    // What arrived before the end is still handled.
    let _ = handling.await;
}

/// Counts an authenticated incoming stream in the streams gauge while it lives.
struct OpenStream(prometheus_client::metrics::gauge::Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Follows vhost changes made while the node runs by the CLI (the control API reloads
/// at once by itself, and this loop then finds nothing new).
async fn watch_vhosts(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut seen = node.store.vhosts_version().await.ok();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        match node.store.vhosts_version().await {
            Ok(v) if Some(v) != seen => {
                if let Err(e) = node.reload_vhosts().await {
                    tracing::error!(error = format!("{e:#}"), "reloading vhosts failed");
                    continue;
                }
                seen = Some(v);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "checking for vhost changes failed"),
        }
    }
}

/// The HTTP port: host-meta, `/healthz`, `/metrics`, XMPP over WebSocket and BOSH, over
/// HTTPS (the vhosts' certificates) and plain HTTP alike ([`net::http`]).
async fn serve_http(
    node: Arc<Node>,
    listener: TcpListener,
    limits: Arc<ConnLimits>,
    mut stop: watch::Receiver<bool>,
) {
    use axum::{
        Router,
        http::header,
        routing::{get, post},
    };
    let tls = net::tls::server_config(node.certs.clone(), &[b"http/1.1"]);
    let listener = match net::http::accept(listener, tls, stop.clone()) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "the HTTP port failed");
            return;
        }
    };
    let web = Arc::new(net::http::WebState {
        node: node.clone(),
        limits,
        stop: stop.clone(),
        bosh: net::bosh::Sessions::default(),
    });
    let app = Router::new()
        .merge(crate::hostmeta::router(node.clone()))
        .merge(crate::xep::upload::router(node.clone()))
        .merge(
            Router::new()
                .route("/xmpp-websocket", get(net::websocket::upgrade))
                .route(
                    "/http-bind",
                    post(net::bosh::request).options(net::bosh::preflight),
                )
                .with_state(web),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let node = node.clone();
                async move {
                    let queued: usize = node.router.all().iter().map(|s| s.pending()).sum();
                    node.metrics.queued.set(queued as i64);
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        node.metrics.encode(),
                    )
                }
            }),
        );
    let app = app.into_make_service_with_connect_info::<net::http::HttpPeer>();
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await;
}
