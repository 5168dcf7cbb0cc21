//! The node's control API as the panel uses it, against real `rookery-node` processes:
//! specs applied at once and kept across restarts, limits (sessions, storage quota) and
//! suspensions enforced on real XMPP sessions, contact addresses in disco#info, a domain's
//! data moved from one node to another (frozen meanwhile, across a restart too), and
//! enrollment with `rookery-node join` against a stand-in panel.

use std::{sync::Arc, time::Duration};

use reqwest::{Method, StatusCode};
use rookery_tests::{
    node::NodeProcess,
    xmpp::{
        client::{Account, LoginConfig, SaltCache, Session, tls_connector},
        xml::El,
    },
};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

const DOMAIN: &str = "control.test";

fn spec(generation: i64, extra: Value) -> Value {
    let mut s = json!({"domain": DOMAIN, "generation": generation});
    if let (Some(s), Value::Object(extra)) = (s.as_object_mut(), extra) {
        s.extend(extra);
    }
    s
}

async fn put_spec(node: &NodeProcess, spec: Value) -> (StatusCode, Value) {
    node.control(Method::PUT, &format!("/v1/vhosts/{DOMAIN}"), Some(spec))
        .await
        .unwrap()
}

async fn add_account(node: &NodeProcess, user: &str, password: &str) -> (StatusCode, Value) {
    node.control(
        Method::POST,
        &format!("/v1/vhosts/{DOMAIN}/accounts"),
        Some(json!({"username": user, "password": password})),
    )
    .await
    .unwrap()
}

/// Logs in with the test client (STARTTLS, SCRAM-SHA-256, bind, presence).
async fn login(
    node: &NodeProcess,
    user: &str,
    password: &str,
    resource: &str,
) -> anyhow::Result<Session> {
    let cfg = LoginConfig {
        addr: format!("127.0.0.1:{}", node.c2s_port).parse()?,
        domain: DOMAIN.into(),
        tls: tls_connector(&node.cert_of(DOMAIN))?,
        keys: Arc::new(SaltCache::default()),
        resource: resource.into(),
        presence: true,
    };
    Session::login(
        &cfg,
        &Account {
            user: user.into(),
            password: password.into(),
        },
    )
    .await
}

/// Reads until the node ends the stream; returns how (the client's error text).
async fn stream_end(session: &mut Session) -> String {
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(5), session.next_element()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return format!("{e:#}"),
            Err(_) => return "still open after 5 s".into(),
        }
    }
    "still open".into()
}

fn code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_spec_applies_at_once_and_bad_requests_get_clear_answers() {
    let node = NodeProcess::start().await.unwrap();
    let (status, body) = put_spec(&node, spec(1, json!({"limits": {"max_accounts": 2}}))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"domain": DOMAIN, "generation": 1, "changed": true})
    );
    let (status, body) = add_account(&node, "Alice", "pass-alice-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["username"], "alice", "user names are normalised");
    // No waiting for the node's once-a-second reload: the PUT's 200 means "served".
    let mut alice = login(&node, "alice", "pass-alice-1", "desk").await.unwrap();
    // A message to herself: one message in, one out (her presence is no message).
    alice
        .send(&format!(
            "<message to='alice@{DOMAIN}/desk' type='chat' id='m1'><body>hi</body></message>"
        ))
        .await
        .unwrap();
    loop {
        let el = alice.next_element().await.unwrap();
        if el.name == "message" {
            break;
        }
    }

    let (status, body) = put_spec(&node, spec(1, json!({"limits": {"max_accounts": 2}}))).await;
    assert_eq!(
        (status, body["changed"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    let (status, _) = put_spec(&node, spec(2, json!({"limits": {"max_accounts": 2}}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = put_spec(&node, spec(1, json!({}))).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "stale_generation")
    );
    assert!(
        body["message"].as_str().unwrap().contains("generation 2"),
        "{body}"
    );

    let bad = spec(
        3,
        json!({"contacts": {"abuse": ["abuse at example dot com"]}}),
    );
    let (status, body) = put_spec(&node, bad).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec")
    );
    assert!(
        body["message"].as_str().unwrap().contains("abuse"),
        "{body}"
    );
    let (status, body) = node
        .control(
            Method::PUT,
            &format!("/v1/vhosts/{DOMAIN}"),
            Some(json!("{not a spec")),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "bad_request")
    );

    let (status, body) = node
        .control(Method::GET, "/v1/vhosts/unknown.test", None)
        .await
        .unwrap();
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = node
        .control(
            Method::POST,
            "/v1/vhosts/unknown.test/accounts",
            Some(json!({"username": "x", "password": "pass-x-1"})),
        )
        .await
        .unwrap();
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));

    let (status, body) = node
        .control_as("not-the-secret", Method::GET, "/v1/status", None)
        .await
        .unwrap();
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let log = node.output();
    assert!(
        log.contains("refused a request with a missing or wrong secret")
            && log.contains("peer=127.0.0.1:"),
        "the refusal is logged with the caller's address:\n{log}"
    );

    let (status, _) = add_account(&node, "bob", "pass-bob-1").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = add_account(&node, "carol", "pass-carol-1").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "account_limit")
    );
    let out = node
        .cli(
            &["user", "add", &format!("carol@{DOMAIN}")],
            Some("pass-carol-1\n"),
        )
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("limit of 2 accounts"),
        "the CLI says why: {stderr}"
    );
    let (status, body) = add_account(&node, "alice", "pass-alice-2").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "account_exists")
    );

    let (_, vhosts) = node.control(Method::GET, "/v1/vhosts", None).await.unwrap();
    assert_eq!(
        vhosts,
        json!([{"domain": DOMAIN, "generation": 2, "suspended": false, "sessions": 1}])
    );
    let (status, st) = node.control(Method::GET, "/v1/status", None).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (st["sessions"].as_i64(), st["vhosts"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(st["memory_bytes"].as_i64().unwrap() > 0 && st["cpu_cores"].as_i64().unwrap() > 0);
    assert_eq!(st["capacity"]["max_vhosts"], 1000);
    let (_, usage) = node.control(Method::GET, "/v1/usage", None).await.unwrap();
    let u = &usage["vhosts"][0];
    assert_eq!(
        (u["accounts"].as_i64(), u["sessions"].as_i64()),
        (Some(2), Some(1)),
        "{usage}"
    );
    assert_eq!(
        (u["messages_in"].as_i64(), u["messages_out"].as_i64()),
        (Some(1), Some(1)),
        "one message, and no presence or iq counted: {usage}"
    );
    assert!(u["storage_bytes"].as_i64().unwrap() > 0, "{usage}");
}

#[tokio::test]
async fn suspending_or_moving_a_domain_closes_its_sessions_with_the_right_stream_error() {
    let node = NodeProcess::start().await.unwrap();
    assert_eq!(put_spec(&node, spec(1, json!({}))).await.0, StatusCode::OK);
    add_account(&node, "alice", "pass-alice-1").await;
    let mut open = login(&node, "alice", "pass-alice-1", "one").await.unwrap();

    assert_eq!(
        put_spec(&node, spec(2, json!({"suspended": true}))).await.0,
        StatusCode::OK
    );
    let ended = stream_end(&mut open).await;
    assert!(
        ended.contains("policy-violation") && ended.contains("suspended by its provider"),
        "the open session: {ended}"
    );
    let refused = login(&node, "alice", "pass-alice-1", "two")
        .await
        .err()
        .unwrap();
    assert!(
        format!("{refused:#}").contains("policy-violation"),
        "{refused:#}"
    );
    let (_, got) = node
        .control(Method::GET, &format!("/v1/vhosts/{DOMAIN}"), None)
        .await
        .unwrap();
    assert_eq!(
        (got["generation"].as_i64(), got["suspended"].as_bool()),
        (Some(2), Some(true))
    );

    assert_eq!(put_spec(&node, spec(3, json!({}))).await.0, StatusCode::OK);
    let mut open = login(&node, "alice", "pass-alice-1", "three")
        .await
        .unwrap();
    let moved = spec(4, json!({"moved_to": "node2.example.net:5222"}));
    assert_eq!(put_spec(&node, moved).await.0, StatusCode::OK);
    let ended = stream_end(&mut open).await;
    assert!(
        ended.contains("see-other-host") && ended.contains("node2.example.net:5222"),
        "the open session: {ended}"
    );
    let refused = login(&node, "alice", "pass-alice-1", "four")
        .await
        .err()
        .unwrap();
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("see-other-host") && refused.contains("node2.example.net:5222"),
        "{refused}"
    );
}

#[tokio::test]
async fn binding_beyond_the_session_limit_is_refused_with_resource_constraint() {
    let node = NodeProcess::start().await.unwrap();
    put_spec(&node, spec(1, json!({"limits": {"max_sessions": 1}}))).await;
    add_account(&node, "alice", "pass-alice-1").await;
    let first = login(&node, "alice", "pass-alice-1", "one").await.unwrap();
    let refused = login(&node, "alice", "pass-alice-1", "two")
        .await
        .err()
        .unwrap();
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("resource-constraint") && refused.contains("at most 1 sessions"),
        "{refused}"
    );
    drop(first);
    // The slot frees once the first session's connection is gone.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(s) = login(&node, "alice", "pass-alice-1", "three").await {
            again = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "a freed slot can be used again");
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

/// Sends a ping and waits for its answer: everything sent before it was handled.
async fn round_trip(session: &mut Session, id: &str) {
    session
        .send(&format!(
            "<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await
        .unwrap();
    next_matching(session, |e| e.name == "iq" && e.attr("id") == Some(id)).await;
}

#[tokio::test]
async fn a_full_storage_quota_bounces_offline_messages_until_a_new_spec_raises_it() {
    let node = NodeProcess::start().await.unwrap();
    assert_eq!(put_spec(&node, spec(1, json!({}))).await.0, StatusCode::OK);
    add_account(&node, "alice", "pass-alice-1").await;
    add_account(&node, "bob", "pass-bob-1").await;
    let (_, usage) = node.control(Method::GET, "/v1/usage", None).await.unwrap();
    let stored = usage["vhosts"][0]["storage_bytes"].as_i64().unwrap();
    // Room for one message of about 650 bytes, not for two (archives, which would take
    // room of their own, are switched off).
    let tiny = spec(
        2,
        json!({"limits": {"storage_quota_bytes": stored + 900}, "features": {"archive": false}}),
    );
    assert_eq!(put_spec(&node, tiny).await.0, StatusCode::OK);

    let mut alice = login(&node, "alice", "pass-alice-1", "desk").await.unwrap();
    let filler = "x".repeat(500);
    for id in ["first", "second"] {
        alice
            .send(&format!(
                "<message to='bob@{DOMAIN}' type='chat' id='{id}'><body>{id} {filler}</body></message>"
            ))
            .await
            .unwrap();
    }
    let bounce = next_matching(&mut alice, |e| e.name == "message").await;
    assert_eq!(
        (bounce.attr("type"), bounce.attr("id")),
        (Some("error"), Some("second")),
        "the first is stored, the second bounces: {bounce:?}"
    );
    let error = bounce.child("error").unwrap();
    assert_eq!(error.attr("type"), Some("wait"), "{bounce:?}");
    assert!(error.child("resource-constraint").is_some(), "{bounce:?}");
    let text = &error.child("text").unwrap().text;
    assert!(
        text.contains(&format!("storage of {DOMAIN} is full")),
        "{text}"
    );

    let roomy = spec(
        3,
        json!({"limits": {"storage_quota_bytes": stored + 100_000}, "features": {"archive": false}}),
    );
    assert_eq!(put_spec(&node, roomy).await.0, StatusCode::OK);
    alice
        .send(&format!(
            "<message to='bob@{DOMAIN}' type='chat' id='third'><body>third {filler}</body></message>"
        ))
        .await
        .unwrap();
    round_trip(&mut alice, "after-third").await;

    let mut bob = login(&node, "bob", "pass-bob-1", "phone").await.unwrap();
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        let m = next_matching(&mut bob, |e| e.name == "message").await;
        assert!(m.child("delay").is_some(), "delivered late: {m:?}");
        let body = &m.child("body").unwrap().text;
        bodies.push(body.split(' ').next().unwrap().to_string());
    }
    assert_eq!(bodies, ["first", "third"]);
    // Nothing else waited for bob.
    round_trip(&mut bob, "after-delivery").await;
}

#[tokio::test]
async fn the_specs_contact_addresses_are_in_the_servers_disco_info() {
    let node = NodeProcess::start().await.unwrap();
    let contacts = json!({"contacts": {
        "abuse": ["mailto:abuse@control.test"],
        "support": ["xmpp:support@control.test", "https://control.test/help"]
    }});
    assert_eq!(put_spec(&node, spec(1, contacts)).await.0, StatusCode::OK);
    add_account(&node, "alice", "pass-alice-1").await;
    let mut alice = login(&node, "alice", "pass-alice-1", "desk").await.unwrap();
    let disco = async |alice: &mut Session, id: &str| {
        alice
            .send(&format!(
                "<iq type='get' id='{id}' to='{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
            ))
            .await
            .unwrap();
        let reply = next_matching(alice, |e| e.name == "iq" && e.attr("id") == Some(id)).await;
        assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
        reply.child("query").unwrap().clone()
    };
    let query = disco(&mut alice, "d1").await;
    let form = query.child("x").expect("a contact form");
    assert_eq!(form.attr("xmlns"), Some("jabber:x:data"));
    let fields: Vec<(&str, Vec<&str>)> = form
        .children
        .iter()
        .map(|f| {
            (
                f.attr("var").unwrap(),
                f.children.iter().map(|v| v.text.as_str()).collect(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        vec![
            ("FORM_TYPE", vec!["http://jabber.org/network/serverinfo"]),
            ("abuse-addresses", vec!["mailto:abuse@control.test"]),
            (
                "support-addresses",
                vec!["xmpp:support@control.test", "https://control.test/help"]
            ),
        ]
    );

    // A spec without contacts: no form.
    assert_eq!(put_spec(&node, spec(2, json!({}))).await.0, StatusCode::OK);
    let query = disco(&mut alice, "d2").await;
    assert!(
        query.child("identity").is_some() && query.child("x").is_none(),
        "{query:?}"
    );
}

#[tokio::test]
async fn a_restarted_node_serves_its_vhosts_from_its_own_store() {
    let mut node = NodeProcess::start().await.unwrap();
    put_spec(&node, spec(5, json!({"limits": {"max_sessions": 10}}))).await;
    add_account(&node, "alice", "pass-alice-1").await;
    node.kill_and_restart().await.unwrap();
    let (status, got) = node
        .control(Method::GET, &format!("/v1/vhosts/{DOMAIN}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{got}");
    assert_eq!(
        (
            got["generation"].as_i64(),
            got["limits"]["max_sessions"].as_i64()
        ),
        (Some(5), Some(10))
    );
    login(&node, "alice", "pass-alice-1", "after-restart")
        .await
        .unwrap();
    assert_eq!(
        put_spec(&node, spec(5, json!({}))).await.1["changed"],
        false
    );
}

#[tokio::test]
async fn a_domain_exported_from_one_node_logs_in_on_another() {
    let a = NodeProcess::start().await.unwrap();
    let b = NodeProcess::start().await.unwrap();
    put_spec(&a, spec(1, json!({}))).await;
    add_account(&a, "alice", "pass-alice-1").await;
    add_account(&a, "bob", "pass-bob-1").await;
    let mut on_a = login(&a, "alice", "pass-alice-1", "a").await.unwrap();
    // Something beyond the account itself: bob's offline message from alice.
    on_a.send(&format!(
        "<message to='bob@{DOMAIN}' type='chat'><body>see you on the other node</body></message>"
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (status, data) = a
        .control(Method::GET, &format!("/v1/vhosts/{DOMAIN}/export"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{data}");
    assert_eq!(data["tables"]["accounts"].as_array().unwrap().len(), 2);
    assert_eq!(
        data["tables"]["offline_messages"].as_array().unwrap().len(),
        1
    );

    // The data needs the vhost there first.
    let (status, body) = b
        .control(
            Method::PUT,
            &format!("/v1/vhosts/{DOMAIN}/data"),
            Some(data.clone()),
        )
        .await
        .unwrap();
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    put_spec(&b, spec(1, json!({}))).await;
    let (status, body) = b
        .control(
            Method::PUT,
            &format!("/v1/vhosts/{DOMAIN}/data"),
            Some(data),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let mut bob = login(&b, "bob", "pass-bob-1", "b").await.unwrap();
    let mut got_it = false;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_secs(5), bob.next_element()).await {
            Ok(Ok(el)) if el.name == "message" => {
                got_it = true;
                break;
            }
            Ok(Ok(_)) => {}
            _ => break,
        }
    }
    assert!(got_it, "bob's offline message moved along");
    login(&b, "alice", "pass-alice-1", "b").await.unwrap();

    // The old node lets go: its sessions end with host-gone, its data is gone.
    let (status, _) = a
        .control(Method::DELETE, &format!("/v1/vhosts/{DOMAIN}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let ended = stream_end(&mut on_a).await;
    assert!(ended.contains("host-gone"), "{ended}");
    let (status, _) = a
        .control(Method::GET, &format!("/v1/vhosts/{DOMAIN}/export"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_frozen_vhost_keeps_its_sessions_refuses_writes_and_stays_frozen_after_a_restart() {
    let mut node = NodeProcess::start().await.unwrap();
    put_spec(&node, spec(1, json!({}))).await;
    add_account(&node, "alice", "pass-alice-1").await;
    add_account(&node, "bob", "pass-bob-1").await;
    let mut alice = login(&node, "alice", "pass-alice-1", "desk").await.unwrap();
    let move_path = format!("/v1/vhosts/{DOMAIN}/move");
    let (status, body) = node
        .control(Method::PUT, &move_path, Some(json!({})))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");

    // The session stays; what it would store bounces with a wait error.
    round_trip(&mut alice, "still-here").await;
    alice
        .send(&format!(
            "<message to='bob@{DOMAIN}' type='chat' id='m1'><body>are you there?</body></message>"
        ))
        .await
        .unwrap();
    let bounce = next_matching(&mut alice, |e| e.name == "message").await;
    let error = bounce.child("error").expect("an error");
    assert_eq!(error.attr("type"), Some("wait"), "{bounce:?}");
    assert!(error.child("resource-constraint").is_some(), "{bounce:?}");
    assert!(
        error
            .child("text")
            .unwrap()
            .text
            .contains("try again in a moment"),
        "{bounce:?}"
    );
    for _ in 0..2 {
        let (status, body) = add_account(&node, "carol", "pass-carol-1").await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::CONFLICT, "vhost_moving")
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("try again in a moment"),
            "{body}"
        );
        // A crash does not thaw it: the freeze is kept in the node's store.
        node.kill_and_restart().await.unwrap();
    }
    let mut alice = login(&node, "alice", "pass-alice-1", "again")
        .await
        .unwrap();

    // Sent on: open sessions and new logins hear where to go.
    let (status, _) = node
        .control(
            Method::PUT,
            &move_path,
            Some(json!({"redirect_to": "node2.example.net:5222"})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let ended = stream_end(&mut alice).await;
    assert!(
        ended.contains("see-other-host") && ended.contains("node2.example.net:5222"),
        "{ended}"
    );

    // Thawed (a move called off): writes and logins go through again.
    let (status, _) = node
        .control(Method::DELETE, &move_path, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = add_account(&node, "carol", "pass-carol-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    login(&node, "carol", "pass-carol-1", "desk").await.unwrap();
}

/// A stand-in for the panel's `POST /api/nodes/join`: answers each request with the next
/// canned `(status line, JSON body)` and hands over what was posted.
async fn fake_panel(
    answers: Vec<(&'static str, Value)>,
) -> (
    String,
    tokio::sync::mpsc::UnboundedReceiver<(String, Value)>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for (status, body) in answers {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    break (i + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let request_line = String::from_utf8_lossy(&buf[..head_end])
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let posted = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
            let _ = tx.send((request_line, posted));
            let text = body.to_string();
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn join_enrolls_the_node_and_starts_its_control_api() {
    let mut node = NodeProcess::start_unenrolled(&[]).await.unwrap();
    assert!(
        node.output().contains("rookery-node join"),
        "an unenrolled node says how to enroll:\n{}",
        node.output()
    );
    let secret = "the-secret-the-panel-issued-0123";
    let (panel, mut posted) = fake_panel(vec![
        (
            "403 Forbidden",
            json!({"code": "invalid_token", "message": "This join token has expired."}),
        ),
        (
            "201 Created",
            json!({"node_id": "node-0192", "secret": secret}),
        ),
    ])
    .await;

    let out = node
        .cli(&["join", &panel, "--token", "old-token"], None)
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("This join token has expired."),
        "{stderr}"
    );
    posted.recv().await.unwrap();

    let out = node
        .cli(
            &[
                "join",
                &format!("{panel}/"),
                "--token",
                "good-token",
                "--label",
                "region=test",
                "--max-sessions",
                "5000",
            ],
            None,
        )
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("node-0192"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (line, request) = posted.recv().await.unwrap();
    assert!(line.starts_with("POST /api/nodes/join "), "{line}");
    assert_eq!(request["token"], "good-token");
    assert_eq!(request["labels"]["region"], "test");
    assert_eq!(request["capacity"]["max_sessions"], 5000);
    assert_eq!(request["c2s_port"], node.c2s_port);
    assert_eq!(request["control_url"], node.control_url());
    let pem = std::fs::read(node.control_cert()).unwrap();
    let der = {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::from_pem_slice(&pem).unwrap()
    };
    let fingerprint = {
        use sha2::Digest;
        hex_lower(&sha2::Sha256::digest(der.as_ref()))
    };
    assert_eq!(
        request["control_cert_sha256"],
        fingerprint.as_str(),
        "the panel can pin it"
    );
    let stored = std::fs::read_to_string(node.data_dir().join("control.json")).unwrap();
    assert!(
        !stored.contains(secret),
        "only the secret's digest is kept: {stored}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.data_dir().join("control.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // The running node notices the credentials and opens its control API.
    node.control_secret = Some(secret.into());
    let mut status = None;
    for _ in 0..50 {
        if let Ok((s, _)) = node.control(Method::GET, "/v1/status", None).await {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(StatusCode::OK), "{}", node.output());
    let (status, _) = node
        .control_as("a-guess", Method::GET, "/v1/status", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
