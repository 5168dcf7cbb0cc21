//! The REST API for resellers, customers and admins: `/api/v1`, JSON, API keys.
//!
//! A request flows through, outermost first:
//! 1. [`finish`]: every problem becomes an RFC 9457 body with the request id (the panel's
//!    `x-request-id`, also on every response and in the log span), and errors axum makes
//!    itself (unknown route, wrong method) become problems too;
//! 2. [`auth::authenticate`]: the bearer key → [`auth::Principal`], the per-key rate limit
//!    and its `RateLimit-*` headers;
//! 3. [`idempotency::middleware`]: POSTs with an `Idempotency-Key` are answered once;
//! 4. [`finish`] again, so what a handler answers is complete before it is kept for replays;
//! 5. the resource handlers ([`plans`], [`domains`] with [`accounts`], [`usage`], [`dns`]
//!    and [`incidents`], [`customers`], [`nodes`]), which call the same functions as the
//!    panel's pages.
//!
//! Adding a resource: a module with `routes()` and `#[utoipa::path]` handlers taking a
//! [`auth::Principal`] (and `require_write()` before changes), merged in [`router`] and
//! listed in [`ApiDoc`]; the e2e authorisation matrix (`tests/tests/e2e/api.rs`) gets a row.
//! The OpenAPI 3.1 document is served at `/api/v1/openapi.json` and rendered for people at
//! `/docs/api` ([`pages`]); API keys are managed at `/o/{org_id}/api-keys` and, for
//! platform admins, `/admin/api-keys`.

pub mod accounts;
pub mod auth;
pub mod customers;
pub mod db;
pub mod dns;
pub mod domains;
pub mod etag;
pub mod idempotency;
pub mod incidents;
pub mod keys;
pub mod nodes;
pub mod pages;
pub mod pagination;
pub mod plans;
pub mod problem;
pub mod ratelimit;
pub mod usage;
pub mod webhooks;

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    body::to_bytes,
    extract::{Request, State},
    http::{HeaderValue, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        self, Content, Header, RefOr, ResponseBuilder,
        schema::{ObjectBuilder, Ref, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

use self::problem::{PROBLEM_JSON, Problem};
use crate::state::AppState;

/// Every route of the API, under `/api/v1`, with its middleware. (The pages for people,
/// [`pages::router`], go with the other pages, behind the CSRF check.)
pub fn router(state: &AppState) -> Router<AppState> {
    let v1 = Router::new()
        .route("/openapi.json", get(openapi_json))
        .merge(plans::routes())
        .merge(domains::routes())
        .merge(accounts::routes())
        .merge(usage::routes())
        .merge(dns::routes())
        .merge(incidents::routes())
        .merge(customers::routes())
        .merge(nodes::routes())
        .merge(webhooks::routes())
        .fallback(|| async { Problem::not_found() })
        .layer(middleware::from_fn_with_state(state.clone(), finish))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::middleware,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), finish))
        .layer(Extension(Arc::new(ratelimit::RateLimiter::default())));
    Router::new().nest("/api/v1", v1)
}

/// Renders problems with the public URL and request id; turns axum's own error answers
/// (plain text or empty) into problems.
async fn finish(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let mut response = next.run(req).await;
    let base = state.settings.base_url();
    let problem = match response.extensions_mut().remove::<Problem>() {
        Some(p) => p,
        None => {
            let status = response.status();
            let is_json = response
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| {
                    ct.starts_with("application/json") || ct.starts_with(PROBLEM_JSON)
                });
            if !(status.is_client_error() || status.is_server_error()) || is_json {
                return response;
            }
            let (parts, body) = std::mem::take(&mut response).into_parts();
            response = Response::from_parts(parts, axum::body::Body::empty());
            let text = to_bytes(body, 4096).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_string();
            let code = problem::code_for_status(status);
            let detail = match code {
                "not_found" => Problem::not_found().detail,
                "method_not_allowed" => "This method is not allowed on this resource.".into(),
                _ if status.is_server_error() => Problem::internal().detail,
                _ if text.is_empty() => status.canonical_reason().unwrap_or("Error").into(),
                _ => text,
            };
            Problem {
                status,
                code: code.into(),
                detail,
                errors: Vec::new(),
                retry_after: None,
            }
        }
    };
    let mut rendered = problem.render(base, request_id);
    // Keep what the inner layers set (Allow, RateLimit-*, …), but not the old body's headers.
    for (name, value) in response.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rendered
                .headers_mut()
                .entry(name.clone())
                .or_insert_with(|| value.clone());
        }
    }
    rendered
}

async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        Json(ApiDoc::openapi()),
    )
}

/// The API's OpenAPI 3.1 document: every operation, its parameters, bodies and answers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Rookery API",
        version = "1",
        description = "Manage organisations, domains and their XMPP service on a Rookery platform. \
            Authenticate with an API key from the panel: `Authorization: Bearer rk_…`. \
            Errors are RFC 9457 problems (`application/problem+json`) with a stable `code`. \
            Lists are paginated with `limit` and an opaque `cursor`. POSTs accept an \
            `Idempotency-Key`; updates accept `If-Match` with the resource's `ETag`. Every \
            response carries `x-request-id` and `RateLimit-Limit`, `RateLimit-Remaining`, \
            `RateLimit-Reset`."
    ),
    paths(
        plans::list_plans,
        plans::get_plan,
        domains::list_domains,
        domains::create_domain,
        domains::get_domain,
        domains::update_domain,
        domains::get_uptime,
        domains::suspend_domain,
        domains::resume_domain,
        domains::delete_domain,
        domains::start_checkout,
        domains::change_plan,
        usage::get_usage,
        dns::get_dns,
        dns::check_dns,
        incidents::list_incidents,
        accounts::list_accounts,
        accounts::create_account,
        accounts::delete_account,
        accounts::set_password,
        customers::list_customers,
        customers::create_customer,
        customers::get_customer,
        customers::update_customer,
        customers::delete_customer,
        customers::invite,
        webhooks::list_webhooks,
        webhooks::create_webhook,
        webhooks::get_webhook,
        webhooks::update_webhook,
        webhooks::delete_webhook,
        webhooks::list_deliveries,
        webhooks::redeliver,
        nodes::list_nodes,
        nodes::get_node,
        nodes::cordon_node,
        nodes::uncordon_node,
        nodes::drain_node,
    ),
    components(schemas(problem::ProblemBody, problem::FieldError)),
    tags(
        (name = "plans", description = "What domains can be ordered on"),
        (name = "domains", description = "Customer domains (XMPP virtual hosts): order, state, DNS records and check, usage, uptime, incidents"),
        (name = "accounts", description = "A domain's chat (XMPP) accounts, on the node serving it"),
        (name = "customers", description = "A reseller's customer organisations"),
        (name = "nodes", description = "The node pool (admin keys only)"),
        (name = "webhooks", description = "Outbound webhook endpoints, their deliveries and redelivery"),
    ),
    modifiers(&Conventions),
)]
pub struct ApiDoc;

/// What every operation shares: bearer security, the problems any request can meet, and
/// the `x-request-id` and `RateLimit-*` headers on every response.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("rk_<prefix>_<secret>")
                    .description(Some("An API key created in the panel (API keys page)."))
                    .build(),
            ),
        );
        doc.security = Some(vec![SecurityRequirement::new(
            "api_key",
            Vec::<String>::new(),
        )]);
        let integer_header = |description: &str| {
            Header::builder()
                .schema(ObjectBuilder::new().schema_type(Type::Integer).build())
                .description(Some(description))
                .build()
        };
        let string_header = |description: &str| {
            Header::builder()
                .schema(ObjectBuilder::new().schema_type(Type::String).build())
                .description(Some(description))
                .build()
        };
        for item in doc.paths.paths.values_mut() {
            let operations = [
                (&mut item.get, false),
                (&mut item.post, true),
                (&mut item.patch, true),
                (&mut item.put, true),
                (&mut item.delete, true),
            ];
            for (operation, writes) in operations {
                let Some(op) = operation.as_mut() else {
                    continue;
                };
                let mut common = vec![
                    (
                        "400",
                        "`invalid_query`, `invalid_cursor`, `invalid_json`, `invalid_idempotency_key`",
                    ),
                    (
                        "401",
                        "`unauthorized`: no key, or a key that is unknown, revoked or expired",
                    ),
                    (
                        "404",
                        "`not_found`: nothing here, or not visible to this key",
                    ),
                    ("429", "`rate_limited`: wait `Retry-After` seconds"),
                    ("500", "`internal_error`"),
                ];
                if writes {
                    common.extend([
                        ("403", "`read_only_key`"),
                        ("409", "`idempotency_request_in_progress`"),
                        ("413", "`payload_too_large`"),
                        ("415", "`unsupported_media_type`: send application/json"),
                        ("422", "`validation_failed` or `idempotency_key_reused`"),
                    ]);
                }
                for (status, description) in common {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            RefOr::T(
                                ResponseBuilder::new()
                                    .description(description)
                                    .content(
                                        PROBLEM_JSON,
                                        Content::new(Some(Ref::from_schema_name("Problem"))),
                                    )
                                    .build(),
                            )
                        });
                }
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(r) = response {
                        r.headers.insert(
                            "x-request-id".into(),
                            string_header("This request's id, also in the panel's logs"),
                        );
                        r.headers.insert(
                            "RateLimit-Limit".into(),
                            integer_header("Requests this key may make per window (a minute)"),
                        );
                        r.headers.insert(
                            "RateLimit-Remaining".into(),
                            integer_header("Requests left in the current window"),
                        );
                        r.headers.insert(
                            "RateLimit-Reset".into(),
                            integer_header("Seconds until the window resets"),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_document_is_3_1_with_bearer_security_and_problems_everywhere() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            doc["components"]["securitySchemes"]["api_key"]["scheme"],
            "bearer"
        );
        assert!(doc["components"]["schemas"]["Problem"].is_object());
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.contains_key("/api/v1/domains/{domain_id}/uptime"));
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                for status in ["401", "404", "429"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
                if method != "get" {
                    assert!(responses.contains_key("403"), "{method} {path} lacks 403");
                }
            }
        }
    }

    #[test]
    fn the_openapi_document_describes_federation_and_the_plans_upload_and_group_chat_limits() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["FederationMode"]["enum"],
            serde_json::json!(["open", "allowlist", "closed"]),
            "{}",
            schemas["FederationMode"]
        );
        let domain = &schemas["Domain"];
        assert!(
            domain["required"]
                .as_array()
                .unwrap()
                .contains(&"federation".into())
        );
        assert!(schemas["DomainFederation"]["properties"]["allow"].is_object());
        assert!(schemas["UpdateFederation"]["properties"]["mode"].is_object());
        assert!(schemas["UpdateDomain"]["properties"]["federation"].is_object());
        let patch = &doc["paths"]["/api/v1/domains/{domain_id}"]["patch"]["responses"];
        assert!(
            patch["422"]["description"]
                .as_str()
                .unwrap()
                .contains("federation_allow_empty")
        );
        let plan = &schemas["Plan"]["properties"];
        for field in [
            "upload_max_file_mb",
            "upload_account_mb",
            "upload_retention_days",
            "max_rooms",
            "max_room_occupants",
        ] {
            assert!(plan[field].is_object(), "{field}");
        }
    }
}
