//! XEP-0352 client state indication on a real node, driven by slixmpp's `xep_0352` plugin
//! (Python, written by others): `tests/python/csi_scenario.py`. An inactive client is not
//! woken by presence and chat states; a message with a body goes at once, after them.

use std::time::Duration;

use rookery_tests::node::NodeProcess;

#[tokio::test]
async fn an_inactive_client_gets_presence_and_chat_states_only_with_the_next_message() {
    let domain = "csi.test";
    let node = NodeProcess::start().await.unwrap();
    node.provision(domain, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(domain).await.unwrap();
    node.scenario(
        "csi_scenario.py",
        domain,
        &[],
        &[
            "the server offers client state indication",
            "while inactive, presence and chat states wait",
            "a message with a body goes at once",
            "after the newest held presence and the chat state, in order",
            "inactive, a new presence waits again",
            "becoming active sends what was held",
        ],
        Duration::from_secs(120),
    )
    .await;
}
