//! Issue 6, first part: the prober in the panel logs in to every active domain over real
//! XMPP, records each result, shows status and uptime on the domain page, and opens an
//! incident with the failing step when the domain stops answering logins (here: it is
//! suspended), closing it when logins work again.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, extract::State, http::StatusCode, routing::post};
use rookery_tests::{
    app::{TestClient, eventually, unique_email},
    process::PanelProcess,
};
use serde_json::Value;

/// A webhook receiver on loopback that keeps every event body it gets: its URL.
async fn event_receiver(got: Arc<Mutex<Vec<Value>>>) -> String {
    async fn receive(State(got): State<Arc<Mutex<Vec<Value>>>>, body: Bytes) -> StatusCode {
        got.lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap_or_default());
        StatusCode::NO_CONTENT
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/events", post(receive))
        .with_state(got);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn events_of(got: &Mutex<Vec<Value>>, kind: &str) -> Vec<Value> {
    got.lock()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

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
        // Alerts off: the organisation's outbound webhooks still hear of the incident.
        ("ROOKERY_ALERTS__ENABLED", "false"),
        ("ROOKERY_ALERTS__WEBHOOK_ALLOW_LOCAL", "true"),
        ("ROOKERY_ALERTS__POLL_INTERVAL_MS", "200"),
    ])
    .await
    .expect("the demo starts");
    let customer = TestClient::new(&panel.base_url);
    let org = customer.sign_up(&unique_email("up"), "Uptime").await;
    let got = Arc::new(Mutex::new(Vec::new()));
    let hook = event_receiver(got.clone()).await;
    let r = customer
        .post_form(
            &format!("{org}/webhooks"),
            &[
                ("url", hook.as_str()),
                ("event:domain.down", "on"),
                ("event:domain.up", "on"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    // One endpoint per URL: a second one for the same URL is refused, with the reason.
    let r = customer
        .post_form(
            &format!("{org}/webhooks"),
            &[("url", hook.as_str()), ("event:domain.up", "on")],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("An endpoint with this URL is already registered")
    );
    let page = customer.order_domain(&org, "watched.demo.test").await;

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
    let list = customer.page(&format!("{org}/domains")).await;
    assert!(
        list.contains("data-probe=\"up\""),
        "the domain list shows the status: {list}"
    );
    let dashboard = customer.page(&org).await;
    assert!(
        dashboard.contains("id=\"domain-health\"") && dashboard.contains("data-probe=\"up\""),
        "the dashboard shows each domain's health: {dashboard}"
    );
    assert_eq!(dashboard.matches("class=\"day day-").count(), 90);
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
    let list = customer.page(&format!("{org}/domains")).await;
    assert!(list.contains("data-probe=\"incident\""), "{list}");
    eventually(20, || async { !events_of(&got, "domain.down").is_empty() })
        .await
        .expect("the endpoint gets domain.down");
    let down = &events_of(&got, "domain.down")[0];
    assert_eq!(down["data"]["domain"], "watched.demo.test");
    assert_eq!(down["data"]["stage"], "tls");

    // The admin overview puts the domain with an open incident first.
    let admin = panel.admin_client().await.unwrap();
    customer.order_domain(&org, "calm.demo.test").await;
    let overview = admin.page("/admin/uptime").await;
    let watched = overview
        .find("data-domain=\"watched.demo.test\"")
        .expect("listed");
    let calm = overview
        .find("data-domain=\"calm.demo.test\"")
        .expect("listed");
    assert!(watched < calm, "worst first: {overview}");
    assert!(overview.contains(">incident<"));
    // The dashboard ranks the organisation's domains the same way.
    eventually(30, || async {
        let dashboard = customer.page(&org).await;
        match (
            dashboard.find("data-domain=\"watched.demo.test\""),
            dashboard.find("data-domain=\"calm.demo.test\""),
        ) {
            (Some(w), Some(c)) => w < c && dashboard.contains("data-probe=\"incident\""),
            _ => false,
        }
    })
    .await
    .expect("the dashboard puts the domain with an incident first");

    // Back: the incident closes.
    set_state(&panel, "watched.demo.test", "active").await;
    eventually(30, || async {
        let html = customer.page(&page).await;
        html.contains("data-probe-status=\"up\"") && !html.contains("ongoing")
    })
    .await
    .expect("the incident closes");
    eventually(20, || async { !events_of(&got, "domain.up").is_empty() })
        .await
        .expect("the endpoint gets domain.up");
    let up = &events_of(&got, "domain.up")[0];
    assert_eq!(up["data"]["incident_id"], down["data"]["incident_id"]);
    assert_eq!(
        events_of(&got, "domain.down").len(),
        1,
        "one delivery each: {:?}",
        got.lock().unwrap()
    );
}

/// `(reporting, failing, up)` of the domain's rounds decided so far, oldest first.
async fn rounds(panel: &PanelProcess, domain: &str) -> Vec<(i64, i64, i64)> {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT r.reporting, r.failing, r.up FROM probe_rounds r JOIN domains d ON d.id = r.domain_id
         WHERE d.domain = $1 ORDER BY r.round_start",
    )
    .bind(domain)
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows
}

/// Starts `rookery probe` as a separate process; its output goes to `log`.
fn start_location(
    panel: &PanelProcess,
    token: &str,
    extra: &[&str],
    log: &std::path::Path,
) -> tokio::process::Child {
    let out = std::fs::File::create(log).unwrap();
    tokio::process::Command::new(rookery_tests::process::rookery_binary().unwrap())
        .args(["probe", "--panel", &panel.base_url, "--token", token])
        .args(extra)
        .env_remove("ROOKERY_PROBE_TOKEN")
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_remote_location_counts_toward_the_quorum_and_one_locations_trouble_is_no_outage() {
    let (panel, _ports) = PanelProcess::start_demo(&[
        ("ROOKERY_PROBE__INTERVAL_SECS", "1"),
        ("ROOKERY_PROBE__TIMEOUT_SECS", "3"),
        ("ROOKERY_PROBE__OPEN_AFTER", "2"),
        ("ROOKERY_PROBE__CLOSE_AFTER", "2"),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
    ])
    .await
    .expect("the demo starts");
    let customer = TestClient::new(&panel.base_url);
    let org = customer.sign_up(&unique_email("far"), "Far away").await;
    let page = customer.order_domain(&org, "far.demo.test").await;
    eventually(30, || async {
        customer
            .page(&page)
            .await
            .contains("data-probe-status=\"up\"")
    })
    .await
    .expect("the panel's own prober reports the domain up");

    // The admin adds a location; its token is shown once, with the command to run.
    let admin = panel.admin_client().await.unwrap();
    let r = admin
        .post_form("/admin/uptime/locations", &[("name", "panel")])
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"location-error\""), "{html}");
    let r = admin
        .post_form("/admin/uptime/locations", &[("name", "eu-west")])
        .await;
    let html = r.text().await.unwrap();
    let token = html
        .split("id=\"location-token\"")
        .nth(1)
        .and_then(|rest| rest.split('>').nth(1))
        .and_then(|rest| rest.split('<').next())
        .expect("the token is shown")
        .to_string();
    assert!(token.starts_with("rkp_"), "{token}");
    assert!(html.contains(&format!(
        "rookery probe --panel {} --token {token}",
        panel.base_url
    )));

    // A wrong token is refused at once, with a clear message.
    let dir = tempfile::tempdir().unwrap();
    let mut wrong = start_location(&panel, "rkp_wrong", &[], &dir.path().join("wrong.log"));
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), wrong.wait())
        .await
        .expect("a refused location stops")
        .unwrap();
    assert!(!status.success());
    let said = std::fs::read_to_string(dir.path().join("wrong.log")).unwrap();
    assert!(said.contains("unknown or was revoked"), "{said}");

    // The location trusts a CA that did not sign the domain's certificate: from there the
    // domain fails at TLS (its own network trouble), while the panel still logs in.
    let other_ca = panel.data_dir().join("node/certs/_control.crt");
    assert!(other_ca.exists(), "{}", other_ca.display());
    let log = dir.path().join("eu-west.log");
    let mut remote = start_location(
        &panel,
        &token,
        &["--trust-root", other_ca.to_str().unwrap()],
        &log,
    );
    eventually(30, || async {
        let rs = rounds(&panel, "far.demo.test").await;
        rs.iter().filter(|r| **r == (2, 1, 1)).count() >= 3
    })
    .await
    .ok();
    let seen = rounds(&panel, "far.demo.test").await;
    assert!(
        seen.iter().filter(|r| **r == (2, 1, 1)).count() >= 3,
        "rounds with both locations, one failing, count as up: {seen:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let html = customer.page(&page).await;
    assert!(html.contains("data-probe-status=\"up\""), "still up");
    assert!(!html.contains("id=\"incidents\""), "no incident: {html}");
    let overview = admin.page("/admin/uptime").await;
    let row = overview
        .split("data-location=\"eu-west\"")
        .nth(1)
        .expect("the location is listed");
    assert!(
        row[..row.find("</tr>").unwrap()].contains(">active<"),
        "{row}"
    );
    assert!(
        overview.contains("when 2 of the 2 active locations fail"),
        "{overview}"
    );

    // Suspended: both locations fail, a quorum; the incident opens.
    set_state(&panel, "far.demo.test", "suspended").await;
    eventually(30, || async {
        customer.page(&page).await.contains("id=\"incidents\"")
    })
    .await
    .expect("an incident opens when every location fails");
    assert!(rounds(&panel, "far.demo.test").await.contains(&(2, 2, 0)));
    set_state(&panel, "far.demo.test", "active").await;

    // Revoked: the location's process stops, and it no longer counts.
    let overview = admin.page("/admin/uptime").await;
    let at = overview.find("/admin/uptime/locations/").unwrap();
    let action = &overview[at..at + overview[at..].find('"').unwrap()];
    let r = admin.post_form(action, &[]).await;
    assert_eq!(r.status(), 303);
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), remote.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a revoked location ({action}) stops: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
        .unwrap();
    assert!(!status.success());
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("refused this location's token"),
    );
    eventually(30, || async {
        let html = customer.page(&page).await;
        html.contains("data-probe-status=\"up\"") && !html.contains("ongoing")
    })
    .await
    .expect("the incident closes on the panel's rounds alone");
}
