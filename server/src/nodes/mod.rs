//! The node pool: enrollment (`POST /api/nodes/join` with a one-time token), the admin
//! pages (pool, node, join tokens, cordon/drain/remove, audit log), placement, the
//! reconciler and the health poller.

pub mod client;
pub mod db;
pub mod local;
pub mod placement;
pub mod reconcile;

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_common::control::{ApiError, JoinRequest, JoinResponse};
use rookery_frontend::pages::nodes::{
    self as pages, AuditView, NodeDomainView, NodeView, PoolView, TokenView,
};
use serde::Deserialize;

use self::{
    db::{NodeRow, TokenProblem},
    placement::NodeState,
};
use crate::{
    auth::session::Admin,
    clock::{format_ts, new_token},
    domains::db as domains,
    error::{AppError, AppResult},
    orgs::db as orgs,
    pages::{NoticeQuery, ctx},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/nodes/join", post(join))
        .route("/admin/nodes", get(show_pool))
        .route("/admin/nodes/tokens", post(create_token))
        .route("/admin/nodes/{id}", get(show_node))
        .route("/admin/nodes/{id}/{action}", post(node_action))
        .route("/admin/audit", get(show_audit))
}

fn api_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(ApiError {
            code: code.into(),
            message: message.into(),
        }),
    )
        .into_response()
}

/// What is wrong with a join request, if anything.
pub fn check_join(req: &JoinRequest) -> Result<(), String> {
    let name_ok = !req.name.is_empty()
        && req.name.len() <= 63
        && req
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_ok {
        return Err("The node name must be 1 to 63 letters, digits, '-', '.' or '_'.".into());
    }
    if req.public_host.trim().is_empty()
        || req.public_host.len() > 253
        || req.public_host.contains(['/', ' ', '@'])
    {
        return Err("The public host must be a host name or an address clients can reach.".into());
    }
    if req.c2s_port == 0 || req.c2s_tls_port == 0 {
        return Err("The client ports must be between 1 and 65535.".into());
    }
    match url::Url::parse(&req.control_url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
        _ => return Err(
            "The control URL must be an https:// address of the node, e.g. https://10.0.0.5:5290."
                .into(),
        ),
    }
    if req.control_cert_sha256.len() != 64
        || !req
            .control_cert_sha256
            .chars()
            .all(|c| c.is_ascii_hexdigit())
    {
        return Err(
            "The control certificate fingerprint must be 64 hexadecimal digits (SHA-256).".into(),
        );
    }
    if req.capacity.max_vhosts <= 0 || req.capacity.max_sessions <= 0 {
        return Err("The node's capacity must be positive.".into());
    }
    if req.labels.len() > 32
        || req
            .labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 63 || v.len() > 255)
    {
        return Err(
            "Labels are at most 32 pairs of a name (1–63 characters) and a value (up to 255)."
                .into(),
        );
    }
    Ok(())
}

/// `rookery-node join`: a one-time token buys a place in the pool and the secret the panel
/// will present to the node.
async fn join(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let req: JoinRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("The request is not a valid join request: {e}"),
            );
        }
    };
    if let Err(why) = check_join(&req) {
        return api_error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", why);
    }
    match enroll(&state, &req).await {
        Ok(Ok(resp)) => (StatusCode::CREATED, Json(resp)).into_response(),
        Ok(Err(resp)) => resp,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "enrolling a node failed");
            api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "The panel could not enroll the node; try again.",
            )
        }
    }
}

async fn enroll(
    state: &AppState,
    req: &JoinRequest,
) -> anyhow::Result<Result<JoinResponse, Response>> {
    let now = state.clock.now();
    let mut tx = rookery_common::db::begin_write(&state.db).await?;
    let token_id = match db::consume_token(&mut tx, &req.token, now).await? {
        Ok(id) => id,
        Err(problem) => {
            let why = match problem {
                TokenProblem::Unknown => "This join token is not valid.",
                TokenProblem::Used => {
                    "This join token was already used; create a new one in the panel."
                }
                TokenProblem::Expired => {
                    "This join token has expired; create a new one in the panel."
                }
            };
            tracing::warn!(
                name = req.name,
                ?problem,
                "a node tried to join with a bad token"
            );
            return Ok(Err(api_error(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                why,
            )));
        }
    };
    let secret = new_token();
    let node_id = match db::insert_node(&mut tx, req, &secret, &state.sealer, now).await {
        Ok(id) => id,
        Err(e) if crate::db::is_unique_violation(&e) => {
            return Ok(Err(api_error(
                StatusCode::CONFLICT,
                "name_taken",
                format!(
                    "A node named {} is already in the pool; choose another name with --name.",
                    req.name
                ),
            )));
        }
        Err(e) => return Err(e.into()),
    };
    db::token_used_by(&mut tx, &token_id, &node_id).await?;
    tx.commit().await?;
    let details = format!(
        "{} at {}, control {}",
        req.name, req.public_host, req.control_url
    );
    db::audit(
        &state.db,
        None,
        &format!("node {}", req.name),
        "node.joined",
        &req.name,
        &details,
        now,
    )
    .await?;
    tracing::info!(node = req.name, id = node_id, "node joined the pool");
    // Domains waiting for capacity may fit now.
    state.reconcile_now.notify_one();
    Ok(Ok(JoinResponse { node_id, secret }))
}

fn ago(now: i64, at: Option<i64>) -> String {
    match at {
        None => "never".into(),
        Some(t) => match (now - t).max(0) {
            s if s < 60 => format!("{s} s ago"),
            s if s < 3600 => format!("{} min ago", s / 60),
            s => format!("{} h ago", s / 3600),
        },
    }
}

fn bytes(n: i64) -> String {
    let mib = n as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.0} MiB")
    }
}

fn node_view(n: &NodeRow, now: i64) -> NodeView {
    NodeView {
        id: n.id.clone(),
        name: n.name.clone(),
        address: format!("{}:{}", n.public_host, n.c2s_port),
        control_url: n.control_url.clone(),
        state: n.state.as_str().into(),
        health: n.health.clone(),
        domains: n.domains,
        capacity_vhosts: n.capacity_vhosts,
        sessions: n.sessions,
        capacity_sessions: n.capacity_sessions,
        cpu: if n.cpu_cores > 0 {
            format!("load {:.2} on {} cores", n.load_average, n.cpu_cores)
        } else {
            "not reported yet".into()
        },
        memory: if n.memory_total_bytes > 0 {
            format!(
                "{} of {}",
                bytes(n.memory_bytes),
                bytes(n.memory_total_bytes)
            )
        } else {
            String::new()
        },
        last_heartbeat: ago(now, n.last_heartbeat_at),
        labels: if n.labels.is_empty() {
            "none".into()
        } else {
            n.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        version: n.version.clone(),
        last_error: n.last_error.clone(),
    }
}

async fn pool_view(state: &AppState) -> AppResult<PoolView> {
    let now = state.clock.now();
    let pool = db::nodes(&state.db).await?;
    let candidates: Vec<_> = pool.iter().map(NodeRow::candidate).collect();
    let headroom = state.settings.provisioning.headroom_percent;
    let (fill, over) = placement::pool_pressure(&candidates, headroom);
    let waiting = domains::count_waiting(&state.db).await?;
    let tokens = db::tokens(&state.db, 10)
        .await?
        .into_iter()
        .map(|t| TokenView {
            note: if t.note.is_empty() {
                "(no note)".into()
            } else {
                t.note
            },
            created: format_ts(t.created_at),
            expires: format_ts(t.expires_at),
            status: match (t.used_at, t.node_name) {
                (Some(_), Some(n)) => format!("used by {n}"),
                (Some(_), None) => "used".into(),
                (None, _) if t.expires_at <= now => "expired".into(),
                (None, _) => "unused".into(),
            },
        })
        .collect();
    Ok(PoolView {
        nodes: pool.iter().map(|n| node_view(n, now)).collect(),
        fill_pct: (fill * 100.0).round().min(999.0) as u32,
        headroom_pct: u32::from(headroom),
        over_headroom: over,
        none_usable: !candidates.is_empty()
            && !candidates
                .iter()
                .any(|c| c.state == placement::NodeState::Active && c.up),
        waiting_domains: waiting,
        tokens,
        new_token: None,
        join_command: None,
        ..PoolView::default()
    })
}

async fn show_pool(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let view = pool_view(&state).await?;
    let ctx = ctx(
        &state,
        &admin.visitor,
        "Nodes",
        "admin-nodes",
        None,
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(pages::pool(ctx, view)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct TokenForm {
    note: String,
}

async fn create_token(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Form(f): Form<TokenForm>,
) -> AppResult<Response> {
    let note = f.note.trim().to_string();
    if note.chars().count() > 100 || note.chars().any(char::is_control) {
        let mut view = pool_view(&state).await?;
        view.errors
            .add("note", "Use at most 100 characters that can be shown.");
        view.errors
            .add("", "No token was created: please correct the note.");
        view.note_input = note;
        let ctx = ctx(&state, &admin.visitor, "Nodes", "admin-nodes", None, None).await?;
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Html(pages::pool(ctx, view)),
        )
            .into_response());
    }
    let now = state.clock.now();
    let ttl = state.settings.provisioning.join_token_ttl_secs;
    let token = db::create_token(&state.db, &admin.user.id, &note, now, ttl).await?;
    db::audit(
        &state.db,
        Some(&admin.user.id),
        &admin.user.email,
        "join_token.created",
        if note.is_empty() { "(no note)" } else { &note },
        &format!("expires {}", format_ts(now + ttl)),
        now,
    )
    .await?;
    let mut view = pool_view(&state).await?;
    view.join_command = Some(format!(
        "rookery-node join {} --token {token}",
        state.settings.base_url()
    ));
    view.new_token = Some(token);
    let ctx = ctx(&state, &admin.visitor, "Nodes", "admin-nodes", None, None).await?;
    Ok(Html(pages::pool(ctx, view)).into_response())
}

async fn show_node(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let node = db::node(&state.db, &id).await?.ok_or(AppError::NotFound)?;
    let now = state.clock.now();
    let pool = db::nodes(&state.db).await?;
    let name_of = |nid: &Option<String>| {
        nid.as_ref()
            .and_then(|i| pool.iter().find(|n| &n.id == i))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| "?".into())
    };
    let mut rows = Vec::new();
    for d in domains::on_node(&state.db, &id).await? {
        let org = orgs::org_by_id(&state.db, &orgs::OrgId(d.org_id.clone()))
            .await?
            .map(|o| o.name)
            .unwrap_or_default();
        let placement = if d.move_from_node_id.as_deref() == Some(id.as_str()) {
            format!("moving away to {}", name_of(&d.node_id))
        } else if d.move_from_node_id.is_some() {
            format!("moving here from {}", name_of(&d.move_from_node_id))
        } else if d.node_id.as_deref() == Some(id.as_str()) && d.converged() {
            "serving".into()
        } else if d.node_id.as_deref() == Some(id.as_str()) {
            "being set up".into()
        } else {
            "leaving".into()
        };
        rows.push(NodeDomainView {
            generation: format!("{} (applied {})", d.generation, d.applied_generation),
            domain: d.domain,
            org,
            state: d.state,
            placement,
            waiting: d.waiting_reason,
        });
    }
    let title = format!("Node {}", node.name);
    let ctx = ctx(
        &state,
        &admin.visitor,
        &title,
        "admin-node",
        None,
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(pages::node(ctx, node_view(&node, now), rows)))
}

/// An admin's change of a node's state: the pool page's buttons and the REST API's
/// `POST /api/v1/nodes/{id}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolAction {
    /// No new domains.
    Cordon,
    /// Takes new domains again.
    Uncordon,
    /// Its domains move to other nodes.
    Drain,
}

impl PoolAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "cordon" => Some(Self::Cordon),
            "uncordon" => Some(Self::Uncordon),
            "drain" => Some(Self::Drain),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cordon => "cordon",
            Self::Uncordon => "uncordon",
            Self::Drain => "drain",
        }
    }

    /// The node's state afterwards.
    pub fn target(self) -> NodeState {
        match self {
            Self::Cordon => NodeState::Cordoned,
            Self::Uncordon => NodeState::Active,
            Self::Drain => NodeState::Draining,
        }
    }

    fn details(self) -> &'static str {
        match self {
            Self::Cordon => "no new domains",
            Self::Uncordon => "takes new domains again",
            Self::Drain => "its domains move to other nodes",
        }
    }
}

/// Applies a pool action to a node and notes it in the audit log with its actor (an admin,
/// or an admin API key).
pub async fn apply_pool_action(
    state: &AppState,
    node: &NodeRow,
    action: PoolAction,
    actor_id: Option<&str>,
    actor: &str,
) -> AppResult<()> {
    db::set_state(&state.db, &node.id, action.target()).await?;
    db::audit(
        &state.db,
        actor_id,
        actor,
        &format!("node.{}", action.as_str()),
        &node.name,
        action.details(),
        state.clock.now(),
    )
    .await?;
    tracing::info!(
        node = node.name,
        action = action.as_str(),
        admin = actor,
        "node pool action"
    );
    Ok(())
}

async fn node_action(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path((id, action)): Path<(String, String)>,
) -> AppResult<Response> {
    let node = db::node(&state.db, &id).await?.ok_or(AppError::NotFound)?;
    let now = state.clock.now();
    let notice = match action.as_str() {
        "cordon" => "node-cordoned",
        "uncordon" => "node-active",
        "drain" => "node-draining",
        "remove" => {
            if !db::remove_node(&state.db, &id).await? {
                return Err(AppError::BadRequest(format!(
                    "{} still holds domains: drain it first, and remove it once its domains have moved.",
                    node.name
                )));
            }
            db::audit(
                &state.db,
                Some(&admin.user.id),
                &admin.user.email,
                "node.removed",
                &node.name,
                "removed from the pool",
                now,
            )
            .await?;
            return Ok(Redirect::to("/admin/nodes?notice=node-removed").into_response());
        }
        _ => return Err(AppError::NotFound),
    };
    if let Some(pool_action) = PoolAction::parse(&action) {
        apply_pool_action(
            &state,
            &node,
            pool_action,
            Some(&admin.user.id),
            &admin.user.email,
        )
        .await?;
    }
    Ok(Redirect::to(&format!("/admin/nodes/{id}?notice={notice}")).into_response())
}

async fn show_audit(State(state): State<AppState>, Admin(admin): Admin) -> AppResult<Html<String>> {
    let rows = db::audit_log(&state.db, 500)
        .await?
        .into_iter()
        .map(|r| AuditView {
            at: format_ts(r.at),
            actor: r.actor,
            action: r.action,
            target: r.target,
            details: r.details,
        })
        .collect();
    let ctx = ctx(
        &state,
        &admin.visitor,
        "Audit log",
        "admin-audit",
        None,
        None,
    )
    .await?;
    Ok(Html(pages::audit(ctx, rows)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rookery_common::control::NodeCapacity;

    fn req() -> JoinRequest {
        JoinRequest {
            token: "t".into(),
            name: "node-1".into(),
            public_host: "xmpp1.example.net".into(),
            c2s_port: 5222,
            c2s_tls_port: 5223,
            control_url: "https://10.0.0.5:5290".into(),
            control_cert_sha256: "ab".repeat(32),
            capacity: NodeCapacity::default(),
            labels: Default::default(),
            version: "0.1.0".into(),
        }
    }

    #[test]
    fn join_requests_are_checked_field_by_field() {
        assert!(check_join(&req()).is_ok());
        let bad = |f: fn(&mut JoinRequest)| {
            let mut r = req();
            f(&mut r);
            check_join(&r).unwrap_err()
        };
        assert!(bad(|r| r.name = "a b".into()).contains("node name"));
        assert!(bad(|r| r.control_url = "http://10.0.0.5:5290".into()).contains("https://"));
        assert!(bad(|r| r.control_cert_sha256 = "xyz".into()).contains("64 hexadecimal"));
        assert!(bad(|r| r.capacity.max_vhosts = 0).contains("capacity"));
        assert!(bad(|r| r.public_host = String::new()).contains("public host"));
    }
}
