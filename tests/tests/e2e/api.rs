//! Issue 7, the REST API: keys made on the panel's pages, a generated authorisation matrix
//! over every endpoint, idempotent POSTs, stable pagination, ETag preconditions, rate
//! limits, request ids and problem bodies, and schemathesis against the live OpenAPI
//! document. Every test runs the real `rookery` binary.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use rookery_tests::{
    app::{PASSWORD, TestClient, eventually, location, unique_email},
    node::python,
    process::{PanelProcess, free_loopback_port},
};
use serde_json::{Value, json};

/// A signed-up person with their organisation.
struct Tenant {
    client: TestClient,
    org_id: String,
}

async fn sign_up(panel: &PanelProcess, name: &str) -> Tenant {
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
    assert_eq!(r.status(), 303, "sign-up of {name}");
    let org_id = location(&r)
        .trim_start_matches("/o/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    Tenant { client, org_id }
}

/// Creates a key on an API keys page (`/o/{id}/api-keys` or `/admin/api-keys`) and
/// returns it, as shown once.
pub(crate) async fn create_key(
    client: &TestClient,
    page: &str,
    name: &str,
    scope: &str,
    days: &str,
) -> String {
    let r = client
        .post_form(
            page,
            &[("name", name), ("scope", scope), ("expires_days", days)],
        )
        .await;
    let status = r.status();
    let html = r.text().await.unwrap();
    assert_eq!(status, 200, "creating a key on {page}: {html}");
    let at = html.find("value=\"rk_").expect("the new key is shown") + "value=\"".len();
    let key = html[at..].split('"').next().unwrap().to_string();
    assert_eq!(key.len(), 64, "{key}");
    key
}

/// Revokes a key on its page, found by its prefix.
async fn revoke_key(client: &TestClient, page: &str, key: &str) {
    let html = client.page(page).await;
    let row = html
        .find(&format!("data-key=\"{}\"", &key[..11]))
        .expect("the key is listed");
    let rest = &html[row..];
    let end = rest.find("/revoke\"").expect("a revoke button");
    let start = rest[..end].rfind("/api-keys/").unwrap() + "/api-keys/".len();
    let id = &rest[start..end];
    let r = client.post_form(&format!("{page}/{id}/revoke"), &[]).await;
    assert_eq!(r.status(), 303);
}

async fn db_exec(panel: &PanelProcess, sql: &str, args: &[&str]) {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let mut q = sqlx::query(sql);
    for a in args {
        q = q.bind(*a);
    }
    q.execute(&pool).await.unwrap();
    pool.close().await;
}

async fn db_count(panel: &PanelProcess, sql: &str) -> i64 {
    use sqlx::Row;
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let n = sqlx::query(sql)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<i64, _>("n");
    pool.close().await;
    n
}

async fn db_string(panel: &PanelProcess, sql: &str) -> String {
    use sqlx::Row;
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let v = sqlx::query(sql)
        .fetch_one(&pool)
        .await
        .unwrap()
        .get::<String, _>("v");
    pool.close().await;
    v
}

/// Waits until the domain is active on its node (the demo's local node).
async fn wait_active(panel: &PanelProcess, domain_id: &str) {
    let sql = format!(
        "SELECT COUNT(*) AS n FROM domains WHERE id = '{domain_id}' AND state = 'active' AND applied_node_id IS NOT NULL AND applied_generation = generation"
    );
    eventually(30, || {
        let sql = sql.clone();
        async move { db_count(panel, &sql).await == 1 }
    })
    .await
    .expect("the domain becomes active on the local node");
}

/// One answer of the API.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

async fn call_with(
    panel: &PanelProcess,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let http = reqwest::Client::new();
    let mut req = http.request(method, panel.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let r = req.send().await.expect("the API answers");
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    let answer = Answer {
        status,
        headers,
        body,
    };
    // Conventions every answer keeps.
    assert!(
        !answer.header("x-request-id").is_empty(),
        "{path}: no x-request-id"
    );
    assert!(
        !answer.header("ratelimit-limit").is_empty(),
        "{path}: no RateLimit-Limit"
    );
    if !status.is_success() {
        assert_eq!(
            answer.header("content-type"),
            "application/problem+json",
            "{path}: {status} {}",
            answer.body
        );
        assert_eq!(answer.body["status"], status.as_u16(), "{}", answer.body);
        assert!(answer.body["code"].is_string(), "{}", answer.body);
        assert!(
            answer.body["type"]
                .as_str()
                .unwrap()
                .contains("/docs/api#problem-"),
            "{}",
            answer.body
        );
        assert_eq!(
            answer.body["request_id"].as_str(),
            Some(answer.header("x-request-id")),
            "the problem names the request id"
        );
    }
    answer
}

async fn call(
    panel: &PanelProcess,
    method: Method,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> Answer {
    call_with(panel, method, path, key, body, &[]).await
}

/// Everyone of the matrix: customers A and B, resellers R1 and R2 with customers C1 and C2,
/// an admin, and R1's read-only key, an expired key and a revoked key.
struct World {
    panel: PanelProcess,
    admin: TestClient,
    a: Tenant,
    r1: Tenant,
    c1: Tenant,
    keys: Vec<(&'static str, String)>,
    /// A domain of C1, ordered by its reseller, active on the local node.
    c1_domain: String,
    /// The demo's local node.
    node_id: String,
    /// A webhook endpoint on C1's organisation registered by each key that may (C1, R1,
    /// admin), with the delivery of its `domain.created`: (who, endpoint id, delivery id).
    hooks: Vec<(&'static str, String, String)>,
}

impl World {
    fn key(&self, who: &str) -> &str {
        &self.keys.iter().find(|(n, _)| *n == who).unwrap().1
    }

    /// The endpoint and delivery `who` registered; C1's for keys that registered none
    /// (they must not see it).
    fn hook(&self, who: &str) -> (&str, &str) {
        let owner = match who {
            "R1 read-only" => "R1",
            w if self.hooks.iter().any(|(h, _, _)| *h == w) => w,
            _ => "C1",
        };
        let (_, id, delivery) = self.hooks.iter().find(|(h, _, _)| *h == owner).unwrap();
        (id, delivery)
    }
}

async fn world(extra_env: &[(&str, &str)]) -> World {
    // A resolver nobody answers at: DNS checks come back quickly, every record failing.
    let dead_resolver = format!("127.0.0.1:{}", free_loopback_port().unwrap());
    let mut env = vec![
        ("ROOKERY_PROBE__ENABLED", "false"),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
        ("ROOKERY_DNS__RESOLVER", dead_resolver.as_str()),
        ("ROOKERY_DNS__TIMEOUT_SECS", "1"),
    ];
    env.extend_from_slice(extra_env);
    let (panel, _ports) = PanelProcess::start_demo(&env)
        .await
        .expect("the panel starts");
    let admin = panel.admin_client().await.unwrap();
    let a = sign_up(&panel, "Customer A").await;
    let b = sign_up(&panel, "Customer B").await;
    let r1 = sign_up(&panel, "Reseller One").await;
    let r2 = sign_up(&panel, "Reseller Two").await;
    let c1 = sign_up(&panel, "Customer One").await;
    let c2 = sign_up(&panel, "Customer Two").await;
    for r in [&r1, &r2] {
        let resp = admin
            .post_form(
                &format!("/admin/tenants/{}/reseller", r.org_id),
                &[("reseller", "1")],
            )
            .await;
        assert_eq!(resp.status(), 303);
    }
    // No page attaches an existing organisation to a reseller yet.
    for (c, r) in [(&c1, &r1), (&c2, &r2)] {
        db_exec(
            &panel,
            "UPDATE organisations SET parent_id = $1 WHERE id = $2",
            &[&r.org_id, &c.org_id],
        )
        .await;
    }
    let page = |t: &Tenant| format!("/o/{}/api-keys", t.org_id);
    let mut keys = Vec::new();
    for (name, t) in [
        ("A", &a),
        ("B", &b),
        ("R1", &r1),
        ("R2", &r2),
        ("C1", &c1),
        ("C2", &c2),
    ] {
        keys.push((
            name,
            create_key(&t.client, &page(t), name, "read_write", "").await,
        ));
    }
    keys.push((
        "R1 read-only",
        create_key(&r1.client, &page(&r1), "reporting", "read", "").await,
    ));
    keys.push((
        "admin",
        create_key(&admin, "/admin/api-keys", "ops", "read_write", "").await,
    ));
    let expired = create_key(&r1.client, &page(&r1), "short-lived", "read_write", "1").await;
    db_exec(
        &panel,
        "UPDATE api_keys SET expires_at = 1 WHERE prefix = $1",
        &[&expired[..11]],
    )
    .await;
    keys.push(("expired", expired));
    let revoked = create_key(&r1.client, &page(&r1), "old", "read_write", "").await;
    revoke_key(&r1.client, &page(&r1), &revoked).await;
    keys.push(("revoked", revoked));

    // Endpoints on C1's organisation, registered before its domain is ordered, so each
    // gets a delivery of domain.created.
    let mut hook_ids = Vec::new();
    for who in ["C1", "R1", "admin"] {
        let key = &keys.iter().find(|(n, _)| *n == who).unwrap().1;
        let r = call(
            &panel,
            Method::POST,
            "/api/v1/webhooks",
            Some(key),
            Some(&json!({
                "url": format!("https://hooks.example.com/{}", who.to_lowercase()),
                "org_id": c1.org_id,
                "events": ["domain.created"],
            })),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        hook_ids.push((who, r.body["id"].as_str().unwrap().to_string()));
    }
    let order = json!({"domain": "chat.customer-one.example", "org_id": c1.org_id});
    let r = call(
        &panel,
        Method::POST,
        "/api/v1/domains",
        Some(&keys[2].1),
        Some(&order),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let c1_domain = r.body["id"].as_str().unwrap().to_string();
    wait_active(&panel, &c1_domain).await;
    let node_id = db_string(&panel, "SELECT id AS v FROM nodes").await;
    let mut hooks = Vec::new();
    for (who, id) in hook_ids {
        let delivery = db_string(
            &panel,
            &format!("SELECT id AS v FROM deliveries WHERE endpoint_id = '{id}'"),
        )
        .await;
        hooks.push((who, id, delivery));
    }
    World {
        hooks,
        panel,
        admin,
        a,
        r1,
        c1,
        keys,
        c1_domain,
        node_id,
    }
}

/// One endpoint of the matrix: placeholders `{domain}`, `{customer}` (C1's domain and
/// organisation), `{reseller}` (R1), `{node}` (the local node), `{unique}` (fresh per
/// call), `{who}` (the key's holder, so one row can create what a later row changes).
struct Row {
    method: Method,
    path: &'static str,
    body: Option<&'static str>,
    /// Keys that get a 2xx; every other valid read-write key gets 404.
    owners: &'static [&'static str],
}

/// Rows only admin keys may use: every other key gets 404, read-only ones too (the
/// endpoints do not reveal themselves).
const ADMIN_ONLY: &[&str] = &["admin"];

/// Every endpoint built so far, against C1's resources. A new endpoint joins with a row.
fn matrix() -> Vec<Row> {
    const DOMAIN_OWNERS: &[&str] = &["C1", "R1", "admin"];
    const CUSTOMER_OWNERS: &[&str] = &["R1", "admin"];
    vec![
        Row {
            method: Method::GET,
            path: "/api/v1/domains/{domain}/accounts",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/domains/{domain}/accounts",
            body: Some(r#"{"username": "m-{who}"}"#),
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::PUT,
            path: "/api/v1/domains/{domain}/accounts/m-{who}/password",
            body: Some(r#"{"password": "a new password {unique}"}"#),
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::DELETE,
            path: "/api/v1/domains/{domain}/accounts/m-{who}",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/domains/{domain}/usage",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/domains/{domain}/dns",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/domains/{domain}/dns/check",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/domains/{domain}/incidents",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/nodes",
            body: None,
            owners: ADMIN_ONLY,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/nodes/{node}",
            body: None,
            owners: ADMIN_ONLY,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/nodes/{node}/cordon",
            body: None,
            owners: ADMIN_ONLY,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/nodes/{node}/drain",
            body: None,
            owners: ADMIN_ONLY,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/nodes/{node}/uncordon",
            body: None,
            owners: ADMIN_ONLY,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/domains/{domain}",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::PATCH,
            path: "/api/v1/domains/{domain}",
            body: Some(r#"{"registration": false, "federation": {"mode": "open"}}"#),
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/domains/{domain}/uptime",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/domains?org_id={customer}",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/domains",
            body: Some(
                r#"{"domain": "{unique}.customer-one.example", "org_id": "{customer}", "plan_id": "{plan}"}"#,
            ),
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/customers/{customer}",
            body: None,
            owners: CUSTOMER_OWNERS,
        },
        Row {
            method: Method::PATCH,
            path: "/api/v1/customers/{customer}",
            body: Some(r#"{"name": "Customer One {unique}"}"#),
            owners: CUSTOMER_OWNERS,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/customers/{customer}/invitations",
            body: Some(r#"{"email": "{who}-{unique}@invitee.example", "role": "member"}"#),
            owners: CUSTOMER_OWNERS,
        },
        // C1 has domains: its owners learn it cannot go (409 customer_not_empty).
        Row {
            method: Method::DELETE,
            path: "/api/v1/customers/{customer}",
            body: None,
            owners: CUSTOMER_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/customers?reseller_id={reseller}",
            body: None,
            owners: CUSTOMER_OWNERS,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/customers",
            body: Some(r#"{"name": "New {unique}", "reseller_id": "{reseller}"}"#),
            owners: CUSTOMER_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/webhooks?org_id={customer}",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/webhooks",
            body: Some(r#"{"url": "https://hooks.example.com/{unique}", "org_id": "{customer}"}"#),
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/webhooks/{webhook}",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::PATCH,
            path: "/api/v1/webhooks/{webhook}",
            body: Some(r#"{"description": "changed {unique}"}"#),
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/webhooks/{webhook}/deliveries",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/webhooks/{webhook}/deliveries/{delivery}/redeliver",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::DELETE,
            path: "/api/v1/webhooks/{webhook}",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::GET,
            path: "/api/v1/plans",
            body: None,
            owners: &["A", "B", "R1", "R2", "C1", "C2", "admin"],
        },
        Row {
            method: Method::GET,
            path: "/api/v1/plans/{plan}",
            body: None,
            owners: &["A", "B", "R1", "R2", "C1", "C2", "admin"],
        },
        // C1's domain is active: its owners learn it waits for no payment (409).
        Row {
            method: Method::POST,
            path: "/api/v1/domains/{domain}/checkout",
            body: None,
            owners: DOMAIN_OWNERS,
        },
        // The first owner moves C1's domain to the plan (200), the next find it there (409).
        Row {
            method: Method::POST,
            path: "/api/v1/domains/{domain}/plan",
            body: Some(r#"{"plan_id": "{plan}"}"#),
            owners: DOMAIN_OWNERS,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/domains/{domain}/suspend",
            body: None,
            owners: ADMIN_ONLY,
        },
        Row {
            method: Method::POST,
            path: "/api/v1/domains/{domain}/resume",
            body: None,
            owners: ADMIN_ONLY,
        },
        // Last: it starts the domain's way out.
        Row {
            method: Method::DELETE,
            path: "/api/v1/domains/{domain}",
            body: None,
            owners: DOMAIN_OWNERS,
        },
    ]
}

#[tokio::test]
async fn every_endpoint_answers_each_kind_of_key_as_the_authorisation_matrix_says() {
    let w = world(&[]).await;
    // A plan for the plan rows (orders then name it).
    let r = w
        .admin
        .post_form(
            "/admin/plans",
            &rookery_tests::app::plan_form("Starter", "0", None),
        )
        .await;
    assert_eq!(r.status(), 303, "the admin adds a plan");
    let plan_id = db_string(&w.panel, "SELECT id AS v FROM plans WHERE name = 'Starter'").await;
    // The matrix covers every operation of the OpenAPI document: a new endpoint without a
    // row fails here. Paths compare with each `{…}` segment alike and no query.
    let shape = |path: &str| -> String {
        path.split('?')
            .next()
            .unwrap()
            .split('/')
            .map(|seg| if seg.contains('{') { "{}" } else { seg })
            .collect::<Vec<_>>()
            .join("/")
    };
    let spec = call(&w.panel, Method::GET, "/api/v1/openapi.json", None, None).await;
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, ops) in spec.body["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                documented.push((method.to_uppercase(), shape(path)));
            }
        }
    }
    documented.sort();
    documented.dedup();
    let mut covered: Vec<(String, String)> = matrix()
        .iter()
        .map(|r| (r.method.to_string(), shape(r.path)))
        .collect();
    covered.sort();
    covered.dedup();
    let openapi_only: Vec<_> = documented.iter().filter(|d| !covered.contains(d)).collect();
    assert!(
        openapi_only.is_empty(),
        "operations without a matrix row: {openapi_only:?}"
    );
    assert!(documented.len() >= 33, "{documented:?}");
    let mut n = 0;
    let fill = |s: &str, n: usize, who: &str| {
        let (hook, delivery) = w.hook(who);
        s.replace("{domain}", &w.c1_domain)
            .replace("{webhook}", hook)
            .replace("{delivery}", delivery)
            .replace("{plan}", &plan_id)
            .replace("{customer}", &w.c1.org_id)
            .replace("{reseller}", &w.r1.org_id)
            .replace("{node}", &w.node_id)
            .replace("{unique}", &format!("u{n}"))
            .replace("{who}", &who.to_lowercase().replace(' ', "-"))
    };
    for row in matrix() {
        // A DNS check changes nothing: read-only keys may run it.
        let writes = row.method != Method::GET && !row.path.ends_with("/dns/check");
        for (who, key) in &w.keys {
            n += 1;
            let path = fill(row.path, n, who);
            let body: Option<Value> = row
                .body
                .map(|b| serde_json::from_str(&fill(b, n, who)).unwrap());
            let r = call(
                &w.panel,
                row.method.clone(),
                &path,
                Some(key),
                body.as_ref(),
            )
            .await;
            let expected: &[u16] = match *who {
                "expired" | "revoked" => &[401],
                "R1 read-only" if row.owners == ADMIN_ONLY => &[404],
                "R1 read-only" if writes => &[403],
                "R1 read-only" => &[200],
                k if row.owners.contains(&k)
                    && (row.path.ends_with("/checkout")
                        || (row.method == Method::DELETE && row.path.contains("/customers/"))) =>
                {
                    &[409]
                }
                // The first owner moves C1's domain to the plan; the others find it there.
                k if row.owners.contains(&k) && row.path.ends_with("/plan") => &[200, 409],
                k if row.owners.contains(&k) => &[200, 201, 202, 204],
                _ => &[404],
            };
            assert!(
                expected.contains(&r.status.as_u16()),
                "{} {path} with {who}'s key: {} {}",
                row.method,
                r.status,
                r.body
            );
            if r.status == 401 {
                assert!(r.header("www-authenticate").starts_with("Bearer"));
            }
            if r.status == 403 {
                assert_eq!(r.body["code"], "read_only_key");
            }
        }
        // No key, and something that is no key.
        for key in [None, Some("rk_aaaaaaaa_garbage"), Some("not-a-key")] {
            let path = fill(row.path, 0, "nobody");
            let body: Option<Value> = row
                .body
                .map(|b| serde_json::from_str(&fill(b, 0, "nobody")).unwrap());
            let r = call(&w.panel, row.method.clone(), &path, key, body.as_ref()).await;
            assert_eq!(
                r.status, 401,
                "{} {path} with {key:?}: {}",
                row.method, r.body
            );
        }
    }
    // Lists show only what a key may see.
    let list = |key: &str| {
        let key = key.to_string();
        let panel = &w.panel;
        async move {
            call(
                panel,
                Method::GET,
                "/api/v1/domains?limit=200",
                Some(&key),
                None,
            )
            .await
        }
    };
    let ids = |a: &Answer| -> Vec<String> {
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_string())
            .collect()
    };
    for who in ["A", "B", "R2", "C2"] {
        assert!(
            !ids(&list(w.key(who)).await).contains(&w.c1_domain),
            "{who} sees C1's domain"
        );
    }
    for who in ["C1", "R1", "admin"] {
        assert!(
            ids(&list(w.key(who)).await).contains(&w.c1_domain),
            "{who} misses C1's domain"
        );
    }
    // A customer's key has no customers to manage.
    let r = call(
        &w.panel,
        Method::GET,
        "/api/v1/customers",
        Some(w.key("A")),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (403, Some("reseller_only"))
    );
    // A customer without domains goes, with its keys; one with domains stays.
    let r = call(
        &w.panel,
        Method::POST,
        "/api/v1/customers",
        Some(w.key("R1")),
        Some(&json!({"name": "Mistake Ltd"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mistake = format!("/api/v1/customers/{}", r.body["id"].as_str().unwrap());
    for (who, status) in [("R2", 404), ("R1 read-only", 403), ("R1", 204), ("R1", 404)] {
        let r = call(&w.panel, Method::DELETE, &mistake, Some(w.key(who)), None).await;
        assert_eq!(r.status, status, "{who}: {}", r.body);
    }
    let r = call(
        &w.panel,
        Method::DELETE,
        &format!("/api/v1/customers/{}", w.c1.org_id),
        Some(w.key("R1")),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (409, Some("customer_not_empty")),
        "{}",
        r.body
    );
    assert_eq!(
        call(
            &w.panel,
            Method::GET,
            "/api/v1/domains",
            Some(w.key("C1")),
            None
        )
        .await
        .status,
        200,
        "C1 and its key are still there"
    );
    // Nobody but the owners ordered anything: C1's domains are the first one plus one per
    // successful order (C1, R1, admin).
    assert_eq!(
        db_count(
            &w.panel,
            &format!(
                "SELECT COUNT(*) AS n FROM domains WHERE org_id = '{}'",
                w.c1.org_id
            )
        )
        .await,
        4
    );
    // Unknown routes and methods are problems too; the customer A has nothing of C1's.
    let r = call(
        &w.panel,
        Method::GET,
        "/api/v1/nothing-here",
        Some(w.key("A")),
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        &w.panel,
        Method::DELETE,
        "/api/v1/plans",
        Some(w.key("A")),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let _ = &w.a;
}

#[tokio::test]
async fn a_domains_chat_accounts_are_managed_like_on_its_page_within_the_plans_limit() {
    let w = world(&[]).await;
    let key = w.key("R1");
    let accounts = format!("/api/v1/domains/{}/accounts", w.c1_domain);
    // A made-up password is answered once, not to be cached.
    let r = call(
        &w.panel,
        Method::POST,
        &accounts,
        Some(key),
        Some(&json!({"username": "Alice"})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["username"], "alice");
    assert_eq!(r.body["address"], "alice@chat.customer-one.example");
    assert_eq!(r.body["password"].as_str().unwrap().len(), 23);
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.header("location"), format!("{accounts}/alice"));
    // A chosen one is not echoed.
    for name in ["bob", "carol", "dave"] {
        let body = json!({"username": name, "password": "correct horse battery"});
        let r = call(&w.panel, Method::POST, &accounts, Some(key), Some(&body)).await;
        assert_eq!(r.status, 201, "{}", r.body);
        assert!(r.body["password"].is_null());
    }
    let r = call(
        &w.panel,
        Method::POST,
        &accounts,
        Some(key),
        Some(&json!({"username": "bob"})),
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (409, Some("account_exists"))
    );
    let r = call(
        &w.panel,
        Method::POST,
        &accounts,
        Some(key),
        Some(&json!({"username": "no one@here", "password": "short"})),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    let codes: Vec<&str> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["invalid_username", "invalid_password"]);
    // Walking the pages sees every account once, in name order.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{accounts}?limit=2&cursor={c}"),
            None => format!("{accounts}?limit=2"),
        };
        let r = call(&w.panel, Method::GET, &path, Some(key), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for a in r.body["items"].as_array().unwrap() {
            seen.push(a["username"].as_str().unwrap().to_string());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["alice", "bob", "carol", "dave"]);
    let r = call(
        &w.panel,
        Method::GET,
        &format!("{accounts}?cursor=bm9wZQ"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(r.body["code"], "invalid_cursor");
    // The domain page lists what the API created.
    let page = format!("/o/{}/domains/{}", w.c1.org_id, w.c1_domain);
    let html = w.c1.client.page(&page).await;
    assert!(html.contains("alice") && html.contains("dave"), "{html}");
    // New passwords, made up or chosen; unknown accounts are 404.
    let r = call(
        &w.panel,
        Method::PUT,
        &format!("{accounts}/bob/password"),
        Some(key),
        Some(&json!({})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["password"].as_str().unwrap().len(), 23);
    let r = call(
        &w.panel,
        Method::PUT,
        &format!("{accounts}/nobody/password"),
        Some(key),
        Some(&json!({"password": "long enough password"})),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    // Deleting is once.
    let r = call(
        &w.panel,
        Method::DELETE,
        &format!("{accounts}/dave"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let r = call(
        &w.panel,
        Method::DELETE,
        &format!("{accounts}/dave"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    // The usage card's figures: 30 days, and the node's count of accounts once reported.
    let usage = format!("/api/v1/domains/{}/usage", w.c1_domain);
    eventually(20, || async {
        let r = call(&w.panel, Method::GET, &usage, Some(key), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["days"].as_array().unwrap().len(), 30);
        r.body["accounts"] == 3
    })
    .await
    .expect("the usage shows the three accounts");

    // A plan's account limit holds, as on the page.
    let plan = [
        ("name", "Tiny"),
        ("price", "0"),
        ("currency", "EUR"),
        ("max_accounts", "2"),
        ("max_sessions", "5"),
        ("storage_mb", "10"),
        ("upload_mb", "10"),
        ("archive_days", "7"),
        ("public", "1"),
    ];
    assert_eq!(w.admin.post_form("/admin/plans", &plan).await.status(), 303);
    let plans = call(&w.panel, Method::GET, "/api/v1/plans", Some(key), None).await;
    let plan_id = plans.body["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        plans.body["items"][0]["offline_days"],
        Value::Null,
        "no retention set: offline messages wait until delivered"
    );
    let order =
        json!({"domain": "tiny.customer-one.example", "org_id": w.c1.org_id, "plan_id": plan_id});
    let r = call(
        &w.panel,
        Method::POST,
        "/api/v1/domains",
        Some(key),
        Some(&order),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let tiny = r.body["id"].as_str().unwrap().to_string();
    let tiny_accounts = format!("/api/v1/domains/{tiny}/accounts");
    // Not active yet, or active: accounts wait for the domain.
    let early = call(
        &w.panel,
        Method::POST,
        &tiny_accounts,
        Some(key),
        Some(&json!({"username": "early"})),
    )
    .await;
    assert!(
        early.status == 201 || early.body["code"] == "domain_not_active",
        "{}",
        early.body
    );
    wait_active(&w.panel, &tiny).await;
    let mut made = i32::from(early.status == 201);
    for name in ["one", "two", "three"] {
        let r = call(
            &w.panel,
            Method::POST,
            &tiny_accounts,
            Some(key),
            Some(&json!({"username": name})),
        )
        .await;
        if made < 2 {
            assert_eq!(r.status, 201, "{}", r.body);
            made += 1;
        } else {
            assert_eq!(
                (r.status.as_u16(), r.body["code"].as_str()),
                (409, Some("account_limit")),
                "{}",
                r.body
            );
        }
    }

    // The plan changes through the API as on the page (billing off: at once).
    for (name, max) in [("Solo", "1"), ("Roomy", "5")] {
        let mut p = plan;
        p[0] = ("name", name);
        p[3] = ("max_accounts", max);
        assert_eq!(w.admin.post_form("/admin/plans", &p).await.status(), 303);
    }
    let plans = call(&w.panel, Method::GET, "/api/v1/plans", Some(key), None).await;
    let plan_named = |name: &str| {
        plans.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (solo, roomy) = (plan_named("Solo"), plan_named("Roomy"));
    let change = format!("/api/v1/domains/{tiny}/plan");
    let post_plan = |plan_id: String| {
        let (panel, change, body) = (&w.panel, &change, json!({ "plan_id": plan_id }));
        async move { call(panel, Method::POST, change, Some(key), Some(&body)).await }
    };
    let r = post_plan(solo).await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (409, Some("domain_state_conflict")),
        "{}",
        r.body
    );
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("has 2 chat accounts"),
        "{}",
        r.body
    );
    let r = post_plan(plan_id.clone()).await;
    assert_eq!(r.status, 409, "already on it: {}", r.body);
    let r = post_plan("no-such-plan".into()).await;
    assert_eq!(
        (r.status.as_u16(), r.body["errors"][0]["code"].as_str()),
        (422, Some("unknown_plan")),
        "{}",
        r.body
    );
    let got = call(
        &w.panel,
        Method::GET,
        &format!("/api/v1/domains/{tiny}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(got.body["plan_id"], plan_id.as_str(), "nothing changed");
    let r = post_plan(roomy.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["outcome"], "applied");
    let got = call(
        &w.panel,
        Method::GET,
        &format!("/api/v1/domains/{tiny}"),
        Some(key),
        None,
    )
    .await;
    assert_eq!(got.body["plan_id"], roomy.as_str());
    // The node gets the new limit: a third account is now allowed.
    eventually(20, || async {
        call(
            &w.panel,
            Method::POST,
            &tiny_accounts,
            Some(key),
            Some(&json!({"username": "three"})),
        )
        .await
        .status
            == 201
    })
    .await
    .expect("the node takes a third account on the bigger plan");
}

#[tokio::test]
async fn dns_records_checks_incidents_and_nodes_answer_through_the_api() {
    let w = world(&[]).await;
    let key = w.key("C1");
    // The DNS page's records, and a check through the (silent) resolver: all fail.
    let dns = call(
        &w.panel,
        Method::GET,
        &format!("/api/v1/domains/{}/dns", w.c1_domain),
        Some(key),
        None,
    )
    .await;
    assert_eq!(dns.status, 200, "{}", dns.body);
    let domain = call(
        &w.panel,
        Method::GET,
        &format!("/api/v1/domains/{}", w.c1_domain),
        Some(key),
        None,
    )
    .await;
    assert_eq!(dns.body["records"], domain.body["dns_records"]);
    assert!(
        dns.body["zone_file"]
            .as_str()
            .unwrap()
            .contains("_xmpp-client._tcp.chat.customer-one.example.")
    );
    let check = call(
        &w.panel,
        Method::POST,
        &format!("/api/v1/domains/{}/dns/check", w.c1_domain),
        Some(w.key("R1 read-only")),
        None,
    )
    .await;
    assert_eq!(check.status, 200, "{}", check.body);
    assert_eq!(check.body["pass"], false);
    let records = check.body["records"].as_array().unwrap();
    assert_eq!(records.len(), dns.body["records"].as_array().unwrap().len());
    for r in records {
        assert_eq!(r["pass"], false);
        assert!(!r["found"].as_str().unwrap().is_empty(), "{r}");
        assert!(r["name"].is_string() && r["type"].is_string());
    }

    // Incidents, newest first, a page at a time.
    for (id, started, ended) in [
        ("0190a000-0000-7000-8000-000000000001", "1000", Some("1600")),
        ("0190a000-0000-7000-8000-000000000002", "5000", None),
        ("0190a000-0000-7000-8000-000000000003", "3000", Some("3060")),
    ] {
        match ended {
            Some(e) => db_exec(&w.panel, "INSERT INTO incidents (id, domain_id, started_at, ended_at, stage, error) VALUES ($1, $2, CAST($3 AS BIGINT), CAST($4 AS BIGINT), 'connect', 'refused')", &[id, &w.c1_domain, started, e]).await,
            None => db_exec(&w.panel, "INSERT INTO incidents (id, domain_id, started_at, stage) VALUES ($1, $2, CAST($3 AS BIGINT), 'auth')", &[id, &w.c1_domain, started]).await,
        }
    }
    let mut starts = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/domains/{}/incidents?limit=2", w.c1_domain);
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let r = call(&w.panel, Method::GET, &path, Some(key), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for i in r.body["items"].as_array().unwrap() {
            starts.push(i["started_at"].as_i64().unwrap());
            if i["ended_at"].is_null() {
                assert_eq!(i["stage"], "auth");
            } else {
                assert_eq!(
                    i["duration_secs"].as_i64().unwrap(),
                    i["ended_at"].as_i64().unwrap() - i["started_at"].as_i64().unwrap()
                );
            }
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(starts, [5000, 3000, 1000]);

    // Nodes: admin keys only; If-Match on actions; audited with the key as the actor.
    let admin = w.key("admin");
    let node = format!("/api/v1/nodes/{}", w.node_id);
    for who in ["R1", "C1", "R1 read-only"] {
        let r = call(
            &w.panel,
            Method::GET,
            "/api/v1/nodes",
            Some(w.key(who)),
            None,
        )
        .await;
        assert_eq!(r.status, 404, "{who}");
    }
    let list = call(&w.panel, Method::GET, "/api/v1/nodes", Some(admin), None).await;
    assert_eq!(list.body["items"][0]["id"], w.node_id.as_str());
    let read = call(&w.panel, Method::GET, &node, Some(admin), None).await;
    assert_eq!(read.body["state"], "active");
    let etag = read.header("etag").to_string();
    let stale = call_with(
        &w.panel,
        Method::POST,
        &format!("{node}/cordon"),
        Some(admin),
        None,
        &[("If-Match", "\"0123\"")],
    )
    .await;
    assert_eq!(
        (stale.status.as_u16(), stale.body["code"].as_str()),
        (412, Some("precondition_failed"))
    );
    let cordoned = call_with(
        &w.panel,
        Method::POST,
        &format!("{node}/cordon"),
        Some(admin),
        None,
        &[("If-Match", &etag)],
    )
    .await;
    assert_eq!(cordoned.status, 200, "{}", cordoned.body);
    assert_eq!(cordoned.body["state"], "cordoned");
    assert_ne!(cordoned.header("etag"), etag);
    // The pool page shows it, like its own button's result.
    let html = w.admin.page(&format!("/admin/nodes/{}", w.node_id)).await;
    assert!(html.contains("cordoned"), "{html}");
    let again = call_with(
        &w.panel,
        Method::POST,
        &format!("{node}/uncordon"),
        Some(admin),
        None,
        &[("If-Match", &etag)],
    )
    .await;
    assert_eq!(again.status, 412, "the old ETag no longer matches");
    let back = call(
        &w.panel,
        Method::POST,
        &format!("{node}/uncordon"),
        Some(admin),
        None,
    )
    .await;
    assert_eq!(back.body["state"], "active");
    assert_eq!(
        db_count(
            &w.panel,
            "SELECT COUNT(*) AS n FROM audit_log WHERE action IN ('node.cordon', 'node.uncordon') AND actor LIKE 'API key rk_%'"
        )
        .await,
        2
    );
}

#[tokio::test]
async fn admins_suspend_and_resume_and_owners_delete_as_the_state_machine_allows() {
    let w = world(&[]).await;
    let admin = w.key("admin");
    let domain = format!("/api/v1/domains/{}", w.c1_domain);
    for who in ["C1", "R1"] {
        let r = call(
            &w.panel,
            Method::POST,
            &format!("{domain}/suspend"),
            Some(w.key(who)),
            None,
        )
        .await;
        assert_eq!(r.status, 404, "{who}: {}", r.body);
    }
    let read = call(&w.panel, Method::GET, &domain, Some(admin), None).await;
    let etag = read.header("etag").to_string();
    let stale = call_with(
        &w.panel,
        Method::POST,
        &format!("{domain}/suspend"),
        Some(admin),
        None,
        &[("If-Match", "\"0123\"")],
    )
    .await;
    assert_eq!(stale.status, 412);
    let r = call_with(
        &w.panel,
        Method::POST,
        &format!("{domain}/suspend"),
        Some(admin),
        None,
        &[("If-Match", &etag)],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "suspended");
    assert_eq!(r.body["suspended_by_admin"], true);
    // The domain page shows it.
    let page = format!("/o/{}/domains/{}", w.c1.org_id, w.c1_domain);
    assert!(
        w.c1.client
            .page(&page)
            .await
            .contains("data-state=\"suspended\"")
    );
    let r = call(
        &w.panel,
        Method::POST,
        &format!("{domain}/resume"),
        Some(admin),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["state"], "active");
    assert_eq!(r.body["suspended_by_admin"], false);
    let r = call(
        &w.panel,
        Method::POST,
        &format!("{domain}/resume"),
        Some(admin),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (409, Some("domain_state_conflict"))
    );
    // The owner deletes: suspended at once, data kept (and downloadable) for the retention.
    let r = call(
        &w.panel,
        Method::DELETE,
        &domain,
        Some(w.key("R1 read-only")),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(&w.panel, Method::DELETE, &domain, Some(w.key("C1")), None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["state"], "suspended");
    assert!(r.body["delete_after"].as_i64().unwrap() > 29 * 86_400);
    assert!(r.body["export_url"].as_str().unwrap().ends_with("/export"));
    let r = call(
        &w.panel,
        Method::POST,
        &format!("{domain}/resume"),
        Some(admin),
        None,
    )
    .await;
    assert_eq!(
        r.body["code"], "domain_state_conflict",
        "waiting for deletion"
    );
    // Retention over: the billing sweep moves it on, as after a cancelled subscription.
    db_exec(
        &w.panel,
        "UPDATE domains SET delete_after = 1 WHERE id = $1",
        &[&w.c1_domain],
    )
    .await;
    eventually(30, || async {
        let r = call(&w.panel, Method::GET, &domain, Some(admin), None).await;
        r.status == 404 || r.body["state"] == "deleting"
    })
    .await
    .expect("the domain is deleted after its retention");
    assert_eq!(
        db_count(&w.panel, "SELECT COUNT(*) AS n FROM audit_log WHERE action IN ('domain.suspended', 'domain.resumed', 'domain.delete_requested') AND actor LIKE 'API key rk_%'").await,
        3
    );
}

#[tokio::test]
async fn a_post_with_an_idempotency_key_is_answered_once() {
    let w = world(&[]).await;
    let key = w.key("A");
    let order = json!({"domain": "once.customer-a.example"});
    let idem = [("Idempotency-Key", "order-once-1")];
    let first = call_with(
        &w.panel,
        Method::POST,
        "/api/v1/domains",
        Some(key),
        Some(&order),
        &idem,
    )
    .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = call_with(
        &w.panel,
        Method::POST,
        "/api/v1/domains",
        Some(key),
        Some(&order),
        &idem,
    )
    .await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(
        db_count(
            &w.panel,
            "SELECT COUNT(*) AS n FROM domains WHERE domain = 'once.customer-a.example'"
        )
        .await,
        1
    );
    // The same Idempotency-Key with another body is refused.
    let other = json!({"domain": "twice.customer-a.example"});
    let r = call_with(
        &w.panel,
        Method::POST,
        "/api/v1/domains",
        Some(key),
        Some(&other),
        &idem,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(
        db_count(
            &w.panel,
            "SELECT COUNT(*) AS n FROM domains WHERE domain = 'twice.customer-a.example'"
        )
        .await,
        0
    );
    // Keys are per API key: another key may use the same Idempotency-Key.
    let r = call_with(
        &w.panel,
        Method::POST,
        "/api/v1/domains",
        Some(w.key("B")),
        Some(&other),
        &idem,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // An order refused is replayed as refused; without a key, a retry is a new order.
    let taken = call(
        &w.panel,
        Method::POST,
        "/api/v1/domains",
        Some(key),
        Some(&order),
    )
    .await;
    assert_eq!(
        (taken.status.as_u16(), taken.body["code"].as_str()),
        (409, Some("domain_taken"))
    );
    // A retry while the first request still runs (a DNS check against a resolver that
    // never answers takes about a second) is told so, and changes nothing; once the first
    // is done, a retry gets its answer.
    let check = format!("/api/v1/domains/{}/dns/check", w.c1_domain);
    let slow = [("idempotency-key", "dns-check-1")];
    let (first, second) = tokio::join!(
        call_with(
            &w.panel,
            Method::POST,
            &check,
            Some(w.key("C1")),
            None,
            &slow
        ),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            call_with(
                &w.panel,
                Method::POST,
                &check,
                Some(w.key("C1")),
                None,
                &slow,
            )
            .await
        }
    );
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(
        (second.status.as_u16(), second.body["code"].as_str()),
        (409, Some("idempotency_request_in_progress")),
        "{}",
        second.body
    );
    let third = call_with(
        &w.panel,
        Method::POST,
        &check,
        Some(w.key("C1")),
        None,
        &slow,
    )
    .await;
    assert_eq!(third.status, 200);
    assert_eq!(third.header("idempotent-replayed"), "true");
    assert_eq!(third.body, first.body, "the first answer, replayed");
}

#[tokio::test]
async fn pages_stay_stable_while_domains_are_added() {
    let w = world(&[]).await;
    let key = w.key("A");
    for i in 0..7 {
        let order = json!({"domain": format!("d{i}.page.example")});
        assert_eq!(
            call(
                &w.panel,
                Method::POST,
                "/api/v1/domains",
                Some(key),
                Some(&order)
            )
            .await
            .status,
            201
        );
    }
    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/domains?limit=2&cursor={c}"),
            None => "/api/v1/domains?limit=2".to_string(),
        };
        let page = call(&w.panel, Method::GET, &path, Some(key), None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let items = page.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|d| d["domain"].as_str().unwrap().to_string()),
        );
        // Someone orders more while the client walks.
        let order = json!({"domain": format!("new{added}.page.example")});
        assert_eq!(
            call(
                &w.panel,
                Method::POST,
                "/api/v1/domains",
                Some(key),
                Some(&order)
            )
            .await
            .status,
            201
        );
        added += 1;
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(added < 50, "the walk does not end");
    }
    for i in 0..7 {
        let name = format!("d{i}.page.example");
        assert_eq!(
            seen.iter().filter(|s| **s == name).count(),
            1,
            "{name} in {seen:?}"
        );
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no domain twice: {seen:?}");
    let r = call(
        &w.panel,
        Method::GET,
        "/api/v1/domains?cursor=bogus",
        Some(key),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (400, Some("invalid_cursor"))
    );
    let r = call(
        &w.panel,
        Method::GET,
        "/api/v1/domains?limit=500",
        Some(key),
        None,
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (400, Some("invalid_query"))
    );
}

#[tokio::test]
async fn an_update_based_on_a_stale_etag_is_refused() {
    let w = world(&[]).await;
    let key = w.key("R1");
    let path = format!("/api/v1/customers/{}", w.c1.org_id);
    let read = call(&w.panel, Method::GET, &path, Some(key), None).await;
    let etag = read.header("etag").to_string();
    assert!(etag.starts_with('"'), "an ETag: {etag:?}");
    let rename = json!({"name": "Customer One Ltd"});
    let ok = call_with(
        &w.panel,
        Method::PATCH,
        &path,
        Some(key),
        Some(&rename),
        &[("If-Match", &etag)],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.body["name"], "Customer One Ltd");
    assert_ne!(ok.header("etag"), etag, "a new ETag after the change");
    // The old ETag no longer matches: someone else changed it meanwhile.
    let stale = json!({"name": "Lost update"});
    let r = call_with(
        &w.panel,
        Method::PATCH,
        &path,
        Some(key),
        Some(&stale),
        &[("If-Match", &etag)],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (412, Some("precondition_failed"))
    );
    let now = call(&w.panel, Method::GET, &path, Some(key), None).await;
    assert_eq!(now.body["name"], "Customer One Ltd");
    assert_eq!(now.header("etag"), ok.header("etag"));
    // The reseller's page shows the name.
    let _ = &w.r1;
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_429_with_the_ratelimit_headers() {
    let w = world(&[("ROOKERY_API__RATE_LIMIT_PER_MINUTE", "5")]).await;
    // The world's set-up already used R1's key once; A's key is fresh.
    let key = w.key("A");
    let mut remaining = Vec::new();
    for _ in 0..5 {
        let r = call(&w.panel, Method::GET, "/api/v1/plans", Some(key), None).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-limit"), "5");
        remaining.push(r.header("ratelimit-remaining").parse::<u32>().unwrap());
    }
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    let r = call(&w.panel, Method::GET, "/api/v1/plans", Some(key), None).await;
    assert_eq!(
        (r.status.as_u16(), r.body["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let retry: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry));
    assert_eq!(r.header("ratelimit-remaining"), "0");
    assert!(r.header("ratelimit-reset").parse::<u64>().unwrap() >= 1);
    // Another key has its own budget.
    let r = call(
        &w.panel,
        Method::GET,
        "/api/v1/plans",
        Some(w.key("B")),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn keys_are_shown_once_and_managed_by_owners_on_the_panel_and_audited() {
    let w = world(&[]).await;
    let page = format!("/o/{}/api-keys", w.a.org_id);
    let html = w.a.client.page(&page).await;
    let key = w.key("A");
    assert!(
        html.contains(&format!("data-key=\"{}\"", &key[..11])),
        "listed by prefix"
    );
    assert!(!html.contains(key), "never shown again");
    assert!(html.contains("href=\"/docs/api\""), "links the reference");
    // Using the key records when it was last used.
    assert_eq!(
        call(&w.panel, Method::GET, "/api/v1/plans", Some(key), None)
            .await
            .status,
        200
    );
    assert_eq!(
        db_count(&w.panel, &format!("SELECT COUNT(*) AS n FROM api_keys WHERE prefix = '{}' AND last_used_at IS NOT NULL", &key[..11])).await,
        1
    );
    // Only the hash is stored.
    assert_eq!(
        db_count(
            &w.panel,
            &format!(
                "SELECT COUNT(*) AS n FROM api_keys WHERE key_hash = '{key}' OR prefix = '{key}'"
            )
        )
        .await,
        0
    );
    // Another tenant cannot see or revoke A's keys; A cannot revoke a key twice.
    assert_eq!(w.r1.client.get(&page).await.status(), 404);
    revoke_key(&w.a.client, &page, key).await;
    assert_eq!(
        call(&w.panel, Method::GET, "/api/v1/plans", Some(key), None)
            .await
            .status,
        401
    );
    let html = w.a.client.page(&page).await;
    assert!(html.contains(">revoked<"), "shown revoked");
    // A bad form is answered with its errors.
    let r =
        w.a.client
            .post_form(
                &page,
                &[("name", ""), ("scope", "read"), ("expires_days", "0")],
            )
            .await;
    assert_eq!(r.status(), 422);
    assert_eq!(
        db_count(&w.panel, "SELECT COUNT(*) AS n FROM audit_log WHERE action IN ('api_key.created', 'api_key.revoked')").await,
        // Ten keys created in the world, two revoked.
        12
    );
    // The reference page and the document are public.
    let anonymous = TestClient::new(&w.panel.base_url);
    let doc = anonymous.page("/docs/api").await;
    for needle in [
        "POST /api/v1/domains",
        "problem-idempotency_key_reused",
        "schema-Domain",
    ] {
        assert!(doc.contains(needle), "the reference has {needle}");
    }
    let spec = call(&w.panel, Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(spec.status, 200);
    assert_eq!(spec.body["openapi"], "3.1.0");
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_schema() {
    let w = world(&[("ROOKERY_API__RATE_LIMIT_PER_MINUTE", "100000")]).await;
    let python = python().expect("the test virtualenv");
    let schemathesis = python.with_file_name("schemathesis");
    assert!(
        schemathesis.exists(),
        "schemathesis in the virtualenv: {}",
        schemathesis.display()
    );
    let report = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(w.panel.url("/api/v1/openapi.json"))
        .args([
            "--header",
            &format!("Authorization: Bearer {}", w.key("R1")),
        ])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "20", "--max-time", "45", "--seed", "7"])
        .args([
            "--workers",
            "2",
            "--no-color",
            "--generation-database",
            "none",
        ])
        .arg("--report-dir")
        .arg(report.path())
        .env("NO_COLOR", "1")
        .current_dir(report.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("schemathesis finishes in 2 minutes")
        .expect("schemathesis runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if rookery_tests::process::test_log() {
        eprintln!("{text}");
    }
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(!text.contains("Server error"), "{text}");
    let _ = &w.c1_domain;
}
