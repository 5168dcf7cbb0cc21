//! XEP-0280 message carbons on a real node, driven by slixmpp's `xep_0280` plugin (Python,
//! written by others): `tests/python/carbons_scenario.py`. Two of alice's three resources
//! enable carbons; each sees both sides of a conversation held on another, with the
//! message's id in alice's archive; private messages and disabled resources get none.

use std::time::Duration;

use rookery_tests::node::NodeProcess;

#[tokio::test]
async fn carbons_copy_a_conversation_to_the_other_resources_that_asked_for_them() {
    let domain = "carbons.test";
    let node = NodeProcess::start().await.unwrap();
    node.provision(domain, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(domain).await.unwrap();
    node.scenario(
        "carbons_scenario.py",
        domain,
        &[],
        &[
            "the server advertises carbons",
            "the laptop gets a received carbon of it",
            "the received carbon names the message's id in alice's archive",
            "the laptop gets a sent carbon of it",
            "the sent carbon is addressed to bob and names alice's archive id",
            "without the private marker",
            "a private message is not copied",
            "after disabling, the laptop gets no more copies",
            "the tablet, without carbons, got nothing",
            "each carbon came once",
        ],
        Duration::from_secs(120),
    )
    .await;
}
