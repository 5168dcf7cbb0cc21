//! Usage figures: per-vhost counters the connections bump (messages in and out, sessions
//! and their peak), and the process and machine figures of `GET /v1/status`, read from
//! `/proc`.
//!
//! A session looks its vhost's [`VhostCounters`] up once, when it binds, and holds the
//! `Arc`: counting a message is one relaxed atomic add, with no map look-up on the routing
//! path. `GET /v1/usage` takes the period's counts and starts a new period; its
//! `messages_in`/`messages_out` count `<message>` stanzas only (presence and iq traffic is
//! protocol chatter, not what a customer calls a message).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The counters of one vhost.
#[derive(Debug, Default)]
pub struct VhostCounters {
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    sessions: AtomicI64,
    peak: AtomicI64,
}

/// A period's counts, taken by [`VhostCounters::take_period`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodCounts {
    pub messages_in: i64,
    pub messages_out: i64,
    pub peak_sessions: i64,
}

impl VhostCounters {
    /// A `<message>` from one of the vhost's clients.
    pub fn message_in(&self) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
    }

    /// A `<message>` written to one of the vhost's clients.
    pub fn message_out(&self) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a new session unless that would pass `max`; false when the limit is reached.
    pub fn try_add_session(&self, max: Option<i64>) -> bool {
        let added =
            self.sessions
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| match max {
                    Some(m) if n >= m => None,
                    _ => Some(n + 1),
                });
        match added {
            Ok(before) => {
                self.peak.fetch_max(before + 1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    pub fn remove_session(&self) {
        self.sessions.fetch_sub(1, Ordering::AcqRel);
    }

    /// Bound sessions now.
    pub fn sessions(&self) -> i64 {
        self.sessions.load(Ordering::Acquire).max(0)
    }

    /// The counts since the previous call; the next period starts with the sessions open now.
    pub fn take_period(&self) -> PeriodCounts {
        let now = self.sessions();
        PeriodCounts {
            messages_in: self.messages_in.swap(0, Ordering::Relaxed) as i64,
            messages_out: self.messages_out.swap(0, Ordering::Relaxed) as i64,
            peak_sessions: self.peak.swap(now, Ordering::Relaxed).max(now),
        }
    }
}

/// What `/proc` says about this process and the machine (zeros where it says nothing).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcFigures {
    pub cpu_seconds: f64,
    pub rss_bytes: i64,
    pub load_average: f64,
    pub memory_total_bytes: i64,
}

/// Reads the figures of this process and machine.
pub fn read_proc() -> ProcFigures {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    ProcFigures {
        cpu_seconds: cpu_seconds(&read("/proc/self/stat")).unwrap_or(0.0),
        rss_bytes: kib_field(&read("/proc/self/status"), "VmRSS:").unwrap_or(0) * 1024,
        load_average: read("/proc/loadavg")
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .unwrap_or(0.0),
        memory_total_bytes: kib_field(&read("/proc/meminfo"), "MemTotal:").unwrap_or(0) * 1024,
    }
}

/// User plus system CPU time from `/proc/<pid>/stat` (fields 14 and 15, in clock ticks
/// of 1/100 s, the USER_HZ every Linux ABI reports). The command name (field 2) may hold
/// spaces and parentheses, so fields are counted after its last `)`.
pub fn cpu_seconds(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (the state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// A `Key:   123 kB` line of `/proc/self/status` or `/proc/meminfo`, in KiB.
pub fn kib_field(text: &str, key: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_the_session_peak_are_counted_per_period() {
        let c = VhostCounters::default();
        for _ in 0..3 {
            assert!(c.try_add_session(None));
        }
        c.remove_session();
        c.remove_session();
        c.message_in();
        c.message_in();
        c.message_out();
        assert_eq!(
            c.take_period(),
            PeriodCounts {
                messages_in: 2,
                messages_out: 1,
                peak_sessions: 3
            }
        );
        // A new period: nothing counted yet, and its peak starts at the one open session.
        assert_eq!(
            c.take_period(),
            PeriodCounts {
                messages_in: 0,
                messages_out: 0,
                peak_sessions: 1
            }
        );
        assert_eq!(c.sessions(), 1);
    }

    #[test]
    fn sessions_beyond_the_limit_are_not_counted() {
        let c = VhostCounters::default();
        assert!(c.try_add_session(Some(2)));
        assert!(c.try_add_session(Some(2)));
        assert!(!c.try_add_session(Some(2)));
        assert_eq!(c.sessions(), 2);
        c.remove_session();
        assert!(c.try_add_session(Some(2)));
        assert!(!c.try_add_session(Some(0)), "a limit of 0 admits nobody");
    }

    #[test]
    fn proc_figures_are_parsed_even_with_odd_command_names() {
        let stat = "4242 (rookery (node) x) S 1 4242 4242 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 9 0 100 1000000 500 18446744073709551615";
        assert_eq!(cpu_seconds(stat), Some(3.25));
        assert_eq!(cpu_seconds("garbage"), None);
        let status = "Name:\trookery-node\nVmPeak:\t  9000 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(2048));
        assert_eq!(
            kib_field("MemTotal:       24576000 kB\n", "MemTotal:"),
            Some(24_576_000)
        );
        let live = read_proc();
        assert!(
            live.rss_bytes > 0 && live.memory_total_bytes > 0,
            "{live:?}"
        );
    }
}
