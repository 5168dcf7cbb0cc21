//! The billing grace period and the ends of a subscription, in process: a panel with its
//! local node and billing on (`grace_days = 1`), a fake Stripe whose clock moves with the
//! panel's, and domains paid through the fake checkout.
//!
//! A failed payment leaves the domain active, with the deadline on its page, until the
//! clock passes the deadline; the billing sweep then suspends it. A payment inside the
//! window clears the deadline, so the domain is never suspended. A subscription Stripe
//! reports `unpaid` or `canceled` suspends the domain at once and schedules its deletion
//! after the retention period; a late payment does not bring it back, and a subscription
//! cancelled before the first payment withdraws the order.

use rookery::{clock::Clock, config::Settings};
use rookery_tests::{
    app::{
        TestApp, TestClient, eventually, location, plan_form, spawn_app_with, unique_email,
        with_local_node,
    },
    fake_stripe::{API_VERSION, FakeStripe},
};
use serde_json::{Value, json};
use sqlx::Row;

const WEBHOOK_SECRET: &str = "whsec_rookery_grace_test";
const DAY: i64 = 86_400;

/// The panel, the fake Stripe, their clocks, and a customer with a paid plan to order.
struct Billing {
    app: TestApp,
    fake: FakeStripe,
    /// The fake's clock: moved with the panel's, so its signatures stay fresh.
    fake_clock: Clock,
    customer: TestClient,
    org: String,
    plan_id: String,
}

/// What the panel knows of a domain's billing.
#[derive(Debug, PartialEq, Eq)]
struct DomainBilling {
    id: String,
    state: String,
    grace_until: Option<i64>,
    delete_after: Option<i64>,
    subscription: Option<String>,
}

/// A panel on free loopback ports with its local node, fast loops, and billing through a
/// fake Stripe with a one-day grace period; sessions outlive the clock's jumps.
fn settings(fake: &FakeStripe) -> impl FnOnce(&mut Settings) + '_ {
    move |s| {
        with_local_node(s);
        s.alerts.enabled = false;
        s.stripe.api_base = fake.base_url().to_owned();
        s.stripe.secret_key = FakeStripe::API_KEY.to_owned();
        s.stripe.webhook_secret = WEBHOOK_SECRET.to_owned();
        s.stripe.grace_days = 1;
        s.session.idle_timeout_secs = 365 * DAY;
        s.session.absolute_timeout_secs = 365 * DAY;
    }
}

async fn start() -> Billing {
    let fake_clock = Clock::default();
    let fake = FakeStripe::start_with_clock("", WEBHOOK_SECRET, fake_clock.clone())
        .await
        .expect("the fake Stripe starts");
    fake.set_price("price_pro", 450, "eur");
    let app = spawn_app_with(settings(&fake)).await;
    fake.set_webhook_url(&format!("{}/webhooks/stripe", app.address));

    let admin = app.admin().await;
    let r = admin
        .post_form("/admin/plans", &plan_form("Pro", "4.50", Some("price_pro")))
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let plan_id: String = sqlx::query_scalar("SELECT id FROM plans WHERE name = 'Pro'")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    let (customer, org) = app.customer(&unique_email("payer"), "Payers").await;
    Billing {
        app,
        fake,
        fake_clock,
        customer,
        org,
        plan_id,
    }
}

impl Billing {
    /// Moves the panel's clock and the fake's together.
    fn advance(&self, secs: i64) {
        self.app.clock.advance(secs);
        self.fake_clock.advance(secs);
    }

    /// Orders `domain` on the paid plan; returns the Stripe Checkout URL it is sent to.
    async fn order(&self, domain: &str) -> String {
        let r = self
            .customer
            .post_form(
                &format!("{}/domains", self.org),
                &[("domain", domain), ("plan", self.plan_id.as_str())],
            )
            .await;
        assert_eq!(r.status(), 303, "ordering {domain}");
        let checkout = location(&r);
        assert!(
            checkout.starts_with(self.fake.base_url()),
            "sent to Stripe Checkout: {checkout}"
        );
        checkout
    }

    /// Orders `domain`, pays on the fake checkout page and waits until the domain is
    /// active on the local node; returns the domain page's path.
    async fn paid_domain(&self, domain: &str) -> String {
        let checkout = self.order(domain).await;
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(&checkout)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "paid");
        eventually(30, || async { self.domain(domain).await.state == "active" })
            .await
            .unwrap_or_else(|e| panic!("{domain} goes live after payment: {e:#}"));
        format!("{}/domains/{}", self.org, self.domain(domain).await.id)
    }

    async fn domain(&self, domain: &str) -> DomainBilling {
        let row = sqlx::query(
            "SELECT id, state, grace_until, delete_after, stripe_subscription_id FROM domains WHERE domain = $1",
        )
        .bind(domain)
        .fetch_one(&self.app.state.db)
        .await
        .unwrap();
        DomainBilling {
            id: row.get("id"),
            state: row.get("state"),
            grace_until: row.get("grace_until"),
            delete_after: row.get("delete_after"),
            subscription: row.get("stripe_subscription_id"),
        }
    }

    async fn subscription_of(&self, domain: &str) -> String {
        self.domain(domain)
            .await
            .subscription
            .expect("a paid domain has its subscription")
    }

    /// Runs the billing sweep the reconciler's loop runs, now.
    async fn sweep(&self) {
        rookery::billing::sweep(&self.app.state)
            .await
            .expect("the billing sweep runs");
    }

    /// Sends a signed `customer.subscription.updated` for `subscription` whose status is
    /// now `status` (Stripe's own event for it, which the fake has no call for); returns
    /// what the panel recorded doing with it.
    async fn subscription_now(&self, subscription: Value, status: &str) -> String {
        let previous = subscription["status"].clone();
        let mut object = subscription;
        object["status"] = json!(status);
        let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let event = json!({
            "id": id,
            "object": "event",
            "api_version": API_VERSION,
            "created": self.fake_clock.now(),
            "data": { "object": object, "previous_attributes": { "status": previous } },
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "type": "customer.subscription.updated",
        });
        let answer = self.fake.send_raw(&event.to_string()).await.unwrap();
        assert_eq!(answer, 200, "the panel takes the event");
        sqlx::query_scalar("SELECT outcome FROM stripe_events WHERE id = $1")
            .bind(&id)
            .fetch_one(&self.app.state.db)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_failed_payment_keeps_the_domain_active_until_the_grace_period_ends_then_suspends_it() {
    let b = start().await;
    let page = b.paid_domain("grace.example.org").await;
    let sub = b.subscription_of("grace.example.org").await;

    let failed_at = b.app.clock.now();
    b.fake.fail_payment(&sub).await.unwrap();
    let d = b.domain("grace.example.org").await;
    assert_eq!(
        d.state, "active",
        "a failed payment does not suspend at once"
    );
    let deadline = d.grace_until.expect("a deadline is set");
    assert!(
        (failed_at + DAY..=failed_at + DAY + 5).contains(&deadline),
        "one grace day from the failure: {deadline} vs {failed_at}"
    );
    let when = rookery::clock::format_ts(deadline);
    let html = b.customer.page(&page).await;
    assert!(html.contains("data-state=\"active\""), "{html}");
    assert!(
        html.contains(&format!(
            "The last payment failed. Unless it is paid, the domain is suspended after {when}."
        )),
        "the page says when: {html}"
    );
    let billing = b.customer.page(&format!("{}/billing", b.org)).await;
    assert!(
        billing.contains(&format!(
            "payment failed; suspended after {when} unless paid"
        )),
        "{billing}"
    );

    // An hour before the deadline the sweep leaves it alone.
    b.advance(DAY - 3600);
    b.sweep().await;
    let d = b.domain("grace.example.org").await;
    assert_eq!(d.state, "active");
    assert_eq!(d.grace_until, Some(deadline), "the deadline does not move");

    // Past the deadline: suspended, and the deadline is done with.
    b.advance(3600 + 10);
    b.sweep().await;
    let d = b.domain("grace.example.org").await;
    assert_eq!(d.state, "suspended", "the grace period is over");
    assert_eq!(d.grace_until, None);
    assert_eq!(d.delete_after, None, "an unpaid domain is not deleted");
    let html = b.customer.page(&page).await;
    assert!(html.contains("data-state=\"suspended\""), "{html}");
    assert!(!html.contains("The last payment failed"), "{html}");
    assert_eq!(
        b.app
            .count(
                "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'domain.billing' AND target = 'grace.example.org' AND details = 'grace period over: suspended'"
            )
            .await,
        1,
        "the suspension is in the audit log"
    );

    // Paying late brings it back.
    b.fake.pay_renewal(&sub).await.unwrap();
    let d = b.domain("grace.example.org").await;
    assert_eq!(d.state, "active", "resumed by the payment");
    assert_eq!(d.grace_until, None);
}

#[tokio::test]
async fn a_payment_inside_the_grace_period_clears_the_deadline_and_the_domain_is_never_suspended() {
    let b = start().await;
    let page = b.paid_domain("saved.example.org").await;
    let sub = b.subscription_of("saved.example.org").await;

    b.fake.fail_payment(&sub).await.unwrap();
    assert!(b.domain("saved.example.org").await.grace_until.is_some());
    b.advance(12 * 3600);
    b.sweep().await;
    assert_eq!(b.domain("saved.example.org").await.state, "active");

    // Stripe's retry succeeds half-way through the window.
    b.fake.pay_renewal(&sub).await.unwrap();
    let d = b.domain("saved.example.org").await;
    assert_eq!(d.grace_until, None, "the payment clears the deadline");
    assert_eq!(d.state, "active");
    let html = b.customer.page(&page).await;
    assert!(!html.contains("The last payment failed"), "{html}");
    let billing = b.customer.page(&format!("{}/billing", b.org)).await;
    assert!(billing.contains("paid up"), "{billing}");
    assert!(!billing.contains("payment failed"), "{billing}");

    // Long after the old deadline, the sweep finds nothing to do.
    b.advance(3 * DAY);
    b.sweep().await;
    let d = b.domain("saved.example.org").await;
    assert_eq!(d.state, "active", "never suspended");
    assert_eq!(d.grace_until, None);
    assert!(
        b.customer
            .page(&page)
            .await
            .contains("data-state=\"active\"")
    );
}

#[tokio::test]
async fn a_subscription_stripe_reports_unpaid_or_canceled_suspends_the_domain_and_schedules_its_deletion()
 {
    let b = start().await;
    let unpaid_page = b.paid_domain("unpaid.example.org").await;
    b.paid_domain("canceled.example.org").await;
    let unpaid_sub = b.subscription_of("unpaid.example.org").await;
    let canceled_sub = b.subscription_of("canceled.example.org").await;
    let retention = b.app.state.settings.stripe.retention_days * DAY;

    // `unpaid`: Stripe gave up collecting. Suspended now, deleted after the retention.
    let now = b.app.clock.now();
    let outcome = b
        .subscription_now(b.fake.subscription(&unpaid_sub).unwrap(), "unpaid")
        .await;
    assert_eq!(outcome, "cancelled: suspended, deletion scheduled");
    let d = b.domain("unpaid.example.org").await;
    assert_eq!(d.state, "suspended");
    let delete_after = d.delete_after.expect("deletion is scheduled");
    assert!(
        (now + retention..=now + retention + 5).contains(&delete_after),
        "{delete_after} vs {now}"
    );
    let html = b.customer.page(&unpaid_page).await;
    assert!(html.contains("data-state=\"suspended\""), "{html}");
    assert!(
        html.contains(&format!(
            "its data will be deleted after {}",
            rookery::clock::format_ts(delete_after)
        )),
        "{html}"
    );

    // `canceled`: the same, for the other domain only.
    let outcome = b
        .subscription_now(b.fake.subscription(&canceled_sub).unwrap(), "canceled")
        .await;
    assert_eq!(outcome, "cancelled: suspended, deletion scheduled");
    let d = b.domain("canceled.example.org").await;
    assert_eq!(d.state, "suspended");
    assert!(d.delete_after.is_some());
    let billing = b.customer.page(&format!("{}/billing", b.org)).await;
    assert!(
        billing.contains("cancelled; data deleted after"),
        "{billing}"
    );

    // A payment that arrives after the end does not bring a cancelled domain back.
    b.fake.pay_renewal(&unpaid_sub).await.unwrap();
    let d = b.domain("unpaid.example.org").await;
    assert_eq!(d.state, "suspended", "a late payment does not resume it");
    assert_eq!(d.delete_after, Some(delete_after));

    // Any other status is only noted.
    let mut recovering = b.fake.subscription(&canceled_sub).unwrap();
    recovering["status"] = json!("past_due");
    let outcome = b.subscription_now(recovering, "active").await;
    assert_eq!(outcome, "noted");
    assert_eq!(b.domain("canceled.example.org").await.state, "suspended");

    // A subscription cancelled before its first payment withdraws the order.
    b.order("withdrawn.example.org").await;
    let pending = b.domain("withdrawn.example.org").await;
    assert_eq!(pending.state, "pending_payment");
    let mut never_paid = b.fake.subscription(&canceled_sub).unwrap();
    never_paid["id"] = json!("sub_never_paid");
    never_paid["metadata"] = json!({ "domain_id": pending.id });
    let outcome = b.subscription_now(never_paid, "canceled").await;
    assert_eq!(outcome, "cancelled before payment");
    assert_eq!(b.domain("withdrawn.example.org").await.state, "deleted");

    // After the retention period the sweep deletes the cancelled domains.
    b.advance(retention + 10);
    b.sweep().await;
    for domain in ["unpaid.example.org", "canceled.example.org"] {
        let state = b.domain(domain).await.state;
        assert!(
            state == "deleting" || state == "deleted",
            "{domain} is being deleted: {state}"
        );
    }
    eventually(30, || async {
        b.domain("unpaid.example.org").await.state == "deleted"
            && b.domain("canceled.example.org").await.state == "deleted"
    })
    .await
    .expect("the node removes them");
}
