//! RFC 9457 problem details: every error of the API is an `application/problem+json` body
//! with a stable snake_case `code` (clients branch on it), the HTTP `status`, a `title`
//! for the code and a `detail` for this occurrence, and the request's `request_id`.
//!
//! `type` is `<public_url>/docs/api#problem-<code>`: the API reference page, which lists
//! every code. A handler returns a [`Problem`]; its response carries the problem as an
//! extension and [`super::finish`] renders the body, adding the request id and the base URL.
//! Errors that axum produces itself (unknown route, wrong method, a body it cannot parse)
//! are turned into problems there too, so nothing under `/api/v1` answers otherwise.

use std::borrow::Cow;

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::ToSchema;

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every code the API answers with, its status and its title (the reference page lists
/// them; the codes never change meaning).
pub const CODES: &[(&str, u16, &str)] = &[
    ("invalid_request", 400, "The request is malformed"),
    ("invalid_json", 400, "The body is not valid JSON"),
    (
        "invalid_cursor",
        400,
        "The cursor is not one this API gave out",
    ),
    ("invalid_query", 400, "A query parameter is invalid"),
    (
        "invalid_idempotency_key",
        400,
        "The Idempotency-Key header is invalid",
    ),
    ("unauthorized", 401, "A valid API key is needed"),
    ("forbidden", 403, "Not allowed"),
    ("read_only_key", 403, "This API key may only read"),
    (
        "reseller_only",
        403,
        "Only a reseller (or admin) key may do this",
    ),
    ("not_found", 404, "Not found"),
    ("method_not_allowed", 405, "Method not allowed"),
    (
        "idempotency_request_in_progress",
        409,
        "A request with this Idempotency-Key is still in progress",
    ),
    ("domain_taken", 409, "The domain is already hosted here"),
    (
        "account_exists",
        409,
        "A chat account with this name exists",
    ),
    (
        "delivery_in_progress",
        409,
        "The delivery is being attempted right now",
    ),
    (
        "account_limit",
        409,
        "The plan's chat account limit is reached",
    ),
    ("domain_not_active", 409, "The domain is not active"),
    (
        "customer_not_empty",
        409,
        "The organisation has domains or customers",
    ),
    (
        "domain_state_conflict",
        409,
        "The domain's state does not allow this",
    ),
    (
        "account_refused",
        422,
        "The server refused the chat account",
    ),
    (
        "node_unavailable",
        503,
        "The server hosting the domain cannot be reached",
    ),
    ("dns_check_unavailable", 503, "DNS cannot be checked now"),
    ("billing_unavailable", 503, "Billing cannot be reached now"),
    (
        "precondition_failed",
        412,
        "The resource changed (If-Match does not match its ETag)",
    ),
    ("payload_too_large", 413, "The body is too large"),
    (
        "unsupported_media_type",
        415,
        "The body must be application/json",
    ),
    ("validation_failed", 422, "The request has invalid values"),
    (
        "idempotency_key_reused",
        422,
        "This Idempotency-Key was used for a different request",
    ),
    ("rate_limited", 429, "Too many requests"),
    ("internal_error", 500, "Something went wrong on our side"),
];

/// One invalid field of a request, in `errors` of a `validation_failed` problem.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FieldError {
    /// The field of the JSON body (`domain`, `plan_id`…).
    pub field: String,
    /// A stable code for this field's error (`invalid_domain`, `domain_reserved`…).
    pub code: String,
    pub message: String,
}

/// An RFC 9457 problem as the API sends it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemBody {
    /// `<panel>/docs/api#problem-<code>`: where the code is explained.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, snake_case; branch on this.
    pub code: String,
    /// The request's `x-request-id`, for support and the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Per-field errors of a `validation_failed` problem.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub errors: Vec<FieldError>,
}

/// An error answer of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: Cow<'static, str>,
    pub detail: String,
    pub errors: Vec<FieldError>,
    /// Seconds, for 429 (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 404: also what a key gets for what exists but is not its to see.
    pub fn not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "There is nothing here, or this API key has no access to it.",
        )
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn read_only() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "read_only_key",
            "This API key is read-only; create a read-write key to make changes.",
        )
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            errors,
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                detail,
            )
        }
    }

    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
            "If-Match does not match the resource's current ETag: fetch it again and retry.",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "The request could not be completed. Nothing was lost; try again in a moment.",
        )
    }

    /// The title of this problem's code.
    pub fn title(&self) -> &'static str {
        CODES
            .iter()
            .find(|(c, _, _)| *c == self.code)
            .map(|(_, _, t)| *t)
            .unwrap_or_else(|| self.status.canonical_reason().unwrap_or("Error"))
    }

    /// The body, with `type` under `base_url` (the panel's public URL, no trailing slash).
    pub fn body(&self, base_url: &str, request_id: Option<String>) -> ProblemBody {
        ProblemBody {
            kind: format!("{base_url}/docs/api#problem-{}", self.code),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.to_string(),
            request_id,
            errors: self.errors.clone(),
        }
    }

    /// The full response: status, `application/problem+json` body, `Retry-After`.
    pub fn render(&self, base_url: &str, request_id: Option<String>) -> Response {
        let body =
            serde_json::to_vec(&self.body(base_url, request_id)).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            body,
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rookery\""),
            );
        }
        response
    }
}

impl From<sqlx::Error> for Problem {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = format!("{e:#}"), "API request failed: database");
        Problem::internal()
    }
}

impl From<anyhow::Error> for Problem {
    fn from(e: anyhow::Error) -> Self {
        tracing::error!(error = format!("{e:#}"), "API request failed");
        Problem::internal()
    }
}

impl From<crate::error::AppError> for Problem {
    fn from(e: crate::error::AppError) -> Self {
        use crate::error::AppError;
        match e {
            AppError::NotFound => Problem::not_found(),
            AppError::Forbidden(why) => Problem::new(StatusCode::FORBIDDEN, "forbidden", why),
            AppError::BadRequest(why) => Problem::bad_request("invalid_request", why),
            AppError::Csrf => Problem::bad_request("invalid_request", "Refused."),
            AppError::Internal(e) => e.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        // A relative `type` until `finish` renders it again with the public URL and the
        // request id (it always does under /api/v1).
        let mut response = self.render("", None);
        response.extensions_mut().insert(self);
        response
    }
}

pub type ApiResult<T> = Result<T, Problem>;

/// `Json<T>` whose rejections are problems: no or another content type → 415, not JSON →
/// 400 `invalid_json`, JSON of the wrong shape → 422 `validation_failed`.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> Problem {
    match r {
        JsonRejection::MissingJsonContentType(_) => Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as JSON with Content-Type: application/json.",
        ),
        JsonRejection::JsonSyntaxError(e) => Problem::bad_request(
            "invalid_json",
            format!("The body is not valid JSON: {}", e.body_text()),
        ),
        JsonRejection::JsonDataError(e) => Problem {
            errors: vec![FieldError {
                field: "body".into(),
                code: "invalid_body".into(),
                message: e.body_text(),
            }],
            ..Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                format!(
                    "The body does not have the expected fields: {}",
                    e.body_text()
                ),
            )
        },
        JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The body is too large.",
            )
        }
        other => Problem::bad_request("invalid_request", other.body_text()),
    }
}

/// [`ApiJson`] for an optional body: a request without one (no `Content-Length` or 0, and
/// no chunked body) gets `T::default()`; a body is checked like [`ApiJson`]'s.
pub struct ApiJsonOrEmpty<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrEmpty<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let headers = req.headers();
        let length = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let chunked = headers.contains_key(axum::http::header::TRANSFER_ENCODING);
        if !chunked && length.unwrap_or(0) == 0 {
            return Ok(Self(T::default()));
        }
        ApiJson::<T>::from_request(req, state)
            .await
            .map(|ApiJson(v)| Self(v))
    }
}

/// `Query<T>` whose rejection is a 400 `invalid_query` problem.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(e) => Err(Problem::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// The code a status gets when axum (not a handler) produced the error.
pub fn code_for_status(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "unauthorized",
        404 => "not_found",
        405 => "method_not_allowed",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "validation_failed",
        429 => "rate_limited",
        s if s >= 500 => "internal_error",
        _ => "invalid_request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_renders_as_rfc_9457_with_its_code_and_request_id() {
        let p = Problem::not_found();
        let body =
            serde_json::to_value(p.body("https://panel.example", Some("rid-1".into()))).unwrap();
        assert_eq!(
            body["type"],
            "https://panel.example/docs/api#problem-not_found"
        );
        assert_eq!(body["status"], 404);
        assert_eq!(body["code"], "not_found");
        assert_eq!(body["title"], "Not found");
        assert_eq!(body["request_id"], "rid-1");
        assert!(body.get("errors").is_none());
    }

    #[test]
    fn a_problem_response_has_the_problem_media_type_and_bearer_challenge() {
        let r = Problem::unauthorized("no key").render("", None);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        assert!(
            r.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .starts_with("Bearer")
        );
        let mut limited = Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down");
        limited.retry_after = Some(7);
        assert_eq!(limited.render("", None).headers()[header::RETRY_AFTER], "7");
    }

    #[test]
    fn validation_problems_list_their_fields() {
        let p = Problem::validation(vec![FieldError {
            field: "domain".into(),
            code: "invalid_domain".into(),
            message: "Bad.".into(),
        }]);
        assert_eq!(p.status, 422);
        let body = serde_json::to_value(p.body("", None)).unwrap();
        assert_eq!(body["errors"][0]["code"], "invalid_domain");
        assert_eq!(body["detail"], "domain: Bad.");
    }

    /// Every code the panel's sources hand to `Problem::new` is in [`CODES`] (so it has a
    /// title and an anchor on the reference page).
    #[test]
    fn every_code_in_use_is_registered() {
        let re = regex_lite_codes();
        let mut missing = Vec::new();
        let mut dirs = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut seen = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for code in re(&text) {
                        seen += 1;
                        if !CODES.iter().any(|(c, _, _)| *c == code) {
                            missing.push(format!("{}: {code}", path.display()));
                        }
                    }
                }
            }
        }
        assert!(seen > 10, "the scan finds the codes in use");
        assert!(
            missing.is_empty(),
            "unregistered problem codes: {missing:?}"
        );
    }

    /// The string literal right after `Problem::new(<status>,` in `text`.
    fn regex_lite_codes() -> impl Fn(&str) -> Vec<String> {
        |text: &str| {
            let mut out = Vec::new();
            for (at, _) in text.match_indices("Problem::new(") {
                let rest = &text[at + "Problem::new(".len()..];
                let Some(comma) = rest.find(',') else {
                    continue;
                };
                let after = rest[comma + 1..].trim_start();
                if let Some(lit) = after.strip_prefix('"')
                    && let Some(end) = lit.find('"')
                {
                    out.push(lit[..end].to_string());
                }
            }
            out
        }
    }

    #[test]
    fn every_code_is_snake_case_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for (code, status, _) in CODES {
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
            assert!(seen.insert(*code), "{code} twice");
            assert!((400..600).contains(status));
        }
        for s in [400, 401, 404, 405, 413, 415, 422, 429, 500] {
            let code = code_for_status(StatusCode::from_u16(s).unwrap());
            assert!(CODES.iter().any(|(c, _, _)| *c == code), "{code}");
        }
    }
}
