//! The availability probe: a real XMPP login to a hosted domain, as a customer's chat app
//! would do it, reporting success or the stage that failed, with the latency of each stage.
//!
//! ```text
//!  ProbeTarget ─► probe(target, timeout)
//!    Connect  TCP to host:port
//!    Tls      stream header → features → <starttls/> → <proceed/> → TLS handshake, the
//!             certificate verified for the domain (SNI) against the caller's trust roots
//!    Auth     new stream → SASL SCRAM-SHA-256 (scram.rs), the server's signature checked
//!    Bind     new stream → resource binding (a fresh `rookery-probe-…` resource)
//!    Ping     XEP-0199 ping to the domain → result
//!    Message  a chat message to our own full JID → the same message back
//!    then `</stream:stream>`, a short wait for the server's, and the TLS close
//!  ─► ProbeResult { ok, failed_stage, during, error, stages: [(stage, duration)], total }
//! ```
//!
//! The whole run is bounded by one timeout; when it fires, the result's stage is
//! [`Stage::Timeout`] and `during` names the stage that was running. The server is not
//! trusted: reads are bounded by the node's stream parser with tight limits, a parse
//! error ends the probe, and everything it says is clipped before it reaches a result.
//!
//! [`StageClock`] does the bookkeeping as plain data (instants in, durations out), so the
//! rules for what a result says are unit tested without a network.

mod client;
pub mod db;
pub mod remote;
pub mod rounds;
pub mod runner;
pub mod scheduler;
pub mod scram;
mod tls;

use std::{fmt, sync::Arc, time::Duration};

use secrecy::SecretString;
use tokio::time::Instant;

pub use client::{probe, send_message};
pub use tls::{tls_config_webpki, tls_config_with_pems, tls_config_with_roots};

/// A step of the probe, in the order they run; [`Stage::Timeout`] is the failure when
/// the probe as a whole ran out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Connect,
    Tls,
    Auth,
    Bind,
    Ping,
    Message,
    Timeout,
}

impl Stage {
    /// The stages a successful probe goes through, in order.
    pub const ALL: [Stage; 6] = [
        Stage::Connect,
        Stage::Tls,
        Stage::Auth,
        Stage::Bind,
        Stage::Ping,
        Stage::Message,
    ];

    /// The stable lower-case name (for storage, metrics labels and the API).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Tls => "tls",
            Stage::Auth => "auth",
            Stage::Bind => "bind",
            Stage::Ping => "ping",
            Stage::Message => "message",
            Stage::Timeout => "timeout",
        }
    }

    /// The stage with this name (`"connect"`, … `"timeout"`).
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL
            .into_iter()
            .chain([Stage::Timeout])
            .find(|s| s.as_str() == name)
    }

    /// What the stage is waiting for, as the end of "no … within 10 s".
    fn awaited(self) -> &'static str {
        match self {
            Stage::Connect => "TCP connection",
            Stage::Tls => "completed STARTTLS and TLS handshake",
            Stage::Auth => "completed authentication",
            Stage::Bind => "resource binding",
            Stage::Ping => "answer to the ping",
            Stage::Message => "echo of the probe message",
            Stage::Timeout => "result",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where and as whom to log in.
#[derive(Clone, Debug)]
pub struct ProbeTarget {
    /// The address to connect to (a host name or an IP address): the node serving the
    /// domain, not necessarily what the domain's SRV records say.
    pub host: String,
    pub port: u16,
    /// The XMPP domain: the stream's `to`, the TLS server name, the JID's domain.
    pub domain: String,
    /// The probe account's local part.
    pub username: String,
    pub password: SecretString,
    /// Trust roots and TLS settings ([`tls_config_webpki`], [`tls_config_with_roots`]).
    pub tls: Arc<rustls::ClientConfig>,
}

/// What one probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    /// Every stage passed.
    pub ok: bool,
    /// The stage that failed, or [`Stage::Timeout`]; `None` when `ok`.
    pub failed_stage: Option<Stage>,
    /// The stage that was running when the probe failed (the same as `failed_stage`
    /// unless that is `Timeout`); `None` when `ok`.
    pub during: Option<Stage>,
    /// A short reason for people (`not-authorized`, `see-other-host 1.2.3.4`, …); `None`
    /// when `ok`.
    pub error: Option<String>,
    /// The stages that completed, in order, with how long each took.
    pub stages: Vec<(Stage, Duration)>,
    /// From the start of the probe to its end (the clean close included).
    pub total: Duration,
}

impl ProbeResult {
    /// How long `stage` took, if it completed.
    /// The failing stage's name, `None` when the probe passed.
    pub fn stage_name(&self) -> Option<String> {
        self.failed_stage.map(|s| s.as_str().to_string())
    }

    /// The whole run in milliseconds.
    pub fn total_ms(&self) -> i64 {
        i64::try_from(self.total.as_millis()).unwrap_or(i64::MAX)
    }

    /// Each stage's duration in milliseconds, by stage name, in the order they ran.
    pub fn stage_ms(&self) -> impl Iterator<Item = (String, f64)> + '_ {
        self.stages
            .iter()
            .map(|(s, d)| (s.as_str().to_string(), d.as_secs_f64() * 1000.0))
    }

    pub fn duration_of(&self, stage: Stage) -> Option<Duration> {
        self.stages
            .iter()
            .find(|(s, _)| *s == stage)
            .map(|(_, d)| *d)
    }
}

/// How a probe run ended, before the bookkeeping turns it into a [`ProbeResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The run returned without error.
    Done,
    /// The running stage failed for this reason.
    Failed(String),
    /// The overall timeout (this long) fired.
    TimedOut(Duration),
}

/// Which stage is running since when, and how long the finished ones took.
#[derive(Debug)]
pub(crate) struct StageClock {
    started: Instant,
    running: Option<(Stage, Instant)>,
    done: Vec<(Stage, Duration)>,
}

impl StageClock {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            started: now,
            running: None,
            done: Vec::with_capacity(Stage::ALL.len()),
        }
    }

    /// Ends the running stage (if any) and starts `stage`.
    pub(crate) fn enter(&mut self, stage: Stage, now: Instant) {
        self.complete(now);
        self.running = Some((stage, now));
    }

    /// Ends the running stage: what follows (the close) is not timed as a stage.
    pub(crate) fn complete(&mut self, now: Instant) {
        if let Some((stage, since)) = self.running.take() {
            self.done
                .push((stage, now.saturating_duration_since(since)));
        }
    }

    /// The result of a run that ended at `now` with `outcome`. A failure is blamed on the
    /// stage that was running; a timeout after the last stage (during the close) is no
    /// failure.
    pub(crate) fn finish(mut self, outcome: Outcome, now: Instant) -> ProbeResult {
        let total = now.saturating_duration_since(self.started);
        let running = self.running.map(|(stage, _)| stage);
        let (failed_stage, error) = match (outcome, running) {
            (Outcome::Done, _) | (Outcome::TimedOut(_), None) => {
                self.complete(now);
                (None, None)
            }
            (Outcome::Failed(reason), stage) => {
                (Some(stage.unwrap_or(Stage::Connect)), Some(reason))
            }
            (Outcome::TimedOut(limit), Some(stage)) => {
                (Some(Stage::Timeout), Some(timeout_message(stage, limit)))
            }
        };
        ProbeResult {
            ok: failed_stage.is_none(),
            during: failed_stage.and(running),
            failed_stage,
            error,
            stages: self.done,
            total,
        }
    }
}

/// "no answer to the ping within 10 s".
fn timeout_message(stage: Stage, limit: Duration) -> String {
    format!("no {} within {}", stage.awaited(), human_duration(limit))
}

/// `10 s`, `1.5 s`, `250 ms`.
fn human_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{} s", d.as_secs())
    } else if d >= Duration::from_secs(1) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{} ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_successful_run_records_every_stage_with_its_duration() {
        let t0 = Instant::now();
        let mut clock = StageClock::new(t0);
        for (i, stage) in Stage::ALL.into_iter().enumerate() {
            clock.enter(stage, t0 + ms(10 * i as u64));
        }
        clock.complete(t0 + ms(60));
        let result = clock.finish(Outcome::Done, t0 + ms(75));
        assert!(result.ok);
        assert_eq!(result.failed_stage, None);
        assert_eq!(result.during, None);
        assert_eq!(result.error, None);
        assert_eq!(
            result.stages,
            Stage::ALL.map(|s| (s, ms(10))).to_vec(),
            "each stage took 10 ms"
        );
        assert_eq!(result.total, ms(75));
        assert_eq!(result.duration_of(Stage::Ping), Some(ms(10)));
    }

    #[test]
    fn a_failure_is_blamed_on_the_running_stage_and_keeps_the_finished_ones() {
        let t0 = Instant::now();
        let mut clock = StageClock::new(t0);
        clock.enter(Stage::Connect, t0);
        clock.enter(Stage::Tls, t0 + ms(3));
        clock.enter(Stage::Auth, t0 + ms(20));
        let result = clock.finish(Outcome::Failed("not-authorized".into()), t0 + ms(50));
        assert!(!result.ok);
        assert_eq!(result.failed_stage, Some(Stage::Auth));
        assert_eq!(result.during, Some(Stage::Auth));
        assert_eq!(result.error.as_deref(), Some("not-authorized"));
        assert_eq!(
            result.stages,
            vec![(Stage::Connect, ms(3)), (Stage::Tls, ms(17))]
        );
        assert_eq!(result.duration_of(Stage::Auth), None);
    }

    #[test]
    fn a_timeout_names_the_stage_that_was_running() {
        let t0 = Instant::now();
        let mut clock = StageClock::new(t0);
        for stage in [
            Stage::Connect,
            Stage::Tls,
            Stage::Auth,
            Stage::Bind,
            Stage::Ping,
        ] {
            clock.enter(stage, t0);
        }
        let result = clock.finish(Outcome::TimedOut(Duration::from_secs(10)), t0 + ms(10_000));
        assert!(!result.ok);
        assert_eq!(result.failed_stage, Some(Stage::Timeout));
        assert_eq!(result.during, Some(Stage::Ping));
        assert_eq!(
            result.error.as_deref(),
            Some("no answer to the ping within 10 s")
        );
        assert_eq!(result.stages.len(), 4);
    }

    #[test]
    fn a_timeout_during_the_close_is_not_a_failure() {
        let t0 = Instant::now();
        let mut clock = StageClock::new(t0);
        for stage in Stage::ALL {
            clock.enter(stage, t0);
        }
        clock.complete(t0 + ms(5));
        let result = clock.finish(Outcome::TimedOut(Duration::from_secs(1)), t0 + ms(1000));
        assert!(result.ok);
        assert_eq!(result.stages.len(), 6);
    }

    #[test]
    fn timeouts_read_naturally_at_any_scale() {
        assert_eq!(
            timeout_message(Stage::Tls, ms(300)),
            "no completed STARTTLS and TLS handshake within 300 ms"
        );
        assert_eq!(
            timeout_message(Stage::Connect, ms(1500)),
            "no TCP connection within 1.5 s"
        );
        assert_eq!(
            timeout_message(Stage::Message, Duration::from_secs(60)),
            "no echo of the probe message within 60 s"
        );
    }

    #[test]
    fn stage_names_are_stable_and_ordered() {
        let names: Vec<_> = Stage::ALL.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["connect", "tls", "auth", "bind", "ping", "message"]);
        assert!(Stage::Connect < Stage::Message);
        assert_eq!(Stage::Timeout.as_str(), "timeout");
    }
}
