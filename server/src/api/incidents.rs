//! `GET /api/v1/domains/{domain_id}/incidents`: a domain's incidents (the prober's outages:
//! opened after `probe.open_after` failed rounds, closed after `probe.close_after` good
//! ones), newest first, cursor-paginated. The cursor names the last incident of the page;
//! the next page starts after it in (start, id) order, so incidents opened during a walk
//! never shift it.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    auth::Principal,
    domains::visible_domain,
    pagination::{self, PageQuery},
    problem::{ApiQuery, ApiResult},
};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/domains/{domain_id}/incidents", get(list_incidents))
}

/// An outage of a domain, as the prober saw it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DomainIncident {
    pub id: String,
    /// Unix seconds, UTC.
    pub started_at: i64,
    /// Null while it is ongoing.
    pub ended_at: Option<i64>,
    /// Until now while ongoing.
    pub duration_secs: i64,
    /// The step of the login that failed (`connect`, `tls`, `auth`…).
    pub stage: String,
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct IncidentPage {
    pub items: Vec<DomainIncident>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
}

mod db {
    use rookery_common::db::Pool;
    use sqlx::Row;

    pub struct IncidentRow {
        pub id: String,
        pub started_at: i64,
        pub ended_at: Option<i64>,
        pub stage: String,
        pub error: Option<String>,
    }

    /// A domain's incidents newest first, after the incident `after` (of the same domain).
    #[tracing::instrument(skip_all)]
    pub async fn page(
        db: &Pool,
        domain_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<IncidentRow>, sqlx::Error> {
        let rows = match after {
            None => {
                sqlx::query(
                    "SELECT id, started_at, ended_at, stage, error FROM incidents
                     WHERE domain_id = $1 ORDER BY started_at DESC, id DESC LIMIT $2",
                )
                .bind(domain_id)
                .bind(limit)
                .fetch_all(db)
                .await?
            }
            Some(after) => {
                sqlx::query(
                    "SELECT i.id, i.started_at, i.ended_at, i.stage, i.error
                     FROM incidents i JOIN incidents c ON c.id = $2 AND c.domain_id = $1
                     WHERE i.domain_id = $1
                       AND (i.started_at < c.started_at OR (i.started_at = c.started_at AND i.id < c.id))
                     ORDER BY i.started_at DESC, i.id DESC LIMIT $3",
                )
                .bind(domain_id)
                .bind(after)
                .bind(limit)
                .fetch_all(db)
                .await?
            }
        };
        rows.iter()
            .map(|r| {
                Ok(IncidentRow {
                    id: r.try_get("id")?,
                    started_at: r.try_get("started_at")?,
                    ended_at: r.try_get("ended_at")?,
                    stage: r.try_get("stage")?,
                    error: r.try_get("error")?,
                })
            })
            .collect()
    }
}

/// List a domain's incidents
///
/// Newest first: ongoing ones (no `ended_at`) lead.
#[utoipa::path(
    get,
    path = "/api/v1/domains/{domain_id}/incidents",
    tag = "domains",
    operation_id = "list_domain_incidents",
    params(("domain_id" = String, Path, description = "The domain's id"), PageQuery),
    responses((status = 200, description = "A page of incidents, newest first", body = IncidentPage)),
)]
pub async fn list_incidents(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<IncidentPage>> {
    let req = q.check()?;
    let d = visible_domain(&state, &who, &domain_id).await?;
    let now = state.clock.now();
    let rows = db::page(
        &state.db,
        &d.id,
        req.after.as_deref(),
        i64::from(req.limit) + 1,
    )
    .await?;
    let (rows, next_cursor) = pagination::finish(rows, &req, |i| &i.id);
    Ok(Json(IncidentPage {
        items: rows
            .into_iter()
            .map(|i| DomainIncident {
                duration_secs: i.ended_at.unwrap_or(now) - i.started_at,
                id: i.id,
                started_at: i.started_at,
                ended_at: i.ended_at,
                stage: i.stage,
                error: i.error,
            })
            .collect(),
        next_cursor,
    }))
}
