//! SQL of the REST API's own tables: API keys and the responses kept for idempotent POSTs.

use sqlx::Row;

use super::keys::Scope;
use crate::{clock::new_id, db::Pool, orgs::db::OrgId};

/// A key as the panel lists it and the API checks it.
#[derive(Clone, Debug)]
pub struct KeyRow {
    pub id: String,
    /// None: a platform admin's key.
    pub org_id: Option<OrgId>,
    pub name: String,
    pub prefix: String,
    pub key_hash: String,
    pub scope: Scope,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The owning organisation's kind, read with the key (None for admin keys).
    pub org_is_reseller: bool,
}

impl KeyRow {
    /// `active`, `revoked` or `expired` at `now`.
    pub fn status(&self, now: i64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        }
    }
}

const COLUMNS: &str = "k.id, k.kind, k.org_id, k.name, k.prefix, k.key_hash, k.scope, u.email AS created_by, k.created_at, k.last_used_at, k.expires_at, k.revoked_at, o.is_reseller";
const FROM: &str = "FROM api_keys k LEFT JOIN users u ON u.id = k.created_by LEFT JOIN organisations o ON o.id = k.org_id";

fn from_row(r: &sqlx::any::AnyRow) -> Result<KeyRow, sqlx::Error> {
    let scope: String = r.try_get("scope")?;
    Ok(KeyRow {
        id: r.try_get("id")?,
        org_id: r.try_get::<Option<String>, _>("org_id")?.map(OrgId),
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        key_hash: r.try_get("key_hash")?,
        scope: Scope::parse(&scope)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown scope {scope:?}").into()))?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
        org_is_reseller: r.try_get::<Option<i64>, _>("is_reseller")?.unwrap_or(0) != 0,
    })
}

pub struct NewKeyRow<'a> {
    /// None: an admin key.
    pub org: Option<&'a OrgId>,
    pub name: &'a str,
    pub prefix: &'a str,
    pub key_hash: &'a str,
    pub scope: Scope,
    pub created_by: &'a str,
    pub expires_at: Option<i64>,
}

#[tracing::instrument(skip_all)]
pub async fn insert_key(db: &Pool, k: NewKeyRow<'_>, now: i64) -> Result<String, sqlx::Error> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO api_keys (id, kind, org_id, name, prefix, key_hash, scope, created_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(if k.org.is_some() { "org" } else { "admin" })
    .bind(k.org.map(|o| o.0.as_str()))
    .bind(k.name)
    .bind(k.prefix)
    .bind(k.key_hash)
    .bind(k.scope.as_str())
    .bind(k.created_by)
    .bind(now)
    .bind(k.expires_at)
    .execute(db)
    .await?;
    Ok(id)
}

/// An organisation's keys, or the admin keys with None; newest first.
#[tracing::instrument(skip_all)]
pub async fn keys_of(db: &Pool, org: Option<&OrgId>) -> Result<Vec<KeyRow>, sqlx::Error> {
    let rows = match org {
        Some(org) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} {FROM} WHERE k.org_id = $1 ORDER BY k.created_at DESC, k.id DESC"
            ))
            .bind(&org.0)
            .fetch_all(db)
            .await?
        }
        None => sqlx::query(&format!(
            "SELECT {COLUMNS} {FROM} WHERE k.kind = 'admin' ORDER BY k.created_at DESC, k.id DESC"
        ))
        .fetch_all(db)
        .await?,
    };
    rows.iter().map(from_row).collect()
}

/// The key with this visible prefix, revoked and expired ones included.
#[tracing::instrument(skip_all)]
pub async fn key_by_prefix(db: &Pool, prefix: &str) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} {FROM} WHERE k.prefix = $1"))
        .bind(prefix)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Revokes a key of `org` (an admin key with None); the revoked key, if there was one.
#[tracing::instrument(skip_all)]
pub async fn revoke_key(
    db: &Pool,
    org: Option<&OrgId>,
    id: &str,
    now: i64,
) -> Result<Option<KeyRow>, sqlx::Error> {
    let done = match org {
        Some(org) => sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND org_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(&org.0),
        None => sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND kind = 'admin' AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id),
    }
    .execute(db)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query(&format!("SELECT {COLUMNS} {FROM} WHERE k.id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// Records a use of the key (callers do it at most once a minute per key).
#[tracing::instrument(skip_all)]
pub async fn touch_key(db: &Pool, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

// ---- idempotency ------------------------------------------------------------------------

/// A response kept for an idempotency key.
#[derive(Clone, Debug)]
pub struct Stored {
    pub request_hash: String,
    /// None while the first request is in progress.
    pub status: Option<u16>,
    pub headers: Option<String>,
    pub body: Option<String>,
    pub created_at: i64,
}

/// Claims `(key_id, idempotency_key)` for a new request; `Ok(None)` when claimed, or what
/// is already there.
#[tracing::instrument(skip_all)]
pub async fn claim_idempotency(
    db: &Pool,
    key_id: &str,
    idempotency_key: &str,
    request_hash: &str,
    now: i64,
) -> Result<Option<Stored>, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO api_idempotency (key_id, idempotency_key, request_hash, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .bind(request_hash)
    .bind(now)
    .execute(db)
    .await;
    match inserted {
        Ok(_) => return Ok(None),
        Err(e) if crate::db::is_unique_violation(&e) => {}
        Err(e) => return Err(e),
    }
    let row = sqlx::query(
        "SELECT request_hash, status, headers, body, created_at FROM api_idempotency WHERE key_id = $1 AND idempotency_key = $2",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .fetch_optional(db)
    .await?;
    let Some(r) = row else {
        // Dropped in between (expired): the caller tries again.
        return Ok(Some(Stored {
            request_hash: request_hash.into(),
            status: None,
            headers: None,
            body: None,
            created_at: 0,
        }));
    };
    Ok(Some(Stored {
        request_hash: r.try_get("request_hash")?,
        status: r
            .try_get::<Option<i64>, _>("status")?
            .map(|s| s.clamp(100, 599) as u16),
        headers: r.try_get("headers")?,
        body: r.try_get("body")?,
        created_at: r.try_get("created_at")?,
    }))
}

/// Keeps the response of a claimed request.
#[tracing::instrument(skip_all)]
pub async fn store_idempotent_response(
    db: &Pool,
    key_id: &str,
    idempotency_key: &str,
    status: u16,
    headers: &str,
    body: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE api_idempotency SET status = $1, headers = $2, body = $3 WHERE key_id = $4 AND idempotency_key = $5",
    )
    .bind(i64::from(status))
    .bind(headers)
    .bind(body)
    .bind(key_id)
    .bind(idempotency_key)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets a claim: the request failed on our side (5xx), or the claim expired.
#[tracing::instrument(skip_all)]
pub async fn release_idempotency(
    db: &Pool,
    key_id: &str,
    idempotency_key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM api_idempotency WHERE key_id = $1 AND idempotency_key = $2")
        .bind(key_id)
        .bind(idempotency_key)
        .execute(db)
        .await?;
    Ok(())
}

/// Drops kept responses older than `before`.
#[tracing::instrument(skip_all)]
pub async fn prune_idempotency(db: &Pool, before: i64) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM api_idempotency WHERE created_at < $1")
            .bind(before)
            .execute(db)
            .await?
            .rows_affected(),
    )
}
