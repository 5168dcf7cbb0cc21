//! Billing with Stripe: paying for a domain through Stripe Checkout, changing a domain's
//! plan, the webhook that drives domains from Stripe's events (each processed exactly
//! once), the billing page with invoices and the customer portal, and the clock-driven
//! steps (a failed payment's grace period, a cancelled domain's retention). With no Stripe
//! key, billing is off and every plan is free.
//!
//! A plan change ([`change_plan`]) depends on what is paid: between free plans (or with
//! billing off) the plan simply changes; between paid plans the subscription's item moves
//! to the new price at Stripe and the plan follows Stripe's answer; from free to paid the
//! payer goes through Checkout and the plan follows the payment; from paid to free the
//! subscription is cancelled. Either way a new generation carries the plan's limits to
//! the node. A price changed in Stripe's customer portal arrives as
//! `customer.subscription.updated` and moves the domain to the plan sold at that price.

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
use rookery_frontend::pages::PlanView;

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
    let plan = match &d.plan_id {
        Some(p) => crate::admin::plans::get_plan(&state.db, p).await?,
        None => None,
    };
    let Some(plan) = plan else {
        anyhow::bail!("the domain has no plan");
    };
    checkout_for(state, payer, d, &plan, back).await
}

/// Starts Stripe Checkout for one unit of `plan`'s price for the domain; the plan goes
/// into the session's metadata, so the payment moves the domain to it.
async fn checkout_for(
    state: &AppState,
    payer: &Payer,
    d: &DomainRow,
    plan: &PlanView,
    back: &ReturnUrls,
) -> anyhow::Result<String> {
    let Some(stripe) = client(state) else {
        anyhow::bail!("billing is off");
    };
    let stripe = stripe?;
    let Some(price) = &plan.stripe_price_id else {
        anyhow::bail!("the plan {} has no Stripe price", plan.name);
    };
    let customer = customer_of(state, payer, &stripe).await?;
    let session = stripe
        .create_checkout_session(
            &customer,
            price,
            &back.success,
            &back.cancel,
            &d.id,
            &plan.id,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    domains::set_billing(&state.db, &d.id, None, Some(&session.id), state.clock.now()).await?;
    Ok(session.url)
}

/// What changing a domain's plan did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanChanged {
    /// The domain is on the new plan; its node gets the new limits within seconds.
    Applied,
    /// Stripe took the new price without confirming it yet: the plan follows with Stripe's
    /// `customer.subscription.updated`.
    Pending,
    /// A free domain moves to a paid plan: the payer goes to Stripe Checkout at this URL,
    /// and the plan changes when the payment arrives.
    Checkout(String),
}

/// Why a domain's plan was not changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangePlanError {
    #[error("Choose one of the plans offered.")]
    UnknownPlan,
    #[error("The domain is already on this plan.")]
    SamePlan,
    /// The domain's state does not allow it (the sentence says why).
    #[error("{0}")]
    NotNow(&'static str),
    #[error(
        "This domain has {accounts} chat accounts and the {plan} plan allows {limit}. Delete accounts until {limit} are left, or choose a bigger plan."
    )]
    TooManyAccounts {
        accounts: i64,
        limit: i64,
        plan: String,
    },
    /// The node could not say how many accounts the domain has.
    #[error("{}", crate::domains::NODE_DOWN)]
    NodeDown,
    /// Stripe refused or could not be reached; nothing changed.
    #[error(
        "The plan could not be changed with our payment provider just now. Nothing was changed; try again in a minute."
    )]
    Billing,
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ChangePlanError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// Why the domain's plan cannot change now, if it cannot: it is being deleted, or its
/// subscription ended and it waits for deletion.
pub fn plan_is_fixed(d: &DomainRow) -> Option<&'static str> {
    match d.state.as_str() {
        "pending_payment" | "provisioning" | "active" | "suspended" if d.delete_after.is_none() => {
            None
        }
        "pending_payment" | "provisioning" | "active" | "suspended" => {
            Some("This domain's subscription has ended: it is suspended until its data is deleted.")
        }
        _ => Some("The plan of a domain being deleted cannot be changed."),
    }
}

/// Moves a domain to another public plan, as the domain page's "Change plan" form does
/// (see the module's header for the cases). A plan allowing fewer chat accounts than the
/// domain has is refused. `back` is where Checkout sends the payer when a free domain
/// moves to a paid plan.
#[tracing::instrument(skip_all, fields(domain = %d.domain, plan_id = %plan_id))]
pub async fn change_plan(
    state: &AppState,
    payer: &Payer,
    d: &DomainRow,
    plan_id: &str,
    back: &ReturnUrls,
) -> Result<PlanChanged, ChangePlanError> {
    if let Some(why) = plan_is_fixed(d) {
        return Err(ChangePlanError::NotNow(why));
    }
    if d.plan_id.as_deref() == Some(plan_id) {
        return Err(ChangePlanError::SamePlan);
    }
    let plan = crate::admin::plans::list(&state.db, true)
        .await?
        .into_iter()
        .find(|p| p.id == plan_id)
        .ok_or(ChangePlanError::UnknownPlan)?;
    if d.max_accounts.is_none_or(|now| plan.max_accounts < now) {
        let accounts = crate::domains::account_count(state, d).await.map_err(|e| {
            tracing::warn!(error = format!("{e:#}"), "counting accounts failed");
            ChangePlanError::NodeDown
        })?;
        if accounts > plan.max_accounts {
            return Err(ChangePlanError::TooManyAccounts {
                accounts,
                limit: plan.max_accounts,
                plan: plan.name,
            });
        }
    }
    let now = state.clock.now();
    let db = &state.db;
    let stripe = match client(state) {
        Some(c) => Some(c.map_err(|e| {
            tracing::error!(error = format!("{e:#}"), "the Stripe client");
            ChangePlanError::Billing
        })?),
        None => None,
    };
    let outcome = match (stripe, &d.stripe_subscription_id) {
        // Billing off: every plan is free.
        (None, _) => {
            domains::set_plan(db, &d.id, &plan.id, now, now).await?;
            PlanChanged::Applied
        }
        // Free to free; or a paid order not paid yet, which is paid on the new plan (a
        // free one needs no payment at all).
        (Some(_), None) if plan.price_cents == 0 || d.state == "pending_payment" => {
            domains::set_plan(db, &d.id, &plan.id, now, now).await?;
            if d.state == "pending_payment" && plan.price_cents == 0 {
                domains::transition(db, &d.id, DomainEvent::OrderedFree, now)
                    .await?
                    .ok();
            }
            PlanChanged::Applied
        }
        // Free to paid: through Checkout; the payment's webhook moves the plan.
        (Some(_), None) => match checkout_for(state, payer, d, &plan, back).await {
            Ok(url) => PlanChanged::Checkout(url),
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "starting a checkout failed");
                return Err(ChangePlanError::Billing);
            }
        },
        // Paid to free: the subscription ends. It is detached first, so that Stripe's
        // `customer.subscription.deleted` is about a subscription the domain no longer has
        // (and does not suspend it).
        (Some(stripe), Some(sub)) if plan.price_cents == 0 => {
            domains::set_subscription(db, &d.id, None, now).await?;
            if let Err(e) = stripe.cancel_subscription(sub).await {
                tracing::error!(error = %e, "cancelling a subscription failed");
                domains::set_subscription(db, &d.id, Some(sub), now).await?;
                return Err(ChangePlanError::Billing);
            }
            domains::set_plan(db, &d.id, &plan.id, now, now).await?;
            PlanChanged::Applied
        }
        // Paid to paid: the subscription's item moves to the new price.
        (Some(stripe), Some(sub)) => {
            let Some(price) = &plan.stripe_price_id else {
                tracing::error!(plan = plan.name, "the plan has no Stripe price");
                return Err(ChangePlanError::Billing);
            };
            let changed = async {
                let item = stripe.subscription_item(sub).await?;
                if &item.price_id == price {
                    return Ok(item);
                }
                stripe.change_price(sub, &item.id, price).await
            }
            .await;
            match changed {
                Ok(item) if &item.price_id == price => {
                    domains::set_plan(db, &d.id, &plan.id, now, now).await?;
                    PlanChanged::Applied
                }
                Ok(_) => PlanChanged::Pending,
                Err(e) => {
                    tracing::error!(error = %e, "changing a subscription's price failed");
                    return Err(ChangePlanError::Billing);
                }
            }
        }
    };
    if outcome == PlanChanged::Applied {
        tracing::info!(plan = plan.name, "domain plan changed");
    }
    state.reconcile_now.notify_one();
    Ok(outcome)
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

/// Why an event is about a subscription the domain no longer has, if it is: one that
/// ended when the domain moved to a free plan, or one a newer subscription replaced. Such
/// an event (the old subscription's `customer.subscription.deleted`, a late invoice)
/// must not touch the domain. Checkout events and domains still waiting for their first
/// payment are never stale.
fn stale_subscription(d: &DomainRow, event: &Event) -> Option<&'static str> {
    if event.kind.starts_with("checkout.session.") || d.state == "pending_payment" {
        return None;
    }
    let sub = event.subscription_id()?;
    (d.stripe_subscription_id.as_deref() != Some(sub))
        .then_some("about a subscription the domain no longer has")
}

async fn apply(state: &AppState, event: &Event) -> anyhow::Result<&'static str> {
    let Some(d) = domain_of(state, event).await? else {
        return Ok("no domain of ours");
    };
    if let Some(why) = stale_subscription(&d, event) {
        return Ok(why);
    }
    let now = state.clock.now();
    let db = &state.db;
    let outcome = match event.kind.as_str() {
        "checkout.session.completed" => {
            domains::set_billing(db, &d.id, event.subscription_id(), None, now).await?;
            step(state, &d, DomainEvent::Paid, now).await?;
            // The plan paid for (a free domain moving to a paid plan pays through Checkout).
            let moved = match event.metadata("plan_id") {
                Some(plan) => switch_plan(state, &d, plan, event.created, now).await?,
                None => false,
            };
            match (d.state.as_str(), moved) {
                ("pending_payment", _) => "paid: provisioning",
                (_, true) => "paid: plan changed",
                _ => "paid",
            }
        }
        "checkout.session.expired" => {
            // Only the order's own checkout withdraws it: the payer may have started
            // another one since, and a plan change's checkout leaves the domain as it is.
            let current = domains::checkout_id(db, &d.id).await?;
            if d.state == "pending_payment" && current.as_deref() == event.object_str("id") {
                step(state, &d, DomainEvent::Abandoned, now).await?;
                "checkout expired: order withdrawn"
            } else {
                "checkout expired"
            }
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
            Some("canceled" | "unpaid") => cancel(state, &d, now).await?,
            status => {
                // The price may have changed (here, or in Stripe's customer portal).
                let moved = match event.subscription_price() {
                    Some(price) => follow_price(state, &d, price, event.created, now).await?,
                    None => false,
                };
                match (status, moved) {
                    (Some("past_due"), _) => {
                        let grace = now + state.settings.stripe.grace_days * 86_400;
                        domains::set_grace(db, &d.id, Some(grace)).await?;
                        "past due: grace period"
                    }
                    (_, true) => "plan changed",
                    _ => "noted",
                }
            }
        },
        "customer.subscription.deleted" => cancel(state, &d, now).await?,
        _ => "ignored",
    };
    state.reconcile_now.notify_one();
    Ok(outcome)
}

/// Moves the domain to the plan sold at `price` (a subscription's price as Stripe has it
/// now), unless the domain is on it already or its plan was chosen after `chosen_at`.
async fn follow_price(
    state: &AppState,
    d: &DomainRow,
    price: &str,
    chosen_at: i64,
    now: i64,
) -> anyhow::Result<bool> {
    match domains::plan_for_price(&state.db, price).await? {
        Some(plan) => switch_plan(state, d, &plan, chosen_at, now).await,
        None => {
            tracing::warn!(
                domain = d.domain,
                price,
                "the subscription's price belongs to no plan; the plan stays"
            );
            Ok(false)
        }
    }
}

/// Moves the domain to `plan_id` as Stripe decided (see [`domains::set_plan`]); an
/// unknown plan (deleted since) changes nothing.
async fn switch_plan(
    state: &AppState,
    d: &DomainRow,
    plan_id: &str,
    chosen_at: i64,
    now: i64,
) -> anyhow::Result<bool> {
    if d.plan_id.as_deref() == Some(plan_id)
        || crate::admin::plans::get_plan(&state.db, plan_id)
            .await?
            .is_none()
    {
        return Ok(false);
    }
    let moved = domains::set_plan(&state.db, &d.id, plan_id, chosen_at, now).await?;
    if moved {
        tracing::info!(domain = d.domain, plan_id, "plan changed at Stripe");
    }
    Ok(moved)
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
