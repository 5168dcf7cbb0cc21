//! The panel started inside the test process on a fresh database and a free port, with a
//! clock the test can move, plus a cookie-keeping HTTP client that fills in CSRF tokens the
//! way a browser submitting the panel's own forms would.

use std::sync::Arc;

use anyhow::Context;
use rookery::{AppState, Application, clock::Clock, config::Settings};
use sqlx::Row;
use tokio::sync::{Mutex, oneshot};

use crate::db::{TestDatabase, fresh_database_url};

pub struct TestApp {
    pub address: String,
    pub state: AppState,
    pub clock: Clock,
    pub db: TestDatabase,
    _data: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

/// Starts a panel on `127.0.0.1:0` with a fresh database.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a panel after `adjust` has changed its settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    if std::env::var("TEST_LOG").is_ok_and(|v| v == "1") {
        rookery::telemetry::init(rookery::telemetry::LogFormat::Text);
    }
    let db = fresh_database_url().await.expect("a fresh test database");
    let data = tempfile::tempdir().expect("a temporary data folder");
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: "http://panel.test".into(),
        database_url: db.url.clone(),
        data_dir: data.path().to_path_buf(),
        ..Settings::default()
    };
    // Tests that want nodes start them; the demo's local node would take port 5222.
    settings.local_node.enabled = false;
    adjust(&mut settings);
    let clock = Clock::default();
    let app = Application::build_with_clock(settings, clock.clone())
        .await
        .expect("the panel starts");
    let address = format!("http://{}", app.local_addr());
    let state = app.state.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_with_shutdown(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        state,
        clock,
        db,
        _data: data,
        stop: Some(stop),
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    /// A new browser-like client: its own cookies, no automatic redirects.
    pub fn client(&self) -> TestClient {
        TestClient::new(&self.address)
    }

    /// The body of the newest mail sent to `to`.
    pub async fn last_mail_to(&self, to: &str) -> Option<String> {
        sqlx::query("SELECT body FROM outbox_mail WHERE to_address = $1 ORDER BY created_at DESC, id DESC LIMIT 1")
            .bind(to)
            .fetch_optional(&self.state.db)
            .await
            .expect("outbox query")
            .map(|r| r.get::<String, _>("body"))
    }

    /// The path and query of the first link to the panel in the newest mail to `to`.
    pub async fn link_in_last_mail_to(&self, to: &str) -> String {
        let body = self
            .last_mail_to(to)
            .await
            .unwrap_or_else(|| panic!("no mail to {to}"));
        let start = body
            .find("http://panel.test")
            .unwrap_or_else(|| panic!("no link in {body}"));
        body[start + "http://panel.test".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    }

    /// Runs a `SELECT COUNT(*)` style query that returns one `n`.
    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&self.state.db)
            .await
            .expect("count query")
            .get::<i64, _>("n")
    }

    /// Signs up a new customer with a fresh client and returns it with its dashboard path.
    pub async fn customer(&self, email: &str, org: &str) -> (TestClient, String) {
        let c = self.client();
        let dashboard = c.sign_up(email, org).await;
        (c, dashboard)
    }

    /// A platform admin, signed up and logged in (with an organisation of their own);
    /// returns the client and the admin's email address.
    pub async fn admin_with_email(&self) -> (TestClient, String) {
        let email = unique_email("admin");
        let (client, _) = self.customer(&email, "Operator").await;
        sqlx::query("UPDATE users SET is_admin = 1 WHERE email = $1")
            .bind(&email)
            .execute(&self.state.db)
            .await
            .expect("the user becomes an admin");
        (client, email)
    }

    /// [`TestApp::admin_with_email`], the client alone.
    pub async fn admin(&self) -> TestClient {
        self.admin_with_email().await.0
    }
}

/// Settings for [`spawn_app_with`]: the panel's own node on free loopback ports, fast
/// reconcile and poll loops, the prober off.
pub fn with_local_node(s: &mut Settings) {
    let any = "127.0.0.1:0".parse().expect("an address");
    s.local_node.enabled = true;
    s.local_node.c2s_listen = any;
    s.local_node.c2s_tls_listen = any;
    s.local_node.http_listen = any;
    s.local_node.control_listen = any;
    s.local_node.proxy65_listen = Some(any);
    s.local_node.s2s_listen = Some(any);
    s.provisioning.reconcile_interval_ms = 100;
    s.provisioning.poll_interval_secs = 1;
    s.probe.enabled = false;
}

/// A password every policy accepts.
pub const PASSWORD: &str = "correct-horse-battery-staple-42";

/// The `Location` of a redirect.
pub fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[derive(Clone)]
pub struct TestClient {
    pub base: String,
    pub http: reqwest::Client,
    csrf: Arc<Mutex<Option<String>>>,
}

impl TestClient {
    /// A browser-like client of the panel at `base` (in-process or a real process).
    pub fn new(base: &str) -> TestClient {
        TestClient {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("an HTTP client"),
            csrf: Arc::new(Mutex::new(None)),
        }
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("GET")
    }

    /// GET that must answer 200; returns the body.
    pub async fn page(&self, path: &str) -> String {
        let r = self.get(path).await;
        let status = r.status();
        let body = r.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    /// The CSRF token the panel renders into this client's forms.
    pub async fn csrf_token(&self) -> String {
        let mut cached = self.csrf.lock().await;
        if let Some(t) = cached.as_ref() {
            return t.clone();
        }
        let body = self.get("/login").await.text().await.unwrap();
        let token = csrf_in(&body).expect("a CSRF field on the log-in page");
        *cached = Some(token.clone());
        token
    }

    /// Submits a form as the browser would: with the page's CSRF token.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let token = self.csrf_token().await;
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        all.push(("csrf", &token));
        self.post_raw(path, &all).await
    }

    /// Submits exactly these fields (no CSRF token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .form(fields)
            .send()
            .await
            .expect("POST")
    }

    /// Signs up as `email` with a new organisation `org`; returns the dashboard's path
    /// (`/o/<org id>`).
    pub async fn sign_up(&self, email: &str, org: &str) -> String {
        let r = self
            .post_form(
                "/signup",
                &[("email", email), ("password", PASSWORD), ("org_name", org)],
            )
            .await;
        assert_eq!(
            r.status(),
            303,
            "sign-up of {email} failed: {}",
            r.text().await.unwrap_or_default()
        );
        location(&r).split('?').next().unwrap().to_string()
    }

    /// Orders `domain` for the organisation at `org_path` through the Domains form (the
    /// only plan, or none); returns the domain page's path.
    pub async fn order_domain(&self, org_path: &str, domain: &str) -> String {
        let r = self
            .post_form(&format!("{org_path}/domains"), &[("domain", domain)])
            .await;
        assert_eq!(
            r.status(),
            303,
            "ordering {domain} failed: {}",
            r.text().await.unwrap_or_default()
        );
        location(&r)
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_form("/login", &[("email", email), ("password", password)])
            .await
    }
}

/// The value of the `csrf` hidden field in a page.
pub fn csrf_in(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\"")?;
    let rest = &html[at..];
    let v = rest.find("value=\"")? + "value=\"".len();
    let end = rest[v..].find('"')?;
    Some(rest[v..v + end].to_string())
}

/// A unique address for a test person.
pub fn unique_email(name: &str) -> String {
    format!("{name}-{}@example.com", uuid::Uuid::now_v7().simple())
}

/// Waits until `f` is true, polling, for at most `secs`.
pub async fn eventually<F, Fut>(secs: u64, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if f().await {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(anyhow::anyhow!("condition not met in {secs} s")).context("eventually")
}

/// The receiver's side of the webhook signature recipe in the README, written apart from
/// the panel's own code: `t` and each `v1` from the `Rookery-Signature` header, hex
/// HMAC-SHA256 of "<t>.<body>" under the secret equal to a `v1`, `t` within five minutes
/// of `now`.
pub fn webhook_signature_ok(secret: &str, header: &str, body: &[u8], now: i64) -> bool {
    use hmac::{Hmac, Mac};
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1.push(v.to_string()),
            _ => {}
        }
    }
    let Some(t) = t else { return false };
    if (now - t).abs() > 300 {
        return false;
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    v1.contains(&expected)
}

/// The admin's plan form (`POST /admin/plans`) for a public plan with modest limits: name,
/// monthly price ("0" for free), currency EUR, and the Stripe price when given.
pub fn plan_form<'a>(
    name: &'a str,
    price: &'a str,
    stripe_price_id: Option<&'a str>,
) -> Vec<(&'static str, &'a str)> {
    let mut form = vec![
        ("name", name),
        ("price", price),
        ("currency", "EUR"),
        ("max_accounts", "10"),
        ("max_sessions", "20"),
        ("storage_mb", "100"),
        ("upload_mb", "100"),
        ("archive_days", "30"),
        ("public", "1"),
    ];
    if let Some(id) = stripe_price_id {
        form.push(("stripe_price_id", id));
    }
    form
}
