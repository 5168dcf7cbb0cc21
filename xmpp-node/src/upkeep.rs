//! The running node's periodic upkeep, once a minute (and once at start): offline messages
//! older than their vhost's `offline_retention_days` are deleted, in bounded batches so a
//! large backlog never holds the database for long, and each vhost with a storage quota
//! is measured again, so the quota's running count (`store::quota`) cannot drift for long.
//! Archived messages past `archive_retention_days` go the same way (`xep::mam::expire`).
//!
//! Delivery checks the same cutoff ([`offline_cutoff`]), so a message past the retention
//! is never delivered, even in the minute before the sweep deletes it.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, time::MissedTickBehavior};

use crate::node::{Node, unix_now};

/// How often upkeep runs.
pub const EVERY: Duration = Duration::from_secs(60);

/// Offline messages deleted per transaction.
const BATCH: i64 = 500;

/// Batches per vhost per round; what is left waits for the next round.
const MAX_BATCHES: usize = 20;

/// Messages that arrived before this Unix time are past a retention of `days`.
pub fn offline_cutoff(now: i64, days: i64) -> i64 {
    now.saturating_sub(days.max(0).saturating_mul(86_400))
}

/// Runs upkeep every [`EVERY`] until `stop`.
pub async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.changed() => return,
        }
        expire_offline(&node, unix_now()).await;
        crate::xep::mam::expire(&node, unix_now()).await;
        crate::xep::upload::expire(&node, unix_now()).await;
        remeasure_storage(&node).await;
    }
}

/// Deletes the offline messages past each vhost's retention as of `now`; returns how many
/// went per vhost (only vhosts that lost some), and logs the same.
pub async fn expire_offline(node: &Node, now: i64) -> Vec<(String, u64)> {
    let mut dropped = Vec::new();
    for (domain, host) in node.hosts() {
        let Some(days) = host.policy.as_ref().and_then(|p| p.offline_retention_days) else {
            continue;
        };
        let cutoff = offline_cutoff(now, days);
        let mut count = 0;
        for _ in 0..MAX_BATCHES {
            match node.store.expire_offline(&domain, cutoff, BATCH).await {
                Ok(n) => {
                    count += n;
                    if n < BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(vhost = %domain, error = format!("{e:#}"), "deleting expired offline messages failed");
                    break;
                }
            }
            // Other work gets the database between batches.
            tokio::task::yield_now().await;
        }
        if count > 0 {
            tracing::info!(vhost = %domain, dropped = count, retention_days = days, "dropped offline messages past the retention");
            dropped.push((domain, count));
        }
    }
    dropped
}

/// Measures every vhost with a storage quota again.
pub async fn remeasure_storage(node: &Node) {
    for domain in node.store.meters.with_quota() {
        if let Err(e) = node.store.remeasure_storage(&domain).await {
            tracing::warn!(vhost = %domain, error = format!("{e:#}"), "measuring a vhost's storage failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::node::testing::{apply_spec, node_with_spec};

    /// Offline messages of `vhost` per body, oldest first.
    async fn stored(node: &Node, vhost: &str) -> Vec<String> {
        use sqlx::Row;
        sqlx::query("SELECT stanza FROM offline_messages WHERE vhost = $1 ORDER BY created_at, id")
            .bind(vhost)
            .fetch_all(&node.store.db)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>("stanza"))
            .collect()
    }

    #[tokio::test]
    async fn the_sweep_drops_only_messages_past_each_vhosts_retention() {
        let (node, _dir) = node_with_spec(
            json!({"domain": "kept.example", "generation": 1, "limits": {"offline_retention_days": 7}}),
            &["bob"],
        )
        .await;
        apply_spec(&node, json!({"domain": "forever.example", "generation": 1})).await;
        node.store
            .add_account("forever.example", "bob", "a-password-1", 1)
            .await
            .unwrap();
        for vhost in ["kept.example", "forever.example"] {
            for body in ["old", "older", "new"] {
                node.store
                    .store_offline(
                        vhost,
                        "bob",
                        &format!("<message><body>{body}</body></message>"),
                        100,
                    )
                    .await
                    .unwrap();
            }
        }
        let now = unix_now();
        assert!(
            expire_offline(&node, now).await.is_empty(),
            "nothing is a week old yet"
        );
        // Eight days later for all but the newest.
        sqlx::query("UPDATE offline_messages SET created_at = created_at - 8 * 86400 WHERE stanza NOT LIKE '%new%'")
            .execute(&node.store.db)
            .await
            .unwrap();
        assert_eq!(
            expire_offline(&node, now).await,
            vec![("kept.example".to_string(), 2)]
        );
        assert_eq!(stored(&node, "kept.example").await.len(), 1);
        assert!(stored(&node, "kept.example").await[0].contains("new"));
        assert_eq!(
            stored(&node, "forever.example").await.len(),
            3,
            "no retention: kept"
        );
    }

    #[tokio::test]
    async fn expired_messages_are_deleted_in_bounded_batches_and_free_their_storage() {
        let (node, _dir) = node_with_spec(
            json!({"domain": "example.com", "generation": 1,
                   "limits": {"storage_quota_bytes": 1_000_000, "offline_retention_days": 1}}),
            &["bob"],
        )
        .await;
        for i in 0..3 {
            node.store
                .store_offline(
                    "example.com",
                    "bob",
                    &format!("<message><body>{i}</body></message>"),
                    100,
                )
                .await
                .unwrap();
        }
        let meter = node.store.meters.get("example.com").unwrap();
        assert_eq!(
            meter.used(),
            node.store.measure_storage("example.com").await.unwrap()
        );
        let later = unix_now() + 2 * 86_400;
        let cutoff = offline_cutoff(later, 1);
        assert_eq!(
            node.store
                .expire_offline("example.com", cutoff, 2)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            node.store
                .expire_offline("example.com", cutoff, 2)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            node.store
                .expire_offline("example.com", cutoff, 2)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            meter.used(),
            node.store.measure_storage("example.com").await.unwrap(),
            "the quota's count follows the deletions exactly"
        );
    }

    #[test]
    fn the_cutoff_is_the_retention_before_now() {
        assert_eq!(offline_cutoff(1_000_000, 1), 1_000_000 - 86_400);
        assert_eq!(
            offline_cutoff(1_000_000, 0),
            1_000_000,
            "0 days keeps nothing"
        );
        assert!(offline_cutoff(10, i64::MAX) < 0, "no overflow");
    }
}
