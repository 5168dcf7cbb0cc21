//! The node's storage: virtual hosts and their accounts (SCRAM keys only), in SQLite by
//! default or PostgreSQL. The CLI and the running server share it, so `vhost add` and
//! `user add` work whether or not `serve` runs; the server notices vhost changes through
//! the `change_counter` row. Vhosts the panel manages also have a spec (`control`), and
//! every table with per-vhost rows is listed once in `vhost_data`, which deletes, exports
//! and imports a vhost's data table by table. A running node counts each vhost's stored
//! bytes in `quota`, so writes that would pass a vhost's storage quota are refused.

pub mod archive;
mod control;
pub mod muc;
mod pep;
mod private;
mod profile;
mod push;
pub mod quota;
mod roster;
mod upload;
pub mod vhost_data;

use std::{collections::BTreeMap, sync::Arc};

pub use control::{Account, SpecWrite, StoredSpec};
pub use pep::{PepConfig, PepItem, Published};
pub use private::PrivateItem;
pub use push::{MAX_PER_ACCOUNT as MAX_PUSH_REGISTRATIONS, PushRegistration};
pub use upload::{StoredUpload, UploadLimits};

use anyhow::Context;
use rookery_common::{
    control::{VhostFeatures, VhostLimits},
    db::{self, Pool},
};
use sqlx::{Row, migrate::Migrator};

use self::quota::{StorageMeters, row_bytes};

use crate::proto::{
    jid::Jid,
    sasl::{ScramCredentials, ScramHash, derive_credentials, new_salt},
};

pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/node");

#[derive(Clone)]
pub struct Store {
    pub db: Pool,
    /// The most contacts one roster may hold (RFC 6121 §2.3.3 lets a server limit it).
    pub max_roster_items: i64,
    /// The bytes each served vhost stores, against its quota (empty outside a running node).
    pub meters: Arc<StorageMeters>,
}

/// Contacts per roster unless configured otherwise.
pub const DEFAULT_MAX_ROSTER_ITEMS: i64 = 1000;

/// A hosted domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vhost {
    pub domain: String,
    pub cert_path: Option<String>,
    pub key_path: Option<String>,
    /// Log this vhost's stanzas (credentials redacted).
    pub debug_log: bool,
    /// What the applied spec says, for vhosts the panel manages (None: added by the CLI).
    pub policy: Option<VhostPolicy>,
}

/// The parts of an applied spec the running node enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VhostPolicy {
    pub generation: i64,
    pub suspended: bool,
    pub moved_to: Option<String>,
    pub max_accounts: Option<i64>,
    pub max_sessions: Option<i64>,
    /// Writes that would grow the vhost's stored bytes past this are refused.
    pub storage_quota_bytes: Option<i64>,
    /// Offline messages older than this many days are deleted, never delivered.
    pub offline_retention_days: Option<i64>,
    /// XEP-0157 contact addresses by kind (`abuse`, `admin`, …), served in disco#info.
    pub contacts: BTreeMap<String, Vec<String>>,
    /// Archived messages (XEP-0313) older than this many days are deleted.
    pub archive_retention_days: Option<i64>,
    /// XEP-0363 file sizes, quotas and retention.
    pub upload: UploadLimits,
    /// Group chat rooms of the vhost, at most (XEP-0045).
    pub max_rooms: Option<i64>,
    /// Occupants of one room, at most.
    pub max_room_occupants: Option<i64>,
    /// What the domain is allowed (`archive`, `push`, `muc`, `upload` and `registration` are served).
    pub features: VhostFeatures,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not a valid domain: {1}")]
    BadDomain(String, String),
    #[error("{0} is not a valid user name: {1}")]
    BadUsername(String, String),
    #[error("the virtual host {0} already exists")]
    VhostExists(String),
    #[error("there is no virtual host {0}")]
    NoSuchVhost(String),
    #[error("the account {0} already exists")]
    AccountExists(String),
    #[error("{0} has reached its limit of {1} accounts")]
    AccountLimit(String, i64),
    #[error("the password cannot be used: {0}")]
    BadPassword(String),
    #[error("there is no account {0}")]
    NoSuchAccount(String),
    #[error("the roster is full: it holds the most contacts allowed ({0})")]
    RosterFull(i64),
    #[error("the storage of {0} is full (its quota is {1} bytes)")]
    StorageFull(String, i64),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Internal(anyhow::Error::new(e).context("database query"))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Tells running nodes that the vhosts changed (they poll this counter).
async fn bump_vhosts(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE change_counter SET value = value + 1 WHERE name = 'vhosts'")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The vhost columns with the applied spec's policy, if any.
const VHOST_SELECT: &str = "SELECT v.domain, v.cert_path, v.key_path, v.debug_log, s.generation, s.suspended, s.moved_to, s.max_accounts, s.max_sessions, s.spec
     FROM vhosts v LEFT JOIN vhost_specs s ON s.domain = v.domain";

/// The parts of a stored spec that have no column of their own (read from its JSON).
#[derive(Default, serde::Deserialize)]
struct SpecExtras {
    #[serde(default)]
    limits: VhostLimits,
    #[serde(default)]
    contacts: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    features: VhostFeatures,
}

fn vhost_from_row(r: &sqlx::any::AnyRow) -> Vhost {
    let domain: String = r.get("domain");
    let policy = r.get::<Option<i64>, _>("generation").map(|generation| {
        let json: Option<String> = r.get("spec");
        let extras: SpecExtras = serde_json::from_str(json.as_deref().unwrap_or("{}"))
            .unwrap_or_else(|e| {
                tracing::warn!(vhost = %domain, error = %e, "the stored spec cannot be read: its quota, retention and contacts are ignored");
                SpecExtras::default()
            });
        VhostPolicy {
            generation,
            suspended: r.get::<Option<i64>, _>("suspended").unwrap_or(0) != 0,
            moved_to: r.get("moved_to"),
            max_accounts: r.get("max_accounts"),
            max_sessions: r.get("max_sessions"),
            storage_quota_bytes: extras.limits.storage_quota_bytes,
            offline_retention_days: extras.limits.offline_retention_days,
            contacts: extras.contacts,
            archive_retention_days: extras.limits.archive_retention_days,
            upload: UploadLimits::from(&extras.limits),
            max_rooms: extras.limits.max_rooms,
            max_room_occupants: extras.limits.max_room_occupants,
            features: extras.features,
        }
    });
    Vhost {
        domain,
        cert_path: r.get("cert_path"),
        key_path: r.get("key_path"),
        debug_log: r.get::<i64, _>("debug_log") != 0,
        policy,
    }
}

/// A domain as JIDs carry it (RFC 7622 normalisation).
pub fn normalize_domain(domain: &str) -> Result<String, StoreError> {
    let jid =
        Jid::parse(domain).map_err(|e| StoreError::BadDomain(domain.into(), e.to_string()))?;
    if jid.node().is_some() || jid.resource().is_some() {
        return Err(StoreError::BadDomain(
            domain.into(),
            "a domain has no @ or /".into(),
        ));
    }
    Ok(jid.domain().to_string())
}

/// A user name as a JID localpart (RFC 7622, case-mapped).
pub fn normalize_username(vhost: &str, username: &str) -> Result<String, StoreError> {
    let jid = Jid::from_parts(Some(username), vhost, None)
        .map_err(|e| StoreError::BadUsername(username.into(), e.to_string()))?;
    Ok(jid.node().unwrap_or_default().to_string())
}

impl Store {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let db = db::connect(url, 16).await?;
        MIGRATOR
            .run(&db)
            .await
            .context("applying the node's database migrations")?;
        Ok(Self {
            db,
            max_roster_items: DEFAULT_MAX_ROSTER_ITEMS,
            meters: Arc::default(),
        })
    }

    #[tracing::instrument(skip_all)]
    pub async fn vhosts(&self) -> Result<Vec<Vhost>, StoreError> {
        Ok(sqlx::query(&format!("{VHOST_SELECT} ORDER BY v.domain"))
            .fetch_all(&self.db)
            .await?
            .iter()
            .map(vhost_from_row)
            .collect())
    }

    #[tracing::instrument(skip_all)]
    pub async fn vhost(&self, domain: &str) -> Result<Option<Vhost>, StoreError> {
        Ok(sqlx::query(&format!("{VHOST_SELECT} WHERE v.domain = $1"))
            .bind(domain)
            .fetch_optional(&self.db)
            .await?
            .map(|r| vhost_from_row(&r)))
    }

    /// Adds a vhost; `cert` is an optional (chain, key) pair of PEM file paths.
    #[tracing::instrument(skip_all, fields(domain))]
    pub async fn add_vhost(
        &self,
        domain: &str,
        cert: Option<(&str, &str)>,
    ) -> Result<Vhost, StoreError> {
        let domain = normalize_domain(domain)?;
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let inserted = sqlx::query(
            "INSERT INTO vhosts (domain, cert_path, key_path, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&domain)
        .bind(cert.map(|c| c.0))
        .bind(cert.map(|c| c.1))
        .bind(now())
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => return Err(StoreError::VhostExists(domain)),
            Err(e) => return Err(e.into()),
        }
        bump_vhosts(&mut tx).await?;
        tx.commit().await?;
        Ok(Vhost {
            domain,
            cert_path: cert.map(|c| c.0.to_string()),
            key_path: cert.map(|c| c.1.to_string()),
            debug_log: false,
            policy: None,
        })
    }

    /// Turns the stanza log of a vhost on or off; a running node follows within a second.
    #[tracing::instrument(skip_all, fields(domain))]
    pub async fn set_vhost_debug(&self, domain: &str, on: bool) -> Result<(), StoreError> {
        let domain = normalize_domain(domain)?;
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let done = sqlx::query("UPDATE vhosts SET debug_log = $1 WHERE domain = $2")
            .bind(i64::from(on))
            .bind(&domain)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchVhost(domain));
        }
        bump_vhosts(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a vhost with all its data (every table of `vhost_data`) and its spec.
    #[tracing::instrument(skip_all, fields(domain))]
    pub async fn remove_vhost(&self, domain: &str) -> Result<(), StoreError> {
        let domain = normalize_domain(domain)?;
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        vhost_data::delete_all(&mut tx, &domain).await?;
        sqlx::query("DELETE FROM vhost_specs WHERE domain = $1")
            .bind(&domain)
            .execute(&mut *tx)
            .await?;
        let gone = sqlx::query("DELETE FROM vhosts WHERE domain = $1")
            .bind(&domain)
            .execute(&mut *tx)
            .await?;
        if gone.rows_affected() == 0 {
            return Err(StoreError::NoSuchVhost(domain));
        }
        bump_vhosts(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A number that changes whenever the set of vhosts does.
    pub async fn vhosts_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT value FROM change_counter WHERE name = 'vhosts'")
                .fetch_one(&self.db)
                .await?
                .get("value"),
        )
    }

    /// Creates an account with a password (only SCRAM keys are kept), within the vhost's
    /// account limit if its spec sets one.
    #[tracing::instrument(skip_all, fields(vhost, username))]
    pub async fn add_account(
        &self,
        vhost: &str,
        username: &str,
        password: &str,
        iterations: u32,
    ) -> Result<Account, StoreError> {
        self.insert_account(vhost, username, password, iterations, false)
            .await
    }

    /// Creates an account the platform uses (the uptime prober's): not listed with the
    /// customer's accounts and not counted against the account limit.
    #[tracing::instrument(skip_all, fields(vhost, username))]
    pub async fn add_system_account(
        &self,
        vhost: &str,
        username: &str,
        password: &str,
        iterations: u32,
    ) -> Result<Account, StoreError> {
        self.insert_account(vhost, username, password, iterations, true)
            .await
    }

    async fn insert_account(
        &self,
        vhost: &str,
        username: &str,
        password: &str,
        iterations: u32,
        system: bool,
    ) -> Result<Account, StoreError> {
        let vhost = normalize_domain(vhost)?;
        let username = normalize_username(&vhost, username)?;
        let Some(v) = self.vhost(&vhost).await? else {
            return Err(StoreError::NoSuchVhost(vhost));
        };
        let keys = Keys::derive(password, iterations)?;
        let created_at = now();
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        if let Some(max) = v.policy.and_then(|p| p.max_accounts).filter(|_| !system) {
            // An account that exists is that, whether or not the domain is full.
            let exists =
                sqlx::query("SELECT 1 AS one FROM accounts WHERE vhost = $1 AND username = $2")
                    .bind(&vhost)
                    .bind(&username)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
            if exists {
                return Err(StoreError::AccountExists(format!("{username}@{vhost}")));
            }
            let count: i64 =
                sqlx::query("SELECT COUNT(*) AS n FROM accounts WHERE vhost = $1 AND system = 0")
                    .bind(&vhost)
                    .fetch_one(&mut *tx)
                    .await?
                    .get("n");
            if count >= max {
                return Err(StoreError::AccountLimit(vhost, max));
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO accounts (vhost, username, scram_salt, scram_iterations, sha1_stored_key, sha1_server_key, sha256_stored_key, sha256_server_key, created_at, system)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&vhost)
        .bind(&username)
        .bind(hex::encode(&keys.salt))
        .bind(i64::from(iterations))
        .bind(hex::encode(&keys.sha1.stored_key))
        .bind(hex::encode(&keys.sha1.server_key))
        .bind(hex::encode(&keys.sha256.stored_key))
        .bind(hex::encode(&keys.sha256.server_key))
        .bind(created_at)
        .bind(i64::from(system))
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            Err(e) if db::is_unique_violation(&e) => {
                return Err(StoreError::AccountExists(format!("{username}@{vhost}")));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        // Accounts count towards the storage; max_accounts limits them, not the quota.
        self.meters.add(&vhost, keys.row_bytes(&vhost, &username));
        Ok(Account {
            username,
            created_at,
        })
    }

    #[tracing::instrument(skip_all, fields(vhost, username))]
    pub async fn set_password(
        &self,
        vhost: &str,
        username: &str,
        password: &str,
        iterations: u32,
    ) -> Result<(), StoreError> {
        let vhost = normalize_domain(vhost)?;
        let username = normalize_username(&vhost, username)?;
        let keys = Keys::derive(password, iterations)?;
        let done = sqlx::query(
            "UPDATE accounts SET scram_salt = $1, scram_iterations = $2, sha1_stored_key = $3, sha1_server_key = $4,
             sha256_stored_key = $5, sha256_server_key = $6 WHERE vhost = $7 AND username = $8",
        )
        .bind(hex::encode(&keys.salt))
        .bind(i64::from(iterations))
        .bind(hex::encode(&keys.sha1.stored_key))
        .bind(hex::encode(&keys.sha1.server_key))
        .bind(hex::encode(&keys.sha256.stored_key))
        .bind(hex::encode(&keys.sha256.server_key))
        .bind(&vhost)
        .bind(&username)
        .execute(&self.db)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchAccount(format!("{username}@{vhost}")));
        }
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(vhost, username))]
    pub async fn remove_account(&self, vhost: &str, username: &str) -> Result<(), StoreError> {
        let vhost = normalize_domain(vhost)?;
        let username = normalize_username(&vhost, username)?;
        let done = sqlx::query("DELETE FROM accounts WHERE vhost = $1 AND username = $2")
            .bind(&vhost)
            .bind(&username)
            .execute(&self.db)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NoSuchAccount(format!("{username}@{vhost}")));
        }
        // Its roster, vCard, offline messages… went with it: what is left is measured.
        self.remeasure_after_write(&vhost).await;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(vhost))]
    pub async fn accounts(&self, vhost: &str) -> Result<Vec<String>, StoreError> {
        let vhost = normalize_domain(vhost)?;
        if self.vhost(&vhost).await?.is_none() {
            return Err(StoreError::NoSuchVhost(vhost));
        }
        Ok(sqlx::query(
            "SELECT username FROM accounts WHERE vhost = $1 AND system = 0 ORDER BY username",
        )
        .bind(&vhost)
        .fetch_all(&self.db)
        .await?
        .iter()
        .map(|r| r.get("username"))
        .collect())
    }

    /// The SCRAM keys of an account for one hash, if the account exists.
    #[tracing::instrument(skip_all)]
    pub async fn credentials(
        &self,
        vhost: &str,
        username: &str,
        hash: ScramHash,
    ) -> Result<Option<ScramCredentials>, StoreError> {
        let (stored, server) = match hash {
            ScramHash::Sha1 => ("sha1_stored_key", "sha1_server_key"),
            ScramHash::Sha256 => ("sha256_stored_key", "sha256_server_key"),
        };
        let sql = format!(
            "SELECT scram_salt, scram_iterations, {stored} AS stored, {server} AS server FROM accounts WHERE vhost = $1 AND username = $2"
        );
        let Some(row) = sqlx::query(&sql)
            .bind(vhost)
            .bind(username)
            .fetch_optional(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let decode = |col: &str| -> Result<Vec<u8>, StoreError> {
            hex::decode(row.get::<String, _>(col)).map_err(|e| {
                StoreError::Internal(anyhow::anyhow!("stored key {col} is not hex: {e}"))
            })
        };
        Ok(Some(ScramCredentials {
            hash,
            salt: decode("scram_salt")?,
            iterations: u32::try_from(row.get::<i64, _>("scram_iterations")).unwrap_or(4096),
            stored_key: decode("stored")?,
            server_key: decode("server")?,
        }))
    }
}

/// SCRAM keys for both hashes from one password and salt.
struct Keys {
    salt: Vec<u8>,
    sha1: ScramCredentials,
    sha256: ScramCredentials,
}

impl Keys {
    /// The storage of the account row holding these keys (hex text; three numbers:
    /// iterations, creation time, the system flag).
    fn row_bytes(&self, vhost: &str, username: &str) -> i64 {
        let hex: usize = [&self.salt, &self.sha1.stored_key, &self.sha1.server_key]
            .into_iter()
            .chain([&self.sha256.stored_key, &self.sha256.server_key])
            .map(|k| 2 * k.len())
            .sum();
        row_bytes(&[Some(vhost), Some(username)], 3) + hex as i64
    }

    fn derive(password: &str, iterations: u32) -> Result<Self, StoreError> {
        let salt = new_salt();
        let bad = |e: crate::proto::sasl::SaslError| StoreError::BadPassword(e.condition().into());
        Ok(Self {
            sha1: derive_credentials(ScramHash::Sha1, password, &salt, iterations).map_err(bad)?,
            sha256: derive_credentials(ScramHash::Sha256, password, &salt, iterations)
                .map_err(bad)?,
            salt,
        })
    }
}

// ---- offline messages -------------------------------------------------------------------

impl Store {
    #[tracing::instrument(skip_all)]
    pub async fn account_exists(&self, vhost: &str, username: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 AS one FROM accounts WHERE vhost = $1 AND username = $2")
                .bind(vhost)
                .bind(username)
                .fetch_optional(&self.db)
                .await?
                .is_some(),
        )
    }

    /// Stores a message for later; `false` when the account's offline store is full,
    /// [`StoreError::StorageFull`] when the vhost's storage quota would be passed.
    #[tracing::instrument(skip_all)]
    pub async fn store_offline(
        &self,
        vhost: &str,
        username: &str,
        stanza: &str,
        limit: i64,
    ) -> Result<bool, StoreError> {
        let count: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM offline_messages WHERE vhost = $1 AND username = $2",
        )
        .bind(vhost)
        .bind(username)
        .fetch_one(&self.db)
        .await?
        .get("n");
        if count >= limit {
            return Ok(false);
        }
        let id = uuid::Uuid::now_v7().to_string();
        let bytes = offline_row_bytes(&id, vhost, username, stanza.chars().count() as i64);
        let reserved = self
            .meters
            .reserve(vhost, bytes)
            .map_err(|o| StoreError::StorageFull(vhost.to_string(), o.quota))?;
        sqlx::query("INSERT INTO offline_messages (id, vhost, username, stanza, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(vhost)
            .bind(username)
            .bind(stanza)
            .bind(now())
            .execute(&self.db)
            .await?;
        reserved.commit();
        Ok(true)
    }

    /// Takes the stored messages of an account, oldest first, with their arrival times.
    #[tracing::instrument(skip_all)]
    pub async fn take_offline(
        &self,
        vhost: &str,
        username: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let rows: Vec<(String, String, i64)> =
            sqlx::query("SELECT id, stanza, created_at FROM offline_messages WHERE vhost = $1 AND username = $2 ORDER BY created_at, id")
                .bind(vhost)
                .bind(username)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| (r.get("id"), r.get("stanza"), r.get("created_at")))
                .collect();
        // Only what was read: a message arriving meanwhile stays for the next delivery.
        for (id, _, _) in &rows {
            sqlx::query("DELETE FROM offline_messages WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let freed: i64 = rows
            .iter()
            .map(|(id, s, _)| offline_row_bytes(id, vhost, username, s.chars().count() as i64))
            .sum();
        self.meters.add(vhost, -freed);
        Ok(rows.into_iter().map(|(_, s, t)| (s, t)).collect())
    }

    /// Deletes up to `batch` of the vhost's offline messages that arrived before `before`
    /// (Unix seconds), oldest first; returns how many went.
    #[tracing::instrument(skip_all, fields(vhost))]
    pub async fn expire_offline(
        &self,
        vhost: &str,
        before: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let rows: Vec<(String, String, i64)> = sqlx::query(
            "SELECT id, username, CAST(LENGTH(stanza) AS BIGINT) AS chars FROM offline_messages
             WHERE vhost = $1 AND created_at < $2 ORDER BY created_at, id LIMIT $3",
        )
        .bind(vhost)
        .bind(before)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| (r.get("id"), r.get("username"), r.get("chars")))
        .collect();
        let mut freed = 0;
        for (id, username, chars) in &rows {
            sqlx::query("DELETE FROM offline_messages WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            freed += offline_row_bytes(id, vhost, username, *chars);
        }
        tx.commit().await?;
        self.meters.add(vhost, -freed);
        Ok(rows.len() as u64)
    }
}

/// The storage an offline message row takes (see `quota::row_bytes`).
fn offline_row_bytes(id: &str, vhost: &str, username: &str, stanza_chars: i64) -> i64 {
    row_bytes(&[Some(id), Some(vhost), Some(username)], 1) + stanza_chars
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::roster::{Contact, Edit};

    const DOMAIN: &str = "example.com";

    /// A store with one vhost and two accounts, its meter set to `room` bytes more than
    /// it stores (as a running node sets it).
    async fn store_with_room(room: i64) -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        store.add_vhost(DOMAIN, None).await.unwrap();
        for user in ["juliet", "romeo"] {
            store
                .add_account(DOMAIN, user, "a-password-1", 1)
                .await
                .unwrap();
        }
        let stored = store.measure_storage(DOMAIN).await.unwrap();
        store
            .meters
            .configure([(DOMAIN.to_string(), Some(stored + room))]);
        store.remeasure_storage(DOMAIN).await.unwrap();
        (store, dir)
    }

    /// The meter's count equals a fresh measurement of the database.
    async fn assert_counted_exactly(store: &Store) {
        assert_eq!(
            store.meters.get(DOMAIN).unwrap().used(),
            store.measure_storage(DOMAIN).await.unwrap()
        );
    }

    #[tokio::test]
    async fn system_accounts_are_not_listed_and_not_counted_against_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        let policy = VhostPolicy {
            generation: 1,
            max_accounts: Some(1),
            ..Default::default()
        };
        store.apply_spec(DOMAIN, &policy, "{}", None).await.unwrap();
        store
            .add_system_account(DOMAIN, "probe", "a-password-1", 4096)
            .await
            .unwrap();
        // The customer's one account still fits; a second does not.
        store
            .add_account(DOMAIN, "juliet", "a-password-1", 4096)
            .await
            .unwrap();
        assert!(matches!(
            store
                .add_account(DOMAIN, "romeo", "a-password-1", 4096)
                .await,
            Err(StoreError::AccountLimit(..))
        ));
        assert_eq!(store.accounts(DOMAIN).await.unwrap(), vec!["juliet"]);
        assert_eq!(store.account_counts().await.unwrap()[DOMAIN], 1);
        // It logs in like any account.
        assert!(
            store
                .credentials(DOMAIN, "probe", ScramHash::Sha256)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn accounts_offline_messages_and_vcards_are_counted_as_the_usage_report_counts() {
        let (store, _dir) = store_with_room(1_000_000).await;
        assert_counted_exactly(&store).await;
        store
            .add_account(DOMAIN, "mercutio", "a-password-1", 1)
            .await
            .unwrap();
        assert_counted_exactly(&store).await;
        store
            .store_offline(
                DOMAIN,
                "juliet",
                "<message><body>héllo</body></message>",
                10,
            )
            .await
            .unwrap();
        assert_counted_exactly(&store).await;
        store
            .set_vcard(DOMAIN, "juliet", "<vCard><FN>Juliet</FN></vCard>")
            .await
            .unwrap();
        assert_counted_exactly(&store).await;
        store
            .set_vcard(DOMAIN, "juliet", "<vCard><FN>J</FN></vCard>")
            .await
            .unwrap();
        assert_counted_exactly(&store).await;
        store.take_offline(DOMAIN, "juliet").await.unwrap();
        assert_counted_exactly(&store).await;
        let usage = store.storage_bytes().await.unwrap();
        assert_eq!(usage[DOMAIN], store.measure_storage(DOMAIN).await.unwrap());
    }

    #[tokio::test]
    async fn writes_past_the_quota_are_refused_and_deletions_free_room() {
        let (store, _dir) = store_with_room(300).await;
        let message = format!("<message><body>{}</body></message>", "x".repeat(150));
        assert!(
            store
                .store_offline(DOMAIN, "juliet", &message, 10)
                .await
                .unwrap()
        );
        let refused = store.store_offline(DOMAIN, "juliet", &message, 10).await;
        assert!(
            matches!(&refused, Err(StoreError::StorageFull(d, _)) if d == DOMAIN),
            "{refused:?}"
        );
        assert!(
            matches!(
                store.set_vcard(DOMAIN, "romeo", &"v".repeat(200)).await,
                Err(StoreError::StorageFull(..))
            ),
            "a vCard too"
        );
        let me = Jid::parse("romeo@example.com").unwrap();
        let contact = Jid::parse(&format!("{}@example.net", "c".repeat(200))).unwrap();
        let added = store
            .update_contact(&me, &contact, |_| {
                let mut c = Contact::new(contact.clone());
                c.listed = true;
                (Edit::Save(c), ())
            })
            .await;
        assert!(
            matches!(added, Err(StoreError::StorageFull(..))),
            "{added:?}"
        );
        assert!(
            store.roster(&me).await.unwrap().1.is_empty(),
            "nothing was written"
        );
        assert_counted_exactly(&store).await;

        // Taking the message frees its room.
        assert_eq!(store.take_offline(DOMAIN, "juliet").await.unwrap().len(), 1);
        assert!(
            store
                .store_offline(DOMAIN, "juliet", &message, 10)
                .await
                .unwrap()
        );
        // So does deleting an account, with everything it stored.
        store.remove_account(DOMAIN, "juliet").await.unwrap();
        assert_counted_exactly(&store).await;
        store
            .set_vcard(DOMAIN, "romeo", &"v".repeat(200))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_stored_spec_brings_back_its_quota_retention_and_contacts() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        let spec = serde_json::json!({"domain": DOMAIN, "generation": 3,
            "limits": {"storage_quota_bytes": 5000, "offline_retention_days": 30},
            "contacts": {"abuse": ["mailto:abuse@example.com"]}});
        let valid =
            crate::control::spec::validate(DOMAIN, serde_json::from_value(spec).unwrap()).unwrap();
        store
            .apply_spec(DOMAIN, &valid.policy, &valid.stored_json, None)
            .await
            .unwrap();
        let policy = store.vhost(DOMAIN).await.unwrap().unwrap().policy.unwrap();
        assert_eq!(policy, valid.policy);
        assert_eq!(
            (policy.storage_quota_bytes, policy.offline_retention_days),
            (Some(5000), Some(30))
        );
        assert_eq!(policy.contacts["abuse"], vec!["mailto:abuse@example.com"]);
    }
}
