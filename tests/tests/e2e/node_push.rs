//! XEP-0357 push notifications on a real node: slixmpp clients (Python, written by others)
//! and a fake app server logged in as a local account (`tests/python/push_scenario.py`).
//! A detached (resumable) session and an offline account are woken, without the message's
//! text; an online one is not; a disabled registration gets nothing.

use std::time::Duration;

use rookery_tests::node::{NodeProcess, run_python};

#[tokio::test]
async fn detached_and_offline_accounts_are_woken_through_their_app_server() {
    let domain = "push.test";
    let node = NodeProcess::start().await.unwrap();
    node.provision(
        domain,
        &[
            ("alice", "pass-alice-1"),
            ("bob", "pass-bob-1"),
            ("app", "pass-app-1"),
        ],
    )
    .await
    .unwrap();
    node.wait_for_vhost(domain).await.unwrap();
    let cert = node.cert_of(domain);
    let out = run_python(
        "push_scenario.py",
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
        "the slixmpp push scenario failed:\n{stdout}\n--- stderr ---\n{}\n--- node ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.output()
    );
    for step in [
        "ok alice's account advertises push",
        "ok an app server on another domain is refused",
        "ok while alice is online nobody is woken",
        "ok a detached session's message wakes the phone through the app server",
        "ok from alice's account, to her node, with her publish options",
        "ok a summary without the sender or the text",
        "ok alice resumes and reads it",
        "ok an offline account's message wakes it too",
        "ok after disabling nothing more is sent",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}
