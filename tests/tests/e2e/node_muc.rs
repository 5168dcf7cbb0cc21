//! Multi-user chat (XEP-0045) at `conference.<domain>` on a real node, driven by slixmpp's
//! xep_0045 plugin (`tests/python/muc_scenario.py`): a three-user room created, configured
//! persistent, talked in, joined late with history, a nick conflict, a private message, a
//! mediated invitation, self-pings (XEP-0410), occupant ids (XEP-0421), a kick, a ban, the
//! room's archive (XEP-0313); the room, its ban and its archive kept across a restart; and
//! a domain whose spec switches group chat off, which has no such service.

use std::time::Duration;

use reqwest::Method;
use rookery_tests::node::NodeProcess;

const DOMAIN: &str = "muc.test";
const QUIET: &str = "nomuc.test";

async fn scenario(node: &NodeProcess, domain: &str, mode: &str, steps: &[&str]) -> String {
    node.scenario(
        "muc_scenario.py",
        domain,
        &[mode],
        steps,
        Duration::from_secs(180),
    )
    .await
}

#[tokio::test]
async fn a_three_user_room_with_history_kick_ban_and_archive_works_with_slixmpp() {
    let mut node = NodeProcess::start().await.unwrap();
    let users = [
        ("alice", "pass-alice-1"),
        ("bob", "pass-bob-1"),
        ("carol", "pass-carol-1"),
    ];
    node.provision(DOMAIN, &users).await.unwrap();
    node.provision(QUIET, &users).await.unwrap();
    let (status, body) = node
        .control(
            Method::PUT,
            &format!("/v1/vhosts/{QUIET}"),
            Some(serde_json::json!({"domain": QUIET, "generation": 1, "features": {"muc": false}})),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body}");
    node.wait_for_vhost(DOMAIN).await.unwrap();
    node.wait_for_vhost(QUIET).await.unwrap();

    scenario(
        &node,
        DOMAIN,
        "room",
        &[
            "the domain lists its conference service",
            "the service is a conference service with muc and occupant ids",
            "alice creates the room (201) as its owner",
            "the service lists the public room",
            "the room's disco#info says persistent, public, open, unmoderated, archived",
            "bob joins and sees alice",
            "groupchat messages reach every occupant, in order",
            "a room message carries the room's stanza-id and the sender's occupant id",
            "carol, joining late, gets the last 3 messages as history",
            "a taken nickname is a conflict",
            "a private message goes from bob to carol through the room",
            "a mediated invitation reaches the invitee from the room",
            "bob's self-ping answers while he is joined",
            "alice kicks carol: carol gets 307",
            "carol's self-ping is not-acceptable once kicked",
            "a kicked user may come back",
            "bob, no moderator, may not kick",
            "alice bans bob: bob gets 301",
            "the banned user cannot rejoin",
            "the outcast list holds bob",
            "the room's archive (MAM at the room) holds the 4 messages",
        ],
    )
    .await;

    let metrics = node.metrics().await.unwrap();
    assert!(
        metrics.contains("rookery_node_muc_rooms 1\n"),
        "the persistent room stays in memory, empty:\n{metrics}"
    );
    assert!(
        metrics.contains("rookery_node_muc_messages_total 4\n"),
        "4 groupchat messages:\n{metrics}"
    );

    node.kill_and_restart().await.unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    scenario(
        &node,
        DOMAIN,
        "check",
        &[
            "after a restart the persistent room is there",
            "with its archive",
            "and bob is still banned",
            "and alice is still its owner",
        ],
    )
    .await;

    scenario(
        &node,
        QUIET,
        "off",
        &[
            "a domain without group chat lists no conference service",
            "and has no such service",
        ],
    )
    .await;
}
