//! The XMPP node as a real process, driven by real clients: slixmpp (Python, written by
//! others) for the protocol, raw sockets for hostile input.

use std::time::Duration;

use rookery_tests::node::{NodeProcess, run_python};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const DOMAIN: &str = "rookery.test";

async fn provisioned_node() -> NodeProcess {
    let node = NodeProcess::start().await.unwrap();
    node.provision(DOMAIN, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    node
}

#[tokio::test]
async fn two_users_log_in_with_slixmpp_and_exchange_messages() {
    let node = provisioned_node().await;
    // The runtime debug switch: this vhost's stanzas go to the log, credentials redacted.
    let out = node
        .cli(&["vhost", "debug", DOMAIN, "on"], None)
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cert = node.cert_of(DOMAIN);
    let out = run_python(
        "c2s_scenario.py",
        &[
            "127.0.0.1",
            &node.c2s_port.to_string(),
            DOMAIN,
            cert.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the slixmpp scenario failed:\n{stdout}\n--- stderr ---\n{}\n--- node ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.output()
    );
    assert!(
        stdout
            .contains("ok bob gets alice's message with unicode and XML-special characters intact"),
        "{stdout}"
    );
    let metrics = node.metrics().await.unwrap();
    for line in [
        "rookery_node_auth_total{outcome=\"success\"}",
        "rookery_node_auth_total{outcome=\"failure\"}",
        "rookery_node_stanzas_routed_total",
        "rookery_node_delivery_queue 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let log = node.output();
    assert!(
        log.contains("stanza log") && log.contains("while you were away"),
        "the stanza log shows messages:\n{log}"
    );
    assert!(
        log.contains(">[redacted]</auth>"),
        "SASL payloads are redacted:\n{log}"
    );
    assert!(
        !log.contains("cGFzcy1hbGljZS0x"),
        "no password in any form:\n{log}"
    );
}

/// Opens a plain c2s stream to the node and reads its header and features.
async fn open_stream(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>").as_bytes())
        .await
        .unwrap();
    let got = read_until(&mut s, "</stream:features>").await;
    assert!(got.contains("<starttls"), "{got}");
    s
}

/// Reads until `marker` appears or the peer closes (bounded by 20 s).
async fn read_until(s: &mut TcpStream, marker: &str) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = String::from_utf8_lossy(&all).to_string();
        if text.contains(marker) {
            return text;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return text,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends `data` in chunks until the node stops reading, then returns what it answered.
async fn attack(port: u16, prologue: &str, body: impl Iterator<Item = Vec<u8>>) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = s.write_all(prologue.as_bytes()).await;
    for chunk in body {
        if s.write_all(&chunk).await.is_err() {
            break;
        }
    }
    read_until(&mut s, "</stream:stream>").await
}

#[tokio::test]
async fn hostile_xml_closes_only_its_own_stream() {
    let node = provisioned_node().await;
    let port = node.c2s_port;
    let mut bystander = open_stream(port).await;
    // And a logged-in pair (slixmpp) that must go on chatting afterwards.
    let go = node.data_dir().join("go");
    let cert = node.cert_of(DOMAIN);
    let args = [
        port.to_string(),
        cert.display().to_string(),
        go.display().to_string(),
    ];
    let pair = tokio::spawn(async move {
        let [port, cert, go] = &args;
        run_python(
            "bystander.py",
            &["127.0.0.1", port, DOMAIN, cert, go],
            Duration::from_secs(120),
        )
        .await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    let header = format!(
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
    );

    let laughs = "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\"><!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;\">]><lolz>&lol3;</lolz>";
    let answer = attack(port, laughs, std::iter::empty()).await;
    assert!(
        answer.contains("restricted-xml"),
        "billion laughs: {answer}"
    );

    let big = std::iter::once(b"<message to='bob@rookery.test'><body>".to_vec())
        .chain((0..160).map(|_| vec![b'a'; 64 * 1024]));
    let answer = attack(port, &header, big).await;
    assert!(
        answer.contains("policy-violation"),
        "10 MiB stanza: {answer}"
    );

    let deep = (0..10).map(|_| "<a>".repeat(1000).into_bytes());
    let answer = attack(port, &header, deep).await;
    assert!(
        answer.contains("policy-violation"),
        "10,000-deep nesting: {answer}"
    );

    // The stream that behaved is still served.
    bystander
        .write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        .await
        .unwrap();
    let got = read_until(&mut bystander, "<proceed").await;
    assert!(got.contains("<proceed"), "the bystander stream: {got}");
    std::fs::write(&go, b"go").unwrap();
    let out = pair.await.unwrap().unwrap();
    assert!(
        out.status.success(),
        "the logged-in pair: {}\n{}\n--- node ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.output()
    );
}

#[tokio::test]
async fn the_cli_manages_vhosts_and_users_and_explains_mistakes() {
    let node = NodeProcess::start().await.unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let out = node
        .cli(&["vhost", "add", "Example.COM"], None)
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = node
        .cli(&["vhost", "add", "example.com"], None)
        .await
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("already exists"),
        "{}",
        text(&out)
    );
    let out = node
        .cli(&["vhost", "add", "not a domain"], None)
        .await
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("not a valid domain"),
        "{}",
        text(&out)
    );

    let out = node
        .cli(
            &["user", "add", "Juliet@example.com"],
            Some("balcony-scene-42\n"),
        )
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = node
        .cli(
            &["user", "add", "romeo@nowhere.example"],
            Some("x-password-1\n"),
        )
        .await
        .unwrap();
    assert!(
        !out.status.success() && text(&out).contains("no virtual host nowhere.example"),
        "{}",
        text(&out)
    );
    let out = node
        .cli(&["user", "list", "example.com"], None)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "juliet@example.com"
    );
    let out = node
        .cli(
            &["user", "passwd", "juliet@example.com"],
            Some("a-new-password-7\n"),
        )
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = node
        .cli(&["user", "del", "juliet@example.com"], None)
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = node
        .cli(&["vhost", "del", "example.com"], None)
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let out = node.cli(&["vhost", "list"], None).await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "");
}

#[tokio::test]
async fn vcards_blocking_and_last_activity_work_with_slixmpp() {
    let node = NodeProcess::start().await.unwrap();
    let domain = "profiles.test";
    node.provision(
        domain,
        &[("carol", "pass-carol-1"), ("dave", "pass-dave-1")],
    )
    .await
    .unwrap();
    node.wait_for_vhost(domain).await.unwrap();
    let cert = node.cert_of(domain);
    let out = run_python(
        "profile_scenario.py",
        &[
            "127.0.0.1",
            &node.c2s_port.to_string(),
            domain,
            cert.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "the slixmpp profile scenario failed:\n{}\n--- stderr ---\n{}\n--- node ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node.output()
    );
}

#[tokio::test]
async fn a_client_that_does_not_authenticate_in_time_is_disconnected() {
    let node = NodeProcess::start_with_env(&[("ROOKERY_NODE_LIMITS__PRE_AUTH_TIMEOUT_SECS", "1")])
        .await
        .unwrap();
    node.provision(DOMAIN, &[]).await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let mut s = open_stream(node.c2s_port).await;
    let got = read_until(&mut s, "</stream:stream>").await;
    assert!(got.contains("<connection-timeout"), "{got}");
}

#[tokio::test]
async fn connections_per_address_are_limited() {
    let node = NodeProcess::start_with_env(&[("ROOKERY_NODE_LIMITS__MAX_CONNECTIONS_PER_IP", "2")])
        .await
        .unwrap();
    node.provision(DOMAIN, &[]).await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let first = open_stream(node.c2s_port).await;
    let _second = open_stream(node.c2s_port).await;
    let mut third = TcpStream::connect(("127.0.0.1", node.c2s_port))
        .await
        .unwrap();
    let _ = third.write_all(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='rookery.test' version='1.0'>").await;
    let got = read_until(&mut third, "<stream:features>").await;
    assert!(
        !got.contains("<stream:features>"),
        "a third connection from the same address is refused: {got}"
    );
    // A slot frees up when a connection ends.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _again = open_stream(node.c2s_port).await;
}

/// Opens a stream from a chosen loopback source address (all of 127/8 is loopback), so
/// the per-address limit does not hide the total one. None: the node did not answer.
async fn stream_from(source: [u8; 4], port: u16) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .unwrap();
    let mut s = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let _ = s.write_all(format!("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>").as_bytes()).await;
    let got = read_until(&mut s, "</stream:features>").await;
    got.contains("<starttls").then_some(s)
}

#[tokio::test]
async fn connections_in_total_are_limited_across_addresses() {
    let node = NodeProcess::start_with_env(&[
        ("ROOKERY_NODE_LIMITS__MAX_CONNECTIONS", "3"),
        ("ROOKERY_NODE_LIMITS__MAX_CONNECTIONS_PER_IP", "2"),
    ])
    .await
    .unwrap();
    node.provision(DOMAIN, &[]).await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let a = stream_from([127, 0, 0, 2], node.c2s_port)
        .await
        .expect("first");
    let _b = stream_from([127, 0, 0, 3], node.c2s_port)
        .await
        .expect("second");
    let _c = stream_from([127, 0, 0, 4], node.c2s_port)
        .await
        .expect("third");
    assert!(
        stream_from([127, 0, 0, 5], node.c2s_port).await.is_none(),
        "a fourth connection is refused although its address has none open"
    );
    assert!(
        node.output().contains("connection limit"),
        "the refusal is logged"
    );
    drop(a);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stream_from([127, 0, 0, 5], node.c2s_port).await.is_some(),
        "a freed slot is reused"
    );
}

#[tokio::test]
async fn a_removed_vhost_stops_being_served_without_a_restart() {
    let node = provisioned_node().await;
    let out = node.cli(&["vhost", "del", DOMAIN], None).await.unwrap();
    assert!(out.status.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut s = TcpStream::connect(("127.0.0.1", node.c2s_port))
        .await
        .unwrap();
    s.write_all(format!("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>").as_bytes()).await.unwrap();
    let got = read_until(&mut s, "</stream:stream>").await;
    assert!(got.contains("<host-unknown"), "{got}");
}

/// Logs `user` in with the test XMPP client (STARTTLS, SCRAM-SHA-256, bind).
async fn xmpp_login(
    node: &NodeProcess,
    user: &str,
    password: &str,
    resource: &str,
) -> rookery_tests::xmpp::client::Session {
    use rookery_tests::xmpp::client::{Account, LoginConfig, SaltCache, Session, tls_connector};
    let cfg = LoginConfig {
        addr: format!("127.0.0.1:{}", node.c2s_port).parse().unwrap(),
        domain: DOMAIN.into(),
        tls: tls_connector(&node.cert_of(DOMAIN)).unwrap(),
        keys: std::sync::Arc::new(SaltCache::default()),
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
    .unwrap()
}

#[tokio::test]
async fn idle_sessions_are_pinged_and_silent_ones_disconnected() {
    let node = NodeProcess::start_with_env(&[
        ("ROOKERY_NODE_LIMITS__IDLE_PING_SECS", "1"),
        ("ROOKERY_NODE_LIMITS__PING_TIMEOUT_SECS", "2"),
    ])
    .await
    .unwrap();
    node.provision(DOMAIN, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let mut answering = xmpp_login(&node, "alice", "pass-alice-1", "answers").await;
    let mut silent = xmpp_login(&node, "bob", "pass-bob-1", "silent").await;

    // Both are pinged once idle; alice answers every ping for a while.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    let mut pings = 0;
    while tokio::time::Instant::now() < deadline {
        let Ok(Ok(el)) =
            tokio::time::timeout(Duration::from_millis(500), answering.next_element()).await
        else {
            continue;
        };
        if el.name == "iq"
            && el.attr("type") == Some("get")
            && el.children.iter().any(|c| c.name == "ping")
        {
            pings += 1;
            let id = el.attr("id").unwrap_or_default().to_string();
            answering
                .send(&format!("<iq type='result' id='{id}' to='{DOMAIN}'/>"))
                .await
                .unwrap();
        }
    }
    assert!(pings >= 2, "alice was pinged {pings} times in 6 s");

    // Bob never answered: by now the node has given up on him.
    let mut saw_ping = false;
    let mut closed_with = None;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(2), silent.next_element()).await {
            Ok(Ok(el)) if el.name == "iq" => saw_ping = true,
            Ok(Ok(_)) => {}
            // The client library reports a stream error as an error naming the element.
            Ok(Err(e)) => {
                closed_with = Some(format!("{e:#}"));
                break;
            }
            Err(_) => break,
        }
    }
    assert!(saw_ping, "bob was pinged too");
    let closed_with = closed_with.unwrap_or_default();
    assert!(
        closed_with.contains("connection-timeout"),
        "bob's stream ended with: {closed_with}"
    );

    // Alice is still there: a message to her arrives.
    let mut carol = xmpp_login(&node, "bob", "pass-bob-1", "again").await;
    carol
        .send(&format!(
            "<message to='alice@{DOMAIN}/answers' type='chat'><body>still up?</body></message>"
        ))
        .await
        .unwrap();
    let mut got = false;
    for _ in 0..20 {
        match tokio::time::timeout(Duration::from_secs(2), answering.next_element()).await {
            Ok(Ok(el)) if el.name == "message" => {
                got = true;
                break;
            }
            Ok(Ok(el)) if el.name == "iq" => {
                let id = el.attr("id").unwrap_or_default().to_string();
                answering
                    .send(&format!("<iq type='result' id='{id}' to='{DOMAIN}'/>"))
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
    assert!(got, "the answering session still receives messages");
}

#[tokio::test]
async fn a_session_sending_too_fast_is_slowed_to_its_stanza_rate() {
    let node = NodeProcess::start_with_env(&[("ROOKERY_NODE_LIMITS__STANZAS_PER_SECOND", "10")])
        .await
        .unwrap();
    node.provision(DOMAIN, &[("alice", "pass-alice-1")])
        .await
        .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let mut s = xmpp_login(&node, "alice", "pass-alice-1", "fast").await;
    // 10 per second with a burst of 20: 50 pings take at least (50 - 20) / 10 = 3 s to be
    // answered, however fast the machine. (Only a lower bound: a slow machine is slower.)
    let started = std::time::Instant::now();
    let mut burst = String::new();
    for i in 0..50 {
        burst.push_str(&format!(
            "<iq type='get' id='p{i}' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ));
    }
    s.send(&burst).await.unwrap();
    let mut answered = 0;
    while answered < 50 {
        let el = tokio::time::timeout(Duration::from_secs(30), s.next_element())
            .await
            .unwrap()
            .unwrap();
        if el.name == "iq" && el.attr("type") == Some("result") {
            answered += 1;
        }
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2800),
        "50 stanzas at 10/s (burst 20) were all handled in {took:?}"
    );
}
