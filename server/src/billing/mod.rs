//! Billing with Stripe: paying for a domain through Stripe Checkout, the webhook that
//! drives domains from Stripe's events (each processed exactly once), the billing page
//! with invoices and the customer portal, and the clock-driven steps (a failed payment's
//! grace period, a cancelled domain's retention). With no Stripe key, billing is off and
//! every plan is free.

pub mod stripe;
pub mod webhook;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_frontend::pages::billing::{self as pages, BillingView, InvoiceView, SubscriptionView};
use secrecy::SecretString;

use self::{stripe::StripeClient, webhook::Event};
use crate::{
    clock::format_ts,
    domains::{
        db::{self as domains, DomainRow},
        state::Event as DomainEvent,
    },
    error::{AppError, AppResult},
    nodes::db as nodes,
    orgs::OrgAccess,
    pages::ctx,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/webhooks/stripe", post(stripe_webhook))
        .route("/o/{org_id}/billing", get(show_billing))
        .route("/o/{org_id}/billing/portal", post(open_portal))
        .route("/o/{org_id}/domains/{domain_id}/checkout", post(checkout))
        .route("/o/{org_id}/domains/{domain_id}/export", get(export))
}

/// The Stripe client, when billing is on.
pub fn client(state: &AppState) -> Option<anyhow::Result<StripeClient>> {
    let s = &state.settings.stripe;
    s.enabled().then(|| {
        StripeClient::new(&s.api_base, &SecretString::from(s.secret_key.clone()))
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
}

/// The organisation's Stripe customer, created the first time it is needed.
/// Who pays for an organisation's domains: the organisation, and the address Stripe sends
/// its receipts to (the person ordering in the panel; over the API, the organisation's
/// owner, or none for an organisation without members).
#[derive(Debug, Clone)]
pub struct Payer {
    pub org_id: String,
    pub org_name: String,
    pub email: Option<String>,
}

impl Payer {
    /// The signed-in member paying in the panel.
    pub fn of(access: &OrgAccess) -> Self {
        Self {
            org_id: access.org.id.0.clone(),
            org_name: access.org.name.clone(),
            email: Some(access.signed_in.user.email.clone()),
        }
    }
}

async fn customer_of(
    state: &AppState,
    payer: &Payer,
    stripe: &StripeClient,
) -> anyhow::Result<String> {
    use sqlx::Row;
    let existing: Option<String> =
        sqlx::query("SELECT stripe_customer_id FROM organisations WHERE id = $1")
            .bind(&payer.org_id)
            .fetch_one(&state.db)
            .await?
            .try_get("stripe_customer_id")?;
    if let Some(id) = existing {
        return Ok(id);
    }
    let id = stripe
        .create_customer(payer.email.as_deref(), &payer.org_name, &payer.org_id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // Two orders at once: the first stored customer wins, the other is left unused.
    sqlx::query("UPDATE organisations SET stripe_customer_id = $1 WHERE id = $2 AND stripe_customer_id IS NULL")
        .bind(&id)
        .bind(&payer.org_id)
        .execute(&state.db)
        .await?;
    let stored: String = sqlx::query("SELECT stripe_customer_id FROM organisations WHERE id = $1")
        .bind(&payer.org_id)
        .fetch_one(&state.db)
        .await?
        .try_get("stripe_customer_id")?;
    Ok(stored)
}

/// Where Stripe Checkout sends the payer back: after paying, and when they go back
/// without paying.
#[derive(Debug, Clone)]
pub struct ReturnUrls {
    pub success: String,
    pub cancel: String,
}

impl ReturnUrls {
    /// The domain's page in the panel (with a notice after paying).
    pub fn panel(state: &AppState, d: &DomainRow) -> Self {
        let page = format!(
            "{}/o/{}/domains/{}",
            state.settings.base_url(),
            d.org_id,
            d.id
        );
        Self {
            success: format!("{page}?notice=paid"),
            cancel: page,
        }
    }
}

/// Starts Stripe Checkout for a domain waiting for payment: the answer is the URL to send
/// the payer to.
pub async fn start_checkout(
    state: &AppState,
    payer: &Payer,
    d: &DomainRow,
    back: &ReturnUrls,
) -> anyhow::Result<String> {
    let Some(stripe) = client(state) else {
        anyhow::bail!("billing is off");
    };
    let stripe = stripe?;
    let plan = match &d.plan_id {
        Some(p) => crate::admin::plans::get_plan(&state.db, p).await?,
        None => None,
    };
    let Some(price) = plan.and_then(|p| p.stripe_price_id) else {
        anyhow::bail!("the plan has no Stripe price");
    };
    let customer = customer_of(state, payer, &stripe).await?;
    let session = stripe
        .create_checkout_session(&customer, &price, &back.success, &back.cancel, &d.id)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    domains::set_billing(&state.db, &d.id, None, Some(&session.id), state.clock.now()).await?;
    Ok(session.url)
}

async fn checkout(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let d = match domains::get(&state.db, &id).await? {
        Some(d) if d.org_id == access.org.id.0 && d.state == "pending_payment" => d,
        Some(d) if d.org_id == access.org.id.0 => {
            return Ok(
                Redirect::to(&format!("/o/{}/domains/{}", access.org.id.0, d.id)).into_response(),
            );
        }
        _ => return Err(AppError::NotFound),
    };
    match start_checkout(
        &state,
        &Payer::of(&access),
        &d,
        &ReturnUrls::panel(&state, &d),
    )
    .await
    {
        Ok(url) => Ok(Redirect::to(&url).into_response()),
        Err(e) => {
            tracing::error!(
                domain = d.domain,
                error = format!("{e:#}"),
                "starting a checkout failed"
            );
            Err(AppError::BadRequest(
                "The payment page could not be opened just now. Nothing was charged; try again in a minute.".into(),
            ))
        }
    }
}

/// `POST /webhooks/stripe`: verified, recorded once per event id, then acted on.
async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &state.settings.stripe;
    if !s.enabled() {
        return (StatusCode::NOT_FOUND, "billing is off").into_response();
    }
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let now = state.clock.now();
    let verified = webhook::verify_signature(
        signature,
        &body,
        &s.webhook_secret,
        now,
        u64::try_from(s.webhook_tolerance_secs).unwrap_or(300),
    )
    .and_then(|_| Event::from_json(&body));
    let event = match verified {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "a Stripe webhook was refused");
            return (StatusCode::BAD_REQUEST, format!("{e}")).into_response();
        }
    };
    match process_once(&state, &event).await {
        Ok(outcome) => {
            tracing::info!(event = event.id, kind = event.kind, outcome, "Stripe event");
            (StatusCode::OK, outcome).into_response()
        }
        Err(e) => {
            // Not recorded: Stripe retries, and the next delivery tries again.
            tracing::error!(
                event = event.id,
                kind = event.kind,
                error = format!("{e:#}"),
                "processing a Stripe event failed"
            );
            (StatusCode::INTERNAL_SERVER_ERROR, "try again").into_response()
        }
    }
}

/// Acts on an event unless its id was seen before. The id is recorded after the work, and
/// the work is idempotent (state transitions that change nothing write nothing), so a
/// crash in between at worst repeats harmless work.
async fn process_once(state: &AppState, event: &Event) -> anyhow::Result<&'static str> {
    use sqlx::Row;
    let seen = sqlx::query("SELECT outcome FROM stripe_events WHERE id = $1")
        .bind(&event.id)
        .fetch_optional(&state.db)
        .await?;
    if let Some(row) = seen {
        let _: String = row.try_get("outcome")?;
        return Ok("already processed");
    }
    let outcome = apply(state, event).await?;
    let inserted = sqlx::query(
        "INSERT INTO stripe_events (id, kind, received_at, outcome) VALUES ($1, $2, $3, $4)",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(state.clock.now())
    .bind(outcome)
    .execute(&state.db)
    .await;
    match inserted {
        Ok(_) => Ok(outcome),
        Err(e) if crate::db::is_unique_violation(&e) => Ok("already processed"),
        Err(e) => Err(e.into()),
    }
}

/// The domain an event is about: by the domain id Rookery put in the checkout's metadata,
/// else by subscription.
async fn domain_of(state: &AppState, event: &Event) -> anyhow::Result<Option<DomainRow>> {
    let by_id = event
        .metadata("domain_id")
        .or_else(|| event.object_str("client_reference_id"));
    if let Some(id) = by_id
        && let Some(d) = domains::get(&state.db, id).await?
    {
        return Ok(Some(d));
    }
    match event.subscription_id() {
        Some(sub) => Ok(domains::by_subscription(&state.db, sub).await?),
        None => Ok(None),
    }
}

async fn apply(state: &AppState, event: &Event) -> anyhow::Result<&'static str> {
    let Some(d) = domain_of(state, event).await? else {
        return Ok("no domain of ours");
    };
    let now = state.clock.now();
    let db = &state.db;
    let outcome = match event.kind.as_str() {
        "checkout.session.completed" => {
            domains::set_billing(db, &d.id, event.subscription_id(), None, now).await?;
            step(state, &d, DomainEvent::Paid, now).await?;
            "paid: provisioning"
        }
        "invoice.paid" => {
            domains::set_grace(db, &d.id, None).await?;
            crate::alerts::endpoints::invoice_paid(state, &d, event).await;
            if d.state == "suspended" && !d.suspended_by_admin && d.delete_after.is_none() {
                step(state, &d, DomainEvent::Resumed, now).await?;
                "paid: resumed"
            } else {
                "paid"
            }
        }
        "invoice.payment_failed" => {
            let grace = now + state.settings.stripe.grace_days * 86_400;
            domains::set_grace(db, &d.id, Some(grace)).await?;
            "payment failed: grace period"
        }
        "customer.subscription.updated" => match event.object_str("status") {
            Some("past_due") => {
                let grace = now + state.settings.stripe.grace_days * 86_400;
                domains::set_grace(db, &d.id, Some(grace)).await?;
                "past due: grace period"
            }
            Some("canceled" | "unpaid") => cancel(state, &d, now).await?,
            _ => "noted",
        },
        "customer.subscription.deleted" => cancel(state, &d, now).await?,
        _ => "ignored",
    };
    state.reconcile_now.notify_one();
    Ok(outcome)
}

/// One state transition; an event that no longer applies (a late or repeated one) is noted.
async fn step(state: &AppState, d: &DomainRow, ev: DomainEvent, now: i64) -> anyhow::Result<bool> {
    match domains::transition(&state.db, &d.id, ev, now).await? {
        Ok(_) => Ok(true),
        Err(illegal) => {
            tracing::info!(domain = d.domain, %illegal, "a Stripe event that does not apply any more");
            Ok(false)
        }
    }
}

/// The subscription ended: suspended at once, data kept for the retention period.
async fn cancel(state: &AppState, d: &DomainRow, now: i64) -> anyhow::Result<&'static str> {
    if d.state == "pending_payment" {
        domains::transition(&state.db, &d.id, DomainEvent::Abandoned, now)
            .await?
            .ok();
        return Ok("cancelled before payment");
    }
    if domains::transition(&state.db, &d.id, DomainEvent::Cancelled, now)
        .await?
        .is_ok()
    {
        let keep = now + state.settings.stripe.retention_days * 86_400;
        domains::set_delete_after(&state.db, &d.id, Some(keep)).await?;
    }
    Ok("cancelled: suspended, deletion scheduled")
}

/// Grace periods and retention periods that ran out (called by the reconciler's loop).
pub async fn sweep(state: &AppState) -> anyhow::Result<()> {
    let now = state.clock.now();
    for d in domains::billing_due(&state.db, now).await? {
        let (event, what) = if d.state == "suspended" {
            (DomainEvent::DeleteRequested, "retention over: deleting")
        } else {
            (DomainEvent::GraceExpired, "grace period over: suspended")
        };
        if domains::transition(&state.db, &d.id, event, now)
            .await?
            .is_ok()
        {
            if event == DomainEvent::GraceExpired {
                domains::set_grace(&state.db, &d.id, None).await?;
            }
            tracing::info!(domain = d.domain, what, "billing");
            nodes::audit(
                &state.db,
                None,
                "billing",
                "domain.billing",
                &d.domain,
                what,
                now,
            )
            .await?;
            state.reconcile_now.notify_one();
        }
    }
    Ok(())
}

async fn show_billing(State(state): State<AppState>, access: OrgAccess) -> AppResult<Html<String>> {
    let enabled = state.settings.stripe.enabled();
    let domains = domains::for_org(&state.db, &access.org.id.0).await?;
    let mut subscriptions = Vec::new();
    for d in &domains {
        let plan = match &d.plan_id {
            Some(p) => crate::admin::plans::get_plan(&state.db, p).await?,
            None => None,
        };
        subscriptions.push(SubscriptionView {
            domain: d.domain.clone(),
            plan: plan
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_else(|| "no plan".into()),
            price: plan
                .as_ref()
                .map(|p| {
                    if enabled {
                        p.price_label()
                    } else {
                        "free".into()
                    }
                })
                .unwrap_or_default(),
            status: match (d.state.as_str(), d.grace_until, d.delete_after) {
                ("pending_payment", ..) => "waiting for payment".into(),
                (_, _, Some(at)) => format!("cancelled; data deleted after {}", format_ts(at)),
                (_, Some(until), _) => format!(
                    "payment failed; suspended after {} unless paid",
                    format_ts(until)
                ),
                ("suspended", ..) => "suspended".into(),
                _ => "paid up".into(),
            },
        });
    }
    let mut view = BillingView {
        enabled,
        subscriptions,
        ..Default::default()
    };
    if enabled {
        use sqlx::Row;
        let customer: Option<String> =
            sqlx::query("SELECT stripe_customer_id FROM organisations WHERE id = $1")
                .bind(&access.org.id.0)
                .fetch_one(&state.db)
                .await?
                .try_get("stripe_customer_id")?;
        view.has_customer = customer.is_some();
        if let (Some(customer), Some(Ok(stripe))) = (customer, client(&state)) {
            match stripe.list_invoices(&customer).await {
                Ok(list) => {
                    view.invoices = list
                        .into_iter()
                        .map(|i| InvoiceView {
                            number: i.number.unwrap_or(i.id),
                            date: format_ts(i.created),
                            amount: format!(
                                "{} {}.{:02}",
                                i.currency.to_uppercase(),
                                i.amount_due / 100,
                                i.amount_due % 100
                            ),
                            status: i.status.unwrap_or_default(),
                            url: i.hosted_invoice_url,
                        })
                        .collect();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing invoices failed");
                    view.error = Some(
                        "Your invoices cannot be shown right now; try again in a minute.".into(),
                    );
                }
            }
        }
    }
    let ctx = ctx(
        &state,
        &access.signed_in.visitor,
        "Billing",
        "billing",
        Some(&access.org),
        None,
    )
    .await?;
    Ok(Html(pages::billing(ctx, access.org.id.0.clone(), view)))
}

async fn open_portal(State(state): State<AppState>, access: OrgAccess) -> AppResult<Response> {
    use sqlx::Row;
    let Some(Ok(stripe)) = client(&state) else {
        return Err(AppError::NotFound);
    };
    let customer: Option<String> =
        sqlx::query("SELECT stripe_customer_id FROM organisations WHERE id = $1")
            .bind(&access.org.id.0)
            .fetch_one(&state.db)
            .await?
            .try_get("stripe_customer_id")?;
    let Some(customer) = customer else {
        return Err(AppError::BadRequest(
            "There is nothing to manage yet: order a paid plan first.".into(),
        ));
    };
    let back = format!(
        "{}/o/{}/billing",
        state.settings.base_url(),
        access.org.id.0
    );
    match stripe.create_portal_session(&customer, &back).await {
        Ok(url) => Ok(Redirect::to(&url).into_response()),
        Err(e) => {
            tracing::error!(error = %e, "opening the customer portal failed");
            Err(AppError::BadRequest(
                "Stripe's billing portal could not be opened just now; try again in a minute."
                    .into(),
            ))
        }
    }
}

/// A domain's data as JSON (accounts with their SCRAM keys, rosters, stored messages…),
/// offered before a cancelled domain is deleted.
async fn export(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Response> {
    let d = match domains::get(&state.db, &id).await? {
        Some(d) if d.org_id == access.org.id.0 && d.state != "deleted" => d,
        _ => return Err(AppError::NotFound),
    };
    let Some(node) = d.applied_node_id.as_deref() else {
        return Err(AppError::BadRequest(
            "This domain holds no data yet.".into(),
        ));
    };
    let node = nodes::node(&state.db, node)
        .await?
        .ok_or(AppError::NotFound)?;
    let client = state.node_clients.get(&node.endpoint(&state.sealer)?);
    let data = client.export(&d.domain).await.map_err(|e| {
        tracing::warn!(domain = d.domain, error = %e, "exporting failed");
        AppError::BadRequest(
            "The server of this domain does not answer right now; try again in a minute.".into(),
        )
    })?;
    let body = serde_json::to_vec_pretty(&data).map_err(anyhow::Error::from)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}-export.json\"", d.domain),
            ),
        ],
        body,
    )
        .into_response())
}
