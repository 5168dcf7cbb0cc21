//! `rookery-node serve`: opens the store, loads the vhosts and their certificates, listens
//! for clients (STARTTLS and direct TLS), for HTTP and HTTPS on one port (`/metrics`,
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
    net::{self, limits::ConnLimits},
    node::Node,
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
        Ok(Self {
            node,
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
