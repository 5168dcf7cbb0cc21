//! Building and running the panel: database and migrations, shared state, the router with
//! its middleware, and a server that drains on SIGTERM or Ctrl-C.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderName, HeaderValue, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tower_http::{
    compression::CompressionLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

use crate::{
    account, admin, auth,
    auth::{passwords::Hasher, session::Visitor},
    clock::Clock,
    config::Settings,
    db, domains,
    error::{AppError, AppResult},
    mail::Mailer,
    nodes::{self, client::NodeClients},
    ops, orgs,
    pages::ctx,
    seal::Sealer,
    state::{AppState, Inner},
    telemetry::{HttpLabels, Metrics},
};

pub struct Application {
    listener: TcpListener,
    router: Router,
    pub state: AppState,
}

impl Application {
    /// Connects, migrates and binds; `run_until_stopped` then serves.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::default()).await
    }

    /// As [`Application::build`], with a clock tests can move.
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> anyhow::Result<Self> {
        let state = build_state(settings, clock).await?;
        let listener = TcpListener::bind(state.settings.listen)
            .await
            .with_context(|| format!("binding {}", state.settings.listen))?;
        let router = router(state.clone());
        Ok(Self {
            listener,
            router,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until SIGTERM or Ctrl-C, then lets requests in flight finish.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_with_shutdown(shutdown_signal()).await
    }

    pub async fn run_with_shutdown(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let local_node = if self.state.settings.local_node.enabled {
            Some(nodes::local::start(&self.state).await?)
        } else {
            None
        };
        // Work done once per deployment runs where its lease is held; with one panel
        // process, that is here.
        let lead = |name: &'static str, work: fn(AppState) -> BoxFuture| {
            tokio::spawn(crate::lease::run_as_leader(self.state.clone(), name, work))
        };
        let background = [
            lead("sweep", |s| Box::pin(sweep_forever(s))),
            lead("reconcile", |s| {
                Box::pin(nodes::reconcile::reconcile_forever(s))
            }),
            lead("poll", |s| Box::pin(nodes::reconcile::poll_forever(s))),
            lead("probe", |s| Box::pin(probe_forever(s))),
            tokio::spawn(crate::alerts::worker::deliver_forever(self.state.clone())),
        ];
        tracing::info!("panel listening on http://{}", self.local_addr());
        let served = axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await;
        for task in background {
            task.abort();
        }
        for name in ["sweep", "reconcile", "poll", "probe"] {
            let _ = crate::lease::release(&self.state.db, name, crate::lease::holder_id()).await;
        }
        if let Some(node) = local_node {
            let _ = node.stop.send(());
            match node.task.await {
                Ok(Err(e)) => tracing::warn!(
                    error = format!("{e:#}"),
                    "the local node stopped with an error"
                ),
                Err(e) => tracing::warn!(error = %e, "the local node task failed"),
                Ok(Ok(())) => {}
            }
        }
        self.state.db.close().await;
        tracing::info!("panel stopped");
        served.context("serving HTTP")
    }
}

/// Everything but the listener: used by `serve` and by the `admin` commands.
pub async fn build_state(settings: Settings, clock: Clock) -> anyhow::Result<AppState> {
    let url = settings.effective_database_url();
    let pool = db::connect(&url, settings.database_max_connections).await?;
    db::migrate(&pool).await?;
    let csrf_key = shared_key(&pool, "csrf", clock.now()).await?;
    let metrics = Metrics::new();
    let mailer = Mailer::new(&settings, pool.clone(), clock.clone(), metrics.clone())?;
    let hasher = Hasher::new(&settings.password_hashing)?;
    let sealer = Sealer::load(&settings.secret_key, &settings.data_dir)?;
    let node_clients = Arc::new(NodeClients::new(Duration::from_secs(
        settings.provisioning.node_timeout_secs,
    )));
    Ok(AppState::new(Inner {
        db: pool,
        settings,
        clock,
        mailer,
        hasher,
        metrics,
        csrf_key,
        sealer,
        node_clients,
        reconcile_now: Arc::default(),
    }))
}

/// A 256-bit key stored once in the database, so every panel instance shares it.
async fn shared_key(pool: &db::Pool, name: &str, now: i64) -> anyhow::Result<[u8; 32]> {
    use sqlx::Row;
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).context("random source")?;
    // Whoever inserts first wins; everyone then reads the winner.
    let _ = sqlx::query("INSERT INTO app_secrets (name, value, created_at) VALUES ($1, $2, $3)")
        .bind(name)
        .bind(hex::encode(fresh))
        .bind(now)
        .execute(pool)
        .await;
    let value: String = sqlx::query("SELECT value FROM app_secrets WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .context("reading the shared key")?
        .try_get("value")?;
    let bytes = hex::decode(value).context("the stored key is not hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("the stored key has the wrong length"))
}

type BoxFuture = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    Router::new()
        .route("/", get(landing))
        .route("/assets/app.css", get(stylesheet))
        .route("/assets/app.js", get(script))
        .merge(auth::router())
        .merge(account::router())
        .merge(orgs::router())
        .merge(admin::router())
        .merge(nodes::router())
        .merge(crate::uptime::admin::router())
        .merge(domains::router())
        .merge(crate::billing::router())
        .merge(crate::dns::router())
        .merge(crate::alerts::router())
        .merge(crate::status_page::router())
        .merge(crate::probe::remote::routes())
        .merge(crate::api::pages::router())
        .fallback(|| async { AppError::NotFound })
        .layer(middleware::from_fn_with_state(state.clone(), auth::csrf::middleware))
        .merge(ops::router())
        // Bearer keys, not cookies: outside the CSRF check, which would also hand API
        // clients a cookie.
        .merge(crate::api::router(&state))
        // Public and cacheable: no session, no CSRF cookie.
        .merge(crate::status_page::public_router())
        .layer(middleware::from_fn_with_state(state.clone(), record_metrics))
        .layer(CompressionLayer::new())
        .layer(SetResponseHeaderLayer::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"),
        ))
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
            tracing::info_span!("http", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
        .with_state(state)
}

async fn landing(State(state): State<AppState>, visitor: Visitor) -> AppResult<Html<String>> {
    let plans = admin::plans::list(&state.db, true).await?;
    let ctx = ctx(&state, &visitor, "", "landing", None, None).await?;
    Ok(Html(rookery_frontend::pages::public::landing(ctx, plans)))
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        rookery_frontend::STYLESHEET,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        rookery_frontend::SCRIPT,
    )
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .http_duration
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The uptime prober, when enabled (it is by default).
async fn probe_forever(state: AppState) {
    if state.settings.probe.enabled {
        crate::probe::scheduler::run_forever(state).await;
    }
}

async fn sweep_forever(state: AppState) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        every.tick().await;
        let s = &state.settings;
        if let Err(e) = auth::db::sweep(
            &state.db,
            state.clock.now(),
            s.session.idle_timeout_secs,
            s.login_limits.window_secs,
        )
        .await
        {
            tracing::warn!(error = %e, "sweeping expired sessions and tokens failed");
        }
        let kept_since = state.clock.now() - crate::api::idempotency::TTL_SECS;
        if let Err(e) = crate::api::db::prune_idempotency(&state.db, kept_since).await {
            tracing::warn!(error = %e, "sweeping expired idempotent API responses failed");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
