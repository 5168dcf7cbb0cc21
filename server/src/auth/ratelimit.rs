//! Log-in rate limits: at most `per_account` failed attempts per account and `per_ip` per
//! client address within a sliding window. Counted in the database, so every panel instance
//! of a deployment enforces the same limit.

use super::db;
use crate::{config::LoginLimits, db::Pool};

/// Refused: the person may try again after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after_secs: i64,
}

impl Limited {
    /// The message the log-in form shows.
    pub fn message(&self) -> String {
        let minutes = (self.retry_after_secs + 59) / 60;
        format!(
            "Too many failed log-in attempts. For your security, logging in is paused: try again in {} minute{}, or reset your password.",
            minutes,
            if minutes == 1 { "" } else { "s" }
        )
    }
}

/// Whether another attempt for `account` from `ip` may be checked now.
pub async fn check(
    db: &Pool,
    limits: &LoginLimits,
    account: &str,
    ip: &str,
    now: i64,
) -> Result<Result<(), Limited>, sqlx::Error> {
    let since = now - limits.window_secs;
    for (scope, subject, max) in [
        ("account", account, limits.per_account),
        ("ip", ip, limits.per_ip),
    ] {
        let (count, oldest) = db::count_failures(db, scope, subject, since).await?;
        if count >= max {
            // The window frees up when its oldest failure leaves it.
            let retry = oldest
                .map(|o| o + limits.window_secs - now)
                .unwrap_or(limits.window_secs)
                .max(1);
            return Ok(Err(Limited {
                retry_after_secs: retry,
            }));
        }
    }
    Ok(Ok(()))
}

pub async fn record_failure(
    db: &Pool,
    account: &str,
    ip: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    db::record_failure(db, "account", account, now).await?;
    db::record_failure(db, "ip", ip, now).await
}

/// A successful log-in forgives the account's failures (not the address's).
pub async fn record_success(db: &Pool, account: &str) -> Result<(), sqlx::Error> {
    db::clear_failures(db, "account", account).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_rounds_up_to_whole_minutes() {
        assert!(
            Limited {
                retry_after_secs: 61
            }
            .message()
            .contains("2 minutes")
        );
        assert!(
            Limited {
                retry_after_secs: 30
            }
            .message()
            .contains("1 minute,")
        );
    }
}
