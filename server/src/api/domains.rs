//! `/api/v1/domains`: list (a reseller's or admin's key across organisations, or filtered
//! by `org_id`), order (the browser's order form's code path: [`domains::place_order`]),
//! get (state, node, DNS records), update (its settings: in-band registration, federation) and uptime
//! (the prober's figures, as numbers).
//!
//! Its life, through the state machine ([`crate::domains::state`]) as billing drives it:
//! admin keys suspend and resume (like a grace period running out, and a later payment;
//! the suspension is marked as the admin's, so a payment does not lift it), and the owning
//! organisation deletes (like a cancelled subscription: suspended at once, data kept and
//! downloadable for `stripe.retention_days`, then removed; a Stripe subscription is
//! cancelled first). A transition the machine refuses is a 409 `domain_state_conflict`.
//!
//! A domain's chat accounts, usage, DNS and incidents are in [`super::accounts`],
//! [`super::usage`], [`super::dns`] and [`super::incidents`].

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    auth::{Kind, Principal},
    etag,
    pagination::{self, PageQuery},
    problem::{ApiJson, ApiJsonOrEmpty, ApiQuery, ApiResult, FieldError, Problem},
};
use crate::{
    domains::{
        self,
        db::{self as domains_db, DomainRow, OrgScope},
        federation::{self, FederationMode},
    },
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains", get(list_domains).post(create_domain))
        .route(
            "/domains/{domain_id}",
            get(get_domain).patch(update_domain).delete(delete_domain),
        )
        .route("/domains/{domain_id}/uptime", get(get_uptime))
        .route("/domains/{domain_id}/suspend", post(suspend_domain))
        .route("/domains/{domain_id}/resume", post(resume_domain))
        .route("/domains/{domain_id}/checkout", post(start_checkout))
        .route("/domains/{domain_id}/plan", post(change_plan))
}

/// Where a domain is in its life: `pending_payment → provisioning → active ⇄ suspended →
/// deleting → deleted`.
#[derive(Clone, Copy, Debug, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DomainStateName {
    PendingPayment,
    Provisioning,
    Active,
    Suspended,
    Deleting,
    Deleted,
}

impl DomainStateName {
    fn of(s: &str) -> Self {
        match s {
            "pending_payment" => Self::PendingPayment,
            "provisioning" => Self::Provisioning,
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "deleting" => Self::Deleting,
            _ => Self::Deleted,
        }
    }
}

/// The node serving a domain: where its clients connect.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DomainNode {
    pub name: String,
    pub host: String,
    pub c2s_port: i64,
}

/// A DNS record the customer creates in their zone.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DnsRecord {
    /// Fully qualified, with the trailing dot.
    pub name: String,
    /// `SRV` or `CNAME`.
    #[serde(rename = "type")]
    pub kind: String,
    /// As zone files write it: `0 5 5222 target.`.
    pub value: String,
    /// A suggestion; any TTL works.
    pub ttl: u32,
    pub purpose: String,
}

impl From<&crate::dns::ExpectedRecord> for DnsRecord {
    fn from(r: &crate::dns::ExpectedRecord) -> Self {
        DnsRecord {
            name: r.owner.clone(),
            kind: r.kind().to_string(),
            value: r.value(),
            ttl: r.ttl,
            purpose: r.why.clone(),
        }
    }
}

/// A customer domain (an XMPP virtual host).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Domain {
    pub id: String,
    pub org_id: String,
    /// Normalised: lower case, Unicode labels, no trailing dot.
    pub domain: String,
    pub state: DomainStateName,
    pub plan_id: Option<String>,
    /// Null until placed.
    pub node: Option<DomainNode>,
    /// Why it is still waiting (provisioning), for people.
    pub waiting_reason: Option<String>,
    /// Unix seconds, UTC.
    pub created_at: i64,
    pub active_at: Option<i64>,
    /// In `pending_payment`: the panel page where the organisation pays (Stripe Checkout).
    pub payment_url: Option<String>,
    /// Suspended by a platform admin (a payment does not resume it).
    pub suspended_by_admin: bool,
    /// People may create chat accounts on the domain from their XMPP app (XEP-0077
    /// in-band registration), within the plan's account limit. Off unless switched on.
    pub registration: bool,
    /// Whom the people on the domain talk with: the whole XMPP network (`open`, the
    /// default), only the listed domains (`allowlist`) or no other domain (`closed`).
    pub federation: DomainFederation,
    /// After a deletion or a cancelled subscription: when its data is removed (Unix
    /// seconds). Until then `export_url` downloads it.
    pub delete_after: Option<i64>,
    /// Where the organisation downloads the domain's data while it waits for deletion.
    pub export_url: Option<String>,
    /// The records to create in DNS (single-domain answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns_records: Option<Vec<DnsRecord>>,
}

/// A domain's federation, as the settings page's "Talking with other domains" sets it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DomainFederation {
    pub mode: FederationMode,
    /// Normalised domain names, sorted. Used only with `allowlist`; kept while another
    /// mode is chosen (switching back finds it). Exact names: `example.org` does not cover
    /// `conference.example.org`.
    pub allow: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct DomainPage {
    pub items: Vec<Domain>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
}

fn representation(state: &AppState, d: &DomainRow, with_dns: bool) -> Domain {
    let node = match (&d.node_name, &d.node_host) {
        (Some(name), Some(host)) => Some(DomainNode {
            name: name.clone(),
            host: host.clone(),
            c2s_port: d.node_c2s_port.unwrap_or(5222),
        }),
        _ => None,
    };
    let dns_records = with_dns.then(|| {
        crate::dns::expected_records(&d.domain, &state.settings.dns)
            .map(|dns| dns.records.iter().map(DnsRecord::from).collect())
            .unwrap_or_default()
    });
    Domain {
        id: d.id.clone(),
        org_id: d.org_id.clone(),
        domain: d.domain.clone(),
        state: DomainStateName::of(&d.state),
        plan_id: d.plan_id.clone(),
        node,
        waiting_reason: d.waiting_reason.clone(),
        created_at: d.created_at,
        active_at: d.active_at,
        payment_url: (d.state == "pending_payment").then(|| {
            format!(
                "{}/o/{}/domains/{}",
                state.settings.base_url(),
                d.org_id,
                d.id
            )
        }),
        suspended_by_admin: d.suspended_by_admin,
        registration: d.registration,
        federation: DomainFederation {
            mode: d.federation.mode,
            allow: d.federation.allow.clone(),
        },
        delete_after: d.delete_after,
        export_url: d
            .delete_after
            .filter(|_| d.applied_node_id.is_some())
            .map(|_| {
                format!(
                    "{}/o/{}/domains/{}/export",
                    state.settings.base_url(),
                    d.org_id,
                    d.id
                )
            }),
        dns_records,
    }
}

/// The domain `id` if the key may act on its organisation; else 404.
pub(super) async fn visible_domain(
    state: &AppState,
    who: &Principal,
    id: &str,
) -> ApiResult<DomainRow> {
    if !super::auth::plausible_id(id) {
        return Err(Problem::not_found());
    }
    let d = domains_db::get(&state.db, id)
        .await?
        .filter(|d| d.state != "deleted")
        .ok_or_else(Problem::not_found)?;
    who.org(state, &d.org_id).await?;
    Ok(d)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DomainFilter {
    /// Only this organisation's domains (one the key may act on).
    pub org_id: Option<String>,
}

/// List domains
///
/// A customer key lists its organisation's domains; a reseller key also its customers';
/// an admin key every domain. `org_id` narrows the list to one organisation.
#[utoipa::path(
    get,
    path = "/api/v1/domains",
    tag = "domains",
    operation_id = "list_domains",
    params(PageQuery, DomainFilter),
    responses((status = 200, description = "A page of domains, by id", body = DomainPage)),
)]
pub async fn list_domains(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<DomainFilter>,
) -> ApiResult<Json<DomainPage>> {
    let req = q.check()?;
    let filtered;
    let scope = match (&filter.org_id, who.kind, &who.org_id) {
        (Some(org), _, _) => {
            filtered = who.org(&state, org).await?;
            OrgScope::One(&filtered.id.0)
        }
        (None, Kind::Admin, _) => OrgScope::All,
        (None, Kind::Reseller, Some(own)) => OrgScope::WithCustomers(&own.0),
        (None, _, Some(own)) => OrgScope::One(&own.0),
        (None, _, None) => return Err(Problem::not_found()),
    };
    let rows = domains_db::page(
        &state.db,
        scope,
        req.after.as_deref(),
        i64::from(req.limit) + 1,
    )
    .await?;
    let (rows, next_cursor) = pagination::finish(rows, &req, |d| &d.id);
    Ok(Json(DomainPage {
        items: rows
            .iter()
            .map(|d| representation(&state, d, false))
            .collect(),
        next_cursor,
    }))
}

/// An order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDomain {
    /// The domain to host, e.g. `chat.example.com` (normalised with UTS-46).
    #[schema(example = "chat.example.com")]
    pub domain: String,
    /// One of the public plans (`GET /plans`); required when there are plans.
    pub plan_id: Option<String>,
    /// The organisation ordering; defaults to the key's own. Required for admin keys.
    pub org_id: Option<String>,
}

/// Order a domain
///
/// The same checks as the panel's order form. A free plan (or any plan while billing is
/// off) goes straight to `provisioning`; a paid one is `pending_payment` with the
/// `payment_url` where the organisation's members pay in the panel; `POST
/// /domains/{domain_id}/checkout` opens the Stripe Checkout page itself, for a payer
/// elsewhere. Send an `Idempotency-Key` to retry safely.
#[utoipa::path(
    post,
    path = "/api/v1/domains",
    tag = "domains",
    operation_id = "create_domain",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry of this POST return the first answer (24 hours)")),
    request_body(content = CreateDomain, content_type = "application/json"),
    responses(
        (status = 201, description = "Ordered", body = Domain, headers(
            ("Location" = String, description = "The new domain's URL"),
            ("ETag" = String, description = "The domain's current ETag"))),
        (status = 409, description = "`domain_taken`: already hosted here; `idempotency_request_in_progress`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`errors`: `invalid_domain`, `domain_reserved`, `unknown_plan`, `invalid_org`) or `idempotency_key_reused`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn create_domain(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateDomain>,
) -> ApiResult<Response> {
    who.require_write()?;
    let org = match (&body.org_id, &who.org_id) {
        (Some(org), _) => who.org(&state, org).await?,
        (None, Some(own)) => who.org(&state, &own.0).await?,
        (None, None) => {
            return Err(Problem::validation(vec![FieldError {
                field: "org_id".into(),
                code: "invalid_org".into(),
                message: "An admin key names the organisation that orders.".into(),
            }]));
        }
    };
    let plan = body.plan_id.as_deref().unwrap_or_default();
    match domains::place_order(&state, &org.id.0, &body.domain, plan).await? {
        Ok(d) => {
            let path = format!("/api/v1/domains/{}", d.id);
            let mut response =
                etag::with_etag(StatusCode::CREATED, representation(&state, &d, true));
            if let Ok(v) = HeaderValue::from_str(&path) {
                response.headers_mut().insert(header::LOCATION, v);
            }
            Ok(response)
        }
        Err(domains::OrderRefused(refused)) => {
            if let [(_, "domain_taken", message)] = refused.as_slice() {
                return Err(Problem::new(
                    StatusCode::CONFLICT,
                    "domain_taken",
                    message.clone(),
                ));
            }
            Err(Problem::validation(
                refused
                    .into_iter()
                    .map(|(field, code, message)| FieldError {
                        field: if field == "plan" { "plan_id" } else { field }.into(),
                        code: code.into(),
                        message,
                    })
                    .collect(),
            ))
        }
    }
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartCheckout {
    /// Where Stripe Checkout sends the payer after paying (an `https://` URL, e.g. on a
    /// reseller's own site). Default: the domain's page in the panel.
    #[schema(example = "https://reseller.example/thanks")]
    pub success_url: Option<String>,
    /// Where it sends a payer who goes back without paying. Default: the domain's page.
    pub cancel_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Checkout {
    pub domain_id: String,
    /// Stripe Checkout's page for the domain's first payment: send the payer there.
    pub url: String,
}

/// A return URL for Stripe Checkout: absolute `https://` (or `http://` where webhooks may
/// go to local addresses, for tests and private setups), at most 2,000 characters.
fn return_url(state: &AppState, field: &str, raw: &str) -> ApiResult<String> {
    let refuse = |message: &str| {
        Problem::validation(vec![FieldError {
            field: field.into(),
            code: "invalid_url".into(),
            message: message.into(),
        }])
    };
    let raw = raw.trim();
    if raw.len() > 2000 {
        return Err(refuse("Use a URL of at most 2,000 characters."));
    }
    let url = url::Url::parse(raw).map_err(|e| refuse(&format!("Not a URL: {e}.")))?;
    let http_ok = state.settings.alerts.webhook_allow_local;
    match url.scheme() {
        "https" if url.host().is_some() => Ok(url.to_string()),
        "http" if http_ok && url.host().is_some() => Ok(url.to_string()),
        _ => Err(refuse("Use an https:// URL.")),
    }
}

/// Start paying for a domain
///
/// For a domain in `pending_payment` (ordered on a paid plan): opens a Stripe Checkout
/// session for its plan and answers the session's URL, where the payer (say, a reseller's
/// customer) pays. Once Stripe confirms the payment, the domain goes on to `provisioning`
/// by itself. Each call opens a new session; send an `Idempotency-Key` to retry safely.
#[utoipa::path(
    post,
    path = "/api/v1/domains/{domain_id}/checkout",
    tag = "domains",
    operation_id = "start_checkout",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry of this POST return the first answer (24 hours)"),
    ),
    request_body(content = Option<StartCheckout>, content_type = "application/json", description = "Optional: where Stripe sends the payer back"),
    responses(
        (status = 201, description = "The Checkout page to send the payer to", body = Checkout),
        (status = 409, description = "`domain_state_conflict`: the domain is not waiting for its first payment", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`invalid_url`)", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`billing_unavailable`: Stripe could not be reached; nothing was charged", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn start_checkout(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
    ApiJsonOrEmpty(body): ApiJsonOrEmpty<StartCheckout>,
) -> ApiResult<Response> {
    who.require_write()?;
    let d = visible_domain(&state, &who, &domain_id).await?;
    let org = who.org(&state, &d.org_id).await?;
    let mut back = crate::billing::ReturnUrls::panel(&state, &d);
    if let Some(u) = &body.success_url {
        back.success = return_url(&state, "success_url", u)?;
    }
    if let Some(u) = &body.cancel_url {
        back.cancel = return_url(&state, "cancel_url", u)?;
    }
    if d.state != "pending_payment" {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "domain_state_conflict",
            format!(
                "The domain is {}, not waiting for its first payment.",
                d.state.replace('_', " ")
            ),
        ));
    }
    let payer = crate::billing::Payer {
        email: crate::alerts::db::owner_email(&state.db, &org.id).await?,
        org_id: org.id.0.clone(),
        org_name: org.name.clone(),
    };
    match crate::billing::start_checkout(&state, &payer, &d, &back).await {
        Ok(url) => Ok((
            StatusCode::CREATED,
            Json(Checkout {
                domain_id: d.id.clone(),
                url,
            }),
        )
            .into_response()),
        Err(e) => {
            tracing::error!(
                domain = d.domain,
                error = format!("{e:#}"),
                "starting a checkout through the API failed"
            );
            Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "billing_unavailable",
                "The payment page could not be opened just now. Nothing was charged; try again in a minute.",
            ))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePlan {
    /// The plan to move to (one of `GET /plans`).
    pub plan_id: String,
    /// For a move from a free plan to a paid one, which goes through Stripe Checkout:
    /// where Stripe sends the payer after paying. Default: the domain's page in the panel.
    pub success_url: Option<String>,
    /// Where it sends a payer who goes back without paying. Default: the domain's page.
    pub cancel_url: Option<String>,
}

/// What a plan change did.
#[derive(Clone, Copy, Debug, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PlanChangeOutcome {
    /// The domain is on the new plan; its server gets the new limits within seconds.
    Applied,
    /// Stripe took the new price and has not confirmed it yet: the plan follows with its
    /// confirmation.
    Pending,
    /// A free domain moves to a paid plan: send the payer to `checkout_url`; the plan
    /// changes once the payment arrives.
    Checkout,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanChange {
    pub domain_id: String,
    pub outcome: PlanChangeOutcome,
    /// With `checkout`: Stripe Checkout's page for the new plan.
    pub checkout_url: Option<String>,
}

/// Change a domain's plan
///
/// Moves the domain to another plan, as the domain page's "Change plan" form does: with
/// billing off or between free plans at once; between paid plans by changing the price of
/// the domain's Stripe subscription (prorated by Stripe); from paid to free by cancelling
/// the subscription; from free to paid through Stripe Checkout. A plan allowing fewer chat
/// accounts than the domain has is refused. Send an `Idempotency-Key` to retry safely.
#[utoipa::path(
    post,
    path = "/api/v1/domains/{domain_id}/plan",
    tag = "domains",
    operation_id = "change_plan",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry of this POST return the first answer (24 hours)"),
    ),
    request_body = ChangePlan,
    responses(
        (status = 200, description = "What the change did", body = PlanChange),
        (status = 409, description = "`domain_state_conflict`: the domain's state does not allow a plan change now, it is on this plan already, or it has more chat accounts than the plan allows", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`unknown_plan`, `invalid_url`)", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`billing_unavailable` or `node_unavailable`: nothing was changed", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn change_plan(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
    ApiJson(body): ApiJson<ChangePlan>,
) -> ApiResult<Json<PlanChange>> {
    use crate::billing::{ChangePlanError, PlanChanged};
    who.require_write()?;
    let d = visible_domain(&state, &who, &domain_id).await?;
    let org = who.org(&state, &d.org_id).await?;
    let mut back = crate::billing::ReturnUrls::panel(&state, &d);
    if let Some(u) = &body.success_url {
        back.success = return_url(&state, "success_url", u)?;
    }
    if let Some(u) = &body.cancel_url {
        back.cancel = return_url(&state, "cancel_url", u)?;
    }
    let payer = crate::billing::Payer {
        email: crate::alerts::db::owner_email(&state.db, &org.id).await?,
        org_id: org.id.0.clone(),
        org_name: org.name.clone(),
    };
    let conflict =
        |detail: String| Problem::new(StatusCode::CONFLICT, "domain_state_conflict", detail);
    let (outcome, checkout_url) =
        match crate::billing::change_plan(&state, &payer, &d, body.plan_id.trim(), &back).await {
            Ok(PlanChanged::Applied) => (PlanChangeOutcome::Applied, None),
            Ok(PlanChanged::Pending) => (PlanChangeOutcome::Pending, None),
            Ok(PlanChanged::Checkout(url)) => (PlanChangeOutcome::Checkout, Some(url)),
            Err(e @ ChangePlanError::UnknownPlan) => {
                return Err(Problem::validation(vec![FieldError {
                    field: "plan_id".into(),
                    code: "unknown_plan".into(),
                    message: e.to_string(),
                }]));
            }
            Err(
                e @ (ChangePlanError::SamePlan
                | ChangePlanError::NotNow(_)
                | ChangePlanError::TooManyAccounts { .. }),
            ) => return Err(conflict(e.to_string())),
            Err(e @ ChangePlanError::NodeDown) => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "node_unavailable",
                    e.to_string(),
                ));
            }
            Err(e @ ChangePlanError::Billing) => {
                return Err(Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "billing_unavailable",
                    e.to_string(),
                ));
            }
            Err(ChangePlanError::Internal(e)) => return Err(e.into()),
        };
    Ok(Json(PlanChange {
        domain_id: d.id.clone(),
        outcome,
        checkout_url,
    }))
}

/// Get a domain
#[utoipa::path(
    get,
    path = "/api/v1/domains/{domain_id}",
    tag = "domains",
    operation_id = "get_domain",
    params(("domain_id" = String, Path, description = "The domain's id")),
    responses((status = 200, description = "The domain, with its DNS records", body = Domain,
        headers(("ETag" = String, description = "The domain's current ETag")))),
)]
pub async fn get_domain(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
) -> ApiResult<Response> {
    let d = visible_domain(&state, &who, &domain_id).await?;
    Ok(etag::with_etag(
        StatusCode::OK,
        representation(&state, &d, true),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDomain {
    /// Let people create chat accounts from their XMPP app (XEP-0077), as the domain's
    /// settings page does.
    pub registration: Option<bool>,
    /// Whom the domain talks with; fields left out stay as they are.
    pub federation: Option<UpdateFederation>,
}

/// A change of a domain's federation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateFederation {
    pub mode: Option<FederationMode>,
    /// Domain names (normalised on the way in; repeats dropped; at most 100, not the
    /// domain itself). Replaces the stored list. `allowlist` needs at least one.
    pub allow: Option<Vec<String>>,
}

/// The federation a PATCH asks for, over the stored one; 422 `validation_failed` with the
/// field at fault under `federation.allow` (`invalid_domain`, `own_domain`,
/// `too_many_domains`, `federation_allow_empty`).
fn wanted_federation(
    d: &DomainRow,
    change: &UpdateFederation,
) -> Result<federation::Federation, Problem> {
    let mode = change.mode.unwrap_or(d.federation.mode);
    let allow = change.allow.as_ref().unwrap_or(&d.federation.allow);
    federation::check(
        &d.domain,
        mode,
        allow.iter().enumerate().map(|(i, s)| (i, s.as_str())),
    )
    .map_err(|e| {
        let field = match e.index() {
            Some(i) if change.allow.is_some() => format!("federation.allow[{i}]"),
            _ => "federation.allow".to_string(),
        };
        Problem::validation(vec![FieldError {
            field,
            code: e.code().into(),
            message: e.to_string(),
        }])
    })
}

/// Update a domain
///
/// Changes the domain's settings, as its settings page does; fields left out stay as they
/// are. The node serving the domain applies the change within seconds. Send `If-Match`
/// with the domain's ETag to change it only if nobody else did meanwhile.
#[utoipa::path(
    patch,
    path = "/api/v1/domains/{domain_id}",
    tag = "domains",
    operation_id = "update_domain",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    request_body(content = UpdateDomain, content_type = "application/json"),
    responses(
        (status = 200, description = "The domain, updated", body = Domain,
            headers(("ETag" = String, description = "The domain's new ETag"))),
        (status = 409, description = "`domain_state_conflict`: the domain is being deleted", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "`precondition_failed`: If-Match does not match", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`errors` under `federation.allow`: `invalid_domain`, `own_domain`, `too_many_domains`, `federation_allow_empty`; `invalid_body` for an unknown mode or field)", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn update_domain(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateDomain>,
) -> ApiResult<Response> {
    who.require_write()?;
    let d = visible_domain(&state, &who, &domain_id).await?;
    etag::check_if_match(&headers, &etag::of(&representation(&state, &d, true)))?;
    // Everything is checked before anything is stored.
    let federation = body
        .federation
        .as_ref()
        .map(|f| wanted_federation(&d, f))
        .transpose()?;
    if body.registration.is_none() && federation.is_none() {
        return Ok(etag::with_etag(
            StatusCode::OK,
            representation(&state, &d, true),
        ));
    }
    let org = crate::orgs::db::OrgId(d.org_id.clone());
    let now = state.clock.now();
    let mut details = Vec::new();
    if let Some(on) = body.registration {
        if !crate::domains::settings::store_registration(&state.db, &org, &d.id, on, now).await? {
            return Err(state_conflict(&d, "changed"));
        }
        details.push(if on {
            "in-band registration on".to_string()
        } else {
            "in-band registration off".to_string()
        });
    }
    if let Some(f) = &federation {
        if !crate::domains::settings::store_federation(&state.db, &org, &d.id, f, now).await? {
            return Err(state_conflict(&d, "changed"));
        }
        details.push(match f.mode {
            FederationMode::Allowlist => {
                format!("federation only with {}", f.allow.join(", "))
            }
            mode => format!("federation {}", mode.as_str()),
        });
    }
    changed(
        &state,
        &who,
        &d,
        "domain.update",
        &details.join("; "),
        StatusCode::OK,
    )
    .await
}

mod db {
    use rookery_common::db::Pool;

    /// Marks (or clears) a suspension as the admin's.
    #[tracing::instrument(skip_all)]
    pub async fn set_suspended_by_admin(db: &Pool, id: &str, on: bool) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE domains SET suspended_by_admin = $1 WHERE id = $2")
            .bind(i64::from(on))
            .bind(id)
            .execute(db)
            .await?;
        Ok(())
    }
}

/// The key as an actor of the audit log: `API key rk_1a2b3c4d "ops"`.
pub(super) async fn key_actor(state: &AppState, who: &Principal) -> ApiResult<String> {
    let key = super::db::keys_of(&state.db, who.org_id.as_ref())
        .await?
        .into_iter()
        .find(|k| k.id == who.key_id);
    Ok(match key {
        Some(k) => format!("API key {} \"{}\"", k.prefix, k.name),
        None => format!("API key {}", who.key_id),
    })
}

fn state_conflict(d: &DomainRow, what: &str) -> Problem {
    Problem::new(
        StatusCode::CONFLICT,
        "domain_state_conflict",
        format!("A domain that is {} cannot be {what}.", d.state),
    )
}

/// Moves the domain through its state machine; 409 when the machine refuses.
async fn step(
    state: &AppState,
    d: &DomainRow,
    event: crate::domains::state::Event,
    what: &str,
) -> ApiResult<()> {
    match domains_db::transition(&state.db, &d.id, event, state.clock.now()).await? {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(Problem::not_found()),
        Err(_) => Err(state_conflict(d, what)),
    }
}

/// Notes a change in the audit log with the key as the actor, wakes the reconciler, and
/// answers the domain as it is now.
async fn changed(
    state: &AppState,
    who: &Principal,
    d: &DomainRow,
    action: &str,
    details: &str,
    status: StatusCode,
) -> ApiResult<Response> {
    crate::nodes::db::audit(
        &state.db,
        None,
        &key_actor(state, who).await?,
        action,
        &d.domain,
        details,
        state.clock.now(),
    )
    .await?;
    tracing::info!(
        domain = d.domain,
        action,
        key = who.key_id,
        "domain changed through the API"
    );
    state.reconcile_now.notify_one();
    let now = domains_db::get(&state.db, &d.id)
        .await?
        .ok_or_else(Problem::not_found)?;
    Ok(etag::with_etag(status, representation(state, &now, true)))
}

/// The visible domain for an admin key (404 for every other key), after `If-Match`.
async fn for_admin(
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    id: &str,
) -> ApiResult<DomainRow> {
    if who.kind != Kind::Admin {
        return Err(Problem::not_found());
    }
    who.require_write()?;
    let d = visible_domain(state, who, id).await?;
    etag::check_if_match(headers, &etag::of(&representation(state, &d, true)))?;
    Ok(d)
}

/// Suspend a domain
///
/// Admin keys only (others get 404). Logins are refused, data is kept; a payment does not
/// lift it, `resume` does.
#[utoipa::path(
    post,
    path = "/api/v1/domains/{domain_id}/suspend",
    tag = "domains",
    operation_id = "suspend_domain",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("If-Match" = Option<String>, Header, description = "Act only if the domain's ETag still matches"),
    ),
    responses(
        (status = 200, description = "The domain, suspended", body = Domain,
            headers(("ETag" = String, description = "The domain's new ETag"))),
        (status = 409, description = "`domain_state_conflict`: not active or provisioning; `idempotency_request_in_progress`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "`precondition_failed`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn suspend_domain(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(domain_id): Path<String>,
) -> ApiResult<Response> {
    use crate::domains::state::Event;
    let d = for_admin(&state, &who, &headers, &domain_id).await?;
    step(&state, &d, Event::SuspendedByAdmin, "suspended").await?;
    db::set_suspended_by_admin(&state.db, &d.id, true).await?;
    changed(
        &state,
        &who,
        &d,
        "domain.suspended",
        "suspended by an admin",
        StatusCode::OK,
    )
    .await
}

/// Resume a domain
///
/// Admin keys only (others get 404). Not for a domain whose subscription ended (it waits
/// for deletion).
#[utoipa::path(
    post,
    path = "/api/v1/domains/{domain_id}/resume",
    tag = "domains",
    operation_id = "resume_domain",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("If-Match" = Option<String>, Header, description = "Act only if the domain's ETag still matches"),
    ),
    responses(
        (status = 200, description = "The domain, active again", body = Domain,
            headers(("ETag" = String, description = "The domain's new ETag"))),
        (status = 409, description = "`domain_state_conflict`: not suspended, or waiting for deletion; `idempotency_request_in_progress`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "`precondition_failed`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn resume_domain(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(domain_id): Path<String>,
) -> ApiResult<Response> {
    use crate::domains::state::Event;
    let d = for_admin(&state, &who, &headers, &domain_id).await?;
    if d.delete_after.is_some() || d.state != "suspended" {
        return Err(state_conflict(&d, "resumed"));
    }
    step(&state, &d, Event::Resumed, "resumed").await?;
    db::set_suspended_by_admin(&state.db, &d.id, false).await?;
    changed(
        &state,
        &who,
        &d,
        "domain.resumed",
        "resumed by an admin",
        StatusCode::OK,
    )
    .await
}

/// Delete a domain
///
/// As when its subscription is cancelled (a Stripe subscription is cancelled now): the
/// domain is suspended at once and its data removed after the retention period
/// (`delete_after`), downloadable until then at `export_url`. A domain still waiting for
/// its first payment is deleted at once (204).
#[utoipa::path(
    delete,
    path = "/api/v1/domains/{domain_id}",
    tag = "domains",
    operation_id = "delete_domain",
    params(
        ("domain_id" = String, Path, description = "The domain's id"),
        ("If-Match" = Option<String>, Header, description = "Act only if the domain's ETag still matches"),
    ),
    responses(
        (status = 202, description = "Suspended; deleted after `delete_after`", body = Domain,
            headers(("ETag" = String, description = "The domain's new ETag"))),
        (status = 204, description = "Deleted (it was never paid for)"),
        (status = 409, description = "`domain_state_conflict`: already being deleted", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "`precondition_failed`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 503, description = "`billing_unavailable`: the subscription could not be cancelled; nothing changed", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn delete_domain(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(domain_id): Path<String>,
) -> ApiResult<Response> {
    use crate::domains::state::Event;
    who.require_write()?;
    let d = visible_domain(&state, &who, &domain_id).await?;
    etag::check_if_match(&headers, &etag::of(&representation(&state, &d, true)))?;
    if d.state == "pending_payment" {
        step(&state, &d, Event::Abandoned, "deleted").await?;
        changed(
            &state,
            &who,
            &d,
            "domain.deleted",
            "deleted before payment",
            StatusCode::OK,
        )
        .await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // Refuse before touching Stripe what the machine would refuse anyway.
    let cancellable = crate::domains::state::DomainState::parse(&d.state)
        .is_some_and(|from| crate::domains::state::next(from, Event::Cancelled).is_ok());
    if !cancellable {
        return Err(state_conflict(&d, "deleted"));
    }
    if let (Some(sub), Some(client)) = (&d.stripe_subscription_id, crate::billing::client(&state)) {
        let cancelled = match client {
            Ok(c) => c
                .cancel_subscription(sub)
                .await
                .map_err(|e| anyhow::anyhow!("{e}")),
            Err(e) => Err(e),
        };
        if let Err(e) = cancelled {
            tracing::warn!(
                domain = d.domain,
                error = format!("{e:#}"),
                "cancelling a subscription failed"
            );
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "billing_unavailable",
                "The subscription could not be cancelled right now; nothing was changed. Try again in a minute.",
            ));
        }
    }
    step(&state, &d, Event::Cancelled, "deleted").await?;
    let now = state.clock.now();
    if d.delete_after.is_none() {
        let keep = now + state.settings.stripe.retention_days * 86_400;
        domains_db::set_delete_after(&state.db, &d.id, Some(keep)).await?;
    }
    changed(
        &state,
        &who,
        &d,
        "domain.delete_requested",
        "deleted by its organisation: suspended, data kept for the retention period",
        StatusCode::ACCEPTED,
    )
    .await
}

/// The last decided probe round.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LastCheck {
    pub at: i64,
    pub ok: bool,
    /// A full login's time, ms (0 when it failed).
    pub latency_ms: i64,
    /// The step that failed (`connect`, `tls`, `auth`…).
    pub failed_stage: Option<String>,
    pub error: Option<String>,
}

/// Rounds up and down in a window; `uptime_percent` is null without data.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UptimeWindow {
    /// `24h`, `7d`, `30d` or `90d`.
    pub window: String,
    pub up_rounds: i64,
    pub down_rounds: i64,
    pub uptime_percent: Option<f64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Incident {
    pub started_at: i64,
    /// Null while it is ongoing.
    pub ended_at: Option<i64>,
    pub duration_secs: i64,
    /// The step that failed.
    pub stage: String,
    pub error: Option<String>,
}

/// A domain's availability, from real XMPP logins every probe interval.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Uptime {
    pub domain_id: String,
    /// `up`, `down` or `unknown` (not checked yet).
    pub status: String,
    pub last_check: Option<LastCheck>,
    pub windows: Vec<UptimeWindow>,
    /// The latest 20, newest first.
    pub incidents: Vec<Incident>,
}

fn window(name: &str, up: i64, down: i64) -> UptimeWindow {
    UptimeWindow {
        window: name.into(),
        up_rounds: up,
        down_rounds: down,
        uptime_percent: (up + down > 0).then(|| up as f64 * 100.0 / (up + down) as f64),
    }
}

/// Get a domain's uptime
///
/// The figures of the domain page (`domains::uptime_for`) as numbers: status, the last
/// check, uptime over 24 hours, 7, 30 and 90 days, and incidents.
#[utoipa::path(
    get,
    path = "/api/v1/domains/{domain_id}/uptime",
    tag = "domains",
    operation_id = "get_domain_uptime",
    params(("domain_id" = String, Path, description = "The domain's id")),
    responses((status = 200, description = "Status, windows and incidents", body = Uptime)),
)]
pub async fn get_uptime(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
) -> ApiResult<Json<Uptime>> {
    use crate::probe::db as probes;
    let d = visible_domain(&state, &who, &domain_id).await?;
    let now = state.clock.now();
    let today = now.div_euclid(86_400);
    let last = probes::latest(&state.db, &d.id).await?;
    let days = probes::daily(&state.db, &d.id, today - 90, today).await?;
    let sum_days = |n: i64| {
        days.iter()
            .filter(|(day, _, _)| *day > today - n)
            .fold((0, 0), |a, (_, u, dn)| (a.0 + u, a.1 + dn))
    };
    let (up24, down24) = probes::counts_since(&state.db, &d.id, now - 86_400).await?;
    let (up7, down7) = probes::counts_since(&state.db, &d.id, now - 7 * 86_400).await?;
    let (up30, down30) = sum_days(30);
    let (up90, down90) = sum_days(90);
    let incidents = probes::incidents(&state.db, &d.id, 20)
        .await?
        .into_iter()
        .map(|i| Incident {
            duration_secs: i.ended_at.unwrap_or(now) - i.started_at,
            started_at: i.started_at,
            ended_at: i.ended_at,
            stage: i.stage,
            error: i.error,
        })
        .collect();
    Ok(Json(Uptime {
        domain_id: d.id,
        status: match &last {
            None => "unknown",
            Some(l) if l.ok => "up",
            Some(_) => "down",
        }
        .into(),
        last_check: last.map(|l| LastCheck {
            at: l.at,
            ok: l.ok,
            latency_ms: l.total_ms,
            failed_stage: l.stage.filter(|_| !l.ok),
            error: l.error.filter(|_| !l.ok),
        }),
        windows: vec![
            window("24h", up24, down24),
            window("7d", up7, down7),
            window("30d", up30, down30),
            window("90d", up90, down90),
        ],
        incidents,
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_with_control_characters_never_reach_the_database() {
        // PostgreSQL refuses text with NUL bytes: such names must be refused as invalid.
        for bad in ["a\0b.example", "chat.example\0", "\u{7}.example"] {
            assert!(crate::domains::normalize(bad).is_err(), "{bad:?}");
        }
    }
}
