//! Issue 6, the public status page: off by default; the domain's team switches it on (a
//! CSRF-checked form, members only); then anyone sees `/status/<domain>` (Unicode or ASCII)
//! with the domain's figures and the failing steps of its incidents, never the probe's error
//! texts; every domain without a page gets the same 404. In process for the rules, and on
//! the demo with its real prober and a browser for the figures and the looks.

use rookery_tests::{
    app::{PASSWORD, TestApp, TestClient, eventually, location, spawn_app, unique_email},
    browser::Browser,
    process::PanelProcess,
};

/// A public visitor: no cookies, no redirects followed.
fn visitor() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// GET `/status/<domain>` as a visitor: status, Cache-Control, whether it set a cookie, body.
async fn status_page(base: &str, domain: &str) -> (u16, String, bool, String) {
    let r = visitor()
        .get(format!("{base}/status/{domain}"))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let cookie = r.headers().contains_key("set-cookie");
    (status, cache, cookie, r.text().await.unwrap())
}

/// Orders `domain` for the customer's organisation; returns the domain page's path.
async fn order(customer: &TestClient, org: &str, domain: &str) -> String {
    let r = customer
        .post_form(&format!("{org}/domains"), &[("domain", domain)])
        .await;
    assert_eq!(r.status(), 303, "ordering {domain}");
    location(&r)
}

async fn switch(customer: &TestClient, page: &str, to: &str) -> reqwest::Response {
    customer
        .post_form(&format!("{page}/status-page"), &[("public", to)])
        .await
}

async fn set_state(app: &TestApp, domain: &str, state: &str) {
    sqlx::query("UPDATE domains SET state = $1 WHERE domain = $2")
        .bind(state)
        .bind(domain)
        .execute(&app.state.db)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_status_page_is_off_until_the_domains_team_switches_it_on() {
    let app = spawn_app().await;
    let base = app.address.clone();
    let (customer, org) = app.customer(&unique_email("status"), "Status Co").await;
    let page = order(&customer, &org, "chat.status.example").await;

    // Off by default: the same 404 as for a domain nobody hosts, or no domain at all.
    let (code, cache, _, private) = status_page(&base, "chat.status.example").await;
    assert_eq!(code, 404);
    assert!(private.contains("No status page here"), "{private}");
    assert!(!private.contains("chat.status.example"));
    assert_eq!(cache, "no-store");
    for other in [
        "unknown.example.org",
        "not_a_domain",
        "xn--bcher-kva.example",
    ] {
        let (code, _, _, body) = status_page(&base, other).await;
        assert_eq!((code, body.as_str()), (404, private.as_str()), "{other}");
    }
    let html = customer.page(&page).await;
    assert!(html.contains("data-status-page=\"off\""), "{html}");
    assert!(!html.contains("id=\"status-page-url\""));

    // Switching needs a session, the form's CSRF token, and membership of the organisation.
    let stranger = TestClient::new(&base);
    let r = switch(&stranger, &page, "on").await;
    assert_eq!(r.status(), 303);
    assert!(location(&r).starts_with("/login?next="), "{}", location(&r));
    let r = customer
        .post_raw(&format!("{page}/status-page"), &[("public", "on")])
        .await;
    assert_eq!(r.status(), 403, "no CSRF token");
    let (other_org, _) = app.customer(&unique_email("other"), "Other Co").await;
    let r = switch(&other_org, &page, "on").await;
    assert_eq!(r.status(), 404, "another organisation's user");
    let r = switch(&customer, &page, "maybe").await;
    assert_eq!(r.status(), 400);
    assert_eq!(status_page(&base, "chat.status.example").await.0, 404);

    // On: the page answers, publicly and cacheably, without a cookie.
    let r = switch(&customer, &page, "on").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("{page}#status-page"));
    let (code, cache, cookie, body) = status_page(&base, "chat.status.example").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(cache, "public, max-age=30");
    assert!(!cookie, "the public page sets no cookie");
    assert!(body.contains("data-page=\"status\""));
    assert!(body.contains("<h1 class=\"status-domain\">chat.status.example</h1>"));
    assert!(
        body.contains("data-probe-status=\"unknown\"") && body.contains("not checked yet"),
        "provisioning, not probed yet: {body}"
    );
    assert_eq!(body.matches("class=\"day day-nodata\"").count(), 90);
    for leak in ["Status Co", "/o/", "Log out", "csrf", "<script"] {
        assert!(!body.contains(leak), "the public page shows {leak:?}");
    }
    let html = customer.page(&page).await;
    assert!(html.contains("data-status-page=\"on\""));
    assert!(
        html.contains("href=\"http://panel.test/status/chat.status.example\""),
        "the domain page links the public page: {html}"
    );
    let audited = app
        .count("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'domain.status_page' AND target = 'chat.status.example'")
        .await;
    assert_eq!(audited, 1, "the switch is in the audit log");

    // Only while the domain is being set up or running.
    for (state, shown) in [
        ("active", true),
        ("suspended", true),
        ("pending_payment", false),
        ("deleting", false),
        ("deleted", false),
        ("provisioning", true),
    ] {
        set_state(&app, "chat.status.example", state).await;
        let (code, _, _, body) = status_page(&base, "chat.status.example").await;
        if shown {
            assert_eq!(code, 200, "{state}");
        } else {
            assert_eq!((code, body.as_str()), (404, private.as_str()), "{state}");
        }
    }

    // Off again.
    assert_eq!(switch(&customer, &page, "off").await.status(), 303);
    let (code, _, _, body) = status_page(&base, "chat.status.example").await;
    assert_eq!((code, body.as_str()), (404, private.as_str()));
}

#[tokio::test]
async fn an_international_domains_status_page_answers_in_unicode_and_ascii() {
    let app = spawn_app().await;
    let (customer, org) = app.customer(&unique_email("idn"), "Bücher").await;
    let page = order(&customer, &org, "Bücher.Example").await;
    assert_eq!(switch(&customer, &page, "on").await.status(), 303);
    let html = customer.page(&page).await;
    assert!(
        html.contains("http://panel.test/status/xn--bcher-kva.example"),
        "the address is in ASCII: {html}"
    );
    for typed in [
        "bücher.example",
        "B%C3%BCcher.Example",
        "xn--bcher-kva.example",
        "XN--BCHER-KVA.EXAMPLE.",
    ] {
        let (code, _, _, body) = status_page(&app.address, typed).await;
        assert_eq!(code, 200, "{typed}: {body}");
        assert!(body.contains("bücher.example"), "{typed}");
    }
}

/// The demo's prober, one round a second: the public page shows the same figures as the
/// domain page, and an incident's failing step without its error text.
#[tokio::test]
async fn a_public_status_page_shows_the_probes_figures_without_error_texts() -> anyhow::Result<()> {
    let (panel, _ports) = PanelProcess::start_demo(&[
        ("ROOKERY_PROBE__INTERVAL_SECS", "1"),
        ("ROOKERY_PROBE__TIMEOUT_SECS", "5"),
        ("ROOKERY_PROBE__OPEN_AFTER", "2"),
        ("ROOKERY_PROBE__CLOSE_AFTER", "2"),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
    ])
    .await?;
    let email = unique_email("public");
    let customer = TestClient::new(&panel.base_url);
    let r = customer
        .post_form(
            "/signup",
            &[
                ("email", email.as_str()),
                ("password", PASSWORD),
                ("org_name", "Public Chat"),
            ],
        )
        .await;
    let org = location(&r).split('?').next().unwrap().to_string();
    let page = order(&customer, &org, "open.demo.test").await;
    assert_eq!(switch(&customer, &page, "on").await.status(), 303);
    let base = panel.base_url.clone();
    let public = || async { status_page(&base, "open.demo.test").await.3 };

    eventually(30, || async {
        public().await.contains("data-probe-status=\"up\"")
    })
    .await
    .expect("the public page reports the domain up");
    let body = public().await;
    assert!(body.contains("100 %"), "{body}");
    assert_eq!(body.matches("class=\"day day-").count(), 90);
    assert!(
        body.matches("class=\"day day-nodata\"").count() < 90,
        "today has a bar"
    );
    let team = customer.page(&page).await;
    for window in ["last 24 hours", "7 days", "30 days", "90 days"] {
        assert!(body.contains(window) && team.contains(window), "{window}");
    }

    // Suspended: logins fail at TLS with a stream error; the public page says "tls" only.
    let pool = rookery_common::db::connect(&panel.database.url, 1).await?;
    let set = |state: &'static str| {
        sqlx::query(
            "UPDATE domains SET state = $1, generation = generation + 1 WHERE domain = 'open.demo.test'",
        )
        .bind(state)
        .execute(&pool)
    };
    set("suspended").await?;
    eventually(30, || async { public().await.contains("id=\"incidents\"") })
        .await
        .expect("the incident is on the public page");
    let body = public().await;
    assert!(body.contains("data-probe-status=\"down\""));
    assert!(
        body.contains("<td>ongoing</td><td>") && body.contains("<td>tls</td>"),
        "{body}"
    );
    assert!(body.contains("failed at the tls step."), "{body}");
    let team = customer.page(&page).await;
    assert!(
        team.contains("tls: policy-violation"),
        "the team sees the error"
    );
    for secret in ["policy-violation", "suspended by its provider"] {
        assert!(
            !body.contains(secret),
            "the public page shows {secret:?}: {body}"
        );
    }

    // Back up: the incident closes; a browser opens the page from the domain page's link.
    set("active").await?;
    eventually(30, || async {
        let body = public().await;
        body.contains("data-probe-status=\"up\"") && !body.contains("ongoing")
    })
    .await
    .expect("the incident closes");
    pool.close().await;

    let browser = Browser::start().await?;
    let outcome = open_in_browser(&panel, &browser, &email, &page).await;
    if outcome.is_err() {
        let _ = browser.screenshot("status-page-failure").await;
    }
    browser.close().await;
    outcome
}

async fn open_in_browser(
    panel: &PanelProcess,
    browser: &Browser,
    email: &str,
    page: &str,
) -> anyhow::Result<()> {
    browser.client.goto(&panel.url("/login")).await?;
    browser.wait_for("main[data-page=login]").await?;
    browser.fill("input[name=email]", email).await?;
    browser.fill("input[name=password]", PASSWORD).await?;
    browser.click("#login-submit").await?;
    browser
        .wait_for(r#"main[data-page]:not([data-page="login"])"#)
        .await?;
    // The organisation's dashboard shows the domain's health.
    let org = page.split("/domains/").next().unwrap_or(page);
    browser.client.goto(&panel.url(org)).await?;
    browser.wait_for("#domain-health").await?;
    browser.screenshot("dashboard-health").await?;
    // The fragment the switch redirects to scrolls the page to the switch.
    browser
        .client
        .goto(&panel.url(&format!("{page}#status-page")))
        .await?;
    browser.wait_for("#status-page-url").await?;
    browser.screenshot("status-page-switch").await?;
    browser.click("#status-page-url").await?;
    browser.wait_for("main[data-page=status]").await?;
    browser.wait_for("#incidents").await?;
    let text = browser.page_text().await?;
    anyhow::ensure!(
        text.contains("open.demo.test") && !text.contains("Log out"),
        "the public page names the domain and nobody's session: {text}"
    );
    browser.screenshot("status-page").await?;
    browser.client.set_window_size(390, 1300).await?;
    browser.client.refresh().await?;
    browser.wait_for("main[data-page=status]").await?;
    browser.screenshot("status-page-phone").await?;
    browser.client.set_window_size(1280, 900).await?;
    Ok(())
}
