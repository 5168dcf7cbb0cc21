//! Who is asking: the API key in `Authorization: Bearer rk_…` becomes a [`Principal`], and
//! [`Principal::org`] decides which organisations it may act on.
//!
//! [`authenticate`] runs before every handler: a header that is not a live key (unknown,
//! revoked, expired, malformed) is a 401 with `WWW-Authenticate: Bearer`; a request
//! without one goes on anonymously (the OpenAPI document is public) and a handler asking
//! for a [`Principal`] answers 401. It also applies the rate limit and sets the
//! `RateLimit-*` headers on every response.
//!
//! Visibility: a customer's key sees its own organisation; a reseller's key its own and its
//! customers' (`parent_id` = the reseller); an admin key everything. What a key may not see
//! is a 404, exactly like what does not exist. Read-only keys get 403 on every write.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{HeaderName, HeaderValue, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    db,
    keys::{self, Scope},
    problem::{ApiResult, Problem},
    ratelimit::RateLimiter,
};
use crate::{
    orgs::db::{Org, OrgId},
    state::AppState,
};

/// What kind of organisation a key belongs to, decided at each request (an admin can make
/// an organisation a reseller at any time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Admin,
    Reseller,
    Customer,
}

/// The API key behind a request.
#[derive(Clone, Debug)]
pub struct Principal {
    pub key_id: String,
    /// None for admin keys.
    pub org_id: Option<OrgId>,
    pub kind: Kind,
    pub read_only: bool,
}

impl Principal {
    /// 403 for read-only keys: call before any change.
    pub fn require_write(&self) -> ApiResult<()> {
        if self.read_only {
            Err(Problem::read_only())
        } else {
            Ok(())
        }
    }

    /// Whether this key may act on `org` (pure: the rule itself).
    pub fn may_act_on(&self, org: &Org) -> bool {
        match (self.kind, &self.org_id) {
            (Kind::Admin, _) => true,
            (Kind::Customer, Some(own)) => org.id == *own,
            (Kind::Reseller, Some(own)) => org.id == *own || org.parent_id.as_ref() == Some(own),
            (_, None) => false,
        }
    }

    /// The organisation `id` if this key may act on it; otherwise the 404 of what does
    /// not exist.
    pub async fn org(&self, state: &AppState, id: &str) -> ApiResult<Org> {
        if !plausible_id(id) {
            return Err(Problem::not_found());
        }
        match crate::orgs::db::org_by_id(&state.db, &OrgId(id.to_string())).await? {
            Some(org) if self.may_act_on(&org) => Ok(org),
            _ => Err(Problem::not_found()),
        }
    }
}

/// Whether `id` can be one of our ids (UUIDs: letters, digits, hyphens). Anything else is
/// not looked up at all (PostgreSQL refuses text with NUL bytes, for one).
pub fn plausible_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Problem> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Problem::unauthorized("Send an API key: Authorization: Bearer rk_…"))
    }
}

/// Writes `last_used_at` at most this often per key.
const TOUCH_EVERY_SECS: i64 = 60;

/// Resolves the key, applies the rate limit, sets the `RateLimit-*` headers.
pub async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let limiter = req.extensions().get::<Arc<RateLimiter>>().cloned();
    let address = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let resolved = match req.headers().get(header::AUTHORIZATION) {
        None => Ok(None),
        Some(value) => resolve(&state, value).await.map(Some),
    };
    let who = match &resolved {
        Ok(Some(p)) => format!("key:{}", p.key_id),
        _ => format!("ip:{address}"),
    };
    let decision = limiter.map(|l| {
        l.check(
            &who,
            state.settings.api.rate_limit_per_minute,
            state.clock.now(),
        )
    });
    let mut response = match (resolved, decision) {
        (_, Some(d)) if !d.allowed => {
            let mut p = Problem::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "This key may make {} requests a minute; try again in {} s.",
                    d.limit, d.reset_secs
                ),
            );
            p.retry_after = Some(d.reset_secs);
            p.into_response()
        }
        (Err(problem), _) => problem.into_response(),
        (Ok(principal), _) => {
            if let Some(p) = principal {
                req.extensions_mut().insert(p);
            }
            next.run(req).await
        }
    };
    if let Some(d) = decision {
        let h = response.headers_mut();
        h.insert(
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(d.limit),
        );
        h.insert(
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(d.remaining),
        );
        h.insert(
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(d.reset_secs),
        );
    }
    response
}

/// The principal of an `Authorization` header, or the 401 saying why not.
async fn resolve(state: &AppState, value: &HeaderValue) -> ApiResult<Principal> {
    let text = value.to_str().unwrap_or_default().trim();
    let token = match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            return Err(Problem::unauthorized(
                "Use the Bearer scheme: Authorization: Bearer rk_…",
            ));
        }
    };
    let invalid = || Problem::unauthorized("This API key is not valid.");
    let prefix = keys::parse(token).ok_or_else(invalid)?;
    let key = db::key_by_prefix(&state.db, prefix)
        .await?
        .ok_or_else(invalid)?;
    if !keys::matches(token, &key.key_hash) {
        return Err(invalid());
    }
    let now = state.clock.now();
    match key.status(now) {
        "revoked" => return Err(Problem::unauthorized("This API key was revoked.")),
        "expired" => return Err(Problem::unauthorized("This API key has expired.")),
        _ => {}
    }
    if key
        .last_used_at
        .is_none_or(|at| now - at >= TOUCH_EVERY_SECS)
    {
        db::touch_key(&state.db, &key.id, now).await?;
    }
    let kind = match (&key.org_id, key.org_is_reseller) {
        (None, _) => Kind::Admin,
        (Some(_), true) => Kind::Reseller,
        (Some(_), false) => Kind::Customer,
    };
    tracing::debug!(key = key.prefix, "API request authenticated");
    Ok(Principal {
        key_id: key.id,
        org_id: key.org_id,
        kind,
        read_only: key.scope == Scope::Read,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(id: &str, parent: Option<&str>) -> Org {
        Org {
            id: OrgId(id.into()),
            name: id.into(),
            is_reseller: false,
            parent_id: parent.map(|p| OrgId(p.into())),
        }
    }

    fn key(kind: Kind, org: Option<&str>) -> Principal {
        Principal {
            key_id: "k".into(),
            org_id: org.map(|o| OrgId(o.into())),
            kind,
            read_only: false,
        }
    }

    #[test]
    fn only_id_shaped_strings_are_looked_up() {
        assert!(plausible_id("0193a3c2-7b1e-7000-8000-000000000001"));
        for bad in ["", "a\0b", "x y", "../etc", &"a".repeat(65)] {
            assert!(!plausible_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_customer_key_acts_on_its_own_organisation_only() {
        let k = key(Kind::Customer, Some("a"));
        assert!(k.may_act_on(&org("a", None)));
        assert!(!k.may_act_on(&org("b", None)));
        assert!(!k.may_act_on(&org("c", Some("a"))));
    }

    #[test]
    fn a_reseller_key_acts_on_itself_and_its_customers_not_a_siblings() {
        let k = key(Kind::Reseller, Some("r1"));
        assert!(k.may_act_on(&org("r1", None)));
        assert!(k.may_act_on(&org("c1", Some("r1"))));
        assert!(!k.may_act_on(&org("c2", Some("r2"))));
        assert!(!k.may_act_on(&org("r2", None)));
    }

    #[test]
    fn an_admin_key_acts_on_everything_and_read_only_keys_cannot_write() {
        let k = key(Kind::Admin, None);
        assert!(k.may_act_on(&org("x", Some("y"))));
        assert!(k.require_write().is_ok());
        let ro = Principal {
            read_only: true,
            ..key(Kind::Customer, Some("a"))
        };
        assert_eq!(ro.require_write().unwrap_err().status, 403);
    }
}
