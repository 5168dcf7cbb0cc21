//! Federation with real XMPP servers written by others, Prosody and ejabberd from Debian's
//! packages (`tests/src/peers.rs`), on loopback: the fixtures are proven by federating
//! with each other, then a Rookery node federates with each. A slixmpp user on each side
//! (`tests/python/peer_federation.py`) subscribes to the other, sees the other's presence
//! and exchanges messages in both directions, over links verified with a test CA.

use std::time::{Duration, Instant};

use rookery_tests::{
    node::NodeProcess,
    peers::{PeerKind, PeerServer, S2sAuth, S2sMap, XmppEndpoint, federation_scenario},
    test_ca::TestCa,
};

/// Bounds each step of the scenario (a login, one stanza crossing the link).
const STEP: Duration = Duration::from_secs(15);
/// How long each peer may take to start.
const STARTUP_BUDGET: Duration = Duration::from_secs(10);
/// Bounds the whole test.
const WHOLE_TEST: Duration = Duration::from_secs(90);

/// Starts both peers with `auth`, runs the scenario between them, and checks in each
/// peer's log that the link coming from the other was authenticated with `auth`.
async fn federate(auth: S2sAuth) {
    let began = Instant::now();
    let ca = TestCa::new("Rookery federation test CA").unwrap();
    let map = S2sMap::new().await.unwrap();
    let (prosody, ejabberd) = tokio::join!(
        PeerServer::prosody("prosody.test", &ca, &map, auth),
        PeerServer::ejabberd("ejabberd.test", &ca, &map, auth),
    );
    let (prosody, ejabberd) = (prosody.unwrap(), ejabberd.unwrap());
    println!(
        "started Prosody in {:?}, ejabberd in {:?}",
        prosody.started_in, ejabberd.started_in
    );
    // CI has a time budget: each takes about 0.2 s and 1.5 s here, when the machine is
    // not busy compiling.
    for peer in [&prosody, &ejabberd] {
        assert!(
            peer.started_in < STARTUP_BUDGET,
            "{:?} took {:?} to start",
            peer.kind,
            peer.started_in
        );
    }
    prosody.register_test_users(&["alice"]).await.unwrap();
    ejabberd.register_test_users(&["bob"]).await.unwrap();

    let scenario_began = Instant::now();
    let out = federation_scenario(&prosody.endpoint(), &ejabberd.endpoint(), STEP).await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}"));
    println!("{out}scenario took {:?}", scenario_began.elapsed());

    // Both directions carried stanzas, so each server accepted a link from the other.
    let line = prosody
        .wait_inbound_s2s_auth("ejabberd.test", auth, Duration::from_secs(5))
        .await
        .unwrap();
    println!("Prosody: {line}");
    let line = ejabberd
        .wait_inbound_s2s_auth("prosody.test", auth, Duration::from_secs(5))
        .await
        .unwrap();
    println!("ejabberd: {line}");
    // And no link was authenticated the other way.
    let other = match auth {
        S2sAuth::Certificates => S2sAuth::Dialback,
        S2sAuth::Dialback => S2sAuth::Certificates,
    };
    assert_eq!(prosody.inbound_s2s_auth_line("ejabberd.test", other), None);
    assert_eq!(ejabberd.inbound_s2s_auth_line("prosody.test", other), None);
    // ejabberd's own account of its links, through its admin API.
    let incoming = ejabberd
        .ejabberd_api("incoming_s2s_number", serde_json::json!({}))
        .await
        .unwrap();
    let outgoing = ejabberd
        .ejabberd_api("outgoing_s2s_number", serde_json::json!({}))
        .await
        .unwrap();
    println!("ejabberd s2s links: {incoming}, {outgoing}");
    // Its answers are {"s2s_incoming": n} and {"s2s_outgoing": n}.
    assert!(incoming["s2s_incoming"].as_i64() >= Some(1), "{incoming}");
    assert!(outgoing["s2s_outgoing"].as_i64() >= Some(1), "{outgoing}");
    println!("the test took {:?}", began.elapsed());
}

#[tokio::test]
async fn prosody_and_ejabberd_federate_over_verified_tls() {
    tokio::time::timeout(WHOLE_TEST, federate(S2sAuth::Certificates))
        .await
        .expect("the test did not finish in time");
}

#[tokio::test]
async fn prosody_and_ejabberd_federate_with_dialback_when_certificates_do_not_verify() {
    tokio::time::timeout(WHOLE_TEST, federate(S2sAuth::Dialback))
        .await
        .expect("the test did not finish in time");
}

// ---------------------------------------------------------------------------------------
// A Rookery node and each peer.

/// The Rookery vhost of the tests below.
const ROOKERY_DOMAIN: &str = "rookery.test";

/// A Rookery node hosting `rookery.test` (a certificate from the test CA, which it also
/// trusts for s2s) and a `kind` peer that trusts the same CA and takes only certificates
/// (SASL EXTERNAL, no dialback): alice on the node and bob on the peer subscribe to each
/// other, see each other's presence and exchange messages; each server's record shows the
/// other's link authenticated by certificate.
async fn rookery_federates_with(kind: PeerKind, peer_domain: &str) {
    let began = Instant::now();
    let ca = TestCa::new("Rookery federation test CA").unwrap();
    let map = S2sMap::new().await.unwrap();
    let peer = PeerServer::start(kind, peer_domain, &ca, &map, S2sAuth::Certificates)
        .await
        .unwrap();
    peer.register_test_users(&["bob"]).await.unwrap();
    // The node finds the peer through its static host map, the peer the node through
    // the test's map (added as soon as the node's port is known, before any stanza).
    let hosts = map
        .entries()
        .iter()
        .map(|(domain, port)| format!("{domain}=127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let node = NodeProcess::start_with_env(&[
        ("ROOKERY_NODE_S2S_HOSTS", &hosts),
        ("ROOKERY_NODE_S2S_CA_FILE", peer.ca_file.to_str().unwrap()),
    ])
    .await
    .unwrap();
    map.add(ROOKERY_DOMAIN, node.s2s_port).unwrap();
    let cert = ca.issue(&[ROOKERY_DOMAIN]).unwrap();
    let spec = serde_json::json!({
        "domain": ROOKERY_DOMAIN,
        "generation": 1,
        "tls": {"cert_pem": cert.chain_pem, "key_pem": cert.key_pem},
    });
    let (status, body) = node
        .control(
            reqwest::Method::PUT,
            &format!("/v1/vhosts/{ROOKERY_DOMAIN}"),
            Some(spec),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    let (status, body) = node
        .control(
            reqwest::Method::POST,
            &format!("/v1/vhosts/{ROOKERY_DOMAIN}/accounts"),
            Some(serde_json::json!({"username": "alice", "password": "pass-alice-1"})),
        )
        .await
        .unwrap();
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");

    let rookery = XmppEndpoint {
        host: "127.0.0.1".into(),
        port: node.c2s_port,
        domain: ROOKERY_DOMAIN.into(),
        ca_file: peer.ca_file.clone(),
    };
    let out = federation_scenario(&rookery, &peer.endpoint(), STEP).await;
    let out = out.unwrap_or_else(|e| panic!("{e:#}\n--- node ---\n{}", node.output()));
    println!("{out}");
    // The peer took the node's link on its certificate (it offers nothing else) ...
    let line = peer
        .wait_inbound_s2s_auth(
            ROOKERY_DOMAIN,
            S2sAuth::Certificates,
            Duration::from_secs(5),
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n--- node ---\n{}", node.output()));
    println!("{kind:?}: {line}");
    // ... and the node took the peer's the same way.
    let metrics = node.metrics().await.unwrap();
    let external = metrics
        .lines()
        .find(|l| {
            l.starts_with("rookery_node_s2s_authenticated_total")
                && l.contains("method=\"certificate\"")
        })
        .unwrap_or_else(|| panic!("no SASL EXTERNAL peer in the node's metrics:\n{metrics}"));
    println!("node: {external}");
    assert!(began.elapsed() < WHOLE_TEST, "took {:?}", began.elapsed());
}

#[tokio::test]
async fn a_rookery_node_and_prosody_federate_over_verified_tls() {
    rookery_federates_with(PeerKind::Prosody, "prosody.test").await;
}

#[tokio::test]
async fn a_rookery_node_and_ejabberd_federate_over_verified_tls() {
    rookery_federates_with(PeerKind::Ejabberd, "ejabberd.test").await;
}
