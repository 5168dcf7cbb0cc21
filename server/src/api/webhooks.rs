//! `/api/v1/webhooks`: an organisation's outbound webhook endpoints (see
//! `alerts::endpoints`), their delivery logs and redelivery. The signing secret is in
//! the answer to a create, and to a `PATCH` with `rotate_secret`, and never again.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    auth::{Principal, plausible_id},
    etag,
    pagination::{self, PageQuery},
    problem::{ApiJson, ApiQuery, ApiResult, FieldError, Problem},
};
use crate::{
    alerts::{
        db as alerts_db,
        endpoints::{self, Endpoint},
        rules, signature, worker,
    },
    clock::new_id,
    orgs::db::OrgId,
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/webhooks", get(list_webhooks).post(create_webhook))
        .route(
            "/webhooks/{webhook_id}",
            get(get_webhook)
                .patch(update_webhook)
                .delete(delete_webhook),
        )
        .route("/webhooks/{webhook_id}/deliveries", get(list_deliveries))
        .route(
            "/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
}

/// A webhook endpoint.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Webhook {
    pub id: String,
    pub org_id: String,
    pub url: String,
    pub description: String,
    /// The subscribed event types; `["*"]` for all.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Unix seconds, UTC.
    pub created_at: i64,
    /// The signing secret (`whsec_…`): only in the answer to a create or a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookPage {
    pub items: Vec<Webhook>,
    pub next_cursor: Option<String>,
}

/// One delivery of an event to an endpoint.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub last_attempt_at: Option<i64>,
    pub last_http_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
    /// When the next attempt is due, for pending deliveries.
    pub next_attempt_at: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

fn representation(e: &Endpoint, secret: Option<String>) -> Webhook {
    Webhook {
        id: e.id.clone(),
        org_id: e.org_id.0.clone(),
        url: e.url.clone(),
        description: e.description.clone(),
        events: e.event_list(),
        enabled: e.enabled,
        created_at: e.created_at,
        secret,
    }
}

/// The endpoint `id` if the key may see its organisation; 404 otherwise.
async fn visible(state: &AppState, who: &Principal, id: &str) -> ApiResult<Endpoint> {
    if !plausible_id(id) {
        return Err(Problem::not_found());
    }
    let Some(e) = endpoints::by_id(&state.db, id).await? else {
        return Err(Problem::not_found());
    };
    who.org(state, &e.org_id.0).await?;
    Ok(e)
}

/// The organisation a list or create is for: `org_id`, else the key's own.
async fn target_org(state: &AppState, who: &Principal, org_id: Option<&str>) -> ApiResult<OrgId> {
    match (org_id, &who.org_id) {
        (Some(id), _) => Ok(who.org(state, id).await?.id),
        (None, Some(own)) => Ok(own.clone()),
        (None, None) => Err(field_error(
            "org_id",
            "org_id_required",
            "Admin keys name the organisation.",
        )),
    }
}

fn field_error(field: &str, code: &str, message: &str) -> Problem {
    Problem::validation(vec![FieldError {
        field: field.into(),
        code: code.into(),
        message: message.into(),
    }])
}

fn check_url(state: &AppState, url: &str) -> ApiResult<String> {
    match rules::webhook_url(url, state.settings.alerts.webhook_allow_local) {
        Ok(Some(u)) => Ok(u.to_string()),
        Ok(None) => Err(field_error(
            "url",
            "invalid_url",
            "Enter the endpoint's URL.",
        )),
        Err(why) => Err(field_error("url", "invalid_url", why)),
    }
}

/// An organisation registers a URL once (see [`endpoints::url_taken`]).
async fn check_url_free(
    state: &AppState,
    org: &OrgId,
    url: &str,
    except: Option<&str>,
) -> ApiResult<()> {
    if endpoints::url_taken(&state.db, org, url, except).await? {
        return Err(field_error(
            "url",
            "url_taken",
            "The organisation already has an endpoint with this URL; change its events instead.",
        ));
    }
    Ok(())
}

fn check_events(events: &[String]) -> ApiResult<String> {
    endpoints::events_column(events).map_err(|bad| {
        field_error(
            "events",
            "unknown_event_type",
            &format!(
                "Unknown event type {bad:?}; use \"*\" or some of: {}.",
                endpoints::EVENT_TYPES.join(", ")
            ),
        )
    })
}

fn check_description(d: &str) -> ApiResult<String> {
    let d = d.trim();
    if d.chars().count() > 200 {
        return Err(field_error(
            "description",
            "invalid_description",
            "Use at most 200 characters.",
        ));
    }
    if d.chars().any(char::is_control) {
        return Err(field_error(
            "description",
            "invalid_description",
            "Use characters that can be shown (no control characters).",
        ));
    }
    Ok(d.to_string())
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WebhookFilter {
    /// The organisation (admin and reseller keys); default: the key's own.
    pub org_id: Option<String>,
}

/// List webhook endpoints
#[utoipa::path(
    get,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    operation_id = "list_webhooks",
    params(PageQuery, WebhookFilter),
    responses((status = 200, description = "A page of endpoints, by id", body = WebhookPage)),
)]
pub async fn list_webhooks(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<WebhookFilter>,
) -> ApiResult<Json<WebhookPage>> {
    let req = q.check()?;
    let org = target_org(&state, &who, filter.org_id.as_deref()).await?;
    let rows = endpoints::list(
        &state.db,
        &org,
        req.after.as_deref(),
        i64::from(req.limit) + 1,
    )
    .await?;
    let (rows, next_cursor) = pagination::finish(rows, &req, |e| &e.id);
    Ok(Json(WebhookPage {
        items: rows.iter().map(|e| representation(e, None)).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    #[schema(example = "https://hooks.example.com/rookery")]
    pub url: String,
    #[serde(default)]
    pub description: String,
    /// Event types to receive; omitted, empty or `["*"]`: all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// The organisation (admin and reseller keys); default: the key's own.
    pub org_id: Option<String>,
}

/// Register a webhook endpoint
///
/// The answer carries the signing secret, shown this once.
#[utoipa::path(
    post,
    path = "/api/v1/webhooks",
    tag = "webhooks",
    operation_id = "create_webhook",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry of this POST return the first answer (24 hours)")),
    request_body(content = CreateWebhook, content_type = "application/json"),
    responses(
        (status = 201, description = "Created, with its secret", body = Webhook, headers(
            ("Location" = String, description = "The endpoint's URL"),
            ("ETag" = String, description = "The endpoint's current ETag"))),
        (status = 422, description = "`validation_failed` (`invalid_url`, `url_taken`, `unknown_event_type`, `invalid_description`, `org_id_required`)", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn create_webhook(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> ApiResult<Response> {
    who.require_write()?;
    let org = target_org(&state, &who, body.org_id.as_deref()).await?;
    let url = check_url(&state, &body.url)?;
    check_url_free(&state, &org, &url, None).await?;
    let events = check_events(&body.events)?;
    let description = check_description(&body.description)?;
    let id = new_id();
    let secret = signature::new_secret();
    let now = state.clock.now();
    let e = Endpoint {
        secret_sealed: state.sealer.seal(&endpoints::secret_context(&id), &secret),
        id,
        org_id: org,
        url,
        description,
        events,
        enabled: body.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    endpoints::insert(&state.db, &e).await?;
    tracing::info!(
        org = e.org_id.0,
        endpoint = e.id,
        key = who.key_id,
        "webhook endpoint registered through the API"
    );
    let mut response = etag::with_etag(StatusCode::CREATED, representation(&e, Some(secret)));
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/webhooks/{}", e.id)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Get a webhook endpoint
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{webhook_id}",
    tag = "webhooks",
    operation_id = "get_webhook",
    params(("webhook_id" = String, Path, description = "The endpoint's id")),
    responses((status = 200, description = "The endpoint (without its secret)", body = Webhook,
        headers(("ETag" = String, description = "The endpoint's current ETag")))),
)]
pub async fn get_webhook(
    State(state): State<AppState>,
    who: Principal,
    Path(webhook_id): Path<String>,
) -> ApiResult<Response> {
    let e = visible(&state, &who, &webhook_id).await?;
    Ok(etag::with_etag(StatusCode::OK, representation(&e, None)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
    /// true: a new signing secret at once, in the answer (pending retries use it).
    pub rotate_secret: Option<bool>,
}

/// Update a webhook endpoint
///
/// Send `If-Match` with the ETag as read to change it only if nobody else did meanwhile.
#[utoipa::path(
    patch,
    path = "/api/v1/webhooks/{webhook_id}",
    tag = "webhooks",
    operation_id = "update_webhook",
    params(
        ("webhook_id" = String, Path, description = "The endpoint's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    request_body(content = UpdateWebhook, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated (with the new secret after a rotation)", body = Webhook,
            headers(("ETag" = String, description = "The endpoint's new ETag"))),
        (status = 412, description = "`precondition_failed`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`invalid_url`, `url_taken`, `unknown_event_type`, `invalid_description`)", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn update_webhook(
    State(state): State<AppState>,
    who: Principal,
    Path(webhook_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> ApiResult<Response> {
    who.require_write()?;
    let mut e = visible(&state, &who, &webhook_id).await?;
    etag::check_if_match(&headers, &etag::of(&representation(&e, None)))?;
    let was = e.clone();
    if let Some(url) = &body.url {
        e.url = check_url(&state, url)?;
        check_url_free(&state, &e.org_id, &e.url, Some(&e.id)).await?;
    }
    if let Some(d) = &body.description {
        e.description = check_description(d)?;
    }
    if let Some(events) = &body.events {
        e.events = check_events(events)?;
    }
    if let Some(enabled) = body.enabled {
        e.enabled = enabled;
    }
    let secret = body
        .rotate_secret
        .unwrap_or(false)
        .then(signature::new_secret);
    if let Some(s) = &secret {
        e.secret_sealed = state.sealer.seal(&endpoints::secret_context(&e.id), s);
    }
    e.updated_at = state.clock.now();
    if etag::conditional(&headers) {
        // Written only if nothing changed since the ETag was checked.
        if !endpoints::update_unchanged(&state.db, &e, &was).await? {
            return Err(etag::changed_meanwhile());
        }
    } else {
        endpoints::update(&state.db, &e).await?;
    }
    let mut response = etag::with_etag(StatusCode::OK, representation(&e, None));
    if secret.is_some() {
        // The ETag stays that of the endpoint without its secret.
        let tag = response.headers().get(header::ETAG).cloned();
        response = (StatusCode::OK, Json(representation(&e, secret))).into_response();
        if let Some(tag) = tag {
            response.headers_mut().insert(header::ETAG, tag);
        }
    }
    Ok(response)
}

/// Delete a webhook endpoint
///
/// Its pending deliveries are dropped with it, and its delivery log.
#[utoipa::path(
    delete,
    path = "/api/v1/webhooks/{webhook_id}",
    tag = "webhooks",
    operation_id = "delete_webhook",
    params(("webhook_id" = String, Path, description = "The endpoint's id")),
    responses((status = 204, description = "Deleted")),
)]
pub async fn delete_webhook(
    State(state): State<AppState>,
    who: Principal,
    Path(webhook_id): Path<String>,
) -> ApiResult<StatusCode> {
    who.require_write()?;
    let e = visible(&state, &who, &webhook_id).await?;
    endpoints::delete(&state.db, &e.org_id, &e.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List an endpoint's deliveries
#[utoipa::path(
    get,
    path = "/api/v1/webhooks/{webhook_id}/deliveries",
    tag = "webhooks",
    operation_id = "list_webhook_deliveries",
    params(("webhook_id" = String, Path, description = "The endpoint's id"), PageQuery),
    responses((status = 200, description = "A page of deliveries, by id (oldest first)", body = DeliveryPage)),
)]
pub async fn list_deliveries(
    State(state): State<AppState>,
    who: Principal,
    Path(webhook_id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<DeliveryPage>> {
    let req = q.check()?;
    let e = visible(&state, &who, &webhook_id).await?;
    let rows = endpoints::deliveries(
        &state.db,
        &e.org_id,
        &e.id,
        req.after.as_deref(),
        i64::from(req.limit) + 1,
        false,
    )
    .await?;
    let (rows, next_cursor) = pagination::finish(rows, &req, |d| &d.id);
    Ok(Json(DeliveryPage {
        items: rows
            .into_iter()
            .map(|d| Delivery {
                next_attempt_at: (d.status == "pending").then_some(d.next_attempt_at),
                id: d.id,
                event_id: d.event_id,
                event_type: d.event_type,
                status: d.status,
                attempts: d.attempts,
                created_at: d.created_at,
                last_attempt_at: d.last_attempt_at,
                last_http_status: d.last_http_status,
                last_error: d.last_error,
                delivered_at: d.delivered_at,
            })
            .collect(),
        next_cursor,
    }))
}

/// Redeliver
///
/// Queues the delivery again, due now, with a fresh day of retries (the same event id).
#[utoipa::path(
    post,
    path = "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
    tag = "webhooks",
    operation_id = "redeliver_webhook_delivery",
    params(
        ("webhook_id" = String, Path, description = "The endpoint's id"),
        ("delivery_id" = String, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 202, description = "Queued again"),
        (status = 409, description = "`delivery_in_progress`: being sent right now", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn redeliver(
    State(state): State<AppState>,
    who: Principal,
    Path((webhook_id, delivery_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require_write()?;
    let e = visible(&state, &who, &webhook_id).await?;
    if !plausible_id(&delivery_id) || !of_endpoint(&state, &e, &delivery_id).await? {
        return Err(Problem::not_found());
    }
    let now = state.clock.now();
    let give_up = now + state.settings.alerts.give_up_after_secs;
    if alerts_db::redeliver(&state.db, &delivery_id, Some(&e.org_id), now, give_up).await? {
        worker::wake();
        return Ok(StatusCode::ACCEPTED);
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "delivery_in_progress",
        "The delivery is being sent right now; try again in a moment.",
    ))
}

/// Whether `delivery_id` is a delivery to this endpoint.
async fn of_endpoint(state: &AppState, e: &Endpoint, delivery_id: &str) -> ApiResult<bool> {
    Ok(endpoints::has_delivery(&state.db, &e.org_id, &e.id, delivery_id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_are_short_and_printable() {
        assert_eq!(
            check_description("  billing sync ").unwrap(),
            "billing sync"
        );
        for bad in ["a\u{0}b", "bell\u{7}", &"x".repeat(201)] {
            assert!(check_description(bad).is_err(), "{bad:?}");
        }
    }
}
