//! CSRF protection for every state-changing form, in one middleware no handler can forget.
//!
//! Each browser gets a random `rookery_csrf` cookie (HttpOnly, SameSite=Lax). Forms carry
//! `csrf = HMAC-SHA256(key, cookie)`, which only a page the panel rendered for that browser
//! can know. Every POST (and PUT, PATCH, DELETE) with a form body must carry a matching
//! token, or it is refused before any handler runs. (The REST API authenticates with
//! bearer keys, not cookies, and is exempt.)

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderValue, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{clock::new_token, error::AppError, state::AppState};

pub const CSRF_COOKIE: &str = "rookery_csrf";
/// Forms are small; anything bigger is not a form of ours.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The browser's CSRF cookie, when the middleware had to make a new one for this request.
#[derive(Clone)]
struct FreshCookie(String);

/// The token for `cookie` under `key`.
pub fn token(key: &[u8; 32], cookie: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any size");
    mac.update(b"rookery-csrf:");
    mac.update(cookie.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The token to render into this request's forms.
pub fn token_for_request(parts: &Parts, state: &AppState) -> String {
    let cookie = parts
        .extensions
        .get::<FreshCookie>()
        .map(|c| c.0.clone())
        .or_else(|| {
            CookieJar::from_headers(&parts.headers)
                .get(CSRF_COOKIE)
                .map(|c| c.value().to_string())
        })
        .unwrap_or_default();
    token(&state.csrf_key, &cookie)
}

fn is_exempt(path: &str) -> bool {
    path.starts_with("/api/") || path.starts_with("/webhooks/")
}

/// Checks the token of state-changing requests; gives new browsers their cookie.
pub async fn middleware(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let cookie = CookieJar::from_headers(req.headers())
        .get(CSRF_COOKIE)
        .map(|c| c.value().to_string());
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if changes_state && !is_exempt(req.uri().path()) {
        let Some(cookie) = cookie.as_deref() else {
            return AppError::Csrf.into_response();
        };
        let (parts, body) = req.into_parts();
        let bytes = match to_bytes(body, MAX_FORM_BYTES).await {
            Ok(b) => b,
            Err(_) => return AppError::BadRequest("The form is too large.".into()).into_response(),
        };
        // A NUL in any field: no text here may hold one (PostgreSQL cannot store it).
        if url::form_urlencoded::parse(&bytes).any(|(k, v)| k.contains('\0') || v.contains('\0')) {
            return AppError::BadRequest(
                "The form holds a NUL character; remove it and send it again.".into(),
            )
            .into_response();
        }
        let sent = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        let expected = token(&state.csrf_key, cookie);
        let valid = sent.is_some_and(|s| s.as_bytes().ct_eq(expected.as_bytes()).into());
        if !valid {
            tracing::warn!(path = %parts.uri.path(), "refused a form without a valid CSRF token");
            return AppError::Csrf.into_response();
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    let fresh = cookie.is_none().then(new_token);
    if let Some(value) = &fresh {
        req.extensions_mut().insert(FreshCookie(value.clone()));
    }
    let mut response = next.run(req).await;
    if let Some(value) = fresh {
        let cookie = Cookie::build((CSRF_COOKIE, value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(state.settings.secure_cookies())
            .build();
        if let Ok(v) = HeaderValue::from_str(&cookie.to_string()) {
            response.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_depend_on_the_key_and_the_cookie() {
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        assert_eq!(token(&k1, "abc"), token(&k1, "abc"));
        assert_ne!(token(&k1, "abc"), token(&k1, "abd"));
        assert_ne!(token(&k1, "abc"), token(&k2, "abc"));
    }

    #[test]
    fn the_api_and_webhooks_are_exempt_but_forms_are_not() {
        assert!(is_exempt("/api/v1/domains"));
        assert!(is_exempt("/webhooks/stripe"));
        assert!(!is_exempt("/login"));
        assert!(!is_exempt("/o/x/team/invite"));
    }
}
