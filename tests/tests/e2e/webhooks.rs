//! Issue 7, outbound webhooks: endpoints registered through the API, events from the
//! places they happen (here: a domain ordered on the panel → `domain.created`), delivered
//! from the outbox with retries and signed; a receiver that fails twice then succeeds gets
//! one successful delivery (three attempts logged, one event id), and an event queued
//! while the receiver is down survives a panel crash and arrives after the restart. The
//! receiver checks signatures with its own HMAC code. Every test runs the real binary.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use reqwest::Method;
use rookery_tests::{
    app::{PASSWORD, TestClient, location, unique_email},
    process::PanelProcess,
};
use serde_json::{Value, json};

/// What a receiver got: (event id header, signature valid, body).
type Got = Arc<Mutex<Vec<(String, bool, Value)>>>;

#[derive(Clone)]
struct Receiver {
    secret: Arc<Mutex<String>>,
    got: Got,
    /// Answer 500 to this many requests first.
    fail_first: usize,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = headers
        .get("rookery-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let secret = r.secret.lock().unwrap().clone();
    let valid = rookery_tests::app::webhook_signature_ok(&secret, header, &body, now);
    let mut got = r.got.lock().unwrap();
    got.push((
        headers
            .get("rookery-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        valid,
        serde_json::from_slice(&body).unwrap_or_default(),
    ));
    if got.len() <= r.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if valid {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// Serves the receiver on `listener`: `POST /hook`.
fn serve(listener: tokio::net::TcpListener, r: Receiver) {
    let app = Router::new().route("/hook", post(receive)).with_state(r);
    tokio::spawn(async move { axum::serve(listener, app).await });
}

/// Polls `f` until it gives a value; panics after `secs`.
async fn wait_for<T, F, Fut>(secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn panel() -> PanelProcess {
    PanelProcess::start_with_env(&[
        ("ROOKERY_PROBE__ENABLED", "false"),
        ("ROOKERY_ALERTS__WEBHOOK_ALLOW_LOCAL", "true"),
        ("ROOKERY_ALERTS__POLL_INTERVAL_MS", "100"),
        ("ROOKERY_ALERTS__MAX_RETRY_DELAY_SECS", "1"),
    ])
    .await
    .expect("the panel starts")
}

/// Signs up and makes a read-write key: (client, org id, key).
async fn tenant(panel: &PanelProcess, name: &str) -> (TestClient, String, String) {
    let client = TestClient::new(&panel.base_url);
    let r = client
        .post_form(
            "/signup",
            &[
                (
                    "email",
                    unique_email(&name.replace(' ', "-").to_lowercase()).as_str(),
                ),
                ("password", PASSWORD),
                ("org_name", name),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let org = location(&r)
        .trim_start_matches("/o/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let key = crate::api::create_key(
        &client,
        &format!("/o/{org}/api-keys"),
        "hooks",
        "read_write",
        "",
    )
    .await;
    (client, org, key)
}

async fn api(
    panel: &PanelProcess,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, panel.url(path))
        .bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn add_domain(client: &TestClient, org: &str, domain: &str) {
    let r = client
        .post_form(&format!("/o/{org}/domains"), &[("domain", domain)])
        .await;
    assert_eq!(r.status(), 303, "adding {domain}");
}

async fn register(panel: &PanelProcess, key: &str, url: &str) -> (String, String) {
    let (status, body) = api(
        panel,
        Method::POST,
        "/api/v1/webhooks",
        key,
        Some(json!({"url": url, "description": "test receiver", "events": ["domain.created"]})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let secret = body["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    assert_eq!(body["events"], json!(["domain.created"]));
    (body["id"].as_str().unwrap().to_string(), secret)
}

#[tokio::test]
async fn a_receiver_failing_twice_then_succeeding_gets_one_signed_delivery_with_three_attempts() {
    let panel = panel().await;
    let (client, org, key) = tenant(&panel, "Hooked Co").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (id, secret) = register(&panel, &key, &url).await;
    // The secret is shown on create only.
    let (status, body) = api(
        &panel,
        Method::GET,
        &format!("/api/v1/webhooks/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.get("secret").is_none(), "{body}");
    let got: Got = Arc::default();
    serve(
        listener,
        Receiver {
            secret: Arc::new(Mutex::new(secret)),
            got: got.clone(),
            fail_first: 2,
        },
    );

    add_domain(&client, &org, "chat.hooked.example").await;

    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let (p, k, dl) = (&panel, key.as_str(), deliveries.as_str());
    let delivered = wait_for(30, || async move {
        let (_, body) = api(p, Method::GET, dl, k, None).await;
        (body["items"][0]["status"] == "delivered").then_some(body)
    })
    .await;
    let items = delivered["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{delivered}");
    assert_eq!(items[0]["attempts"], 3);
    assert_eq!(items[0]["event_type"], "domain.created");
    assert_eq!(items[0]["last_http_status"], 204);

    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "two failures and one success: {got:?}");
    let event_id = items[0]["event_id"].as_str().unwrap();
    for (header_id, valid, event) in &got {
        assert!(valid, "every attempt is signed with the endpoint's secret");
        assert_eq!(
            header_id, event_id,
            "the same Rookery-Event-Id on every attempt"
        );
        assert_eq!(event["id"], event_id);
        assert_eq!(event["type"], "domain.created");
        assert_eq!(event["data"]["domain"], "chat.hooked.example");
        assert_eq!(event["data"]["org_id"], org.as_str());
    }

    // Redelivery sends the same event again, once more.
    let delivery_id = items[0]["id"].as_str().unwrap();
    let (status, _) = api(
        &panel,
        Method::POST,
        &format!("{deliveries}/{delivery_id}/redeliver"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 202);
    wait_for(20, || async move {
        let (_, body) = api(p, Method::GET, dl, k, None).await;
        (body["items"][0]["attempts"] == 4 && body["items"][0]["status"] == "delivered")
            .then_some(())
    })
    .await;

    // The organisation registers a URL once: a second endpoint for it is refused, and so
    // is moving another endpoint onto it.
    let (status, body) = api(
        &panel,
        Method::POST,
        "/api/v1/webhooks",
        &key,
        Some(json!({"url": url, "events": ["domain.active"]})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "url_taken", "{body}");
    let (status, second) = api(
        &panel,
        Method::POST,
        "/api/v1/webhooks",
        &key,
        Some(json!({"url": format!("{url}/second"), "events": ["domain.active"]})),
    )
    .await;
    assert_eq!(status, 201, "{second}");
    let (status, body) = api(
        &panel,
        Method::PATCH,
        &format!("/api/v1/webhooks/{}", second["id"].as_str().unwrap()),
        &key,
        Some(json!({"url": url})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["errors"][0]["code"], "url_taken", "{body}");

    // Another organisation's key sees none of it.
    let (_, _, other) = tenant(&panel, "Other Co").await;
    for path in [format!("/api/v1/webhooks/{id}"), deliveries.clone()] {
        let (status, _) = api(&panel, Method::GET, &path, &other, None).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = api(
        &panel,
        Method::DELETE,
        &format!("/api/v1/webhooks/{id}"),
        &other,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = api(
        &panel,
        Method::DELETE,
        &format!("/api/v1/webhooks/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = api(
        &panel,
        Method::GET,
        &format!("/api/v1/webhooks/{id}"),
        &key,
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn an_event_queued_while_the_receiver_is_down_survives_a_panel_restart() {
    let mut panel = panel().await;
    let (client, org, key) = tenant(&panel, "Restart Co").await;
    // A port with nobody listening: connections are refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (id, secret) = register(&panel, &key, &format!("http://127.0.0.1:{port}/hook")).await;

    add_domain(&client, &org, "chat.restart.example").await;
    let deliveries = format!("/api/v1/webhooks/{id}/deliveries");
    let (k, dl) = (key.as_str(), deliveries.as_str());
    let p = &panel;
    // It was tried and failed (refused), and stays pending.
    wait_for(20, || async move {
        let (_, body) = api(p, Method::GET, dl, k, None).await;
        let d = &body["items"][0];
        (d["status"] == "pending" && d["attempts"].as_i64().unwrap_or(0) >= 1).then_some(())
    })
    .await;

    panel.kill_and_restart().await.expect("the panel restarts");
    let p = &panel;
    let got: Got = Arc::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    serve(
        listener,
        Receiver {
            secret: Arc::new(Mutex::new(secret)),
            got: got.clone(),
            fail_first: 0,
        },
    );
    let body = wait_for(30, || async move {
        let (_, body) = api(p, Method::GET, dl, k, None).await;
        (body["items"][0]["status"] == "delivered").then_some(body)
    })
    .await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1);
    assert!(
        body["items"][0]["attempts"].as_i64().unwrap() >= 2,
        "failed before the restart, delivered after it: {body}"
    );
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].1, "signed");
    assert_eq!(got[0].2["type"], "domain.created");
    assert_eq!(got[0].2["data"]["domain"], "chat.restart.example");
}

/// The value of the input with this id in a page.
fn input_value(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    let v = tag.find("value=\"")? + "value=\"".len();
    Some(tag[v..v + tag[v..].find('"')?].to_string())
}

#[tokio::test]
async fn owners_manage_endpoints_on_the_webhooks_page_and_its_log_shows_deliveries() {
    let panel = panel().await;
    let (client, org, _key) = tenant(&panel, "Paged Co").await;
    let list = format!("/o/{org}/webhooks");
    let html = client.page(&list).await;
    assert!(html.contains(&format!("href=\"{list}\"")), "nav link");
    assert!(html.contains("No webhook endpoints yet"));

    // A bad URL comes back with its reason and what was typed.
    let r = client
        .post_form(
            &list,
            &[("url", "ftp://x.example/"), ("description", "nope")],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("Use an https:// URL"));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let r = client
        .post_form(
            &list,
            &[
                ("url", url.as_str()),
                ("description", "from the panel"),
                ("event:domain.created", "on"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let page = location(&r).split('?').next().unwrap().to_string();
    let html = client.page(&page).await;
    let secret = input_value(&html, "webhook-secret").expect("the secret is shown to owners");
    assert!(secret.starts_with("whsec_"));
    assert!(html.contains("domain.created"));

    let got: Got = Arc::default();
    serve(
        listener,
        Receiver {
            secret: Arc::new(Mutex::new(secret.clone())),
            got: got.clone(),
            fail_first: 0,
        },
    );
    add_domain(&client, &org, "chat.paged.example").await;
    let (c, pg) = (&client, page.as_str());
    wait_for(20, || async move {
        c.page(pg)
            .await
            .contains("data-delivery-status=\"delivered\"")
            .then_some(())
    })
    .await;
    {
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].1, "signed with the secret on the page");
    }

    // Rotate: a new secret; disable; delete.
    let r = client.post_form(&format!("{page}/secret"), &[]).await;
    assert_eq!(r.status(), 303);
    let html = client.page(&page).await;
    let rotated = input_value(&html, "webhook-secret").unwrap();
    assert_ne!(rotated, secret);
    let r = client
        .post_form(&format!("{page}/enabled"), &[("enabled", "0")])
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        client
            .page(&page)
            .await
            .contains("id=\"webhook-status\">disabled")
    );
    let r = client.post_form(&format!("{page}/delete"), &[]).await;
    assert_eq!(r.status(), 303);
    assert_eq!(client.get(&page).await.status(), 404);
    assert!(
        client
            .page(&list)
            .await
            .contains("No webhook endpoints yet")
    );
}
