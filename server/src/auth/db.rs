//! SQL for people and their sessions, tokens and failed log-ins.

use sqlx::Row;

use crate::{clock::new_id, db::Pool};

/// A person, as the panel loads them.
#[derive(Clone, Debug)]
pub struct User {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub email_verified: bool,
    pub created_at: i64,
}

const USER_COLUMNS: &str = "id, email, password_hash, is_admin, email_verified_at, created_at";

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        password_hash: row.try_get("password_hash")?,
        is_admin: row.try_get::<i64, _>("is_admin")? != 0,
        email_verified: row
            .try_get::<Option<i64>, _>("email_verified_at")?
            .is_some(),
        created_at: row.try_get("created_at")?,
    })
}

#[tracing::instrument(skip_all)]
pub async fn user_by_email(db: &Pool, normalized: &str) -> Result<Option<User>, sqlx::Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE email_normalized = $1");
    sqlx::query(&sql)
        .bind(normalized)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

#[tracing::instrument(skip_all)]
pub async fn user_by_id(db: &Pool, id: &str) -> Result<Option<User>, sqlx::Error> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    sqlx::query(&sql)
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(user_from_row)
        .transpose()
}

/// A new person. Fails with a unique violation when the address is taken.
pub struct NewUser<'a> {
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub password_hash: &'a str,
    pub is_admin: bool,
    pub verified: bool,
}

#[tracing::instrument(skip_all)]
pub async fn insert_user<'c, E>(exec: E, u: NewUser<'_>, now: i64) -> Result<String, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let id = new_id();
    sqlx::query(
        "INSERT INTO users (id, email, email_normalized, password_hash, is_admin, email_verified_at, created_at, password_changed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&id)
    .bind(u.email)
    .bind(u.email_normalized)
    .bind(u.password_hash)
    .bind(i64::from(u.is_admin))
    .bind(u.verified.then_some(now))
    .bind(now)
    .execute(exec)
    .await?;
    Ok(id)
}

#[tracing::instrument(skip_all)]
pub async fn set_password(
    db: &Pool,
    user_id: &str,
    hash: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, password_changed_at = $2 WHERE id = $3")
        .bind(hash)
        .bind(now)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn mark_verified(db: &Pool, user_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE users SET email_verified_at = $1 WHERE id = $2 AND email_verified_at IS NULL",
    )
    .bind(now)
    .bind(user_id)
    .execute(db)
    .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn count_admins(db: &Pool) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM users WHERE is_admin = 1")
        .fetch_one(db)
        .await?
        .try_get("n")
}

// ---- sessions -------------------------------------------------------------------------

pub struct NewSession<'a> {
    pub id_hash: &'a str,
    pub user_id: &'a str,
    pub expires_at: i64,
    pub ip: &'a str,
    pub user_agent: &'a str,
}

#[tracing::instrument(skip_all)]
pub async fn insert_session(db: &Pool, s: NewSession<'_>, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, created_at, last_seen_at, expires_at, ip, user_agent)
         VALUES ($1, $2, $3, $3, $4, $5, $6)",
    )
    .bind(s.id_hash)
    .bind(s.user_id)
    .bind(now)
    .bind(s.expires_at)
    .bind(s.ip)
    .bind(s.user_agent)
    .execute(db)
    .await?;
    Ok(())
}

/// The session's user and when it was last seen, if it is still alive.
#[tracing::instrument(skip_all)]
pub async fn live_session(
    db: &Pool,
    id_hash: &str,
    now: i64,
    idle_timeout: i64,
) -> Result<Option<(User, i64)>, sqlx::Error> {
    let sql = format!(
        "SELECT s.last_seen_at, {} FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3",
        USER_COLUMNS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let row = sqlx::query(&sql)
        .bind(id_hash)
        .bind(now)
        .bind(now - idle_timeout)
        .fetch_optional(db)
        .await?;
    row.map(|r| Ok((user_from_row(&r)?, r.try_get("last_seen_at")?)))
        .transpose()
}

#[tracing::instrument(skip_all)]
pub async fn touch_session(db: &Pool, id_hash: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id_hash = $2")
        .bind(now)
        .bind(id_hash)
        .execute(db)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn delete_session(db: &Pool, id_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(db)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn delete_user_sessions(db: &Pool, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn count_live_sessions(
    db: &Pool,
    now: i64,
    idle_timeout: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE expires_at > $1 AND last_seen_at > $2")
        .bind(now)
        .bind(now - idle_timeout)
        .fetch_one(db)
        .await?
        .try_get("n")
}

// ---- emailed tokens ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPurpose {
    Verify,
    Reset,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::Verify => "verify",
            TokenPurpose::Reset => "reset",
        }
    }
}

#[tracing::instrument(skip_all)]
pub async fn insert_email_token(
    db: &Pool,
    hash: &str,
    user_id: &str,
    purpose: TokenPurpose,
    now: i64,
    ttl: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO email_tokens (token_hash, user_id, purpose, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(hash)
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(now)
        .bind(now + ttl)
        .execute(db)
        .await?;
    Ok(())
}

/// The user a live (unused, unexpired) token belongs to.
#[tracing::instrument(skip_all)]
pub async fn email_token_user(
    db: &Pool,
    hash: &str,
    purpose: TokenPurpose,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT user_id FROM email_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3")
        .bind(hash)
        .bind(purpose.as_str())
        .bind(now)
        .fetch_optional(db)
        .await?
        .map(|r| r.try_get("user_id"))
        .transpose()
}

/// Marks a token used; `false` if it was already used (two clicks racing).
#[tracing::instrument(skip_all)]
pub async fn use_email_token(db: &Pool, hash: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE email_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
    )
    .bind(now)
    .bind(hash)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[tracing::instrument(skip_all)]
pub async fn count_recent_tokens(
    db: &Pool,
    user_id: &str,
    purpose: TokenPurpose,
    since: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM email_tokens WHERE user_id = $1 AND purpose = $2 AND created_at > $3")
        .bind(user_id)
        .bind(purpose.as_str())
        .bind(since)
        .fetch_one(db)
        .await?
        .try_get("n")
}

// ---- failed log-ins ---------------------------------------------------------------------

#[tracing::instrument(skip_all)]
pub async fn count_failures(
    db: &Pool,
    scope: &str,
    subject: &str,
    since: i64,
) -> Result<(i64, Option<i64>), sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) AS n, MIN(at) AS oldest FROM login_failures WHERE scope = $1 AND subject = $2 AND at > $3")
        .bind(scope)
        .bind(subject)
        .bind(since)
        .fetch_one(db)
        .await?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

#[tracing::instrument(skip_all)]
pub async fn record_failure(
    db: &Pool,
    scope: &str,
    subject: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO login_failures (id, scope, subject, at) VALUES ($1, $2, $3, $4)")
        .bind(new_id())
        .bind(scope)
        .bind(subject)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

#[tracing::instrument(skip_all)]
pub async fn clear_failures(db: &Pool, scope: &str, subject: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM login_failures WHERE scope = $1 AND subject = $2")
        .bind(scope)
        .bind(subject)
        .execute(db)
        .await?;
    Ok(())
}

/// Deletes what has expired: sessions, tokens, old failures. Run periodically.
#[tracing::instrument(skip_all)]
pub async fn sweep(
    db: &Pool,
    now: i64,
    idle_timeout: i64,
    failure_window: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2")
        .bind(now)
        .bind(now - idle_timeout)
        .execute(db)
        .await?;
    sqlx::query("DELETE FROM email_tokens WHERE expires_at <= $1")
        .bind(now - 7 * 24 * 3600)
        .execute(db)
        .await?;
    sqlx::query("DELETE FROM login_failures WHERE at <= $1")
        .bind(now - failure_window)
        .execute(db)
        .await?;
    Ok(())
}
