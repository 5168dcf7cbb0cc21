//! A fresh, empty database for each test, on whichever engine the run is for.
//!
//! `ROOKERY_TEST_DATABASE_URL` picks the engine: when it holds a `postgres://` URL to an
//! admin database (as `scripts/test.sh` sets for its PostgreSQL run), every call creates a
//! new database `rookery_test_<uuid>` on that server and returns its URL. When it is unset,
//! every call returns a SQLite file in a new temporary folder. Either way the test gets a
//! database nobody else touches, and the code under test runs its own migrations on it.
//!
//! PostgreSQL test databases are not dropped: the throwaway cluster they live in is deleted
//! when the run ends.

use anyhow::{Context, bail};
use sqlx::{Connection, Executor, PgConnection};

/// Names the environment variable that points the suite at a PostgreSQL admin database.
pub const TEST_DATABASE_URL_VAR: &str = "ROOKERY_TEST_DATABASE_URL";

/// A database that exists only for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL to hand to the code under test (`ROOKERY_DATABASE_URL`).
    pub url: String,
    /// Keeps the SQLite folder alive as long as the database is in use.
    _tmp: Option<tempfile::TempDir>,
}

impl TestDatabase {
    /// The same database for a second process, without owning it (the original removes
    /// it when dropped, so drop this one first).
    pub fn shared(&self) -> TestDatabase {
        TestDatabase {
            url: self.url.clone(),
            _tmp: None,
        }
    }

    /// Tells whether this database lives on PostgreSQL (rather than in a SQLite file).
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

/// Creates a new, empty database on the engine this run is for and returns its URL.
pub async fn fresh_database_url() -> anyhow::Result<TestDatabase> {
    match std::env::var(TEST_DATABASE_URL_VAR) {
        Ok(admin_url) if !admin_url.trim().is_empty() => fresh_postgres(admin_url.trim()).await,
        _ => fresh_sqlite(),
    }
}

fn fresh_sqlite() -> anyhow::Result<TestDatabase> {
    let tmp = tempfile::Builder::new()
        .prefix("rookery-test-db-")
        .tempdir()
        .context("creating a temporary folder for the SQLite test database")?;
    let path = tmp.path().join("rookery.db");
    let path = path
        .to_str()
        .context("the temporary folder's path is not UTF-8")?;
    Ok(TestDatabase {
        url: format!("sqlite://{path}?mode=rwc"),
        _tmp: Some(tmp),
    })
}

async fn fresh_postgres(admin_url: &str) -> anyhow::Result<TestDatabase> {
    let mut url = url::Url::parse(admin_url)
        .with_context(|| format!("{TEST_DATABASE_URL_VAR} is not a URL: {admin_url}"))?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        bail!("{TEST_DATABASE_URL_VAR} must be a postgres:// URL, got {admin_url}");
    }

    let name = format!("rookery_test_{}", uuid::Uuid::now_v7().simple());
    let mut admin = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to the PostgreSQL admin database {admin_url}"))?;
    // The name is ours (a UUID), so quoting it is enough; CREATE DATABASE takes no parameters.
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .with_context(|| format!("creating the test database {name}"))?;
    admin.close().await.ok();

    url.set_path(&format!("/{name}"));
    Ok(TestDatabase {
        url: url.to_string(),
        _tmp: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_sqlite_databases_never_share_a_file() {
        let a = fresh_sqlite().unwrap();
        let b = fresh_sqlite().unwrap();
        assert!(a.url.starts_with("sqlite://") && a.url.ends_with("/rookery.db?mode=rwc"));
        assert_ne!(a.url, b.url);
        assert!(!a.is_postgres());
    }
}
