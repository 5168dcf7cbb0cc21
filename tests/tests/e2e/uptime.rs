//! Issue 6, first part: the prober in the panel logs in to every active domain over real
//! XMPP, records each result, shows status and uptime on the domain page, and opens an
//! incident with the failing step when the domain stops answering logins (here: it is
//! suspended), closing it when logins work again.

use rookery_tests::{
    app::{PASSWORD, TestClient, eventually, location, unique_email},
    process::PanelProcess,
};

async fn set_state(panel: &PanelProcess, domain: &str, state: &str) {
    // As billing would: a new state and a new spec generation for the node.
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    sqlx::query("UPDATE domains SET state = $1, generation = generation + 1 WHERE domain = $2")
        .bind(state)
        .bind(domain)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

#[tokio::test]
async fn the_prober_logs_in_every_second_and_opens_and_closes_incidents() {
    let (panel, ports) = PanelProcess::start_demo(&[
        ("ROOKERY_PROBE__INTERVAL_SECS", "1"),
        ("ROOKERY_PROBE__TIMEOUT_SECS", "5"),
        ("ROOKERY_PROBE__OPEN_AFTER", "2"),
        ("ROOKERY_PROBE__CLOSE_AFTER", "2"),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
    ])
    .await
    .expect("the demo starts");
    let customer = TestClient::new(&panel.base_url);
    let r = customer
        .post_form(
            "/signup",
            &[
                ("email", unique_email("up").as_str()),
                ("password", PASSWORD),
                ("org_name", "Uptime"),
            ],
        )
        .await;
    let org = location(&r).split('?').next().unwrap().to_string();
    let r = customer
        .post_form(
            &format!("{org}/domains"),
            &[("domain", "watched.demo.test")],
        )
        .await;
    let page = location(&r);

    // The probe is a real login: the domain shows up, and the node counted the logins.
    eventually(30, || async {
        customer
            .page(&page)
            .await
            .contains("data-probe-status=\"up\"")
    })
    .await
    .expect("the prober reports the domain up");
    let html = customer.page(&page).await;
    assert!(html.contains("100 %"), "uptime so far is 100 %");
    assert_eq!(
        html.matches("class=\"day day-").count(),
        90,
        "90 daily bars"
    );
    assert!(
        !html.contains("rookery-probe@"),
        "the probe account is not listed with the customer's"
    );
    let metrics = reqwest::get(format!("http://127.0.0.1:{}/metrics", ports.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.lines().any(
            |l| l.starts_with("rookery_node_auth_total{outcome=\"success\"}")
                || l.contains("auth_total{outcome=\"success\"}")
        ),
        "the node saw successful logins: {metrics}"
    );

    // The panel exports the probe for Prometheus.
    let panel_metrics = reqwest::get(panel.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        panel_metrics.contains("rookery_probe_up{domain=\"watched.demo.test\"} 1"),
        "{panel_metrics}"
    );
    assert!(
        panel_metrics.contains("rookery_probes_total{domain=\"watched.demo.test\",outcome=\"ok\"}")
    );

    // Suspended: logins are refused at the first step, an incident opens.
    set_state(&panel, "watched.demo.test", "suspended").await;
    eventually(30, || async {
        customer.page(&page).await.contains("id=\"incidents\"")
    })
    .await
    .expect("an incident opens");
    let html = customer.page(&page).await;
    assert!(html.contains("data-probe-status=\"down\""));
    assert!(html.contains("ongoing"), "the incident is open");
    assert!(
        html.contains("tls: policy-violation"),
        "the failing step and reason: {html}"
    );

    // The admin overview puts the domain with an open incident first.
    let admin = panel.admin_client().await.unwrap();
    let r = customer
        .post_form(&format!("{org}/domains"), &[("domain", "calm.demo.test")])
        .await;
    assert_eq!(r.status(), 303);
    let overview = admin.page("/admin/uptime").await;
    let watched = overview
        .find("data-domain=\"watched.demo.test\"")
        .expect("listed");
    let calm = overview
        .find("data-domain=\"calm.demo.test\"")
        .expect("listed");
    assert!(watched < calm, "worst first: {overview}");
    assert!(overview.contains(">incident<"));

    // Back: the incident closes.
    set_state(&panel, "watched.demo.test", "active").await;
    eventually(30, || async {
        let html = customer.page(&page).await;
        html.contains("data-probe-status=\"up\"") && !html.contains("ongoing")
    })
    .await
    .expect("the incident closes");
}
