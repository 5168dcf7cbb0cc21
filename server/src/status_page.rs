//! A domain's optional public status page, `/status/<domain>`, off by default.
//!
//! The domain's team switches it on and off on the domain page (a form posting to
//! `/o/{org_id}/domains/{domain_id}/status-page`: members only, CSRF-checked, noted in the
//! audit log). While it is on, anyone can open `/status/<domain>` (Unicode or ASCII form,
//! normalised as orders are) and see the domain's uptime card as the domain page builds it
//! ([`crate::domains::uptime_for`]), in its public form: the failing step of an incident,
//! never the probe's error text, which can name internal hosts.
//!
//! A domain that is not hosted here, not public, or not running (only provisioning, active
//! and suspended ones are shown) all get the same 404 page, so the page says nothing about
//! which domains exist. The page is served outside the session and CSRF middleware: it sets
//! no cookie, so shared caches may keep it for `max-age`.

use axum::{
    Form, Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_frontend::pages::{
    domains::StatusPageSwitch,
    status::{self as pages, StatusView},
};
use serde::Deserialize;

use crate::{
    domains::{self, Audience, db::DomainRow},
    error::{AppError, AppResult},
    nodes::db as nodes,
    orgs::{OrgAccess, db::OrgId},
    state::AppState,
};

/// How long browsers and shared caches may keep a status page.
const CACHE_CONTROL: &str = "public, max-age=30";

/// The switch on the domain page; merged with the panel's pages, behind the CSRF check.
pub fn router() -> Router<AppState> {
    Router::new().route(
        "/o/{org_id}/domains/{domain_id}/status-page",
        post(set_status_page),
    )
}

/// The public page; merged outside the session and CSRF middleware (no cookies).
pub fn public_router() -> Router<AppState> {
    Router::new().route("/status/{domain}", get(show_status_page))
}

/// The switch as the domain page shows it: on or off, and the page's address.
pub async fn switch(state: &AppState, org: &OrgId, d: &DomainRow) -> AppResult<StatusPageSwitch> {
    Ok(StatusPageSwitch {
        public: db::is_public(&state.db, org, &d.id).await?,
        url: public_url(&state.settings.public_url, &d.domain),
    })
}

/// `<public_url>/status/<domain>`, with the domain in its ASCII (IDNA A-label) form, so
/// the address survives mail clients and chat apps that mangle Unicode.
pub fn public_url(base: &str, domain: &str) -> String {
    let ascii = crate::dns::ascii_domain(domain).unwrap_or_else(|_| domain.to_string());
    format!("{}/status/{ascii}", base.trim_end_matches('/'))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SwitchForm {
    /// "on" or "off".
    public: String,
}

async fn set_status_page(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(f): Form<SwitchForm>,
) -> AppResult<Response> {
    let d = domains::domain_of(&state, &access, &id).await?;
    let public = match f.public.as_str() {
        "on" => true,
        "off" => false,
        _ => return Err(AppError::BadRequest("Choose on or off.".into())),
    };
    if db::set_public(&state.db, &access.org.id, &d.id, public).await? {
        let now_is = if public { "on" } else { "off" };
        tracing::info!(
            domain = d.domain,
            org = access.org.id.0,
            public,
            "public status page switched"
        );
        let user = &access.signed_in.user;
        nodes::audit(
            &state.db,
            Some(&user.id),
            &user.email,
            "domain.status_page",
            &d.domain,
            &format!("public status page {now_is}"),
            state.clock.now(),
        )
        .await?;
    }
    let page = format!("/o/{}/domains/{}#status-page", access.org.id.0, d.id);
    Ok(Redirect::to(&page).into_response())
}

async fn show_status_page(
    State(state): State<AppState>,
    Path(domain): Path<String>,
) -> AppResult<Response> {
    // Orders store the normalised (Unicode) form; an invalid name is simply not found.
    let Ok(domain) = domains::normalize(&domain) else {
        return Ok(no_status_page());
    };
    let Some(id) = db::public_domain(&state.db, &domain).await? else {
        return Ok(no_status_page());
    };
    let Some(uptime) = domains::uptime_for(&state, &id, Audience::Public).await? else {
        return Ok(no_status_page());
    };
    let html = pages::page(StatusView { domain, uptime });
    Ok(([(header::CACHE_CONTROL, CACHE_CONTROL)], Html(html)).into_response())
}

/// The one answer for every domain without a status page.
fn no_status_page() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CACHE_CONTROL, "no-store")],
        Html(pages::not_found()),
    )
        .into_response()
}

/// SQL of the switch. The `status_public` column came with the prober (migration 0005).
pub mod db {
    use sqlx::Row;

    use crate::{db::Pool, orgs::db::OrgId};

    /// Whether the organisation's domain has its status page on.
    #[tracing::instrument(skip_all)]
    pub async fn is_public(db: &Pool, org: &OrgId, domain_id: &str) -> Result<bool, sqlx::Error> {
        Ok(
            sqlx::query("SELECT status_public FROM domains WHERE id = $1 AND org_id = $2")
                .bind(domain_id)
                .bind(&org.0)
                .fetch_optional(db)
                .await?
                .map(|r| r.try_get::<i64, _>("status_public"))
                .transpose()?
                .is_some_and(|v| v != 0),
        )
    }

    /// Switches the page on or off; true when that changed anything.
    #[tracing::instrument(skip_all)]
    pub async fn set_public(
        db: &Pool,
        org: &OrgId,
        domain_id: &str,
        public: bool,
    ) -> Result<bool, sqlx::Error> {
        let changed = sqlx::query(
            "UPDATE domains SET status_public = $1 WHERE id = $2 AND org_id = $3 AND status_public <> $1",
        )
        .bind(i64::from(public))
        .bind(domain_id)
        .bind(&org.0)
        .execute(db)
        .await?
        .rows_affected();
        Ok(changed > 0)
    }

    /// The id of `domain` (normalised) if its page is on and it is being set up or running.
    #[tracing::instrument(skip_all)]
    pub async fn public_domain(db: &Pool, domain: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query(
            "SELECT id FROM domains WHERE domain = $1 AND status_public <> 0
             AND state IN ('provisioning', 'active', 'suspended')",
        )
        .bind(domain)
        .fetch_optional(db)
        .await?
        .map(|r| r.try_get("id"))
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::public_url;

    #[test]
    fn the_public_address_carries_the_ascii_form_of_the_domain() {
        assert_eq!(
            public_url("https://panel.example/", "bücher.example"),
            "https://panel.example/status/xn--bcher-kva.example"
        );
        assert_eq!(
            public_url("http://127.0.0.1:8080", "chat.example.com"),
            "http://127.0.0.1:8080/status/chat.example.com"
        );
    }
}
