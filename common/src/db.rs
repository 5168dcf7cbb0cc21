//! Database connections for the panel and the node: SQLite (embedded, the default) or
//! PostgreSQL, through sqlx's `Any` driver, so one set of portable queries serves both.

use std::str::FromStr;

use anyhow::Context;
use sqlx::{
    Executor,
    any::{AnyConnectOptions, AnyPoolOptions},
};

pub type Pool = sqlx::AnyPool;

/// What every SQLite connection runs first: WAL lets readers run beside the writer;
/// busy_timeout makes writers queue instead of failing; foreign keys are off by default.
const SQLITE_SETUP: &str = "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;";

/// A new connection to the pool's database, outside the pool (for a task that keeps one
/// of its own), set up like the pool's.
pub async fn connect_one(pool: &Pool) -> Result<sqlx::AnyConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    let mut conn = pool.connect_options().connect().await?;
    if pool_is_sqlite(pool) {
        conn.execute(SQLITE_SETUP).await?;
    }
    Ok(conn)
}

/// Connects to `url`, creating the SQLite file (and its folder) when needed.
pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Pool> {
    sqlx::any::install_default_drivers();
    let is_sqlite = url.starts_with("sqlite:");
    anyhow::ensure!(
        is_sqlite || url.starts_with("postgres://") || url.starts_with("postgresql://"),
        "database_url must be a sqlite:// or postgres:// URL"
    );
    if is_sqlite
        && let Some(path) = sqlite_path(url)
        && let Some(dir) = std::path::Path::new(&path)
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the database folder {}", dir.display()))?;
    }
    let options = AnyConnectOptions::from_str(url).context("parsing database_url")?;
    let pool = AnyPoolOptions::new()
        .max_connections(if is_sqlite {
            max_connections.min(8)
        } else {
            max_connections
        })
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if is_sqlite {
                    conn.execute(SQLITE_SETUP).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to the database ({})", redact(url)))?;
    Ok(pool)
}

/// Begins a transaction that will write. On SQLite it takes the write lock at once
/// (`BEGIN IMMEDIATE`): a transaction that reads first and writes later otherwise fails with
/// SQLITE_BUSY, without waiting for `busy_timeout`, whenever another connection wrote in
/// between (its read snapshot is stale), and a node's archive writer writes all the time.
/// PostgreSQL needs nothing of the kind.
pub async fn begin_write(
    pool: &Pool,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
    if pool_is_sqlite(pool) {
        pool.begin_with("BEGIN IMMEDIATE").await
    } else {
        pool.begin().await
    }
}

/// Whether the pool's connections are to SQLite.
pub fn pool_is_sqlite(pool: &Pool) -> bool {
    pool.connect_options().database_url.scheme() == "sqlite"
}

/// Whether `url` names a SQLite database.
pub fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

pub fn sqlite_path(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| path.to_string())
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// Whether an error is a unique-constraint violation (on either engine).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(e) => {
            e.is_unique_violation() || e.message().contains("UNIQUE constraint failed")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_path_is_taken_from_the_url() {
        assert_eq!(
            sqlite_path("sqlite://./data/rookery.db?mode=rwc").as_deref(),
            Some("./data/rookery.db")
        );
        assert_eq!(sqlite_path("sqlite::memory:"), None);
    }

    #[test]
    fn passwords_are_redacted_from_urls() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
