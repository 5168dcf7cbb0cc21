//! `Idempotency-Key` on POST: a client that retries a POST with the same key gets the first
//! answer again instead of a second domain or customer.
//!
//! The first request with a key claims `(API key, Idempotency-Key)` in `api_idempotency`
//! with the SHA-256 of its method, path, query and body, runs, and its response (status,
//! body (sealed, as it may hold a secret shown once), content type, location, ETag) is
//! kept for 24 hours. Then:
//! - same key, same request → the kept response, with `Idempotent-Replayed: true`;
//! - same key, another request → 422 `idempotency_key_reused`;
//! - same key while the first is still running → 409 `idempotency_request_in_progress`
//!   (a claim older than a minute with no answer is taken to be abandoned);
//! - a 5xx answer is not kept, so the client can retry with the same key.

use axum::{
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

use super::{auth::Principal, db, problem::Problem};
use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
/// Kept responses live this long.
pub const TTL_SECS: i64 = 24 * 3600;
/// A claim without an answer after this long was abandoned (the process died).
const ABANDONED_AFTER_SECS: i64 = 60;
/// Bodies of API requests and responses are small; bigger ones are refused.
const MAX_BODY: usize = 1024 * 1024;
/// Response headers a replay repeats.
const KEPT_HEADERS: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::ETAG];

/// What identifies a request for idempotency: method, path with query, body.
pub fn request_hash(method: &Method, path_and_query: &str, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path_and_query.as_bytes());
    h.update(b"\n");
    h.update(body);
    hex::encode(h.finalize())
}

/// A usable `Idempotency-Key`: 1 to 255 visible ASCII characters.
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn middleware(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw) = req.headers().get(HEADER) else {
        return next.run(req).await;
    };
    let Some(idem) = raw.to_str().ok().filter(|k| valid_key(k)).map(String::from) else {
        return Problem::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible ASCII characters.",
        )
        .into_response();
    };
    // Without a key the handler answers 401; nothing to keep.
    let Some(principal) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "The body is too large.",
        )
        .into_response();
    };
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let hash = request_hash(&parts.method, target, &bytes);
    match claim(&state, &principal.key_id, &idem, &hash).await {
        Ok(None) => {}
        Ok(Some(response)) => return response,
        Err(p) => return p.into_response(),
    }
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let (mut parts, body) = response.into_parts();
    let bytes = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "reading an API response failed");
            let _ = db::release_idempotency(&state.db, &principal.key_id, &idem).await;
            return Problem::internal().into_response();
        }
    };
    let kept = if parts.status.is_server_error() {
        db::release_idempotency(&state.db, &principal.key_id, &idem).await
    } else {
        db::store_idempotent_response(
            &state.db,
            &principal.key_id,
            &idem,
            parts.status.as_u16(),
            &kept_headers(&parts.headers),
            // Sealed: an answer may carry a secret shown once (a made-up password).
            &state.sealer.seal(
                &body_context(&principal.key_id, &idem),
                &String::from_utf8_lossy(&bytes),
            ),
        )
        .await
    };
    if let Err(e) = kept {
        tracing::error!(error = %e, "keeping an idempotent response failed");
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(bytes))
}

/// Claims the key for this request; `Ok(Some(response))` when the answer is already
/// known (a replay, a conflict, one in progress).
async fn claim(
    state: &AppState,
    key_id: &str,
    idem: &str,
    hash: &str,
) -> Result<Option<Response>, Problem> {
    for _ in 0..3 {
        let now = state.clock.now();
        let Some(stored) = db::claim_idempotency(&state.db, key_id, idem, hash, now).await? else {
            return Ok(None);
        };
        let abandoned = stored.status.is_none() && now - stored.created_at > ABANDONED_AFTER_SECS;
        if stored.created_at <= now - TTL_SECS || abandoned {
            db::release_idempotency(&state.db, key_id, idem).await?;
            continue;
        }
        if stored.request_hash != hash {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "This Idempotency-Key was already used for a different request (method, path or body); use a new key.",
            ));
        }
        let Some(status) = stored.status else {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "idempotency_request_in_progress",
                "A request with this Idempotency-Key is still in progress; retry in a moment.",
            ));
        };
        let body = match stored.body.as_deref() {
            None => None,
            Some(sealed) => Some(
                state
                    .sealer
                    .open(&body_context(key_id, idem), sealed)
                    .map_err(|e| {
                        tracing::error!(error = %e, "a kept idempotent answer cannot be opened");
                        Problem::internal()
                    })?,
            ),
        };
        return Ok(Some(replay(status, stored.headers.as_deref(), body)));
    }
    Err(Problem::new(
        StatusCode::CONFLICT,
        "idempotency_request_in_progress",
        "A request with this Idempotency-Key is still in progress; retry in a moment.",
    ))
}

/// What a kept answer is sealed against: its key and Idempotency-Key.
fn body_context(key_id: &str, idem: &str) -> String {
    format!("idempotent-answer:{key_id}:{idem}")
}

fn kept_headers(headers: &HeaderMap) -> String {
    let map: serde_json::Map<String, serde_json::Value> = KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let v = headers.get(name)?.to_str().ok()?;
            Some((name.as_str().to_string(), v.into()))
        })
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn replay(status: u16, headers: Option<&str>, body: Option<String>) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        body.unwrap_or_default(),
    )
        .into_response();
    let h = response.headers_mut();
    h.remove(header::CONTENT_TYPE);
    if let Some(Ok(serde_json::Value::Object(map))) = headers.map(serde_json::from_str) {
        for (name, value) in map {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(name.as_bytes()),
                value.as_str().map(HeaderValue::from_str),
            ) {
                h.insert(name, value);
            }
        }
    }
    h.insert(
        HeaderName::from_static("idempotent-replayed"),
        HeaderValue::from_static("true"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_covers_method_path_and_body() {
        let a = request_hash(
            &Method::POST,
            "/api/v1/domains",
            b"{\"domain\":\"a.example\"}",
        );
        assert_eq!(
            a,
            request_hash(
                &Method::POST,
                "/api/v1/domains",
                b"{\"domain\":\"a.example\"}"
            )
        );
        assert_ne!(
            a,
            request_hash(
                &Method::POST,
                "/api/v1/domains",
                b"{\"domain\":\"b.example\"}"
            )
        );
        assert_ne!(
            a,
            request_hash(
                &Method::POST,
                "/api/v1/customers",
                b"{\"domain\":\"a.example\"}"
            )
        );
        assert_ne!(
            a,
            request_hash(
                &Method::PUT,
                "/api/v1/domains",
                b"{\"domain\":\"a.example\"}"
            )
        );
        assert_ne!(
            a,
            request_hash(
                &Method::POST,
                "/api/v1/domains?x=1",
                b"{\"domain\":\"a.example\"}"
            )
        );
    }

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(valid_key("3f1c-retry-1"));
        assert!(!valid_key(""));
        assert!(!valid_key("with space"));
        assert!(!valid_key(&"x".repeat(256)));
    }

    #[test]
    fn a_replay_repeats_the_kept_headers_and_says_so() {
        let headers = r#"{"content-type":"application/json","location":"/api/v1/domains/1"}"#;
        let r = replay(201, Some(headers), Some("{}".into()));
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.headers()["location"], "/api/v1/domains/1");
        assert_eq!(r.headers()["idempotent-replayed"], "true");
    }
}
