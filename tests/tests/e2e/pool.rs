//! Issue 4's node pool under stress, with a real panel process and real `rookery-node`
//! processes: a panel killed while a node hangs (SIGSTOP) in the middle of placing and
//! moving domains restarts and converges every domain exactly once; expired and used join
//! tokens are refused by `rookery-node join`; the pool page warns past the headroom line;
//! a vhost deleted behind the panel's back is put back while stray vhosts are kept or
//! removed as the poller intends; and a node is removed only once drained, audited with
//! the admin's email.
//!
//! Nodes are enrolled with `rookery-node join` on a running unenrolled node; the test then
//! opens the secret the panel sealed for that node (with the panel's key file), so it can
//! call the node's control API behind the panel's back.

use std::{collections::BTreeMap, time::Duration};

use reqwest::{Method, StatusCode};
use rookery_common::control::VhostSummary;
use rookery_tests::{
    app::{PASSWORD, TestClient, eventually, location, unique_email},
    node::NodeProcess,
    pool::{join_token, placements, query_pairs, settle_until},
    process::{PanelProcess, test_log},
    xmpp::client::{Account, LoginConfig, Session, tls_connector},
};
use serde_json::json;

/// Fast loops, so each test takes seconds.
const FAST: &[(&str, &str)] = &[
    ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
    ("ROOKERY_PROVISIONING__POLL_INTERVAL_SECS", "1"),
    ("ROOKERY_PROVISIONING__MAX_RETRY_SECS", "1"),
];

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = FAST.to_vec();
    env.extend_from_slice(extra);
    env
}

fn on(placed: &BTreeMap<String, String>, node: &str) -> Vec<String> {
    placed
        .iter()
        .filter(|(_, n)| *n == node)
        .map(|(d, _)| d.clone())
        .collect()
}

async fn node_id(panel: &PanelProcess, name: &str) -> String {
    query_pairs(panel, "SELECT name, id FROM nodes WHERE name = $1", &[name])
        .await
        .pop()
        .unwrap_or_else(|| panic!("{name} is in the pool"))
        .1
}

/// The secret the panel presents to `name`, opened with the panel's key file.
async fn node_secret(panel: &PanelProcess, name: &str) -> String {
    let (id, sealed) = query_pairs(
        panel,
        "SELECT id, secret_sealed FROM nodes WHERE name = $1",
        &[name],
    )
    .await
    .pop()
    .unwrap_or_else(|| panic!("{name} is in the pool"));
    rookery::seal::Sealer::load("", panel.data_dir())
        .expect("the panel's key")
        .open(&rookery::nodes::db::secret_context(&id), &sealed)
        .expect("the node's secret opens")
}

/// A running node enrolled as `name` with `rookery-node join` (settings from `env`), whose
/// control API the test can call with the panel's secret.
async fn enroll(
    panel: &PanelProcess,
    admin: &TestClient,
    name: &str,
    env: &[(&str, &str)],
) -> NodeProcess {
    enroll_labelled(panel, admin, name, env, &[]).await
}

/// [`enroll`] with `--label name=value` for each of `labels`.
async fn enroll_labelled(
    panel: &PanelProcess,
    admin: &TestClient,
    name: &str,
    env: &[(&str, &str)],
    labels: &[&str],
) -> NodeProcess {
    let token = join_token(admin, name).await;
    let mut node = NodeProcess::start_unenrolled(env)
        .await
        .expect("the node starts");
    let mut args = vec!["join", &panel.base_url, "--token", &token, "--name", name];
    for l in labels {
        args.extend(["--label", l]);
    }
    let out = node.cli(&args, None).await.expect("join runs");
    assert!(
        out.status.success(),
        "{name} joins: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    node.control_secret = Some(node_secret(panel, name).await);
    let node_ref = &node;
    eventually(20, || async move {
        matches!(
            node_ref.control(Method::GET, "/v1/status", None).await,
            Ok((StatusCode::OK, _))
        )
    })
    .await
    .expect("the node opens its control API with the panel's secret");
    node
}

/// What the node serves, by its control API: domain → generation (None: added by the CLI).
async fn served(node: &NodeProcess) -> Vec<(String, Option<i64>)> {
    let (status, body) = node
        .control(Method::GET, "/v1/vhosts", None)
        .await
        .expect("GET /v1/vhosts");
    assert_eq!(status, StatusCode::OK, "{body}");
    let list: Vec<VhostSummary> = serde_json::from_value(body).expect("a vhost list");
    list.into_iter().map(|v| (v.domain, v.generation)).collect()
}

async fn served_names(node: &NodeProcess) -> Vec<String> {
    served(node).await.into_iter().map(|(d, _)| d).collect()
}

/// A customer with an organisation; returns the client and the organisation's path.
async fn customer(panel: &PanelProcess, org: &str) -> (TestClient, String) {
    let c = TestClient::new(&panel.base_url);
    let path = c.sign_up(&unique_email("customer"), org).await;
    (c, path)
}

/// A platform admin logged in; returns the client and their email address.
async fn admin(panel: &PanelProcess) -> (TestClient, String) {
    let email = panel.create_admin().await.expect("an admin is created");
    let client = TestClient::new(&panel.base_url);
    let r = client.login(&email, PASSWORD).await;
    assert_eq!(r.status(), 303, "the admin logs in");
    (client, email)
}

/// The pid of the node's `rookery-node serve`, a child of this test process running in the
/// node's data folder (the harness does not hand it out).
fn serve_pid(node: &NodeProcess) -> u32 {
    let folder = std::fs::canonicalize(node.data_dir()).unwrap();
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let proc_dir = entry.path();
        if std::fs::read_link(proc_dir.join("cwd")).ok().as_ref() != Some(&folder) {
            continue;
        }
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).nth(1) != Some(b"serve".as_slice()) {
            continue;
        }
        let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(me) {
            return pid;
        }
    }
    panic!("no rookery-node serve runs in {}", folder.display())
}

async fn signal(pid: u32, sig: &str) {
    let status = tokio::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Logs in to `domain` on `node` (STARTTLS, SCRAM-SHA-256, bind).
async fn login_on(node: &NodeProcess, domain: &str, user: &str) -> anyhow::Result<Session> {
    let cfg = LoginConfig {
        addr: format!("127.0.0.1:{}", node.c2s_port).parse()?,
        domain: domain.into(),
        tls: tls_connector(&node.cert_of(domain))?,
        keys: Default::default(),
        resource: "pool".into(),
        presence: false,
    };
    let account = Account {
        user: user.into(),
        password: PASSWORD.into(),
    };
    Session::login(&cfg, &account).await
}

/// The bytes of the file uploaded before a move.
const UPLOADED: &[u8] = b"a file that has to follow its domain to the new node";

/// Uploads `bytes` as `user` of `domain` on `node` (XEP-0363: a slot over XMPP, then the
/// PUT on the node's HTTP port); returns the file's path (`/upload/…`).
async fn upload_on(node: &NodeProcess, domain: &str, user: &str, bytes: &'static [u8]) -> String {
    let mut session = login_on(node, domain, user)
        .await
        .expect("logs in for the upload");
    session
        .send(&format!(
            "<iq type='get' id='slot' to='upload.{domain}'><request xmlns='urn:xmpp:http:upload:0' filename='notes.txt' size='{}' content-type='text/plain'/></iq>",
            bytes.len()
        ))
        .await
        .unwrap();
    let slot = loop {
        let el = tokio::time::timeout(Duration::from_secs(10), session.next_element())
            .await
            .expect("a slot within 10 s")
            .unwrap();
        if el.name == "iq" && el.attr("id") == Some("slot") {
            break el;
        }
    };
    let put = slot
        .child("slot")
        .and_then(|s| s.child("put"))
        .unwrap_or_else(|| panic!("no slot: {slot:?}"));
    let url = put.attr("url").unwrap();
    let auth = put.child("header").unwrap().text.clone();
    // The node's HTTP port answers plain HTTP on loopback too.
    let path = format!("/upload/{}", url.split_once("/upload/").unwrap().1);
    let r = reqwest::Client::new()
        .put(format!("http://127.0.0.1:{}{path}", node.http_port))
        .header("authorization", auth)
        .header("content-type", "text/plain")
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap_or_default()
    );
    path
}

/// The `<tr>` rows of a page's table that contain `needle`.
fn rows_with<'a>(html: &'a str, needle: &str) -> Vec<&'a str> {
    html.split("<tr")
        .filter(|row| row.contains(needle))
        .map(|row| row.split("</tr>").next().unwrap_or(row))
        .collect()
}

#[tokio::test]
async fn a_panel_killed_while_a_node_hangs_converges_every_domain_exactly_once() {
    let env = with(&[
        // Calls to the stopped node give up quickly and are retried...
        ("ROOKERY_PROVISIONING__NODE_TIMEOUT_SECS", "2"),
        // ...and it stays in the pool (never marked down), so work keeps landing on it.
        ("ROOKERY_PROVISIONING__DOWN_AFTER_MISSES", "1000"),
        // The restarted panel waits for the killed one's leader lease to run out.
        ("ROOKERY_LEASE_SECS", "3"),
    ]);
    let mut panel = PanelProcess::start_with_env(&env)
        .await
        .expect("the panel starts");
    let (admin, _) = admin(&panel).await;
    let node_a = enroll(&panel, &admin, "node-a", &[]).await;
    let node_b = enroll(&panel, &admin, "node-b", &[]).await;
    let (a_id, b_id) = (
        node_id(&panel, "node-a").await,
        node_id(&panel, "node-b").await,
    );
    let (customer, org) = customer(&panel, "Crash Ltd").await;
    let mut pages = BTreeMap::new();
    for d in ["one.crash.test", "two.crash.test"] {
        pages.insert(d.to_string(), customer.order_domain(&org, d).await);
    }
    let placed = settle_until(&panel, 2, 30, |_| true).await;
    assert_eq!(on(&placed, "node-a").len(), 1, "{placed:?}");
    // An account on node a's domain, whose data has to survive the move below.
    let first = on(&placed, "node-a").remove(0);
    let r = customer
        .post_form(
            &format!("{}/accounts", pages[&first]),
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    // And a file alice uploads there (XEP-0363): it lives on node a's disk, not in its data.
    let file_path = upload_on(&node_a, &first, "alice", UPLOADED).await;

    // Node b hangs: it accepts connections and answers nothing.
    let b_pid = serve_pid(&node_b);
    signal(b_pid, "-STOP").await;
    for i in 0..4 {
        let d = format!("n{i}.crash.test");
        pages.insert(d.clone(), customer.order_domain(&org, &d).await);
    }
    let stuck_on_b = "SELECT domain, COALESCE(waiting_reason, '') FROM domains
         WHERE node_id = $1 AND (applied_node_id IS NULL OR applied_generation <> generation)";
    // Wait until every new domain is placed: those on a applied, those on b stuck on it.
    eventually(30, || async {
        let placed = placements(&panel).await;
        let stuck = query_pairs(&panel, stuck_on_b, &[&b_id]).await;
        placed.len() == 6
            && !stuck.is_empty()
            && stuck.iter().all(|(_, why)| why.contains("node-b"))
            && placed.values().filter(|n| *n == "-").count() == stuck.len()
    })
    .await
    .expect("domains placed on node b wait for it, with a reason; the others are served");
    let stuck: Vec<String> = query_pairs(&panel, stuck_on_b, &[&b_id])
        .await
        .into_iter()
        .map(|(d, _)| d)
        .collect();
    for d in &stuck {
        let html = customer.page(&pages[d]).await;
        assert!(
            html.contains("data-state=\"provisioning\""),
            "{d} is shown as still being set up"
        );
    }
    let on_a = on(&placements(&panel).await, "node-a");

    // Node a is drained while b still hangs: every move stops at copying to b.
    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/drain"), &[])
        .await;
    assert_eq!(r.status(), 303);
    let moving =
        "SELECT domain, COALESCE(waiting_reason, '') FROM domains WHERE move_from_node_id = $1";
    eventually(30, || async {
        let m = query_pairs(&panel, moving, &[&a_id]).await;
        m.len() == on_a.len() && m.iter().all(|(_, why)| why.contains("node-b"))
    })
    .await
    .expect("node a's domains are moving to node b, waiting for it");

    // The panel crashes with all that work pending, and comes back on the same database.
    panel
        .kill_and_restart()
        .await
        .expect("the panel restarts after SIGKILL");
    assert_eq!(
        query_pairs(&panel, moving, &[&a_id]).await.len(),
        on_a.len(),
        "the moves survive the crash"
    );
    signal(b_pid, "-CONT").await;

    // Everything converges on node b, once.
    let placed = settle_until(&panel, 6, 60, |p| p.values().all(|n| n == "node-b")).await;
    let node_a_ref = &node_a;
    eventually(30, || async move { served(node_a_ref).await.is_empty() })
        .await
        .expect("node a lets go of every moved domain");
    let generations: BTreeMap<String, String> = query_pairs(
        &panel,
        "SELECT domain, CAST(generation AS TEXT) FROM domains WHERE state <> 'deleted'",
        &[],
    )
    .await
    .into_iter()
    .collect();
    let mut on_b = served(&node_b).await;
    on_b.sort();
    let wanted: Vec<(String, Option<i64>)> = generations
        .iter()
        .map(|(d, g)| (d.clone(), g.parse().ok()))
        .collect();
    assert_eq!(
        on_b, wanted,
        "node b serves every domain once, at the panel's generation, and nothing else"
    );
    assert!(placed.keys().eq(pages.keys()), "{placed:?}");
    let rows = query_pairs(
        &panel,
        "SELECT domain, CAST(COUNT(*) AS TEXT) FROM domains GROUP BY domain",
        &[],
    )
    .await;
    assert!(
        rows.iter().all(|(_, n)| n == "1"),
        "no domain was recorded twice: {rows:?}"
    );
    for (d, page) in &pages {
        let html = customer.page(page).await;
        assert!(html.contains("data-state=\"active\""), "{d} is active");
    }
    // The moved data arrived, and the domain is no longer frozen for the move.
    login_on(&node_b, &first, "alice")
        .await
        .expect("alice logs in on node b");
    // The uploaded file moved too: node b serves the same bytes at the same path.
    let moved = reqwest::get(format!("http://127.0.0.1:{}{file_path}", node_b.http_port))
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::OK, "{file_path}");
    assert_eq!(moved.bytes().await.unwrap().as_ref(), UPLOADED);
    let r = customer
        .post_form(
            &format!("{}/accounts", pages[&first]),
            &[("username", "bob"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    login_on(&node_b, &first, "bob")
        .await
        .expect("bob, created after the move, logs in on node b");
}

#[tokio::test]
async fn join_tokens_that_expired_or_were_used_are_refused_by_rookery_node_join() {
    let panel = PanelProcess::start_with_env(FAST)
        .await
        .expect("the panel starts");
    let (admin, _) = admin(&panel).await;

    // A second panel on the same database whose tokens live one second (the panel has no
    // clock to move, so the expiry is made short instead).
    let short = panel
        .start_sibling(&[("ROOKERY_PROVISIONING__JOIN_TOKEN_TTL_SECS", "1")])
        .await
        .expect("a short-lived-token panel starts");
    let (short_admin, _) = self::admin(&short).await;
    let expiring = join_token(&short_admin, "expires at once").await;
    short.stop().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let node = NodeProcess::start_unenrolled(&[])
        .await
        .expect("the node starts");
    let out = node
        .cli(
            &[
                "join",
                &panel.base_url,
                "--token",
                &expiring,
                "--name",
                "late",
            ],
            None,
        )
        .await
        .expect("join runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an expired token is refused");
    assert!(
        stderr.contains("This join token has expired; create a new one in the panel."),
        "{stderr}"
    );
    assert!(
        !node.data_dir().join("control.json").exists(),
        "a refused node stores no credentials"
    );
    let html = admin.page("/admin/nodes").await;
    assert!(!html.contains("data-node=\"late\""), "no node was added");
    let row = rows_with(&html, "expires at once");
    assert!(
        row.len() == 1 && row[0].contains("<td>expired</td>"),
        "the pool page lists the token as expired: {row:?}"
    );

    // The same node joins with a fresh token; that token then works for nobody else.
    let token = join_token(&admin, "used once").await;
    let out = node
        .cli(
            &[
                "join",
                &panel.base_url,
                "--token",
                &token,
                "--name",
                "node-1",
            ],
            None,
        )
        .await
        .expect("join runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(node.data_dir().join("control.json").exists());
    let reused = NodeProcess::join(&panel.base_url, &token, "node-2")
        .await
        .expect("join runs");
    let stderr = String::from_utf8_lossy(&reused.stderr);
    assert!(!reused.status.success(), "a used token is refused");
    assert!(
        stderr.contains("This join token was already used; create a new one in the panel."),
        "{stderr}"
    );
    let html = admin.page("/admin/nodes").await;
    assert!(html.contains("data-node=\"node-1\""));
    assert!(!html.contains("data-node=\"node-2\""), "no second node");
    let row = rows_with(&html, "used once");
    assert!(
        row.len() == 1 && row[0].contains("used by node-1"),
        "{row:?}"
    );
}

#[tokio::test]
async fn the_pool_page_warns_past_headroom_and_a_node_is_removed_only_once_drained() {
    // 30 % headroom: the line is at 70 % of the pool's capacity.
    let panel =
        PanelProcess::start_with_env(&with(&[("ROOKERY_PROVISIONING__HEADROOM_PERCENT", "30")]))
            .await
            .expect("the panel starts");
    let (admin, email) = admin(&panel).await;
    let five = [("ROOKERY_NODE_CAPACITY__MAX_VHOSTS", "5")];
    let node_a = enroll(&panel, &admin, "node-a", &five).await;
    let a_id = node_id(&panel, "node-a").await;
    let (customer, org) = customer(&panel, "Full Ltd").await;
    for i in 0..3 {
        customer
            .order_domain(&org, &format!("d{i}.full.test"))
            .await;
    }
    settle_until(&panel, 3, 30, |_| true).await;
    let html = admin.page("/admin/nodes").await;
    assert!(html.contains("The pool is 60% full."), "{html}");
    assert!(
        !html.contains("id=\"headroom-warning\""),
        "3 of 5 is below the line"
    );

    customer.order_domain(&org, "d3.full.test").await;
    settle_until(&panel, 4, 30, |_| true).await;
    let html = admin.page("/admin/nodes").await;
    assert!(
        html.contains("id=\"headroom-warning\""),
        "4 of 5 is past it"
    );
    assert!(
        html.contains("The pool is 80% full, past its 70% headroom line"),
        "{html}"
    );

    // A second node brings the pool back under the line.
    let node_b = enroll(&panel, &admin, "node-b", &five).await;
    let html = admin.page("/admin/nodes").await;
    assert!(html.contains("The pool is 40% full."), "{html}");
    assert!(!html.contains("id=\"headroom-warning\""));

    // Node a cannot leave while it holds domains.
    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/remove"), &[])
        .await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(text.contains("node-a still holds domains"), "{text}");
    assert!(
        admin
            .page("/admin/nodes")
            .await
            .contains("data-node=\"node-a\"")
    );

    // Drained, its domains move to b; the pool (b alone) is past the line again.
    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/drain"), &[])
        .await;
    assert_eq!(r.status(), 303);
    settle_until(&panel, 4, 60, |p| p.values().all(|n| n == "node-b")).await;
    let node_a_ref = &node_a;
    eventually(30, || async move { served(node_a_ref).await.is_empty() })
        .await
        .expect("node a is emptied");
    let mut on_b = served_names(&node_b).await;
    on_b.sort();
    assert_eq!(
        on_b,
        [
            "d0.full.test",
            "d1.full.test",
            "d2.full.test",
            "d3.full.test"
        ]
    );
    let html = admin.page("/admin/nodes").await;
    assert!(
        html.contains("The pool is 80% full, past its 70% headroom line"),
        "a draining node's capacity does not count: {html}"
    );

    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/remove"), &[])
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert_eq!(location(&r), "/admin/nodes?notice=node-removed");
    let html = admin.page("/admin/nodes").await;
    assert!(!html.contains("data-node=\"node-a\""), "node a is gone");
    assert!(html.contains("data-node=\"node-b\""));
    assert_eq!(
        admin.get(&format!("/admin/nodes/{a_id}")).await.status(),
        404
    );

    // The audit log names the admin for the drain and the removal (once: the refused
    // attempt changed nothing).
    let audit = admin.page("/admin/audit").await;
    for action in ["node.drain", "node.removed"] {
        let rows = rows_with(&audit, &format!("<code>{action}</code>"));
        assert_eq!(rows.len(), 1, "{action} once: {rows:?}");
        assert!(
            rows[0].contains(&email) && rows[0].contains("node-a"),
            "{action} by {email} on node-a: {}",
            rows[0]
        );
    }
}

#[tokio::test]
async fn a_vhost_lost_behind_the_panels_back_is_put_back_and_strays_are_handled_as_intended() {
    let panel = PanelProcess::start_with_env(FAST)
        .await
        .expect("the panel starts");
    let (admin, _) = admin(&panel).await;
    let node_a = enroll(&panel, &admin, "node-a", &[]).await;
    let node_b = enroll(&panel, &admin, "node-b", &[]).await;
    let (customer, org) = customer(&panel, "Drift Ltd").await;
    const DOMAIN: &str = "drift.test";
    let page = customer.order_domain(&org, DOMAIN).await;
    let placed = settle_until(&panel, 1, 30, |_| true).await;
    let (home, other) = if placed[DOMAIN] == "node-a" {
        (&node_a, &node_b)
    } else {
        (&node_b, &node_a)
    };
    let generation = served(home)
        .await
        .into_iter()
        .find(|(d, _)| d == DOMAIN)
        .and_then(|(_, g)| g)
        .expect("the home node serves the domain at a generation");

    // Someone deletes the vhost on its node, behind the panel's back.
    let (status, body) = home
        .control(Method::DELETE, &format!("/v1/vhosts/{DOMAIN}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert!(!served_names(home).await.contains(&DOMAIN.to_string()));
    eventually(20, || async {
        served(home)
            .await
            .contains(&(DOMAIN.to_string(), Some(generation)))
    })
    .await
    .expect("the panel notices and puts the vhost back");
    settle_until(&panel, 1, 20, |_| true).await;
    let r = customer
        .post_form(
            &format!("{page}/accounts"),
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let home_ref = home;
    eventually(10, || async move { home_ref.cert_of(DOMAIN).exists() })
        .await
        .expect("the vhost's certificate is back");
    login_on(home, DOMAIN, "alice")
        .await
        .expect("alice logs in on the repaired vhost");

    // Strays on the other node: a copy of the domain (its data lives on the home node), a
    // domain this panel never heard of, and one added with the node's CLI.
    let (status, body) = other
        .control(
            Method::PUT,
            &format!("/v1/vhosts/{DOMAIN}"),
            Some(json!({"domain": DOMAIN, "generation": generation})),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = other
        .control(
            Method::PUT,
            "/v1/vhosts/stray.test",
            Some(json!({"domain": "stray.test", "generation": 1})),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    let out = other
        .cli(&["vhost", "add", "cli.test"], None)
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The copy goes: its domain is served where the panel applied it.
    let other_ref = other;
    eventually(20, || async move {
        !served_names(other_ref).await.contains(&DOMAIN.to_string())
    })
    .await
    .expect("the poller removes the stray copy");
    // The unknown domain is reported (in the panel's log) and left alone.
    if !test_log() {
        let log = panel.data_dir().join("panel-output.log");
        let log_ref = &log;
        eventually(20, || async move {
            std::fs::read_to_string(log_ref)
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains("does not know") && l.contains("stray.test"))
        })
        .await
        .expect("the panel logs the unknown vhost");
    }
    // Two more polls, and the unknown and the CLI's vhosts are still there.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut left = served(other).await;
    left.sort();
    assert_eq!(
        left,
        [
            ("cli.test".to_string(), None),
            ("stray.test".to_string(), Some(1))
        ],
        "vhosts the panel does not manage are kept"
    );
    assert!(
        query_pairs(
            &panel,
            "SELECT domain, state FROM domains WHERE domain IN ('stray.test', 'cli.test')",
            &[],
        )
        .await
        .is_empty(),
        "the panel adopts no stray"
    );
    // The home node's vhost and its data were not touched by the copy's removal.
    assert!(
        served(home)
            .await
            .contains(&(DOMAIN.to_string(), Some(generation)))
    );
    login_on(home, DOMAIN, "alice")
        .await
        .expect("alice still logs in on the home node");
    let placed = placements(&panel).await;
    assert_ne!(placed[DOMAIN], "-", "the domain stays settled");
}

#[tokio::test]
async fn a_pool_with_no_usable_node_warns_without_calling_itself_empty() {
    let panel = PanelProcess::start_with_env(FAST)
        .await
        .expect("the panel starts");
    let (admin, _) = admin(&panel).await;
    let _node = enroll(&panel, &admin, "node-a", &[]).await;
    let a_id = node_id(&panel, "node-a").await;
    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/cordon"), &[])
        .await;
    assert_eq!(r.status(), 303);
    let html = admin.page("/admin/nodes").await;
    // No node takes new domains: the warning is right to show...
    assert!(html.contains("id=\"headroom-warning\""), "{html}");
    // ...but not as an empty pool past its line.
    let at = html.find("id=\"headroom-warning\"").unwrap();
    let warning = &html[at..at + html[at..].find("</div>").unwrap()];
    assert!(
        !warning.contains("0% full"),
        "the warning contradicts itself: {warning}"
    );
    assert!(warning.contains("No node takes new domains"), "{warning}");
}

#[tokio::test]
async fn a_plans_domains_go_only_to_nodes_with_its_labels() {
    let panel = PanelProcess::start_with_env(FAST)
        .await
        .expect("the panel starts");
    let (admin, _) = admin(&panel).await;
    let _eu = enroll_labelled(&panel, &admin, "node-eu", &[], &["region=eu-west"]).await;
    let _us = enroll_labelled(&panel, &admin, "node-us", &[], &["region=us-east"]).await;

    // Bad labels are refused with the reason, and no plan is made.
    let mut form = rookery_tests::app::plan_form("EU", "0", None);
    form.push(("node_labels", "region"));
    let r = admin.post_form("/admin/plans", &form).await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("is not name=value"));
    form.pop();
    form.push(("node_labels", "region=eu-west"));
    assert_eq!(admin.post_form("/admin/plans", &form).await.status(), 303);
    let mut mars = rookery_tests::app::plan_form("Mars", "0", None);
    mars.push(("node_labels", "region=mars"));
    assert_eq!(admin.post_form("/admin/plans", &mars).await.status(), 303);
    let plan = |name: &'static str| {
        let panel = &panel;
        async move {
            query_pairs(panel, "SELECT name, id FROM plans WHERE name = $1", &[name])
                .await
                .pop()
                .unwrap()
                .1
        }
    };
    let (eu_plan, mars_plan) = (plan("EU").await, plan("Mars").await);
    let page = admin.page("/admin/plans").await;
    assert!(
        page.contains("region=eu-west"),
        "the plan list shows the labels"
    );

    let (customer, org) = customer(&panel, "Labels").await;
    for i in 0..4 {
        let domain = format!("eu{i}.labels.test");
        let r = customer
            .post_form(
                &format!("{org}/domains"),
                &[("domain", domain.as_str()), ("plan", eu_plan.as_str())],
            )
            .await;
        assert_eq!(r.status(), 303);
    }
    let placed = settle_until(&panel, 4, 30, |_| true).await;
    assert_eq!(on(&placed, "node-eu").len(), 4, "{placed:?}");

    // No node has the label: the domain waits, saying why.
    let r = customer
        .post_form(
            &format!("{org}/domains"),
            &[("domain", "mars.labels.test"), ("plan", mars_plan.as_str())],
        )
        .await;
    assert_eq!(r.status(), 303);
    let mars_page = rookery_tests::app::location(&r);
    eventually(20, || async {
        customer.page(&mars_page).await.contains("label")
    })
    .await
    .expect("the waiting domain says no node has the plan's labels");
    assert_eq!(placements(&panel).await["mars.labels.test"], "-");
}
