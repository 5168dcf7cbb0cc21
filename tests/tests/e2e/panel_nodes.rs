//! The panel's side of enrollment and the pool pages, in process: join tokens work once and
//! expire, bad join requests get clear JSON errors, admin actions reach the audit log, and
//! the pages are for admins only.

use rookery_common::control::{ApiError, JoinRequest, JoinResponse, NodeCapacity};
use rookery_tests::app::{TestApp, TestClient, spawn_app, unique_email};

async fn admin(app: &TestApp) -> TestClient {
    app.admin().await
}

async fn token(admin: &TestClient) -> String {
    let html = admin
        .post_form("/admin/nodes/tokens", &[("note", "rack 4")])
        .await
        .text()
        .await
        .unwrap();
    let start = html
        .find("id=\"join-token\" class=\"code\">")
        .unwrap_or_else(|| panic!("the token is shown once: {html}"))
        + "id=\"join-token\" class=\"code\">".len();
    let end = start + html[start..].find('<').unwrap();
    let token = html[start..end].trim().to_string();
    assert!(
        html.contains(&format!(
            "rookery-node join http://panel.test --token {token}"
        )),
        "the page shows the command"
    );
    token
}

fn request(token: &str, name: &str) -> JoinRequest {
    JoinRequest {
        token: token.into(),
        name: name.into(),
        public_host: "xmpp1.example.net".into(),
        c2s_port: 5222,
        c2s_tls_port: 5223,
        control_url: "https://10.0.0.5:5290".into(),
        control_cert_sha256: "ab".repeat(32),
        capacity: NodeCapacity::default(),
        labels: [("region".to_string(), "eu".to_string())].into(),
        version: "0.1.0".into(),
    }
}

async fn join(app: &TestApp, body: &JoinRequest) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/nodes/join", app.address))
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_join_token_enrolls_one_node_once_and_then_never_again() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let t = token(&admin).await;

    let r = join(&app, &request(&t, "node-1")).await;
    assert_eq!(r.status(), 201);
    let joined: JoinResponse = r.json().await.unwrap();
    assert!(joined.secret.len() >= 32);
    // The secret is kept sealed, never in the clear.
    let sealed: String = sqlx::query_scalar("SELECT secret_sealed FROM nodes WHERE id = $1")
        .bind(&joined.node_id)
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert!(!sealed.contains(&joined.secret));

    let again = join(&app, &request(&t, "node-2")).await;
    assert_eq!(again.status(), 401);
    let e: ApiError = again.json().await.unwrap();
    assert_eq!(e.code, "invalid_token");
    assert!(e.message.contains("already used"), "{}", e.message);

    let unknown: ApiError = join(&app, &request("rjt_nope", "node-3"))
        .await
        .json()
        .await
        .unwrap();
    assert!(unknown.message.contains("not valid"), "{}", unknown.message);

    // The pool page lists the node with its labels; the audit log has the join.
    let html = admin.page("/admin/nodes").await;
    assert!(html.contains("data-node=\"node-1\""), "{html}");
    assert!(html.contains("used by node-1"));
    let audit = admin.page("/admin/audit").await;
    assert!(audit.contains("node.joined") && audit.contains("join_token.created"));
}

#[tokio::test]
async fn an_expired_token_and_bad_requests_are_refused_with_reasons() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let t = token(&admin).await;
    let name_taken = token(&admin).await;
    assert_eq!(join(&app, &request(&name_taken, "dup")).await.status(), 201);

    // Bad input: not JSON, a bad field, a taken name. The token survives each.
    let r = reqwest::Client::new()
        .post(format!("{}/api/nodes/join", app.address))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<ApiError>().await.unwrap().code, "invalid_request");
    let mut bad = request(&t, "node-x");
    bad.control_url = "http://10.0.0.5:5290".into();
    let r = join(&app, &bad).await;
    assert_eq!(r.status(), 422);
    assert!(
        r.json::<ApiError>()
            .await
            .unwrap()
            .message
            .contains("https://")
    );
    let r = join(&app, &request(&t, "dup")).await;
    assert_eq!(r.status(), 409);
    // The name clash rolled back: the token still works once.
    assert_eq!(join(&app, &request(&t, "node-y")).await.status(), 201);

    let late = token(&admin).await;
    app.clock.advance(24 * 3600 + 1);
    let r = join(&app, &request(&late, "node-z")).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.json::<ApiError>()
            .await
            .unwrap()
            .message
            .contains("expired")
    );
}

#[tokio::test]
async fn pool_actions_are_audited_and_removal_waits_for_an_empty_node() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let t = token(&admin).await;
    let joined: JoinResponse = join(&app, &request(&t, "node-1"))
        .await
        .json()
        .await
        .unwrap();
    let base = format!("/admin/nodes/{}", joined.node_id);

    assert_eq!(
        admin
            .post_form(&format!("{base}/cordon"), &[])
            .await
            .status(),
        303
    );
    assert!(
        admin
            .page(&base)
            .await
            .contains("data-node-state=\"cordoned\"")
    );
    assert_eq!(
        admin
            .post_form(&format!("{base}/uncordon"), &[])
            .await
            .status(),
        303
    );

    // A domain placed on it blocks removal.
    let (customer, org) = app.customer(&unique_email("c"), "Customer").await;
    let r = customer
        .post_form(&format!("{org}/domains"), &[("domain", "chat.example.org")])
        .await;
    assert_eq!(r.status(), 303);
    rookery::nodes::reconcile::reconcile_once(&app.state)
        .await
        .unwrap();
    let r = admin.post_form(&format!("{base}/remove"), &[]).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("still holds domains"));
    // The node cannot be reached here: the domain page says it is still being set up.
    let html = customer.page(&format!("{org}/domains")).await;
    assert!(html.contains("data-state=\"provisioning\""), "{html}");

    // Customers never see admin pages.
    assert_eq!(customer.get("/admin/nodes").await.status(), 404);
    assert_eq!(customer.get(&base).await.status(), 404);

    let audit = admin.page("/admin/audit").await;
    for action in ["node.cordon", "node.uncordon"] {
        assert!(audit.contains(action), "{action} is in the audit log");
    }
}

#[tokio::test]
async fn a_domain_waits_with_a_reason_when_no_node_fits_and_is_placed_when_one_joins() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let (customer, org) = app.customer(&unique_email("c"), "Early").await;
    assert_eq!(
        customer
            .post_form(
                &format!("{org}/domains"),
                &[("domain", "early.example.org")]
            )
            .await
            .status(),
        303
    );
    rookery::nodes::reconcile::reconcile_once(&app.state)
        .await
        .unwrap();
    let html = customer.page(&format!("{org}/domains")).await;
    assert!(html.contains("The node pool is empty"), "{html}");
    assert!(
        admin
            .page("/admin/nodes")
            .await
            .contains("1 domain(s) wait for a node")
    );

    let t = token(&admin).await;
    assert_eq!(join(&app, &request(&t, "node-1")).await.status(), 201);
    app.clock.advance(5);
    rookery::nodes::reconcile::reconcile_once(&app.state)
        .await
        .unwrap();
    let node: Option<String> =
        sqlx::query_scalar("SELECT node_id FROM domains WHERE domain = 'early.example.org'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert!(node.is_some(), "placed once a node joined");

    // The same domain cannot be added twice, by anyone.
    let (other, other_org) = app.customer(&unique_email("o"), "Other").await;
    let r = other
        .post_form(
            &format!("{other_org}/domains"),
            &[("domain", "Early.Example.org.")],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("already hosted"));
}

/// Ordering: a plan must be chosen, reserved and malformed names are refused with the
/// form kept, and a plan edit reaches every domain on it as a new spec generation.
#[tokio::test]
async fn ordering_checks_the_name_and_plan_and_plan_edits_reach_the_domains() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let plan = |name: &'static str, accounts: &'static str| {
        vec![
            ("name", name),
            ("description", ""),
            ("price", "0"),
            ("currency", "EUR"),
            ("max_accounts", accounts),
            ("max_sessions", "10"),
            ("storage_mb", "100"),
            ("upload_mb", "100"),
            ("archive_days", "30"),
            ("public", "1"),
        ]
    };
    assert_eq!(
        admin
            .post_form("/admin/plans", &plan("Small", "5"))
            .await
            .status(),
        303
    );
    let plan_id: String = sqlx::query_scalar("SELECT id FROM plans WHERE name = 'Small'")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    // A bad Stripe price id is explained.
    let mut bad = plan("Odd", "5");
    bad.push(("stripe_price_id", "prod_123"));
    let r = admin.post_form("/admin/plans", &bad).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("price_1AbC"));

    let (customer, org) = app.customer(&unique_email("c"), "Orders").await;
    let domains = format!("{org}/domains");
    for (domain, plan, expect) in [
        ("chat.example.org", "", "Choose a plan"),
        ("printer.local", plan_id.as_str(), "reserved"),
        ("sub.panel.test", plan_id.as_str(), "reserved"),
        ("exa mple.org", plan_id.as_str(), "not a valid domain"),
        ("10.0.0.1", plan_id.as_str(), "not an address"),
    ] {
        let r = customer
            .post_form(&domains, &[("domain", domain), ("plan", plan)])
            .await;
        assert_eq!(r.status(), 422, "{domain}");
        let html = r.text().await.unwrap();
        assert!(html.contains(expect), "{domain}: expected {expect:?}");
        assert!(
            html.contains(&format!("value=\"{domain}\"")),
            "the typed domain is kept"
        );
    }
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM domains")
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(count, 0, "nothing half-created");

    let r = customer
        .post_form(
            &domains,
            &[("domain", "Chat.Example.ORG"), ("plan", plan_id.as_str())],
        )
        .await;
    assert_eq!(r.status(), 303);
    let (state, generation): (String, i64) =
        sqlx::query_as("SELECT state, generation FROM domains WHERE domain = 'chat.example.org'")
            .fetch_one(&app.state.db)
            .await
            .unwrap();
    assert_eq!(state, "provisioning", "billing is off: no payment step");

    // The admin raises the plan's account limit: the domain gets a new generation whose
    // spec carries it.
    let mut edit = plan("Small", "7");
    edit.push(("stripe_price_id", ""));
    let r = admin
        .post_form(&format!("/admin/plans/{plan_id}"), &edit)
        .await;
    assert_eq!(r.status(), 303);
    let row = rookery::domains::db::by_name(&app.state.db, "chat.example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.generation, generation + 1);
    let spec = rookery::nodes::reconcile::spec_for(&row, &app.state.sealer, None).unwrap();
    assert_eq!(spec.limits.max_accounts, Some(7));
    assert_eq!(spec.limits.upload_quota_bytes, Some(100 * 1024 * 1024));
    assert!(admin.page("/admin/audit").await.contains("plan.updated"));
}

/// Usage reports roll up per day; the domain page shows today's figures and 30 days of
/// bars drawn as SVG on the server.
#[tokio::test]
async fn a_domains_usage_is_rolled_up_per_day_and_charted() {
    use rookery_common::control::VhostUsage;
    let app = spawn_app().await;
    let (customer, org) = app.customer(&unique_email("u"), "Usage").await;
    let r = customer
        .post_form(&format!("{org}/domains"), &[("domain", "busy.example.org")])
        .await;
    let page = rookery_tests::app::location(&r);
    let report = |sessions, peak, msgs| VhostUsage {
        domain: "busy.example.org".into(),
        accounts: 3,
        sessions,
        peak_sessions: peak,
        messages_in: msgs,
        messages_out: msgs,
        storage_bytes: 3 * 1024 * 1024,
    };
    let db = &app.state.db;
    // "Today" must not end between the reports and the page: keep clear of UTC midnight.
    let second_of_day = app.state.clock.now().rem_euclid(86_400);
    if second_of_day > 86_400 - 120 {
        app.state.clock.advance(86_400 - second_of_day + 1);
    }
    let now = app.state.clock.now();
    // Yesterday, then two reports today.
    rookery::nodes::db::record_usage(db, "n", 5, &[report(1, 4, 10)], now - 86_400)
        .await
        .unwrap();
    rookery::nodes::db::record_usage(db, "n", 5, &[report(2, 7, 50)], now)
        .await
        .unwrap();
    rookery::nodes::db::record_usage(db, "n", 5, &[report(1, 3, 25)], now)
        .await
        .unwrap();
    let html = customer.page(&page).await;
    let usage = &html[html.find("id=\"usage\"").expect("a usage card")..];
    assert!(usage.contains("<strong>3</strong>accounts"), "{usage}");
    assert!(usage.contains("<strong>1</strong>connected now"));
    assert!(
        usage.contains("<strong>7</strong>peak connections today"),
        "the day's highest peak"
    );
    assert!(
        usage.contains("<strong>150</strong>messages today"),
        "reports add up"
    );
    assert!(usage.contains("3.0 MB"));
    assert_eq!(
        usage.matches("<rect").count(),
        90,
        "30 bars in each of three charts: messages, peak connections, storage"
    );
    assert!(
        usage.contains("20 messages</title>"),
        "yesterday's bar has its tooltip"
    );
    assert!(
        usage.contains("3.0 MB stored</title>"),
        "the storage chart's bars say how much"
    );
    assert!(
        usage.contains("no report</title>"),
        "days without a report say so"
    );
}
