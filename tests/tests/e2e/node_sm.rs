//! XEP-0198 stream management with resumption on a real node, driven by slixmpp's
//! `xep_0198` plugin (Python, written by others): `tests/python/sm_scenario.py`. A client's
//! TCP connection is cut without `</stream:stream>` while messages keep coming; whether it
//! resumes in time or not, no message is lost or delivered twice.

use std::time::Duration;

use rookery_tests::node::{NodeProcess, run_python};

/// Runs one mode of the scenario on a node started with `env`; asserts its steps passed.
async fn scenario(domain: &str, mode: &str, env: &[(&str, &str)], steps: &[&str]) {
    let node = NodeProcess::start_with_env(env).await.unwrap();
    node.provision(domain, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(domain).await.unwrap();
    let cert = node.cert_of(domain);
    let metrics = format!("http://127.0.0.1:{}/metrics", node.http_port);
    let out = run_python(
        "sm_scenario.py",
        &[
            "127.0.0.1",
            &node.c2s_port.to_string(),
            domain,
            cert.to_str().unwrap(),
            mode,
            &metrics,
        ],
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the slixmpp {mode} scenario failed:\n{stdout}\n--- stderr ---\n{}\n--- node ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.output()
    );
    for step in steps {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}

#[tokio::test]
async fn a_session_resumed_after_a_tcp_drop_gets_every_message_exactly_once() {
    scenario(
        "sm-resume.test",
        "resume",
        &[],
        &[
            "ok alice enabled resumable stream management",
            "ok bob does not see alice go offline",
            "ok the detached session holds no connection",
            "ok alice resumes her session",
            "ok every message arrived exactly once",
            "ok the resumed session receives new messages",
            "ok bob never saw alice go offline",
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
            "ok bob sees alice go offline once the resume timeout passed",
            "ok alice gets the messages she never acknowledged from offline storage",
            "ok each message once",
            "ok with a delay saying when",
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
            "ok a second connection resumes the attached session",
            "ok the old connection is closed",
            "ok the new connection receives new messages",
            "ok nothing was resent",
            "ok the old connection got nothing more",
            "ok bob never saw alice go offline",
        ],
    )
    .await;
}
