//! Federation between real XMPP servers written by others, Prosody and ejabberd from
//! Debian's packages (`tests/src/peers.rs`), on loopback: the fixtures that Rookery's own
//! federation tests pair a node with, proven by federating with each other first. A
//! slixmpp user on each side (`tests/python/peer_federation.py`) subscribes to the other,
//! sees the other's presence and exchanges messages in both directions.

use std::time::{Duration, Instant};

use rookery_tests::{
    peers::{PeerServer, S2sAuth, S2sMap, federation_scenario},
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
