//! The panel in a real browser: the `rookery` binary as operators run it, and a headless
//! Chromium that a test drives with clicks and typing, as a customer would.
//!
//! Pages are found by their contract, not their looks: every page's `<main>` carries
//! `data-page="<name>"`, forms have named fields and buttons with ids, and errors appear in
//! an element with `role="alert"`. Screenshots of each step land in `target/screenshots/`.

use anyhow::ensure;
use rookery_tests::browser::Browser;
use rookery_tests::process::PanelProcess;

const PASSWORD: &str = "correct-horse-battery-staple-42";
const ORG_NAME: &str = "Analytical Engines Ltd";

#[tokio::test]
async fn a_customer_signs_up_logs_out_logs_in_and_sees_the_dashboard() -> anyhow::Result<()> {
    let panel = PanelProcess::start().await?;
    let browser = Browser::start().await?;

    let outcome = sign_up_log_out_and_log_in(&panel, &browser).await;
    if outcome.is_err() {
        // A picture of where it went wrong, next to the steps that went right.
        let _ = browser.screenshot("signup-login-failure").await;
    }
    browser.close().await;
    outcome
}

async fn sign_up_log_out_and_log_in(panel: &PanelProcess, browser: &Browser) -> anyhow::Result<()> {
    let email = format!("ada-{}@example.com", uuid::Uuid::now_v7().simple());

    // The landing page links to the sign-up form.
    browser.client.goto(&panel.url("/")).await?;
    browser.wait_for("main[data-page=landing]").await?;
    browser.screenshot("01-landing").await?;
    click_first_visible(browser, r#"a[href*="/signup"]"#).await?;
    browser.wait_for("main[data-page=signup]").await?;
    let signup_url = browser.client.current_url().await?;
    ensure!(
        signup_url.path() == "/signup",
        "the landing page's link led to {signup_url}"
    );

    // Sign up: a new customer with a new organisation lands on its dashboard.
    browser.fill("input[name=email]", &email).await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.fill("input[name=org_name]", ORG_NAME).await?;
    browser.screenshot("02-signup").await?;
    browser.click("#signup-submit").await?;
    browser.wait_for("main[data-page=dashboard]").await?;
    let dashboard_url = browser.client.current_url().await?;
    ensure!(
        dashboard_url.path().starts_with("/o/"),
        "the dashboard is at /o/<org-id>, not {dashboard_url}"
    );
    browser.screenshot("03-dashboard").await?;
    let text = browser.page_text().await?;
    ensure!(
        text.contains(ORG_NAME),
        "the dashboard names the organisation {ORG_NAME:?}; it shows:\n{text}"
    );

    // Log out: the session is over, and the dashboard is no longer shown.
    log_out(browser).await?;
    browser.client.goto(dashboard_url.as_str()).await?;
    browser.wait_for("main[data-page]").await?;
    ensure!(
        browser.page_name().await.as_deref() != Some("dashboard"),
        "after logging out, {dashboard_url} still shows the dashboard"
    );

    // Log in again with the same email and password.
    browser.client.goto(&panel.url("/login")).await?;
    browser.wait_for("main[data-page=login]").await?;
    browser.fill("input[name=email]", &email).await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.screenshot("04-login").await?;
    browser.click("#login-submit").await?;
    browser.wait_for("main[data-page=dashboard]").await?;
    let url = browser.client.current_url().await?;
    ensure!(
        url.path() == dashboard_url.path(),
        "logging in leads to the organisation's dashboard {dashboard_url}, not {url}"
    );
    let text = browser.page_text().await?;
    ensure!(
        text.contains(ORG_NAME),
        "the dashboard names the organisation {ORG_NAME:?} again; it shows:\n{text}"
    );
    browser.screenshot("05-dashboard-again").await?;

    // The team page: invite a colleague by email; the invitation is listed as pending.
    browser
        .client
        .goto(&panel.url(&format!("{}/team", dashboard_url.path())))
        .await?;
    browser.wait_for("main[data-page=team]").await?;
    browser
        .fill("input[name=email]", "charles@example.com")
        .await?;
    browser.click("#invite-submit").await?;
    // The page before the click already has a status banner (the email confirmation
    // reminder), so wait for the new page's text rather than for an element.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let text = loop {
        let text = browser.page_text().await.unwrap_or_default();
        if text.contains("Invitation sent.") || std::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    ensure!(
        text.contains("Invitation sent.") && text.contains("charles@example.com"),
        "the team page lists the invitation; it shows:\n{text}"
    );
    browser.screenshot("07-team").await?;

    // Account settings, and the dashboard on a phone-sized window.
    browser.client.goto(&panel.url("/account")).await?;
    browser.wait_for("main[data-page=account]").await?;
    browser.screenshot("08-account").await?;
    browser.client.set_window_size(390, 844).await?;
    browser.client.goto(dashboard_url.as_str()).await?;
    browser.wait_for("main[data-page=dashboard]").await?;
    browser.screenshot("09-dashboard-phone").await?;
    browser.client.set_window_size(1280, 900).await?;

    // A wrong password is refused with a message, on the log-in page.
    log_out(browser).await?;
    browser.client.goto(&panel.url("/login")).await?;
    browser.wait_for("main[data-page=login]").await?;
    browser.fill("input[name=email]", &email).await?;
    browser
        .fill("input[name=password]", "not-the-password-at-all")
        .await?;
    browser.click("#login-submit").await?;
    let alert = browser.wait_for("[role=alert]").await?;
    let message = alert.text().await?;
    ensure!(
        message.contains("Incorrect email or password"),
        "a wrong password's alert says {message:?}"
    );
    let page = browser.page_name().await;
    ensure!(
        page.as_deref() == Some("login"),
        "a wrong password leaves the browser on the log-in page, not {page:?}"
    );
    browser.screenshot("06-login-error").await?;

    Ok(())
}

/// Clicks the header's log-out button and waits until the dashboard has gone.
async fn log_out(browser: &Browser) -> anyhow::Result<()> {
    browser.click("#logout").await?;
    browser
        .wait_for(r#"main[data-page]:not([data-page="dashboard"])"#)
        .await?;
    Ok(())
}

/// Clicks the first element matching `css` that a person could see (a page may repeat a
/// link in a collapsed menu).
async fn click_first_visible(browser: &Browser, css: &str) -> anyhow::Result<()> {
    for element in browser
        .client
        .find_all(fantoccini::Locator::Css(css))
        .await?
    {
        if element.is_displayed().await.unwrap_or(false) {
            element.click().await?;
            return Ok(());
        }
    }
    anyhow::bail!("the page has no visible element matching `{css}`")
}

/// The demo in a browser: a customer adds a domain and a chat account on the panel's local
/// node; an admin sees the node pool, the node's page and the audit log.
#[tokio::test]
async fn a_customer_adds_a_domain_and_an_admin_sees_it_on_the_node_pool() -> anyhow::Result<()> {
    let (panel, ports) = PanelProcess::start_demo(&[]).await?;
    let c2s = format!("127.0.0.1:{}", ports.c2s);
    let admin_email = panel.create_admin().await?;
    let browser = Browser::start().await?;
    let outcome = domain_and_pool(&panel, &browser, &admin_email, &c2s).await;
    if outcome.is_err() {
        let _ = browser.screenshot("pool-failure").await;
    }
    browser.close().await;
    outcome
}

async fn domain_and_pool(
    panel: &PanelProcess,
    browser: &Browser,
    admin_email: &str,
    c2s: &str,
) -> anyhow::Result<()> {
    let email = format!("grace-{}@example.com", uuid::Uuid::now_v7().simple());
    browser.client.goto(&panel.url("/signup")).await?;
    browser.wait_for("main[data-page=signup]").await?;
    browser.fill("input[name=email]", &email).await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.fill("input[name=org_name]", "Harbour Chat").await?;
    browser.click("#signup-submit").await?;
    browser.wait_for("main[data-page=dashboard]").await?;
    click_first_visible(browser, r#"a[href$="/domains"]"#).await?;
    browser.wait_for("main[data-page=domains]").await?;

    // A bad domain is explained and kept in the field; a good one is added.
    browser.fill("input[name=domain]", "not a domain").await?;
    browser.click("#domain-submit").await?;
    browser.wait_for("#f-domain-error").await?;
    browser.screenshot("10-domain-error").await?;
    browser
        .fill("input[name=domain]", "chat.harbour.test")
        .await?;
    browser.click("#domain-submit").await?;
    browser.wait_for("main[data-page=domain]").await?;
    // No JavaScript: the customer reloads until the domain is active.
    let page = browser.client.current_url().await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !browser.page_text().await?.contains("active")
        || browser.find("#account-submit").await.is_err()
    {
        ensure!(
            std::time::Instant::now() < deadline,
            "the domain did not become active"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        browser.client.goto(page.as_str()).await?;
        browser.wait_for("main[data-page=domain]").await?;
    }
    ensure!(
        browser.page_text().await?.contains(c2s),
        "the page shows where clients connect"
    );
    browser.fill("input[name=username]", "ada").await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.click("#account-submit").await?;
    browser.wait_for("#accounts").await?;
    ensure!(browser.page_text().await?.contains("ada@chat.harbour.test"));
    browser.screenshot("11-domain-active").await?;
    // The DNS page lists the records to create, each with a copy button (from app.js).
    browser.click(r#"a[href$="/dns"]"#).await?;
    browser.wait_for("main[data-page=domain-dns]").await?;
    browser.wait_for(".copy-button").await?;
    browser.screenshot("11b-dns").await?;
    // The settings page: contact addresses and the domain's own certificate.
    browser.client.goto(page.as_str()).await?;
    browser.wait_for("main[data-page=domain]").await?;
    browser.click("#domain-settings").await?;
    browser.wait_for("main[data-page=domain-settings]").await?;
    browser.screenshot("11c-settings").await?;
    // Federation: "only these domains" with a bad line is explained and the list kept; a
    // good list is saved and the choice stays checked.
    browser.click("#federation-allowlist").await?;
    browser
        .fill("#f-federation_allow", "partner.example\nnot a domain")
        .await?;
    browser.click("#federation-submit").await?;
    browser.wait_for("#f-federation_allow-error").await?;
    ensure!(
        browser
            .page_text()
            .await?
            .contains("Line 2: “not a domain”: This is not a valid domain name."),
        "the bad line is named"
    );
    scroll_to(browser, "#federation-card").await?;
    browser.screenshot("11d-federation-error").await?;
    browser
        .fill(
            "#f-federation_allow",
            "partner.example\nconference.partner.example",
        )
        .await?;
    browser.click("#federation-submit").await?;
    browser.wait_for("#federation-allowlist:checked").await?;
    ensure!(
        browser
            .page_text()
            .await?
            .contains("this domain talks only with the listed domains"),
        "the save is confirmed"
    );
    scroll_to(browser, "#federation-card").await?;
    browser.screenshot("11e-federation-saved").await?;
    log_out(browser).await?;

    // The admin's view of the pool.
    browser.client.goto(&panel.url("/login")).await?;
    browser.wait_for("main[data-page=login]").await?;
    browser.fill("input[name=email]", admin_email).await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.click("#login-submit").await?;
    // Wait until the log-in page is gone: its own `main` would match anything broader, and
    // the redirect after log-in could then land on top of the next navigation.
    browser
        .wait_for(r#"main[data-page]:not([data-page="login"])"#)
        .await?;
    // The local node is polled every second: wait for its first heartbeat.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        browser.client.goto(&panel.url("/admin/nodes")).await?;
        browser.wait_for("main[data-page=admin-nodes]").await?;
        if browser.find(r#"[data-node-state="active"]"#).await.is_ok() {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the local node was never polled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    browser.screenshot("12-node-pool").await?;
    browser.click(r#"tr[data-node="local"] a"#).await?;
    browser.wait_for("main[data-page=admin-node]").await?;
    ensure!(
        browser.page_text().await?.contains("chat.harbour.test"),
        "the node lists its domain"
    );
    browser.screenshot("13-node").await?;
    browser.client.goto(&panel.url("/admin/nodes")).await?;
    browser.wait_for("main[data-page=admin-nodes]").await?;
    browser.click("#token-submit").await?;
    browser.wait_for("#join-command").await?;
    browser.screenshot("14-join-token").await?;
    browser.client.goto(&panel.url("/admin/audit")).await?;
    browser.wait_for("main[data-page=admin-audit]").await?;
    ensure!(browser.page_text().await?.contains("join_token.created"));
    browser.screenshot("15-audit").await?;
    // The plan form's upload and group chat limits: bad values are explained and kept.
    browser.client.goto(&panel.url("/admin/plans")).await?;
    browser.wait_for("main[data-page=admin-plans]").await?;
    for (field, value) in [
        ("name", "Team"),
        ("price", "4.50"),
        ("max_accounts", "50"),
        ("max_sessions", "100"),
        ("storage_mb", "2048"),
        ("upload_max_file_mb", "2000"),
        ("upload_account_mb", "500"),
        ("upload_retention_days", "90"),
        ("max_rooms", "20"),
        ("max_room_occupants", "0"),
    ] {
        browser.fill(&format!("#f-{field}"), value).await?;
    }
    scroll_to(browser, "label[for=f-max_accounts]").await?;
    browser.screenshot("16-plan-form").await?;
    browser.click("#plan-submit").await?;
    browser.wait_for("#f-max_room_occupants-error").await?;
    browser.wait_for("#f-upload_max_file_mb-error").await?;
    scroll_to(browser, "label[for=f-upload_mb]").await?;
    browser.screenshot("16b-plan-form-error").await?;
    Ok(())
}

/// Scrolls the element matching `css` to the top of the viewport, for a screenshot of a
/// part of a long page.
async fn scroll_to(browser: &Browser, css: &str) -> anyhow::Result<()> {
    browser
        .client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'start'})",
            vec![serde_json::json!(css)],
        )
        .await?;
    Ok(())
}

/// Issue 5 in a browser: a customer orders a domain on a paid plan, pays on the (fake)
/// Stripe Checkout, watches the domain become active, creates a chat account, and a real
/// client (slixmpp) logs in; a failed payment then suspends the domain and the client is
/// refused.
#[tokio::test]
async fn a_customer_pays_for_a_domain_in_the_browser_and_an_unpaid_one_is_suspended()
-> anyhow::Result<()> {
    use rookery_tests::fake_stripe::FakeStripe;
    const SECRET: &str = "whsec_browser_test";
    let fake = FakeStripe::start("", SECRET).await?;
    fake.set_price("price_team", 900, "eur");
    let (panel, ports) = PanelProcess::start_demo(&[
        ("ROOKERY_STRIPE__API_BASE", fake.base_url()),
        ("ROOKERY_STRIPE__SECRET_KEY", FakeStripe::API_KEY),
        ("ROOKERY_STRIPE__WEBHOOK_SECRET", SECRET),
        ("ROOKERY_STRIPE__GRACE_DAYS", "0"),
    ])
    .await?;
    let c2s = ports.c2s.to_string();
    fake.set_webhook_url(&panel.url("/webhooks/stripe"));

    // The provider's paid plan.
    let admin = panel.admin_client().await?;
    let r = admin
        .post_form(
            "/admin/plans",
            &[
                ("name", "Team"),
                ("price", "9.00"),
                ("currency", "EUR"),
                ("max_accounts", "25"),
                ("max_sessions", "50"),
                ("storage_mb", "500"),
                ("upload_mb", "500"),
                ("archive_days", "90"),
                ("stripe_price_id", "price_team"),
                ("public", "1"),
            ],
        )
        .await;
    ensure!(r.status() == 303, "plan created");

    let browser = Browser::start().await?;
    let outcome = pay_in_browser(&panel, &browser, &fake, &c2s).await;
    if outcome.is_err() {
        let _ = browser.screenshot("billing-failure").await;
    }
    browser.close().await;
    outcome
}

async fn pay_in_browser(
    panel: &PanelProcess,
    browser: &Browser,
    fake: &rookery_tests::fake_stripe::FakeStripe,
    c2s: &str,
) -> anyhow::Result<()> {
    let email = format!("lin-{}@example.com", uuid::Uuid::now_v7().simple());
    browser.client.goto(&panel.url("/signup")).await?;
    browser.wait_for("main[data-page=signup]").await?;
    browser.fill("input[name=email]", &email).await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.fill("input[name=org_name]", "Lin & Co").await?;
    browser.click("#signup-submit").await?;
    browser.wait_for("main[data-page=dashboard]").await?;
    click_first_visible(browser, r#"a[href$="/domains"]"#).await?;
    browser.wait_for("main[data-page=domains]").await?;
    browser.fill("input[name=domain]", "team.lin.test").await?;
    browser.click("input[name=plan]").await?;
    browser.screenshot("20-order").await?;
    browser.click("#domain-submit").await?;

    // Stripe Checkout (the fake): pay.
    browser.wait_for("#pay").await?;
    ensure!(
        browser
            .client
            .current_url()
            .await?
            .as_str()
            .starts_with(fake.base_url()),
        "the customer is on the checkout page"
    );
    browser.screenshot("21-checkout").await?;
    browser.click("#pay").await?;
    browser.wait_for("main[data-page=domain]").await?;
    ensure!(
        browser
            .page_text()
            .await?
            .contains("Thank you for your payment")
    );
    let page = browser.client.current_url().await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while browser.find("#account-submit").await.is_err() {
        ensure!(
            std::time::Instant::now() < deadline,
            "the paid domain did not become active"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        browser.client.goto(page.as_str()).await?;
        browser.wait_for("main[data-page=domain]").await?;
    }
    browser.fill("input[name=username]", "lin").await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.click("#account-submit").await?;
    browser.wait_for("#accounts").await?;
    browser.screenshot("22-paid-domain").await?;

    // A real client logs in.
    let ca = panel.data_dir().join("node/certs/team.lin.test.crt");
    let login = || async {
        let out = rookery_tests::node::run_python(
            "login_check.py",
            &[
                "127.0.0.1",
                c2s,
                "lin@team.lin.test",
                PASSWORD,
                ca.to_str().unwrap_or_default(),
            ],
            std::time::Duration::from_secs(60),
        )
        .await?;
        anyhow::Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        ))
    };
    let (ok, said) = login().await?;
    ensure!(ok, "slixmpp logs in: {said}");

    // The next payment fails (no grace period here): suspended, and the client is refused.
    let sub = {
        let pool = rookery_common::db::connect(&panel.database.url, 1).await?;
        let s: String = sqlx::query_scalar(
            "SELECT stripe_subscription_id FROM domains WHERE domain = 'team.lin.test'",
        )
        .fetch_one(&pool)
        .await?;
        pool.close().await;
        s
    };
    fake.fail_payment(&sub).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        browser.client.goto(page.as_str()).await?;
        browser.wait_for("main[data-page=domain]").await?;
        if browser.find(r#"[data-state="suspended"]"#).await.is_ok() {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the unpaid domain was not suspended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    browser.screenshot("23-suspended").await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (ok, said) = login().await?;
        if !ok {
            ensure!(said.contains("refused"), "{said}");
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the suspended domain still lets clients in"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    Ok(())
}
