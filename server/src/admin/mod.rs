//! The platform admin's pages (tenants, plans, outbox, nodes) and the `rookery admin`
//! commands. Admins are people with the admin flag; everyone else gets 404 here.

pub mod plans;

use std::io::{BufRead, IsTerminal};

use anyhow::Context;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    response::{Html, Redirect},
    routing::{get, post},
};
use rookery_frontend::pages::admin::{self as pages, MailRow, TenantRow};
use serde::Deserialize;

use crate::{
    auth::{db as users, email, passwords, session::Admin},
    clock::format_ts,
    error::{AppError, AppResult},
    mail,
    orgs::db::{self as orgs, OrgId},
    pages::{NoticeQuery, ctx},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/tenants") }))
        .route("/admin/tenants", get(show_tenants))
        .route("/admin/tenants/{org_id}/reseller", post(set_reseller))
        .route("/admin/outbox", get(show_outbox))
        .merge(plans::router())
}

async fn show_tenants(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let rows = orgs::all_tenants(&state.db)
        .await?
        .into_iter()
        .map(|t| TenantRow {
            id: t.org.id.0,
            name: t.org.name,
            owners: t.owners.join(", "),
            members: t.members,
            is_reseller: t.org.is_reseller,
            parent: t.parent_name,
            created: format_ts(t.created_at),
        })
        .collect();
    let ctx = ctx(
        &state,
        &admin.visitor,
        "Tenants",
        "admin-tenants",
        None,
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(pages::tenants(ctx, rows)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ResellerForm {
    reseller: String,
}

async fn set_reseller(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(org_id): Path<String>,
    Form(form): Form<ResellerForm>,
) -> AppResult<Redirect> {
    let reseller = match form.reseller.as_str() {
        "1" => true,
        "0" => false,
        _ => return Err(AppError::BadRequest("reseller must be 0 or 1".into())),
    };
    if !orgs::set_reseller(&state.db, &OrgId(org_id.clone()), reseller).await? {
        return Err(AppError::NotFound);
    }
    tracing::info!(admin = %admin.user.id, org_id, reseller, "tenant updated");
    Ok(Redirect::to("/admin/tenants?notice=tenant-updated"))
}

async fn show_outbox(
    State(state): State<AppState>,
    Admin(admin): Admin,
) -> AppResult<Html<String>> {
    let mails = mail::latest(&state.db, 100)
        .await?
        .into_iter()
        .map(|m| MailRow {
            to: m.to,
            subject: m.subject,
            body: m.body,
            created: format_ts(m.created_at),
            status: m.status,
        })
        .collect();
    let ctx = ctx(&state, &admin.visitor, "Outbox", "admin-outbox", None, None).await?;
    Ok(Html(pages::outbox(ctx, mails)))
}

/// `rookery admin create`: a platform admin with a password from the terminal (asked twice)
/// or from the first line of standard input.
pub async fn create_admin(state: &AppState, address: &str) -> anyhow::Result<()> {
    let address = email::parse(address).map_err(|m| anyhow::anyhow!("{m}"))?;
    anyhow::ensure!(
        users::user_by_email(&state.db, &address.normalized)
            .await?
            .is_none(),
        "an account with the address {} already exists",
        address.display
    );
    let password = read_password()?;
    passwords::check_policy(&password, &address.display).map_err(|m| anyhow::anyhow!("{m}"))?;
    let hash = state.hasher.hash(&password).await?;
    users::insert_user(
        &state.db,
        users::NewUser {
            email: &address.display,
            email_normalized: &address.normalized,
            password_hash: &hash,
            is_admin: true,
            verified: true,
        },
        state.clock.now(),
    )
    .await
    .context("creating the admin")?;
    println!(
        "Created platform admin {}. Log in at {}/login",
        address.display,
        state.settings.base_url()
    );
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password for the new admin: ")?;
        let second = rpassword::prompt_password("The same password again: ")?;
        anyhow::ensure!(first == second, "the two passwords differ");
        Ok(first)
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let password = line.trim_end_matches(['\r', '\n']).to_string();
        anyhow::ensure!(!password.is_empty(), "no password on standard input");
        Ok(password)
    }
}
