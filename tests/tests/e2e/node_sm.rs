//! XEP-0198 stream management with resumption on a real node, driven by slixmpp's
//! `xep_0198` plugin (Python, written by others): `tests/python/sm_scenario.py`. A client's
//! TCP connection is cut without `</stream:stream>` while messages keep coming; whether it
//! resumes in time or not, no message is lost or delivered twice.

use std::time::Duration;

use rookery_tests::node::NodeProcess;

/// Runs one mode of the scenario on a node started with `env`; asserts its steps passed.
async fn scenario(domain: &str, mode: &str, env: &[(&str, &str)], steps: &[&str]) {
    let node = NodeProcess::start_with_env(env).await.unwrap();
    node.provision(domain, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(domain).await.unwrap();
    let metrics = format!("http://127.0.0.1:{}/metrics", node.http_port);
    node.scenario(
        "sm_scenario.py",
        domain,
        &[mode, &metrics],
        steps,
        Duration::from_secs(120),
    )
    .await;
}

#[tokio::test]
async fn a_session_resumed_after_a_tcp_drop_gets_every_message_exactly_once() {
    scenario(
        "sm-resume.test",
        "resume",
        &[],
        &[
            "alice enabled resumable stream management",
            "bob does not see alice go offline",
            "the detached session holds no connection",
            "alice resumes her session",
            "every message arrived exactly once",
            "the resumed session receives new messages",
            "bob never saw alice go offline",
        ],
    )
    .await;
}

#[tokio::test]
async fn unacknowledged_messages_of_a_session_not_resumed_in_time_are_stored_offline() {
    scenario(
        "sm-timeout.test",
        "timeout",
        &[("ROOKERY_NODE_LIMITS__SM_RESUME_SECS", "2")],
        &[
            "bob sees alice go offline once the resume timeout passed",
            "alice gets the messages she never acknowledged from offline storage",
            "each message once",
            "with a delay saying when",
        ],
    )
    .await;
}

#[tokio::test]
async fn resuming_a_session_still_attached_ends_the_old_connection() {
    scenario(
        "sm-takeover.test",
        "takeover",
        &[],
        &[
            "a second connection resumes the attached session",
            "the old connection is closed",
            "the new connection receives new messages",
            "nothing was resent",
            "the old connection got nothing more",
            "bob never saw alice go offline",
        ],
    )
    .await;
}
