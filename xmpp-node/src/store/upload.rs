//! Uploaded files (XEP-0363): one row per completed upload (the bytes are on disk, see
//! `xep::upload`), the sums quotas are checked against, and the node's signing secret.

use rookery_common::control::VhostLimits;
use sqlx::Row;

use super::{Store, StoreError};

/// A vhost's upload limits, from its spec (None: unlimited, or the node's default size).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadLimits {
    pub quota_bytes: Option<i64>,
    pub max_file_bytes: Option<i64>,
    pub quota_bytes_per_account: Option<i64>,
    pub retention_days: Option<i64>,
}

impl From<&VhostLimits> for UploadLimits {
    fn from(l: &VhostLimits) -> Self {
        Self {
            quota_bytes: l.upload_quota_bytes,
            max_file_bytes: l.upload_max_file_bytes,
            quota_bytes_per_account: l.upload_quota_bytes_per_account,
            retention_days: l.upload_retention_days,
        }
    }
}

/// A completed upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredUpload {
    pub vhost: String,
    pub id: String,
    pub username: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub created_at: i64,
}

fn upload_from_row(r: &sqlx::any::AnyRow) -> StoredUpload {
    StoredUpload {
        vhost: r.get("vhost"),
        id: r.get("id"),
        username: r.get("username"),
        filename: r.get("filename"),
        content_type: r.get("content_type"),
        size_bytes: r.get("size_bytes"),
        created_at: r.get("created_at"),
    }
}

const UPLOAD_COLUMNS: &str = "vhost, id, username, filename, content_type, size_bytes, created_at";

impl Store {
    /// Bytes of uploads stored by the account, and by the whole vhost.
    #[tracing::instrument(skip_all)]
    pub async fn upload_usage(
        &self,
        vhost: &str,
        username: &str,
    ) -> Result<(i64, i64), StoreError> {
        let sum = |by_account: bool| async move {
            let sql = if by_account {
                "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS n FROM upload_files WHERE vhost = $1 AND username = $2"
            } else {
                "SELECT CAST(COALESCE(SUM(size_bytes), 0) AS BIGINT) AS n FROM upload_files WHERE vhost = $1"
            };
            let mut q = sqlx::query(sql).bind(vhost);
            if by_account {
                q = q.bind(username);
            }
            Ok::<i64, StoreError>(q.fetch_one(&self.db).await?.get("n"))
        };
        Ok((sum(true).await?, sum(false).await?))
    }

    /// Records a completed upload; false if the id is taken (the slot was used already).
    #[tracing::instrument(skip_all, fields(vhost = %u.vhost))]
    pub async fn add_upload(&self, u: &StoredUpload) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "INSERT INTO upload_files ({UPLOAD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(&u.vhost)
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.filename)
        .bind(&u.content_type)
        .bind(u.size_bytes)
        .bind(u.created_at)
        .execute(&self.db)
        .await;
        match done {
            Ok(_) => Ok(true),
            Err(e) if rookery_common::db::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    #[tracing::instrument(skip_all)]
    pub async fn upload(&self, vhost: &str, id: &str) -> Result<Option<StoredUpload>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM upload_files WHERE vhost = $1 AND id = $2"
        ))
        .bind(vhost)
        .bind(id)
        .fetch_optional(&self.db)
        .await?
        .map(|r| upload_from_row(&r)))
    }

    /// Up to `limit` of the vhost's uploads made before `before` (Unix seconds), oldest
    /// first.
    #[tracing::instrument(skip_all)]
    pub async fn uploads_before(
        &self,
        vhost: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<StoredUpload>, StoreError> {
        Ok(sqlx::query(&format!(
            "SELECT {UPLOAD_COLUMNS} FROM upload_files WHERE vhost = $1 AND created_at < $2 ORDER BY created_at, id LIMIT $3"
        ))
        .bind(vhost)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.db)
        .await?
        .iter()
        .map(upload_from_row)
        .collect())
    }

    #[tracing::instrument(skip_all)]
    pub async fn delete_upload(&self, vhost: &str, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM upload_files WHERE vhost = $1 AND id = $2")
            .bind(vhost)
            .bind(id)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// The node's secret called `name`, made of 32 random bytes (hex) the first time.
    #[tracing::instrument(skip_all)]
    pub async fn node_secret(&self, name: &str) -> Result<String, StoreError> {
        let read = || async {
            Ok::<_, StoreError>(
                sqlx::query("SELECT value FROM node_secrets WHERE name = $1")
                    .bind(name)
                    .fetch_optional(&self.db)
                    .await?
                    .map(|r| r.get::<String, _>("value")),
            )
        };
        if let Some(v) = read().await? {
            return Ok(v);
        }
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        // Two first uses at once: one insert wins, both read the winner.
        let _ = sqlx::query(
            "INSERT INTO node_secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(hex::encode(b))
        .execute(&self.db)
        .await?;
        read()
            .await?
            .ok_or_else(|| anyhow::anyhow!("the secret {name} was not stored").into())
    }
}
