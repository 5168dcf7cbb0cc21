//! Private XML storage (XEP-0049): each account keeps one XML element per (namespace,
//! element name), e.g. its XEP-0048 bookmarks. A set of several elements is written in one
//! transaction and charged to the vhost's storage quota by what it adds.

use sqlx::Row;

use super::{Store, StoreError, now, quota::row_bytes};

/// One stored element: its namespace, its name and the element as XML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateItem {
    pub namespace: String,
    pub name: String,
    pub xml: String,
}

impl PrivateItem {
    /// The storage of this item's row (see `quota::row_bytes`; one number, `updated_at`).
    fn row_bytes(&self, vhost: &str, username: &str) -> i64 {
        row_bytes(
            &[
                Some(vhost),
                Some(username),
                Some(&self.namespace),
                Some(&self.name),
                Some(&self.xml),
            ],
            1,
        )
    }
}

impl Store {
    /// The element an account stored under this namespace and name, as XML.
    #[tracing::instrument(skip_all)]
    pub async fn private_xml(
        &self,
        vhost: &str,
        username: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query(
            "SELECT xml FROM private_storage WHERE vhost = $1 AND username = $2 AND namespace = $3 AND name = $4",
        )
        .bind(vhost)
        .bind(username)
        .bind(namespace)
        .bind(name)
        .fetch_optional(&self.db)
        .await?
        .map(|r| r.get("xml")))
    }

    /// Stores each item in place of the one with its namespace and name (a later item
    /// with the same key wins); [`StoreError::StorageFull`] when what it adds would pass
    /// the vhost's storage quota, and then nothing is written.
    #[tracing::instrument(skip_all)]
    pub async fn set_private_xml(
        &self,
        vhost: &str,
        username: &str,
        items: &[PrivateItem],
    ) -> Result<(), StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        // What the stored rows hold now, updated as the items replace them in turn.
        let mut stored: Vec<(&str, &str, Option<i64>)> = Vec::with_capacity(items.len());
        let mut growth = 0;
        for item in items {
            let old = match stored
                .iter()
                .rposition(|(ns, n, _)| *ns == item.namespace && *n == item.name)
            {
                Some(i) => stored[i].2,
                None => sqlx::query(
                    "SELECT CAST(LENGTH(xml) AS BIGINT) AS chars FROM private_storage
                     WHERE vhost = $1 AND username = $2 AND namespace = $3 AND name = $4",
                )
                .bind(vhost)
                .bind(username)
                .bind(&item.namespace)
                .bind(&item.name)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get("chars")),
            };
            let new = item.xml.chars().count() as i64;
            growth += match old {
                Some(old) => new - old,
                None => item.row_bytes(vhost, username),
            };
            stored.push((&item.namespace, &item.name, Some(new)));
        }
        let reserved = self
            .meters
            .reserve(vhost, growth)
            .map_err(|o| StoreError::StorageFull(vhost.to_string(), o.quota))?;
        for item in items {
            sqlx::query(
                "INSERT INTO private_storage (vhost, username, namespace, name, xml, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (vhost, username, namespace, name)
                 DO UPDATE SET xml = excluded.xml, updated_at = excluded.updated_at",
            )
            .bind(vhost)
            .bind(username)
            .bind(&item.namespace)
            .bind(&item.name)
            .bind(&item.xml)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        reserved.commit();
        Ok(())
    }
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

    fn item(ns: &str, name: &str, xml: &str) -> PrivateItem {
        PrivateItem {
            namespace: ns.into(),
            name: name.into(),
            xml: xml.into(),
        }
    }

    async fn assert_counted_exactly(store: &Store) {
        assert_eq!(
            store.meters.get(DOMAIN).unwrap().used(),
            store.measure_storage(DOMAIN).await.unwrap()
        );
    }

    #[tokio::test]
    async fn items_are_kept_per_namespace_and_name_and_replaced_in_place() {
        let (store, _dir) = store_with_room(100_000).await;
        let prefs = item("exodus:prefs", "exodus", "<exodus xmlns='exodus:prefs'/>");
        let marks = item(
            "storage:bookmarks",
            "storage",
            "<storage xmlns='storage:bookmarks'/>",
        );
        store
            .set_private_xml(DOMAIN, "juliet", &[prefs.clone(), marks.clone()])
            .await
            .unwrap();
        assert_counted_exactly(&store).await;
        let replaced = item(
            "exodus:prefs",
            "exodus",
            "<exodus xmlns='exodus:prefs'><defaultnick>J</defaultnick></exodus>",
        );
        // The same key twice in one set: the later one wins, counted once.
        store
            .set_private_xml(DOMAIN, "juliet", &[prefs.clone(), replaced.clone()])
            .await
            .unwrap();
        assert_counted_exactly(&store).await;
        let get = |ns: &'static str, name: &'static str| {
            let store = store.clone();
            async move { store.private_xml(DOMAIN, "juliet", ns, name).await.unwrap() }
        };
        assert_eq!(get("exodus:prefs", "exodus").await, Some(replaced.xml));
        assert_eq!(get("storage:bookmarks", "storage").await, Some(marks.xml));
        assert_eq!(get("exodus:prefs", "other").await, None);
        assert_eq!(
            store
                .private_xml(DOMAIN, "romeo", "exodus:prefs", "exodus")
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_set_past_the_quota_writes_nothing_and_deleting_the_account_deletes_the_items() {
        let (store, _dir) = store_with_room(300).await;
        let small = item("a:b", "x", "<x xmlns='a:b'/>");
        let big = item(
            "c:d",
            "y",
            &format!("<y xmlns='c:d'>{}</y>", "z".repeat(300)),
        );
        let refused = store
            .set_private_xml(DOMAIN, "juliet", &[small.clone(), big])
            .await;
        assert!(
            matches!(refused, Err(StoreError::StorageFull(..))),
            "{refused:?}"
        );
        assert_eq!(
            store
                .private_xml(DOMAIN, "juliet", "a:b", "x")
                .await
                .unwrap(),
            None,
            "nothing of a refused set was written"
        );
        store
            .set_private_xml(DOMAIN, "juliet", &[small])
            .await
            .unwrap();
        assert_counted_exactly(&store).await;
        store.remove_account(DOMAIN, "juliet").await.unwrap();
        let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM private_storage")
            .fetch_one(&store.db)
            .await
            .unwrap()
            .get("n");
        assert_eq!(left, 0);
        assert_counted_exactly(&store).await;
    }

    #[tokio::test]
    async fn private_items_travel_with_a_moved_vhost() {
        let (a, _da) = store_with_room(100_000).await;
        let marks = item(
            "storage:bookmarks",
            "storage",
            "<storage xmlns='storage:bookmarks'/>",
        );
        a.set_private_xml(DOMAIN, "juliet", std::slice::from_ref(&marks))
            .await
            .unwrap();
        let exported = a.export_vhost(DOMAIN).await.unwrap();
        assert_eq!(exported["private_storage"].len(), 1);
        let (b, _db) = store_with_room(100_000).await;
        b.import_vhost(DOMAIN, &exported).await.unwrap();
        assert_eq!(
            b.private_xml(DOMAIN, "juliet", "storage:bookmarks", "storage")
                .await
                .unwrap(),
            Some(marks.xml)
        );
    }
}
