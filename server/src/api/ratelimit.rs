//! Per-key rate limits: a fixed one-minute window per API key (anonymous requests count per
//! client address), kept in memory by each panel process. With several panels behind a load
//! balancer a key gets the limit at each of them; the limit protects the panel, it is not a
//! billing quota. The window starts with a key's first request after the previous one ended.

use std::{collections::HashMap, sync::Mutex};

/// The verdict on one request, with what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window ends (at least 1).
    pub reset_secs: u64,
}

#[derive(Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, (i64, u32)>>,
}

const WINDOW_SECS: i64 = 60;

impl RateLimiter {
    /// Counts a request of `who` at `now` (Unix seconds) against `limit` per minute.
    pub fn check(&self, who: &str, limit: u32, now: i64) -> Decision {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() > 10_000 {
            windows.retain(|_, (start, _)| now - *start < WINDOW_SECS);
        }
        let entry = windows.entry(who.to_string()).or_insert((now, 0));
        if now - entry.0 >= WINDOW_SECS {
            *entry = (now, 0);
        }
        let allowed = entry.1 < limit;
        if allowed {
            entry.1 += 1;
        }
        Decision {
            allowed,
            limit,
            remaining: limit.saturating_sub(entry.1),
            reset_secs: (entry.0 + WINDOW_SECS - now).max(1) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_limit_per_window_and_then_waits_for_the_reset() {
        let l = RateLimiter::default();
        let first = l.check("k", 3, 1000);
        assert_eq!(
            (first.allowed, first.remaining, first.reset_secs),
            (true, 2, 60)
        );
        assert!(l.check("k", 3, 1010).allowed);
        let third = l.check("k", 3, 1020);
        assert_eq!((third.allowed, third.remaining), (true, 0));
        let refused = l.check("k", 3, 1030);
        assert_eq!(
            (refused.allowed, refused.remaining, refused.reset_secs),
            (false, 0, 30)
        );
        // Another key has its own window.
        assert!(l.check("other", 3, 1030).allowed);
        let next = l.check("k", 3, 1060);
        assert_eq!(
            (next.allowed, next.remaining, next.reset_secs),
            (true, 2, 60)
        );
    }
}
