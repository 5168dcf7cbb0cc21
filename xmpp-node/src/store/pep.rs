//! Personal eventing (XEP-0163) storage: an account's PEP nodes with their configuration
//! (`pep_nodes`) and the items published to them (`pep_items`, ordered by `seq`). The
//! protocol rules (who may read, what a publish-options form means) are in `xep::pep`;
//! this module only keeps the rows and charges them to the vhost's storage quota: a
//! publish reserves what it adds before writing, and what a publish pushes out of a full
//! node, a retraction, a purge or a deletion frees is given back. Deleting the account
//! deletes its nodes and items (foreign keys); moving the vhost carries both tables
//! (`vhost_data::VHOST_TABLES`).

use sqlx::Row;

use super::{Store, StoreError, now, quota::row_bytes};

/// The configuration of one PEP node, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepConfig {
    /// `presence`, `open`, `roster` or `whitelist` (XEP-0060 §4.5).
    pub access_model: String,
    /// How many items the node keeps (the oldest go first).
    pub max_items: i64,
    /// Whether items are kept; a node that does not keep them still holds its last item,
    /// which is what `send_last_published_item` needs.
    pub persist_items: bool,
    /// `never`, `on_sub` or `on_sub_and_presence`.
    pub send_last: String,
}

/// One stored item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PepItem {
    pub id: String,
    /// The payload element as XML (empty for an item without payload).
    pub payload: String,
    pub published_at: i64,
}

/// What a publish did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// Stored; `created` when the node was made for it; `pushed_out` are the ids of the
    /// older items the node's `max_items` no longer holds.
    Stored {
        created: bool,
        pushed_out: Vec<String>,
    },
    /// The node does not exist and the account already has `max_nodes` nodes.
    TooManyNodes,
}

fn node_row_bytes(vhost: &str, username: &str, node: &str, config: &PepConfig) -> i64 {
    row_bytes(
        &[
            Some(vhost),
            Some(username),
            Some(node),
            Some(&config.access_model),
            Some(&config.send_last),
        ],
        3,
    )
}

fn item_row_bytes(vhost: &str, username: &str, node: &str, id: &str, payload: &str) -> i64 {
    row_bytes(
        &[
            Some(vhost),
            Some(username),
            Some(node),
            Some(id),
            Some(payload),
        ],
        2,
    )
}

fn config_of(r: &sqlx::any::AnyRow) -> PepConfig {
    PepConfig {
        access_model: r.get("access_model"),
        max_items: r.get("max_items"),
        persist_items: r.get::<i64, _>("persist_items") != 0,
        send_last: r.get("send_last"),
    }
}

fn item_of(r: &sqlx::any::AnyRow) -> PepItem {
    PepItem {
        id: r.get("item_id"),
        payload: r.get("payload"),
        published_at: r.get("published_at"),
    }
}

/// How many items a node with this configuration keeps.
fn kept(config: &PepConfig) -> i64 {
    if config.persist_items {
        config.max_items.max(1)
    } else {
        1
    }
}

impl Store {
    /// The configuration of an account's node, if it exists.
    #[tracing::instrument(skip_all)]
    pub async fn pep_config(
        &self,
        vhost: &str,
        username: &str,
        node: &str,
    ) -> Result<Option<PepConfig>, StoreError> {
        Ok(sqlx::query(
            "SELECT access_model, max_items, persist_items, send_last FROM pep_nodes
             WHERE vhost = $1 AND username = $2 AND node = $3",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .fetch_optional(&self.db)
        .await?
        .map(|r| config_of(&r)))
    }

    /// Every node of an account with its configuration, by name.
    #[tracing::instrument(skip_all)]
    pub async fn pep_nodes(
        &self,
        vhost: &str,
        username: &str,
    ) -> Result<Vec<(String, PepConfig)>, StoreError> {
        Ok(sqlx::query(
            "SELECT node, access_model, max_items, persist_items, send_last FROM pep_nodes
             WHERE vhost = $1 AND username = $2 ORDER BY node",
        )
        .bind(vhost)
        .bind(username)
        .fetch_all(&self.db)
        .await?
        .iter()
        .map(|r| (r.get("node"), config_of(r)))
        .collect())
    }

    /// Stores an item in `node` (in place of the item with its id), creating the node with
    /// `create_with` if it does not exist and the account has fewer than `max_nodes`;
    /// [`StoreError::StorageFull`] when it would pass the vhost's quota, and then nothing
    /// is written.
    #[tracing::instrument(skip_all)]
    #[allow(clippy::too_many_arguments)]
    pub async fn publish_pep_item(
        &self,
        vhost: &str,
        username: &str,
        node: &str,
        create_with: &PepConfig,
        max_nodes: i64,
        id: &str,
        payload: &str,
    ) -> Result<Published, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let existing = sqlx::query(
            "SELECT access_model, max_items, persist_items, send_last FROM pep_nodes
             WHERE vhost = $1 AND username = $2 AND node = $3",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| config_of(&r));
        let mut growth = 0;
        if existing.is_none() {
            let count: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM pep_nodes WHERE vhost = $1 AND username = $2",
            )
            .bind(vhost)
            .bind(username)
            .fetch_one(&mut *tx)
            .await?
            .get("n");
            if count >= max_nodes {
                return Ok(Published::TooManyNodes);
            }
            growth += node_row_bytes(vhost, username, node, create_with);
        }
        let old: Option<i64> = sqlx::query(
            "SELECT CAST(LENGTH(payload) AS BIGINT) AS chars FROM pep_items
             WHERE vhost = $1 AND username = $2 AND node = $3 AND item_id = $4",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get("chars"));
        let new = payload.chars().count() as i64;
        growth += match old {
            Some(old) => new - old,
            None => item_row_bytes(vhost, username, node, id, payload),
        };
        let reserved = self
            .meters
            .reserve(vhost, growth)
            .map_err(|o| StoreError::StorageFull(vhost.to_string(), o.quota))?;
        let created = existing.is_none();
        let config = match existing {
            Some(c) => c,
            None => {
                sqlx::query(
                    "INSERT INTO pep_nodes (vhost, username, node, access_model, max_items, persist_items, send_last, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(vhost)
                .bind(username)
                .bind(node)
                .bind(&create_with.access_model)
                .bind(create_with.max_items)
                .bind(create_with.persist_items as i64)
                .bind(&create_with.send_last)
                .bind(now())
                .execute(&mut *tx)
                .await?;
                create_with.clone()
            }
        };
        let seq: i64 = sqlx::query(
            "SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM pep_items
             WHERE vhost = $1 AND username = $2 AND node = $3",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .fetch_one(&mut *tx)
        .await?
        .get("seq");
        sqlx::query(
            "INSERT INTO pep_items (vhost, username, node, item_id, payload, seq, published_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (vhost, username, node, item_id)
             DO UPDATE SET payload = excluded.payload, seq = excluded.seq, published_at = excluded.published_at",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .bind(id)
        .bind(payload)
        .bind(seq)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        let (pushed_out, freed) = trim(&mut tx, vhost, username, node, kept(&config)).await?;
        tx.commit().await?;
        reserved.commit();
        self.meters.add(vhost, -freed);
        Ok(Published::Stored {
            created,
            pushed_out,
        })
    }

    /// Items of a node, newest first: those with the given ids (all when `ids` is empty),
    /// at most `max` of them.
    #[tracing::instrument(skip_all)]
    pub async fn pep_items(
        &self,
        vhost: &str,
        username: &str,
        node: &str,
        ids: &[String],
        max: Option<i64>,
    ) -> Result<Vec<PepItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT item_id, payload, published_at FROM pep_items
             WHERE vhost = $1 AND username = $2 AND node = $3 ORDER BY seq DESC",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .iter()
            .map(item_of)
            .filter(|i| ids.is_empty() || ids.contains(&i.id))
            .take(max.map_or(usize::MAX, |m| m.max(0) as usize))
            .collect())
    }

    /// The newest item of each node of an account that has one, with the node's name and
    /// configuration.
    #[tracing::instrument(skip_all)]
    pub async fn pep_last_items(
        &self,
        vhost: &str,
        username: &str,
    ) -> Result<Vec<(String, PepConfig, PepItem)>, StoreError> {
        Ok(sqlx::query(
            "SELECT n.node, n.access_model, n.max_items, n.persist_items, n.send_last,
                    i.item_id, i.payload, i.published_at
             FROM pep_nodes n JOIN pep_items i
               ON i.vhost = n.vhost AND i.username = n.username AND i.node = n.node
             WHERE n.vhost = $1 AND n.username = $2
               AND i.seq = (SELECT MAX(j.seq) FROM pep_items j
                            WHERE j.vhost = n.vhost AND j.username = n.username AND j.node = n.node)
             ORDER BY n.node",
        )
        .bind(vhost)
        .bind(username)
        .fetch_all(&self.db)
        .await?
        .iter()
        .map(|r| (r.get("node"), config_of(r), item_of(r)))
        .collect())
    }

    /// Deletes one item; false if the node or the item does not exist.
    #[tracing::instrument(skip_all)]
    pub async fn retract_pep_item(
        &self,
        vhost: &str,
        username: &str,
        node: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let freed: Option<i64> = sqlx::query(
            "SELECT CAST(LENGTH(payload) AS BIGINT) AS chars FROM pep_items
             WHERE vhost = $1 AND username = $2 AND node = $3 AND item_id = $4",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .map(|r| r.get("chars"));
        let done = sqlx::query(
            "DELETE FROM pep_items WHERE vhost = $1 AND username = $2 AND node = $3 AND item_id = $4",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .bind(id)
        .execute(&self.db)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        let payload_chars = freed.unwrap_or(0);
        // The row as counted, with a payload of that many characters.
        let row = item_row_bytes(vhost, username, node, id, "") + payload_chars;
        self.meters.add(vhost, -row);
        Ok(true)
    }

    /// Deletes every item of a node (`purge`), or the node with its items (`delete`);
    /// false if the node does not exist.
    #[tracing::instrument(skip_all)]
    pub async fn clear_pep_node(
        &self,
        vhost: &str,
        username: &str,
        node: &str,
        delete_node: bool,
    ) -> Result<bool, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let exists = sqlx::query(
            "SELECT node FROM pep_nodes WHERE vhost = $1 AND username = $2 AND node = $3",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
        if !exists {
            return Ok(false);
        }
        sqlx::query("DELETE FROM pep_items WHERE vhost = $1 AND username = $2 AND node = $3")
            .bind(vhost)
            .bind(username)
            .bind(node)
            .execute(&mut *tx)
            .await?;
        if delete_node {
            sqlx::query("DELETE FROM pep_nodes WHERE vhost = $1 AND username = $2 AND node = $3")
                .bind(vhost)
                .bind(username)
                .bind(node)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.remeasure_after_write(vhost).await;
        Ok(true)
    }

    /// Replaces a node's configuration (items past its new `max_items` go); false if the
    /// node does not exist.
    #[tracing::instrument(skip_all)]
    pub async fn configure_pep_node(
        &self,
        vhost: &str,
        username: &str,
        node: &str,
        config: &PepConfig,
    ) -> Result<bool, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let done = sqlx::query(
            "UPDATE pep_nodes SET access_model = $4, max_items = $5, persist_items = $6, send_last = $7
             WHERE vhost = $1 AND username = $2 AND node = $3",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .bind(&config.access_model)
        .bind(config.max_items)
        .bind(config.persist_items as i64)
        .bind(&config.send_last)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        trim(&mut tx, vhost, username, node, kept(config)).await?;
        tx.commit().await?;
        self.remeasure_after_write(vhost).await;
        Ok(true)
    }
}

/// Deletes the items of a node past the newest `keep`; their ids and the bytes freed.
async fn trim(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    vhost: &str,
    username: &str,
    node: &str,
    keep: i64,
) -> Result<(Vec<String>, i64), StoreError> {
    let rows = sqlx::query(
        "SELECT item_id, CAST(LENGTH(payload) AS BIGINT) AS chars FROM pep_items
         WHERE vhost = $1 AND username = $2 AND node = $3 ORDER BY seq DESC",
    )
    .bind(vhost)
    .bind(username)
    .bind(node)
    .fetch_all(&mut **tx)
    .await?;
    let mut ids = Vec::new();
    let mut freed = 0;
    for r in rows.iter().skip(keep.max(0) as usize) {
        let id: String = r.get("item_id");
        let chars: i64 = r.get("chars");
        sqlx::query(
            "DELETE FROM pep_items WHERE vhost = $1 AND username = $2 AND node = $3 AND item_id = $4",
        )
        .bind(vhost)
        .bind(username)
        .bind(node)
        .bind(&id)
        .execute(&mut **tx)
        .await?;
        freed += item_row_bytes(vhost, username, node, &id, "") + chars;
        ids.push(id);
    }
    Ok((ids, freed))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "example.com";

    async fn store_with_room(room: i64) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        store.add_vhost(DOMAIN, None).await.unwrap();
        store
            .add_account(DOMAIN, "juliet", "a-password-1", 1)
            .await
            .unwrap();
        let stored = store.measure_storage(DOMAIN).await.unwrap();
        store
            .meters
            .configure([(DOMAIN.to_string(), Some(stored + room))]);
        store.remeasure_storage(DOMAIN).await.unwrap();
        (store, dir)
    }

    fn config(max_items: i64) -> PepConfig {
        PepConfig {
            access_model: "presence".into(),
            max_items,
            persist_items: true,
            send_last: "on_sub_and_presence".into(),
        }
    }

    async fn assert_counted_exactly(store: &Store) {
        assert_eq!(
            store.meters.get(DOMAIN).unwrap().used(),
            store.measure_storage(DOMAIN).await.unwrap()
        );
    }

    #[tokio::test]
    async fn publishing_counts_exactly_keeps_max_items_and_limits_the_nodes() {
        let (store, _dir) = store_with_room(100_000).await;
        for i in 0..3 {
            let p = store
                .publish_pep_item(
                    DOMAIN,
                    "juliet",
                    "n",
                    &config(2),
                    2,
                    &format!("i{i}"),
                    "<x xmlns='y'/>",
                )
                .await
                .unwrap();
            assert_eq!(
                p,
                Published::Stored {
                    created: i == 0,
                    pushed_out: if i == 2 { vec!["i0".into()] } else { vec![] },
                }
            );
            assert_counted_exactly(&store).await;
        }
        // The same id again replaces the item, which becomes the newest.
        store
            .publish_pep_item(
                DOMAIN,
                "juliet",
                "n",
                &config(2),
                2,
                "i1",
                "<x xmlns='z'>longer</x>",
            )
            .await
            .unwrap();
        assert_counted_exactly(&store).await;
        let items = store
            .pep_items(DOMAIN, "juliet", "n", &[], None)
            .await
            .unwrap();
        assert_eq!(
            items.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["i1", "i2"]
        );
        let last = store.pep_last_items(DOMAIN, "juliet").await.unwrap();
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].2.id, "i1");

        store
            .publish_pep_item(DOMAIN, "juliet", "m", &config(1), 2, "a", "")
            .await
            .unwrap();
        let third = store
            .publish_pep_item(DOMAIN, "juliet", "o", &config(1), 2, "a", "")
            .await
            .unwrap();
        assert_eq!(third, Published::TooManyNodes);
        assert!(
            store
                .retract_pep_item(DOMAIN, "juliet", "n", "i2")
                .await
                .unwrap()
        );
        assert!(
            !store
                .retract_pep_item(DOMAIN, "juliet", "n", "i2")
                .await
                .unwrap()
        );
        assert_counted_exactly(&store).await;
    }

    #[tokio::test]
    async fn a_publish_past_the_quota_writes_nothing_and_deleting_the_account_deletes_the_nodes() {
        let (store, _dir) = store_with_room(300).await;
        let big = format!("<x xmlns='y'>{}</x>", "z".repeat(300));
        let refused = store
            .publish_pep_item(DOMAIN, "juliet", "n", &config(1), 10, "a", &big)
            .await;
        assert!(
            matches!(refused, Err(StoreError::StorageFull(..))),
            "{refused:?}"
        );
        assert!(
            store
                .pep_config(DOMAIN, "juliet", "n")
                .await
                .unwrap()
                .is_none()
        );
        store
            .publish_pep_item(DOMAIN, "juliet", "n", &config(1), 10, "a", "<x xmlns='y'/>")
            .await
            .unwrap();
        store.remove_account(DOMAIN, "juliet").await.unwrap();
        for table in ["pep_nodes", "pep_items"] {
            let left: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&store.db)
                .await
                .unwrap()
                .get("n");
            assert_eq!(left, 0, "{table}");
        }
        assert_counted_exactly(&store).await;
    }

    #[tokio::test]
    async fn pep_nodes_and_items_travel_with_a_moved_vhost() {
        let (a, _da) = store_with_room(100_000).await;
        a.publish_pep_item(
            DOMAIN,
            "juliet",
            "n",
            &config(1),
            10,
            "current",
            "<x xmlns='y'/>",
        )
        .await
        .unwrap();
        let exported = a.export_vhost(DOMAIN).await.unwrap();
        assert_eq!(exported["pep_nodes"].len(), 1);
        assert_eq!(exported["pep_items"].len(), 1);
        let (b, _db) = store_with_room(100_000).await;
        b.import_vhost(DOMAIN, &exported).await.unwrap();
        assert_eq!(
            b.pep_config(DOMAIN, "juliet", "n").await.unwrap(),
            Some(config(1))
        );
        assert_eq!(
            b.pep_items(DOMAIN, "juliet", "n", &[], None).await.unwrap()[0].payload,
            "<x xmlns='y'/>"
        );
    }
}
