//! Message archive management (XEP-0313 with XEP-0059 paging) and stanza ids (XEP-0359) on
//! a real node, driven by slixmpp's own plugins (`tests/python/mam_scenario.py`): 600
//! messages paged through forwards and backwards, filtered, their stanza-ids checked
//! against the archive, preferences obeyed, the archive kept across a restart; and a
//! domain whose spec switches the archive off.

use std::time::Duration;

use reqwest::Method;
use rookery_tests::node::NodeProcess;

const DOMAIN: &str = "mam.test";
const QUIET: &str = "quiet.test";

/// Runs the scenario in `mode` on `domain` and checks that it passed; returns its output.
async fn scenario(node: &NodeProcess, domain: &str, mode: &str) -> String {
    node.scenario(
        "mam_scenario.py",
        domain,
        &[mode],
        &[],
        Duration::from_secs(300),
    )
    .await
}

fn assert_steps(out: &str, steps: &[&str]) {
    for step in steps {
        assert!(
            out.contains(&format!("ok {step}")),
            "missing {step:?} in:\n{out}"
        );
    }
}

#[tokio::test]
async fn archives_page_filter_and_stamp_messages_with_slixmpp() {
    let mut node = NodeProcess::start().await.unwrap();
    let users = [("alice", "pass-alice-1"), ("bob", "pass-bob-1")];
    node.provision(DOMAIN, &users).await.unwrap();
    node.provision(QUIET, &users).await.unwrap();
    let (status, body) = node
        .control(
            Method::PUT,
            &format!("/v1/vhosts/{QUIET}"),
            Some(serde_json::json!({"domain": QUIET, "generation": 1, "features": {"archive": false}})),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    node.wait_for_vhost(DOMAIN).await.unwrap();
    node.wait_for_vhost(QUIET).await.unwrap();

    let filled = scenario(&node, DOMAIN, "fill").await;
    assert_steps(
        &filled,
        &[
            "every message to alice@mam.test carries its stanza-id",
            "every message to bob@mam.test carries its stanza-id",
            "alice pages forward through 600 messages in 12 pages, in order, none missing or twice",
            "alice pages backward through the same 600 messages in 12 pages",
            "bob's archive holds the same 600 messages",
            "each stanza-id bob received is the archive id MAM returns for it",
            "with bob: all 600; with someone else: none, complete",
            "start and end select messages 100 to 199",
            "after-id selects the last 50 messages",
            "ids selects exactly those messages",
            "a page after an id starts right after it, with its index and the count",
            "an unknown id is item-not-found",
            "a form field the node does not know is bad-request",
            "bob may not read alice's archive",
            "with never, a message arrives without a stanza-id",
            "and bob's archive did not grow",
            "alice's archive kept what she sent",
            "bob's preferences read back as never",
        ],
    );
    let metrics = node.metrics().await.unwrap();
    assert!(
        metrics.contains("rookery_node_archive_written_total 1201"),
        "1201 rows written (600 messages twice, one once):\n{metrics}"
    );

    node.kill_and_restart().await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let checked = scenario(&node, DOMAIN, "check").await;
    assert_steps(
        &checked,
        &[
            "alice's archive survived the restart",
            "the metadata names the first and the last message (#extended)",
        ],
    );

    let quiet = scenario(&node, QUIET, "off").await;
    assert_steps(
        &quiet,
        &[
            "an account on a domain without archive advertises neither MAM nor stanza ids",
            "a message arrives without a stanza-id",
            "a query is service-unavailable",
        ],
    );
}
