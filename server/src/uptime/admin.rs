//! The admin's Uptime page: every domain's status worst first, beside its node's heartbeat
//! (so a whole node down shows apart from one vhost), and the probe locations with their
//! tokens.

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_frontend::pages::nodes::{self as pages, LocationView, UptimeOverview, UptimeRow};
use serde::Deserialize;

use crate::{
    auth::session::Admin,
    clock::format_ts,
    error::AppResult,
    nodes::db::audit,
    pages::ctx,
    probe::{db as probes, scheduler::active_locations},
    state::AppState,
};

/// Domains a page of the overview shows.
pub const PAGE_SIZE: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/uptime", get(show))
        .route("/admin/uptime/locations", post(create_location))
        .route("/admin/uptime/locations/{id}/revoke", post(revoke_location))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct OverviewQuery {
    page: Option<usize>,
    notice: Option<String>,
}

fn ago(now: i64, at: i64) -> String {
    match (now - at).max(0) {
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 172_800 => format!("{} h ago", s / 3600),
        s => format!("{} days ago", s / 86_400),
    }
}

/// The overview's rows for one page, worst first, with the counts over all domains. Both
/// come from the database already counted and ordered: only the page's rows are read.
pub async fn overview(state: &AppState, page: usize) -> AppResult<UptimeOverview> {
    let now = state.clock.now();
    // The counts and the page each rank every domain: run them side by side, on the page
    // asked for, and read the page again only when it was past the last one.
    let page = page.max(1);
    let offset = |page: usize| {
        i64::try_from(page.saturating_sub(1).saturating_mul(PAGE_SIZE)).unwrap_or(i64::MAX)
    };
    let (counts, mut rows) = tokio::try_join!(
        probes::overview_counts(&state.db),
        probes::overview_page(&state.db, offset(page), PAGE_SIZE as i64),
    )?;
    let mut view = UptimeOverview {
        counts: (
            counts.incident as usize,
            counts.down as usize,
            counts.up as usize,
            counts.unknown as usize,
        ),
        ..Default::default()
    };
    view.pages = (counts.total().max(0) as usize).div_ceil(PAGE_SIZE).max(1);
    view.page = page.min(view.pages);
    if view.page != page {
        rows = probes::overview_page(&state.db, offset(view.page), PAGE_SIZE as i64).await?;
    }
    let status_of = |r: &probes::OverviewRow| match (r.open_incident_since, r.last_ok) {
        (Some(_), _) => "incident",
        (None, Some(false)) => "down",
        (None, Some(true)) => "up",
        (None, None) => "unknown",
    };
    view.rows = rows
        .into_iter()
        .map(|r| {
            let status = status_of(&r);
            let stage = r.last_stage.clone().unwrap_or_default();
            let detail = match status {
                "incident" => format!(
                    "since {}{}",
                    format_ts(r.open_incident_since.unwrap_or(now)),
                    if stage.is_empty() {
                        String::new()
                    } else {
                        format!(", failing at {stage}")
                    }
                ),
                "down" => format!("last round failed at {stage}"),
                "up" => format!("checked {}", ago(now, r.last_at.unwrap_or(now))),
                _ => format!("not probed yet ({})", r.state),
            };
            let node_status = match r.node_health.as_deref() {
                Some("down") => "down",
                Some(_) if r.node_heartbeat_at.is_some() => "up",
                _ => "",
            };
            let heartbeat = r
                .node_heartbeat_at
                .map(|t| format!("heartbeat {}", ago(now, t)))
                .unwrap_or_else(|| "no heartbeat yet".into());
            UptimeRow {
                domain: r.domain,
                node: r.node.unwrap_or_else(|| "not placed".into()),
                node_health: match node_status {
                    "" => heartbeat,
                    s => format!("{s} · {heartbeat}"),
                },
                node_status: node_status.into(),
                status: status.into(),
                detail,
                uptime_24h: if r.up + r.down == 0 {
                    "no data".into()
                } else {
                    format!("{:.2} %", r.up as f64 * 100.0 / (r.up + r.down) as f64)
                },
            }
        })
        .collect();
    let p = &state.settings.probe;
    let active = active_locations(state, now).await?;
    if p.panel_probes {
        view.locations.push(LocationView {
            id: String::new(),
            name: p.location.clone(),
            kind: "panel".into(),
            token_prefix: String::new(),
            last_seen: "now".into(),
            address: String::new(),
            status: if p.enabled { "active" } else { "off" }.into(),
        });
    }
    for l in probes::locations(&state.db).await? {
        let status = if l.revoked_at.is_some() {
            "revoked"
        } else if active.contains(&l.name) {
            "active"
        } else {
            "silent"
        };
        view.locations.push(LocationView {
            id: l.id,
            name: l.name,
            kind: "remote".into(),
            token_prefix: l.token_prefix,
            last_seen: l
                .last_seen_at
                .map(|t| ago(now, t))
                .unwrap_or_else(|| "never".into()),
            address: l.last_address.unwrap_or_default(),
            status: status.into(),
        });
    }
    let n = active.len();
    let quorum = crate::probe::rounds::quorum(p.quorum, n).clamp(1, n.max(1));
    view.quorum = match n {
        0 => "No location probes now: no round is decided until one does.".into(),
        1 => "One active location: a round is down when it fails. Add locations so one location's network trouble is not taken for an outage.".into(),
        n => format!(
            "A round counts as down when {quorum} of the {n} active locations fail; a location not heard from for two intervals stops counting."
        ),
    };
    Ok(view)
}

async fn show(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(q): Query<OverviewQuery>,
) -> AppResult<Html<String>> {
    let view = overview(&state, q.page.unwrap_or(1)).await?;
    let ctx = ctx(
        &state,
        &admin.visitor,
        "Uptime",
        "admin-uptime",
        None,
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(pages::uptime_overview(ctx, view)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LocationForm {
    name: String,
}

/// What is wrong with a new location's name, if anything.
pub fn check_location_name(name: &str, panel_location: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if !ok {
        return Err(
            "A location name is 1 to 40 lower-case letters, digits or '-', such as eu-west.".into(),
        );
    }
    if name == panel_location {
        return Err(format!(
            "“{name}” is the panel's own location; choose another name."
        ));
    }
    Ok(())
}

async fn create_location(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Form(f): Form<LocationForm>,
) -> AppResult<Response> {
    let name = f.name.trim().to_string();
    let now = state.clock.now();
    let mut error = check_location_name(&name, &state.settings.probe.location).err();
    let mut created = None;
    if error.is_none() {
        match probes::create_location(&state.db, &name, &admin.user.id, now).await? {
            Some(token) => {
                audit(
                    &state.db,
                    Some(&admin.user.id),
                    &admin.user.email,
                    "probe_location.created",
                    &name,
                    "",
                    now,
                )
                .await?;
                created = Some(token);
            }
            None => error = Some(format!("There is already a location named “{name}”.")),
        }
    }
    let mut view = overview(&state, 1).await?;
    let status = if created.is_some() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    match created {
        Some(token) => {
            let command = format!(
                "rookery probe --panel {} --token {token}",
                state.settings.base_url()
            );
            view.new_location = Some((name, token, command));
        }
        None => {
            view.error = error;
            view.name_input = name;
        }
    }
    let ctx = ctx(&state, &admin.visitor, "Uptime", "admin-uptime", None, None).await?;
    Ok((status, Html(pages::uptime_overview(ctx, view))).into_response())
}

async fn revoke_location(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> AppResult<Response> {
    let now = state.clock.now();
    if let Some(name) = probes::revoke_location(&state.db, &id, now).await? {
        audit(
            &state.db,
            Some(&admin.user.id),
            &admin.user.email,
            "probe_location.revoked",
            &name,
            "",
            now,
        )
        .await?;
    }
    Ok(Redirect::to("/admin/uptime?notice=location-revoked").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_names_are_short_plain_and_not_the_panels() {
        assert!(check_location_name("eu-west-2", "panel").is_ok());
        for bad in ["", "EU", "eu west", "-x", "ü", &"a".repeat(41)] {
            assert!(check_location_name(bad, "panel").is_err(), "{bad:?}");
        }
        assert!(
            check_location_name("panel", "panel")
                .unwrap_err()
                .contains("panel's own")
        );
    }
}
