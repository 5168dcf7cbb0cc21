//! Running probes on schedule, the same way in the panel and in a remote `rookery probe`:
//! every domain once per interval at its own stable offset, at most `concurrency` at a
//! time, each in its own task so a slow domain never delays the others, and never two
//! probes of one domain at once.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc::UnboundedSender};

use super::{ProbeResult, ProbeTarget, probe};

/// Where in the interval a domain is probed: a stable offset from its id, the same in
/// every location, so all locations probe a domain in the same round.
pub fn offset(domain_id: &str, interval: u64) -> u64 {
    let h = Sha256::digest(domain_id.as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % interval.max(1)
}

/// A domain to probe, with its probe account.
#[derive(Clone)]
pub struct RunTarget {
    pub domain_id: String,
    pub domain: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: SecretString,
}

/// One finished probe.
pub struct Finished {
    pub domain_id: String,
    pub domain: String,
    /// When it started, in Unix seconds.
    pub at: i64,
    pub result: ProbeResult,
}

pub struct Runner {
    interval: u64,
    timeout: Duration,
    permits: Arc<Semaphore>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    done: UnboundedSender<Finished>,
}

impl Runner {
    pub fn new(
        interval: u64,
        timeout: Duration,
        concurrency: usize,
        done: UnboundedSender<Finished>,
    ) -> Self {
        Self {
            interval: interval.max(1),
            timeout,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            in_flight: Arc::default(),
            done,
        }
    }

    pub fn interval(&self) -> u64 {
        self.interval
    }

    /// Whether it is `domain_id`'s turn in second `now` (and it is not still being probed
    /// from its last turn).
    pub fn is_due(&self, domain_id: &str, now: i64) -> bool {
        let now = u64::try_from(now).unwrap_or(0);
        now % self.interval == offset(domain_id, self.interval)
            && !self
                .in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(domain_id)
    }

    /// Starts a probe in its own task; its result goes to the `done` channel.
    pub fn launch(&self, t: RunTarget, tls: Arc<rustls::ClientConfig>, at: i64) {
        if !self
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.domain_id.clone())
        {
            return;
        }
        let (permits, in_flight, done, timeout) = (
            self.permits.clone(),
            self.in_flight.clone(),
            self.done.clone(),
            self.timeout,
        );
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let target = ProbeTarget {
                host: t.host,
                port: t.port,
                domain: t.domain.clone(),
                username: t.username,
                password: t.password,
                tls,
            };
            let result = probe(&target, timeout).await;
            in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&t.domain_id);
            let _ = done.send(Finished {
                domain_id: t.domain_id,
                domain: t.domain,
                at,
                result,
            });
        });
    }
}

#[cfg(test)]
mod tests {
    use super::offset;

    #[test]
    fn offsets_are_stable_and_spread_over_the_interval() {
        assert_eq!(offset("a", 60), offset("a", 60));
        let mut seen = std::collections::HashSet::new();
        for i in 0..600 {
            let o = offset(&format!("domain-{i}"), 60);
            assert!(o < 60);
            seen.insert(o);
        }
        assert!(seen.len() > 50, "600 domains use most of the 60 slots");
        assert_eq!(offset("x", 1), 0);
    }
}
