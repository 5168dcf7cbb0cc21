//! Browser sessions: a random token in an HttpOnly, SameSite=Lax cookie (Secure behind
//! https), only its hash in the database; expired after inactivity and after an absolute
//! lifetime; replaced by a new one at every log-in.
//!
//! The [`Visitor`] extractor tells a handler who is asking (maybe nobody) and gives the
//! CSRF token for its forms; [`SignedIn`] and [`Admin`] insist on a person.

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    http::{HeaderMap, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};

use super::{
    csrf,
    db::{self, User},
};
use crate::{
    clock::{new_token, token_hash},
    error::AppError,
    state::AppState,
};

pub const SESSION_COOKIE: &str = "rookery_session";

/// Who sent the request, as far as the session cookie tells.
#[derive(Clone, Debug)]
pub struct Visitor {
    pub user: Option<User>,
    /// The hash of the current session, to end it at log-out.
    pub session_hash: Option<String>,
    /// The token to put in this page's forms.
    pub csrf: String,
    /// The client's address, for rate limits and the session record.
    pub ip: String,
    pub user_agent: String,
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let jar = CookieJar::from_headers(&parts.headers);
        let csrf = csrf::token_for_request(parts, state);
        let ip = client_ip(parts, state.settings.behind_proxy);
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let mut visitor = Visitor {
            user: None,
            session_hash: None,
            csrf,
            ip,
            user_agent,
        };
        if let Some(cookie) = jar.get(SESSION_COOKIE) {
            let hash = token_hash(cookie.value());
            let now = state.clock.now();
            if let Some((user, last_seen)) = db::live_session(
                &state.db,
                &hash,
                now,
                state.settings.session.idle_timeout_secs,
            )
            .await?
            {
                // Refresh the inactivity clock at most once a minute: one write per page
                // view would be wasted work.
                if now - last_seen >= 60 {
                    db::touch_session(&state.db, &hash, now).await?;
                }
                visitor.user = Some(user);
                visitor.session_hash = Some(hash);
            }
        }
        Ok(visitor)
    }
}

/// A visitor with a session. Without one, the browser is sent to log in and come back.
#[derive(Clone, Debug)]
pub struct SignedIn {
    pub user: User,
    pub visitor: Visitor,
}

pub struct LoginRedirect(String);

impl IntoResponse for LoginRedirect {
    fn into_response(self) -> Response {
        Redirect::to(&self.0).into_response()
    }
}

impl From<AppError> for LoginRedirectOr {
    fn from(e: AppError) -> Self {
        LoginRedirectOr::Error(e)
    }
}

/// What [`SignedIn`] answers when it cannot give a person.
pub enum LoginRedirectOr {
    Login(LoginRedirect),
    Error(AppError),
}

impl IntoResponse for LoginRedirectOr {
    fn into_response(self) -> Response {
        match self {
            LoginRedirectOr::Login(r) => r.into_response(),
            LoginRedirectOr::Error(e) => e.into_response(),
        }
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = LoginRedirectOr;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, LoginRedirectOr> {
        let visitor = Visitor::from_request_parts(parts, state).await?;
        match visitor.user.clone() {
            Some(user) => Ok(SignedIn { user, visitor }),
            None => {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str())
                    .unwrap_or("/");
                let target = format!(
                    "/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                Err(LoginRedirectOr::Login(LoginRedirect(target)))
            }
        }
    }
}

impl OptionalFromRequestParts<AppState> for SignedIn {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, AppError> {
        let visitor = Visitor::from_request_parts(parts, state).await?;
        Ok(visitor.user.clone().map(|user| SignedIn { user, visitor }))
    }
}

/// A signed-in platform admin. Anyone else gets a 404: admin pages do not advertise.
#[derive(Clone, Debug)]
pub struct Admin(pub SignedIn);

impl FromRequestParts<AppState> for Admin {
    type Rejection = LoginRedirectOr;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, LoginRedirectOr> {
        let signed_in =
            <SignedIn as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        if signed_in.user.is_admin {
            Ok(Admin(signed_in))
        } else {
            Err(LoginRedirectOr::Error(AppError::NotFound))
        }
    }
}

/// Starts a new session for `user_id` and returns the jar with its cookie. Any session the
/// browser had is ended first, so a session id planted before log-in is worthless.
pub async fn start(
    state: &AppState,
    jar: CookieJar,
    visitor: &Visitor,
    user_id: &str,
) -> Result<CookieJar, AppError> {
    if let Some(old) = &visitor.session_hash {
        db::delete_session(&state.db, old).await?;
    }
    let token = new_token();
    let now = state.clock.now();
    db::insert_session(
        &state.db,
        db::NewSession {
            id_hash: &token_hash(&token),
            user_id,
            expires_at: now + state.settings.session.absolute_timeout_secs,
            ip: &visitor.ip,
            user_agent: &visitor.user_agent,
        },
        now,
    )
    .await?;
    let cookie = Cookie::build((SESSION_COOKIE, token))
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.settings.secure_cookies())
        .max_age(time::Duration::seconds(
            state.settings.session.absolute_timeout_secs,
        ))
        .build();
    Ok(jar.add(cookie))
}

/// Ends the visitor's session and clears its cookie.
pub async fn end(
    state: &AppState,
    jar: CookieJar,
    visitor: &Visitor,
) -> Result<CookieJar, AppError> {
    if let Some(hash) = &visitor.session_hash {
        db::delete_session(&state.db, hash).await?;
    }
    Ok(jar.remove(Cookie::build(SESSION_COOKIE).path("/")))
}

/// The client's address: the socket's peer, or behind a trusted proxy the last
/// `X-Forwarded-For` hop (the one the proxy itself added).
pub fn client_ip(parts: &Parts, behind_proxy: bool) -> String {
    if behind_proxy && let Some(ip) = forwarded_for(&parts.headers) {
        return ip;
    }
    parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("x-forwarded-for")?.to_str().ok()?;
    let last = value.rsplit(',').next()?.trim();
    last.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}
