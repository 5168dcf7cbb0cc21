//! Multi-user chat (XEP-0045) storage: the persistent rooms of each vhost (`muc_rooms`,
//! their configuration as JSON), their affiliations (`muc_affiliations`) and the rooms'
//! archive (`muc_archive`, read through `archive::ROOM_ARCHIVE`). The protocol is in
//! `xep::muc`, which loads a vhost's rooms on first use and saves a room whole (its row and
//! all its affiliations) whenever its configuration or affiliations change. Moving the
//! vhost carries the three tables (`vhost_data::VHOST_TABLES`).
//!
//! Storage quota: an archived message reserves its bytes first and is refused past the
//! quota; saving or deleting a room measures the vhost again (rare, small rows); expired
//! archive rows give their bytes back.

use sqlx::Row;

use super::{Store, StoreError, now, quota::row_bytes};

/// One stored room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRoom {
    /// The room's localpart.
    pub room: String,
    /// `xep::muc::room::Saved` as JSON.
    pub config: String,
    /// (bare JID, affiliation, reason).
    pub affiliations: Vec<(String, String, String)>,
}

impl Store {
    /// Every persistent room of the vhost.
    #[tracing::instrument(skip_all, fields(vhost))]
    pub async fn muc_rooms(&self, vhost: &str) -> Result<Vec<StoredRoom>, StoreError> {
        let rooms =
            sqlx::query("SELECT room, config FROM muc_rooms WHERE vhost = $1 ORDER BY room")
                .bind(vhost)
                .fetch_all(&self.db)
                .await?;
        let affiliations = sqlx::query(
            "SELECT room, jid, affiliation, reason FROM muc_affiliations WHERE vhost = $1 ORDER BY room, jid",
        )
        .bind(vhost)
        .fetch_all(&self.db)
        .await?;
        let mut out: Vec<StoredRoom> = rooms
            .iter()
            .map(|r| StoredRoom {
                room: r.get("room"),
                config: r.get("config"),
                affiliations: Vec::new(),
            })
            .collect();
        for a in affiliations {
            let room: String = a.get("room");
            if let Some(r) = out.iter_mut().find(|r| r.room == room) {
                r.affiliations
                    .push((a.get("jid"), a.get("affiliation"), a.get("reason")));
            }
        }
        Ok(out)
    }

    /// Saves a room whole: its row, and exactly `affiliations` as its affiliations.
    #[tracing::instrument(skip_all, fields(vhost, room))]
    pub async fn save_muc_room(&self, vhost: &str, room: &StoredRoom) -> Result<(), StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let t = now();
        let updated = sqlx::query(
            "UPDATE muc_rooms SET config = $1, updated_at = $2 WHERE vhost = $3 AND room = $4",
        )
        .bind(&room.config)
        .bind(t)
        .bind(vhost)
        .bind(&room.room)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO muc_rooms (vhost, room, config, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
            )
            .bind(vhost)
            .bind(&room.room)
            .bind(&room.config)
            .bind(t)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM muc_affiliations WHERE vhost = $1 AND room = $2")
            .bind(vhost)
            .bind(&room.room)
            .execute(&mut *tx)
            .await?;
        for (jid, affiliation, reason) in &room.affiliations {
            sqlx::query(
                "INSERT INTO muc_affiliations (vhost, room, jid, affiliation, reason) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(vhost)
            .bind(&room.room)
            .bind(jid)
            .bind(affiliation)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.remeasure_after_write(vhost).await;
        Ok(())
    }

    /// Forgets a room: its row, affiliations and archive. `keep_archive` keeps the archive
    /// (a persistent room that became temporary and still runs).
    #[tracing::instrument(skip_all, fields(vhost, room))]
    pub async fn delete_muc_room(
        &self,
        vhost: &str,
        room: &str,
        keep_archive: bool,
    ) -> Result<(), StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let mut tables = vec!["muc_affiliations", "muc_rooms"];
        if !keep_archive {
            tables.push("muc_archive");
        }
        for table in tables {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE vhost = $1 AND room = $2"
            ))
            .bind(vhost)
            .bind(room)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.remeasure_after_write(vhost).await;
        Ok(())
    }

    /// Archives one groupchat message of a room; refused past the vhost's storage quota.
    #[tracing::instrument(skip_all, fields(vhost, room))]
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_muc_message(
        &self,
        vhost: &str,
        room: &str,
        id: &str,
        created_us: i64,
        sender: &str,
        nick: &str,
        stanza: &str,
    ) -> Result<(), StoreError> {
        let bytes = row_bytes(
            &[Some(vhost), Some(room), Some(id), Some(sender), Some(nick)],
            2,
        ) + stanza.chars().count() as i64;
        let reserved = self
            .meters
            .reserve(vhost, bytes)
            .map_err(|o| StoreError::StorageFull(vhost.to_string(), o.quota))?;
        sqlx::query(
            "INSERT INTO muc_archive (vhost, room, id, created_us, with_jid, with_resource, stanza, stanza_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(vhost)
        .bind(room)
        .bind(id)
        .bind(created_us)
        .bind(sender)
        .bind(nick)
        .bind(stanza)
        .bind(bytes)
        .execute(&self.db)
        .await?;
        reserved.commit();
        Ok(())
    }

    /// Deletes up to `batch` of the vhost's archived room messages older than `before_us`,
    /// oldest first; returns how many went.
    #[tracing::instrument(skip_all, fields(vhost))]
    pub async fn expire_muc_archive(
        &self,
        vhost: &str,
        before_us: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let rows = sqlx::query(
            "SELECT room, id, stanza_bytes FROM muc_archive WHERE vhost = $1 AND created_us < $2 ORDER BY id LIMIT $3",
        )
        .bind(vhost)
        .bind(before_us)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let mut freed = 0;
        for r in &rows {
            freed += r.get::<i64, _>("stanza_bytes");
            sqlx::query("DELETE FROM muc_archive WHERE vhost = $1 AND room = $2 AND id = $3")
                .bind(vhost)
                .bind(r.get::<String, _>("room"))
                .bind(r.get::<String, _>("id"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.meters.add(vhost, -freed);
        Ok(rows.len() as u64)
    }
}
