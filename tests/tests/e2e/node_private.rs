//! Private XML storage (XEP-0049) with XEP-0048 bookmarks in it, and host-meta (XEP-0156),
//! on a real node: storage driven by slixmpp (`tests/python/private_scenario.py`), kept
//! across a restart; host-meta fetched over the node's HTTP port.

use std::time::Duration;

use rookery_tests::node::NodeProcess;

const DOMAIN: &str = "private.test";

/// Runs the scenario in `mode` and checks that it passed; returns its output.
async fn scenario(node: &NodeProcess, mode: &str) -> String {
    node.scenario(
        "private_scenario.py",
        DOMAIN,
        &[mode],
        &[],
        Duration::from_secs(120),
    )
    .await
}

#[tokio::test]
async fn bookmarks_in_private_storage_round_trip_and_survive_a_restart() {
    let mut node = NodeProcess::start().await.unwrap();
    node.provision(
        DOMAIN,
        &[("erin", "pass-erin-1"), ("frank", "pass-frank-1")],
    )
    .await
    .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let stored = scenario(&node, "store").await;
    for step in [
        "ok erin's bookmarks round-trip",
        "ok a get of nothing stored returns the empty element",
        "ok frank cannot read erin's storage",
        "ok a reserved namespace is not acceptable",
    ] {
        assert!(stored.contains(step), "missing {step:?} in:\n{stored}");
    }
    node.kill_and_restart().await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let checked = scenario(&node, "check").await;
    assert!(
        checked.contains("ok erin's bookmarks survived the restart"),
        "{checked}"
    );
}

#[tokio::test]
async fn host_meta_is_served_for_hosted_domains_only() {
    let node =
        NodeProcess::start_with_env(&[("ROOKERY_NODE_PUBLIC_HTTP_URL", "https://{vhost}:5443")])
            .await
            .unwrap();
    node.provision(DOMAIN, &[]).await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", node.http_port);
    let get = |path: &str, host: &str| {
        http.get(url(path))
            .header(reqwest::header::HOST, host)
            .send()
    };

    let xrd = get("/.well-known/host-meta", DOMAIN).await.unwrap();
    assert_eq!(xrd.status(), 200);
    assert_eq!(xrd.headers()["content-type"], "application/xrd+xml");
    assert_eq!(xrd.headers()["access-control-allow-origin"], "*");
    let body = xrd.text().await.unwrap();
    assert!(
        body.contains("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"),
        "{body}"
    );
    // The WebSocket and BOSH endpoints, under the configured public URL.
    assert!(
        body.contains(&format!(
            "<Link rel=\"urn:xmpp:alt-connections:websocket\" href=\"wss://{DOMAIN}:5443/xmpp-websocket\"/>"
        )),
        "{body}"
    );
    assert!(
        body.contains(&format!(
            "<Link rel=\"urn:xmpp:alt-connections:xbosh\" href=\"https://{DOMAIN}:5443/http-bind\"/>"
        )),
        "{body}"
    );

    let jrd = get("/.well-known/host-meta.json", &format!("{DOMAIN}:5280"))
        .await
        .unwrap();
    assert_eq!(jrd.status(), 200);
    assert_eq!(jrd.headers()["content-type"], "application/json");
    assert_eq!(jrd.headers()["access-control-allow-origin"], "*");
    let doc: serde_json::Value = jrd.json().await.unwrap();
    assert_eq!(
        doc,
        serde_json::json!({"links": [
            {"rel": "urn:xmpp:alt-connections:websocket", "href": format!("wss://{DOMAIN}:5443/xmpp-websocket")},
            {"rel": "urn:xmpp:alt-connections:xbosh", "href": format!("https://{DOMAIN}:5443/http-bind")},
        ]})
    );

    for path in ["/.well-known/host-meta", "/.well-known/host-meta.json"] {
        let other = get(path, "not-hosted.test").await.unwrap();
        assert_eq!(other.status(), 404, "{path}");
    }
}
