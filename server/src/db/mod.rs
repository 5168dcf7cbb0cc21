//! The panel's database: SQLite (embedded, the default) or PostgreSQL, through sqlx's `Any`
//! driver with portable SQL (`$1` parameters, app-generated ids, integer UTC timestamps).
//! Each feature keeps its queries in its own `db` module; this one migrates.

use anyhow::Context;
use sqlx::migrate::Migrator;

pub use rookery_common::db::{Pool, connect, is_unique_violation, redact};

/// The panel schema, applied at every start.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations/panel");

/// Applies the migrations that have not run yet.
pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}

/// For unit tests: an in-memory SQLite database with the panel's schema and one
/// organisation, id `o`, named "Org".
#[cfg(test)]
pub async fn test_db_with_org() -> Pool {
    let db = connect("sqlite::memory:", 1).await.unwrap();
    migrate(&db).await.unwrap();
    sqlx::query("INSERT INTO organisations (id, name, created_at) VALUES ('o', 'Org', 0)")
        .execute(&db)
        .await
        .unwrap();
    db
}
