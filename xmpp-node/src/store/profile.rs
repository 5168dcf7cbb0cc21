//! Per-account data beside the roster: vCards (XEP-0054), block lists (XEP-0191) and the
//! time of the last logout (XEP-0012).

use sqlx::Row;

use super::{Store, StoreError, now, quota::row_bytes};

impl Store {
    #[tracing::instrument(skip_all)]
    pub async fn vcard(&self, vhost: &str, username: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query("SELECT vcard FROM vcards WHERE vhost = $1 AND username = $2")
                .bind(vhost)
                .bind(username)
                .fetch_optional(&self.db)
                .await?
                .map(|r| r.get("vcard")),
        )
    }

    /// Stores the account's vCard in place of any earlier one;
    /// [`StoreError::StorageFull`] when a larger one would pass the vhost's storage quota.
    #[tracing::instrument(skip_all)]
    pub async fn set_vcard(
        &self,
        vhost: &str,
        username: &str,
        vcard: &str,
    ) -> Result<(), StoreError> {
        let old: Option<i64> = sqlx::query(
            "SELECT CAST(LENGTH(vcard) AS BIGINT) AS chars FROM vcards WHERE vhost = $1 AND username = $2",
        )
        .bind(vhost)
        .bind(username)
        .fetch_optional(&self.db)
        .await?
        .map(|r| r.get("chars"));
        let new = vcard.chars().count() as i64;
        let growth = match old {
            Some(old) => new - old,
            None => row_bytes(&[Some(vhost), Some(username), Some(vcard)], 1),
        };
        let reserved = self
            .meters
            .reserve(vhost, growth)
            .map_err(|o| StoreError::StorageFull(vhost.to_string(), o.quota))?;
        sqlx::query(
            "INSERT INTO vcards (vhost, username, vcard, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (vhost, username) DO UPDATE SET vcard = excluded.vcard, updated_at = excluded.updated_at",
        )
        .bind(vhost)
        .bind(username)
        .bind(vcard)
        .bind(now())
        .execute(&self.db)
        .await?;
        reserved.commit();
        Ok(())
    }

    /// The JIDs an account blocks, in order.
    #[tracing::instrument(skip_all)]
    pub async fn blocklist(&self, vhost: &str, username: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query("SELECT blocked_jid FROM blocklist WHERE vhost = $1 AND username = $2 ORDER BY blocked_jid")
            .bind(vhost)
            .bind(username)
            .fetch_all(&self.db)
            .await?
            .iter()
            .map(|r| r.get("blocked_jid"))
            .collect())
    }

    #[tracing::instrument(skip_all)]
    pub async fn block(
        &self,
        vhost: &str,
        username: &str,
        jids: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        for jid in jids {
            sqlx::query(
                "INSERT INTO blocklist (vhost, username, blocked_jid, created_at) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (vhost, username, blocked_jid) DO NOTHING",
            )
            .bind(vhost)
            .bind(username)
            .bind(jid)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Unblocks these JIDs, or everyone when `jids` is empty.
    #[tracing::instrument(skip_all)]
    pub async fn unblock(
        &self,
        vhost: &str,
        username: &str,
        jids: &[String],
    ) -> Result<(), StoreError> {
        if jids.is_empty() {
            sqlx::query("DELETE FROM blocklist WHERE vhost = $1 AND username = $2")
                .bind(vhost)
                .bind(username)
                .execute(&self.db)
                .await?;
            return Ok(());
        }
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        for jid in jids {
            sqlx::query(
                "DELETE FROM blocklist WHERE vhost = $1 AND username = $2 AND blocked_jid = $3",
            )
            .bind(vhost)
            .bind(username)
            .bind(jid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    pub async fn set_last_activity(
        &self,
        vhost: &str,
        username: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO last_activity (vhost, username, seen_at, status) VALUES ($1, $2, $3, $4)
             ON CONFLICT (vhost, username) DO UPDATE SET seen_at = excluded.seen_at, status = excluded.status",
        )
        .bind(vhost)
        .bind(username)
        .bind(now())
        .bind(status)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// When the account last logged out, and the status it left.
    #[tracing::instrument(skip_all)]
    pub async fn last_activity(
        &self,
        vhost: &str,
        username: &str,
    ) -> Result<Option<(i64, String)>, StoreError> {
        Ok(sqlx::query(
            "SELECT seen_at, status FROM last_activity WHERE vhost = $1 AND username = $2",
        )
        .bind(vhost)
        .bind(username)
        .fetch_optional(&self.db)
        .await?
        .map(|r| (r.get("seen_at"), r.get("status"))))
    }
}
