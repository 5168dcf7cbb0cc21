//! Leader leases, so several panel processes can serve one database. Background work that
//! must run once per deployment (the reconciler, the node poller, the prober, the sweeps)
//! runs only in the process holding its lease: a row in `leases` with the holder and an
//! expiry, renewed every third of its term. Another process takes the lease over once it
//! has expired (the holder crashed or lost the database), and a holder that cannot renew
//! in time stops its work before anyone else can start it.

use std::{future::Future, time::Duration};

use crate::{db::Pool, state::AppState};

/// This process's name in the lease table: unique per start.
pub fn holder_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default();
        format!("{host}/{}/{}", std::process::id(), crate::clock::new_id())
    })
}

/// Takes or renews the lease `name` until `now + term`; true when this holder has it.
pub async fn acquire(
    db: &Pool,
    name: &str,
    holder: &str,
    now: i64,
    term: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at < $4",
    )
    .bind(name)
    .bind(holder)
    .bind(now + term)
    .bind(now)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the lease up (a clean shutdown), so a standby takes over at once.
pub async fn release(db: &Pool, name: &str, holder: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
        .bind(name)
        .bind(holder)
        .execute(db)
        .await?;
    Ok(())
}

/// Who holds the lease `name` now, if anyone.
pub async fn holder(db: &Pool, name: &str, now: i64) -> Result<Option<String>, sqlx::Error> {
    use sqlx::Row;
    sqlx::query("SELECT holder FROM leases WHERE name = $1 AND expires_at >= $2")
        .bind(name)
        .bind(now)
        .fetch_optional(db)
        .await?
        .map(|r| r.try_get("holder"))
        .transpose()
}

/// Runs `work()` while this process holds the lease `name`: starts it when the lease is
/// won, aborts it when the lease cannot be renewed before it expires. Never returns.
pub async fn run_as_leader<F, Fut>(state: AppState, name: &'static str, work: F)
where
    F: Fn(AppState) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let term = state.settings.lease_secs.max(3);
    let me = holder_id();
    let mut running: Option<tokio::task::JoinHandle<()>> = None;
    // Until when the lease is ours for sure (by our clock).
    let mut held_until = i64::MIN;
    loop {
        let now = state.clock.now();
        match acquire(&state.db, name, me, now, term).await {
            Ok(true) => {
                held_until = now + term;
                if running.as_ref().is_none_or(|t| t.is_finished()) {
                    tracing::info!(lease = name, "this panel process leads");
                    running = Some(tokio::spawn(work(state.clone())));
                }
            }
            Ok(false) => held_until = i64::MIN,
            Err(e) => tracing::warn!(lease = name, error = %e, "renewing a lease failed"),
        }
        // Stop a little before the term ends, so two processes never overlap.
        if state.clock.now() >= held_until.saturating_sub(1)
            && let Some(task) = running.take()
        {
            task.abort();
            tracing::warn!(lease = name, "lease lost: another panel process takes over");
        }
        tokio::time::sleep(Duration::from_millis(
            u64::try_from(term).unwrap_or(15) * 1000 / 3,
        ))
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> Pool {
        let db = crate::db::connect("sqlite::memory:", 1).await.unwrap();
        sqlx::query(include_str!("../../migrations/panel/0009_leases.sql"))
            .execute(&db)
            .await
            .unwrap();
        db
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_the_lease_expires() {
        let db = pool().await;
        assert!(acquire(&db, "probe", "a", 100, 15).await.unwrap());
        assert!(
            !acquire(&db, "probe", "b", 101, 15).await.unwrap(),
            "a holds it"
        );
        assert!(
            acquire(&db, "probe", "a", 105, 15).await.unwrap(),
            "a renews"
        );
        assert!(
            !acquire(&db, "probe", "b", 119, 15).await.unwrap(),
            "renewed to 120"
        );
        assert!(
            acquire(&db, "other", "b", 119, 15).await.unwrap(),
            "leases are separate"
        );
        assert_eq!(
            holder(&db, "probe", 119).await.unwrap().as_deref(),
            Some("a")
        );
        assert!(
            acquire(&db, "probe", "b", 121, 15).await.unwrap(),
            "expired: b takes over"
        );
        assert!(!acquire(&db, "probe", "a", 122, 15).await.unwrap());
        release(&db, "probe", "a").await.unwrap();
        assert_eq!(
            holder(&db, "probe", 122).await.unwrap().as_deref(),
            Some("b"),
            "only the holder releases"
        );
        release(&db, "probe", "b").await.unwrap();
        assert_eq!(holder(&db, "probe", 122).await.unwrap(), None);
        assert!(acquire(&db, "probe", "a", 123, 15).await.unwrap());
    }
}
