//! XEP-0280 message carbons on a real node, driven by slixmpp's `xep_0280` plugin (Python,
//! written by others): `tests/python/carbons_scenario.py`. Two of alice's three resources
//! enable carbons; each sees both sides of a conversation held on another, with the
//! message's id in alice's archive; private messages and disabled resources get none.

use std::time::Duration;

use rookery_tests::node::{NodeProcess, run_python};

#[tokio::test]
async fn carbons_copy_a_conversation_to_the_other_resources_that_asked_for_them() {
    let domain = "carbons.test";
    let node = NodeProcess::start().await.unwrap();
    node.provision(domain, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(domain).await.unwrap();
    let cert = node.cert_of(domain);
    let out = run_python(
        "carbons_scenario.py",
        &[
            "127.0.0.1",
            &node.c2s_port.to_string(),
            domain,
            cert.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    )
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the slixmpp carbons scenario failed:\n{stdout}\n--- stderr ---\n{}\n--- node ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        node.output()
    );
    for step in [
        "ok the server advertises carbons",
        "ok the laptop gets a received carbon of it",
        "ok the received carbon names the message's id in alice's archive",
        "ok the laptop gets a sent carbon of it",
        "ok the sent carbon is addressed to bob and names alice's archive id",
        "ok without the private marker",
        "ok a private message is not copied",
        "ok after disabling, the laptop gets no more copies",
        "ok the tablet, without carbons, got nothing",
        "ok each carbon came once",
    ] {
        assert!(stdout.contains(step), "missing {step:?} in:\n{stdout}");
    }
}
