//! Issue 5 end to end with billing on: a real panel process with its local node, a local
//! fake Stripe that signs its webhooks as Stripe does, and slixmpp. A customer orders a
//! domain on a paid plan, pays through the fake checkout, the domain becomes active, an
//! account logs in; a failed payment (no grace period here) suspends the domain and the
//! client is refused; a later payment brings it back; cancelling schedules deletion. Bad
//! webhooks are refused, a replayed one is processed once. A domain's plan changes from
//! its page (the subscription's price at Stripe, the node's account limit) or in Stripe's
//! customer portal; a name whose order was abandoned or whose domain was deleted can be
//! ordered again.

use std::time::Duration;

use rookery::billing::webhook;
use rookery_tests::{
    app::{PASSWORD, TestClient, eventually, location, unique_email},
    fake_stripe::FakeStripe,
    node::run_python,
    process::PanelProcess,
};

const WEBHOOK_SECRET: &str = "whsec_rookery_test_secret";

async fn slixmpp_login(
    port: &str,
    jid: &str,
    password: &str,
    ca: &std::path::Path,
) -> (bool, String) {
    let out = run_python(
        "login_check.py",
        &["127.0.0.1", port, jid, password, ca.to_str().unwrap()],
        Duration::from_secs(60),
    )
    .await
    .expect("login_check.py runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The demo panel (with its local node) billing through `fake`, webhooks pointed at it,
/// fast reconcile loops; `extra` adds settings.
async fn billing_panel(
    fake: &FakeStripe,
    extra: &[(&str, &str)],
) -> (PanelProcess, rookery_tests::process::LocalNodePorts) {
    let mut env = vec![
        ("ROOKERY_STRIPE__API_BASE", fake.base_url()),
        ("ROOKERY_STRIPE__SECRET_KEY", FakeStripe::API_KEY),
        ("ROOKERY_STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
    ];
    env.extend_from_slice(extra);
    let (panel, ports) = PanelProcess::start_demo(&env)
        .await
        .expect("the panel starts");
    fake.set_webhook_url(&panel.url("/webhooks/stripe"));
    (panel, ports)
}

async fn domain_state(panel: &PanelProcess, domain: &str) -> String {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    // The live domain of that name, else the one deleted last.
    let state: String = sqlx::query_scalar(
        "SELECT state FROM domains WHERE domain = $1
         ORDER BY CASE WHEN state = 'deleted' THEN 1 ELSE 0 END, updated_at DESC LIMIT 1",
    )
    .bind(domain)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    state
}

#[tokio::test]
async fn a_paid_domain_goes_live_is_suspended_when_unpaid_and_comes_back_when_paid() {
    let fake = FakeStripe::start("", WEBHOOK_SECRET)
        .await
        .expect("the fake Stripe starts");
    fake.set_price("price_pro", 450, "eur");
    let (panel, ports) = billing_panel(&fake, &[("ROOKERY_STRIPE__GRACE_DAYS", "0")]).await;
    let c2s = ports.c2s.to_string();

    // The admin's paid plan.
    let admin = panel.admin_client().await.expect("an admin");
    let plan = rookery_tests::app::plan_form("Pro", "4.50", None);
    let r = admin.post_form("/admin/plans", &plan).await;
    assert_eq!(
        r.status(),
        422,
        "a paid plan needs its Stripe price while billing is on"
    );
    let with_price = rookery_tests::app::plan_form("Pro", "4.50", Some("price_pro"));
    assert_eq!(
        admin.post_form("/admin/plans", &with_price).await.status(),
        303
    );

    // The customer orders and is sent to Stripe Checkout.
    let customer = TestClient::new(&panel.base_url);
    let r = customer
        .post_form(
            "/signup",
            &[
                ("email", unique_email("payer").as_str()),
                ("password", PASSWORD),
                ("org_name", "Payers"),
            ],
        )
        .await;
    let org = location(&r).split('?').next().unwrap().to_string();
    let html = customer.page(&format!("{org}/domains")).await;
    assert!(html.contains("EUR 4.50 / month"));
    let marker = "name=\"plan\" value=\"";
    let at = html.find(marker).unwrap() + marker.len();
    let plan_id = html[at..at + html[at..].find('"').unwrap()].to_string();
    let r = customer
        .post_form(
            &format!("{org}/domains"),
            &[("domain", "paid.demo.test"), ("plan", plan_id.as_str())],
        )
        .await;
    assert_eq!(r.status(), 303);
    let checkout = location(&r);
    assert!(
        checkout.starts_with(fake.base_url()),
        "sent to Stripe Checkout: {checkout}"
    );
    assert_eq!(
        domain_state(&panel, "paid.demo.test").await,
        "pending_payment"
    );
    let domain_page = {
        let id: String = {
            let pool = rookery_common::db::connect(&panel.database.url, 1)
                .await
                .unwrap();
            let id = sqlx::query_scalar("SELECT id FROM domains WHERE domain = 'paid.demo.test'")
                .fetch_one(&pool)
                .await
                .unwrap();
            pool.close().await;
            id
        };
        format!("{org}/domains/{id}")
    };
    assert!(
        customer
            .page(&domain_page)
            .await
            .contains("waits for its first payment")
    );

    // Paying on the checkout page: signed webhooks drive the domain to active.
    let pay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = pay.post(&checkout).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert!(location(&r).contains("notice=paid"), "back to the panel");
    eventually(20, || async {
        customer
            .page(&domain_page)
            .await
            .contains("data-state=\"active\"")
    })
    .await
    .expect("the paid domain becomes active");
    let r = customer
        .post_form(
            &format!("{domain_page}/accounts"),
            &[("username", "payer"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303);
    let ca = panel.data_dir().join("node/certs/paid.demo.test.crt");
    let (ok, out) = slixmpp_login(&c2s, "payer@paid.demo.test", PASSWORD, &ca).await;
    assert!(ok, "slixmpp logs in: {out}");

    // The billing page lists the subscription and the paid invoice.
    let billing = customer.page(&format!("{org}/billing")).await;
    assert!(
        billing.contains("paid.demo.test") && billing.contains("EUR 4.50"),
        "{billing}"
    );
    assert!(billing.contains("id=\"invoices\"") && billing.contains("paid"));

    // A failed payment with no grace period: suspended, and the client is refused.
    let sub = {
        let pool = rookery_common::db::connect(&panel.database.url, 1)
            .await
            .unwrap();
        let s: String = sqlx::query_scalar(
            "SELECT stripe_subscription_id FROM domains WHERE domain = 'paid.demo.test'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        pool.close().await;
        s
    };
    fake.fail_payment(&sub).await.unwrap();
    eventually(20, || async {
        domain_state(&panel, "paid.demo.test").await == "suspended"
    })
    .await
    .expect("suspended after the grace period");
    eventually(20, || async {
        !slixmpp_login(&c2s, "payer@paid.demo.test", PASSWORD, &ca)
            .await
            .0
    })
    .await
    .expect("the node refuses the suspended domain");
    let (_, out) = slixmpp_login(&c2s, "payer@paid.demo.test", PASSWORD, &ca).await;
    assert!(out.contains("refused"), "{out}");

    // Paying again brings it back.
    fake.pay_renewal(&sub).await.unwrap();
    eventually(20, || async {
        domain_state(&panel, "paid.demo.test").await == "active"
    })
    .await
    .expect("active again after payment");
    eventually(20, || async {
        slixmpp_login(&c2s, "payer@paid.demo.test", PASSWORD, &ca)
            .await
            .0
    })
    .await
    .expect("logins work again");

    // Stripe delivering the old payment failure again (a retry, or a replay by someone who
    // kept it) is recognised by its id and changes nothing: the domain stays active.
    let failed = fake
        .events_sent()
        .into_iter()
        .rev()
        .find(|e| e.kind() == "invoice.payment_failed")
        .expect("the payment failure was sent");
    let status = fake
        .send_raw(&failed.event.to_string())
        .await
        .expect("the replay is sent");
    assert_eq!(status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(domain_state(&panel, "paid.demo.test").await, "active");

    // Cancelling suspends it and schedules deletion; the data can be downloaded first.
    fake.cancel(&sub).await.unwrap();
    eventually(20, || async {
        domain_state(&panel, "paid.demo.test").await == "suspended"
    })
    .await
    .expect("suspended after cancellation");
    let page = customer.page(&domain_page).await;
    assert!(page.contains("will be deleted after"), "{page}");
    let export = customer.get(&format!("{domain_page}/export")).await;
    assert_eq!(export.status(), 200);
    let data: serde_json::Value = export.json().await.unwrap();
    assert_eq!(data["domain"], "paid.demo.test");
    assert!(
        data.to_string().contains("payer"),
        "the export holds the account"
    );
}

#[tokio::test]
async fn webhooks_must_be_signed_fresh_and_are_processed_once() {
    let panel = PanelProcess::start_with_env(&[
        ("ROOKERY_STRIPE__API_BASE", "http://127.0.0.1:9"),
        ("ROOKERY_STRIPE__SECRET_KEY", "sk_test_unused"),
        ("ROOKERY_STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET),
    ])
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let url = panel.url("/webhooks/stripe");
    let body = br#"{"id":"evt_1","object":"event","type":"invoice.paid","created":1,"data":{"object":{"id":"in_1","object":"invoice"}}}"#;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let send = |sig: Option<String>, body: &'static [u8]| {
        let mut req = http.post(&url).body(body.to_vec());
        if let Some(s) = sig {
            req = req.header("Stripe-Signature", s);
        }
        req.send()
    };
    assert_eq!(send(None, body).await.unwrap().status(), 400, "unsigned");
    assert_eq!(
        send(Some(webhook::sign("whsec_other", now, body)), body)
            .await
            .unwrap()
            .status(),
        400,
        "wrong secret"
    );
    let altered: &'static [u8] = br#"{"id":"evt_1","object":"event","type":"invoice.paid","created":2,"data":{"object":{"id":"in_1","object":"invoice"}}}"#;
    assert_eq!(
        send(Some(webhook::sign(WEBHOOK_SECRET, now, body)), altered)
            .await
            .unwrap()
            .status(),
        400,
        "altered body"
    );
    assert_eq!(
        send(Some(webhook::sign(WEBHOOK_SECRET, now - 3600, body)), body)
            .await
            .unwrap()
            .status(),
        400,
        "stale"
    );
    let first = send(Some(webhook::sign(WEBHOOK_SECRET, now, body)), body)
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let replay = send(Some(webhook::sign(WEBHOOK_SECRET, now, body)), body)
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.text().await.unwrap(), "already processed");
}

/// A reseller sells a paid plan through the API: it makes a customer organisation (no
/// members, so no email for Stripe), orders a domain for it on the plan and gets Stripe
/// Checkout's URL from `POST /domains/{id}/checkout`, with its own return URL; the payer
/// pays there and the domain goes live with no panel page involved.
#[tokio::test]
async fn a_reseller_orders_on_a_paid_plan_and_sends_its_customer_to_checkout_through_the_api() {
    let fake = FakeStripe::start("", WEBHOOK_SECRET)
        .await
        .expect("the fake Stripe starts");
    fake.set_price("price_team", 900, "eur");
    let (panel, _ports) = billing_panel(&fake, &[]).await;
    let admin = panel.admin_client().await.expect("an admin");
    let plan = rookery_tests::app::plan_form("Team", "9.00", Some("price_team"));
    assert_eq!(admin.post_form("/admin/plans", &plan).await.status(), 303);

    // The reseller, its key, and a customer organisation made through the API.
    let reseller = TestClient::new(&panel.base_url);
    let org = reseller
        .sign_up(&unique_email("reseller"), "Resells Chat")
        .await;
    let org_id = org.trim_start_matches("/o/").to_string();
    let r = admin
        .post_form(
            &format!("/admin/tenants/{org_id}/reseller"),
            &[("reseller", "1")],
        )
        .await;
    assert_eq!(r.status(), 303);
    let key = crate::api::create_key(
        &reseller,
        &format!("{org}/api-keys"),
        "shop",
        "read_write",
        "",
    )
    .await;
    let api = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let (key, url) = (key.clone(), panel.url(path));
        async move {
            let mut req = reqwest::Client::new().request(method, url).bearer_auth(key);
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (
                status,
                serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
            )
        }
    };
    let (status, customer) = api(
        reqwest::Method::POST,
        "/api/v1/customers",
        Some(serde_json::json!({"name": "Buyer Ltd"})),
    )
    .await;
    assert_eq!(status, 201, "{customer}");
    let (_, plans) = api(reqwest::Method::GET, "/api/v1/plans", None).await;
    let plan_id = plans["items"][0]["id"].as_str().unwrap().to_string();
    let (status, domain) = api(
        reqwest::Method::POST,
        "/api/v1/domains",
        Some(serde_json::json!({
            "domain": "team.demo.test",
            "plan_id": plan_id,
            "org_id": customer["id"],
        })),
    )
    .await;
    assert_eq!(status, 201, "{domain}");
    assert_eq!(domain["state"], "pending_payment");
    let checkout_path = format!(
        "/api/v1/domains/{}/checkout",
        domain["id"].as_str().unwrap()
    );

    // A return URL must be a real https URL.
    let (status, problem) = api(
        reqwest::Method::POST,
        &checkout_path,
        Some(serde_json::json!({"success_url": "javascript:alert(1)"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "success_url");
    assert_eq!(problem["errors"][0]["code"], "invalid_url");

    let (status, checkout) = api(
        reqwest::Method::POST,
        &checkout_path,
        Some(serde_json::json!({
            "success_url": "https://resells.example/thanks",
            "cancel_url": "https://resells.example/cart",
        })),
    )
    .await;
    assert_eq!(status, 201, "{checkout}");
    let url = checkout["url"].as_str().unwrap();
    assert!(url.starts_with(fake.base_url()), "Stripe Checkout: {url}");

    // The payer pays and comes back to the reseller's page; the domain goes live.
    let pay = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = pay.post(url).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), "https://resells.example/thanks");
    let domain_path = format!("/api/v1/domains/{}", domain["id"].as_str().unwrap());
    eventually(20, || async {
        api(reqwest::Method::GET, &domain_path, None).await.1["state"] == "active"
    })
    .await
    .expect("the paid domain becomes active");
    // Paid: there is nothing more to check out.
    let (status, problem) = api(reqwest::Method::POST, &checkout_path, None).await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "domain_state_conflict");

    // The buyer's owner gets into the panel through an invitation the reseller sends.
    let buyer = unique_email("buyer");
    let invitations = format!(
        "/api/v1/customers/{}/invitations",
        customer["id"].as_str().unwrap()
    );
    let (status, problem) = api(
        reqwest::Method::POST,
        &invitations,
        Some(serde_json::json!({"email": buyer, "role": "boss"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["code"], "invalid_role");
    let (status, invitation) = api(
        reqwest::Method::POST,
        &invitations,
        Some(serde_json::json!({"email": buyer})),
    )
    .await;
    assert_eq!(status, 201, "{invitation}");
    assert_eq!(invitation["role"], "owner");
    let outbox = admin.page("/admin/outbox").await;
    let mail = outbox
        .split("You are invited to join Buyer Ltd")
        .nth(1)
        .expect("the invitation email is in the outbox");
    assert!(mail.contains("Resells Chat invited you"), "{mail}");
    let at = mail.find("/invitations/").unwrap();
    let link: String = mail[at..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "/-_".contains(*c))
        .collect();
    let person = TestClient::new(&panel.base_url);
    let r = person
        .post_form(
            "/signup",
            &[
                ("email", buyer.as_str()),
                ("password", PASSWORD),
                ("org_name", ""),
                ("next", link.as_str()),
            ],
        )
        .await;
    assert_eq!(location(&r), link);
    let r = person.post_form(&link, &[]).await;
    let home = format!("/o/{}", customer["id"].as_str().unwrap());
    assert_eq!(location(&r), format!("{home}?notice=joined"));
    assert!(
        person
            .page(&format!("{home}/domains"))
            .await
            .contains("team.demo.test"),
        "the buyer sees the domain the reseller ordered"
    );
    let (status, problem) = api(
        reqwest::Method::POST,
        &invitations,
        Some(serde_json::json!({"email": buyer})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["code"], "already_member");
}

/// The live domain of a name, as the panel's database has it.
#[derive(Debug, Clone)]
struct LiveDomain {
    id: String,
    state: String,
    plan_id: Option<String>,
    generation: i64,
    subscription: Option<String>,
    delete_after: Option<i64>,
}

async fn live_domain(panel: &PanelProcess, domain: &str) -> LiveDomain {
    use sqlx::Row;
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let r = sqlx::query(
        "SELECT id, state, plan_id, generation, stripe_subscription_id, delete_after FROM domains
         WHERE domain = $1 AND state <> 'deleted'",
    )
    .bind(domain)
    .fetch_one(&pool)
    .await
    .unwrap();
    let live = LiveDomain {
        id: r.get("id"),
        state: r.get("state"),
        plan_id: r.get("plan_id"),
        generation: r.get("generation"),
        subscription: r.get("stripe_subscription_id"),
        delete_after: r.get("delete_after"),
    };
    pool.close().await;
    live
}

async fn count(panel: &PanelProcess, sql: &str, domain: &str) -> i64 {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let n = sqlx::query_scalar(sql)
        .bind(domain)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

async fn plan_named(panel: &PanelProcess, name: &str) -> String {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let id = sqlx::query_scalar("SELECT id FROM plans WHERE name = $1")
        .bind(name)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    id
}

/// The admin's plan form with its own account limit.
fn plan_with_accounts<'a>(
    name: &'a str,
    price: &'a str,
    stripe_price_id: Option<&'a str>,
    accounts: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut form = rookery_tests::app::plan_form(name, price, stripe_price_id);
    for field in form.iter_mut().filter(|(key, _)| *key == "max_accounts") {
        field.1 = accounts;
    }
    form
}

/// Creates a chat account through the domain page: the status and the page.
async fn add_account(customer: &TestClient, page: &str, username: &str) -> (u16, String) {
    let r = customer
        .post_form(
            &format!("{page}/accounts"),
            &[("username", username), ("password", PASSWORD)],
        )
        .await;
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A paid domain changes plan from its page: the subscription's item moves to the new
/// price at Stripe, the plan and the generation follow, and the node enforces the new
/// account limit. A plan below the domain's account count is refused and changes nothing.
/// A price changed in Stripe's customer portal moves the plan too, and a move to the free
/// plan ends the subscription without suspending the domain.
#[tokio::test]
async fn a_customer_changes_a_paid_domains_plan_and_the_node_enforces_its_account_limit() {
    let fake = FakeStripe::start("", WEBHOOK_SECRET)
        .await
        .expect("the fake Stripe starts");
    fake.set_price("price_small", 300, "eur");
    fake.set_price("price_big", 900, "eur");
    fake.set_price("price_huge", 1500, "eur");
    let (panel, _ports) = billing_panel(&fake, &[]).await;
    let admin = panel.admin_client().await.expect("an admin");
    for form in [
        plan_with_accounts("Small", "3.00", Some("price_small"), "2"),
        plan_with_accounts("Big", "9.00", Some("price_big"), "4"),
        plan_with_accounts("Huge", "15.00", Some("price_huge"), "6"),
        plan_with_accounts("Free", "0", None, "10"),
    ] {
        assert_eq!(admin.post_form("/admin/plans", &form).await.status(), 303);
    }
    let small = plan_named(&panel, "Small").await;
    let big = plan_named(&panel, "Big").await;
    let huge = plan_named(&panel, "Huge").await;
    let free = plan_named(&panel, "Free").await;

    // A paid domain on Small, live.
    let customer = TestClient::new(&panel.base_url);
    let org = customer.sign_up(&unique_email("planner"), "Planners").await;
    let r = customer
        .post_form(
            &format!("{org}/domains"),
            &[("domain", "plans.demo.test"), ("plan", small.as_str())],
        )
        .await;
    assert_eq!(r.status(), 303);
    let paid = no_redirects().post(location(&r)).send().await.unwrap();
    assert_eq!(paid.status(), 303);
    eventually(20, || async {
        domain_state(&panel, "plans.demo.test").await == "active"
    })
    .await
    .expect("the paid domain becomes active");
    let start = live_domain(&panel, "plans.demo.test").await;
    assert_eq!(start.plan_id.as_deref(), Some(small.as_str()));
    let sub = start.subscription.clone().expect("a subscription");
    let page = format!("{org}/domains/{}", start.id);

    // The page shows the plan and offers the others; an active domain's page stays still.
    let html = customer.page(&page).await;
    assert!(
        html.contains(&format!("id=\"current-plan\" data-plan=\"{small}\"")),
        "{html}"
    );
    assert!(html.contains("id=\"plan-form\"") && html.contains(&format!("value=\"{big}\"")));
    assert!(!html.contains("http-equiv=\"refresh\""), "{html}");

    // Small allows 2 accounts.
    for name in ["ann", "bob"] {
        assert_eq!(add_account(&customer, &page, name).await.0, 303);
    }
    let (status, html) = add_account(&customer, &page, "cat").await;
    assert_eq!(status, 422);
    assert!(html.contains("Your plan allows 2 accounts"), "{html}");

    // Up to Big: Stripe's item moves to Big's price, and the domain's plan follows.
    let r = customer
        .post_form(&format!("{page}/plan"), &[("plan", big.as_str())])
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).ends_with("?notice=plan-changed"),
        "{}",
        location(&r)
    );
    let subscription = fake.subscription(&sub).unwrap();
    assert_eq!(subscription["items"]["data"][0]["price"]["id"], "price_big");
    let update = fake
        .events_sent()
        .into_iter()
        .rfind(|e| e.kind() == "customer.subscription.updated")
        .expect("Stripe announced the change");
    assert_eq!(update.last_status, Some(200));
    let upgraded = live_domain(&panel, "plans.demo.test").await;
    assert_eq!(upgraded.plan_id.as_deref(), Some(big.as_str()));
    assert!(upgraded.generation > start.generation, "{upgraded:?}");
    assert_eq!(upgraded.subscription.as_deref(), Some(sub.as_str()));
    assert!(
        customer
            .page(&format!("{page}?notice=plan-changed"))
            .await
            .contains("Plan changed.")
    );

    // The node gets Big's limit from the vhost spec: 4 accounts.
    eventually(20, || async {
        add_account(&customer, &page, "cat").await.0 == 303
    })
    .await
    .expect("the node allows a third account");
    assert_eq!(add_account(&customer, &page, "dan").await.0, 303);
    let (status, html) = add_account(&customer, &page, "eve").await;
    assert_eq!(status, 422);
    assert!(html.contains("Your plan allows 4 accounts"), "{html}");

    // Back down to Small with 4 accounts: refused, and nothing changes anywhere.
    let r = customer
        .post_form(&format!("{page}/plan"), &[("plan", small.as_str())])
        .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("This domain has 4 chat accounts and the Small plan allows 2."),
        "{html}"
    );
    let refused = live_domain(&panel, "plans.demo.test").await;
    assert_eq!(
        (&refused.plan_id, refused.generation),
        (&upgraded.plan_id, upgraded.generation)
    );
    assert_eq!(
        fake.subscription(&sub).unwrap()["items"]["data"][0]["price"]["id"],
        "price_big"
    );

    // In Stripe's customer portal the customer moves to Huge: the webhook moves the plan.
    fake.change_price(&sub, "price_huge").await.unwrap();
    let portal = live_domain(&panel, "plans.demo.test").await;
    assert_eq!(portal.plan_id.as_deref(), Some(huge.as_str()));
    assert!(portal.generation > upgraded.generation, "{portal:?}");
    eventually(20, || async {
        add_account(&customer, &page, "eve").await.0 == 303
    })
    .await
    .expect("the node allows a fifth account");

    // Down to the free plan: the subscription ends at Stripe; its end does not suspend
    // the domain, which stays active on the free plan.
    let r = customer
        .post_form(&format!("{page}/plan"), &[("plan", free.as_str())])
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        location(&r).ends_with("?notice=plan-changed"),
        "{}",
        location(&r)
    );
    assert_eq!(fake.subscription(&sub).unwrap()["status"], "canceled");
    let ended = fake
        .events_sent()
        .into_iter()
        .rfind(|e| e.kind() == "customer.subscription.deleted")
        .expect("Stripe announced the end");
    assert_eq!(ended.last_status, Some(200));
    let freed = live_domain(&panel, "plans.demo.test").await;
    assert_eq!(freed.plan_id.as_deref(), Some(free.as_str()));
    assert_eq!(
        (
            freed.state.as_str(),
            &freed.subscription,
            freed.delete_after
        ),
        ("active", &None, None)
    );
    let html = customer.page(&page).await;
    assert!(!html.contains("id=\"billing-note\""), "{html}");

    // Back to a paid plan: through Checkout, and the payment moves the plan.
    let r = customer
        .post_form(&format!("{page}/plan"), &[("plan", huge.as_str())])
        .await;
    assert_eq!(r.status(), 303);
    let checkout = location(&r);
    assert!(checkout.starts_with(fake.base_url()), "{checkout}");
    assert_eq!(
        live_domain(&panel, "plans.demo.test")
            .await
            .plan_id
            .as_deref(),
        Some(free.as_str()),
        "nothing changes before the payment"
    );
    let paid = no_redirects().post(&checkout).send().await.unwrap();
    assert_eq!(paid.status(), 303);
    assert!(
        location(&paid).ends_with("?notice=plan-paid"),
        "{}",
        location(&paid)
    );
    let repaid = live_domain(&panel, "plans.demo.test").await;
    assert_eq!(repaid.plan_id.as_deref(), Some(huge.as_str()));
    assert_eq!(repaid.state, "active");
    let new_sub = repaid.subscription.expect("a new subscription");
    assert_ne!(new_sub, sub);
    assert_eq!(
        fake.subscription(&new_sub).unwrap()["items"]["data"][0]["price"]["id"],
        "price_huge"
    );
}

/// A name stays taken while its order waits for payment; when the checkout expires the
/// order is withdrawn and anyone can order the name. A domain deleted by its organisation
/// (no retention period here) frees its name too, and the next order of it starts afresh,
/// without the deleted domain's accounts. Pages reload themselves only while a domain is
/// changing on its own.
#[tokio::test]
async fn a_name_can_be_ordered_again_once_its_order_is_abandoned_or_its_domain_deleted() {
    const NAME: &str = "again.demo.test";
    let fake = FakeStripe::start("", WEBHOOK_SECRET)
        .await
        .expect("the fake Stripe starts");
    fake.set_price("price_team", 900, "eur");
    let (panel, _ports) = billing_panel(&fake, &[("ROOKERY_STRIPE__RETENTION_DAYS", "0")]).await;
    let admin = panel.admin_client().await.expect("an admin");
    for form in [
        rookery_tests::app::plan_form("Team", "9.00", Some("price_team")),
        rookery_tests::app::plan_form("Starter", "0", None),
    ] {
        assert_eq!(admin.post_form("/admin/plans", &form).await.status(), 303);
    }
    let team = plan_named(&panel, "Team").await;
    let starter = plan_named(&panel, "Starter").await;
    let first = TestClient::new(&panel.base_url);
    let first_org = first.sign_up(&unique_email("first"), "First").await;
    let second = TestClient::new(&panel.base_url);
    let second_org = second.sign_up(&unique_email("second"), "Second").await;
    async fn order(client: &TestClient, org: &str, plan: &str) -> reqwest::Response {
        client
            .post_form(
                &format!("{org}/domains"),
                &[("domain", NAME), ("plan", plan)],
            )
            .await
    }

    // The first customer orders on the paid plan and leaves the checkout unpaid; the list
    // reloads itself while the order waits.
    let r = order(&first, &first_org, &team).await;
    assert_eq!(r.status(), 303);
    let session = location(&r).rsplit('/').next().unwrap().to_string();
    assert!(session.starts_with("cs_"), "{session}");
    let list = first.page(&format!("{first_org}/domains")).await;
    assert!(
        list.contains(&format!(
            "<meta http-equiv=\"refresh\" content=\"5; url={first_org}/domains\""
        )),
        "{list}"
    );
    let r = order(&second, &second_org, &starter).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("already hosted here"));

    // The checkout expires: the order is withdrawn, and the name is free.
    fake.expire_checkout(&session).await.unwrap();
    assert_eq!(domain_state(&panel, NAME).await, "deleted");
    let list = first.page(&format!("{first_org}/domains")).await;
    assert!(
        !list.contains(NAME) && !list.contains("http-equiv=\"refresh\""),
        "{list}"
    );

    // The second customer orders it on the free plan; it goes live with an account.
    let r = order(&second, &second_org, &starter).await;
    assert_eq!(r.status(), 303);
    let page = location(&r);
    eventually(20, || async {
        domain_state(&panel, NAME).await == "active"
    })
    .await
    .expect("the second order goes live");
    assert_eq!(add_account(&second, &page, "bee").await.0, 303);

    // Deleted through the API (no retention here): removed from its node, name free.
    let key = crate::api::create_key(
        &second,
        &format!("{second_org}/api-keys"),
        "ops",
        "read_write",
        "",
    )
    .await;
    let id = page.rsplit('/').next().unwrap();
    let r = reqwest::Client::new()
        .delete(panel.url(&format!("/api/v1/domains/{id}")))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually(30, || async {
        domain_state(&panel, NAME).await == "deleted"
    })
    .await
    .expect("the domain is deleted after its retention period");

    // The first customer orders it again: a new domain, without the old one's accounts.
    let r = order(&first, &first_org, &starter).await;
    assert_eq!(r.status(), 303);
    let again = location(&r);
    assert_ne!(again, page);
    eventually(20, || async {
        domain_state(&panel, NAME).await == "active"
    })
    .await
    .expect("the third order goes live");
    let html = first.page(&again).await;
    assert!(html.contains("No chat accounts yet."), "{html}");
    assert_eq!(
        count(
            &panel,
            "SELECT COUNT(*) FROM domains WHERE domain = $1",
            NAME
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &panel,
            "SELECT COUNT(*) FROM domains WHERE domain = $1 AND state <> 'deleted'",
            NAME
        )
        .await,
        1
    );
}

/// Migration 0013 rebuilds `domains` to make names unique only among live domains: every
/// row and column survives, deleted names can be taken again, live ones cannot, and the
/// foreign keys still hold. On whichever engine the run is for.
#[tokio::test]
async fn the_reusable_names_migration_keeps_every_domain_and_its_rules() {
    use sqlx::{Executor, Row};
    let database = rookery_tests::db::fresh_database_url().await.unwrap();
    let pool = rookery_common::db::connect(&database.url, 1).await.unwrap();
    let run = |version: i64| {
        let pool = pool.clone();
        async move {
            for m in rookery::db::MIGRATOR
                .iter()
                .filter(|m| m.version == version)
            {
                pool.execute(&*m.sql).await.unwrap();
            }
        }
    };
    for version in 1..13 {
        run(version).await;
    }
    for sql in [
        "INSERT INTO organisations (id, name, created_at) VALUES ('o1', 'Org', 1)",
        "INSERT INTO plans (id, name, description, price_cents, currency, max_accounts, max_sessions, storage_mb, created_at, stripe_price_id)
         VALUES ('p1', 'Pro', '', 450, 'eur', 10, 20, 100, 1, 'price_pro')",
        "INSERT INTO domains (id, org_id, domain, state, plan_id, generation, applied_generation, created_at, active_at, updated_at,
            grace_until, stripe_subscription_id, stripe_checkout_id, suspended_by_admin, probe_username, status_public)
         VALUES ('d1', 'o1', 'live.example', 'active', 'p1', 7, 7, 100, 101, 102, 500, 'sub_1', 'cs_1', 1, 'probe-x', 1)",
        "INSERT INTO domains (id, org_id, domain, state, generation, created_at, updated_at)
         VALUES ('d2', 'o1', 'gone.example', 'deleted', 3, 10, 11)",
    ] {
        pool.execute(sql).await.unwrap();
    }
    run(13).await;

    let r = sqlx::query(
        "SELECT org_id, domain, state, plan_id, generation, applied_generation, created_at, active_at, updated_at,
            grace_until, stripe_subscription_id, stripe_checkout_id, suspended_by_admin, probe_username, status_public,
            plan_changed_at
         FROM domains WHERE id = 'd1'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(r.get::<String, _>("domain"), "live.example");
    assert_eq!(r.get::<String, _>("state"), "active");
    assert_eq!(r.get::<Option<String>, _>("plan_id").as_deref(), Some("p1"));
    assert_eq!(
        (
            r.get::<i64, _>("generation"),
            r.get::<i64, _>("applied_generation"),
            r.get::<i64, _>("created_at"),
            r.get::<Option<i64>, _>("active_at"),
            r.get::<i64, _>("updated_at"),
            r.get::<Option<i64>, _>("grace_until"),
        ),
        (7, 7, 100, Some(101), 102, Some(500))
    );
    assert_eq!(
        (
            r.get::<Option<String>, _>("stripe_subscription_id")
                .as_deref(),
            r.get::<Option<String>, _>("stripe_checkout_id").as_deref(),
            r.get::<Option<String>, _>("probe_username").as_deref(),
        ),
        (Some("sub_1"), Some("cs_1"), Some("probe-x"))
    );
    assert_eq!(
        (
            r.get::<i64, _>("suspended_by_admin"),
            r.get::<i64, _>("status_public"),
            r.get::<i64, _>("plan_changed_at"),
        ),
        (1, 1, 0)
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n, 2);

    let insert = |id: &'static str, org: &'static str, name: &'static str, state: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO domains (id, org_id, domain, state, generation, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 1, 200, 200)",
            )
            .bind(id)
            .bind(org)
            .bind(name)
            .bind(state)
            .execute(&pool)
            .await
        }
    };
    insert("d3", "o1", "gone.example", "active")
        .await
        .expect("a deleted domain's name is free");
    insert("d4", "o1", "gone.example", "deleted")
        .await
        .expect("deleted rows share names");
    let taken = insert("d5", "o1", "live.example", "pending_payment")
        .await
        .unwrap_err();
    assert!(rookery_common::db::is_unique_violation(&taken), "{taken}");
    let taken = insert("d6", "o1", "gone.example", "provisioning")
        .await
        .unwrap_err();
    assert!(rookery_common::db::is_unique_violation(&taken), "{taken}");
    let orphan = insert("d7", "nobody", "orphan.example", "active").await;
    assert!(orphan.is_err(), "the organisation must exist");
    pool.close().await;
}
