//! The node pool as the end-to-end tests see it through a real panel process: join tokens
//! from the pool page, and where each domain has settled, read from the panel's database.

use std::{collections::BTreeMap, time::Duration};

use sqlx::Row;

use crate::{app::TestClient, process::PanelProcess};

/// Creates a join token through the pool page and reads it off the page (shown once).
pub async fn join_token(admin: &TestClient, note: &str) -> String {
    let r = admin
        .post_form("/admin/nodes/tokens", &[("note", note)])
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.expect("the pool page");
    let marker = "id=\"join-token\" class=\"code\">";
    let start = html.find(marker).expect("the token is shown") + marker.len();
    let end = start + html[start..].find('<').expect("the token ends");
    html[start..end].trim().to_string()
}

/// Rows of two text columns from the panel's database, `$1`… bound to `binds`.
pub async fn query_pairs(panel: &PanelProcess, sql: &str, binds: &[&str]) -> Vec<(String, String)> {
    let pool = rookery_common::db::connect(&panel.database.url, 1)
        .await
        .expect("the panel's database");
    let mut query = sqlx::query(sql);
    for b in binds {
        query = query.bind(*b);
    }
    let rows = query.fetch_all(&pool).await.expect("query");
    pool.close().await;
    rows.iter()
        .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
        .collect()
}

/// domain → the name of the node the panel confirmed it on ("-" while not settled: not yet
/// on its node at the wanted generation, moving, or not active).
pub async fn placements(panel: &PanelProcess) -> BTreeMap<String, String> {
    query_pairs(
        panel,
        "SELECT d.domain, CASE WHEN d.applied_node_id = d.node_id AND d.applied_generation = d.generation
                AND d.move_from_node_id IS NULL AND d.state = 'active' THEN n.name ELSE '-' END
         FROM domains d LEFT JOIN nodes n ON n.id = d.node_id WHERE d.state <> 'deleted'",
        &[],
    )
    .await
    .into_iter()
    .collect()
}

/// Waits until `expected` domains are settled and `done` holds for their placement.
pub async fn settle_until(
    panel: &PanelProcess,
    expected: usize,
    secs: u64,
    done: impl Fn(&BTreeMap<String, String>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let placed = placements(panel).await;
        if placed.len() == expected && placed.values().all(|n| n != "-") && done(&placed) {
            return placed;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "domains did not settle in {secs} s: {placed:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
