//! `/api/v1/domains/{domain_id}/accounts`: a domain's chat (XMPP) accounts, which live on
//! the node serving the domain. The handlers call what the domain page calls
//! ([`domains::account_page`], [`domains::create_account`], [`domains::set_account_password`],
//! [`domains::remove_account`]), so the checks and the plan's account limit (the node
//! enforces it from the domain's spec) are the browser's.
//!
//! The list pages through the node's own pages (in user-name order): the cursor is
//! base64url of `a1:<last user name>`. A password the panel makes up (none sent) is in the
//! answer once and nowhere else.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, put},
};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    auth::Principal,
    domains::visible_domain,
    pagination::PageQuery,
    problem::{ApiJson, ApiQuery, ApiResult, FieldError, Problem, ProblemBody},
};
use crate::{
    domains::{self, AccountError, db::DomainRow},
    nodes::client::NodeClient,
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/domains/{domain_id}/accounts",
            get(list_accounts).post(create_account),
        )
        .route(
            "/domains/{domain_id}/accounts/{username}",
            axum::routing::delete(delete_account),
        )
        .route(
            "/domains/{domain_id}/accounts/{username}/password",
            put(set_password),
        )
}

/// A chat account of a domain.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Account {
    /// The local part, normalised (`alice`).
    pub username: String,
    /// The full address: `alice@chat.example.com`.
    pub address: String,
    /// Unix seconds, UTC.
    pub created_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct AccountPage {
    pub items: Vec<Account>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
}

/// A new chat account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Letters, digits and `. _ -` (at most 64), without `@`.
    #[schema(example = "alice")]
    pub username: String,
    /// At least 10 characters (at most 1023 bytes). Leave it out to have one made up; it
    /// is then in the answer, once.
    pub password: Option<String>,
}

/// A new password for a chat account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// At least 10 characters (at most 1023 bytes). Leave it out (`{}`) to have one made
    /// up; it is then in the answer, once.
    pub password: Option<String>,
}

/// An account after a change of its password (or its creation).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AccountCredentials {
    pub username: String,
    pub address: String,
    /// The password the panel made up, shown this once; null when the request chose it.
    pub password: Option<String>,
}

fn account_cursor(username: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("a1:{username}"))
}

/// The user name after which the next page starts, from a cursor this API gave out.
fn account_after(d: &DomainRow, cursor: &str) -> ApiResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|t| t.strip_prefix("a1:").map(String::from))
        // Any account name can start a page (the node's own tools allow more than the
        // panel's rule for new names).
        .and_then(|u| {
            rookery_node::store::normalize_username(&d.domain, &u)
                .ok()
                .filter(|n| *n == u)
        })
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid_cursor",
                "The cursor is not one this API gave out; start again without it.",
            )
        })
}

fn not_active() -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "domain_not_active",
        "Accounts can be changed once the domain is active (it is not active now).",
    )
}

fn node_unavailable() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "node_unavailable",
        domains::NODE_DOWN,
    )
}

impl From<AccountError> for Problem {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Exists => {
                Problem::new(StatusCode::CONFLICT, "account_exists", e.to_string())
            }
            AccountError::OverLimit => Problem::new(
                StatusCode::CONFLICT,
                "account_limit",
                "The plan's account limit is reached: delete an account, or move to a bigger plan.",
            ),
            AccountError::NotFound => Problem::not_found(),
            AccountError::Refused(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "account_refused",
                e.to_string(),
            ),
            AccountError::NodeDown => node_unavailable(),
        }
    }
}

/// The node client of an active domain, or 409 `domain_not_active`.
async fn client_of(state: &AppState, d: &DomainRow) -> ApiResult<NodeClient> {
    domains::node_client(state, d)
        .await?
        .map_err(|_| not_active())
}

/// A user name from the path, checked like a typed one; anything else is not there.
fn username_param(d: &DomainRow, raw: &str) -> ApiResult<String> {
    rookery_node::store::normalize_username(&d.domain, raw)
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or_else(Problem::not_found)
}

fn password_error(message: &str) -> FieldError {
    FieldError {
        field: "password".into(),
        code: "invalid_password".into(),
        message: message.into(),
    }
}

/// The chosen password, or one made up (`true`), or the 422 saying why not.
fn password_of(chosen: Option<String>) -> ApiResult<(String, bool)> {
    let (password, generated) = match chosen {
        Some(p) => (p, false),
        None => (domains::generate_password(), true),
    };
    match domains::password_problem(&password, generated) {
        Some(why) => Err(Problem::validation(vec![password_error(why)])),
        None => Ok((password, generated)),
    }
}

/// Answers carrying a password are not to be cached anywhere.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// List a domain's accounts
///
/// In user-name order, from the node serving the domain (active and suspended domains).
#[utoipa::path(
    get,
    path = "/api/v1/domains/{domain_id}/accounts",
    tag = "accounts",
    operation_id = "list_domain_accounts",
    params(("domain_id" = String, Path, description = "The domain's id"), PageQuery),
    responses(
        (status = 200, description = "A page of accounts, by user name", body = AccountPage),
        (status = 409, description = "`domain_not_active`: the domain is not on a node (yet, or any more)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`node_unavailable`: the node serving the domain does not answer", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn list_accounts(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<AccountPage>> {
    let d = visible_domain(&state, &who, &domain_id).await?;
    let cursor = q.cursor.clone().filter(|c| !c.is_empty());
    let req = PageQuery {
        limit: q.limit,
        cursor: None,
    }
    .check()?;
    let after = cursor.map(|c| account_after(&d, &c)).transpose()?;
    let page = match domains::account_page(&state, &d, after.as_deref(), req.limit).await {
        Ok(Some(page)) => page,
        Ok(None) => return Err(not_active()),
        Err(e) => {
            tracing::warn!(
                domain = d.domain,
                error = format!("{e:#}"),
                "listing accounts failed"
            );
            return Err(node_unavailable());
        }
    };
    Ok(Json(AccountPage {
        next_cursor: page.next.as_deref().map(account_cursor),
        items: page
            .accounts
            .into_iter()
            .map(|a| Account {
                address: format!("{}@{}", a.username, d.domain),
                username: a.username,
                created_at: a.created_at,
            })
            .collect(),
    }))
}

/// Create an account
///
/// On an active domain, within the plan's account limit. Without `password` the panel
/// makes one up and answers it this once.
#[utoipa::path(
    post,
    path = "/api/v1/domains/{domain_id}/accounts",
    tag = "accounts",
    operation_id = "create_domain_account",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry of this POST return the first answer (24 hours)"),
    ),
    request_body(content = NewAccount, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = AccountCredentials, headers(
            ("Location" = String, description = "The account's URL"))),
        (status = 409, description = "`account_exists`, `account_limit` (the plan's), `domain_not_active`, `idempotency_request_in_progress`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`errors`: `invalid_username`, `invalid_password`), `account_refused` or `idempotency_key_reused`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`node_unavailable`: nothing was changed; try again", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn create_account(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
    ApiJson(body): ApiJson<NewAccount>,
) -> ApiResult<Response> {
    who.require_write()?;
    let d = visible_domain(&state, &who, &domain_id).await?;
    let username = domains::check_username(&d, &body.username);
    let password = password_of(body.password);
    let mut errors = Vec::new();
    if username.is_none() {
        errors.push(FieldError {
            field: "username".into(),
            code: "invalid_username".into(),
            message: domains::USERNAME_RULE.into(),
        });
    }
    if let Err(p) = &password {
        errors.extend(p.errors.iter().cloned());
    }
    let (Some(username), Ok((password, generated))) = (username, password) else {
        return Err(Problem::validation(errors));
    };
    let client = client_of(&state, &d).await?;
    domains::create_account(&client, &d, &username, &password).await?;
    let org = crate::orgs::db::OrgId(d.org_id.clone());
    crate::alerts::endpoints::account_created(&state, &org, &d.id, &d.domain, &username).await;
    let mut response = (
        StatusCode::CREATED,
        Json(AccountCredentials {
            address: format!("{username}@{}", d.domain),
            username: username.clone(),
            password: generated.then_some(password),
        }),
    )
        .into_response();
    let location = format!("/api/v1/domains/{}/accounts/{username}", d.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(no_store(response))
}

/// Delete an account
#[utoipa::path(
    delete,
    path = "/api/v1/domains/{domain_id}/accounts/{username}",
    tag = "accounts",
    operation_id = "delete_domain_account",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("username" = String, Path, description = "The account's user name"),
    ),
    responses(
        (status = 204, description = "Deleted, with its data"),
        (status = 409, description = "`domain_not_active`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`node_unavailable`: nothing was changed; try again", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn delete_account(
    State(state): State<AppState>,
    who: Principal,
    Path((domain_id, username)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    who.require_write()?;
    let d = visible_domain(&state, &who, &domain_id).await?;
    let username = username_param(&d, &username)?;
    let client = client_of(&state, &d).await?;
    domains::remove_account(&client, &d, &username).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Set an account's password
///
/// Sets the password sent, or (with `{}`) one the panel makes up and answers this once.
#[utoipa::path(
    put,
    path = "/api/v1/domains/{domain_id}/accounts/{username}/password",
    tag = "accounts",
    operation_id = "set_domain_account_password",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("username" = String, Path, description = "The account's user name"),
    ),
    request_body(content = NewPassword, content_type = "application/json"),
    responses(
        (status = 200, description = "The password is set", body = AccountCredentials),
        (status = 409, description = "`domain_not_active`", body = ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`errors`: `invalid_password`), or `account_refused` (the server refused the password)", body = ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`node_unavailable`: nothing was changed; try again", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn set_password(
    State(state): State<AppState>,
    who: Principal,
    Path((domain_id, username)): Path<(String, String)>,
    ApiJson(body): ApiJson<NewPassword>,
) -> ApiResult<Response> {
    who.require_write()?;
    let d = visible_domain(&state, &who, &domain_id).await?;
    let username = username_param(&d, &username)?;
    let (password, generated) = password_of(body.password)?;
    let client = client_of(&state, &d).await?;
    domains::set_account_password(&client, &d, &username, &password).await?;
    Ok(no_store(
        Json(AccountCredentials {
            address: format!("{username}@{}", d.domain),
            username,
            password: generated.then_some(password),
        })
        .into_response(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain() -> DomainRow {
        DomainRow {
            id: "d".into(),
            org_id: "o".into(),
            ..DomainRow::example("chat.example.com")
        }
    }

    #[test]
    fn an_account_cursor_round_trips_and_junk_is_refused() {
        let d = domain();
        assert_eq!(
            account_after(&d, &account_cursor("alice.b_c-d")).unwrap(),
            "alice.b_c-d"
        );
        for bad in [
            "zzz".to_string(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("v1:alice"),
            account_cursor("Not A User@x"),
        ] {
            assert_eq!(account_after(&d, &bad).unwrap_err().code, "invalid_cursor");
        }
    }

    #[test]
    fn a_missing_password_is_made_up_and_a_short_one_is_refused() {
        let (made_up, generated) = password_of(None).unwrap();
        assert!(generated && made_up.len() == 23);
        let (chosen, generated) = password_of(Some("correct horse".into())).unwrap();
        assert!(!generated && chosen == "correct horse");
        let refused = password_of(Some("short".into())).unwrap_err();
        assert_eq!(refused.errors[0].code, "invalid_password");
    }
}
