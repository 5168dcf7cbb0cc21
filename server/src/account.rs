//! The signed-in person's own settings: their address and its confirmation, and their
//! password.

use axum::{
    Form, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_extra::extract::cookie::CookieJar;
use rookery_frontend::{
    FormErrors,
    pages::org::{AccountView, account as account_page},
};
use serde::Deserialize;

use crate::{
    auth::{self, db, passwords, session, session::SignedIn},
    clock::format_ts,
    error::AppResult,
    pages::{NoticeQuery, ctx},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/account", get(show_account))
        .route("/account/password", post(change_password))
        .route("/account/verify/resend", post(resend_verification))
}

fn view(signed_in: &SignedIn, errors: FormErrors) -> AccountView {
    AccountView {
        email: signed_in.user.email.clone(),
        verified: signed_in.user.email_verified,
        created: format_ts(signed_in.user.created_at),
        errors,
    }
}

async fn show_account(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let ctx = ctx(
        &state,
        &signed_in.visitor,
        "Account",
        "account",
        None,
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(account_page(
        ctx,
        view(&signed_in, FormErrors::default()),
    )))
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    signed_in: SignedIn,
    jar: CookieJar,
    Form(form): Form<PasswordForm>,
) -> AppResult<Response> {
    let mut errors = FormErrors::default();
    if !state
        .hasher
        .verify(&form.current_password, Some(&signed_in.user.password_hash))
        .await?
    {
        errors.add("current_password", "This is not your current password.");
    }
    if let Err(m) = passwords::check_policy(&form.new_password, &signed_in.user.email) {
        errors.add("new_password", m);
    } else if form.new_password == form.current_password {
        errors.add(
            "new_password",
            "Choose a password different from the current one.",
        );
    }
    if !errors.is_empty() {
        let ctx = ctx(&state, &signed_in.visitor, "Account", "account", None, None).await?;
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Html(account_page(ctx, view(&signed_in, errors))),
        )
            .into_response());
    }
    let hash = state.hasher.hash(&form.new_password).await?;
    db::set_password(&state.db, &signed_in.user.id, &hash, state.clock.now()).await?;
    // Every other session ends; this browser gets a fresh one.
    db::delete_user_sessions(&state.db, &signed_in.user.id).await?;
    let mut visitor = signed_in.visitor.clone();
    visitor.session_hash = None;
    let jar = session::start(&state, jar, &visitor, &signed_in.user.id).await?;
    tracing::info!(user_id = %signed_in.user.id, "password changed");
    Ok((jar, Redirect::to("/account?notice=password-changed")).into_response())
}

async fn resend_verification(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> AppResult<Redirect> {
    if signed_in.user.email_verified {
        return Ok(Redirect::to("/account"));
    }
    let recent = db::count_recent_tokens(
        &state.db,
        &signed_in.user.id,
        db::TokenPurpose::Verify,
        state.clock.now() - 3600,
    )
    .await?;
    if recent < 5 {
        auth::send_verification(&state, &signed_in.user.id, &signed_in.user.email).await?;
    }
    Ok(Redirect::to("/account?notice=verification-sent"))
}
