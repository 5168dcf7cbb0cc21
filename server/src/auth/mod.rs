//! Accounts: sign-up, log-in and log-out, email confirmation and password reset by emailed
//! link. Sessions, CSRF protection, password hashing and log-in rate limits live in the
//! submodules; the handlers here tie them to the pages.

pub mod csrf;
pub mod db;
pub mod email;
pub mod passwords;
pub mod ratelimit;
pub mod session;

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
    pages::{
        message,
        public::{self as pages, LoginView, SignupView},
    },
};
use serde::Deserialize;

use self::{db::TokenPurpose, session::Visitor};
use crate::{
    clock::{new_token, token_hash},
    error::{AppError, AppResult},
    orgs::{self, db::Role},
    pages::{ctx, safe_next},
    state::AppState,
    telemetry::OutcomeLabels,
};

const VERIFY_TTL: i64 = 3 * 24 * 3600;
const RESET_TTL: i64 = 3600;
/// Reset links one account may request per hour: enough for a lost mail, too few to flood.
const RESETS_PER_HOUR: i64 = 3;
/// The one message for an unknown email and a wrong password.
pub const BAD_CREDENTIALS: &str = "Incorrect email or password.";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/signup", get(show_signup).post(signup))
        .route("/login", get(show_login).post(login))
        .route("/logout", post(logout))
        .route("/password/forgot", get(show_forgot).post(forgot))
        .route("/password/reset", get(show_reset).post(reset))
        .route("/verify-email", get(verify_email))
}

#[derive(Deserialize, Default)]
struct SignupQuery {
    next: Option<String>,
    email: Option<String>,
}

async fn show_signup(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<SignupQuery>,
) -> AppResult<Response> {
    if visitor.user.is_some() {
        return Ok(Redirect::to(
            &safe_next(q.next.as_deref()).unwrap_or_else(|| "/dashboard".into()),
        )
        .into_response());
    }
    let ctx = ctx(&state, &visitor, "Sign up", "signup", None, None).await?;
    let view = SignupView {
        email: q.email.unwrap_or_default(),
        next: safe_next(q.next.as_deref()),
        ..Default::default()
    };
    Ok(Html(pages::signup(ctx, view)).into_response())
}

#[derive(Deserialize)]
struct SignupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    org_name: String,
    next: Option<String>,
}

async fn signup(
    State(state): State<AppState>,
    visitor: Visitor,
    jar: CookieJar,
    Form(form): Form<SignupForm>,
) -> AppResult<Response> {
    let next = safe_next(form.next.as_deref());
    let mut errors = FormErrors::default();
    let address = email::parse(&form.email)
        .map_err(|m| errors.add("email", m))
        .ok();
    if let Err(m) = passwords::check_policy(&form.password, &form.email) {
        errors.add("password", m);
    }
    let invited = next
        .as_deref()
        .is_some_and(|n| n.starts_with("/invitations/"));
    let local = address
        .as_ref()
        .map(|a| a.display.split('@').next().unwrap_or_default().to_string())
        .unwrap_or_default();
    let org_name = orgs::org_name(&form.org_name, || format!("{local}'s organisation"))
        .map_err(|m| errors.add("org_name", m))
        .ok();
    if let (Some(a), true) = (&address, errors.is_empty())
        && db::user_by_email(&state.db, &a.normalized).await?.is_some()
    {
        {
            errors.add("email", "An account with this email already exists. Log in, or reset your password if you forgot it.");
        }
    }
    let (Some(address), Some(org_name), true) = (address, org_name, errors.is_empty()) else {
        return signup_again(&state, &visitor, form, errors).await;
    };

    let password_hash = state.hasher.hash(&form.password).await?;
    let now = state.clock.now();
    let mut tx = rookery_common::db::begin_write(&state.db).await?;
    let user_id = match db::insert_user(
        &mut *tx,
        db::NewUser {
            email: &address.display,
            email_normalized: &address.normalized,
            password_hash: &password_hash,
            is_admin: false,
            verified: false,
        },
        now,
    )
    .await
    {
        Ok(id) => id,
        Err(e) if crate::db::is_unique_violation(&e) => {
            // Someone signed up with the same address in the meantime.
            drop(tx);
            let mut errors = FormErrors::default();
            errors.add("email", "An account with this email already exists. Log in, or reset your password if you forgot it.");
            return signup_again(&state, &visitor, form, errors).await;
        }
        Err(e) => return Err(e.into()),
    };
    // Someone following an invitation joins that organisation; they get one of their own
    // only if they named it.
    let org = if invited && form.org_name.trim().is_empty() {
        None
    } else {
        let org = orgs::db::create_org(&mut *tx, &org_name, now).await?;
        orgs::db::add_member(&mut *tx, &org, &user_id, Role::Owner, now).await?;
        Some(org)
    };
    tx.commit().await?;
    state.metrics.signups.inc();
    tracing::info!(user_id, "account created");

    send_verification(&state, &user_id, &address.display).await?;
    let jar = session::start(&state, jar, &visitor, &user_id).await?;
    let target = next
        .or_else(|| org.map(|o| format!("/o/{}?notice=welcome", o.0)))
        .unwrap_or_else(|| "/dashboard".into());
    Ok((jar, Redirect::to(&target)).into_response())
}

async fn signup_again(
    state: &AppState,
    visitor: &Visitor,
    form: SignupForm,
    errors: FormErrors,
) -> AppResult<Response> {
    let ctx = ctx(state, visitor, "Sign up", "signup", None, None).await?;
    let view = SignupView {
        email: form.email.trim().to_string(),
        org_name: form.org_name,
        errors,
        next: safe_next(form.next.as_deref()),
    };
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        Html(pages::signup(ctx, view)),
    )
        .into_response())
}

/// Emails a link that confirms `address` belongs to `user_id`.
pub async fn send_verification(state: &AppState, user_id: &str, address: &str) -> AppResult<()> {
    let token = new_token();
    db::insert_email_token(
        &state.db,
        &token_hash(&token),
        user_id,
        TokenPurpose::Verify,
        state.clock.now(),
        VERIFY_TTL,
    )
    .await?;
    let link = format!("{}/verify-email?token={token}", state.settings.base_url());
    state
        .mailer
        .send(
            address,
            "Confirm your email address for Rookery",
            format!("Hello,\n\nplease confirm your email address by opening this link (it works for 3 days):\n{link}\n\nIf you did not create a Rookery account, ignore this email.\n"),
        )
        .await?;
    Ok(())
}

#[derive(Deserialize, Default)]
struct LoginQuery {
    next: Option<String>,
    notice: Option<String>,
}

async fn show_login(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<LoginQuery>,
) -> AppResult<Response> {
    if visitor.user.is_some() {
        return Ok(Redirect::to(
            &safe_next(q.next.as_deref()).unwrap_or_else(|| "/dashboard".into()),
        )
        .into_response());
    }
    let ctx = ctx(
        &state,
        &visitor,
        "Log in",
        "login",
        None,
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(pages::login(
        ctx,
        LoginView {
            next: safe_next(q.next.as_deref()),
            ..Default::default()
        },
    ))
    .into_response())
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    next: Option<String>,
}

async fn login(
    State(state): State<AppState>,
    visitor: Visitor,
    jar: CookieJar,
    Form(form): Form<LoginForm>,
) -> AppResult<Response> {
    let account = form.email.trim().to_lowercase();
    let now = state.clock.now();
    let refuse = |status: StatusCode, error: String, outcome: &'static str| {
        let state = state.clone();
        let visitor = visitor.clone();
        let view = LoginView {
            email: form.email.trim().to_string(),
            error: Some(error),
            next: safe_next(form.next.as_deref()),
        };
        async move {
            state
                .metrics
                .logins
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
            let ctx = ctx(&state, &visitor, "Log in", "login", None, None).await?;
            Ok::<_, AppError>((status, Html(pages::login(ctx, view))).into_response())
        }
    };
    if let Err(limited) = ratelimit::check(
        &state.db,
        &state.settings.login_limits,
        &account,
        &visitor.ip,
        now,
    )
    .await?
    {
        tracing::warn!(ip = %visitor.ip, "log-in refused by the rate limit");
        let mut response =
            refuse(StatusCode::TOO_MANY_REQUESTS, limited.message(), "limited").await?;
        if let Ok(v) = limited.retry_after_secs.to_string().parse() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        return Ok(response);
    }
    let user = db::user_by_email(&state.db, &account).await?;
    let ok = state
        .hasher
        .verify(
            &form.password,
            user.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await?;
    let Some(user) = user.filter(|_| ok) else {
        ratelimit::record_failure(&state.db, &account, &visitor.ip, now).await?;
        return refuse(StatusCode::UNAUTHORIZED, BAD_CREDENTIALS.into(), "failed").await;
    };
    ratelimit::record_success(&state.db, &account).await?;
    state
        .metrics
        .logins
        .get_or_create(&OutcomeLabels { outcome: "success" })
        .inc();
    let jar = session::start(&state, jar, &visitor, &user.id).await?;
    let target = safe_next(form.next.as_deref()).unwrap_or_else(|| "/dashboard".into());
    Ok((jar, Redirect::to(&target)).into_response())
}

async fn logout(
    State(state): State<AppState>,
    visitor: Visitor,
    jar: CookieJar,
) -> AppResult<Response> {
    let jar = session::end(&state, jar, &visitor).await?;
    Ok((jar, Redirect::to("/login?notice=logged-out")).into_response())
}

async fn show_forgot(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<LoginQuery>,
) -> AppResult<Html<String>> {
    let ctx = ctx(
        &state,
        &visitor,
        "Reset your password",
        "forgot-password",
        None,
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(pages::forgot_password(
        ctx,
        String::new(),
        FormErrors::default(),
    )))
}

#[derive(Deserialize)]
struct ForgotForm {
    #[serde(default)]
    email: String,
}

async fn forgot(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<ForgotForm>,
) -> AppResult<Response> {
    let address = match email::parse(&form.email) {
        Ok(a) => a,
        Err(m) => {
            let mut errors = FormErrors::default();
            errors.add("email", m);
            let ctx = ctx(
                &state,
                &visitor,
                "Reset your password",
                "forgot-password",
                None,
                None,
            )
            .await?;
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Html(pages::forgot_password(ctx, form.email, errors)),
            )
                .into_response());
        }
    };
    let now = state.clock.now();
    // The answer is the same whether or not the account exists.
    if let Some(user) = db::user_by_email(&state.db, &address.normalized).await? {
        let recent =
            db::count_recent_tokens(&state.db, &user.id, TokenPurpose::Reset, now - 3600).await?;
        if recent < RESETS_PER_HOUR {
            let token = new_token();
            db::insert_email_token(
                &state.db,
                &token_hash(&token),
                &user.id,
                TokenPurpose::Reset,
                now,
                RESET_TTL,
            )
            .await?;
            let link = format!("{}/password/reset?token={token}", state.settings.base_url());
            state
                .mailer
                .send(
                    &user.email,
                    "Reset your Rookery password",
                    format!("Hello,\n\nsomeone (hopefully you) asked to reset the password of your Rookery account.\nChoose a new password here (the link works for one hour, once):\n{link}\n\nIf you did not ask for this, ignore this email; your password stays as it is.\n"),
                )
                .await?;
        } else {
            tracing::warn!(user_id = %user.id, "password reset not sent: hourly limit reached");
        }
    }
    Ok(Redirect::to("/password/forgot?notice=reset-sent").into_response())
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

fn link_expired(
    ctx: rookery_frontend::PageCtx,
    what: &'static str,
    retry: (&str, &'static str),
) -> Response {
    (
        StatusCode::GONE,
        Html(message(
            ctx,
            "This link has expired",
            format!("{what} links work once and for a limited time. Ask for a new one."),
            Some((retry.0.into(), retry.1)),
        )),
    )
        .into_response()
}

async fn show_reset(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<TokenQuery>,
) -> AppResult<Response> {
    let ctx = ctx(
        &state,
        &visitor,
        "Choose a new password",
        "reset-password",
        None,
        None,
    )
    .await?;
    if db::email_token_user(
        &state.db,
        &token_hash(&q.token),
        TokenPurpose::Reset,
        state.clock.now(),
    )
    .await?
    .is_none()
    {
        return Ok(link_expired(
            ctx,
            "Password reset",
            ("/password/forgot", "Send a new link"),
        ));
    }
    Ok(Html(pages::reset_password(ctx, q.token, FormErrors::default())).into_response())
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

async fn reset(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<ResetForm>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let hash = token_hash(&form.token);
    let user = match db::email_token_user(&state.db, &hash, TokenPurpose::Reset, now).await? {
        Some(id) => db::user_by_id(&state.db, &id).await?,
        None => None,
    };
    let ctx = ctx(
        &state,
        &visitor,
        "Choose a new password",
        "reset-password",
        None,
        None,
    )
    .await?;
    let Some(user) = user else {
        return Ok(link_expired(
            ctx,
            "Password reset",
            ("/password/forgot", "Send a new link"),
        ));
    };
    if let Err(m) = passwords::check_policy(&form.password, &user.email) {
        let mut errors = FormErrors::default();
        errors.add("password", m);
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Html(pages::reset_password(ctx, form.token, errors)),
        )
            .into_response());
    }
    let password_hash = state.hasher.hash(&form.password).await?;
    if !db::use_email_token(&state.db, &hash, now).await? {
        return Ok(link_expired(
            ctx,
            "Password reset",
            ("/password/forgot", "Send a new link"),
        ));
    }
    db::set_password(&state.db, &user.id, &password_hash, now).await?;
    db::delete_user_sessions(&state.db, &user.id).await?;
    // The link reached the mailbox: the address is confirmed too.
    db::mark_verified(&state.db, &user.id, now).await?;
    tracing::info!(user_id = %user.id, "password reset");
    Ok(Redirect::to("/login?notice=password-reset").into_response())
}

async fn verify_email(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(q): Query<TokenQuery>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let hash = token_hash(&q.token);
    let ctx = ctx(
        &state,
        &visitor,
        "Confirm your email",
        "verify-email",
        None,
        None,
    )
    .await?;
    let Some(user_id) = db::email_token_user(&state.db, &hash, TokenPurpose::Verify, now).await?
    else {
        let retry = if visitor.user.is_some() {
            ("/account", "Send a new link")
        } else {
            ("/login", "Log in to send a new link")
        };
        return Ok(link_expired(ctx, "Confirmation", retry));
    };
    db::use_email_token(&state.db, &hash, now).await?;
    db::mark_verified(&state.db, &user_id, now).await?;
    if visitor.user.is_some() {
        return Ok(Redirect::to("/account?notice=verified").into_response());
    }
    Ok(Html(message(
        ctx,
        "Email confirmed",
        "Thank you, your email address is confirmed.".into(),
        Some(("/login".into(), "Log in")),
    ))
    .into_response())
}
