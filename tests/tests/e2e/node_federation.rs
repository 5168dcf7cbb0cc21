//! Federation between two Rookery nodes (issue 10): each hosts one domain with a
//! certificate from a CA the test makes, each finds the other through its static host
//! map (`ROOKERY_NODE_S2S_HOSTS`) and trusts the CA (`ROOKERY_NODE_S2S_CA_FILE`), so the
//! links are TLS-verified both ways and authenticated with SASL EXTERNAL. slixmpp users on
//! each side (`tests/python/federation_scenario.py`) subscribe to each other, see each
//! other's presence and exchange messages; then one vhost's spec turns federation off and
//! messages both ways come back as errors.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use rookery_tests::{
    node::{NodeProcess, run_python},
    process::free_loopback_port,
    test_ca::{IssuedCert, TestCa},
};
use serde_json::{Value, json};

const A: &str = "a.test";
const B: &str = "b.test";

/// Applies a spec for `domain` with its certificate and `features`.
async fn put_spec(
    node: &NodeProcess,
    domain: &str,
    generation: i64,
    cert: &IssuedCert,
    features: Value,
) {
    let spec = json!({
        "domain": domain,
        "generation": generation,
        "features": features,
        "tls": {"cert_pem": cert.chain_pem, "key_pem": cert.key_pem},
    });
    let (status, body) = node
        .control(Method::PUT, &format!("/v1/vhosts/{domain}"), Some(spec))
        .await
        .unwrap();
    assert!(status.is_success(), "PUT {domain}: {status} {body}");
}

async fn add_account(node: &NodeProcess, domain: &str, user: &str) {
    let (status, body) = node
        .control(
            Method::POST,
            &format!("/v1/vhosts/{domain}/accounts"),
            Some(json!({"username": user, "password": format!("pass-{user}-1")})),
        )
        .await
        .unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// Runs the scenario's `phase` between alice@a.test on `a` and bob@`domain_b` on `b`;
/// what it printed. Every `steps` must be "ok".
async fn scenario(
    a: &NodeProcess,
    b: &NodeProcess,
    domain_b: &str,
    ca: &std::path::Path,
    phase: &str,
    steps: &[&str],
) -> String {
    let (port_a, port_b) = (a.c2s_port.to_string(), b.c2s_port.to_string());
    let out = run_python(
        "federation_scenario.py",
        &[
            "127.0.0.1",
            &port_a,
            A,
            ca.to_str().unwrap(),
            &port_b,
            domain_b,
            phase,
        ],
        Duration::from_secs(240),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the federation scenario ({phase}) failed:\n{stdout}\n--- stderr ---\n{}\n--- node {A} ---\n{}\n--- node {domain_b} ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        a.output(),
        b.output()
    );
    for step in steps {
        assert!(
            stdout.contains(&format!("ok {step}")),
            "missing {step:?} in:\n{stdout}"
        );
    }
    stdout
}

#[tokio::test]
async fn two_nodes_federate_over_verified_links_and_policy_refuses() {
    let ca = TestCa::new("Rookery federation test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write_cert(&ca_file).unwrap();
    let ca_path = ca_file.to_str().unwrap();
    // B's server-to-server port is chosen first, so that A can be told where B is.
    let s2s_b = free_loopback_port().unwrap();
    let a = NodeProcess::start_with_env(&[
        ("ROOKERY_NODE_S2S_HOSTS", &format!("{B}=127.0.0.1:{s2s_b}")),
        ("ROOKERY_NODE_S2S_CA_FILE", ca_path),
    ])
    .await
    .unwrap();
    let b = NodeProcess::start_with_env(&[
        ("ROOKERY_NODE_S2S_LISTEN", &format!("127.0.0.1:{s2s_b}")),
        (
            "ROOKERY_NODE_S2S_HOSTS",
            &format!("{A}=127.0.0.1:{}", a.s2s_port),
        ),
        ("ROOKERY_NODE_S2S_CA_FILE", ca_path),
    ])
    .await
    .unwrap();
    let cert_a = ca.issue(&[A]).unwrap();
    let cert_b = ca.issue(&[B]).unwrap();
    put_spec(&a, A, 1, &cert_a, json!({})).await;
    put_spec(&b, B, 1, &cert_b, json!({})).await;
    add_account(&a, A, "alice").await;
    add_account(&b, B, "bob").await;

    scenario(
        &a,
        &b,
        B,
        &ca_file,
        "exchange",
        &[
            "bob receives alice's subscription request across servers",
            "alice receives bob's approval",
            "alice sees bob online",
            "bob sees alice online",
            "bob receives alice's message",
            "alice receives bob's message",
            "alice's roster says both for bob",
            "the second login hears bob is online (probe answered across servers)",
            "alice sees bob go offline",
        ],
    )
    .await;
    // The links were verified: certificates (SASL EXTERNAL), no dialback, both ways.
    for (node, name) in [(&a, A), (&b, B)] {
        let metrics = node.metrics().await.unwrap();
        for line in [
            "rookery_node_s2s_stanzas_total{direction=\"in\"}",
            "rookery_node_s2s_stanzas_total{direction=\"out\"}",
            "rookery_node_s2s_authenticated_total{method=\"certificate\"}",
        ] {
            assert!(
                metrics.contains(line),
                "{name} has no {line} in:\n{metrics}"
            );
        }
        assert!(
            !metrics.contains("method=\"dialback\""),
            "{name} fell back to dialback:\n{metrics}"
        );
    }

    // A switches federation off: nothing passes either way, and each sender hears so.
    put_spec(&a, A, 2, &cert_a, json!({"federation": false})).await;
    let out = scenario(
        &a,
        &b,
        B,
        &ca_file,
        "refused",
        &[
            "alice's message to bob comes back as an error",
            "bob's message to alice comes back as an error",
            "alice received nothing from bob",
        ],
    )
    .await;
    assert!(
        out.contains("alice's error: not-allowed"),
        "the sender's own server refuses with not-allowed:\n{out}"
    );
}

/// A node that does not trust the other's CA cannot verify its certificate: the streams
/// the other node opens to it are authenticated with dialback (a check over a stream back
/// to the other node), and messages still cross both ways.
#[tokio::test]
async fn a_node_that_does_not_trust_the_peers_ca_federates_with_dialback() {
    const C: &str = "c.test";
    let ca = TestCa::new("Rookery federation test CA").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    ca.write_cert(&ca_file).unwrap();
    let s2s_c = free_loopback_port().unwrap();
    let a = NodeProcess::start_with_env(&[
        ("ROOKERY_NODE_S2S_HOSTS", &format!("{C}=127.0.0.1:{s2s_c}")),
        ("ROOKERY_NODE_S2S_CA_FILE", ca_file.to_str().unwrap()),
    ])
    .await
    .unwrap();
    // No CA for C: A's certificate proves nothing to it.
    let c = NodeProcess::start_with_env(&[
        ("ROOKERY_NODE_S2S_LISTEN", &format!("127.0.0.1:{s2s_c}")),
        (
            "ROOKERY_NODE_S2S_HOSTS",
            &format!("{A}=127.0.0.1:{}", a.s2s_port),
        ),
    ])
    .await
    .unwrap();
    put_spec(&a, A, 1, &ca.issue(&[A]).unwrap(), json!({})).await;
    put_spec(&c, C, 1, &ca.issue(&[C]).unwrap(), json!({})).await;
    add_account(&a, A, "alice").await;
    add_account(&c, C, "bob").await;
    scenario(
        &a,
        &c,
        C,
        &ca_file,
        "messages",
        &[
            "bob receives alice's message",
            "alice receives bob's message",
        ],
    )
    .await;
    let at_c = c.metrics().await.unwrap();
    assert!(
        at_c.contains("rookery_node_s2s_authenticated_total{method=\"dialback\"}"),
        "{at_c}"
    );
    let at_a = a.metrics().await.unwrap();
    assert!(
        at_a.contains("rookery_node_s2s_authenticated_total{method=\"certificate\"}"),
        "C's certificate verifies at A:\n{at_a}"
    );
}
