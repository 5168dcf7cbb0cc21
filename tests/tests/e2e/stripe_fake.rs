//! The Stripe client (`rookery::billing::stripe`) against the fake Stripe
//! (`rookery_tests::fake_stripe`), with a tiny webhook receiver that verifies every delivery
//! with `rookery::billing::webhook`: the building blocks of the billing flow, checked
//! together before the panel uses them.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU32, Ordering},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use rookery::billing::{
    stripe::{StripeApiError, StripeClient},
    webhook::{self, Event, WebhookError},
};
use rookery::clock::Clock;
use rookery_tests::fake_stripe::FakeStripe;
use secrecy::SecretString;

const WEBHOOK_SECRET: &str = "whsec_fake_test_secret";

/// One POST the receiver got, and what verifying it gave.
struct Delivery {
    verified: Result<Event, WebhookError>,
}

/// A webhook endpoint on `127.0.0.1:0` that answers 500 to its first `fail_first`
/// requests, then 200 to deliveries that verify and 400 to the others.
struct Receiver {
    url: String,
    fail_first: Arc<AtomicU32>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

#[derive(Clone)]
struct ReceiverState {
    fail_first: Arc<AtomicU32>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let state = ReceiverState {
            fail_first: Arc::new(AtomicU32::new(0)),
            deliveries: Arc::new(Mutex::new(Vec::new())),
        };
        let app = Router::new()
            .route("/webhooks/stripe", post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/stripe", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url,
            fail_first: state.fail_first,
            deliveries: state.deliveries,
        }
    }

    /// The verified events received so far, in order.
    fn events(&self) -> Vec<Event> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .filter_map(|d| d.verified.clone().ok())
            .collect()
    }

    fn kinds(&self) -> Vec<String> {
        self.events().into_iter().map(|e| e.kind).collect()
    }
}

async fn receive(
    State(state): State<ReceiverState>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    if state
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    let verified = webhook::construct_event(header, &body, WEBHOOK_SECRET, Clock::default().now());
    let status = if verified.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    state.deliveries.lock().unwrap().push(Delivery { verified });
    status
}

fn client_for(fake: &FakeStripe, key: &str) -> StripeClient {
    StripeClient::new(fake.base_url(), &SecretString::from(key.to_owned())).unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Creates a customer and a checkout session, and pays it on the fake's page.
async fn subscribe(stripe: &StripeClient, domain_id: &str) {
    let customer = stripe
        .create_customer(Some("ada@example.test"), "Analytical Engines", "org-1")
        .await
        .unwrap();
    let session = stripe
        .create_checkout_session(
            &customer,
            "price_basic",
            "http://panel.test/billing/success?session={CHECKOUT_SESSION_ID}",
            "http://panel.test/billing/cancelled",
            domain_id,
            "plan-basic",
        )
        .await
        .unwrap();
    let paid = no_redirects().post(&session.url).send().await.unwrap();
    assert_eq!(paid.status(), 303);
}

#[tokio::test]
async fn a_customer_pays_on_the_fake_checkout_and_every_webhook_verifies() {
    let receiver = Receiver::start().await;
    let fake = FakeStripe::start(&receiver.url, WEBHOOK_SECRET)
        .await
        .unwrap();
    fake.set_price("price_basic", 1500, "eur");
    let stripe = client_for(&fake, FakeStripe::API_KEY);

    let customer = stripe
        .create_customer(Some("ada@example.test"), "Analytical Engines", "org-1")
        .await
        .unwrap();
    assert!(customer.starts_with("cus_"), "{customer}");

    let session = stripe
        .create_checkout_session(
            &customer,
            "price_basic",
            "http://panel.test/billing/success?session={CHECKOUT_SESSION_ID}",
            "http://panel.test/billing/cancelled",
            "domain-42",
            "plan-basic",
        )
        .await
        .unwrap();
    assert!(session.id.starts_with("cs_"), "{}", session.id);
    assert_eq!(
        session.url,
        format!("{}/pay/{}", fake.base_url(), session.id)
    );

    // The customer sees the payment page, then pays.
    let page = reqwest::get(&session.url).await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("15.00 EUR") && html.contains(">Pay</button>"),
        "{html}"
    );
    let paid = no_redirects().post(&session.url).send().await.unwrap();
    assert_eq!(paid.status(), 303);
    assert_eq!(
        paid.headers()["location"],
        format!("http://panel.test/billing/success?session={}", session.id).as_str()
    );

    // Both events arrived, signed so that webhook.rs accepts them.
    assert_eq!(
        receiver.kinds(),
        ["checkout.session.completed", "invoice.paid"]
    );
    let events = receiver.events();
    let completed = &events[0];
    assert!(completed.id.starts_with("evt_"));
    assert_eq!(completed.object_str("object"), Some("checkout.session"));
    assert_eq!(completed.object_str("id"), Some(session.id.as_str()));
    assert_eq!(completed.object_str("customer"), Some(customer.as_str()));
    assert_eq!(
        completed.object_str("client_reference_id"),
        Some("domain-42")
    );
    assert_eq!(completed.metadata("domain_id"), Some("domain-42"));
    assert_eq!(completed.metadata("plan_id"), Some("plan-basic"));
    let subscription = completed.subscription_id().unwrap().to_owned();
    assert!(subscription.starts_with("sub_"), "{subscription}");
    let invoice_paid = &events[1];
    assert_eq!(invoice_paid.subscription_id(), Some(subscription.as_str()));
    assert_eq!(invoice_paid.data_object["amount_paid"], 1500);
    assert_eq!(
        invoice_paid.data_object["parent"]["subscription_details"]["metadata"]["domain_id"],
        "domain-42"
    );
    assert_eq!(
        fake.subscription(&subscription).unwrap()["metadata"]["domain_id"],
        "domain-42"
    );

    // Paying twice is refused.
    let again = no_redirects().post(&session.url).send().await.unwrap();
    assert_eq!(again.status(), 400);

    let invoices = stripe.list_invoices(&customer).await.unwrap();
    assert_eq!(invoices.len(), 1);
    let invoice = &invoices[0];
    assert!(invoice.id.starts_with("in_"));
    assert_eq!(invoice.status.as_deref(), Some("paid"));
    assert_eq!(
        (invoice.amount_due, invoice.currency.as_str()),
        (1500, "eur")
    );
    assert!(
        invoice
            .number
            .as_deref()
            .is_some_and(|n| n.ends_with("-0001"))
    );
    let hosted = invoice.hosted_invoice_url.clone().unwrap();
    assert_eq!(reqwest::get(&hosted).await.unwrap().status(), 200);

    let portal = stripe
        .create_portal_session(&customer, "http://panel.test/billing")
        .await
        .unwrap();
    assert!(
        portal.starts_with(&format!("{}/portal/bps_", fake.base_url())),
        "{portal}"
    );
    let portal_page = reqwest::get(&portal).await.unwrap().text().await.unwrap();
    assert!(
        portal_page.contains("http://panel.test/billing"),
        "{portal_page}"
    );

    // A renewal fails: an open invoice, listed first.
    fake.fail_payment(&subscription).await.unwrap();
    assert_eq!(
        receiver.kinds()[2..],
        ["invoice.payment_failed", "customer.subscription.updated"]
    );
    let failed = &receiver.events()[2];
    assert_eq!(failed.subscription_id(), Some(subscription.as_str()));
    let invoices = stripe.list_invoices(&customer).await.unwrap();
    assert_eq!(invoices.len(), 2);
    assert_eq!(invoices[0].status.as_deref(), Some("open"));
    assert!(
        invoices[0]
            .number
            .as_deref()
            .is_some_and(|n| n.ends_with("-0002"))
    );

    // The API pages like Stripe's.
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/v1/invoices?customer={customer}&limit=1",
            fake.base_url()
        ))
        .bearer_auth(FakeStripe::API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["id"], invoices[0].id.as_str());

    // The retry succeeds: paid, and the subscription active again.
    fake.pay_renewal(&subscription).await.unwrap();
    assert_eq!(
        receiver.kinds()[4..],
        ["invoice.paid", "customer.subscription.updated"]
    );
    assert_eq!(
        fake.subscription(&subscription).unwrap()["status"],
        "active"
    );

    // Cancelling through the API ends the subscription and says so.
    stripe.cancel_subscription(&subscription).await.unwrap();
    let deleted = receiver.events().pop().unwrap();
    assert_eq!(deleted.kind, "customer.subscription.deleted");
    assert_eq!(deleted.object_str("id"), Some(subscription.as_str()));
    assert_eq!(deleted.object_str("status"), Some("canceled"));

    let sent = fake.events_sent();
    assert_eq!(sent.len(), 7);
    assert!(sent.iter().all(|e| e.delivered && e.attempts == 1));
    assert!(sent.iter().all(|e| e.event["object"] == "event"
        && e.event["livemode"] == false
        && e.event["api_version"].is_string()));
}

#[tokio::test]
async fn the_fake_refuses_a_wrong_key_and_unknown_objects_as_stripe_does() {
    let fake = FakeStripe::start("", WEBHOOK_SECRET).await.unwrap();

    let wrong = client_for(&fake, "sk_test_wrong");
    match wrong
        .create_customer(Some("a@example.test"), "A", "org")
        .await
    {
        Err(StripeApiError::Refused { status, kind, .. }) => {
            assert_eq!((status, kind.as_str()), (401, "invalid_request_error"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let stripe = client_for(&fake, FakeStripe::API_KEY);
    match stripe
        .create_checkout_session(
            "cus_nobody",
            "price_basic",
            "http://s",
            "http://c",
            "d",
            "p",
        )
        .await
    {
        Err(StripeApiError::Refused {
            status,
            code,
            message,
            ..
        }) => {
            assert_eq!(status, 400);
            assert_eq!(code.as_deref(), Some("resource_missing"));
            assert!(message.contains("cus_nobody"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    match stripe.cancel_subscription("sub_nothing").await {
        Err(StripeApiError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_deref()), (404, Some("resource_missing")));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(stripe.list_invoices("cus_nobody").await.unwrap().is_empty());
}

#[tokio::test]
async fn webhooks_are_retried_until_accepted_and_raw_sends_replay_or_go_stale() {
    let receiver = Receiver::start().await;
    let fake = FakeStripe::start(&receiver.url, WEBHOOK_SECRET)
        .await
        .unwrap();
    let stripe = client_for(&fake, FakeStripe::API_KEY);

    receiver.fail_first.store(2, Ordering::SeqCst);
    subscribe(&stripe, "domain-7").await;
    let sent = fake.events_sent();
    assert_eq!(sent[0].kind(), "checkout.session.completed");
    assert_eq!(
        (sent[0].delivered, sent[0].attempts, sent[0].last_status),
        (true, 3, Some(200))
    );
    assert_eq!((sent[1].delivered, sent[1].attempts), (true, 1));
    assert_eq!(
        receiver.kinds(),
        ["checkout.session.completed", "invoice.paid"]
    );

    // A replay of the same event, freshly signed, verifies again (deduplication by event
    // id is the receiver's job).
    let body = serde_json::to_string(&sent[0].event).unwrap();
    assert_eq!(fake.send_raw(&body).await.unwrap(), 200);
    let events = receiver.events();
    assert_eq!(events[2].id, events[0].id);

    // A stale signature is refused by the verifier.
    let stale = Clock::default().now() - 600;
    assert_eq!(fake.send_raw_signed_at(&body, stale).await.unwrap(), 400);
    let deliveries = receiver.deliveries.lock().unwrap();
    assert!(matches!(
        deliveries.last().unwrap().verified,
        Err(WebhookError::TimestampOutsideTolerance { .. })
    ));
}

/// A subscription's price changes as Stripe documents it (`POST /v1/subscriptions/{id}`
/// with `items[0][id]` and `items[0][price]`): the client reads the item, moves it, and
/// `customer.subscription.updated` carries the new price with the old items in
/// `previous_attributes`. The customer portal's change sends the same event; an open
/// checkout session can expire, with its event.
#[tokio::test]
async fn a_subscriptions_price_changes_through_the_api_and_the_portal() {
    let receiver = Receiver::start().await;
    let fake = FakeStripe::start(&receiver.url, WEBHOOK_SECRET)
        .await
        .unwrap();
    fake.set_price("price_basic", 500, "eur");
    fake.set_price("price_pro", 1500, "eur");
    let stripe = client_for(&fake, FakeStripe::API_KEY);
    subscribe(&stripe, "domain-9").await;
    let subscription = receiver.events()[0].subscription_id().unwrap().to_owned();

    let item = stripe.subscription_item(&subscription).await.unwrap();
    assert!(item.id.starts_with("si_"), "{}", item.id);
    assert_eq!(item.price_id, "price_basic");

    let moved = stripe
        .change_price(&subscription, &item.id, "price_pro")
        .await
        .unwrap();
    assert_eq!(
        (moved.id.as_str(), moved.price_id.as_str()),
        (item.id.as_str(), "price_pro")
    );
    let updated = receiver.events().pop().unwrap();
    assert_eq!(updated.kind, "customer.subscription.updated");
    assert_eq!(updated.subscription_price(), Some("price_pro"));
    assert_eq!(updated.metadata("domain_id"), Some("domain-9"));
    let sent = fake.events_sent().pop().unwrap();
    assert_eq!(
        sent.event["data"]["previous_attributes"]["items"]["data"][0]["price"]["id"],
        "price_basic"
    );
    let stored = fake.subscription(&subscription).unwrap();
    assert_eq!(stored["items"]["data"][0]["price"]["unit_amount"], 1500);
    assert_eq!(stored["items"]["data"][0]["quantity"], 1);

    // The same price again changes nothing, and sends nothing.
    let before = fake.events_sent().len();
    stripe
        .change_price(&subscription, &item.id, "price_pro")
        .await
        .unwrap();
    assert_eq!(fake.events_sent().len(), before);

    // An unknown item and a bad proration behaviour are refused as Stripe refuses them.
    match stripe
        .change_price(&subscription, "si_nothing", "price_basic")
        .await
    {
        Err(StripeApiError::Refused { status, code, .. }) => {
            assert_eq!((status, code.as_deref()), (400, Some("resource_missing")));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let bad = reqwest::Client::new()
        .post(format!(
            "{}/v1/subscriptions/{subscription}",
            fake.base_url()
        ))
        .bearer_auth(FakeStripe::API_KEY)
        .form(&[("proration_behavior", "sometimes")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // The customer portal moves it back.
    let event = fake
        .change_price(&subscription, "price_basic")
        .await
        .unwrap();
    assert_eq!(event["type"], "customer.subscription.updated");
    assert_eq!(
        receiver.events().pop().unwrap().subscription_price(),
        Some("price_basic")
    );

    // A cancelled subscription's items cannot change.
    stripe.cancel_subscription(&subscription).await.unwrap();
    match stripe
        .change_price(&subscription, &item.id, "price_pro")
        .await
    {
        Err(StripeApiError::Refused { status, .. }) => assert_eq!(status, 400),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // An open checkout session expires unpaid.
    let customer = stripe
        .create_customer(None, "Later", "org-2")
        .await
        .unwrap();
    let session = stripe
        .create_checkout_session(
            &customer,
            "price_basic",
            "http://s",
            "http://c",
            "domain-10",
            "p",
        )
        .await
        .unwrap();
    let expired = fake.expire_checkout(&session.id).await.unwrap();
    assert_eq!(expired["type"], "checkout.session.expired");
    assert_eq!(expired["data"]["object"]["status"], "expired");
    assert_eq!(
        expired["data"]["object"]["metadata"]["domain_id"],
        "domain-10"
    );
    let paid = no_redirects().post(&session.url).send().await.unwrap();
    assert_eq!(paid.status(), 400, "an expired session cannot be paid");
    assert!(fake.expire_checkout(&session.id).await.is_err());
}
