//! The round keeper: gathers each domain's results of one interval from every active
//! location (the panel's own and remote `rookery probe` processes) and decides the round
//! once all of them reported, or once the last of them is overdue. A round is down only
//! when a quorum of locations failed ([`crate::uptime::calc::rounds`]). Plain data in,
//! decided rounds out, so the rules are unit-tested without a clock or a database.

use std::collections::{BTreeMap, HashMap};

use super::db::{ReceivedResult, RoundRow, StoredResult};
use crate::uptime::calc::{self, Observation, Verdict};

/// The quorum for `active` locations: `configured`, or a majority when it is 0.
pub fn quorum(configured: usize, active: usize) -> usize {
    if configured == 0 {
        active / 2 + 1
    } else {
        configured
    }
}

/// Decides one domain's round from its results: `None` when too few active locations
/// reported (an unknown round, a gap in the uptime rather than downtime).
pub fn decide(
    round_start: i64,
    results: &[StoredResult],
    interval: i64,
    active: &[String],
    quorum: usize,
) -> Option<RoundRow> {
    let counted: Vec<&StoredResult> = results
        .iter()
        .filter(|r| active.contains(&r.location))
        .collect();
    let obs: Vec<Observation> = counted
        .iter()
        .map(|r| Observation {
            at: r.at,
            location: r.location.clone(),
            ok: r.ok,
            stage: r.stage.clone(),
        })
        .collect();
    let round = calc::rounds(&obs, interval, active, quorum)
        .into_iter()
        .next()?;
    // Each location's latest result counts, as in `calc::rounds`.
    let mut latest: HashMap<&str, &StoredResult> = HashMap::new();
    for r in counted {
        let e = latest.entry(r.location.as_str()).or_insert(r);
        if r.at >= e.at {
            *e = r;
        }
    }
    let failing = latest.values().filter(|r| !r.ok).count() as i64;
    let checked_at = latest.values().map(|r| r.at).max().unwrap_or(round_start);
    let fastest = latest.values().filter(|r| r.ok).map(|r| r.total_ms).min();
    let (up, stage, error) = match round.verdict {
        Verdict::Unknown => return None,
        Verdict::Up => (true, None, None),
        Verdict::Down { stage } => {
            let mut names: Vec<&&StoredResult> = latest.values().collect();
            names.sort_by(|a, b| a.location.cmp(&b.location));
            let error = names
                .iter()
                .find(|r| !r.ok && r.stage.as_deref().unwrap_or(calc::UNKNOWN_STAGE) == stage)
                .and_then(|r| r.error.clone());
            (false, Some(stage), error)
        }
    };
    Some(RoundRow {
        round_start,
        up,
        stage,
        error,
        total_ms: fastest,
        checked_at,
        reporting: latest.len() as i64,
        failing,
    })
}

/// Results waiting for their round to be decided, per domain and round start.
pub struct Keeper {
    interval: i64,
    /// How long after its interval ends a round waits for late locations.
    grace: i64,
    pending: BTreeMap<String, BTreeMap<i64, Vec<StoredResult>>>,
    /// Results already taken, by id, with when they were received (forgotten once older
    /// than the overlap the keeper reads again).
    seen: HashMap<String, i64>,
    /// The newest `received_at` taken so far.
    newest: i64,
}

/// Seconds of results read again on every poll: results stored in the same second as the
/// last poll (or committed late) are not missed; `seen` drops the repeats.
const OVERLAP: i64 = 5;

impl Keeper {
    /// `start`: the panel's clock when it starts; results received from one round back
    /// (and its grace) are read again, so a restart loses no round that was being decided.
    pub fn new(interval: i64, grace: i64, start: i64) -> Self {
        let interval = interval.max(1);
        Self {
            interval,
            grace,
            pending: BTreeMap::new(),
            seen: HashMap::new(),
            newest: start - 2 * interval - grace,
        }
    }

    /// Read stored results received at or after this.
    pub fn since(&self) -> i64 {
        self.newest - OVERLAP
    }

    /// Takes newly read results (repeats are ignored).
    pub fn add(&mut self, received: Vec<ReceivedResult>) {
        for r in received {
            if self.seen.insert(r.id, r.received_at).is_some() {
                continue;
            }
            self.newest = self.newest.max(r.received_at);
            let start = r.result.at.div_euclid(self.interval) * self.interval;
            self.pending
                .entry(r.result.domain_id.clone())
                .or_default()
                .entry(start)
                .or_default()
                .push(r.result);
        }
        let horizon = self.since();
        self.seen.retain(|_, at| *at >= horizon);
    }

    /// Rounds that can be decided at `now`: every active location reported, or the round
    /// is past its interval and grace. A domain's rounds are decided in order: one waiting
    /// for a late location holds back the later ones. Unknown rounds are dropped.
    pub fn ready(&mut self, now: i64, active: &[String], quorum: usize) -> Vec<(String, RoundRow)> {
        let mut out = Vec::new();
        self.pending.retain(|domain_id, rounds| {
            while let Some(entry) = rounds.first_entry() {
                let start = *entry.key();
                let complete = !active.is_empty()
                    && active
                        .iter()
                        .all(|l| entry.get().iter().any(|r| &r.location == l));
                let overdue = now >= start + self.interval + self.grace;
                if !complete && !overdue {
                    break;
                }
                let results = entry.remove();
                if let Some(row) = decide(start, &results, self.interval, active, quorum) {
                    out.push((domain_id.clone(), row));
                }
            }
            !rounds.is_empty()
        });
        out
    }

    /// Results waiting, for tests and metrics.
    pub fn waiting(&self) -> usize {
        self.pending
            .values()
            .map(|r| r.values().map(Vec::len).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        domain: &str,
        location: &str,
        at: i64,
        ok: bool,
        stage: Option<&str>,
    ) -> StoredResult {
        StoredResult {
            domain_id: domain.into(),
            location: location.into(),
            at,
            ok,
            stage: stage.map(Into::into),
            error: stage.map(|s| format!("{s} failed at {location}")),
            total_ms: if ok { 40 + at % 7 } else { 0 },
            stages: Vec::new(),
        }
    }

    fn received(id: &str, received_at: i64, r: StoredResult) -> ReceivedResult {
        ReceivedResult {
            id: id.into(),
            received_at,
            result: r,
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_quorum_is_a_majority_unless_configured() {
        assert_eq!(
            [1, 2, 3, 4, 5].map(|n| quorum(0, n)),
            [1, 2, 2, 3, 3],
            "majorities"
        );
        assert_eq!(quorum(1, 3), 1);
    }

    #[test]
    fn one_failing_location_of_three_is_not_an_outage() {
        let active = names(&["a", "b", "c"]);
        let rs = [
            result("d", "a", 60, false, Some("connect")),
            result("d", "b", 61, true, None),
            result("d", "c", 62, true, None),
        ];
        let row = decide(60, &rs, 60, &active, quorum(0, 3)).unwrap();
        assert!(row.up);
        assert_eq!((row.reporting, row.failing), (3, 1));
        assert_eq!(row.total_ms, Some(rs[1].total_ms.min(rs[2].total_ms)));
        assert_eq!(row.checked_at, 62);
    }

    #[test]
    fn a_quorum_of_failures_is_down_with_the_common_stage_and_its_error() {
        let active = names(&["a", "b", "c"]);
        let rs = [
            result("d", "a", 60, false, Some("tls")),
            result("d", "b", 61, false, Some("connect")),
            result("d", "c", 62, false, Some("tls")),
        ];
        let row = decide(60, &rs, 60, &active, 2).unwrap();
        assert!(!row.up);
        assert_eq!(row.stage.as_deref(), Some("tls"));
        assert_eq!(row.error.as_deref(), Some("tls failed at a"));
        assert_eq!(row.total_ms, None);
    }

    #[test]
    fn too_few_locations_or_only_retired_ones_make_no_round() {
        let active = names(&["a", "b", "c"]);
        let rs = [result("d", "a", 60, false, Some("connect"))];
        assert_eq!(
            decide(60, &rs, 60, &active, 2),
            None,
            "one of a quorum of two"
        );
        let retired = [result("d", "gone", 60, false, Some("connect"))];
        assert_eq!(decide(60, &retired, 60, &active, 1), None);
    }

    #[test]
    fn a_round_is_decided_when_every_location_reported_or_when_overdue() {
        let active = names(&["panel", "remote"]);
        let mut k = Keeper::new(60, 15, 1_000);
        k.add(vec![received(
            "1",
            1_000,
            result("d", "panel", 1_020, false, Some("connect")),
        )]);
        assert!(
            k.ready(1_021, &active, 2).is_empty(),
            "waits for the remote"
        );
        k.add(vec![received(
            "2",
            1_001,
            result("d", "remote", 1_021, false, Some("connect")),
        )]);
        let done = k.ready(1_022, &active, 2);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, "d");
        assert_eq!((done[0].1.round_start, done[0].1.up), (1_020, false));
        assert_eq!(k.waiting(), 0);

        // Only the panel reports the next round: decided after 60 + 15 s, as unknown
        // (quorum two), so nothing comes out and nothing is left.
        k.add(vec![received(
            "3",
            1_081,
            result("d", "panel", 1_080, true, None),
        )]);
        assert!(k.ready(1_100, &active, 2).is_empty());
        assert_eq!(k.waiting(), 1);
        assert!(k.ready(1_080 + 60 + 15, &active, 2).is_empty());
        assert_eq!(k.waiting(), 0);
    }

    #[test]
    fn repeats_are_taken_once_and_rounds_come_out_in_order() {
        let active = names(&["panel", "remote"]);
        let mut k = Keeper::new(10, 5, 100);
        let a = received("a", 100, result("d", "panel", 100, true, None));
        // The remote's result for the first round is late; the second round is complete
        // first but waits for it.
        let b = received("b", 101, result("d", "panel", 110, false, Some("auth")));
        let c = received("c", 101, result("d", "remote", 111, false, Some("auth")));
        k.add(vec![a.clone(), b.clone(), c]);
        k.add(vec![a, b]);
        assert_eq!(k.waiting(), 3, "repeats ignored");
        assert!(k.ready(112, &active, 2).is_empty());
        k.add(vec![received(
            "d",
            112,
            result("d", "remote", 101, true, None),
        )]);
        let done: Vec<(i64, bool)> = k
            .ready(112, &active, 2)
            .into_iter()
            .map(|(_, r)| (r.round_start, r.up))
            .collect();
        assert_eq!(done, [(100, true), (110, false)]);
        assert!(k.since() >= 107, "reads from just before the newest result");
    }

    #[test]
    fn with_no_active_location_rounds_wait_until_overdue() {
        let mut k = Keeper::new(10, 5, 100);
        k.add(vec![received(
            "a",
            100,
            result("d", "panel", 100, true, None),
        )]);
        assert!(k.ready(101, &[], 1).is_empty());
        assert_eq!(k.waiting(), 1);
        assert!(
            k.ready(115, &[], 1).is_empty(),
            "overdue, but counted nowhere"
        );
        assert_eq!(k.waiting(), 0);
    }
}
