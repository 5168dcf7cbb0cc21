//! XEP-0357 push notifications on a real node: slixmpp clients (Python, written by others)
//! and a fake app server logged in as a local account (`tests/python/push_scenario.py`).
//! A detached (resumable) session and an offline account are woken, without the message's
//! text; an online one is not; a disabled registration gets nothing.

use std::time::Duration;

use rookery_tests::node::NodeProcess;

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
    node.scenario(
        "push_scenario.py",
        domain,
        &[],
        &[
            "alice's account advertises push",
            "an app server on another domain is accepted",
            "while alice is online nobody is woken",
            "a detached session's message wakes the phone through the app server",
            "from alice's account, to her node, with her publish options",
            "a summary without the sender or the text",
            "alice resumes and reads it",
            "an offline account's message wakes it too",
            "after disabling nothing more is sent",
        ],
        Duration::from_secs(120),
    )
    .await;
}
