//! XEP-0352 client state indication on a real node, driven by slixmpp's `xep_0352` plugin
//! (Python, written by others): `tests/python/csi_scenario.py`. An inactive client is not
//! woken by presence and chat states; a message with a body goes at once, after them.

use std::time::Duration;

use rookery_tests::node::{NodeProcess, run_python};

#[tokio::test]
async fn an_inactive_client_gets_presence_and_chat_states_only_with_the_next_message() {
    let domain = "csi.test";
    let node = NodeProcess::start().await.unwrap();
    node.provision(domain, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(domain).await.unwrap();
    let cert = node.cert_of(domain);
    let out = run_python(
        "csi_scenario.py",
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the slixmpp CSI scenario failed:\n{stdout}\n--- stderr ---\n{}\n--- node ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.output()
    );
    for step in [
        "ok the server offers client state indication",
        "ok while inactive, presence and chat states wait",
        "ok a message with a body goes at once",
        "ok after the newest held presence and the chat state, in order",
        "ok inactive, a new presence waits again",
        "ok becoming active sends what was held",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}
