//! Issue 6, alerts: an organisation's alert contacts (owners edit them, bad input comes back
//! with its reasons and nothing lost), the deliveries outbox and its claims (two workers
//! never get the same row), and end to end on the demo with a second node process and a
//! 1 s probe interval: the node is killed, an incident opens at the connect step, a signed
//! `incident.opened` webhook reaches a receiver that checks the signature with its own HMAC
//! code, a real XMPP client (slixmpp) gets the chat alert, the email lands in the outbox, the
//! admins hear that the node is down; the node comes back and `incident.closed` follows.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use rookery::{
    alerts::{
        self,
        db::{self as alerts_db, AttemptOutcome, NewDelivery},
    },
    orgs::db::OrgId,
};
use rookery_tests::{
    app::{PASSWORD, TestClient, eventually, location, spawn_app, spawn_app_with, unique_email},
    node::{NodeProcess, python},
    process::PanelProcess,
};
use sqlx::Row;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The value of the input with this id in a page.
fn input_value(html: &str, id: &str) -> Option<String> {
    let at = html.find(&format!("id=\"{id}\""))?;
    let tag_start = html[..at].rfind('<')?;
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>')?];
    let v = tag.find("value=\"")? + "value=\"".len();
    Some(tag[v..v + tag[v..].find('"')?].to_string())
}

#[tokio::test]
async fn alert_contacts_are_validated_kept_as_typed_and_saved_with_a_signing_secret() {
    let app = spawn_app().await;
    let owner_email = unique_email("alerts-owner");
    let (owner, org) = app.customer(&owner_email, "Alerting Co").await;
    let page = format!("{org}/alerts");

    // Nothing saved: alerts go to the owner by email, and the nav links the page.
    let html = owner.page(&page).await;
    assert!(html.contains(&format!("href=\"{page}\"")), "nav link");
    assert!(html.contains("Nothing saved yet"));
    assert_eq!(
        input_value(&html, "f-email").as_deref(),
        Some(owner_email.as_str())
    );

    // Bad input: 422, every field as typed, a reason for each, nothing saved.
    let r = owner
        .post_form(
            &page,
            &[
                ("email", "not-an-address"),
                ("webhook_url", "http://hooks.example.com/rookery"),
                ("xmpp_jid", "ops@chat.example.com/phone"),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert_eq!(
        input_value(&html, "f-email").as_deref(),
        Some("not-an-address")
    );
    assert_eq!(
        input_value(&html, "f-webhook_url").as_deref(),
        Some("http://hooks.example.com/rookery")
    );
    assert_eq!(
        input_value(&html, "f-xmpp_jid").as_deref(),
        Some("ops@chat.example.com/phone")
    );
    assert!(html.contains("Enter an email address like"), "{html}");
    assert!(html.contains("Use an https:// URL"));
    assert!(html.contains("Leave out the resource"));
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM alert_contacts").await,
        0
    );
    // Internal targets are refused too (the setting that allows them is off).
    let r = owner
        .post_form(
            &page,
            &[
                ("email", ""),
                ("webhook_url", "https://127.0.0.1:9/x"),
                ("xmpp_jid", ""),
            ],
        )
        .await;
    assert_eq!(r.status(), 422);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("must point at a public host")
    );

    // Good input: saved, normalised, and the webhook gets a secret shown to the owner.
    let r = owner
        .post_form(
            &page,
            &[
                ("email", " ops@example.com "),
                ("webhook_url", "https://hooks.invalid/rookery"),
                ("xmpp_jid", "xmpp:Ops@Chat.Example.COM"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("{page}?notice=alerts-saved"));
    let html = owner.page(&format!("{page}?notice=alerts-saved")).await;
    assert!(html.contains("Alert contacts saved."));
    assert_eq!(
        input_value(&html, "f-email").as_deref(),
        Some("ops@example.com")
    );
    assert_eq!(
        input_value(&html, "f-xmpp_jid").as_deref(),
        Some("ops@chat.example.com")
    );
    let secret = input_value(&html, "webhook-secret").expect("the secret is shown");
    assert!(secret.starts_with("whsec_"), "{secret}");

    // Saving again keeps the secret; rotating replaces it.
    let r = owner
        .post_form(
            &page,
            &[
                ("email", "ops@example.com"),
                ("webhook_url", "https://hooks.invalid/other"),
                ("xmpp_jid", ""),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let html = owner.page(&page).await;
    assert_eq!(
        input_value(&html, "webhook-secret").as_deref(),
        Some(secret.as_str())
    );
    let r = owner.post_form(&format!("{page}/secret"), &[]).await;
    assert_eq!(r.status(), 303);
    let rotated = input_value(&owner.page(&page).await, "webhook-secret").unwrap();
    assert_ne!(rotated, secret);
    assert!(rotated.starts_with("whsec_"));

    // Without a CSRF token nothing changes.
    let r = owner.post_raw(&format!("{page}/secret"), &[]).await;
    assert_eq!(r.status(), 403);

    // A test alert: one delivery per channel; email is handed to the mailer, the webhook to
    // a name that does not resolve fails and waits for its retry, both in the log.
    let r = owner.post_form(&format!("{page}/test"), &[]).await;
    assert_eq!(location(&r), format!("{page}?notice=alerts-test-sent"));
    eventually(30, || async {
        let html = owner.page(&page).await;
        html.contains("data-channel=\"email\" data-delivery-status=\"delivered\"")
            && html.contains("data-channel=\"webhook\" data-delivery-status=\"pending\"")
            && html.contains("next try")
    })
    .await
    .expect("the email is delivered and the webhook waits for its retry");
    let mail = app
        .last_mail_to("ops@example.com")
        .await
        .expect("the test alert mail");
    assert!(
        mail.contains("This is a test alert from Rookery for Alerting Co"),
        "{mail}"
    );

    // Redeliver the email: sent again.
    let id: String = sqlx::query("SELECT id FROM deliveries WHERE channel = 'email'")
        .fetch_one(&app.state.db)
        .await
        .unwrap()
        .get("id");
    let r = owner
        .post_form(&format!("{page}/deliveries/{id}/redeliver"), &[])
        .await;
    assert_eq!(location(&r), format!("{page}?notice=alerts-redelivered"));
    eventually(20, || async {
        app.count("SELECT COUNT(*) AS n FROM outbox_mail WHERE to_address = 'ops@example.com'")
            .await
            == 2
    })
    .await
    .expect("redelivered");

    // Other people: another organisation's delivery is a 404, and a member cannot edit.
    let (stranger, stranger_org) = app.customer(&unique_email("stranger"), "Other").await;
    let r = stranger
        .post_form(
            &format!("{stranger_org}/alerts/deliveries/{id}/redeliver"),
            &[],
        )
        .await;
    assert_eq!(r.status(), 404);
    let r = stranger.get(&page).await;
    assert_eq!(r.status(), 404);

    // The admin sees every delivery.
    let admin = app.admin().await;
    let html = admin.page("/admin/deliveries").await;
    assert!(html.contains("Alerting Co"));
    assert!(html.contains("alert.test"));
    let html = admin.page("/admin/deliveries?status=pending").await;
    assert!(html.contains("data-channel=\"webhook\""));
    assert!(!html.contains("data-channel=\"email\""));
}

#[tokio::test]
async fn two_workers_never_claim_the_same_delivery_and_a_lost_claim_records_nothing() {
    let app = spawn_app_with(|s| s.alerts.enabled = false).await;
    let db = &app.state.db;
    let now = app.state.clock.now();
    let (_, org) = app.customer(&unique_email("claims"), "Claims").await;
    let org = OrgId(org.trim_start_matches("/o/").to_string());
    for i in 0..40 {
        let id = uuid::Uuid::now_v7().to_string();
        let added = alerts_db::insert_delivery(
            db,
            &NewDelivery {
                id: &id,
                org_id: Some(&org),
                event_id: "evt-1",
                event_type: "alert.test",
                payload: "{}",
                channel: "email",
                target: &format!("person{i}@example.com"),
                secret_sealed: None,
                give_up_at: now + 86_400,
            },
            now,
        )
        .await
        .unwrap();
        assert!(added);
    }
    // The same event to the same address again is absorbed by the unique key.
    let again = alerts_db::insert_delivery(
        db,
        &NewDelivery {
            id: &uuid::Uuid::now_v7().to_string(),
            org_id: Some(&org),
            event_id: "evt-1",
            event_type: "alert.test",
            payload: "{}",
            channel: "email",
            target: "person0@example.com",
            secret_sealed: None,
            give_up_at: now + 86_400,
        },
        now,
    )
    .await
    .unwrap();
    assert!(!again);

    // Several workers claim at once: every delivery exactly once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let db = db.clone();
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = alerts_db::claim_due(&db, now, 60, 7).await.unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(mine) = tasks.join_next().await {
        all.extend(mine.unwrap());
    }
    let mut ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(all.len(), 40, "each delivery claimed once");
    assert_eq!(ids.len(), 40);
    assert!(
        alerts_db::claim_due(db, now, 60, 50)
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    // The lease runs out: due again, under a new claim; the old holder cannot finish it.
    let reclaimed = alerts_db::claim_due(db, now + 61, 60, 50).await.unwrap();
    assert_eq!(reclaimed.len(), 40);
    let old = all.iter().find(|c| c.id == reclaimed[0].id).unwrap();
    let outcome = AttemptOutcome {
        ok: false,
        http_status: Some(500),
        error: Some("HTTP 500".into()),
        duration_ms: 3,
    };
    let finished = alerts_db::finish_attempt(db, old, &outcome, Some(now + 100), now + 62)
        .await
        .unwrap();
    assert!(!finished, "a lost claim does not update the delivery");
    assert!(
        alerts_db::finish_attempt(db, &reclaimed[0], &outcome, Some(now + 100), now + 62)
            .await
            .unwrap()
    );
    let r = sqlx::query(
        "SELECT status, attempts, last_http_status, next_attempt_at FROM deliveries WHERE id = $1",
    )
    .bind(&reclaimed[0].id)
    .fetch_one(db)
    .await
    .unwrap();
    assert_eq!(r.get::<String, _>("status"), "pending");
    assert_eq!(r.get::<i64, _>("attempts"), 1);
    assert_eq!(r.get::<Option<i64>, _>("last_http_status"), Some(500));
    assert_eq!(r.get::<i64, _>("next_attempt_at"), now + 100);
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM delivery_attempts")
            .await,
        2,
        "both attempts are logged"
    );
    // Giving up: failed, and no longer due.
    let last = alerts_db::claim_due(db, now + 200, 60, 50).await.unwrap();
    let one = last.iter().find(|c| c.id == reclaimed[0].id).unwrap();
    assert!(
        alerts_db::finish_attempt(db, one, &outcome, None, now + 201)
            .await
            .unwrap()
    );
    let status: String = sqlx::query("SELECT status FROM deliveries WHERE id = $1")
        .bind(&one.id)
        .fetch_one(db)
        .await
        .unwrap()
        .get("status");
    assert_eq!(status, "failed");
    // Nothing is enqueued while alerts are disabled.
    alerts::node_down(&app.state, "n1", "node-1", "gone").await;
    assert_eq!(
        app.count("SELECT COUNT(*) AS n FROM deliveries WHERE event_type = 'node.down'")
            .await,
        0
    );
}

// ---- end to end ----------------------------------------------------------------------------

/// What the webhook receiver got.
#[derive(Debug, Clone)]
struct Received {
    /// The last path segment: whose hook it is.
    who: String,
    valid: bool,
    event_id_header: String,
    event: serde_json::Value,
}

/// A webhook receiver on loopback: `POST /hook/<who>`, checked with `<who>`'s secret by
/// its own HMAC code; 204 when the signature is good, 400 otherwise.
#[derive(Clone, Default)]
struct Receiver {
    secrets: Arc<Mutex<HashMap<String, String>>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(&self) -> String {
        let app = Router::new()
            .route("/hook/{who}", post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    fn set_secret(&self, who: &str, secret: &str) {
        self.secrets
            .lock()
            .unwrap()
            .insert(who.into(), secret.into());
    }

    /// The first validly signed event of this type for `who`.
    fn find(&self, who: &str, event_type: &str) -> Option<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .find(|r| r.who == who && r.valid && r.event["type"] == event_type)
            .cloned()
    }
}

async fn receive(
    State(r): State<Receiver>,
    Path(who): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let secret = r.secrets.lock().unwrap().get(&who).cloned();
    let header = headers
        .get("rookery-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let valid =
        secret.is_some_and(|s| rookery_tests::app::webhook_signature_ok(&s, header, &body, now));
    r.got.lock().unwrap().push(Received {
        who,
        valid,
        event_id_header: headers
            .get("rookery-event-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        event: serde_json::from_slice(&body).unwrap_or_default(),
    });
    if valid {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// The name of the node `domain` is settled on, once it is active there.
async fn settled_on(panel: &PanelProcess, domain: &str) -> Option<String> {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .ok()?;
    let row = sqlx::query(
        "SELECT n.name FROM domains d JOIN nodes n ON n.id = d.applied_node_id
         WHERE d.domain = $1 AND d.state = 'active' AND d.node_id = d.applied_node_id
           AND d.applied_generation = d.generation AND d.move_from_node_id IS NULL",
    )
    .bind(domain)
    .fetch_optional(&pool)
    .await
    .ok()
    .flatten();
    pool.close().await;
    row.map(|r| r.get::<String, _>("name"))
}

async fn query_one(panel: &PanelProcess, sql: &str) -> i64 {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let n = sqlx::query(sql)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<i64, _>(0);
    pool.close().await;
    n
}

/// Signs up a customer with a fresh client: (client, org path, email).
async fn sign_up(panel: &PanelProcess, name: &str) -> (TestClient, String, String) {
    let client = TestClient::new(&panel.base_url);
    let email = unique_email(&name.to_lowercase().replace(' ', "-"));
    let r = client
        .post_form(
            "/signup",
            &[
                ("email", email.as_str()),
                ("password", PASSWORD),
                ("org_name", name),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let org = location(&r).split('?').next().unwrap().to_string();
    (client, org, email)
}

async fn add_domain(client: &TestClient, org: &str, domain: &str) -> String {
    let r = client
        .post_form(&format!("{org}/domains"), &[("domain", domain)])
        .await;
    assert_eq!(r.status(), 303, "adding {domain}");
    location(&r)
}

/// A slixmpp client that stays online until a message containing `text` comes in;
/// its output lines arrive on the channel.
async fn listen_for(
    port: u16,
    jid: &str,
    password: &str,
    ca: &std::path::Path,
    text: &str,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/alert_listener.py");
    let mut child = tokio::process::Command::new(python().expect("the test virtualenv"))
        .arg("-u")
        .arg(script)
        .args([
            "127.0.0.1",
            &port.to_string(),
            jid,
            password,
            ca.to_str().unwrap(),
            text,
            "120",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("alert_listener.py starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits (bounded) for a line starting with `prefix`; returns every line seen.
async fn wait_line(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    prefix: &str,
    secs: u64,
) -> Result<Vec<String>, Vec<String>> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(line)) => {
                let done = line.starts_with(prefix);
                seen.push(line);
                if done {
                    return Ok(seen);
                }
            }
            _ => return Err(seen),
        }
    }
}

#[tokio::test]
async fn a_node_outage_alerts_by_signed_webhook_xmpp_and_email_and_its_end_by_webhook() {
    const SENDER_DOMAIN: &str = "alerts.demo.test";
    const WATCHED: &str = "watched.demo.test";
    let receiver = Receiver::default();
    let hooks = receiver.start().await;
    receiver.set_secret("admin", "whsec_admin_test_secret");
    // The probe (and the alert sender) trust exactly the two domains' self-signed
    // certificates, in one file written once both exist.
    let trust_dir = tempfile::tempdir().unwrap();
    let roots = trust_dir.path().join("roots.pem");
    let trust_roots = format!("[\"{}\"]", roots.display());
    let admin_hook = format!("{hooks}/hook/admin");
    let (panel, ports) = PanelProcess::start_demo(&[
        ("ROOKERY_PROBE__INTERVAL_SECS", "1"),
        ("ROOKERY_PROBE__TIMEOUT_SECS", "3"),
        ("ROOKERY_PROBE__OPEN_AFTER", "2"),
        ("ROOKERY_PROBE__CLOSE_AFTER", "2"),
        ("ROOKERY_PROBE__TRUST_ROOTS", &trust_roots),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
        ("ROOKERY_PROVISIONING__DOWN_AFTER_MISSES", "2"),
        ("ROOKERY_PROVISIONING__NODE_TIMEOUT_SECS", "2"),
        ("ROOKERY_ALERTS__XMPP_SENDER_DOMAIN", SENDER_DOMAIN),
        ("ROOKERY_ALERTS__WEBHOOK_ALLOW_LOCAL", "true"),
        ("ROOKERY_ALERTS__POLL_INTERVAL_MS", "200"),
        ("ROOKERY_ALERTS__ADMIN_WEBHOOK_URL", &admin_hook),
        (
            "ROOKERY_ALERTS__ADMIN_WEBHOOK_SECRET",
            "whsec_admin_test_secret",
        ),
    ])
    .await
    .expect("the demo starts");
    let admin = panel.admin_client().await.unwrap();

    // The platform's own organisation hosts the sender domain on the local node, with the
    // on-call person's chat account.
    let (ops, ops_org, _) = sign_up(&panel, "Platform ops").await;
    let sender_page = add_domain(&ops, &ops_org, SENDER_DOMAIN).await;
    eventually(30, || async {
        settled_on(&panel, SENDER_DOMAIN).await.is_some()
    })
    .await
    .expect("the sender domain is placed on the local node");
    let r = ops
        .post_form(
            &format!("{sender_page}/accounts"),
            &[("username", "oncall"), ("password", PASSWORD)],
        )
        .await;
    assert!(
        r.status().is_redirection() || r.status() == 200,
        "{}",
        r.status()
    );

    // A second node joins; the local node is cordoned, so the customer's domain goes there.
    let r = admin
        .post_form("/admin/nodes/tokens", &[("note", "node b")])
        .await;
    let html = r.text().await.unwrap();
    let marker = "id=\"join-token\" class=\"code\">";
    let start = html.find(marker).expect("the join token is shown") + marker.len();
    let token = html[start..start + html[start..].find('<').unwrap()]
        .trim()
        .to_string();
    let mut node_b = NodeProcess::join_and_start(&panel.base_url, &token, "node-b")
        .await
        .expect("node b joins");
    let local_id: String = {
        let pool = rookery_common::db::connect(&panel.database.url, 1)
            .await
            .unwrap();
        let id = sqlx::query("SELECT id FROM nodes WHERE name <> 'node-b'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get("id");
        pool.close().await;
        id
    };
    let r = admin
        .post_form(&format!("/admin/nodes/{local_id}/cordon"), &[])
        .await;
    assert_eq!(r.status(), 303);
    let (customer, org, customer_email) = sign_up(&panel, "Watched Co").await;
    add_domain(&customer, &org, WATCHED).await;
    eventually(30, || async {
        settled_on(&panel, WATCHED).await.as_deref() == Some("node-b")
    })
    .await
    .expect("the customer's domain is placed on node b");

    let sender_cert = panel
        .data_dir()
        .join(format!("node/certs/{SENDER_DOMAIN}.crt"));
    let watched_cert = node_b.cert_of(WATCHED);
    eventually(20, || async {
        sender_cert.exists() && watched_cert.exists()
    })
    .await
    .expect("both domains have their certificates");
    let pem = [
        std::fs::read_to_string(&sender_cert).unwrap(),
        std::fs::read_to_string(&watched_cert).unwrap(),
    ]
    .join("\n");
    std::fs::write(&roots, pem).unwrap();

    // The customer's alert contacts: email, a webhook to the receiver, the on-call JID.
    let alerts_page = format!("{org}/alerts");
    let r = customer
        .post_form(
            &alerts_page,
            &[
                ("email", customer_email.as_str()),
                ("webhook_url", &format!("{hooks}/hook/customer")),
                ("xmpp_jid", &format!("oncall@{SENDER_DOMAIN}")),
            ],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let secret = input_value(&customer.page(&alerts_page).await, "webhook-secret")
        .expect("the signing secret is shown");
    receiver.set_secret("customer", &secret);

    // The prober sees the domain up before anything happens.
    eventually(40, || async {
        query_one(
            &panel,
            &format!(
                "SELECT COUNT(*) FROM probe_results r JOIN domains d ON d.id = r.domain_id WHERE d.domain = '{WATCHED}' AND r.ok = 1"
            ),
        )
        .await
            > 0
    })
    .await
    .expect("the domain on node b is probed up");

    // The on-call person is online with a real client.
    let ca = sender_cert.clone();
    let (mut listener, mut lines) = listen_for(
        ports.c2s,
        &format!("oncall@{SENDER_DOMAIN}"),
        PASSWORD,
        &ca,
        &format!("{WATCHED} is down"),
    )
    .await;
    wait_line(&mut lines, "ready", 30)
        .await
        .expect("the XMPP client logs in");

    // Node b dies.
    node_b.kill().await;
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    // The webhook: a correctly signed incident.opened at the connect step.
    eventually(60, || async {
        receiver.find("customer", "incident.opened").is_some()
    })
    .await
    .expect("a signed incident.opened webhook arrives");
    let opened = receiver.find("customer", "incident.opened").unwrap();
    assert_eq!(opened.event["data"]["domain"], WATCHED);
    assert_eq!(opened.event["data"]["stage"], "connect");
    // Within 3 intervals of 1 s (plus the round keeper's 1 s tick and whole-second
    // clocks): the incident opens after 2 failed rounds.
    let opened_at = opened.event["created_at"].as_i64().unwrap();
    assert!(
        opened_at - killed_at <= 3 + 2,
        "opened {} s after the node died",
        opened_at - killed_at
    );
    assert_eq!(opened.event["data"]["ended_at"], serde_json::Value::Null);
    assert!(
        opened.event["data"]["status_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/o/", panel.base_url))
    );
    assert_eq!(opened.event_id_header, opened.event["id"].as_str().unwrap());

    // The XMPP alert reaches the client.
    let seen = wait_line(&mut lines, "got", 60)
        .await
        .unwrap_or_else(|seen| panic!("no XMPP alert; the client saw {seen:?}"));
    assert!(
        seen.iter().any(
            |l| l.starts_with(&format!("msg: rookery-alerts@{SENDER_DOMAIN}/"))
                && l.contains(&format!(
                    "{WATCHED} is down: logins fail at the connect step"
                ))
        ),
        "{seen:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(10), listener.wait()).await;

    // The email is in the outbox, and the admins heard about the node (email and webhook).
    eventually(20, || async {
        let outbox = admin.page("/admin/outbox").await;
        outbox.contains(&format!("[Rookery] {WATCHED} is down"))
            && outbox.contains("[Rookery] node node-b is down")
    })
    .await
    .expect("the incident and node emails are in the outbox");
    eventually(20, || async {
        receiver.find("admin", "node.down").is_some()
    })
    .await
    .expect("the admin webhook gets node.down");
    assert_eq!(
        receiver.find("admin", "node.down").unwrap().event["data"]["node"],
        "node-b"
    );

    // Node b comes back: the incident closes, with its duration.
    node_b.kill_and_restart().await.expect("node b restarts");
    eventually(60, || async {
        receiver.find("customer", "incident.closed").is_some()
    })
    .await
    .expect("a signed incident.closed webhook arrives");
    let closed = receiver.find("customer", "incident.closed").unwrap();
    assert_eq!(closed.event["data"]["domain"], WATCHED);
    assert!(closed.event["data"]["duration_secs"].as_i64().unwrap() >= 1);
    assert_eq!(
        closed.event["data"]["incident_id"],
        opened.event["data"]["incident_id"]
    );
    eventually(20, || async { receiver.find("admin", "node.up").is_some() })
        .await
        .expect("the admin webhook gets node.up");

    // Every delivery of the incident is in the customer's log, delivered.
    eventually(20, || async {
        query_one(
            &panel,
            "SELECT COUNT(*) FROM deliveries WHERE event_type = 'incident.opened' AND status = 'delivered'",
        )
        .await
            == 3
    })
    .await
    .expect("email, webhook and XMPP deliveries of incident.opened are delivered");
    let html = customer.page(&alerts_page).await;
    for channel in ["email", "webhook", "xmpp"] {
        assert!(
            html.contains(&format!(
                "data-channel=\"{channel}\" data-delivery-status=\"delivered\" data-event=\"incident.opened\""
            )),
            "{channel}: {html}"
        );
    }
    let html = admin.page("/admin/deliveries").await;
    assert!(html.contains("node.down") && html.contains("platform admins"));
}
