//! What the control API keeps: applied vhost specs (one row per managed vhost, the highest
//! generation wins), account pages, and the per-vhost figures of usage reports.

use std::collections::HashMap;

use sqlx::Row;

use super::{Store, StoreError, VhostPolicy, bump_vhosts, normalize_domain, now, vhost_data};

/// An account as the control API lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    /// Unix seconds, UTC.
    pub created_at: i64,
}

/// What [`Store::apply_spec`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecWrite {
    /// The spec is stored and the change counter bumped.
    Applied,
    /// A spec of this generation or a newer one was already there (its generation).
    AlreadyAt(i64),
}

/// A spec as stored: its generation and its JSON (without the TLS key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSpec {
    pub generation: i64,
    pub json: String,
}

impl Store {
    /// The spec applied to `domain`, if the panel manages it.
    #[tracing::instrument(skip_all)]
    pub async fn vhost_spec(&self, domain: &str) -> Result<Option<StoredSpec>, StoreError> {
        Ok(
            sqlx::query("SELECT generation, spec FROM vhost_specs WHERE domain = $1")
                .bind(domain)
                .fetch_optional(&self.db)
                .await?
                .map(|r| StoredSpec {
                    generation: r.get("generation"),
                    json: r.get("spec"),
                }),
        )
    }

    /// Stores a spec of `domain` (already normalised and validated) in one transaction:
    /// creates the vhost if it is new, points it at its certificate files (None: a
    /// self-signed one), keeps the spec, bumps the change counter. Nothing changes when
    /// the stored generation is the same or newer.
    #[tracing::instrument(skip_all, fields(domain, generation = policy.generation))]
    pub async fn apply_spec(
        &self,
        domain: &str,
        policy: &VhostPolicy,
        spec_json: &str,
        cert: Option<(&str, &str)>,
    ) -> Result<SpecWrite, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let applied: Option<i64> =
            sqlx::query("SELECT generation FROM vhost_specs WHERE domain = $1")
                .bind(domain)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.get("generation"));
        if let Some(g) = applied
            && g >= policy.generation
        {
            return Ok(SpecWrite::AlreadyAt(g));
        }
        sqlx::query(
            "INSERT INTO vhosts (domain, cert_path, key_path, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (domain) DO UPDATE SET cert_path = excluded.cert_path, key_path = excluded.key_path",
        )
        .bind(domain)
        .bind(cert.map(|c| c.0))
        .bind(cert.map(|c| c.1))
        .bind(now())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO vhost_specs (domain, generation, spec, suspended, moved_to, max_accounts, max_sessions, applied_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (domain) DO UPDATE SET generation = excluded.generation, spec = excluded.spec,
               suspended = excluded.suspended, moved_to = excluded.moved_to, max_accounts = excluded.max_accounts,
               max_sessions = excluded.max_sessions, applied_at = excluded.applied_at",
        )
        .bind(domain)
        .bind(policy.generation)
        .bind(spec_json)
        .bind(i64::from(policy.suspended))
        .bind(policy.moved_to.as_deref())
        .bind(policy.max_accounts)
        .bind(policy.max_sessions)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        bump_vhosts(&mut tx).await?;
        tx.commit().await?;
        Ok(SpecWrite::Applied)
    }

    /// Up to `limit` accounts of a vhost in user-name order, after `after` (exclusive).
    #[tracing::instrument(skip_all, fields(vhost))]
    pub async fn accounts_page(
        &self,
        vhost: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Account>, StoreError> {
        let vhost = normalize_domain(vhost)?;
        if self.vhost(&vhost).await?.is_none() {
            return Err(StoreError::NoSuchVhost(vhost));
        }
        Ok(sqlx::query(
            "SELECT username, created_at FROM accounts WHERE vhost = $1 AND system = 0 AND username > $2
             ORDER BY username LIMIT $3",
        )
        .bind(&vhost)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.db)
        .await?
        .iter()
        .map(|r| Account {
            username: r.get("username"),
            created_at: r.get("created_at"),
        })
        .collect())
    }

    /// Customer accounts per vhost (system accounts left out).
    #[tracing::instrument(skip_all)]
    pub async fn account_counts(&self) -> Result<HashMap<String, i64>, StoreError> {
        Ok(
            sqlx::query(
                "SELECT vhost, COUNT(*) AS n FROM accounts WHERE system = 0 GROUP BY vhost",
            )
            .fetch_all(&self.db)
            .await?
            .iter()
            .map(|r| (r.get("vhost"), r.get("n")))
            .collect(),
        )
    }

    /// Stored bytes per vhost: the lengths of the text in its rows, over every table of
    /// `vhost_data` (numbers count 8 bytes each).
    #[tracing::instrument(skip_all)]
    pub async fn storage_bytes(&self) -> Result<HashMap<String, i64>, StoreError> {
        let mut out: HashMap<String, i64> = HashMap::new();
        for table in vhost_data::VHOST_TABLES {
            for r in sqlx::query(&table.storage_sql())
                .fetch_all(&self.db)
                .await?
            {
                *out.entry(r.get("vhost")).or_default() += r.get::<i64, _>("bytes");
            }
        }
        Ok(out)
    }

    /// Stored bytes of one vhost, counted as [`Store::storage_bytes`] counts them.
    #[tracing::instrument(skip_all, fields(vhost))]
    pub async fn measure_storage(&self, vhost: &str) -> Result<i64, StoreError> {
        let mut total = 0;
        for table in vhost_data::VHOST_TABLES {
            total += sqlx::query(&table.vhost_storage_sql())
                .bind(vhost)
                .fetch_one(&self.db)
                .await?
                .get::<Option<i64>, _>("bytes")
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// Measures a vhost with a storage quota again and sets its meter to what is stored
    /// (nothing to do for a vhost without a quota, or outside a running node).
    pub async fn remeasure_storage(&self, vhost: &str) -> Result<(), StoreError> {
        if let Some(meter) = self.meters.get(vhost)
            && meter.quota().is_some()
        {
            meter.set_used(self.measure_storage(vhost).await?);
        }
        Ok(())
    }

    /// [`Store::remeasure_storage`] after a write that has committed: a failure is logged
    /// (upkeep measures again within a minute), not reported as the write's.
    pub(super) async fn remeasure_after_write(&self, vhost: &str) {
        if let Err(e) = self.remeasure_storage(vhost).await {
            tracing::warn!(
                vhost,
                error = format!("{e:#}"),
                "measuring a vhost's storage failed"
            );
        }
    }
}
