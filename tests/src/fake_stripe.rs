//! A local fake Stripe: the API endpoints Rookery calls, a hosted payment page to pay on,
//! and webhooks signed exactly as Stripe signs them.
//!
//! It listens on `127.0.0.1:0`, checks the `Authorization: Bearer` key ([`FakeStripe::API_KEY`]),
//! reads Stripe's form encoding (`metadata[domain_id]=…`, `line_items[0][price]=…`) and
//! answers with JSON objects shaped like Stripe's (`cus_`, `cs_test_`, `sub_`, `in_`,
//! `bps_` ids, `object` fields, lists as `{"object":"list","data":[…]}`, errors as
//! `{"error":{"type":…,"code":…,"message":…}}`). State lives in memory.
//!
//! The API (under `/v1`):
//! - `POST /customers`, `POST /checkout/sessions` (subscription mode),
//!   `POST /checkout/sessions/{id}/expire` (sends `checkout.session.expired`),
//!   `POST /billing_portal/sessions`, `GET /invoices?customer=…`,
//!   `GET /subscriptions/{id}`, `POST /subscriptions/{id}` (item prices and quantities,
//!   metadata; sends `customer.subscription.updated` with `previous_attributes`),
//!   `DELETE /subscriptions/{id}` (cancels now and sends `customer.subscription.deleted`).
//!
//! Subscriptions carry their items (`items.data[n]` with the embedded `price`), in API
//! answers and in every event.
//!
//! Pages a browser visits (no key needed), like Stripe's hosted pages:
//! - `GET /pay/{cs_id}`: the checkout page with a "Pay" button; `POST /pay/{cs_id}` pays:
//!   it creates the subscription and its paid first invoice, sends
//!   `checkout.session.completed` then `invoice.paid`, and redirects (303) to the
//!   session's `success_url` (`{CHECKOUT_SESSION_ID}` filled in).
//! - `GET /portal/{bps_id}` (a stub customer portal), `GET /invoices/{in_id}` (an invoice).
//!
//! Webhooks are delivered before the triggering call returns (unlike Stripe, which sends
//! them shortly after), so a test sees their effect as soon as the call is back: a JSON POST
//! to the webhook URL with `Stripe-Signature: t=…,v1=…`, tried up to three times until the
//! receiver answers 2xx. Timestamps come from a [`Clock`], so a test that moves the panel's
//! clock can hand the same clock to the fake and keep signatures inside the tolerance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery::clock::Clock;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// The API version the fake's objects and events follow (async-stripe 1.0's).
pub const API_VERSION: &str = "2026-09-30.endive";

/// What a price costs when the test did not say ([`FakeStripe::set_price`]).
const DEFAULT_PRICE: (i64, &str) = (900, "eur");

/// How often a webhook is tried, and the pause before each retry.
const DELIVERY_BACKOFF: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(300)];

/// A running fake Stripe. Dropping it stops the server.
pub struct FakeStripe {
    base_url: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
}

/// One webhook the fake sent (or tried to).
#[derive(Debug, Clone)]
pub struct SentEvent {
    /// The event object as sent.
    pub event: Value,
    /// Whether the receiver answered 2xx to some attempt.
    pub delivered: bool,
    /// The last HTTP status the receiver answered (None: no answer, or no webhook URL).
    pub last_status: Option<u16>,
    pub attempts: u32,
}

impl SentEvent {
    pub fn kind(&self) -> &str {
        self.event["type"].as_str().unwrap_or_default()
    }
}

struct Shared {
    base_url: String,
    webhook_secret: String,
    clock: Clock,
    http: reqwest::Client,
    data: Mutex<Data>,
}

#[derive(Default)]
struct Data {
    webhook_url: String,
    prices: HashMap<String, (i64, String)>,
    customers: HashMap<String, Value>,
    sessions: HashMap<String, Value>,
    portal_sessions: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    /// In creation order; listed newest first.
    invoices: Vec<Value>,
    events: Vec<SentEvent>,
}

impl FakeStripe {
    /// The secret key the fake accepts.
    pub const API_KEY: &'static str = "sk_test_rookery_fake_0123456789";

    /// Starts a fake that signs webhooks with `webhook_secret` and sends them to
    /// `webhook_url` (empty: record events without sending; see [`Self::set_webhook_url`]).
    pub async fn start(webhook_url: &str, webhook_secret: &str) -> anyhow::Result<FakeStripe> {
        Self::start_with_clock(webhook_url, webhook_secret, Clock::default()).await
    }

    /// [`Self::start`] with timestamps (`created`, signatures) from `clock`.
    pub async fn start_with_clock(
        webhook_url: &str,
        webhook_secret: &str,
        clock: Clock,
    ) -> anyhow::Result<FakeStripe> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the fake Stripe")?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            base_url: base_url.clone(),
            webhook_secret: webhook_secret.to_owned(),
            clock,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .user_agent("Stripe/1.0 (+https://stripe.com/docs/webhooks)")
                .build()?,
            data: Mutex::new(Data {
                webhook_url: webhook_url.to_owned(),
                ..Data::default()
            }),
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(FakeStripe {
            base_url,
            shared,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:PORT`: the API base URL to configure (the API is under `/v1`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn api_key(&self) -> &'static str {
        Self::API_KEY
    }

    /// Where webhooks go from now on (the panel's address is often known only later).
    pub fn set_webhook_url(&self, url: &str) {
        self.shared.data().webhook_url = url.to_owned();
    }

    /// What `price_id` costs per month, in minor units.
    pub fn set_price(&self, price_id: &str, unit_amount: i64, currency: &str) {
        self.shared
            .data()
            .prices
            .insert(price_id.to_owned(), (unit_amount, currency.to_owned()));
    }

    /// Every webhook sent so far, oldest first.
    pub fn events_sent(&self) -> Vec<SentEvent> {
        self.shared.data().events.clone()
    }

    /// The subscription object, as `GET /v1/subscriptions/{id}` would return it.
    pub fn subscription(&self, subscription_id: &str) -> Option<Value> {
        self.shared
            .data()
            .subscriptions
            .get(subscription_id)
            .cloned()
    }

    /// A renewal payment fails: a new open invoice, the subscription goes `past_due`, and
    /// Stripe's events for it are sent: `invoice.payment_failed`, then
    /// `customer.subscription.updated`. Returns the `invoice.payment_failed` event.
    pub async fn fail_payment(&self, subscription_id: &str) -> anyhow::Result<Value> {
        let (invoice, subscription, previous) = {
            let mut data = self.shared.data();
            let invoice = self.shared.new_invoice(&mut data, subscription_id, false)?;
            let subscription = data
                .subscriptions
                .get_mut(subscription_id)
                .context("no such subscription")?;
            let previous = json!({ "status": subscription["status"].clone() });
            subscription["status"] = json!("past_due");
            subscription["latest_invoice"] = invoice["id"].clone();
            (invoice, subscription.clone(), previous)
        };
        let failed = self
            .shared
            .send_event("invoice.payment_failed", invoice, None)
            .await;
        self.shared
            .send_event(
                "customer.subscription.updated",
                subscription,
                Some(previous),
            )
            .await;
        Ok(failed)
    }

    /// A renewal payment succeeds (after a failure, say): a new paid invoice, the
    /// subscription back to `active`, and `invoice.paid` (then
    /// `customer.subscription.updated` if the status changed). Returns `invoice.paid`.
    pub async fn pay_renewal(&self, subscription_id: &str) -> anyhow::Result<Value> {
        let (invoice, updated) = {
            let mut data = self.shared.data();
            let invoice = self.shared.new_invoice(&mut data, subscription_id, true)?;
            let subscription = data
                .subscriptions
                .get_mut(subscription_id)
                .context("no such subscription")?;
            subscription["latest_invoice"] = invoice["id"].clone();
            let updated = (subscription["status"] != "active").then(|| {
                let previous = json!({ "status": subscription["status"].clone() });
                subscription["status"] = json!("active");
                (subscription.clone(), previous)
            });
            (invoice, updated)
        };
        let paid = self.shared.send_event("invoice.paid", invoice, None).await;
        if let Some((subscription, previous)) = updated {
            self.shared
                .send_event(
                    "customer.subscription.updated",
                    subscription,
                    Some(previous),
                )
                .await;
        }
        Ok(paid)
    }

    /// The subscription ends now (as if cancelled in the dashboard or after failed
    /// retries): sends `customer.subscription.deleted` and returns it.
    pub async fn cancel(&self, subscription_id: &str) -> anyhow::Result<Value> {
        let subscription = self
            .shared
            .cancel_subscription(subscription_id)
            .context("no such subscription")?;
        Ok(self
            .shared
            .send_event("customer.subscription.deleted", subscription, None)
            .await)
    }

    /// The customer moves the subscription to `price_id` in Stripe's customer portal: the
    /// first item changes price (quantity 1) and `customer.subscription.updated` is sent,
    /// with the old items in `previous_attributes`. Returns the event.
    pub async fn change_price(
        &self,
        subscription_id: &str,
        price_id: &str,
    ) -> anyhow::Result<Value> {
        let item = self
            .subscription(subscription_id)
            .context("no such subscription")?["items"]["data"][0]["id"]
            .as_str()
            .context("the subscription has no item")?
            .to_owned();
        let form = FormData(vec![
            ("items[0][id]".into(), item),
            ("items[0][price]".into(), price_id.to_owned()),
        ]);
        let (subscription, previous) = self
            .shared
            .update_subscription(subscription_id, &form)
            .map_err(|e| anyhow::anyhow!("{}", e.1))?;
        Ok(self
            .shared
            .send_event("customer.subscription.updated", subscription, previous)
            .await)
    }

    /// The checkout session expires unpaid (Stripe expires them after 24 hours): sends
    /// `checkout.session.expired` and returns it.
    pub async fn expire_checkout(&self, session_id: &str) -> anyhow::Result<Value> {
        let session = self
            .shared
            .expire_session(session_id)
            .map_err(|e| anyhow::anyhow!("{}", e.1))?;
        Ok(self
            .shared
            .send_event("checkout.session.expired", session, None)
            .await)
    }

    /// Signs `body` as it is, now, and POSTs it to the webhook URL once; returns the
    /// receiver's status. For replay and tampering tests.
    pub async fn send_raw(&self, body: &str) -> anyhow::Result<u16> {
        self.send_raw_signed_at(body, self.shared.clock.now()).await
    }

    /// [`Self::send_raw`] with the signature's timestamp chosen by the test.
    pub async fn send_raw_signed_at(&self, body: &str, timestamp: i64) -> anyhow::Result<u16> {
        let url = self.shared.data().webhook_url.clone();
        if url.is_empty() {
            bail!("the fake Stripe has no webhook URL");
        }
        let signature = rookery::billing::webhook::sign(
            &self.shared.webhook_secret,
            timestamp,
            body.as_bytes(),
        );
        let response = self
            .shared
            .post_webhook(&url, &signature, body.to_owned())
            .await?;
        Ok(response)
    }
}

impl Drop for FakeStripe {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/customers", post(create_customer))
        .route("/v1/checkout/sessions", post(create_checkout_session))
        .route("/v1/billing_portal/sessions", post(create_portal_session))
        .route("/v1/invoices", get(list_invoices))
        .route(
            "/v1/checkout/sessions/{id}/expire",
            post(expire_checkout_session),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(retrieve_subscription)
                .post(update_subscription)
                .delete(cancel_subscription),
        )
        .route("/pay/{id}", get(show_checkout).post(pay_checkout))
        .route("/portal/{id}", get(show_portal))
        .route("/invoices/{id}", get(show_invoice))
        .fallback(|| async {
            stripe_error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                None,
                "Unrecognized request URL.",
                None,
            )
        })
        .with_state(shared)
}

// ---- the API ----

async fn create_customer(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let form = authorize_form(&headers, &body)?;
    let id = new_id("cus");
    let customer = json!({
        "id": id,
        "object": "customer",
        "address": null,
        "balance": 0,
        "created": shared.clock.now(),
        "currency": null,
        "default_source": null,
        "delinquent": false,
        "description": form.get("description"),
        "email": form.get("email"),
        "invoice_prefix": random_chars(8).to_uppercase(),
        "invoice_settings": { "custom_fields": null, "default_payment_method": null, "footer": null, "rendering_options": null },
        "livemode": false,
        "metadata": form.map("metadata"),
        "name": form.get("name"),
        "next_invoice_sequence": 1,
        "phone": form.get("phone"),
        "preferred_locales": [],
        "shipping": null,
        "tax_exempt": "none",
        "test_clock": null,
    });
    shared.data().customers.insert(id, customer.clone());
    Ok(Json(customer))
}

async fn create_checkout_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let form = authorize_form(&headers, &body)?;
    let missing = |param: &str| {
        stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_missing"),
            &format!("Missing required param: {param}."),
            Some(param),
        )
    };
    let Some(mode) = form.get("mode") else {
        return Err(missing("mode"));
    };
    if mode != "subscription" {
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_invalid_string"),
            "The fake Stripe only does subscription mode.",
            Some("mode"),
        ));
    }
    let Some(success_url) = form.get("success_url") else {
        return Err(missing("success_url"));
    };
    let Some(price) = form.get("line_items[0][price]") else {
        return Err(missing("line_items[0][price]"));
    };
    let quantity: i64 = form
        .get("line_items[0][quantity]")
        .and_then(|q| q.parse().ok())
        .unwrap_or(1);
    let customer = form.get("customer");
    let now = shared.clock.now();
    let id = format!("cs_test_{}", random_chars(40));
    let mut data = shared.data();
    if let Some(customer) = customer
        && !data.customers.contains_key(customer)
    {
        return Err(no_such(
            StatusCode::BAD_REQUEST,
            "customer",
            customer,
            Some("customer"),
        ));
    }
    let (unit_amount, currency) = price_of(&data, price);
    let session = json!({
        "id": id,
        "object": "checkout.session",
        "amount_subtotal": unit_amount * quantity,
        "amount_total": unit_amount * quantity,
        "cancel_url": form.get("cancel_url"),
        "client_reference_id": form.get("client_reference_id"),
        "created": now,
        "currency": currency,
        "customer": customer,
        "customer_email": form.get("customer_email"),
        "expires_at": now + 24 * 3600,
        "invoice": null,
        "livemode": false,
        "metadata": form.map("metadata"),
        "mode": "subscription",
        "payment_status": "unpaid",
        "status": "open",
        "subscription": null,
        "success_url": success_url,
        "url": format!("{}/pay/{id}", shared.base_url),
        // Not part of Stripe's object: what paying will need.
        "_line_item": { "price": price, "quantity": quantity },
        "_subscription_metadata": form.map("subscription_data[metadata]"),
    });
    data.sessions.insert(id, session.clone());
    Ok(Json(public(session)))
}

async fn create_portal_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let form = authorize_form(&headers, &body)?;
    let Some(customer) = form.get("customer") else {
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("parameter_missing"),
            "Missing required param: customer.",
            Some("customer"),
        ));
    };
    let mut data = shared.data();
    if !data.customers.contains_key(customer) {
        return Err(no_such(
            StatusCode::BAD_REQUEST,
            "customer",
            customer,
            Some("customer"),
        ));
    }
    let id = new_id("bps");
    let session = json!({
        "id": id,
        "object": "billing_portal.session",
        "configuration": "bpc_fake",
        "created": shared.clock.now(),
        "customer": customer,
        "flow": null,
        "livemode": false,
        "locale": null,
        "on_behalf_of": null,
        "return_url": form.get("return_url"),
        "url": format!("{}/portal/{id}", shared.base_url),
    });
    data.portal_sessions.insert(id, session.clone());
    Ok(Json(session))
}

async fn list_invoices(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&headers)?;
    let query = FormData::parse(query.as_deref().unwrap_or(""));
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let data = shared.data();
    let newest_first = data.invoices.iter().rev().filter(|invoice| {
        query
            .get("customer")
            .is_none_or(|customer| invoice["customer"] == customer)
    });
    let after: Vec<&Value> = match query.get("starting_after") {
        Some(cursor) => newest_first
            .skip_while(|i| i["id"] != cursor)
            .skip(1)
            .collect(),
        None => newest_first.collect(),
    };
    let page: Vec<Value> = after.iter().take(limit).map(|i| (*i).clone()).collect();
    Ok(Json(json!({
        "object": "list",
        "data": page,
        "has_more": after.len() > limit,
        "url": "/v1/invoices",
    })))
}

async fn cancel_subscription(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&headers)?;
    let Some(subscription) = shared.cancel_subscription(&id) else {
        return Err(no_such(
            StatusCode::NOT_FOUND,
            "subscription",
            &id,
            Some("id"),
        ));
    };
    shared
        .send_event("customer.subscription.deleted", subscription.clone(), None)
        .await;
    Ok(Json(subscription))
}

async fn retrieve_subscription(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&headers)?;
    match shared.data().subscriptions.get(&id) {
        Some(subscription) => Ok(Json(subscription.clone())),
        None => Err(no_such(
            StatusCode::NOT_FOUND,
            "subscription",
            &id,
            Some("id"),
        )),
    }
}

async fn update_subscription(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let form = authorize_form(&headers, &body)?;
    let (subscription, previous) = shared.update_subscription(&id, &form)?;
    if let Some(previous) = previous {
        shared
            .send_event(
                "customer.subscription.updated",
                subscription.clone(),
                Some(previous),
            )
            .await;
    }
    Ok(Json(subscription))
}

async fn expire_checkout_session(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&headers)?;
    let session = shared.expire_session(&id)?;
    shared
        .send_event("checkout.session.expired", session.clone(), None)
        .await;
    Ok(Json(session))
}

// ---- the pages a customer visits ----

async fn show_checkout(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Some(session) = shared.data().sessions.get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such checkout session</h1>"),
        )
            .into_response();
    };
    if session["status"] != "open" {
        return Html(format!(
            "<!doctype html><title>Paid</title><h1>This checkout session is {}</h1>",
            escape(session["status"].as_str().unwrap_or_default())
        ))
        .into_response();
    }
    let amount = format!(
        "{}.{:02} {}",
        session["amount_total"].as_i64().unwrap_or(0) / 100,
        session["amount_total"].as_i64().unwrap_or(0) % 100,
        session["currency"]
            .as_str()
            .unwrap_or_default()
            .to_uppercase()
    );
    let cancel = session["cancel_url"]
        .as_str()
        .map(|url| format!(r#"<p><a href="{}">Cancel</a></p>"#, escape(url)))
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Fake Stripe Checkout</title></head>
<body>
<h1>Fake Stripe Checkout</h1>
<p>Subscribe for <strong id="amount">{amount}</strong> per month.</p>
<form method="post" action="/pay/{id}">
<button type="submit" id="pay">Pay</button>
</form>
{cancel}
</body></html>"#,
        amount = escape(&amount),
        id = escape(&id),
    ))
    .into_response()
}

async fn pay_checkout(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let completed = {
        let mut data = shared.data();
        complete_checkout(&shared, &mut data, &id)
    };
    let (session, invoice) = match completed {
        Ok(done) => done,
        Err(message) => {
            return (
                StatusCode::BAD_REQUEST,
                Html(format!("<h1>{}</h1>", escape(&message))),
            )
                .into_response();
        }
    };
    shared
        .send_event("checkout.session.completed", public(session.clone()), None)
        .await;
    shared.send_event("invoice.paid", invoice, None).await;
    let success = session["success_url"]
        .as_str()
        .unwrap_or_default()
        .replace("{CHECKOUT_SESSION_ID}", &id);
    Redirect::to(&success).into_response()
}

/// What paying does to the fake's state: the subscription, its first (paid) invoice, and
/// the session marked complete. Returns the session and the invoice.
fn complete_checkout(shared: &Shared, data: &mut Data, id: &str) -> Result<(Value, Value), String> {
    let session = data
        .sessions
        .get(id)
        .ok_or("No such checkout session")?
        .clone();
    if session["status"] != "open" {
        return Err("This checkout session is no longer open".into());
    }
    let customer = match session["customer"].as_str() {
        Some(customer) => customer.to_owned(),
        None => {
            // Stripe creates a customer when the session named none.
            let customer = new_id("cus");
            data.customers.insert(
                customer.clone(),
                json!({ "id": customer, "object": "customer", "created": shared.clock.now(),
                        "email": session["customer_email"].clone(), "livemode": false,
                        "invoice_prefix": random_chars(8).to_uppercase(), "metadata": {} }),
            );
            customer
        }
    };
    let now = shared.clock.now();
    let price = session["_line_item"]["price"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let quantity = session["_line_item"]["quantity"].as_i64().unwrap_or(1);
    let (_, currency) = price_of(data, &price);
    let subscription_id = new_id("sub");
    let subscription = json!({
        "id": subscription_id,
        "object": "subscription",
        "billing_cycle_anchor": now,
        "cancel_at": null,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "customer": customer,
        "ended_at": null,
        "items": {
            "object": "list",
            "data": [subscription_item(data, &subscription_id, &price, quantity, now)],
            "has_more": false,
            "url": format!("/v1/subscription_items?subscription={subscription_id}"),
        },
        "latest_invoice": null,
        "livemode": false,
        "metadata": session["_subscription_metadata"].clone(),
        "start_date": now,
        "status": "active",
    });
    data.subscriptions
        .insert(subscription_id.clone(), subscription);
    let invoice = shared
        .new_invoice(data, &subscription_id, true)
        .map_err(|e| e.to_string())?;
    if let Some(subscription) = data.subscriptions.get_mut(&subscription_id) {
        subscription["latest_invoice"] = invoice["id"].clone();
    }
    let session = data
        .sessions
        .get_mut(id)
        .ok_or("No such checkout session")?;
    session["status"] = json!("complete");
    session["payment_status"] = json!("paid");
    session["customer"] = json!(customer);
    session["subscription"] = json!(subscription_id);
    session["invoice"] = invoice["id"].clone();
    // Stripe clears the URL once the session is complete.
    session["url"] = Value::Null;
    Ok((session.clone(), invoice))
}

async fn show_portal(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let Some(session) = shared.data().portal_sessions.get(&id).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Html("<h1>No such portal session</h1>"),
        )
            .into_response();
    };
    let back = session["return_url"]
        .as_str()
        .map(|url| format!(r#"<p><a href="{}">Return</a></p>"#, escape(url)))
        .unwrap_or_default();
    Html(format!(
        "<!doctype html><title>Fake Stripe customer portal</title>\
         <h1>Customer portal</h1><p>Customer {}</p>{back}",
        escape(session["customer"].as_str().unwrap_or_default())
    ))
    .into_response()
}

async fn show_invoice(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let data = shared.data();
    let Some(invoice) = data.invoices.iter().find(|i| i["id"] == id.as_str()) else {
        return (StatusCode::NOT_FOUND, Html("<h1>No such invoice</h1>")).into_response();
    };
    Html(format!(
        "<!doctype html><title>Invoice</title><h1>Invoice {}</h1><p>Status: {}</p>",
        escape(invoice["number"].as_str().unwrap_or_default()),
        escape(invoice["status"].as_str().unwrap_or_default())
    ))
    .into_response()
}

// ---- state and webhooks ----

impl Shared {
    fn data(&self) -> MutexGuard<'_, Data> {
        self.data
            .lock()
            .expect("the fake Stripe's state is not poisoned")
    }

    /// A new invoice for one period of the subscription, paid or left open after a failed
    /// attempt, stored and returned.
    fn new_invoice(
        &self,
        data: &mut Data,
        subscription_id: &str,
        paid: bool,
    ) -> anyhow::Result<Value> {
        let subscription = data
            .subscriptions
            .get(subscription_id)
            .context("no such subscription")?
            .clone();
        let customer_id = subscription["customer"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let item = &subscription["items"]["data"][0];
        let amount = item["price"]["unit_amount"].as_i64().unwrap_or(0)
            * item["quantity"].as_i64().unwrap_or(1);
        let currency = subscription["currency"].clone();
        let customer = data
            .customers
            .get_mut(&customer_id)
            .context("no such customer")?;
        let sequence = customer["next_invoice_sequence"].as_i64().unwrap_or(1);
        customer["next_invoice_sequence"] = json!(sequence + 1);
        let number = format!(
            "{}-{sequence:04}",
            customer["invoice_prefix"].as_str().unwrap_or("FAKE")
        );
        let first = !data
            .invoices
            .iter()
            .any(|i| i["parent"]["subscription_details"]["subscription"] == subscription_id);
        let now = self.clock.now();
        let id = new_id("in");
        let invoice = json!({
            "id": id,
            "object": "invoice",
            "amount_due": amount,
            "amount_paid": if paid { amount } else { 0 },
            "amount_remaining": if paid { 0 } else { amount },
            "attempt_count": 1,
            "attempted": true,
            "billing_reason": if first { "subscription_create" } else { "subscription_cycle" },
            "collection_method": "charge_automatically",
            "created": now,
            "currency": currency,
            "customer": customer_id,
            "customer_email": customer["email"].clone(),
            "hosted_invoice_url": format!("{}/invoices/{id}", self.base_url),
            "invoice_pdf": format!("{}/invoices/{id}/pdf", self.base_url),
            "lines": {
                "object": "list",
                "data": [{
                    "id": new_id("il"),
                    "object": "line_item",
                    "amount": amount,
                    "currency": currency,
                    "description": format!("{} × {}", item["quantity"], item["price"]["id"].as_str().unwrap_or_default()),
                    "period": { "start": now, "end": now + 30 * 24 * 3600 },
                    "pricing": { "price_details": { "price": item["price"]["id"].clone() }, "type": "price_details" },
                    "quantity": item["quantity"].clone(),
                }],
                "has_more": false,
                "url": format!("/v1/invoices/{id}/lines"),
            },
            "livemode": false,
            "metadata": {},
            "next_payment_attempt": if paid { Value::Null } else { json!(now + 3 * 24 * 3600) },
            "number": number,
            "parent": {
                "type": "subscription_details",
                "quote_details": null,
                "subscription_details": {
                    "metadata": subscription["metadata"].clone(),
                    "subscription": subscription_id,
                },
            },
            "period_end": now,
            "period_start": now,
            "status": if paid { "paid" } else { "open" },
            "status_transitions": {
                "finalized_at": now,
                "marked_uncollectible_at": null,
                "paid_at": if paid { json!(now) } else { Value::Null },
                "voided_at": null,
            },
            "subtotal": amount,
            "total": amount,
        });
        data.invoices.push(invoice.clone());
        Ok(invoice)
    }

    /// Ends a subscription now; returns it as it is afterwards.
    fn cancel_subscription(&self, id: &str) -> Option<Value> {
        let now = self.clock.now();
        let mut data = self.data();
        let subscription = data.subscriptions.get_mut(id)?;
        subscription["status"] = json!("canceled");
        subscription["canceled_at"] = json!(now);
        subscription["ended_at"] = json!(now);
        Some(subscription.clone())
    }

    /// `POST /v1/subscriptions/{id}` as Stripe documents it, for the parameters Rookery
    /// and the customer portal use: `items[n][id]` with `items[n][price]` (the item moves
    /// to that price; its quantity becomes `items[n][quantity]`, else 1),
    /// `items[n][quantity]` alone, `items[n][deleted]`, `items[n][price]` without an id
    /// (a new item), `metadata[k]` (an empty value removes the key) and
    /// `proration_behavior` (`create_prorations`, the default, `none` or `always_invoice`;
    /// checked, but the fake bills no prorations). Returns the subscription afterwards and,
    /// when something changed, the `previous_attributes` of the update event.
    fn update_subscription(
        &self,
        id: &str,
        form: &FormData,
    ) -> Result<(Value, Option<Value>), ApiError> {
        if let Some(behavior) = form.get("proration_behavior")
            && !matches!(behavior, "create_prorations" | "none" | "always_invoice")
        {
            return Err(stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_invalid_string"),
                "Invalid proration_behavior: must be one of create_prorations, none, or always_invoice",
                Some("proration_behavior"),
            ));
        }
        let now = self.clock.now();
        let mut data = self.data();
        let Some(current) = data.subscriptions.get(id).cloned() else {
            return Err(no_such(
                StatusCode::NOT_FOUND,
                "subscription",
                id,
                Some("id"),
            ));
        };
        let item_changes = form.indexed("items");
        if current["status"] == "canceled" && !item_changes.is_empty() {
            return Err(stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                "A canceled subscription can only update its cancellation_details and metadata.",
                None,
            ));
        }
        let mut items: Vec<Value> = current["items"]["data"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for (n, change) in &item_changes {
            let param = |field: &str| format!("items[{n}][{field}]");
            let quantity = match change.get("quantity") {
                Some(q) => Some(q.parse::<i64>().ok().filter(|q| *q >= 0).ok_or_else(|| {
                    stripe_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        Some("parameter_invalid_integer"),
                        "Invalid integer",
                        Some(&param("quantity")),
                    )
                })?),
                None => None,
            };
            let price = change.get("price").map(String::as_str);
            match change.get("id") {
                Some(item_id) => {
                    let Some(item) = items.iter_mut().find(|i| i["id"] == item_id.as_str()) else {
                        return Err(no_such(
                            StatusCode::BAD_REQUEST,
                            "subscription item",
                            item_id,
                            Some(&param("id")),
                        ));
                    };
                    if change.get("deleted").map(String::as_str) == Some("true") {
                        let gone = item["id"].clone();
                        items.retain(|i| i["id"] != gone);
                        continue;
                    }
                    if let Some(price) = price {
                        item["price"] = price_object(&data, price);
                        item["quantity"] = json!(quantity.unwrap_or(1));
                    } else if let Some(quantity) = quantity {
                        item["quantity"] = json!(quantity);
                    }
                }
                None => {
                    let Some(price) = price else {
                        return Err(stripe_error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request_error",
                            Some("parameter_missing"),
                            &format!("Missing required param: {}.", param("price")),
                            Some(&param("price")),
                        ));
                    };
                    items.push(subscription_item(
                        &data,
                        id,
                        price,
                        quantity.unwrap_or(1),
                        now,
                    ));
                }
            }
        }
        let mut metadata = current["metadata"].clone();
        if let (Some(map), Value::Object(changes)) =
            (metadata.as_object_mut(), form.map("metadata"))
        {
            for (key, value) in changes {
                if value.as_str() == Some("") {
                    map.remove(&key);
                } else {
                    map.insert(key, value);
                }
            }
        }
        let mut previous = serde_json::Map::new();
        let subscription = data.subscriptions.get_mut(id).expect("looked up above");
        if current["items"]["data"] != json!(items) {
            previous.insert("items".into(), current["items"].clone());
            subscription["items"]["data"] = json!(items);
        }
        if current["metadata"] != metadata {
            previous.insert("metadata".into(), current["metadata"].clone());
            subscription["metadata"] = metadata;
        }
        let previous = (!previous.is_empty()).then_some(Value::Object(previous));
        Ok((subscription.clone(), previous))
    }

    /// Expires an open checkout session (as Stripe does after 24 hours, or when asked);
    /// returns it as it is afterwards.
    fn expire_session(&self, id: &str) -> Result<Value, ApiError> {
        let mut data = self.data();
        let Some(session) = data.sessions.get_mut(id) else {
            return Err(no_such(
                StatusCode::NOT_FOUND,
                "checkout session",
                id,
                Some("session"),
            ));
        };
        if session["status"] != "open" {
            return Err(stripe_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &format!(
                    "Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout Session has a status of \"{}\".",
                    session["status"].as_str().unwrap_or_default()
                ),
                None,
            ));
        }
        session["status"] = json!("expired");
        session["url"] = Value::Null;
        Ok(public(session.clone()))
    }

    /// Builds an event around `object`, delivers it and records it; returns the event.
    async fn send_event(&self, kind: &str, object: Value, previous: Option<Value>) -> Value {
        let mut data = json!({ "object": object });
        if let Some(previous) = previous {
            data["previous_attributes"] = previous;
        }
        let event = json!({
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": self.clock.now(),
            "data": data,
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "type": kind,
        });
        let sent = self.deliver(event.clone()).await;
        self.data().events.push(sent);
        event
    }

    /// POSTs the event (pretty-printed, as Stripe sends it) until a 2xx answer or the
    /// attempts run out; each attempt is signed afresh, as Stripe's retries are.
    async fn deliver(&self, event: Value) -> SentEvent {
        let url = self.data().webhook_url.clone();
        let mut sent = SentEvent {
            event,
            delivered: false,
            last_status: None,
            attempts: 0,
        };
        if url.is_empty() {
            return sent;
        }
        let body = serde_json::to_string_pretty(&sent.event).expect("JSON values serialise");
        for attempt in 0..=DELIVERY_BACKOFF.len() {
            if attempt > 0 {
                tokio::time::sleep(DELIVERY_BACKOFF[attempt - 1]).await;
            }
            sent.attempts += 1;
            let signature = rookery::billing::webhook::sign(
                &self.webhook_secret,
                self.clock.now(),
                body.as_bytes(),
            );
            match self.post_webhook(&url, &signature, body.clone()).await {
                Ok(status) => {
                    sent.last_status = Some(status);
                    if (200..300).contains(&status) {
                        sent.delivered = true;
                        break;
                    }
                }
                Err(_) => sent.last_status = None,
            }
        }
        sent
    }

    async fn post_webhook(&self, url: &str, signature: &str, body: String) -> anyhow::Result<u16> {
        let response = self
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .header("Stripe-Signature", signature)
            .body(body)
            .send()
            .await
            .with_context(|| format!("delivering a webhook to {url}"))?;
        Ok(response.status().as_u16())
    }
}

fn price_of(data: &Data, price: &str) -> (i64, String) {
    data.prices
        .get(price)
        .cloned()
        .unwrap_or((DEFAULT_PRICE.0, DEFAULT_PRICE.1.to_owned()))
}

/// A new subscription item: `quantity` units of `price`, its period starting now.
fn subscription_item(
    data: &Data,
    subscription_id: &str,
    price: &str,
    quantity: i64,
    now: i64,
) -> Value {
    json!({
        "id": new_id("si"),
        "object": "subscription_item",
        "created": now,
        "current_period_start": now,
        "current_period_end": now + 30 * 24 * 3600,
        "metadata": {},
        "price": price_object(data, price),
        "quantity": quantity,
        "subscription": subscription_id,
    })
}

/// The price object Stripe embeds in subscription items: monthly, licensed.
fn price_object(data: &Data, price: &str) -> Value {
    let (unit_amount, currency) = price_of(data, price);
    json!({
        "id": price,
        "object": "price",
        "active": true,
        "currency": currency,
        "recurring": { "interval": "month", "interval_count": 1, "usage_type": "licensed" },
        "type": "recurring",
        "unit_amount": unit_amount,
    })
}

/// The object as the API shows it: without the fake's own `_` fields.
fn public(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.retain(|key, _| !key.starts_with('_'));
    }
    object
}

// ---- Stripe's request and error formats ----

/// A form-encoded body or query string: Stripe's nested keys (`metadata[k]`,
/// `line_items[0][price]`) kept as flat names.
struct FormData(Vec<(String, String)>);

impl FormData {
    fn parse(encoded: &str) -> FormData {
        FormData(
            url::form_urlencoded::parse(encoded.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The entries of a list parameter, by index: `items[0][id]=si_1&items[0][price]=p`
    /// → `[(0, {"id": "si_1", "price": "p"})]`, in index order.
    fn indexed(&self, prefix: &str) -> Vec<(usize, HashMap<String, String>)> {
        let start = format!("{prefix}[");
        let mut entries: Vec<(usize, HashMap<String, String>)> = Vec::new();
        for (key, value) in &self.0 {
            let Some((n, field)) = key
                .strip_prefix(&start)
                .and_then(|rest| rest.split_once("]["))
            else {
                continue;
            };
            let (Ok(n), Some(field)) = (n.parse::<usize>(), field.strip_suffix(']')) else {
                continue;
            };
            match entries.iter_mut().find(|(i, _)| *i == n) {
                Some((_, fields)) => {
                    fields.insert(field.to_owned(), value.clone());
                }
                None => entries.push((n, HashMap::from([(field.to_owned(), value.clone())]))),
            }
        }
        entries.sort_by_key(|(n, _)| *n);
        entries
    }

    /// The string map under `prefix`: `metadata[a]=1&metadata[b]=2` → `{"a":"1","b":"2"}`.
    fn map(&self, prefix: &str) -> Value {
        let start = format!("{prefix}[");
        let map: serde_json::Map<String, Value> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(&start)?.strip_suffix(']')?;
                (!key.contains('[')).then(|| (key.to_owned(), json!(v)))
            })
            .collect();
        Value::Object(map)
    }
}

fn authorize(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(key) if key == FakeStripe::API_KEY => Ok(()),
        Some(key) => Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            &format!(
                "Invalid API Key provided: {}",
                key.chars().take(8).collect::<String>() + "****"
            ),
            None,
        )),
        None => Err(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            "You did not provide an API key.",
            None,
        )),
    }
}

fn authorize_form(headers: &HeaderMap, body: &str) -> Result<FormData, ApiError> {
    authorize(headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-www-form-urlencoded");
    if !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "Stripe's API takes form-encoded bodies.",
            None,
        ));
    }
    Ok(FormData::parse(body))
}

fn no_such(status: StatusCode, what: &str, id: &str, param: Option<&str>) -> ApiError {
    stripe_error(
        status,
        "invalid_request_error",
        Some("resource_missing"),
        &format!("No such {what}: '{id}'"),
        param,
    )
}

fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> ApiError {
    let mut error = json!({ "type": kind, "message": message });
    if let Some(code) = code {
        error["code"] = json!(code);
        error["doc_url"] = json!(format!(
            "https://stripe.com/docs/error-codes/{}",
            code.replace('_', "-")
        ));
    }
    if let Some(param) = param {
        error["param"] = json!(param);
    }
    ApiError(status, json!({ "error": error }))
}

/// An answer in Stripe's error format: the status and `{"error": {…}}`.
struct ApiError(StatusCode, Value);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

// ---- ids and HTML ----

/// `{prefix}_` and 24 random letters and digits, like Stripe's ids.
fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_chars(24))
}

fn random_chars(n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}
