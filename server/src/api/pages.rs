//! The API's pages for people: API keys of an organisation (`/o/{org_id}/api-keys`, owners
//! create and revoke, members see), the platform admin's keys (`/admin/api-keys`), and the
//! API reference (`/docs/api`), rendered from the OpenAPI document. Creating and revoking a
//! key lands in the audit log.

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_frontend::{
    FormErrors,
    pages::api::{
        ApiDocView, ApiFieldView, ApiKeyRow, ApiKeysView, ApiOperationView, ApiResponseView,
        ApiSchemaView, ApiTagView, api_keys as keys_page, api_reference,
    },
};
use serde::Deserialize;
use serde_json::Value;
use utoipa::OpenApi;

use super::{
    ApiDoc,
    db::{self, KeyRow},
    keys::{self, Scope},
};
use crate::{
    auth::session::{Admin, SignedIn, Visitor},
    clock::format_ts,
    error::AppResult,
    nodes::db::audit,
    orgs::{OrgAccess, db::Role},
    pages::{NoticeQuery, ctx},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/o/{org_id}/api-keys",
            get(show_org_keys).post(create_org_key),
        )
        .route("/o/{org_id}/api-keys/{key_id}/revoke", post(revoke_org_key))
        .route(
            "/admin/api-keys",
            get(show_admin_keys).post(create_admin_key),
        )
        .route("/admin/api-keys/{key_id}/revoke", post(revoke_admin_key))
        .route("/docs/api", get(show_reference))
}

/// Longest expiry a key can be given, days.
const MAX_EXPIRY_DAYS: i64 = 3650;

#[derive(Deserialize, Default)]
#[serde(default)]
struct KeyForm {
    name: String,
    scope: String,
    expires_days: String,
}

fn rows(keys: Vec<KeyRow>, now: i64) -> Vec<ApiKeyRow> {
    keys.into_iter()
        .map(|k| ApiKeyRow {
            status: k.status(now).into(),
            id: k.id,
            name: k.name,
            prefix: k.prefix,
            scope: k.scope.label().into(),
            created: format_ts(k.created_at),
            created_by: k.created_by.unwrap_or_default(),
            last_used: k
                .last_used_at
                .map(format_ts)
                .unwrap_or_else(|| "never".into()),
            expires: k
                .expires_at
                .map(format_ts)
                .unwrap_or_else(|| "never".into()),
        })
        .collect()
}

/// What the page says for an organisation's keys or the admin's.
fn words(org: Option<&crate::orgs::db::Org>) -> (String, String, String) {
    match org {
        Some(o) => (
            "API keys".into(),
            if o.is_reseller {
                "Keys for the REST API. This organisation is a reseller: its keys also act on its customer organisations."
            } else {
                "Keys for the REST API. A key acts on this organisation only."
            }
            .into(),
            format!("/o/{}/api-keys", o.id.0),
        ),
        None => (
            "Admin API keys".into(),
            "Keys for the REST API that act on every organisation of the platform. Keep them safe.".into(),
            "/admin/api-keys".into(),
        ),
    }
}

async fn render(
    state: &AppState,
    visitor: &Visitor,
    org: Option<&crate::orgs::db::Org>,
    can_manage: bool,
    mut view: ApiKeysView,
    notice: Option<&str>,
) -> AppResult<Html<String>> {
    let now = state.clock.now();
    let (heading, intro, action) = words(org);
    view.keys = rows(db::keys_of(&state.db, org.map(|o| &o.id)).await?, now);
    view.heading = heading.clone();
    view.intro = intro;
    view.action = action;
    view.can_manage = can_manage;
    let page = if org.is_some() {
        "api-keys"
    } else {
        "admin-api-keys"
    };
    let ctx = ctx(state, visitor, heading, page, org, notice).await?;
    Ok(Html(keys_page(ctx, view)))
}

async fn show_org_keys(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let can_manage = access.role == Role::Owner;
    render(
        &state,
        &access.signed_in.visitor,
        Some(&access.org),
        can_manage,
        ApiKeysView::default(),
        q.notice.as_deref(),
    )
    .await
}

async fn show_admin_keys(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    render(
        &state,
        &admin.visitor,
        None,
        true,
        ApiKeysView::default(),
        q.notice.as_deref(),
    )
    .await
}

/// Checks the form; the key's name, scope and expiry, or the form again with errors.
fn check_form(f: &KeyForm, now: i64) -> Result<(String, Scope, Option<i64>), FormErrors> {
    let mut errors = FormErrors::default();
    let name = f.name.trim();
    if name.is_empty() {
        errors.add("name", "Enter a name, e.g. what uses the key.");
    } else if name.chars().count() > 100 || name.chars().any(char::is_control) {
        errors.add("name", "Use at most 100 characters that can be shown.");
    }
    let scope = Scope::parse(&f.scope).unwrap_or_else(|| {
        errors.add("scope", "Choose read only or read and write.");
        Scope::Read
    });
    let expires = match f.expires_days.trim() {
        "" => None,
        days => match days.parse::<i64>() {
            Ok(d) if (1..=MAX_EXPIRY_DAYS).contains(&d) => Some(now + d * 86_400),
            _ => {
                errors.add(
                    "expires_days",
                    "Enter a number of days from 1 to 3650, or leave it empty.",
                );
                None
            }
        },
    };
    if errors.is_empty() {
        Ok((name.to_string(), scope, expires))
    } else {
        Err(errors)
    }
}

/// Creates a key for `org` (an admin key with None) and renders the page showing it once.
async fn create(
    state: &AppState,
    signed_in: &SignedIn,
    org: Option<&crate::orgs::db::Org>,
    f: KeyForm,
) -> AppResult<Response> {
    let now = state.clock.now();
    let (name, scope, expires_at) = match check_form(&f, now) {
        Ok(v) => v,
        Err(errors) => {
            let view = ApiKeysView {
                name: f.name,
                scope: f.scope,
                expires_days: f.expires_days,
                errors,
                ..Default::default()
            };
            let page = render(state, &signed_in.visitor, org, true, view, None).await?;
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let key = keys::generate();
    db::insert_key(
        &state.db,
        db::NewKeyRow {
            org: org.map(|o| &o.id),
            name: &name,
            prefix: &key.prefix,
            key_hash: &key.hash,
            scope,
            created_by: &signed_in.user.id,
            expires_at,
        },
        now,
    )
    .await?;
    let target = match org {
        Some(o) => format!("organisation {} ({})", o.name, o.id.0),
        None => "platform (admin key)".into(),
    };
    audit(
        &state.db,
        Some(&signed_in.user.id),
        &signed_in.user.email,
        "api_key.created",
        &target,
        &format!(
            "key {} \"{name}\", {}, expires {}",
            key.prefix,
            scope.label(),
            expires_at.map(format_ts).unwrap_or_else(|| "never".into())
        ),
        now,
    )
    .await?;
    tracing::info!(
        key = key.prefix,
        org = org.map(|o| o.id.0.as_str()),
        "API key created"
    );
    let view = ApiKeysView {
        new_key: Some(key.key),
        ..Default::default()
    };
    Ok(render(state, &signed_in.visitor, org, true, view, None)
        .await?
        .into_response())
}

async fn create_org_key(
    State(state): State<AppState>,
    access: OrgAccess,
    Form(f): Form<KeyForm>,
) -> AppResult<Response> {
    access.require_owner()?;
    create(&state, &access.signed_in, Some(&access.org), f).await
}

async fn create_admin_key(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Form(f): Form<KeyForm>,
) -> AppResult<Response> {
    create(&state, &admin, None, f).await
}

async fn revoke(
    state: &AppState,
    signed_in: &SignedIn,
    org: Option<&crate::orgs::db::Org>,
    key_id: &str,
) -> AppResult<Redirect> {
    let now = state.clock.now();
    let Some(key) = db::revoke_key(&state.db, org.map(|o| &o.id), key_id, now).await? else {
        return Err(crate::error::AppError::NotFound);
    };
    let (_, _, back) = words(org);
    let target = match org {
        Some(o) => format!("organisation {} ({})", o.name, o.id.0),
        None => "platform (admin key)".into(),
    };
    audit(
        &state.db,
        Some(&signed_in.user.id),
        &signed_in.user.email,
        "api_key.revoked",
        &target,
        &format!("key {} \"{}\"", key.prefix, key.name),
        now,
    )
    .await?;
    tracing::info!(key = key.prefix, "API key revoked");
    Ok(Redirect::to(&format!("{back}?notice=key-revoked")))
}

async fn revoke_org_key(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, key_id)): Path<(String, String)>,
) -> AppResult<Redirect> {
    access.require_owner()?;
    revoke(&state, &access.signed_in, Some(&access.org), &key_id).await
}

async fn revoke_admin_key(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(key_id): Path<String>,
) -> AppResult<Redirect> {
    revoke(&state, &admin, None, &key_id).await
}

async fn show_reference(
    State(state): State<AppState>,
    visitor: Visitor,
) -> AppResult<Html<String>> {
    let doc = serde_json::to_value(ApiDoc::openapi()).map_err(anyhow::Error::from)?;
    let ctx = ctx(&state, &visitor, "API reference", "api-docs", None, None).await?;
    Ok(Html(api_reference(ctx, reference_view(&doc))))
}

// ---- the OpenAPI document as a page -----------------------------------------------------

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// A schema as a short type expression: `string`, `Domain`, `array of Plan`, `integer | null`.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        return r.rsplit('/').next().unwrap_or(r).to_string();
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        if let Some(list) = schema.get(combinator).and_then(Value::as_array) {
            return list.iter().map(type_of).collect::<Vec<_>>().join(" | ");
        }
    }
    let base = match schema.get("type") {
        Some(Value::Array(types)) => types.iter().map(text).collect::<Vec<_>>().join(" | "),
        Some(t) => text(t),
        None => "any".into(),
    };
    if base.starts_with("array") {
        let items = schema.get("items").map(type_of).unwrap_or_default();
        return base.replacen("array", &format!("array of {items}"), 1);
    }
    match schema.get("format").and_then(Value::as_str) {
        Some(f) => format!("{base} ({f})"),
        None => base,
    }
}

fn body_of(content: Option<&Value>) -> Option<String> {
    let content = content?.as_object()?;
    let (media, c) = content.iter().next()?;
    Some(format!("{} ({media})", type_of(c.get("schema")?)))
}

/// The page's view of the OpenAPI document.
pub fn reference_view(doc: &Value) -> ApiDocView {
    let mut tags: Vec<ApiTagView> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| ApiTagView {
            name: text(&t["name"]),
            description: text(&t["description"]),
            operations: Vec::new(),
        })
        .collect();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let params = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| ApiFieldView {
                    name: text(&p["name"]),
                    location: text(&p["in"]),
                    ty: type_of(&p["schema"]),
                    required: p["required"].as_bool().unwrap_or(false),
                    description: text(&p["description"]),
                })
                .collect();
            let request = op
                .get("requestBody")
                .and_then(|b| b["content"].as_object())
                .and_then(|c| c.values().next())
                .map(|c| type_of(&c["schema"]));
            let responses = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(status, r)| ApiResponseView {
                    status: status.clone(),
                    description: text(&r["description"]),
                    body: body_of(r.get("content")),
                })
                .collect();
            let view = ApiOperationView {
                id: text(&op["operationId"]),
                method: method.to_uppercase(),
                path: path.clone(),
                summary: text(&op["summary"]),
                description: text(&op["description"]),
                params,
                request,
                responses,
            };
            let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
            match tags.iter_mut().find(|t| t.name == tag) {
                Some(t) => t.operations.push(view),
                None => tags.push(ApiTagView {
                    name: tag,
                    description: String::new(),
                    operations: vec![view],
                }),
            }
        }
    }
    let schemas = doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| {
            let required: Vec<&str> = s["required"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            ApiSchemaView {
                name: name.clone(),
                description: text(&s["description"]),
                fields: s["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(field, p)| ApiFieldView {
                        name: field.clone(),
                        location: String::new(),
                        ty: type_of(p),
                        required: required.contains(&field.as_str()),
                        description: text(&p["description"]),
                    })
                    .collect(),
                values: s["enum"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(text)
                    .collect(),
            }
        })
        .collect();
    ApiDocView {
        title: text(&doc["info"]["title"]),
        version: text(&doc["info"]["version"]),
        description: text(&doc["info"]["description"]),
        tags,
        schemas,
        problems: super::problem::CODES
            .iter()
            .map(|(c, s, t)| (c.to_string(), *s, t.to_string()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_lists_every_operation_under_its_tag_with_its_answers() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let view = reference_view(&doc);
        let domains = view.tags.iter().find(|t| t.name == "domains").unwrap();
        let create = domains
            .operations
            .iter()
            .find(|o| o.id == "create_domain")
            .unwrap();
        assert_eq!(create.method, "POST");
        assert_eq!(create.request.as_deref(), Some("CreateDomain"));
        assert!(create.responses.iter().any(|r| r.status == "201"));
        assert!(create.params.iter().any(|p| p.name == "Idempotency-Key"));
        assert!(view.schemas.iter().any(|s| s.name == "Problem"));
        assert!(
            view.problems
                .iter()
                .any(|(c, s, _)| c == "not_found" && *s == 404)
        );
    }

    #[test]
    fn types_read_like_types() {
        let v = serde_json::json!({"type": ["string", "null"]});
        assert_eq!(type_of(&v), "string | null");
        let v =
            serde_json::json!({"type": "array", "items": {"$ref": "#/components/schemas/Plan"}});
        assert_eq!(type_of(&v), "array of Plan");
        let v = serde_json::json!({"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/DomainNode"}]});
        assert_eq!(type_of(&v), "null | DomainNode");
    }
}
