//! The Webhooks pages: an organisation's outbound webhook endpoints under
//! `/o/{org_id}/webhooks` (owners add and manage them, members look), each with its
//! signing secret, events, delivery log and redelivery. Plain HTML forms behind the
//! panel's CSRF check, like the Alerts page.

use std::collections::HashMap;

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_frontend::{
    Flash, FlashKind, FormErrors,
    pages::webhooks::{
        self as pages, EndpointDeliveryView, EndpointView, WebhookView, WebhooksView,
    },
};

use super::{
    db,
    endpoints::{self, Endpoint},
    rules, signature,
};
use crate::{
    clock::{format_ts, new_id},
    error::{AppError, AppResult},
    orgs::{OrgAccess, db::Role},
    pages::{NoticeQuery, ctx},
    state::AppState,
};

/// Deliveries shown on an endpoint's page.
const LOG_LENGTH: i64 = 50;
/// Endpoints listed (an organisation has a handful).
const MAX_LISTED: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/o/{org_id}/webhooks", get(show_list).post(add))
        .route("/o/{org_id}/webhooks/{id}", get(show_one).post(save_events))
        .route("/o/{org_id}/webhooks/{id}/secret", post(rotate_secret))
        .route("/o/{org_id}/webhooks/{id}/enabled", post(set_enabled))
        .route("/o/{org_id}/webhooks/{id}/delete", post(delete))
        .route(
            "/o/{org_id}/webhooks/{id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
}

fn notice(code: Option<&str>) -> Option<Flash> {
    let (kind, text) = match code? {
        "webhook-added" => (
            FlashKind::Success,
            "Endpoint added. Give your receiver the signing secret below.",
        ),
        "webhook-saved" => (FlashKind::Success, "Events saved."),
        "webhook-rotated" => (
            FlashKind::Success,
            "New signing secret made: deliveries are signed with it from now on, pending retries too.",
        ),
        "webhook-enabled" => (FlashKind::Success, "Endpoint enabled."),
        "webhook-disabled" => (
            FlashKind::Info,
            "Endpoint disabled: it gets no new events, and pending deliveries wait.",
        ),
        "webhook-deleted" => (FlashKind::Success, "Endpoint deleted."),
        "webhook-redelivered" => (FlashKind::Success, "Delivery queued again."),
        "webhook-busy" => (
            FlashKind::Info,
            "That delivery is being sent right now; look again in a moment.",
        ),
        _ => return None,
    };
    Some(Flash {
        kind,
        text: text.into(),
    })
}

fn require_owner(access: &OrgAccess) -> AppResult<()> {
    match access.role {
        Role::Owner => Ok(()),
        Role::Member => Err(AppError::Forbidden(
            "Only owners of this organisation can change its webhooks.",
        )),
    }
}

fn list_url(access: &OrgAccess) -> String {
    format!("/o/{}/webhooks", access.org.id.0)
}

fn event_types() -> Vec<String> {
    endpoints::EVENT_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect()
}

fn endpoint_view(e: &Endpoint) -> EndpointView {
    EndpointView {
        id: e.id.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        events: e
            .event_list()
            .into_iter()
            .filter(|t| t != endpoints::ALL_EVENTS)
            .collect(),
        enabled: e.enabled,
        created: format_ts(e.created_at),
    }
}

/// The ticked `event:<type>` boxes of a form.
fn chosen(form: &HashMap<String, String>) -> Vec<String> {
    let mut picked: Vec<String> = form
        .keys()
        .filter_map(|k| k.strip_prefix("event:"))
        .map(String::from)
        .collect();
    picked.sort();
    picked
}

async fn endpoint_of(state: &AppState, access: &OrgAccess, id: &str) -> AppResult<Endpoint> {
    endpoints::get(&state.db, &access.org.id, id)
        .await?
        .ok_or(AppError::NotFound)
}

async fn render_list(
    state: &AppState,
    access: &OrgAccess,
    mut view: WebhooksView,
    notice_code: Option<&str>,
) -> AppResult<String> {
    view.org_id = access.org.id.0.clone();
    view.can_edit = access.role == Role::Owner;
    view.event_types = event_types();
    view.endpoints = endpoints::list(&state.db, &access.org.id, None, MAX_LISTED)
        .await?
        .iter()
        .map(endpoint_view)
        .collect();
    let mut page_ctx = ctx(
        state,
        &access.signed_in.visitor,
        "Webhooks",
        "webhooks",
        Some(&access.org),
        None,
    )
    .await?;
    page_ctx.flash = notice(notice_code);
    Ok(pages::webhooks(page_ctx, view))
}

async fn show_list(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    Ok(Html(
        render_list(
            &state,
            &access,
            WebhooksView::default(),
            q.notice.as_deref(),
        )
        .await?,
    ))
}

async fn add(
    State(state): State<AppState>,
    access: OrgAccess,
    Form(form): Form<HashMap<String, String>>,
) -> AppResult<Response> {
    require_owner(&access)?;
    let field = |n: &str| {
        form.get(n)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let (url_in, description) = (field("url"), field("description"));
    let picked = chosen(&form);
    let mut errors = FormErrors::default();
    let url = match rules::webhook_url(&url_in, state.settings.alerts.webhook_allow_local) {
        Ok(Some(u)) => Some(u.to_string()),
        Ok(None) => {
            errors.add("url", "Enter the URL to send events to.");
            None
        }
        Err(why) => {
            errors.add("url", why);
            None
        }
    };
    if let Some(u) = &url
        && endpoints::url_taken(&state.db, &access.org.id, u, None).await?
    {
        errors.add(
            "url",
            "An endpoint with this URL is already registered: change its event types instead.",
        );
    }
    if description.chars().count() > 200 {
        errors.add("description", "Use at most 200 characters.");
    } else if description.chars().any(char::is_control) {
        errors.add(
            "description",
            "Use characters that can be shown (no control characters).",
        );
    }
    let events = endpoints::events_column(&picked).unwrap_or_else(|bad| {
        errors.add("events", format!("Unknown event type {bad}."));
        String::new()
    });
    let Some(url) = url.filter(|_| errors.is_empty()) else {
        errors.add(
            "",
            "Nothing was added: please correct the fields marked below.",
        );
        let view = WebhooksView {
            url: url_in,
            description,
            chosen: picked,
            errors,
            ..Default::default()
        };
        let html = render_list(&state, &access, view, None).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response());
    };
    let id = new_id();
    let now = state.clock.now();
    let e = Endpoint {
        secret_sealed: state
            .sealer
            .seal(&endpoints::secret_context(&id), &signature::new_secret()),
        id,
        org_id: access.org.id.clone(),
        url,
        description,
        events,
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    endpoints::insert(&state.db, &e).await?;
    tracing::info!(
        org = e.org_id.0,
        endpoint = e.id,
        user = access.signed_in.user.id,
        "webhook endpoint added"
    );
    Ok(Redirect::to(&format!(
        "{}/{}?notice=webhook-added",
        list_url(&access),
        e.id
    ))
    .into_response())
}

async fn show_one(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let e = endpoint_of(&state, &access, &id).await?;
    let can_edit = access.role == Role::Owner;
    let secret = if can_edit {
        Some(
            state
                .sealer
                .open(&endpoints::secret_context(&e.id), &e.secret_sealed)
                .map_err(AppError::Internal)?,
        )
    } else {
        None
    };
    let rows = endpoints::deliveries(&state.db, &e.org_id, &e.id, None, LOG_LENGTH, true).await?;
    let deliveries = rows
        .into_iter()
        .map(|d| EndpointDeliveryView {
            outcome: match (&d.last_error, d.last_http_status) {
                (Some(err), _) => err.clone(),
                (None, Some(s)) => format!("HTTP {s}"),
                (None, None) => String::new(),
            },
            id: d.id,
            created: format_ts(d.created_at),
            event_type: d.event_type,
            status: d.status,
            attempts: d.attempts,
        })
        .collect();
    let view = WebhookView {
        org_id: access.org.id.0.clone(),
        can_edit,
        endpoint: endpoint_view(&e),
        secret,
        event_types: event_types(),
        deliveries,
    };
    let mut page_ctx = ctx(
        &state,
        &access.signed_in.visitor,
        "Webhook endpoint",
        "webhooks",
        Some(&access.org),
        None,
    )
    .await?;
    page_ctx.flash = notice(q.notice.as_deref());
    Ok(Html(pages::webhook(page_ctx, view)))
}

fn back(access: &OrgAccess, id: &str, code: &str) -> Redirect {
    Redirect::to(&format!("{}/{id}?notice={code}", list_url(access)))
}

async fn save_events(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> AppResult<Redirect> {
    require_owner(&access)?;
    let mut e = endpoint_of(&state, &access, &id).await?;
    e.events = endpoints::events_column(&chosen(&form))
        .map_err(|_| AppError::BadRequest("Unknown event type.".into()))?;
    e.updated_at = state.clock.now();
    endpoints::update(&state.db, &e).await?;
    Ok(back(&access, &id, "webhook-saved"))
}

async fn rotate_secret(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Redirect> {
    require_owner(&access)?;
    let mut e = endpoint_of(&state, &access, &id).await?;
    e.secret_sealed = state
        .sealer
        .seal(&endpoints::secret_context(&e.id), &signature::new_secret());
    e.updated_at = state.clock.now();
    endpoints::update(&state.db, &e).await?;
    tracing::info!(
        org = e.org_id.0,
        endpoint = e.id,
        user = access.signed_in.user.id,
        "webhook endpoint secret rotated"
    );
    Ok(Redirect::to(&format!(
        "{}/{id}?notice=webhook-rotated#webhook-signing",
        list_url(&access)
    )))
}

async fn set_enabled(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> AppResult<Redirect> {
    require_owner(&access)?;
    let mut e = endpoint_of(&state, &access, &id).await?;
    e.enabled = form.get("enabled").map(String::as_str) == Some("1");
    e.updated_at = state.clock.now();
    endpoints::update(&state.db, &e).await?;
    let code = if e.enabled {
        "webhook-enabled"
    } else {
        "webhook-disabled"
    };
    Ok(back(&access, &id, code))
}

async fn delete(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Redirect> {
    require_owner(&access)?;
    let e = endpoint_of(&state, &access, &id).await?;
    endpoints::delete(&state.db, &e.org_id, &e.id).await?;
    tracing::info!(
        org = e.org_id.0,
        endpoint = e.id,
        user = access.signed_in.user.id,
        "webhook endpoint deleted"
    );
    Ok(Redirect::to(&format!(
        "{}?notice=webhook-deleted",
        list_url(&access)
    )))
}

async fn redeliver(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id, delivery_id)): Path<(String, String, String)>,
) -> AppResult<Redirect> {
    require_owner(&access)?;
    let e = endpoint_of(&state, &access, &id).await?;
    if !endpoints::has_delivery(&state.db, &e.org_id, &e.id, &delivery_id).await? {
        return Err(AppError::NotFound);
    }
    let now = state.clock.now();
    let give_up = now + state.settings.alerts.give_up_after_secs;
    let code = if db::redeliver(&state.db, &delivery_id, Some(&e.org_id), now, give_up).await? {
        super::worker::wake();
        "webhook-redelivered"
    } else {
        "webhook-busy"
    };
    Ok(back(&access, &id, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticked_event_boxes_become_the_chosen_types() {
        let form: HashMap<String, String> = [
            ("csrf", "x"),
            ("event:invoice.paid", "on"),
            ("event:domain.created", "on"),
            ("url", "https://h.example/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(chosen(&form), ["domain.created", "invoice.paid"]);
        assert!(chosen(&HashMap::new()).is_empty());
    }
}
