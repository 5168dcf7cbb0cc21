//! PEP (XEP-0163) on a real node, driven by slixmpp (`tests/python/pep_scenario.py`): an
//! OMEMO device list published with publish-options (XEP-0223) reaches the subscribed
//! contact whose XEP-0115 capabilities ask for it and no one else, the last item reaches a
//! resource coming online, access models hold for strangers, the avatar becomes the vCard
//! PHOTO (XEP-0398), bookmarks follow between XEP-0048 private storage and XEP-0402; the
//! data survives a node restart.

use std::time::Duration;

use rookery_tests::node::NodeProcess;

const DOMAIN: &str = "pep.test";

/// Runs the scenario in `mode` and checks that it passed; returns its output.
async fn scenario(node: &NodeProcess, mode: &str) -> String {
    node.scenario(
        "pep_scenario.py",
        DOMAIN,
        &[mode],
        &[],
        Duration::from_secs(120),
    )
    .await
}

#[tokio::test]
async fn an_omemo_device_list_reaches_the_subscribed_contact_that_asked_for_it() {
    let mut node = NodeProcess::start().await.unwrap();
    node.provision(
        DOMAIN,
        &[
            ("alice", "pass-alice-1"),
            ("bob", "pass-bob-1"),
            ("carol", "pass-carol-1"),
            ("dave", "pass-dave-1"),
        ],
    )
    .await
    .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let published = scenario(&node, "publish").await;
    for step in [
        "ok bob, with +notify, receives alice's device list",
        "ok carol, without +notify, receives nothing",
        "ok bob's new resource gets the last device list when it comes online",
        "ok dave, a stranger, reads the open device list",
        "ok dave cannot read a presence-access node",
        "ok publish-options a node does not have are refused with conflict",
        "ok alice's avatar is her vCard PHOTO",
        "ok bookmarks stored privately are in the XEP-0402 node",
        "ok a bookmark published to the XEP-0402 node is in private storage",
    ] {
        assert!(
            published.contains(step),
            "missing {step:?} in:\n{published}"
        );
    }
    node.kill_and_restart().await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let checked = scenario(&node, "check").await;
    assert!(
        checked.contains("ok alice's device list survived the restart"),
        "{checked}"
    );
}
