//! An organisation's domains: adding one (placed on a node by the reconciler), following
//! its state, and its chat accounts, which live on the node that serves it.

pub mod db;

use axum::{
    Form, Router,
    extract::{Path, State},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_common::control::NewAccount;
use rookery_frontend::{
    FormErrors,
    pages::domains::{self as pages, AccountsView, DomainView},
};
use serde::Deserialize;

use self::db::DomainRow;
use crate::{
    clock::format_ts,
    error::{AppError, AppResult},
    nodes::{client::CallError, db as nodes},
    orgs::OrgAccess,
    pages::ctx,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/o/{org_id}/domains", get(show_list).post(add))
        .route("/o/{org_id}/domains/{domain_id}", get(show_detail))
        .route(
            "/o/{org_id}/domains/{domain_id}/accounts",
            post(add_account),
        )
}

/// A domain as typed, normalised: lower-case, no trailing dot, a valid host name with at
/// least two labels. (Ordering adds IDNA display and reserved-name rules.)
pub fn normalize(input: &str) -> Result<String, &'static str> {
    let input = input.trim();
    if input.is_empty() {
        return Err("Enter a domain, e.g. chat.example.com.");
    }
    let domain = rookery_node::store::normalize_domain(input)
        .map_err(|_| "This is not a valid domain name. Use letters, digits, hyphens and dots, e.g. chat.example.com.")?;
    if !domain.contains('.')
        || domain.parse::<std::net::IpAddr>().is_ok()
        || domain.starts_with('[')
    {
        return Err("Use a full domain name with a dot, e.g. chat.example.com (not an address).");
    }
    if domain.len() > 253 {
        return Err("This domain is too long.");
    }
    Ok(domain)
}

fn view(d: &DomainRow) -> DomainView {
    DomainView {
        id: d.id.clone(),
        domain: d.domain.clone(),
        state: d.state.clone(),
        server: d
            .node_host
            .as_ref()
            .map(|h| format!("{h}:{}", d.node_c2s_port.unwrap_or(5222))),
        waiting: match d.state.as_str() {
            "provisioning" => Some(d.waiting_reason.clone().unwrap_or_else(|| {
                "Setting up the domain on its server; this takes a few seconds.".into()
            })),
            _ => None,
        },
        created: format_ts(d.created_at),
    }
}

async fn render_list(
    state: &AppState,
    access: &OrgAccess,
    typed: String,
    errors: FormErrors,
) -> AppResult<Html<String>> {
    let list = db::for_org(&state.db, &access.org.id.0)
        .await?
        .iter()
        .map(view)
        .collect();
    let ctx = ctx(
        state,
        &access.signed_in.visitor,
        "Domains",
        "domains",
        Some(&access.org),
        None,
    )
    .await?;
    Ok(Html(pages::list(
        ctx,
        access.org.id.0.clone(),
        list,
        typed,
        errors,
    )))
}

async fn show_list(State(state): State<AppState>, access: OrgAccess) -> AppResult<Html<String>> {
    render_list(&state, &access, String::new(), FormErrors::default()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AddForm {
    domain: String,
}

async fn add(
    State(state): State<AppState>,
    access: OrgAccess,
    Form(f): Form<AddForm>,
) -> AppResult<Response> {
    let mut errors = FormErrors::default();
    let domain = match normalize(&f.domain) {
        Ok(d) => d,
        Err(why) => {
            errors.add("domain", why);
            return Ok(render_list(&state, &access, f.domain, errors)
                .await?
                .into_response());
        }
    };
    match db::create(
        &state.db,
        &access.org.id.0,
        &domain,
        None,
        state.clock.now(),
    )
    .await?
    {
        Ok(d) => {
            tracing::info!(domain, org = access.org.id.0, "domain added");
            state.reconcile_now.notify_one();
            Ok(Redirect::to(&format!("/o/{}/domains/{}", access.org.id.0, d.id)).into_response())
        }
        Err(db::CreateError::Taken) => {
            errors.add(
                "domain",
                "This domain is already hosted here. If it is yours, contact support.",
            );
            Ok(render_list(&state, &access, f.domain, errors)
                .await?
                .into_response())
        }
    }
}

async fn domain_of(state: &AppState, access: &OrgAccess, id: &str) -> AppResult<DomainRow> {
    match db::get(&state.db, id).await? {
        Some(d) if d.org_id == access.org.id.0 && d.state != "deleted" => Ok(d),
        _ => Err(AppError::NotFound),
    }
}

/// The account list from the node serving the domain.
async fn accounts(state: &AppState, d: &DomainRow) -> AccountsView {
    let mut view = AccountsView::default();
    if d.state != "active" && d.state != "suspended" {
        return view;
    }
    let Some(node_id) = d.applied_node_id.as_deref() else {
        return view;
    };
    let result = async {
        let node = nodes::node(&state.db, node_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("node gone"))?;
        let client = state.node_clients.get(&node.endpoint(&state.sealer)?);
        let page = client.accounts(&d.domain, None, 1000).await?;
        anyhow::Ok(
            page.accounts
                .into_iter()
                .map(|a| a.username)
                .collect::<Vec<_>>(),
        )
    }
    .await;
    match result {
        Ok(list) => view.accounts = Some(list),
        Err(e) => {
            tracing::warn!(
                domain = d.domain,
                error = format!("{e:#}"),
                "listing accounts failed"
            );
            view.error = Some("The server of this domain does not answer right now; the accounts cannot be shown. Try again in a minute.".into());
        }
    }
    view
}

async fn render_detail(
    state: &AppState,
    access: &OrgAccess,
    d: &DomainRow,
    mut a: AccountsView,
) -> AppResult<Html<String>> {
    let fetched = accounts(state, d).await;
    a.accounts = fetched.accounts;
    a.error = a.error.or(fetched.error);
    let ctx = ctx(
        state,
        &access.signed_in.visitor,
        &d.domain,
        "domain",
        Some(&access.org),
        None,
    )
    .await?;
    Ok(Html(pages::detail(
        ctx,
        access.org.id.0.clone(),
        view(d),
        a,
    )))
}

async fn show_detail(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Html<String>> {
    let d = domain_of(&state, &access, &id).await?;
    render_detail(&state, &access, &d, AccountsView::default()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AccountForm {
    username: String,
    password: String,
}

async fn add_account(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(f): Form<AccountForm>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    let mut errors = FormErrors::default();
    let username = match rookery_node::store::normalize_username(&d.domain, f.username.trim()) {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            errors.add(
                "username",
                "Use letters, digits and . _ - only, without @ or spaces.",
            );
            None
        }
    };
    if f.password.chars().count() < 10 {
        errors.add("password", "Use at least 10 characters.");
    }
    let node = match (&d.applied_node_id, d.state.as_str()) {
        (Some(n), "active") => nodes::node(&state.db, n).await?,
        _ => None,
    };
    let Some(node) = node else {
        errors.add("", "Accounts can be added once the domain is active.");
        return Ok(render_detail(
            &state,
            &access,
            &d,
            AccountsView {
                username: f.username,
                errors,
                ..Default::default()
            },
        )
        .await?
        .into_response());
    };
    if let (true, Some(username)) = (errors.is_empty(), username) {
        let client = state.node_clients.get(&node.endpoint(&state.sealer)?);
        let req = NewAccount {
            username: username.clone(),
            password: f.password.clone(),
        };
        match client.create_account(&d.domain, &req).await {
            Ok(()) => {
                tracing::info!(domain = d.domain, username, "chat account created");
                return Ok(
                    Redirect::to(&format!("/o/{}/domains/{}", access.org.id.0, d.id))
                        .into_response(),
                );
            }
            Err(CallError::Refused { error, .. }) => match error.code.as_str() {
                "account_exists" => errors.add("username", "This account already exists."),
                "account_limit" => errors.add(
                    "",
                    format!("Your plan's account limit is reached: {}", error.message),
                ),
                _ => errors.add(
                    "",
                    format!("The server refused the account: {}", error.message),
                ),
            },
            Err(e) => {
                tracing::warn!(domain = d.domain, error = %e, "creating an account failed");
                errors.add("", "The server of this domain does not answer right now. Nothing was created; try again in a minute.");
            }
        }
    }
    Ok(render_detail(
        &state,
        &access,
        &d,
        AccountsView {
            username: f.username,
            errors,
            ..Default::default()
        },
    )
    .await?
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn domains_are_normalised_and_checked() {
        assert_eq!(
            normalize(" Chat.Example.COM. ").unwrap(),
            "chat.example.com"
        );
        assert!(normalize("").is_err());
        assert!(normalize("localhost").is_err());
        assert!(normalize("10.0.0.1").is_err());
        assert!(normalize("bad_domain.example").is_err());
        assert!(normalize("user@example.com").is_err());
    }
}
