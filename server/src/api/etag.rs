//! ETags and `If-Match`: a resource's ETag is a strong tag over its JSON representation
//! (the first 128 bits of its SHA-256), sent on GET and after every change. An update or
//! state change sent with `If-Match` applies only if the tag still matches (`*` matches
//! any existing resource); otherwise 412 `precondition_failed`. Without `If-Match` the
//! change applies unconditionally.

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::problem::{ApiResult, Problem};

/// The strong ETag of a representation, quoted: `"3f…"`.
pub fn of<T: Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&json);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Checks `If-Match` against the current ETag.
pub fn check_if_match(headers: &HeaderMap, current: &str) -> ApiResult<()> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or_default();
    // Strong comparison (RFC 9110 13.1.1): a weak tag never matches.
    let matched = text
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag == current);
    if matched {
        Ok(())
    } else {
        Err(Problem::precondition_failed())
    }
}

/// Whether the request is conditional (`If-Match`): its write must then also check that
/// nothing changed between the check and the write, and answer [`changed_meanwhile`].
pub fn conditional(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_MATCH)
}

/// The answer when the resource changed after `If-Match` was checked: as if it had not
/// matched (412).
pub fn changed_meanwhile() -> Problem {
    Problem::precondition_failed()
}

/// A JSON answer with the representation's ETag.
pub fn with_etag<T: Serialize>(status: StatusCode, value: T) -> Response {
    let tag = of(&value);
    let mut response = (status, Json(value)).into_response();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn if_match(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn the_etag_follows_the_representation() {
        let a = of(&serde_json::json!({"name": "a"}));
        assert_eq!(a, of(&serde_json::json!({"name": "a"})));
        assert_ne!(a, of(&serde_json::json!({"name": "b"})));
        assert!(a.starts_with('"') && a.ends_with('"') && a.len() == 34);
    }

    #[test]
    fn if_match_takes_the_current_tag_a_list_or_a_star_and_nothing_else() {
        let tag = of(&1);
        assert!(check_if_match(&HeaderMap::new(), &tag).is_ok());
        assert!(check_if_match(&if_match(&tag), &tag).is_ok());
        assert!(check_if_match(&if_match(&format!("\"x\", {tag}")), &tag).is_ok());
        assert!(check_if_match(&if_match("*"), &tag).is_ok());
        assert_eq!(
            check_if_match(&if_match("\"old\""), &tag)
                .unwrap_err()
                .status,
            412
        );
        assert!(check_if_match(&if_match(&format!("W/{tag}")), &tag).is_err());
    }
}
