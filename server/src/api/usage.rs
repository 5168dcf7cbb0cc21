//! `GET /api/v1/domains/{domain_id}/usage`: what the domain page's usage card shows (its
//! data function, [`domains::usage_figures`]), as numbers: accounts, connections now and at
//! today's peak, today's messages, storage, and the last 30 days.

use axum::{
    Json, Router,
    extract::{Path, State},
    routing::get,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{auth::Principal, domains::visible_domain, problem::ApiResult};
use crate::{domains, state::AppState};

pub fn routes() -> Router<AppState> {
    Router::new().route("/domains/{domain_id}/usage", get(get_usage))
}

/// One day of a domain's usage (zeros on days without a report).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UsageDay {
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    pub accounts: i64,
    /// Connections at the day's peak.
    pub peak_sessions: i64,
    /// `<message>` stanzas the domain's users sent and received that day (presence and iq
    /// traffic is not counted).
    pub messages: i64,
    pub storage_bytes: i64,
}

/// A domain's usage, as its node reports it (about once a minute).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Usage {
    pub domain_id: String,
    /// Unix seconds of the latest report; null before the first one (every figure is 0).
    pub updated_at: Option<i64>,
    pub accounts: i64,
    /// Connections now.
    pub sessions_now: i64,
    pub peak_sessions_today: i64,
    /// Messages sent and received today (as `messages` of a day).
    pub messages_today: i64,
    pub storage_bytes: i64,
    /// The last 30 days, oldest first, today last.
    pub days: Vec<UsageDay>,
}

/// Get a domain's usage
#[utoipa::path(
    get,
    path = "/api/v1/domains/{domain_id}/usage",
    tag = "domains",
    operation_id = "get_domain_usage",
    params(("domain_id" = String, Path, description = "The domain's id")),
    responses((status = 200, description = "Today's figures and the last 30 days", body = Usage)),
)]
pub async fn get_usage(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
) -> ApiResult<Json<Usage>> {
    let d = visible_domain(&state, &who, &domain_id).await?;
    let figures = domains::usage_figures(&state, &d).await?;
    let today = state.clock.now().div_euclid(86_400);
    let day = |n: i64| {
        figures
            .as_ref()
            .and_then(|f| f.days.iter().find(|u| u.day == n))
    };
    let days = (today - 29..=today)
        .map(|n| UsageDay {
            date: crate::clock::format_ts(n * 86_400)
                .chars()
                .take(10)
                .collect(),
            accounts: day(n).map_or(0, |u| u.accounts),
            peak_sessions: day(n).map_or(0, |u| u.peak_sessions),
            messages: day(n).map_or(0, |u| u.messages),
            storage_bytes: day(n).map_or(0, |u| u.storage_bytes),
        })
        .collect();
    let today_only = |v: fn(&crate::nodes::db::DayUsage) -> i64| {
        figures
            .as_ref()
            .filter(|f| f.is_today())
            .map_or(0, |f| v(&f.last))
    };
    Ok(Json(Usage {
        domain_id: d.id.clone(),
        updated_at: figures.as_ref().map(|f| f.last.updated_at),
        accounts: figures.as_ref().map_or(0, |f| f.last.accounts),
        sessions_now: today_only(|u| u.sessions),
        peak_sessions_today: today_only(|u| u.peak_sessions),
        messages_today: today_only(|u| u.messages),
        storage_bytes: figures.as_ref().map_or(0, |f| f.last.storage_bytes),
        days,
    }))
}
