//! Issue 4 end to end: a real panel process and two real `rookery-node` processes. Nodes
//! enroll with join tokens (a reused or expired one fails), domains spread over them,
//! cordoning steers new domains away, draining moves domains (and a real XMPP client logs in
//! to a moved domain on its new node), a panel killed in the middle of provisioning restarts
//! and everything converges with nothing duplicated, and a killed node is marked down. A
//! move keeps the domain's data still while it is copied (writes are refused, sessions
//! stay) and sends clients to the new node only once it holds their data, even when the
//! new node crashes in the middle.

use std::{collections::BTreeMap, time::Duration};

use rookery_tests::{
    app::{PASSWORD, TestClient, eventually, location, unique_email},
    node::NodeProcess,
    pool::{join_token, query_pairs, settle_until},
    process::PanelProcess,
    xmpp::{
        client::{Account, LoginConfig, Session, tls_connector},
        xml::El,
    },
};

/// Fast loops, so the test takes seconds.
const PANEL_ENV: &[(&str, &str)] = &[
    ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
    ("ROOKERY_PROVISIONING__POLL_INTERVAL_SECS", "1"),
    ("ROOKERY_PROVISIONING__DOWN_AFTER_MISSES", "2"),
    ("ROOKERY_PROVISIONING__MAX_RETRY_SECS", "2"),
    ("ROOKERY_PROVISIONING__JOIN_TOKEN_TTL_SECS", "60"),
];

async fn admin_client(panel: &PanelProcess) -> TestClient {
    panel.admin_client().await.expect("an admin logs in")
}

async fn query_map(panel: &PanelProcess, sql: &str) -> BTreeMap<String, String> {
    query_pairs(panel, sql, &[]).await.into_iter().collect()
}

async fn node_ids(panel: &PanelProcess) -> BTreeMap<String, String> {
    query_map(panel, "SELECT name, id FROM nodes").await
}

async fn vhosts_of(node: &NodeProcess) -> Vec<String> {
    let out = node
        .cli(&["vhost", "list"], None)
        .await
        .expect("vhost list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

async fn add_domain(customer: &TestClient, org_path: &str, domain: &str) -> String {
    let r = customer
        .post_form(&format!("{org_path}/domains"), &[("domain", domain)])
        .await;
    assert_eq!(
        r.status(),
        303,
        "adding {domain}: {}",
        r.text().await.unwrap_or_default()
    );
    location(&r)
}

async fn settle(panel: &PanelProcess, expected: usize, secs: u64) -> BTreeMap<String, String> {
    settle_until(panel, expected, secs, |_| true).await
}

fn count_on(placed: &BTreeMap<String, String>, node: &str) -> usize {
    placed.values().filter(|n| *n == node).count()
}

#[tokio::test]
async fn domains_are_placed_spread_cordoned_drained_and_survive_a_panel_crash() {
    let mut panel = PanelProcess::start_with_env(PANEL_ENV)
        .await
        .expect("the panel starts");
    let admin = admin_client(&panel).await;

    // Enrollment: each token works once.
    let token_a = join_token(&admin, "node a").await;
    let token_b = join_token(&admin, "node b").await;
    let node_a = NodeProcess::join_and_start(&panel.base_url, &token_a, "node-a")
        .await
        .expect("node a joins");
    let reused = NodeProcess::join(&panel.base_url, &token_a, "node-x")
        .await
        .expect("join runs");
    assert!(!reused.status.success(), "a used token is refused");
    assert!(
        String::from_utf8_lossy(&reused.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&reused.stderr)
    );
    let node_b = NodeProcess::join_and_start(&panel.base_url, &token_b, "node-b")
        .await
        .expect("node b joins");
    let ids = node_ids(&panel).await;
    assert_eq!(ids.keys().collect::<Vec<_>>(), ["node-a", "node-b"]);

    // Twenty domains spread over both nodes.
    let (customer, org_path) = {
        let c = TestClient::new(&panel.base_url);
        let email = unique_email("customer");
        let r = c
            .post_form(
                "/signup",
                &[
                    ("email", email.as_str()),
                    ("password", PASSWORD),
                    ("org_name", "Spread Ltd"),
                ],
            )
            .await;
        assert_eq!(r.status(), 303);
        let dashboard = location(&r).split('?').next().unwrap().to_string();
        (c, dashboard)
    };
    for i in 0..20 {
        add_domain(&customer, &org_path, &format!("d{i:02}.spread.test")).await;
    }
    let placed = settle(&panel, 20, 60).await;
    assert_eq!(count_on(&placed, "node-a"), 10, "{placed:?}");
    assert_eq!(count_on(&placed, "node-b"), 10, "{placed:?}");
    let mut on_a = vhosts_of(&node_a).await;
    on_a.sort();
    let expected_a: Vec<String> = placed
        .iter()
        .filter(|(_, n)| *n == "node-a")
        .map(|(d, _)| d.clone())
        .collect();
    assert_eq!(on_a, expected_a, "node a serves exactly its domains");

    // Cordon a: new domains avoid it.
    let a_id = &ids["node-a"];
    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/cordon"), &[])
        .await;
    assert_eq!(r.status(), 303);
    for i in 0..2 {
        add_domain(&customer, &org_path, &format!("c{i}.spread.test")).await;
    }
    let placed = settle(&panel, 22, 30).await;
    assert_eq!(count_on(&placed, "node-a"), 10, "{placed:?}");
    assert_eq!(placed["c0.spread.test"], "node-b");

    // An account on a domain of node a, then drain a: everything moves to b, and the
    // account logs in there.
    let moved = placed
        .iter()
        .find(|(_, n)| *n == "node-a")
        .map(|(d, _)| d.clone())
        .unwrap();
    let moved_id = query_map(
        &panel,
        &format!("SELECT domain, id FROM domains WHERE domain = '{moved}'"),
    )
    .await[&moved]
        .clone();
    let r = customer
        .post_form(
            &format!("{org_path}/domains/{moved_id}/accounts"),
            &[("username", "alice"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(
        r.status(),
        303,
        "account created: {}",
        r.text().await.unwrap_or_default()
    );
    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/drain"), &[])
        .await;
    assert_eq!(r.status(), 303);
    settle_until(&panel, 22, 60, |p| count_on(p, "node-b") == 22).await;
    eventually(20, || async { vhosts_of(&node_a).await.is_empty() })
        .await
        .expect("node a is emptied");
    let cfg = LoginConfig {
        addr: format!("127.0.0.1:{}", node_b.c2s_port).parse().unwrap(),
        domain: moved.clone(),
        tls: tls_connector(&node_b.cert_of(&moved)).expect("the vhost's certificate on node b"),
        keys: Default::default(),
        resource: "e2e".into(),
        presence: false,
    };
    let account = Account {
        user: "alice".into(),
        password: PASSWORD.into(),
    };
    let session = Session::login(&cfg, &account)
        .await
        .expect("alice logs in to her moved domain on node b");
    drop(session);

    // The panel crashes in the middle of provisioning; after a restart everything
    // converges with nothing duplicated.
    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/uncordon"), &[])
        .await;
    assert_eq!(r.status(), 303);
    for i in 0..10 {
        add_domain(&customer, &org_path, &format!("r{i}.spread.test")).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    panel.kill_and_restart().await.expect("the panel restarts");
    let placed = settle(&panel, 32, 60).await;
    let mut served: Vec<String> = vhosts_of(&node_a).await;
    served.extend(vhosts_of(&node_b).await);
    served.sort();
    let mut wanted: Vec<String> = placed.keys().cloned().collect();
    wanted.sort();
    assert_eq!(served, wanted, "every domain on exactly one node");

    // A node that dies is marked down.
    drop(node_a);
    let admin = admin_client(&panel).await;
    eventually(20, || async {
        admin
            .page("/admin/nodes")
            .await
            .contains("data-node-state=\"down\"")
    })
    .await
    .expect("node a is shown down");
    drop(node_b);
}

/// Logs in to `domain` on `node` (STARTTLS, SCRAM-SHA-256, bind, initial presence).
async fn login_on(
    node: &NodeProcess,
    domain: &str,
    user: &str,
    resource: &str,
) -> anyhow::Result<Session> {
    let cfg = LoginConfig {
        addr: format!("127.0.0.1:{}", node.c2s_port).parse()?,
        domain: domain.into(),
        tls: tls_connector(&node.cert_of(domain))?,
        keys: Default::default(),
        resource: resource.into(),
        presence: true,
    };
    let account = Account {
        user: user.into(),
        password: PASSWORD.into(),
    };
    Session::login(&cfg, &account).await
}

/// The next element the node sends that matches `pick` (others are skipped), within 10 s.
async fn next_matching(session: &mut Session, pick: impl Fn(&El) -> bool) -> El {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let el = tokio::time::timeout_at(deadline, session.next_element())
            .await
            .expect("the node answered within 10 s")
            .unwrap();
        if pick(&el) {
            return el;
        }
    }
}

/// Sends `xml` (an iq with this `id`) and waits for its answer.
async fn ask(session: &mut Session, id: &str, xml: &str) -> El {
    session.send(xml).await.unwrap();
    next_matching(session, |e| e.name == "iq" && e.attr("id") == Some(id)).await
}

async fn ping(session: &mut Session, id: &str) {
    let answer = ask(
        session,
        id,
        &format!("<iq type='get' id='{id}'><ping xmlns='urn:xmpp:ping'/></iq>"),
    )
    .await;
    assert_eq!(answer.attr("type"), Some("result"), "{answer:?}");
}

/// Reads until the node ends the stream (within `secs`); returns how.
async fn stream_end(session: &mut Session, secs: u64) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        match tokio::time::timeout_at(deadline, session.next_element()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return format!("{e:#}"),
            Err(_) => return format!("still open after {secs} s"),
        }
    }
}

#[tokio::test]
async fn a_drain_sends_clients_to_the_new_node_only_once_it_holds_their_data() {
    let mut panel = PanelProcess::start_with_env(&[
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
        ("ROOKERY_PROVISIONING__POLL_INTERVAL_SECS", "1"),
        // Node b's crash must not get it marked down while the move waits for it.
        ("ROOKERY_PROVISIONING__DOWN_AFTER_MISSES", "30"),
        ("ROOKERY_PROVISIONING__MAX_RETRY_SECS", "1"),
        // The restarted panel takes the reconciler's lease over soon.
        ("ROOKERY_LEASE_SECS", "3"),
    ])
    .await
    .expect("the panel starts");
    let admin = admin_client(&panel).await;
    let token = join_token(&admin, "node a").await;
    let node_a = NodeProcess::join_and_start(&panel.base_url, &token, "node-a")
        .await
        .expect("node a joins");
    let customer = TestClient::new(&panel.base_url);
    let r = customer
        .post_form(
            "/signup",
            &[
                ("email", unique_email("mover").as_str()),
                ("password", PASSWORD),
                ("org_name", "Movers Ltd"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let org_path = location(&r).split('?').next().unwrap().to_string();
    const DOMAIN: &str = "moving.spread.test";
    let page = add_domain(&customer, &org_path, DOMAIN).await;
    settle(&panel, 1, 30).await;
    for user in ["alice", "bob"] {
        let r = customer
            .post_form(
                &format!("{page}/accounts"),
                &[("username", user), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    }
    let token = join_token(&admin, "node b").await;
    let mut node_b = NodeProcess::join_and_start(&panel.base_url, &token, "node-b")
        .await
        .expect("node b joins");

    // Alice is online on node a with bob in her roster and a message waiting for him.
    let mut alice = login_on(&node_a, DOMAIN, "alice", "desk").await.unwrap();
    let added = ask(
        &mut alice,
        "r1",
        &format!("<iq type='set' id='r1'><query xmlns='jabber:iq:roster'><item jid='bob@{DOMAIN}' name='Bob'/></query></iq>"),
    )
    .await;
    assert_eq!(added.attr("type"), Some("result"), "{added:?}");
    alice
        .send(&format!(
            "<message to='bob@{DOMAIN}' type='chat' id='m1'><body>written before the move</body></message>"
        ))
        .await
        .unwrap();
    ping(&mut alice, "p1").await;

    // Node b crashes just as node a is drained: the move freezes the domain on node a,
    // copies its data and waits for node b, retrying.
    node_b.kill().await;
    let a_id = node_ids(&panel).await["node-a"].clone();
    let r = admin
        .post_form(&format!("/admin/nodes/{a_id}/drain"), &[])
        .await;
    assert_eq!(r.status(), 303);
    let waiting = format!(
        "SELECT domain, COALESCE(waiting_reason, '') FROM domains WHERE domain = '{DOMAIN}' AND move_from_node_id IS NOT NULL"
    );
    eventually(20, || async {
        query_map(&panel, &waiting)
            .await
            .get(DOMAIN)
            .is_some_and(|why| why.contains("node-b"))
    })
    .await
    .expect("the move waits for node b");

    // Meanwhile the data on node a stays still: account changes are refused with a
    // sentence people understand, stanzas that would store something bounce with a wait
    // error, and alice's session goes on.
    let r = customer
        .post_form(
            &format!("{page}/accounts"),
            &[("username", "carol"), ("password", PASSWORD)],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "{DOMAIN} is moving to another server right now; try again in a moment."
        )),
        "{html}"
    );
    alice
        .send(&format!(
            "<message to='bob@{DOMAIN}' type='chat' id='m2'><body>written during the move</body></message>"
        ))
        .await
        .unwrap();
    let bounce = next_matching(&mut alice, |e| e.name == "message").await;
    assert_eq!(bounce.attr("id"), Some("m2"));
    let error = bounce.child("error").expect("an error");
    assert_eq!(error.attr("type"), Some("wait"), "{bounce:?}");
    assert!(error.child("resource-constraint").is_some(), "{bounce:?}");
    ping(&mut alice, "p2").await;

    // The panel crashes too; once node b is back the move finishes from what the panel
    // recorded, and only then is alice sent there.
    panel.kill_and_restart().await.expect("the panel restarts");
    node_b.kill_and_restart().await.expect("node b restarts");
    let ended = stream_end(&mut alice, 30).await;
    let b_address = format!("127.0.0.1:{}", node_b.c2s_port);
    assert!(
        ended.contains("see-other-host") && ended.contains(&b_address),
        "alice is sent to node b: {ended}"
    );
    // She follows at once: her account, roster and bob's message are there.
    let mut alice = login_on(&node_b, DOMAIN, "alice", "desk")
        .await
        .expect("alice logs in on node b right after the redirect");
    let roster = ask(
        &mut alice,
        "r2",
        "<iq type='get' id='r2'><query xmlns='jabber:iq:roster'/></iq>",
    )
    .await;
    let items: Vec<&str> = roster
        .child("query")
        .unwrap()
        .children
        .iter()
        .filter_map(|i| i.attr("jid"))
        .collect();
    assert_eq!(items, [format!("bob@{DOMAIN}")], "{roster:?}");
    let mut bob = login_on(&node_b, DOMAIN, "bob", "phone").await.unwrap();
    let message = next_matching(&mut bob, |e| e.name == "message").await;
    assert_eq!(
        message.child("body").map(|b| b.text.as_str()),
        Some("written before the move")
    );
    ping(&mut bob, "p3").await;

    settle_until(&panel, 1, 30, |p| p[DOMAIN] == "node-b").await;
    eventually(20, || async { vhosts_of(&node_a).await.is_empty() })
        .await
        .expect("node a lets go of the domain");
    // The refused account was never written anywhere; the panel takes it now.
    assert!(login_on(&node_b, DOMAIN, "carol", "desk").await.is_err());
    let r = customer
        .post_form(
            &format!("{page}/accounts"),
            &[("username", "carol"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    login_on(&node_b, DOMAIN, "carol", "desk")
        .await
        .expect("carol logs in on node b");
}

/// The README's run command: the panel with its local node. A new customer adds a domain,
/// creates a chat account, and a real client logs in on the local node.
#[tokio::test]
async fn the_demo_panel_serves_a_new_domain_on_its_local_node() {
    let (panel, ports) =
        PanelProcess::start_demo(&[("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100")])
            .await
            .expect("the demo starts");
    let c2s = ports.c2s.to_string();
    let addr = |p: &str| format!("127.0.0.1:{p}");
    let customer = TestClient::new(&panel.base_url);
    let r = customer
        .post_form(
            "/signup",
            &[
                ("email", unique_email("demo").as_str()),
                ("password", PASSWORD),
                ("org_name", "Demo"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let org = location(&r).split('?').next().unwrap().to_string();
    let page = add_domain(&customer, &org, "chat.demo.test").await;
    eventually(20, || async {
        customer.page(&page).await.contains("data-state=\"active\"")
    })
    .await
    .expect("the domain becomes active on the local node");
    let html = customer.page(&page).await;
    assert!(
        html.contains(&format!("127.0.0.1:{c2s}")),
        "the page says where clients connect"
    );
    let r = customer
        .post_form(
            &format!("{page}/accounts"),
            &[("username", "Romeo"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    assert!(customer.page(&page).await.contains("romeo@chat.demo.test"));
    // Bad input keeps what was typed and says what is wrong.
    let r = customer
        .post_form(
            &format!("{page}/accounts"),
            &[("username", "romeo"), ("password", PASSWORD)],
        )
        .await;
    assert!(r.text().await.unwrap().contains("already exists"));
    let r = customer
        .post_form(&format!("{org}/domains"), &[("domain", "not a domain")])
        .await;
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("not a valid domain"));

    let cert = panel.data_dir().join("node/certs/chat.demo.test.crt");
    let cfg = LoginConfig {
        addr: addr(&c2s).parse().unwrap(),
        domain: "chat.demo.test".into(),
        tls: tls_connector(&cert).expect("the local node's certificate for the domain"),
        keys: Default::default(),
        resource: "demo".into(),
        presence: false,
    };
    let account = Account {
        user: "romeo".into(),
        password: PASSWORD.into(),
    };
    let session = Session::login(&cfg, &account)
        .await
        .expect("romeo logs in on the local node");
    assert!(session.jid.starts_with("romeo@chat.demo.test/"));
    drop(session);

    // A made-up password is shown once and works.
    let r = customer
        .post_form(
            &format!("{page}/accounts"),
            &[("username", "juliet"), ("password", "")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let juliet_password = shown_password(&r.text().await.unwrap());
    let juliet = Account {
        user: "juliet".into(),
        password: juliet_password.clone(),
    };
    Session::login(&cfg, &juliet)
        .await
        .expect("juliet logs in with the made-up password");
    assert!(
        !customer.page(&page).await.contains(&juliet_password),
        "shown only once"
    );

    // A new password for romeo: the old one stops working at once.
    let r = customer
        .post_form(&format!("{page}/accounts/romeo/reset"), &[])
        .await;
    assert_eq!(r.status(), 200);
    let new_password = shown_password(&r.text().await.unwrap());
    assert!(
        Session::login(&cfg, &account).await.is_err(),
        "the old password is refused"
    );
    // A fresh client: the salted-password cache is keyed by salt, not by password.
    let fresh = LoginConfig {
        keys: Default::default(),
        tls: tls_connector(&cert).unwrap(),
        resource: "demo2".into(),
        ..cfg
    };
    Session::login(
        &fresh,
        &Account {
            user: "romeo".into(),
            password: new_password,
        },
    )
    .await
    .expect("the new password works");

    // Deleting asks first, then the account is gone.
    let confirm = customer
        .page(&format!("{page}/accounts/juliet/delete"))
        .await;
    assert!(confirm.contains("Delete juliet@chat.demo.test?"));
    let r = customer
        .post_form(&format!("{page}/accounts/juliet/delete"), &[])
        .await;
    assert_eq!(r.status(), 303);
    assert!(!customer.page(&page).await.contains("juliet@chat.demo.test"));
    assert!(
        Session::login(&fresh, &juliet).await.is_err(),
        "a deleted account cannot log in"
    );

    // A plan's account limit is enforced with a clear message.
    let admin = panel.admin_client().await.expect("an admin");
    let r = admin
        .post_form(
            "/admin/plans",
            &[
                ("name", "Tiny"),
                ("price", "0"),
                ("currency", "EUR"),
                ("max_accounts", "1"),
                ("max_sessions", "5"),
                ("storage_mb", "10"),
                ("upload_mb", "10"),
                ("archive_days", "7"),
                ("public", "1"),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let html = customer.page(&format!("{org}/domains")).await;
    let marker = "name=\"plan\" value=\"";
    let at = html.find(marker).expect("the plan is offered") + marker.len();
    let plan_id = html[at..at + html[at..].find('"').unwrap()].to_string();
    let r = customer
        .post_form(
            &format!("{org}/domains"),
            &[("domain", "tiny.demo.test"), ("plan", plan_id.as_str())],
        )
        .await;
    assert_eq!(r.status(), 303);
    let tiny = location(&r);
    eventually(20, || async {
        customer.page(&tiny).await.contains("data-state=\"active\"")
    })
    .await
    .expect("the tiny domain becomes active");
    let r = customer
        .post_form(
            &format!("{tiny}/accounts"),
            &[("username", "one"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 303);
    let r = customer
        .post_form(
            &format!("{tiny}/accounts"),
            &[("username", "two"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(r.status(), 422);
    let html = r.text().await.unwrap();
    assert!(html.contains("Your plan allows 1 accounts"), "{html}");
    assert!(html.contains("1 of 1 accounts"));
}

/// The password a page shows once.
fn shown_password(html: &str) -> String {
    let at = html
        .find("id=\"new-password\"")
        .expect("a password is shown");
    let tag_start = html[..at].rfind('<').unwrap();
    let tag = &html[tag_start..tag_start + html[tag_start..].find('>').unwrap()];
    let v = tag.find("value=\"").unwrap() + "value=\"".len();
    tag[v..v + tag[v..].find('"').unwrap()].to_string()
}
