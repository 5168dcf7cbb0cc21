//! `GET /api/v1/plans` and `/plans/{plan_id}`: the plans domains can be ordered on (admin
//! keys also see the plans that are not public).

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
    routing::get,
};
use rookery_frontend::pages::PlanView;
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    auth::{Kind, Principal},
    etag,
    pagination::{self, PageQuery},
    problem::{ApiQuery, ApiResult, Problem},
};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/plans", get(list_plans))
        .route("/plans/{plan_id}", get(get_plan))
}

/// A plan: its monthly price and the limits of every domain on it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Monthly price in the currency's minor unit (cents); 0 is free. While billing is
    /// off every plan is free to order.
    pub price_cents: i64,
    pub currency: String,
    pub max_accounts: i64,
    pub max_sessions: i64,
    pub storage_mb: i64,
    pub upload_mb: i64,
    pub archive_days: i64,
    /// Days an offline message waits for its recipient; null: until delivered.
    pub offline_days: Option<i64>,
    /// The largest file one upload (XEP-0363) may be, in MiB; 0: none; null: the
    /// server's default.
    pub upload_max_file_mb: Option<i64>,
    /// What one chat account's uploaded files may add up to, in MiB (within
    /// `upload_mb`); null: no per-account limit.
    pub upload_account_mb: Option<i64>,
    /// Days an uploaded file is kept; null: the server's default (kept).
    pub upload_retention_days: Option<i64>,
    /// Group chat rooms (XEP-0045) a domain's service holds; 0: none; null: the
    /// server's default.
    pub max_rooms: Option<i64>,
    /// People one room holds at most; null: the server's default.
    pub max_room_occupants: Option<i64>,
    /// Shown on the landing page and orderable by customers.
    pub public: bool,
}

impl From<PlanView> for Plan {
    fn from(p: PlanView) -> Self {
        Plan {
            id: p.id,
            name: p.name,
            description: p.description,
            price_cents: p.price_cents,
            currency: p.currency,
            max_accounts: p.max_accounts,
            max_sessions: p.max_sessions,
            storage_mb: p.storage_mb,
            upload_mb: p.upload_mb,
            archive_days: p.archive_days,
            offline_days: p.offline_days,
            upload_max_file_mb: p.upload_max_file_mb,
            upload_account_mb: p.upload_account_mb,
            upload_retention_days: p.upload_retention_days,
            max_rooms: p.max_rooms,
            max_room_occupants: p.max_room_occupants,
            public: p.public,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PlanPage {
    pub items: Vec<Plan>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
}

async fn visible_plans(state: &AppState, who: &Principal) -> ApiResult<Vec<Plan>> {
    let public_only = who.kind != Kind::Admin;
    Ok(crate::admin::plans::list(&state.db, public_only)
        .await?
        .into_iter()
        .map(Plan::from)
        .collect())
}

/// List plans
#[utoipa::path(
    get,
    path = "/api/v1/plans",
    tag = "plans",
    operation_id = "list_plans",
    params(PageQuery),
    responses((status = 200, description = "A page of plans, by id", body = PlanPage)),
)]
pub async fn list_plans(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<PlanPage>> {
    let req = q.check()?;
    let (items, next_cursor) =
        pagination::page_in_memory(visible_plans(&state, &who).await?, &req, |p| &p.id);
    Ok(Json(PlanPage { items, next_cursor }))
}

/// Get a plan
#[utoipa::path(
    get,
    path = "/api/v1/plans/{plan_id}",
    tag = "plans",
    operation_id = "get_plan",
    params(("plan_id" = String, Path, description = "The plan's id")),
    responses((status = 200, description = "The plan", body = Plan,
        headers(("ETag" = String, description = "The plan's current ETag")))),
)]
pub async fn get_plan(
    State(state): State<AppState>,
    who: Principal,
    Path(plan_id): Path<String>,
) -> ApiResult<Response> {
    let plan = visible_plans(&state, &who)
        .await?
        .into_iter()
        .find(|p| p.id == plan_id)
        .ok_or_else(Problem::not_found)?;
    Ok(etag::with_etag(StatusCode::OK, plan))
}
