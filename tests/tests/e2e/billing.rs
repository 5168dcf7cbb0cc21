//! Issue 5 end to end with billing on: a real panel process with its local node, a local
//! fake Stripe that signs its webhooks as Stripe does, and slixmpp. A customer orders a
//! domain on a paid plan, pays through the fake checkout, the domain becomes active, an
//! account logs in; a failed payment (no grace period here) suspends the domain and the
//! client is refused; a later payment brings it back; cancelling schedules deletion. Bad
//! webhooks are refused, a replayed one is processed once.

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

async fn domain_state(panel: &PanelProcess, domain: &str) -> String {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let state: String = sqlx::query_scalar("SELECT state FROM domains WHERE domain = $1")
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
    let (panel, ports) = PanelProcess::start_demo(&[
        ("ROOKERY_STRIPE__API_BASE", fake.base_url()),
        ("ROOKERY_STRIPE__SECRET_KEY", FakeStripe::API_KEY),
        ("ROOKERY_STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("ROOKERY_STRIPE__GRACE_DAYS", "0"),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
    ])
    .await
    .expect("the panel starts");
    let c2s = ports.c2s.to_string();
    fake.set_webhook_url(&panel.url("/webhooks/stripe"));

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
    let (panel, _ports) = PanelProcess::start_demo(&[
        ("ROOKERY_STRIPE__API_BASE", fake.base_url()),
        ("ROOKERY_STRIPE__SECRET_KEY", FakeStripe::API_KEY),
        ("ROOKERY_STRIPE__WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
    ])
    .await
    .expect("the panel starts");
    fake.set_webhook_url(&panel.url("/webhooks/stripe"));
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
