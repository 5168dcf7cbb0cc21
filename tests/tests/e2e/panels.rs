//! Several panel processes on one database, as behind a load balancer: work that must run
//! once per deployment (here: the prober) runs in the one process holding its lease, and a
//! standby takes over when that process dies.

use rookery_tests::{
    app::{PASSWORD, TestClient, eventually, unique_email},
    node::NodeProcess,
    process::PanelProcess,
};

async fn count(panel: &PanelProcess, sql: &str) -> i64 {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

#[tokio::test]
async fn one_panel_probes_at_a_time_and_a_standby_takes_over_when_it_dies() {
    // The probe trusts the node's generated certificate for the domain, copied here once
    // the node has made it (the prober keeps trying to load it until then).
    let trust = tempfile::tempdir().unwrap();
    let ca = trust.path().join("node.pem");
    let roots = format!("[\"{}\"]", ca.display());
    let env = [
        ("ROOKERY_PROBE__INTERVAL_SECS", "1"),
        ("ROOKERY_PROBE__TIMEOUT_SECS", "3"),
        ("ROOKERY_PROBE__TRUST_ROOTS", roots.as_str()),
        ("ROOKERY_LEASE_SECS", "3"),
        ("ROOKERY_PROVISIONING__RECONCILE_INTERVAL_MS", "100"),
        ("ROOKERY_PROVISIONING__POLL_INTERVAL_SECS", "1"),
    ];
    let first = PanelProcess::start_with_env(&env).await.unwrap();
    let admin = first.admin_client().await.unwrap();
    let r = admin
        .post_form("/admin/nodes/tokens", &[("note", "node")])
        .await;
    let html = r.text().await.unwrap();
    let token = html
        .split("id=\"join-token\"")
        .nth(1)
        .and_then(|rest| rest.split('>').nth(1))
        .and_then(|rest| rest.split('<').next())
        .unwrap()
        .trim()
        .to_string();
    let node = NodeProcess::join_and_start(&first.base_url, &token, "node-1")
        .await
        .unwrap();

    let customer = TestClient::new(&first.base_url);
    let org = customer.sign_up(&unique_email("ha"), "Always on").await;
    let page = customer.order_domain(&org, "ha.example.test").await;
    let cert = node.control_cert().with_file_name("ha.example.test.crt");
    eventually(30, || async { cert.exists() })
        .await
        .expect("the node makes the domain's certificate");
    std::fs::copy(&cert, &ca).unwrap();
    eventually(30, || async {
        customer
            .page(&page)
            .await
            .contains("data-probe-status=\"up\"")
    })
    .await
    .expect("the first panel probes the domain");

    // A second panel on the same database stands by: still one probe a round.
    let second = first.start_sibling(&env).await.unwrap();
    let on_second = TestClient::new(&second.base_url);
    assert!(
        on_second
            .login(&admin_email(&first).await, PASSWORD)
            .await
            .status()
            .is_redirection(),
        "the second panel serves the same accounts"
    );
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    assert_eq!(
        count(
            &first,
            "SELECT COUNT(DISTINCT holder) FROM leases WHERE name = 'probe'"
        )
        .await,
        1
    );
    let twice = count(
        &first,
        "SELECT COUNT(*) FROM (SELECT at FROM probe_results GROUP BY domain_id, at HAVING COUNT(*) > 1) t",
    )
    .await;
    assert_eq!(twice, 0, "no second probe of a domain in the same second");

    // The first panel dies; within the lease's term the second one probes.
    let mut first = first;
    first.kill().await;
    let killed_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let sql = format!(
        "SELECT COUNT(*) FROM probe_rounds WHERE round_start > {}",
        killed_at + 1
    );
    eventually(20, || async { count(&first, &sql).await >= 3 })
        .await
        .expect("the standby panel takes the probe over");
    let html = on_second.page("/admin/uptime").await;
    assert!(html.contains("data-domain=\"ha.example.test\""), "{html}");
    drop(second);
    drop(node);
}

async fn admin_email(panel: &PanelProcess) -> String {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .unwrap();
    let email: String = sqlx::query_scalar(
        "SELECT email FROM users WHERE is_admin = 1 ORDER BY created_at LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    email
}
