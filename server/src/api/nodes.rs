//! `/api/v1/nodes`: the node pool, for admin keys only. Every other key gets the 404 of a
//! route that does not exist, so the endpoints do not reveal themselves.
//!
//! `POST /nodes/{id}/cordon|uncordon|drain` runs the pool page's code
//! ([`nodes::apply_pool_action`]), audit log entry included, with the key as the actor.
//! A node's `ETag` covers what an admin sets (its state, name, addresses, capacity,
//! labels), not the live figures its heartbeats change every few seconds, so `If-Match`
//! on an action refuses only when someone else changed the node.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    auth::{Kind, Principal},
    etag,
    pagination::{self, PageQuery},
    problem::{ApiQuery, ApiResult, Problem},
};
use crate::{
    nodes::{self, PoolAction, db::NodeRow},
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/nodes", get(list_nodes))
        .route("/nodes/{node_id}", get(get_node))
        .route("/nodes/{node_id}/cordon", post(cordon_node))
        .route("/nodes/{node_id}/uncordon", post(uncordon_node))
        .route("/nodes/{node_id}/drain", post(drain_node))
}

/// The admin's intent for a node.
#[derive(Clone, Copy, Debug, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NodeStateName {
    /// Takes new domains.
    Active,
    /// Keeps its domains, takes no new ones.
    Cordoned,
    /// Its domains move to other nodes.
    Draining,
}

/// What an admin sets on a node (what its ETag covers).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NodeConfig {
    pub id: String,
    pub name: String,
    pub state: NodeStateName,
    /// Where clients connect.
    pub public_host: String,
    pub c2s_port: i64,
    pub c2s_tls_port: i64,
    pub capacity_vhosts: i64,
    pub capacity_sessions: i64,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds, UTC (when it joined).
    pub created_at: i64,
}

/// What the node's heartbeats report.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct NodeLive {
    /// `unknown`, `up` or `down`.
    pub health: String,
    pub version: String,
    pub last_heartbeat_at: Option<i64>,
    pub missed_polls: i64,
    pub last_error: Option<String>,
    /// Domains the panel wants on this node.
    pub domains: i64,
    pub reported_vhosts: i64,
    pub sessions: i64,
    pub load_average: f64,
    pub cpu_cores: i64,
    pub memory_bytes: i64,
    pub memory_total_bytes: i64,
    pub uptime_secs: i64,
}

/// A node of the pool.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Node {
    #[serde(flatten)]
    pub config: NodeConfig,
    pub live: NodeLive,
}

#[derive(Serialize, ToSchema)]
pub struct NodePage {
    pub items: Vec<Node>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
}

fn representation(n: &NodeRow) -> Node {
    Node {
        config: NodeConfig {
            id: n.id.clone(),
            name: n.name.clone(),
            state: match n.state {
                nodes::placement::NodeState::Active => NodeStateName::Active,
                nodes::placement::NodeState::Cordoned => NodeStateName::Cordoned,
                nodes::placement::NodeState::Draining => NodeStateName::Draining,
            },
            public_host: n.public_host.clone(),
            c2s_port: n.c2s_port,
            c2s_tls_port: n.c2s_tls_port,
            capacity_vhosts: n.capacity_vhosts,
            capacity_sessions: n.capacity_sessions,
            labels: n.labels.clone(),
            created_at: n.created_at,
        },
        live: NodeLive {
            health: n.health.clone(),
            version: n.version.clone(),
            last_heartbeat_at: n.last_heartbeat_at,
            missed_polls: n.missed_polls,
            last_error: n.last_error.clone(),
            domains: n.domains,
            reported_vhosts: n.reported_vhosts,
            sessions: n.sessions,
            load_average: if n.load_average.is_finite() {
                n.load_average
            } else {
                0.0
            },
            cpu_cores: n.cpu_cores,
            memory_bytes: n.memory_bytes,
            memory_total_bytes: n.memory_total_bytes,
            uptime_secs: n.uptime_secs,
        },
    }
}

/// The node's JSON with its ETag (over its configuration).
fn answer(n: &NodeRow) -> Response {
    let node = representation(n);
    let tag = etag::of(&node.config);
    let mut response = (StatusCode::OK, Json(node)).into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

/// 404 for every key but an admin's.
fn require_admin(who: &Principal) -> ApiResult<()> {
    if who.kind == Kind::Admin {
        Ok(())
    } else {
        Err(Problem::not_found())
    }
}

async fn node_of(state: &AppState, id: &str) -> ApiResult<NodeRow> {
    if !super::auth::plausible_id(id) {
        return Err(Problem::not_found());
    }
    nodes::db::node(&state.db, id)
        .await?
        .ok_or_else(Problem::not_found)
}

/// List nodes
///
/// Admin keys only.
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    tag = "nodes",
    operation_id = "list_nodes",
    params(PageQuery),
    responses((status = 200, description = "A page of nodes, by id", body = NodePage)),
)]
pub async fn list_nodes(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<NodePage>> {
    require_admin(&who)?;
    let req = q.check()?;
    let all: Vec<Node> = nodes::db::nodes(&state.db)
        .await?
        .iter()
        .map(representation)
        .collect();
    let (items, next_cursor) = pagination::page_in_memory(all, &req, |n| &n.config.id);
    Ok(Json(NodePage { items, next_cursor }))
}

/// Get a node
///
/// Admin keys only.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{node_id}",
    tag = "nodes",
    operation_id = "get_node",
    params(("node_id" = String, Path, description = "The node's id")),
    responses((status = 200, description = "The node", body = Node,
        headers(("ETag" = String, description = "Over the node's configuration and state")))),
)]
pub async fn get_node(
    State(state): State<AppState>,
    who: Principal,
    Path(node_id): Path<String>,
) -> ApiResult<Response> {
    require_admin(&who)?;
    Ok(answer(&node_of(&state, &node_id).await?))
}

/// Runs a pool action for an admin key, with `If-Match`, and answers the node.
async fn act(
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    node_id: &str,
    action: PoolAction,
) -> ApiResult<Response> {
    require_admin(who)?;
    who.require_write()?;
    let node = node_of(state, node_id).await?;
    etag::check_if_match(headers, &etag::of(&representation(&node).config))?;
    let actor = super::domains::key_actor(state, who).await?;
    nodes::apply_pool_action(state, &node, action, None, &actor).await?;
    Ok(answer(&node_of(state, node_id).await?))
}

/// Cordon a node
///
/// The node keeps its domains and takes no new ones (the pool page's "Cordon"). Admin
/// keys only; in the audit log with the key as the actor.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{node_id}/cordon",
    tag = "nodes",
    operation_id = "cordon_node",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("If-Match" = Option<String>, Header, description = "Act only if the node's ETag still matches"),
    ),
    responses(
        (status = 200, description = "The node, cordoned", body = Node,
            headers(("ETag" = String, description = "The node's new ETag"))),
        (status = 412, description = "`precondition_failed`: the node changed", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn cordon_node(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(node_id): Path<String>,
) -> ApiResult<Response> {
    act(&state, &who, &headers, &node_id, PoolAction::Cordon).await
}

/// Uncordon a node
///
/// The node takes new domains again (also ends a drain). Admin keys only; audited.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{node_id}/uncordon",
    tag = "nodes",
    operation_id = "uncordon_node",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("If-Match" = Option<String>, Header, description = "Act only if the node's ETag still matches"),
    ),
    responses(
        (status = 200, description = "The node, active", body = Node,
            headers(("ETag" = String, description = "The node's new ETag"))),
        (status = 412, description = "`precondition_failed`: the node changed", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn uncordon_node(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(node_id): Path<String>,
) -> ApiResult<Response> {
    act(&state, &who, &headers, &node_id, PoolAction::Uncordon).await
}

/// Drain a node
///
/// Its domains move to other nodes with their data, and their clients are sent there
/// (the pool page's "Drain"). Admin keys only; audited.
#[utoipa::path(
    post,
    path = "/api/v1/nodes/{node_id}/drain",
    tag = "nodes",
    operation_id = "drain_node",
    params(
        ("node_id" = String, Path, description = "The node's id"),
        ("If-Match" = Option<String>, Header, description = "Act only if the node's ETag still matches"),
    ),
    responses(
        (status = 200, description = "The node, draining", body = Node,
            headers(("ETag" = String, description = "The node's new ETag"))),
        (status = 412, description = "`precondition_failed`: the node changed", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn drain_node(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(node_id): Path<String>,
) -> ApiResult<Response> {
    act(&state, &who, &headers, &node_id, PoolAction::Drain).await
}
