//! The availability probe (`rookery::probe`) against a real node process: a full login
//! that passes every stage, and each way it fails (wrong password, closed port, a
//! certificate we do not trust, a server that never speaks).

use std::time::Duration;

use rookery::probe::{ProbeResult, ProbeTarget, Stage, probe, tls_config_with_roots};
use rookery_tests::{node::NodeProcess, process::free_loopback_port};

const DOMAIN: &str = "probe.rookery.test";
const USER: &str = "rookery-probe";
const PASSWORD: &str = "probe-password-1";

async fn provisioned_node() -> NodeProcess {
    let node = NodeProcess::start().await.unwrap();
    node.provision(DOMAIN, &[(USER, PASSWORD)]).await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    node
}

/// A target on the node's c2s port that trusts exactly the vhost's self-signed certificate.
fn target(node: &NodeProcess, password: &str) -> ProbeTarget {
    ProbeTarget {
        host: "127.0.0.1".into(),
        port: node.c2s_port,
        domain: DOMAIN.into(),
        username: USER.into(),
        password: password.into(),
        tls: tls_config_with_roots(&[node.cert_of(DOMAIN)]).unwrap(),
    }
}

fn completed(result: &ProbeResult) -> Vec<Stage> {
    result.stages.iter().map(|(stage, _)| *stage).collect()
}

#[tokio::test]
async fn a_probe_of_a_healthy_domain_passes_all_six_stages() {
    let node = provisioned_node().await;
    let result = probe(&target(&node, PASSWORD), Duration::from_secs(10)).await;
    assert!(result.ok, "{result:?}\n--- node ---\n{}", node.output());
    assert_eq!(result.failed_stage, None);
    assert_eq!(result.error, None);
    assert_eq!(completed(&result), Stage::ALL);
    assert!(result.stages.iter().all(|(_, d)| *d > Duration::ZERO));
    let sum: Duration = result.stages.iter().map(|(_, d)| *d).sum();
    assert!(result.total >= sum, "{result:?}");

    // Probes are repeatable: a second one (a fresh resource, a full handshake) passes too.
    let again = probe(&target(&node, PASSWORD), Duration::from_secs(10)).await;
    assert!(again.ok, "{again:?}");
}

#[tokio::test]
async fn a_wrong_password_fails_at_auth_with_not_authorized() {
    let node = provisioned_node().await;
    let result = probe(&target(&node, "not-the-password"), Duration::from_secs(15)).await;
    assert!(!result.ok);
    assert_eq!(result.failed_stage, Some(Stage::Auth), "{result:?}");
    assert_eq!(result.during, Some(Stage::Auth));
    assert_eq!(result.error.as_deref(), Some("not-authorized"));
    assert_eq!(completed(&result), [Stage::Connect, Stage::Tls]);
}

#[tokio::test]
async fn a_closed_port_fails_at_connect() {
    let port = free_loopback_port().unwrap();
    let target = ProbeTarget {
        host: "127.0.0.1".into(),
        port,
        domain: DOMAIN.into(),
        username: USER.into(),
        password: PASSWORD.into(),
        tls: rookery::probe::tls_config_webpki(),
    };
    let result = probe(&target, Duration::from_secs(5)).await;
    assert_eq!(result.failed_stage, Some(Stage::Connect), "{result:?}");
    assert!(
        result
            .error
            .as_deref()
            .unwrap()
            .starts_with(&format!("cannot connect to 127.0.0.1:{port}")),
        "{result:?}"
    );
    assert!(result.stages.is_empty());
}

#[tokio::test]
async fn a_certificate_we_do_not_trust_fails_at_tls() {
    let node = provisioned_node().await;
    // The node's control API certificate: real, self-signed, but not the vhost's.
    let target = ProbeTarget {
        tls: tls_config_with_roots(&[node.control_cert()]).unwrap(),
        ..target(&node, PASSWORD)
    };
    let result = probe(&target, Duration::from_secs(10)).await;
    assert_eq!(result.failed_stage, Some(Stage::Tls), "{result:?}");
    let error = result.error.clone().unwrap();
    assert!(error.starts_with("TLS handshake failed"), "{error}");
    assert!(error.contains("certificate"), "{error}");
    assert_eq!(completed(&result), [Stage::Connect]);
}

#[tokio::test]
async fn a_server_that_never_speaks_times_out_during_tls() {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds connections, and says nothing.
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let target = ProbeTarget {
        host: "127.0.0.1".into(),
        port,
        domain: DOMAIN.into(),
        username: USER.into(),
        password: PASSWORD.into(),
        tls: rookery::probe::tls_config_webpki(),
    };
    let started = std::time::Instant::now();
    let result = probe(&target, Duration::from_millis(300)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(result.failed_stage, Some(Stage::Timeout), "{result:?}");
    assert_eq!(result.during, Some(Stage::Tls));
    assert_eq!(
        result.error.as_deref(),
        Some("no completed STARTTLS and TLS handshake within 300 ms")
    );
    assert_eq!(completed(&result), [Stage::Connect]);
    silent.abort();
}
