//! The SOCKS5 bytestreams proxy (XEP-0065) of a real node, driven by slixmpp's own plugin
//! (`tests/python/proxy_scenario.py`): found through disco, a bytestream between two
//! accounts connected, activated and carrying 200,000 bytes unchanged; an activation of a
//! stream that is not connected refused.

use std::time::Duration;

use rookery_tests::node::NodeProcess;

const DOMAIN: &str = "proxy.test";

#[tokio::test]
async fn bytestreams_relay_through_the_proxy_with_slixmpp() {
    let node = NodeProcess::start().await.unwrap();
    node.provision(DOMAIN, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    node.scenario(
        "proxy_scenario.py",
        DOMAIN,
        &[],
        &[
            "the proxy is found through disco with its host and port",
            "alice opens a bytestream to bob through the proxy",
            "bob receives the 200000 bytes unchanged",
            "a stream that is not connected cannot be activated",
        ],
        Duration::from_secs(120),
    )
    .await;
}
