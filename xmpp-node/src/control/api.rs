//! The control API's routes (see `rookery_common::control` for the table of endpoints and
//! the wire types). Every request passes [`require_secret`] first; every error is an
//! [`ApiError`] JSON body with a stable `code`, including malformed JSON, paths and
//! queries (the extractors here replace axum's plain-text rejections).
//!
//! Handlers hold no SQL: they validate, call the store, and make the running node follow
//! (`Node::reload_vhosts`) before they answer, so a client can log in right after a 200.
//! Account changes hold a write permit and are refused with 409 `vhost_moving` while the
//! vhost is frozen for a move (`control::moving`).

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Instant};

use axum::{
    Json, Router,
    extract::{
        DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State,
        connect_info::{ConnectInfo, Connected},
        rejection::{JsonRejection, PathRejection},
    },
    http::{HeaderValue, StatusCode, header, request::Parts},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, put},
    serve::IncomingStream,
};
use rookery_common::control::{
    AccountInfo, AccountPage, ApiError, ApplyOutcome, NewAccount, NewPassword, NodeStatus,
    UsageReport, VhostData, VhostMove, VhostSpec, VhostSummary, VhostUsage,
};
use serde::{Deserialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{
    Auth, TlsListener,
    moving::{WritePermit, moving_text},
    spec::{self, Decision, SpecError},
    usage,
};
use crate::{
    node::Node,
    proto::jid::Jid,
    store::{SpecWrite, StoreError, normalize_domain, vhost_data::ImportError},
};

/// What every handler gets.
#[derive(Clone)]
pub struct ControlState {
    pub node: Arc<Node>,
    pub auth: Arc<Auth>,
    /// Specs are applied one at a time (generation check, files, store, reload).
    apply_lock: Arc<tokio::sync::Mutex<()>>,
}

impl ControlState {
    pub fn new(node: Arc<Node>, auth: Arc<Auth>) -> Self {
        Self {
            node,
            auth,
            apply_lock: Arc::default(),
        }
    }
}

/// The address a request came from (for the log of refused requests).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, TlsListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        PeerAddr(*stream.remote_addr())
    }
}

/// Exports can be large; everything else is small.
const DATA_BODY_LIMIT: usize = 512 * 1024 * 1024;

pub fn router(state: ControlState) -> Router {
    Router::new()
        .route("/v1/status", get(get_status))
        .route("/v1/usage", get(get_usage))
        .route("/v1/vhosts", get(list_vhosts))
        .route(
            "/v1/vhosts/{domain}",
            put(put_vhost).get(get_vhost).delete(delete_vhost),
        )
        .route(
            "/v1/vhosts/{domain}/accounts",
            get(list_accounts).post(create_account),
        )
        .route(
            "/v1/vhosts/{domain}/accounts/{username}",
            axum::routing::delete(delete_account),
        )
        .route(
            "/v1/vhosts/{domain}/accounts/{username}/password",
            put(set_password),
        )
        .route("/v1/vhosts/{domain}/export", get(export_vhost))
        .route(
            "/v1/vhosts/{domain}/data",
            put(import_vhost).layer(DefaultBodyLimit::max(DATA_BODY_LIMIT)),
        )
        .route(
            "/v1/vhosts/{domain}/move",
            put(put_move).delete(delete_move),
        )
        .route(
            "/v1/vhosts/{domain}/uploads/{id}",
            get(export_upload)
                .put(import_upload)
                .layer(DefaultBodyLimit::disable()),
        )
        .fallback(|| async { Problem::not_found("There is no such endpoint.".into()) })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This endpoint does not take that method.".into(),
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_secret,
        ))
        .with_state(state)
}

// ---- errors and extractors ----------------------------------------------------------------

/// An error answer: a status and an [`ApiError`] body.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Problem {
    fn new(status: StatusCode, code: &'static str, message: String) -> Self {
        Self {
            status,
            code,
            message,
        }
    }

    fn bad_request(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn not_found(message: String) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn unprocessable(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    fn conflict(code: &'static str, message: String) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// A failure of the node itself: the cause is logged, the answer says nothing of it.
    fn internal(e: anyhow::Error) -> Self {
        tracing::error!(error = format!("{e:#}"), "control API request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The node could not do this; its log says why.".into(),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(ApiError {
                code: self.code.into(),
                message: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// A store message as a sentence.
fn sentence(s: impl std::fmt::Display) -> String {
    let s = s.to_string();
    let mut chars = s.chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => return s,
    };
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

impl From<StoreError> for Problem {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadDomain(..) => Problem::bad_request(sentence(&e)),
            StoreError::BadUsername(..) | StoreError::BadPassword(_) => {
                Problem::unprocessable("invalid_account", sentence(&e))
            }
            StoreError::NoSuchVhost(_) | StoreError::NoSuchAccount(_) => {
                Problem::not_found(sentence(&e))
            }
            StoreError::AccountExists(_) => Problem::conflict("account_exists", sentence(&e)),
            StoreError::AccountLimit(..) => Problem::conflict("account_limit", sentence(&e)),
            StoreError::VhostExists(_) => Problem::conflict("vhost_exists", sentence(&e)),
            StoreError::RosterFull(_) => Problem::conflict("roster_full", sentence(&e)),
            StoreError::StorageFull(..) => Problem::conflict("storage_full", sentence(&e)),
            StoreError::Internal(e) => Problem::internal(e),
        }
    }
}

impl From<anyhow::Error> for Problem {
    fn from(e: anyhow::Error) -> Self {
        Problem::internal(e)
    }
}

/// `axum::Json` with [`ApiError`] rejections.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) => Err(Problem::bad_request(sentence(r.body_text()))),
        }
    }
}

/// `axum::extract::Path` with [`ApiError`] rejections.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    Path<T>: FromRequestParts<S, Rejection = PathRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(r) => Err(Problem::bad_request(sentence(r.body_text()))),
        }
    }
}

/// `axum::extract::Query` with [`ApiError`] rejections.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(Problem::bad_request(sentence(r.body_text()))),
        }
    }
}

// ---- authentication -------------------------------------------------------------------------

/// Lets a request through only with `Authorization: Bearer <the node's secret>`. The
/// digests are compared in constant time; a refusal is logged with the peer's address.
async fn require_secret(State(state): State<ControlState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let ok = match (presented, state.auth.digest()) {
        (Some(token), Some(expected)) => {
            let got: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            bool::from(got.ct_eq(&expected))
        }
        _ => false,
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<PeerAddr>>()
        .map(|c| c.0.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    if !ok {
        tracing::warn!(
            %peer,
            %method,
            path,
            "control API: refused a request with a missing or wrong secret"
        );
        return Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid node secret is required (Authorization: Bearer <secret>).".into(),
        )
        .into_response();
    }
    let response = next.run(req).await;
    let status = response.status().as_u16();
    if method == axum::http::Method::GET {
        tracing::debug!(%peer, %method, path, status, "control API");
    } else {
        tracing::info!(%peer, %method, path, status, "control API");
    }
    response
}

// ---- node ---------------------------------------------------------------------------------

async fn get_status(State(s): State<ControlState>) -> Json<NodeStatus> {
    let node = &s.node;
    let proc = usage::read_proc();
    Json(NodeStatus {
        version: crate::VERSION.into(),
        uptime_secs: node.started.elapsed().as_secs() as i64,
        sessions: node.router.count() as i64,
        vhosts: node.hosts().len() as i64,
        cpu_seconds: proc.cpu_seconds,
        load_average: proc.load_average,
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as i64,
        memory_bytes: proc.rss_bytes,
        memory_total_bytes: proc.memory_total_bytes,
        capacity: node.settings.node.capacity.clone(),
    })
}

async fn get_usage(State(s): State<ControlState>) -> Result<Json<UsageReport>, Problem> {
    let accounts = s.node.store.account_counts().await?;
    let storage = s.node.store.storage_bytes().await?;
    // The sum is there anyway: it corrects the storage quotas' running counts.
    s.node.store.meters.set_all(&storage);
    let period_secs = {
        let mut started = s
            .node
            .usage_period
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let secs = started.elapsed().as_secs() as i64;
        *started = Instant::now();
        secs
    };
    let mut vhosts: Vec<VhostUsage> = s
        .node
        .hosts()
        .into_iter()
        .map(|(domain, host)| {
            let period = host.counters.take_period();
            VhostUsage {
                accounts: accounts.get(&domain).copied().unwrap_or(0),
                sessions: host.counters.sessions(),
                peak_sessions: period.peak_sessions,
                messages_in: period.messages_in,
                messages_out: period.messages_out,
                storage_bytes: storage.get(&domain).copied().unwrap_or(0),
                domain,
            }
        })
        .collect();
    vhosts.sort_by(|a, b| a.domain.cmp(&b.domain));
    Ok(Json(UsageReport {
        period_secs,
        vhosts,
    }))
}

// ---- vhosts -------------------------------------------------------------------------------

async fn list_vhosts(State(s): State<ControlState>) -> Result<Json<Vec<VhostSummary>>, Problem> {
    let vhosts = s.node.store.vhosts().await?;
    Ok(Json(
        vhosts
            .into_iter()
            .map(|v| {
                let sessions = s.node.host(&v.domain).map_or(0, |h| h.counters.sessions());
                VhostSummary {
                    generation: v.policy.as_ref().map(|p| p.generation),
                    suspended: v.policy.as_ref().is_some_and(|p| p.suspended),
                    sessions,
                    domain: v.domain,
                }
            })
            .collect(),
    ))
}

/// A domain from the path, normalised.
fn path_domain(domain: &str) -> Result<String, Problem> {
    normalize_domain(domain).map_err(Problem::from)
}

async fn put_vhost(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(body): ApiJson<VhostSpec>,
) -> Result<Json<ApplyOutcome>, Problem> {
    let valid = spec::validate(&domain, body).map_err(|e| match e {
        SpecError::BadRequest(m) => Problem::bad_request(m),
        SpecError::Invalid(m) => Problem::unprocessable("invalid_spec", m),
    })?;
    let generation = valid.policy.generation;
    let outcome = |changed| {
        Json(ApplyOutcome {
            domain: valid.domain.clone(),
            generation,
            changed,
        })
    };
    let stale = |applied: i64| {
        Problem::conflict(
            "stale_generation",
            format!(
                "Generation {generation} of {} is older than the applied generation {applied}.",
                valid.domain
            ),
        )
    };
    let _one_at_a_time = s.apply_lock.lock().await;
    let applied = s.node.store.vhost_spec(&valid.domain).await?;
    match spec::decide(applied.map(|a| a.generation), generation) {
        Decision::Unchanged => return Ok(outcome(false)),
        Decision::Stale { applied } => return Err(stale(applied)),
        Decision::Apply => {}
    }
    let data_dir = &s.node.settings.node.data_dir;
    let cert = match &valid.tls {
        Some((cert, key)) => Some(super::write_managed_cert(
            data_dir,
            &valid.domain,
            cert,
            key,
        )?),
        None => None,
    };
    let written = s
        .node
        .store
        .apply_spec(
            &valid.domain,
            &valid.policy,
            &valid.stored_json,
            cert.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        )
        .await?;
    match written {
        SpecWrite::Applied => {}
        // Another node sharing the store got there first.
        SpecWrite::AlreadyAt(g) if g == generation => return Ok(outcome(false)),
        SpecWrite::AlreadyAt(g) => return Err(stale(g)),
    }
    if cert.is_none() {
        super::remove_managed_cert(data_dir, &valid.domain);
    }
    // Serve it before answering, so the caller can log in right away.
    s.node.reload_vhosts().await?;
    tracing::info!(vhost = %valid.domain, generation, suspended = valid.policy.suspended, moved_to = ?valid.policy.moved_to, "applied a vhost spec");
    Ok(outcome(true))
}

async fn get_vhost(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
) -> Result<Json<VhostSpec>, Problem> {
    let domain = path_domain(&domain)?;
    match s.node.store.vhost_spec(&domain).await? {
        Some(stored) => {
            Ok(Json(serde_json::from_str(&stored.json).map_err(|e| {
                anyhow::anyhow!("the stored spec of {domain}: {e}")
            })?))
        }
        None if s.node.store.vhost(&domain).await?.is_some() => Err(Problem::not_found(format!(
            "{domain} is served here but was added with the command line; it has no spec."
        ))),
        None => Err(Problem::not_found(format!("{domain} is not hosted here."))),
    }
}

async fn delete_vhost(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let domain = path_domain(&domain)?;
    let _one_at_a_time = s.apply_lock.lock().await;
    s.node.store.remove_vhost(&domain).await?;
    super::remove_managed_cert(&s.node.settings.node.data_dir, &domain);
    // Ends the vhost's sessions with host-gone and forgets its cached block lists.
    s.node.reload_vhosts().await?;
    tracing::info!(vhost = %domain, "removed a vhost and all its data");
    Ok(StatusCode::NO_CONTENT)
}

// ---- accounts -----------------------------------------------------------------------------

#[derive(Deserialize)]
struct PageQuery {
    after: Option<String>,
    limit: Option<i64>,
}

const DEFAULT_PAGE: i64 = 100;
const MAX_PAGE: i64 = 1000;

async fn list_accounts(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<AccountPage>, Problem> {
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE} (it is {limit})."
        )));
    }
    let after = q.after.filter(|a| !a.is_empty());
    // One more than asked: whether another page follows.
    let mut rows = s
        .node
        .store
        .accounts_page(&domain, after.as_deref(), limit + 1)
        .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().map(|a| a.username.clone())
    } else {
        None
    };
    Ok(Json(AccountPage {
        accounts: rows
            .into_iter()
            .map(|a| AccountInfo {
                username: a.username,
                created_at: a.created_at,
            })
            .collect(),
        next,
    }))
}

/// A permit to change `domain`'s accounts, or 409 `vhost_moving` while it is frozen for a
/// move (the panel shows the message and its user tries again).
async fn writable<'a>(s: &'a ControlState, domain: &str) -> Result<WritePermit<'a>, Problem> {
    let permit = s.node.writes.enter().await;
    if s.node.is_frozen(domain) {
        return Err(Problem::conflict("vhost_moving", moving_text(domain)));
    }
    Ok(permit)
}

pub use crate::accounts::check_password;

async fn create_account(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(body): ApiJson<NewAccount>,
) -> Result<(StatusCode, Json<AccountInfo>), Problem> {
    check_password(&body.password).map_err(|m| Problem::unprocessable("invalid_account", m))?;
    let domain = path_domain(&domain)?;
    let _permit = writable(&s, &domain).await?;
    let iterations = s.node.settings.node.scram_iterations;
    let store = &s.node.store;
    let account = if body.system {
        store
            .add_system_account(&domain, &body.username, &body.password, iterations)
            .await?
    } else {
        store
            .add_account(&domain, &body.username, &body.password, iterations)
            .await?
    };
    Ok((
        StatusCode::CREATED,
        Json(AccountInfo {
            username: account.username,
            created_at: account.created_at,
        }),
    ))
}

async fn set_password(
    State(s): State<ControlState>,
    ApiPath((domain, username)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<NewPassword>,
) -> Result<StatusCode, Problem> {
    check_password(&body.password).map_err(|m| Problem::unprocessable("invalid_account", m))?;
    let domain = path_domain(&domain)?;
    let _permit = writable(&s, &domain).await?;
    let iterations = s.node.settings.node.scram_iterations;
    s.node
        .store
        .set_password(&domain, &username, &body.password, iterations)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_account(
    State(s): State<ControlState>,
    ApiPath((domain, username)): ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    let domain = path_domain(&domain)?;
    let _permit = writable(&s, &domain).await?;
    s.node.store.remove_account(&domain, &username).await?;
    // The account is gone: so are its sessions and its cached block list.
    if let Ok(account) = Jid::from_parts(Some(&username), &domain, None) {
        crate::accounts::account_deleted(&s.node, &account);
    }
    Ok(StatusCode::NO_CONTENT)
}

// ---- moving a domain: export and import -----------------------------------------------------

async fn export_vhost(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
) -> Result<Json<VhostData>, Problem> {
    let domain = path_domain(&domain)?;
    if s.node.store.vhost(&domain).await?.is_none() {
        return Err(Problem::not_found(format!("{domain} is not hosted here.")));
    }
    // Archived messages queued before the freeze are part of the data.
    s.node.mam.writer.flush().await;
    Ok(Json(VhostData {
        schema_version: s.node.store.schema_version().await?,
        tables: s.node.store.export_vhost(&domain).await?,
        domain,
    }))
}

async fn import_vhost(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(data): ApiJson<VhostData>,
) -> Result<StatusCode, Problem> {
    let domain = path_domain(&domain)?;
    let invalid = |m: String| Problem::unprocessable("invalid_data", m);
    match normalize_domain(&data.domain) {
        Ok(d) if d == domain => {}
        _ => {
            return Err(invalid(format!(
                "The data is for {} but was sent to the path of {domain}.",
                data.domain
            )));
        }
    }
    if s.node.store.vhost(&domain).await?.is_none() {
        return Err(Problem::not_found(format!(
            "{domain} is not hosted here: PUT its spec before its data."
        )));
    }
    let ours = s.node.store.schema_version().await?;
    if data.schema_version != ours {
        return Err(invalid(format!(
            "The data has schema version {} and this node {ours}; both nodes must run the same schema.",
            data.schema_version
        )));
    }
    let tables: BTreeMap<_, _> = data.tables;
    let _one_at_a_time = s.apply_lock.lock().await;
    match s.node.store.import_vhost(&domain, &tables).await {
        Ok(()) => {}
        Err(ImportError::Invalid(m)) => return Err(invalid(sentence(m))),
        Err(ImportError::Store(e)) => return Err(e.into()),
    }
    // Nothing cached may outlive the data it came from.
    s.node.blocks.forget_domain(&domain);
    s.node.mam.forget_domain(&domain);
    s.node.muc.forget_domain(&domain);
    tracing::info!(vhost = %domain, "imported a vhost's data");
    Ok(StatusCode::NO_CONTENT)
}

/// The bytes of an uploaded file, for a move (the rows came with the vhost's data).
async fn export_upload(
    State(s): State<ControlState>,
    ApiPath((domain, id)): ApiPath<(String, String)>,
) -> Result<Response, Problem> {
    let domain = path_domain(&domain)?;
    match crate::xep::upload::file_for_move(&s.node, &domain, &id).await? {
        Some(file) => Ok((
            [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
            axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file)),
        )
            .into_response()),
        None => Err(Problem::not_found(format!(
            "{domain} has no uploaded file {id} here."
        ))),
    }
}

/// Stores the bytes of a file whose `upload_files` row was imported with the vhost's data.
async fn import_upload(
    State(s): State<ControlState>,
    ApiPath((domain, id)): ApiPath<(String, String)>,
    body: axum::body::Body,
) -> Result<StatusCode, Problem> {
    let domain = path_domain(&domain)?;
    use crate::xep::upload::MovedFile;
    match crate::xep::upload::store_moved_file(&s.node, &domain, &id, body).await? {
        MovedFile::Stored => Ok(StatusCode::NO_CONTENT),
        MovedFile::NoRow => Err(Problem::not_found(format!(
            "{domain} has no upload {id} here: PUT the vhost's data first."
        ))),
        MovedFile::Wrong(why) => Err(Problem::unprocessable("invalid_upload", why)),
    }
}

/// Freezes a vhost for a move (and redirects its clients if asked); answers once the
/// writes under way are done and the sessions were told.
async fn put_move(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
    ApiJson(body): ApiJson<VhostMove>,
) -> Result<StatusCode, Problem> {
    let domain = path_domain(&domain)?;
    let redirect_to = body.redirect_to.as_deref().map(str::trim);
    if let Some(to) = redirect_to {
        spec::check_host_port(to).map_err(|why| {
            Problem::unprocessable(
                "invalid_move",
                format!("redirect_to \"{to}\" is not a host or host:port: {why}."),
            )
        })?;
    }
    let _one_at_a_time = s.apply_lock.lock().await;
    if s.node.store.vhost(&domain).await?.is_none() {
        return Err(Problem::not_found(format!("{domain} is not hosted here.")));
    }
    s.node.store.set_vhost_move(&domain, redirect_to).await?;
    s.node.reload_vhosts().await?;
    tracing::info!(vhost = %domain, ?redirect_to, "frozen for a move");
    Ok(StatusCode::NO_CONTENT)
}

/// Ends a vhost's move here: its data may change again, its clients are let in.
async fn delete_move(
    State(s): State<ControlState>,
    ApiPath(domain): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let domain = path_domain(&domain)?;
    let _one_at_a_time = s.apply_lock.lock().await;
    if s.node.store.vhost(&domain).await?.is_none() {
        return Err(Problem::not_found(format!("{domain} is not hosted here.")));
    }
    s.node.store.clear_vhost_move(&domain).await?;
    s.node.reload_vhosts().await?;
    tracing::info!(vhost = %domain, "no longer frozen");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    use super::*;
    use crate::{config::NodeSettings, net::tls::CertResolver, store::Store};

    const SECRET: &str = "the-node-secret-for-tests";

    async fn app() -> (Router, Arc<Node>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let settings = NodeSettings {
            data_dir: dir.path().to_path_buf(),
            ..NodeSettings::default()
        };
        let store = Store::open(&format!(
            "sqlite://{}/node.db?mode=rwc",
            dir.path().display()
        ))
        .await
        .unwrap();
        let certs = Arc::new(CertResolver::new(dir.path(), None).unwrap());
        let node = Node::new(settings, store, certs);
        let state = ControlState::new(node.clone(), Arc::new(Auth::with_secret(SECRET)));
        (router(state), node, dir)
    }

    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {SECRET}"));
        let body = match body {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b.to_string())
            }
            None => Body::empty(),
        };
        let resp = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
        };
        (status, json)
    }

    #[tokio::test]
    async fn requests_without_the_secret_are_refused_with_an_api_error() {
        let (app, _node, _dir) = app().await;
        for auth in [None, Some("Bearer wrong"), Some("Basic dXNlcjpwYXNz")] {
            let mut req = Request::builder().uri("/v1/status");
            if let Some(a) = auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let resp = app
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            let e: ApiError = serde_json::from_slice(&body).unwrap();
            assert_eq!(e.code, "unauthorized");
        }
        let (status, body) = call(&app, "GET", "/v1/status", None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["version"], crate::VERSION);
    }

    #[tokio::test]
    async fn specs_apply_once_refuse_older_generations_and_explain_bad_input() {
        let (app, node, _dir) = app().await;
        let spec = serde_json::json!({"domain": "example.com", "generation": 2});
        let (status, body) = call(&app, "PUT", "/v1/vhosts/example.com", Some(spec.clone())).await;
        assert_eq!(
            (status, body["changed"].clone()),
            (StatusCode::OK, true.into()),
            "{body}"
        );
        assert!(node.is_hosted("example.com"), "served before the answer");
        let (status, body) = call(&app, "PUT", "/v1/vhosts/example.com", Some(spec)).await;
        assert_eq!(
            (status, body["changed"].clone()),
            (StatusCode::OK, false.into()),
            "{body}"
        );
        let old = serde_json::json!({"domain": "example.com", "generation": 1});
        let (status, body) = call(&app, "PUT", "/v1/vhosts/example.com", Some(old)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("stale_generation"))
        );

        let bad = serde_json::json!({"domain": "example.com", "generation": 3, "limits": {"max_accounts": -5}});
        let (status, body) = call(&app, "PUT", "/v1/vhosts/example.com", Some(bad)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["code"], "invalid_spec");
        assert!(
            body["message"].as_str().unwrap().contains("max_accounts"),
            "{body}"
        );

        let typo = serde_json::json!({"domain": "example.com", "generation": 3, "suspend": true});
        let (status, body) = call(&app, "PUT", "/v1/vhosts/example.com", Some(typo)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request"))
        );
        assert!(
            body["message"].as_str().unwrap().contains("suspend"),
            "{body}"
        );

        let other = serde_json::json!({"domain": "example.com", "generation": 3});
        let (status, _) = call(&app, "PUT", "/v1/vhosts/other.example", Some(other)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, body) = call(&app, "GET", "/v1/vhosts/nowhere.example", None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
        let (status, body) = call(&app, "GET", "/v1/vhosts/example.com", None).await;
        assert_eq!(
            (status, body["generation"].as_i64()),
            (StatusCode::OK, Some(2))
        );
        let (status, body) = call(&app, "GET", "/v1/nothing-here", None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }

    #[tokio::test]
    async fn accounts_are_created_within_the_limit_and_listed_in_pages() {
        let (app, _node, _dir) = app().await;
        let spec = serde_json::json!({"domain": "example.com", "generation": 1, "limits": {"max_accounts": 3}});
        call(&app, "PUT", "/v1/vhosts/example.com", Some(spec)).await;
        for user in ["Carol", "alice", "bob"] {
            let (status, body) = call(
                &app,
                "POST",
                "/v1/vhosts/example.com/accounts",
                Some(serde_json::json!({"username": user, "password": "pw-123456"})),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        let (status, body) = call(
            &app,
            "POST",
            "/v1/vhosts/example.com/accounts",
            Some(serde_json::json!({"username": "dave", "password": "pw-123456"})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::CONFLICT, Some("account_limit"))
        );
        let (status, body) = call(
            &app,
            "POST",
            "/v1/vhosts/example.com/accounts",
            Some(serde_json::json!({"username": "alice", "password": ""})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_account"))
        );

        let (_, page) = call(&app, "GET", "/v1/vhosts/example.com/accounts?limit=2", None).await;
        let names: Vec<&str> = page["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["username"].as_str().unwrap())
            .collect();
        assert_eq!(
            (names, page["next"].as_str()),
            (vec!["alice", "bob"], Some("bob"))
        );
        let (_, page) = call(
            &app,
            "GET",
            "/v1/vhosts/example.com/accounts?limit=2&after=bob",
            None,
        )
        .await;
        assert_eq!(page["accounts"][0]["username"], "carol");
        assert!(page["next"].is_null());
        let (status, _) = call(
            &app,
            "GET",
            "/v1/vhosts/example.com/accounts?limit=5000",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (status, _) = call(
            &app,
            "DELETE",
            "/v1/vhosts/example.com/accounts/alice",
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = call(
            &app,
            "PUT",
            "/v1/vhosts/example.com/accounts/alice/password",
            Some(serde_json::json!({"password": "x-1234567"})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("not_found"))
        );
    }

    #[tokio::test]
    async fn usage_reports_accounts_and_storage_and_deleting_a_vhost_removes_everything() {
        let (app, node, dir) = app().await;
        let (cert, key) = {
            let c = rcgen::generate_simple_self_signed(vec!["example.com".to_string()]).unwrap();
            (c.cert.pem(), c.signing_key.serialize_pem())
        };
        let spec = serde_json::json!({"domain": "example.com", "generation": 1, "tls": {"cert_pem": cert, "key_pem": key}});
        let (status, body) = call(&app, "PUT", "/v1/vhosts/example.com", Some(spec)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (crt, k) = super::super::managed_cert_paths(dir.path(), "example.com");
        assert!(crt.exists() && k.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&k).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (_, spec) = call(&app, "GET", "/v1/vhosts/example.com", None).await;
        assert!(
            spec["tls"]["key_pem"].is_null(),
            "keys never leave the node: {spec}"
        );
        call(
            &app,
            "POST",
            "/v1/vhosts/example.com/accounts",
            Some(serde_json::json!({"username": "alice", "password": "pw-123456"})),
        )
        .await;
        node.host("example.com").unwrap().counters.message_in();
        let (_, usage) = call(&app, "GET", "/v1/usage", None).await;
        let v = &usage["vhosts"][0];
        assert_eq!(
            (
                v["domain"].as_str(),
                v["accounts"].as_i64(),
                v["messages_in"].as_i64()
            ),
            (Some("example.com"), Some(1), Some(1))
        );
        assert!(v["storage_bytes"].as_i64().unwrap() > 0);
        let (_, usage) = call(&app, "GET", "/v1/usage", None).await;
        assert_eq!(usage["vhosts"][0]["messages_in"], 0, "a new period");

        let (status, _) = call(&app, "DELETE", "/v1/vhosts/example.com", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(!node.is_hosted("example.com") && !crt.exists());
        assert!(node.store.account_counts().await.unwrap().is_empty());
        let (status, _) = call(&app, "DELETE", "/v1/vhosts/example.com", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn a_vhost_frozen_for_a_move_refuses_account_changes_until_it_is_thawed() {
        let (app, node, _dir) = app().await;
        call(
            &app,
            "PUT",
            "/v1/vhosts/example.com",
            Some(serde_json::json!({"domain": "example.com", "generation": 1})),
        )
        .await;
        let alice = serde_json::json!({"username": "alice", "password": "pw-123456"});
        let (status, _) = call(
            &app,
            "POST",
            "/v1/vhosts/example.com/accounts",
            Some(alice.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);

        let (status, _) = call(
            &app,
            "PUT",
            "/v1/vhosts/Example.COM/move",
            Some(serde_json::json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(node.is_frozen("example.com"));
        let bob = serde_json::json!({"username": "bob", "password": "pw-123456"});
        let refused = [
            ("POST", "/v1/vhosts/example.com/accounts", Some(bob.clone())),
            (
                "PUT",
                "/v1/vhosts/example.com/accounts/alice/password",
                Some(serde_json::json!({"password": "pw-654321"})),
            ),
            ("DELETE", "/v1/vhosts/example.com/accounts/alice", None),
        ];
        for (method, path, body) in refused {
            let (status, answer) = call(&app, method, path, body).await;
            assert_eq!(
                (status, answer["code"].as_str()),
                (StatusCode::CONFLICT, Some("vhost_moving")),
                "{method} {path}"
            );
            assert_eq!(answer["message"], moving_text("example.com"));
        }
        // Reading and exporting go on; so does the import a move ends with.
        let (status, page) = call(&app, "GET", "/v1/vhosts/example.com/accounts", None).await;
        assert_eq!(
            (status, page["accounts"][0]["username"].as_str()),
            (StatusCode::OK, Some("alice"))
        );
        let (status, data) = call(&app, "GET", "/v1/vhosts/example.com/export", None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(&app, "PUT", "/v1/vhosts/example.com/data", Some(data)).await;
        assert_eq!(status, StatusCode::NO_CONTENT);

        let (status, body) = call(
            &app,
            "PUT",
            "/v1/vhosts/example.com/move",
            Some(serde_json::json!({"redirect_to": "node2 example:5222"})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_move"))
        );
        let (status, _) = call(
            &app,
            "PUT",
            "/v1/vhosts/example.com/move",
            Some(serde_json::json!({"redirect_to": "node2.example.net:5222"})),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(
            node.access("example.com"),
            crate::proto::c2s::HostAccess::MovedTo("node2.example.net:5222".into())
        );
        let (status, _) = call(
            &app,
            "PUT",
            "/v1/vhosts/nowhere.example/move",
            Some(serde_json::json!({})),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        let (status, _) = call(&app, "DELETE", "/v1/vhosts/example.com/move", None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert!(!node.is_frozen("example.com"));
        assert_eq!(
            node.access("example.com"),
            crate::proto::c2s::HostAccess::Open
        );
        let (status, body) = call(&app, "POST", "/v1/vhosts/example.com/accounts", Some(bob)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    #[tokio::test]
    async fn data_imports_check_the_domain_and_the_schema_version() {
        let (app, _node, _dir) = app().await;
        call(
            &app,
            "PUT",
            "/v1/vhosts/example.com",
            Some(serde_json::json!({"domain": "example.com", "generation": 1})),
        )
        .await;
        let (status, data) = call(&app, "GET", "/v1/vhosts/example.com/export", None).await;
        assert_eq!(status, StatusCode::OK);
        let mut wrong = data.clone();
        wrong["schema_version"] = 1.into();
        let (status, body) = call(&app, "PUT", "/v1/vhosts/example.com/data", Some(wrong)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_data"))
        );
        let mut wrong = data.clone();
        wrong["domain"] = "other.example".into();
        let (status, _) = call(&app, "PUT", "/v1/vhosts/example.com/data", Some(wrong)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let (status, _) = call(
            &app,
            "PUT",
            "/v1/vhosts/example.com/data",
            Some(data.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = call(
            &app,
            "PUT",
            "/v1/vhosts/example.com/data",
            Some(serde_json::json!("not data")),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request"))
        );
    }
}
