//! Rosters and presence subscriptions (RFC 6121, XEP-0237) on a real node, driven by
//! slixmpp (Python, written by others): `tests/python/roster_scenario.py`.

use std::time::Duration;

use rookery_tests::node::{NodeProcess, run_python};

const DOMAIN: &str = "roster.test";

#[tokio::test]
async fn rosters_and_subscriptions_work_with_slixmpp_and_persist() {
    let mut node = NodeProcess::start().await.unwrap();
    node.provision(
        DOMAIN,
        &[
            ("alice", "pass-alice-1"),
            ("bob", "pass-bob-1"),
            ("carol", "pass-carol-1"),
        ],
    )
    .await
    .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let cert = node.cert_of(DOMAIN);
    let out = run_python(
        "roster_scenario.py",
        &[
            "127.0.0.1",
            &node.c2s_port.to_string(),
            DOMAIN,
            cert.to_str().unwrap(),
        ],
        Duration::from_secs(240),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Shown with --no-capture: the scenario's steps.
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the slixmpp roster scenario failed:\n{stdout}\n--- stderr ---\n{}\n--- node ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.output()
    );
    for step in [
        "ok alice's roster says both",
        "ok bob's roster survived the reconnection: alice, both",
        "ok a roster get with the current version gets an empty result",
        "ok bob receives carol's request at login",
        "ok alice's request is approved by the server at once",
        "ok bob hears carol went offline, though not subscribed",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }

    // Everything above is in the store: a restarted node gives every account the same
    // roster, version and waiting requests.
    let before = snapshot(&node).await;
    assert!(
        before.contains(&format!("roster alice@{DOMAIN}")),
        "{before}"
    );
    assert!(
        before.contains("\"name\": \"Bobby\", \"subscription\": \"from\""),
        "{before}"
    );
    node.kill_and_restart().await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let after = snapshot(&node).await;
    assert_eq!(before, after, "the rosters changed across a node restart");
}

/// Each account's roster and waiting requests, as `roster_scenario.py snapshot` prints them.
async fn snapshot(node: &NodeProcess) -> String {
    let cert = node.cert_of(DOMAIN);
    let out = run_python(
        "roster_scenario.py",
        &[
            "127.0.0.1",
            &node.c2s_port.to_string(),
            DOMAIN,
            cert.to_str().unwrap(),
            "snapshot",
        ],
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the roster snapshot failed:\n{stdout}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with("roster ") || l.starts_with("waiting "))
        .collect::<Vec<_>>()
        .join("\n")
}
