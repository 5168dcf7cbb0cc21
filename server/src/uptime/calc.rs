//! Uptime maths and incident logic over plain data: no I/O, no clock, no database.
//!
//! ```text
//!  [Observation]  one probe result per location, every `interval` seconds
//!    ─► rounds(obs, interval, locations, quorum)
//!  [Round]        one verdict per interval: Up | Down { stage } | Unknown
//!    ├─► uptime(rounds, from, to)                  fraction of known rounds that were up
//!    ├─► day_stats(rounds) ─► [DayStats] ─► uptime_from_days(days, from_day, to_day)
//!    │                                       └─► DayStats::uptime ─► day_class (chart bar)
//!    └─► incidents(rounds, N, M)                   the whole history at once, or
//!        IncidentTracker::observe(round)           the same rules one round at a time
//! ```
//!
//! The rules, in one place:
//! - A round is `Down` only when at least `quorum` locations saw the domain fail: one
//!   location's network trouble is not a customer outage. It is `Unknown` when fewer than
//!   `quorum` locations reported at all.
//! - No data is not downtime: `Unknown` rounds, and intervals with no round at all, are left
//!   out of uptime, so a gap neither raises nor lowers it.
//! - Uptime is a fraction in `0.0..=1.0` (multiply by 100 for a percentage), `None` when
//!   there is no known round in the window.
//! - An incident opens after `N` consecutive down rounds and closes after `M` consecutive up
//!   rounds. `Unknown` rounds are skipped as if they were not there: they neither open nor
//!   close an incident, nor break a streak of downs or ups. A prober that loses its own
//!   network for a while therefore neither invents an incident nor ends a real one.

use std::collections::{BTreeMap, HashMap};

/// Seconds in a (UTC) day.
pub const DAY: i64 = 86_400;

/// The probe's stages in the order they run, then the whole-run timeout (the names of
/// [`crate::probe::Stage`]); a tie between failing stages goes to the earliest.
pub const STAGE_ORDER: [&str; 7] = [
    "connect", "tls", "auth", "bind", "ping", "message", "timeout",
];

/// The stage recorded for a failed observation that names none.
pub const UNKNOWN_STAGE: &str = "unknown";

/// One probe result from one location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// When the probe ran, in Unix seconds.
    pub at: i64,
    /// The probe location that ran it.
    pub location: String,
    pub ok: bool,
    /// The failing stage (`"connect"`, `"tls"`, … `"timeout"`); `None` when `ok`.
    pub stage: Option<String>,
}

/// What one round (one interval, all locations) says about a domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Up,
    /// A quorum of locations failed; `stage` is the most common failing stage among the
    /// failing locations.
    Down {
        stage: String,
    },
    /// Fewer than a quorum of locations reported.
    Unknown,
}

/// The verdict for one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// The start of the interval, in Unix seconds (a multiple of the interval).
    pub start: i64,
    pub verdict: Verdict,
}

impl Round {
    fn is_up(&self) -> bool {
        self.verdict == Verdict::Up
    }

    fn is_down(&self) -> bool {
        matches!(self.verdict, Verdict::Down { .. })
    }

    fn is_known(&self) -> bool {
        self.verdict != Verdict::Unknown
    }

    fn stage(&self) -> &str {
        match &self.verdict {
            Verdict::Down { stage } => stage,
            _ => UNKNOWN_STAGE,
        }
    }
}

/// Groups observations into rounds of `interval` seconds (by `at / interval`, so rounds
/// start at multiples of the interval) and gives each a [`Verdict`].
///
/// - Only observations from `locations` (the active ones) count; when a location reported
///   more than once in a round, its latest observation counts.
/// - `quorum` is clamped to `1..=locations.len()`, so a quorum above the number of active
///   locations (one was just retired) still gives verdicts instead of only `Unknown`.
/// - A round with fewer than `quorum` reporting locations is `Unknown`; otherwise it is
///   `Down` when at least `quorum` of them failed, else `Up`.
/// - A `Down` round's stage is the most common failing stage, ties going to the earliest
///   in [`STAGE_ORDER`]; stages outside that list sort after it, by name, and a failure
///   without a stage counts as [`UNKNOWN_STAGE`].
///
/// Rounds come back in time order; intervals without any observation have no round (a gap,
/// which uptime treats like `Unknown`). A non-positive `interval` is treated as 1 second.
pub fn rounds(
    obs: &[Observation],
    interval: i64,
    locations: &[String],
    quorum: usize,
) -> Vec<Round> {
    let interval = interval.max(1);
    let quorum = quorum.clamp(1, locations.len().max(1));

    // round index → location → latest observation there
    let mut by_round: BTreeMap<i64, HashMap<&str, &Observation>> = BTreeMap::new();
    for o in obs {
        if !locations.contains(&o.location) {
            continue;
        }
        let latest = by_round
            .entry(o.at.div_euclid(interval))
            .or_default()
            .entry(o.location.as_str())
            .or_insert(o);
        if o.at >= latest.at {
            *latest = o;
        }
    }

    by_round
        .into_iter()
        .map(|(index, reports)| {
            let failures: Vec<&str> = reports
                .values()
                .filter(|o| !o.ok)
                .map(|o| o.stage.as_deref().unwrap_or(UNKNOWN_STAGE))
                .collect();
            let verdict = if reports.len() < quorum {
                Verdict::Unknown
            } else if failures.len() >= quorum {
                Verdict::Down {
                    stage: most_common_stage(&failures),
                }
            } else {
                Verdict::Up
            };
            Round {
                start: index * interval,
                verdict,
            }
        })
        .collect()
}

/// The most frequent stage in a non-empty list; ties go to the earliest in probe order.
fn most_common_stage(failures: &[&str]) -> String {
    let mut counts: BTreeMap<(usize, &str), usize> = BTreeMap::new();
    for stage in failures {
        let rank = STAGE_ORDER
            .iter()
            .position(|s| s == stage)
            .unwrap_or(STAGE_ORDER.len());
        *counts.entry((rank, stage)).or_default() += 1;
    }
    // `max_by_key` keeps the last maximum, so walk from the latest stage to the earliest.
    counts
        .iter()
        .rev()
        .max_by_key(|(_, count)| **count)
        .map(|((_, stage), _)| (*stage).to_owned())
        .unwrap_or_else(|| UNKNOWN_STAGE.to_owned())
}

/// The fraction of known rounds starting in `[from, to)` that were up; `None` when there
/// is none. `Unknown` rounds and missing rounds are left out: gaps are not downtime.
pub fn uptime(rounds: &[Round], from: i64, to: i64) -> Option<f64> {
    let (up, down) = rounds
        .iter()
        .filter(|r| (from..to).contains(&r.start))
        .fold((0_i64, 0_i64), |(up, down), r| match r.verdict {
            Verdict::Up => (up + 1, down),
            Verdict::Down { .. } => (up, down + 1),
            Verdict::Unknown => (up, down),
        });
    fraction(up, down)
}

fn fraction(up: i64, down: i64) -> Option<f64> {
    let known = up + down;
    (known > 0).then(|| up as f64 / known as f64)
}

/// The day (days since the Unix epoch, UTC) that a Unix time falls in.
pub fn day_of(at: i64) -> i64 {
    at.div_euclid(DAY)
}

/// A daily roll-up of rounds, so long windows (30 and 90 days) read one row per day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayStats {
    /// Days since the Unix epoch (UTC), as [`day_of`] gives.
    pub day: i64,
    /// Up rounds that started that day.
    pub up: i64,
    /// Down rounds that started that day.
    pub down: i64,
}

impl DayStats {
    /// This day's uptime (for its chart bar), `None` when it had no known round.
    pub fn uptime(&self) -> Option<f64> {
        fraction(self.up, self.down)
    }
}

/// Rolls rounds up per day, in day order. A day's counts are what it has (a partial day,
/// today or the first day of monitoring, counts only its rounds); days without any known
/// round have no entry.
pub fn day_stats(rounds: &[Round]) -> Vec<DayStats> {
    let mut days: BTreeMap<i64, DayStats> = BTreeMap::new();
    for r in rounds.iter().filter(|r| r.is_known()) {
        let day = day_of(r.start);
        let stats = days.entry(day).or_insert(DayStats {
            day,
            up: 0,
            down: 0,
        });
        if r.is_up() {
            stats.up += 1;
        } else {
            stats.down += 1;
        }
    }
    days.into_values().collect()
}

/// Uptime over the days in `[from_day, to_day)` from daily roll-ups: all their up rounds
/// over all their known rounds (so a partial day weighs what it has, not a full day), `None`
/// when there is no known round. Several entries for one day add up.
pub fn uptime_from_days(days: &[DayStats], from_day: i64, to_day: i64) -> Option<f64> {
    let (up, down) = days
        .iter()
        .filter(|d| (from_day..to_day).contains(&d.day))
        .fold((0, 0), |(up, down), d| (up + d.up, down + d.down));
    fraction(up, down)
}

/// The colour class of a day's bar in the 90-day chart, from its uptime fraction:
/// - `"nodata"`: no known round that day;
/// - `"ok"`: at least 99.9 % (about 1.4 minutes of downtime a day at most);
/// - `"degraded"`: at least 99 % (up to about 14.4 minutes down);
/// - `"down"`: less than that.
pub fn day_class(uptime: Option<f64>) -> &'static str {
    match uptime {
        None => "nodata",
        Some(u) if u >= 0.999 => "ok",
        Some(u) if u >= 0.99 => "degraded",
        Some(_) => "down",
    }
}

/// A stretch of downtime: from `open_after` consecutive down rounds to `close_after`
/// consecutive up rounds (unknown rounds skipped).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incident {
    /// The start of the first down round of the streak that opened it.
    pub started: i64,
    /// The start of the first of the up rounds that closed it; `None` while open.
    pub ended: Option<i64>,
    /// The failing stage of the first down round.
    pub stage: String,
    /// Down rounds from `started` until it closed (or until now), including downs between
    /// ups too few to close it.
    pub down_rounds: usize,
}

/// The incidents in a history of rounds (in time order), oldest first; the last one may
/// still be open. `open_after` and `close_after` below 1 count as 1.
///
/// Unknown rounds are skipped (see the module docs); flapping shorter than `open_after`
/// downs never opens an incident, and ups shorter than `close_after` never close one.
/// [`IncidentTracker`] gives the same incidents one round at a time.
pub fn incidents(rounds: &[Round], open_after: usize, close_after: usize) -> Vec<Incident> {
    let (open_after, close_after) = (open_after.max(1), close_after.max(1));
    let known: Vec<&Round> = rounds.iter().filter(|r| r.is_known()).collect();

    let mut found = Vec::new();
    let mut from = 0;
    while let Some(opened) = find_run(&known, from, Round::is_down, open_after) {
        let closed = find_run(&known, opened + open_after, Round::is_up, close_after);
        let until = closed.unwrap_or(known.len());
        found.push(Incident {
            started: known[opened].start,
            ended: closed.map(|c| known[c].start),
            stage: known[opened].stage().to_owned(),
            down_rounds: known[opened..until].iter().filter(|r| r.is_down()).count(),
        });
        match closed {
            Some(c) => from = c + close_after,
            None => break,
        }
    }
    found
}

/// Where the first run of `len` consecutive rounds matching `matches` starts, at or
/// after `from`.
fn find_run(
    known: &[&Round],
    from: usize,
    matches: fn(&Round) -> bool,
    len: usize,
) -> Option<usize> {
    let mut run = 0;
    for (i, r) in known.iter().enumerate().skip(from) {
        run = if matches(r) { run + 1 } else { 0 };
        if run == len {
            return Some(i + 1 - len);
        }
    }
    None
}

/// What a new round changed, for the live prober to alert on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    Opened { started: i64, stage: String },
    Closed { started: i64, ended: i64 },
}

/// Where an [`IncidentTracker`] is between rounds. Plain data, so the prober can keep it
/// (or rebuild it by replaying recent rounds) across restarts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackerState {
    /// No open incident; `downs` consecutive down rounds so far, the first of which
    /// started at `first_down` with `stage`.
    Closed {
        downs: usize,
        first_down: Option<(i64, String)>,
    },
    /// An incident is open; `ups` consecutive up rounds so far, the first at `first_up`.
    Open {
        started: i64,
        stage: String,
        down_rounds: usize,
        ups: usize,
        first_up: Option<i64>,
    },
}

impl Default for TrackerState {
    fn default() -> Self {
        TrackerState::Closed {
            downs: 0,
            first_down: None,
        }
    }
}

/// The incident rules of [`incidents`], one round at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IncidentTracker {
    /// Consecutive down rounds that open an incident (below 1 counts as 1).
    pub open_after: usize,
    /// Consecutive up rounds that close it (below 1 counts as 1).
    pub close_after: usize,
    pub state: TrackerState,
}

impl IncidentTracker {
    /// A tracker with no open incident and no streak.
    pub fn new(open_after: usize, close_after: usize) -> Self {
        IncidentTracker {
            open_after,
            close_after,
            state: TrackerState::default(),
        }
    }

    /// Takes the next round (in time order) and says whether it opened or closed an
    /// incident. Unknown rounds change nothing.
    pub fn observe(&mut self, round: &Round) -> Option<Transition> {
        let (open_after, close_after) = (self.open_after.max(1), self.close_after.max(1));
        match (&mut self.state, &round.verdict) {
            (_, Verdict::Unknown) => None,
            (TrackerState::Closed { downs, first_down }, Verdict::Up) => {
                *downs = 0;
                *first_down = None;
                None
            }
            (TrackerState::Closed { downs, first_down }, Verdict::Down { stage }) => {
                *downs += 1;
                let (started, stage) = first_down
                    .get_or_insert_with(|| (round.start, stage.clone()))
                    .clone();
                if *downs < open_after {
                    return None;
                }
                self.state = TrackerState::Open {
                    started,
                    stage: stage.clone(),
                    down_rounds: *downs,
                    ups: 0,
                    first_up: None,
                };
                Some(Transition::Opened { started, stage })
            }
            (
                TrackerState::Open {
                    down_rounds,
                    ups,
                    first_up,
                    ..
                },
                Verdict::Down { .. },
            ) => {
                *down_rounds += 1;
                *ups = 0;
                *first_up = None;
                None
            }
            (
                TrackerState::Open {
                    started,
                    ups,
                    first_up,
                    ..
                },
                Verdict::Up,
            ) => {
                *ups += 1;
                let ended = *first_up.get_or_insert(round.start);
                if *ups < close_after {
                    return None;
                }
                let started = *started;
                self.state = TrackerState::default();
                Some(Transition::Closed { started, ended })
            }
        }
    }

    /// The incident open now, if any.
    pub fn open_incident(&self) -> Option<Incident> {
        match &self.state {
            TrackerState::Open {
                started,
                stage,
                down_rounds,
                ..
            } => Some(Incident {
                started: *started,
                ended: None,
                stage: stage.clone(),
                down_rounds: *down_rounds,
            }),
            TrackerState::Closed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60;

    fn locs(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn ok(at: i64, location: &str) -> Observation {
        Observation {
            at,
            location: location.to_owned(),
            ok: true,
            stage: None,
        }
    }

    fn fail(at: i64, location: &str, stage: &str) -> Observation {
        Observation {
            at,
            location: location.to_owned(),
            ok: false,
            stage: Some(stage.to_owned()),
        }
    }

    fn up(start: i64) -> Round {
        Round {
            start,
            verdict: Verdict::Up,
        }
    }

    fn down(start: i64, stage: &str) -> Round {
        Round {
            start,
            verdict: Verdict::Down {
                stage: stage.to_owned(),
            },
        }
    }

    fn unknown(start: i64) -> Round {
        Round {
            start,
            verdict: Verdict::Unknown,
        }
    }

    /// Rounds one minute apart from a pattern: `u` up, `d` down (at "auth"), `?` unknown.
    fn pattern(p: &str) -> Vec<Round> {
        p.chars()
            .enumerate()
            .map(|(i, c)| {
                let start = i as i64 * MIN;
                match c {
                    'u' => up(start),
                    'd' => down(start, "auth"),
                    '?' => unknown(start),
                    other => panic!("bad pattern char {other}"),
                }
            })
            .collect()
    }

    fn verdicts(rounds: &[Round]) -> Vec<Verdict> {
        rounds.iter().map(|r| r.verdict.clone()).collect()
    }

    fn down_at(stage: &str) -> Verdict {
        Verdict::Down {
            stage: stage.to_owned(),
        }
    }

    // ---- rounds and quorum ----

    #[test]
    fn no_observations_make_no_rounds() {
        assert!(rounds(&[], MIN, &locs(&["a", "b"]), 2).is_empty());
        assert_eq!(uptime(&[], 0, DAY), None);
        assert!(day_stats(&[]).is_empty());
        assert!(incidents(&[], 3, 2).is_empty());
    }

    #[test]
    fn observations_group_into_rounds_starting_at_multiples_of_the_interval() {
        let obs = [ok(125, "a"), ok(61, "a"), ok(179, "a"), ok(0, "a")];
        let r = rounds(&obs, MIN, &locs(&["a"]), 1);
        assert_eq!(r, vec![up(0), up(60), up(120)]);
    }

    #[test]
    fn with_one_location_and_quorum_one_its_failure_is_down() {
        let obs = [ok(0, "a"), fail(60, "a", "tls")];
        let r = rounds(&obs, MIN, &locs(&["a"]), 1);
        assert_eq!(verdicts(&r), vec![Verdict::Up, down_at("tls")]);
    }

    #[test]
    fn with_two_locations_and_quorum_two_one_failing_alone_is_not_down() {
        let l = locs(&["a", "b"]);
        let obs = [
            fail(0, "a", "connect"),
            ok(1, "b"),
            fail(60, "a", "connect"),
            fail(61, "b", "connect"),
        ];
        let r = rounds(&obs, MIN, &l, 2);
        assert_eq!(verdicts(&r), vec![Verdict::Up, down_at("connect")]);
    }

    #[test]
    fn with_two_locations_and_quorum_two_one_report_alone_is_unknown() {
        let l = locs(&["a", "b"]);
        let obs = [fail(0, "a", "connect"), ok(60, "b")];
        let r = rounds(&obs, MIN, &l, 2);
        assert_eq!(verdicts(&r), vec![Verdict::Unknown, Verdict::Unknown]);
    }

    #[test]
    fn with_three_locations_and_quorum_two_two_failures_are_down() {
        let l = locs(&["a", "b", "c"]);
        let obs = [
            // round 0: one of three fails → up
            fail(0, "a", "ping"),
            ok(0, "b"),
            ok(0, "c"),
            // round 1: two of three fail → down
            fail(60, "a", "ping"),
            fail(60, "b", "ping"),
            ok(60, "c"),
            // round 2: only two report, one fails → up
            fail(120, "a", "ping"),
            ok(120, "c"),
            // round 3: only two report, both fail → down
            fail(180, "b", "auth"),
            fail(180, "c", "auth"),
            // round 4: only one reports → unknown, even failing
            fail(240, "a", "auth"),
        ];
        let r = rounds(&obs, MIN, &l, 2);
        assert_eq!(
            verdicts(&r),
            vec![
                Verdict::Up,
                down_at("ping"),
                Verdict::Up,
                down_at("auth"),
                Verdict::Unknown
            ]
        );
    }

    #[test]
    fn with_three_locations_and_quorum_three_every_location_must_fail() {
        let l = locs(&["a", "b", "c"]);
        let obs = [
            fail(0, "a", "tls"),
            fail(0, "b", "tls"),
            ok(0, "c"),
            fail(60, "a", "tls"),
            fail(60, "b", "tls"),
            fail(60, "c", "tls"),
        ];
        let r = rounds(&obs, MIN, &l, 3);
        assert_eq!(verdicts(&r), vec![Verdict::Up, down_at("tls")]);
    }

    #[test]
    fn a_quorum_above_the_active_locations_is_clamped_to_them() {
        let obs = [fail(0, "a", "bind")];
        let r = rounds(&obs, MIN, &locs(&["a"]), 2);
        assert_eq!(verdicts(&r), vec![down_at("bind")]);
        // and a quorum of zero still needs one failure
        let r = rounds(&[ok(0, "a")], MIN, &locs(&["a"]), 0);
        assert_eq!(verdicts(&r), vec![Verdict::Up]);
    }

    #[test]
    fn observations_from_inactive_locations_are_ignored() {
        let l = locs(&["a", "b"]);
        let obs = [
            fail(0, "a", "connect"),
            fail(0, "retired", "connect"),
            ok(0, "b"),
        ];
        assert_eq!(verdicts(&rounds(&obs, MIN, &l, 2)), vec![Verdict::Up]);
        // a round where only an inactive location reported has no round at all
        assert!(rounds(&[fail(0, "retired", "connect")], MIN, &l, 1).is_empty());
    }

    #[test]
    fn a_location_reporting_twice_in_a_round_counts_once_with_its_latest_result() {
        let l = locs(&["a", "b"]);
        // a's retry at 50 succeeded: only b failed, so not down with quorum 2
        let obs = [ok(50, "a"), fail(10, "a", "tls"), fail(20, "b", "tls")];
        assert_eq!(verdicts(&rounds(&obs, MIN, &l, 2)), vec![Verdict::Up]);
        // a's later result failed: two failures
        let obs = [ok(10, "a"), fail(50, "a", "tls"), fail(20, "b", "tls")];
        assert_eq!(verdicts(&rounds(&obs, MIN, &l, 2)), vec![down_at("tls")]);
        // one location twice is still one report: unknown with quorum 2
        let obs = [fail(10, "a", "tls"), fail(50, "a", "tls")];
        assert_eq!(verdicts(&rounds(&obs, MIN, &l, 2)), vec![Verdict::Unknown]);
    }

    #[test]
    fn a_down_rounds_stage_is_the_most_common_failing_stage() {
        let l = locs(&["a", "b", "c"]);
        let obs = [
            fail(0, "a", "message"),
            fail(0, "b", "timeout"),
            fail(0, "c", "timeout"),
        ];
        assert_eq!(
            verdicts(&rounds(&obs, MIN, &l, 2)),
            vec![down_at("timeout")]
        );
    }

    #[test]
    fn a_tie_between_failing_stages_goes_to_the_earliest_in_probe_order() {
        let l = locs(&["a", "b", "c", "d"]);
        let obs = [
            fail(0, "a", "timeout"),
            fail(0, "b", "message"),
            fail(0, "c", "bind"),
            fail(0, "d", "auth"),
            fail(60, "a", "ping"),
            fail(60, "b", "tls"),
            fail(60, "c", "tls"),
            fail(60, "d", "ping"),
        ];
        let r = rounds(&obs, MIN, &l, 2);
        assert_eq!(verdicts(&r), vec![down_at("auth"), down_at("tls")]);
    }

    #[test]
    fn unnamed_and_unlisted_stages_sort_after_the_probe_stages() {
        let l = locs(&["a", "b"]);
        let mut no_stage = fail(0, "a", "x");
        no_stage.stage = None;
        let obs = [no_stage, fail(0, "b", "timeout")];
        assert_eq!(
            verdicts(&rounds(&obs, MIN, &l, 2)),
            vec![down_at("timeout")]
        );
        let mut a = fail(0, "a", "x");
        a.stage = None;
        let mut b = fail(0, "b", "x");
        b.stage = None;
        assert_eq!(
            verdicts(&rounds(&[a, b], MIN, &l, 2)),
            vec![down_at(UNKNOWN_STAGE)]
        );
    }

    #[test]
    fn the_stage_order_is_the_probes() {
        let probe_order: Vec<&str> = crate::probe::Stage::ALL
            .iter()
            .chain([crate::probe::Stage::Timeout].iter())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(probe_order, STAGE_ORDER);
    }

    #[test]
    fn times_before_the_epoch_round_down() {
        let r = rounds(&[ok(-1, "a")], MIN, &locs(&["a"]), 1);
        assert_eq!(r, vec![up(-60)]);
        assert_eq!(day_of(-1), -1);
        assert_eq!(day_of(DAY), 1);
    }

    // ---- uptime ----

    #[test]
    fn one_down_round_in_a_day_of_minutes_is_99_9305_percent() {
        let mut day: Vec<Round> = (0..1440).map(|i| up(i * MIN)).collect();
        day[700] = down(700 * MIN, "ping");
        let u = uptime(&day, 0, DAY).unwrap();
        assert_eq!(u, 1439.0 / 1440.0);
        assert_eq!(format!("{:.4}", u * 100.0), "99.9306");
        assert!((u * 100.0 - 99.930_555_555).abs() < 1e-8);
        assert_eq!(day_class(Some(u)), "ok");
    }

    #[test]
    fn uptime_counts_rounds_in_a_half_open_window() {
        let r = pattern("uudduuuuuu");
        assert_eq!(uptime(&r, 0, 10 * MIN), Some(0.8));
        assert_eq!(uptime(&r, 2 * MIN, 4 * MIN), Some(0.0));
        assert_eq!(uptime(&r, 2 * MIN, 3 * MIN + 1), Some(0.0));
        assert_eq!(uptime(&r, 3 * MIN, 5 * MIN), Some(0.5));
        assert_eq!(uptime(&r, 4 * MIN, 4 * MIN), None);
        assert_eq!(uptime(&r, 10 * MIN, 20 * MIN), None);
    }

    #[test]
    fn unknown_rounds_do_not_count_as_downtime() {
        let r = pattern("u???d???uu");
        assert_eq!(uptime(&r, 0, 10 * MIN), Some(0.75));
        assert_eq!(uptime(&pattern("????"), 0, 10 * MIN), None);
    }

    #[test]
    fn gaps_without_rounds_do_not_count_as_downtime() {
        // an hour up, then nothing for two hours (the prober was down), then an hour up
        let r: Vec<Round> = (0..60).chain(180..240).map(|i| up(i * MIN)).collect();
        assert_eq!(uptime(&r, 0, 4 * 3600), Some(1.0));
        assert_eq!(uptime(&r, 3600, 3 * 3600), None);
        // the same through rounds(): a silent gap gives no rounds rather than down ones
        let obs: Vec<Observation> = (0..5).chain(10..15).map(|i| ok(i * MIN, "a")).collect();
        let r = rounds(&obs, MIN, &locs(&["a"]), 1);
        assert_eq!(r.len(), 10);
        assert_eq!(uptime(&r, 0, 15 * MIN), Some(1.0));
    }

    // ---- daily roll-ups ----

    #[test]
    fn day_stats_roll_up_rounds_per_utc_day() {
        let mut r: Vec<Round> = (0..1440).map(|i| up(i * MIN)).collect();
        r[10] = down(10 * MIN, "tls");
        r[11] = unknown(11 * MIN);
        r.push(down(DAY + 5 * MIN, "auth"));
        r.push(unknown(2 * DAY));
        assert_eq!(
            day_stats(&r),
            vec![
                DayStats {
                    day: 0,
                    up: 1438,
                    down: 1
                },
                DayStats {
                    day: 1,
                    up: 0,
                    down: 1
                },
            ]
        );
    }

    #[test]
    fn partial_days_count_what_they_have() {
        // day 0: monitoring started at noon, all up; day 1: a full day with 6 down rounds;
        // day 2: today, 3 hours so far with 1 down round
        let mut r: Vec<Round> = (720..1440).map(|i| up(i * MIN)).collect();
        r.extend((0..1440).map(|i| {
            let start = DAY + i * MIN;
            if i < 6 {
                down(start, "ping")
            } else {
                up(start)
            }
        }));
        r.extend((0..180).map(|i| {
            let start = 2 * DAY + i * MIN;
            if i == 0 {
                down(start, "ping")
            } else {
                up(start)
            }
        }));
        let days = day_stats(&r);
        assert_eq!(days.len(), 3);
        assert_eq!(days[0].uptime(), Some(1.0));
        assert_eq!(days[1].uptime(), Some(1434.0 / 1440.0));
        assert_eq!(days[2].uptime(), Some(179.0 / 180.0));
        let expected = (720.0 + 1434.0 + 179.0) / (720.0 + 1440.0 + 180.0);
        assert_eq!(uptime_from_days(&days, 0, 3), Some(expected));
        // the roll-up gives the same answer as the rounds themselves
        assert_eq!(uptime(&r, 0, 3 * DAY), Some(expected));
        assert_eq!(uptime_from_days(&days, 1, 2), uptime(&r, DAY, 2 * DAY));
    }

    #[test]
    fn uptime_from_days_reads_a_half_open_range_of_days() {
        let days = [
            DayStats {
                day: 10,
                up: 1440,
                down: 0,
            },
            DayStats {
                day: 11,
                up: 1000,
                down: 440,
            },
            DayStats {
                day: 12,
                up: 0,
                down: 0,
            },
        ];
        assert_eq!(uptime_from_days(&days, 10, 11), Some(1.0));
        assert_eq!(uptime_from_days(&days, 10, 12), Some(2440.0 / 2880.0));
        assert_eq!(uptime_from_days(&days, 12, 13), None);
        assert_eq!(uptime_from_days(&days, 0, 10), None);
        assert_eq!(uptime_from_days(&[], 0, 90), None);
        // a 90-day window over a service with 30 days of history counts those 30 days
        let month: Vec<DayStats> = (60..90)
            .map(|day| DayStats {
                day,
                up: 1439,
                down: 1,
            })
            .collect();
        assert_eq!(uptime_from_days(&month, 0, 90), Some(1439.0 / 1440.0));
    }

    #[test]
    fn day_classes_follow_the_documented_thresholds() {
        assert_eq!(day_class(None), "nodata");
        assert_eq!(day_class(Some(1.0)), "ok");
        assert_eq!(day_class(Some(999.0 / 1000.0)), "ok");
        assert_eq!(day_class(Some(1439.0 / 1440.0)), "ok");
        assert_eq!(day_class(Some(1438.0 / 1440.0)), "degraded");
        assert_eq!(day_class(Some(99.0 / 100.0)), "degraded");
        assert_eq!(day_class(Some(1425.0 / 1440.0)), "down");
        assert_eq!(day_class(Some(0.0)), "down");
        assert_eq!(
            day_class(
                DayStats {
                    day: 0,
                    up: 0,
                    down: 0
                }
                .uptime()
            ),
            "nodata"
        );
    }

    // ---- incidents ----

    #[test]
    fn an_incident_opens_after_exactly_n_consecutive_downs() {
        assert!(incidents(&pattern("uudduu"), 3, 2).is_empty());
        let found = incidents(&pattern("uudddu"), 3, 2);
        assert_eq!(
            found,
            vec![Incident {
                started: 2 * MIN,
                ended: None,
                stage: "auth".into(),
                down_rounds: 3
            }]
        );
    }

    #[test]
    fn an_incident_closes_after_exactly_m_consecutive_ups() {
        let found = incidents(&pattern("ddduu"), 3, 3);
        assert_eq!(found[0].ended, None);
        let found = incidents(&pattern("ddduuud"), 3, 3);
        assert_eq!(
            found,
            vec![Incident {
                started: 0,
                ended: Some(3 * MIN),
                stage: "auth".into(),
                down_rounds: 3
            }]
        );
    }

    #[test]
    fn an_incident_still_open_at_the_end_has_no_end() {
        let found = incidents(&pattern("uuddddddud"), 2, 2);
        assert_eq!(
            found,
            vec![Incident {
                started: 2 * MIN,
                ended: None,
                stage: "auth".into(),
                down_rounds: 7
            }]
        );
    }

    #[test]
    fn flapping_neither_opens_nor_closes_incidents() {
        // downs never reach 3 in a row
        assert!(incidents(&pattern("duddudduddudd"), 3, 2).is_empty());
        // once open, ups never reach 3 in a row: one long incident, still open
        let found = incidents(&pattern("ddduduudduududu"), 3, 3);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ended, None);
        assert_eq!(found[0].down_rounds, 3 + 1 + 2 + 1 + 1);
        // then it settles
        let found = incidents(&pattern("ddduduudduududuuuu"), 3, 3);
        assert_eq!(found[0].ended, Some(14 * MIN));
    }

    #[test]
    fn unknown_rounds_neither_open_close_nor_break_a_streak() {
        // d ? d ? d: three downs in a row once the unknowns are skipped
        let found = incidents(&pattern("ud?d?du"), 3, 2);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].started, MIN);
        assert_eq!(found[0].down_rounds, 3);
        // unknowns alone never open one
        assert!(incidents(&pattern("??????"), 1, 1).is_empty());
        // ... nor close one: u ? ? u closes with M = 2, at the first of the two ups
        let found = incidents(&pattern("dd????u??u"), 2, 2);
        assert_eq!(found[0].ended, Some(6 * MIN));
        assert_eq!(incidents(&pattern("dd??????u?"), 2, 2)[0].ended, None);
    }

    #[test]
    fn an_incident_reports_the_stage_of_its_first_down_round() {
        let r = vec![
            up(0),
            down(60, "tls"),
            down(120, "connect"),
            down(180, "connect"),
            up(240),
        ];
        assert_eq!(incidents(&r, 3, 1)[0].stage, "tls");
    }

    #[test]
    fn several_incidents_come_back_oldest_first() {
        let found = incidents(&pattern("ddduudd?duuuddd"), 2, 2);
        let spans: Vec<(i64, Option<i64>, usize)> = found
            .iter()
            .map(|i| (i.started / MIN, i.ended.map(|e| e / MIN), i.down_rounds))
            .collect();
        assert_eq!(spans, vec![(0, Some(3), 3), (5, Some(9), 3), (12, None, 3)]);
    }

    #[test]
    fn thresholds_below_one_count_as_one() {
        let found = incidents(&pattern("udu"), 0, 0);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ended, Some(2 * MIN));
        let mut t = IncidentTracker::new(0, 0);
        assert_eq!(
            t.observe(&down(0, "tls")),
            Some(Transition::Opened {
                started: 0,
                stage: "tls".into()
            })
        );
    }

    // ---- the tracker ----

    #[test]
    fn the_tracker_reports_opening_and_closing_on_the_right_rounds() {
        let mut t = IncidentTracker::new(2, 2);
        let r = pattern("uddud?uu");
        let got: Vec<Option<Transition>> = r.iter().map(|r| t.observe(r)).collect();
        assert_eq!(
            got,
            vec![
                None,
                None,
                Some(Transition::Opened {
                    started: MIN,
                    stage: "auth".into()
                }),
                None,
                None,
                None,
                None,
                Some(Transition::Closed {
                    started: MIN,
                    ended: 6 * MIN
                }),
            ]
        );
        assert_eq!(t.state, TrackerState::default());
        assert_eq!(t.open_incident(), None);
    }

    /// Replays rounds through a tracker and rebuilds the incidents from its transitions.
    fn replay(rounds: &[Round], open_after: usize, close_after: usize) -> Vec<Incident> {
        let mut t = IncidentTracker::new(open_after, close_after);
        let mut found: Vec<Incident> = Vec::new();
        for r in rounds {
            let before = t.open_incident();
            match t.observe(r) {
                Some(Transition::Opened { started, stage }) => {
                    assert!(before.is_none(), "opened twice");
                    let open = t.open_incident().unwrap();
                    assert_eq!((open.started, &open.stage), (started, &stage));
                }
                Some(Transition::Closed { started, ended }) => {
                    let before = before.expect("closed without an open incident");
                    assert_eq!(before.started, started);
                    found.push(Incident {
                        ended: Some(ended),
                        ..before
                    });
                }
                None => {}
            }
        }
        found.extend(t.open_incident());
        found
    }

    fn assert_agree(rounds: &[Round], open_after: usize, close_after: usize) {
        assert_eq!(
            replay(rounds, open_after, close_after),
            incidents(rounds, open_after, close_after),
            "N={open_after} M={close_after} rounds={rounds:?}"
        );
    }

    #[test]
    fn the_tracker_agrees_with_the_batch_function_on_every_short_sequence() {
        // every sequence of up to 8 rounds over up, down (two stages) and unknown
        let stages = ["tls", "ping"];
        for len in 0..=8u32 {
            for code in 0..4usize.pow(len) {
                let mut c = code;
                let r: Vec<Round> = (0..len as i64)
                    .map(|i| {
                        let start = i * MIN;
                        let v = c % 4;
                        c /= 4;
                        match v {
                            0 => up(start),
                            1 => unknown(start),
                            k => down(start, stages[k - 2]),
                        }
                    })
                    .collect();
                for (n, m) in [(1, 1), (2, 1), (1, 2), (2, 3), (3, 2)] {
                    assert_agree(&r, n, m);
                }
            }
        }
    }

    #[test]
    fn the_tracker_agrees_with_the_batch_function_on_long_random_sequences() {
        // a small xorshift: deterministic, no dependency
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            // bias towards runs so incidents actually open and close
            let down_bias = next() % 60 + 20;
            let mut last_down = false;
            let r: Vec<Round> = (0..500)
                .map(|i| {
                    let start = i * MIN;
                    let roll = next() % 100;
                    if roll < 5 {
                        return unknown(start);
                    }
                    let keep = next() % 100 < down_bias;
                    last_down = if keep { last_down } else { !last_down };
                    if last_down {
                        down(start, STAGE_ORDER[(next() % 7) as usize])
                    } else {
                        up(start)
                    }
                })
                .collect();
            let n = (next() % 5 + 1) as usize;
            let m = (next() % 5 + 1) as usize;
            assert_agree(&r, n, m);
        }
    }

    #[test]
    fn observations_to_incidents_end_to_end_with_a_flaky_location() {
        // three locations, quorum 2; location "c" has its own network trouble all along
        let l = locs(&["a", "b", "c"]);
        let mut obs = Vec::new();
        for i in 0..30 {
            let at = i * MIN + 7;
            obs.push(fail(at, "c", "connect"));
            if (10..15).contains(&i) {
                // a real outage seen from a and b
                obs.push(fail(at, "a", "auth"));
                obs.push(fail(at + 1, "b", "auth"));
            } else if (20..25).contains(&i) {
                // the prober at b is silent: a alone plus the flaky c
                obs.push(ok(at, "a"));
            } else {
                obs.push(ok(at, "a"));
                obs.push(ok(at + 2, "b"));
            }
        }
        let r = rounds(&obs, MIN, &l, 2);
        assert_eq!(r.len(), 30);
        // rounds 20..25: a up, c failing: two reports, one failure → up, not down
        assert!(r[20..25].iter().all(|r| r.verdict == Verdict::Up));
        assert_eq!(uptime(&r, 0, 30 * MIN), Some(25.0 / 30.0));
        let found = incidents(&r, 3, 2);
        assert_eq!(
            found,
            vec![Incident {
                started: 10 * MIN,
                ended: Some(15 * MIN),
                stage: "auth".into(),
                down_rounds: 5
            }]
        );
        assert_eq!(replay(&r, 3, 2), found);
    }
}
