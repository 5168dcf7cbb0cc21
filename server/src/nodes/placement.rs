//! Where a domain goes: a pure function of the pool and the rules, so every case is a unit
//! test. Only active, healthy nodes with the required labels and room below their capacity
//! are candidates. Nodes that would stay below the headroom line are preferred (the pool
//! keeps room before it needs it); beyond it a node is used only when nothing else fits,
//! and the pool page warns. Among the preferred, `spread` picks the least loaded, `pack`
//! the most loaded. When nothing fits, the answer is a reason an admin can act on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Even load: the least loaded node first.
    #[default]
    Spread,
    /// Fill nodes one after another (fewer nodes running).
    Pack,
}

/// The admin's intent for a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Active,
    Cordoned,
    Draining,
}

impl NodeState {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(Self::Active),
            "cordoned" => Some(Self::Cordoned),
            "draining" => Some(Self::Draining),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Cordoned => "cordoned",
            Self::Draining => "draining",
        }
    }
}

/// A node as placement sees it.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub name: String,
    pub state: NodeState,
    /// False when the poller marked it down.
    pub up: bool,
    pub labels: BTreeMap<String, String>,
    pub max_vhosts: i64,
    pub max_sessions: i64,
    /// Domains placed on it (desired, including those still being set up).
    pub vhosts: i64,
    pub sessions: i64,
}

impl Candidate {
    /// The larger of the vhost and session fill, 0.0–1.0+.
    pub fn load(&self) -> f64 {
        let v = ratio(self.vhosts, self.max_vhosts);
        let s = ratio(self.sessions, self.max_sessions);
        v.max(s)
    }

    /// The fill after one more domain.
    fn load_with_one_more(&self) -> f64 {
        ratio(self.vhosts + 1, self.max_vhosts).max(ratio(self.sessions, self.max_sessions))
    }

    fn has_room(&self) -> bool {
        self.vhosts < self.max_vhosts && self.sessions < self.max_sessions
    }
}

fn ratio(used: i64, max: i64) -> f64 {
    if max <= 0 {
        1.0
    } else {
        used as f64 / max as f64
    }
}

#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub policy: Policy,
    /// Share of capacity kept free, in percent (0–90).
    pub headroom_percent: u8,
    /// Labels a node must carry, e.g. region = eu-west.
    pub required_labels: BTreeMap<String, String>,
    /// Nodes not to use (the node a domain is moving away from).
    pub exclude: Vec<String>,
}

impl Rules {
    fn line(&self) -> f64 {
        1.0 - f64::from(self.headroom_percent.min(90)) / 100.0
    }
}

/// Picks a node, or says why none fits.
pub fn place(pool: &[Candidate], rules: &Rules) -> Result<String, String> {
    if pool.is_empty() {
        return Err("The node pool is empty: enroll a node with `rookery-node join`.".into());
    }
    let mut skipped = Skipped::default();
    let mut fits: Vec<&Candidate> = Vec::new();
    for c in pool {
        if rules.exclude.contains(&c.id) {
            continue;
        } else if c.state != NodeState::Active {
            skipped.not_active += 1;
        } else if !c.up {
            skipped.down += 1;
        } else if !rules
            .required_labels
            .iter()
            .all(|(k, v)| c.labels.get(k) == Some(v))
        {
            skipped.labels += 1;
        } else if !c.has_room() {
            skipped.full += 1;
        } else {
            fits.push(c);
        }
    }
    let line = rules.line();
    let preferred: Vec<&Candidate> = fits
        .iter()
        .copied()
        .filter(|c| c.load_with_one_more() <= line)
        .collect();
    let from = if preferred.is_empty() {
        fits
    } else {
        preferred
    };
    let by_load = |a: &Candidate, b: &Candidate| a.load().total_cmp(&b.load());
    let chosen = match rules.policy {
        // Least loaded; ties go to the first name.
        Policy::Spread => from
            .iter()
            .min_by(|a, b| by_load(a, b).then_with(|| a.name.cmp(&b.name))),
        // Most loaded; ties go to the first name too.
        Policy::Pack => from
            .iter()
            .max_by(|a, b| by_load(a, b).then_with(|| b.name.cmp(&a.name))),
    };
    chosen
        .map(|c| c.id.clone())
        .ok_or_else(|| skipped.reason(&rules.required_labels))
}

#[derive(Default)]
struct Skipped {
    not_active: usize,
    down: usize,
    labels: usize,
    full: usize,
}

impl Skipped {
    fn reason(&self, labels: &BTreeMap<String, String>) -> String {
        let mut parts = Vec::new();
        let plural = |n: usize| if n == 1 { "node is" } else { "nodes are" };
        if self.full > 0 {
            parts.push(format!("{} {} at capacity", self.full, plural(self.full)));
        }
        if self.not_active > 0 {
            parts.push(format!(
                "{} {} cordoned or draining",
                self.not_active,
                plural(self.not_active)
            ));
        }
        if self.down > 0 {
            parts.push(format!("{} {} down", self.down, plural(self.down)));
        }
        if self.labels > 0 {
            let wanted = labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            parts.push(format!(
                "{} {} missing the labels {wanted}",
                self.labels,
                plural(self.labels)
            ));
        }
        if parts.is_empty() {
            "No other node is available.".into()
        } else {
            format!(
                "No node fits: {}. The domain is placed as soon as capacity appears.",
                parts.join("; ")
            )
        }
    }
}

/// The pool's fill over its usable nodes, and whether it is past the headroom line
/// (admins are warned: add nodes before they are needed). With nodes but none usable
/// (all cordoned, draining or down) there is no room at all: full, and past the line.
pub fn pool_pressure(pool: &[Candidate], headroom_percent: u8) -> (f64, bool) {
    let usable: Vec<&Candidate> = pool
        .iter()
        .filter(|c| c.state == NodeState::Active && c.up)
        .collect();
    if usable.is_empty() {
        return if pool.is_empty() {
            (0.0, false)
        } else {
            (1.0, true)
        };
    }
    let (vh, vmax, s, smax) = usable.iter().fold((0, 0, 0, 0), |acc, c| {
        (
            acc.0 + c.vhosts,
            acc.1 + c.max_vhosts,
            acc.2 + c.sessions,
            acc.3 + c.max_sessions,
        )
    });
    let fill = ratio(vh, vmax).max(ratio(s, smax));
    let line = Rules {
        headroom_percent,
        ..Default::default()
    }
    .line();
    (fill, fill > line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, vhosts: i64, max: i64) -> Candidate {
        Candidate {
            id: id.into(),
            name: id.into(),
            state: NodeState::Active,
            up: true,
            labels: BTreeMap::new(),
            max_vhosts: max,
            max_sessions: 1000,
            vhosts,
            sessions: 0,
        }
    }

    fn rules(policy: Policy) -> Rules {
        Rules {
            policy,
            headroom_percent: 20,
            ..Default::default()
        }
    }

    #[test]
    fn spread_picks_the_least_loaded_node() {
        let pool = [node("a", 5, 10), node("b", 2, 10), node("c", 4, 10)];
        assert_eq!(place(&pool, &rules(Policy::Spread)).unwrap(), "b");
    }

    #[test]
    fn load_is_relative_to_each_nodes_capacity() {
        // b holds more domains but is the emptier machine.
        let pool = [node("a", 5, 10), node("b", 20, 100)];
        assert_eq!(place(&pool, &rules(Policy::Spread)).unwrap(), "b");
    }

    #[test]
    fn pack_fills_the_most_loaded_node_up_to_the_headroom_line() {
        let pool = [node("a", 5, 10), node("b", 2, 10)];
        assert_eq!(place(&pool, &rules(Policy::Pack)).unwrap(), "a");
        // a at 8/10: one more would cross the 80 % line, so b is preferred.
        let pool = [node("a", 8, 10), node("b", 2, 10)];
        assert_eq!(place(&pool, &rules(Policy::Pack)).unwrap(), "b");
    }

    #[test]
    fn past_the_headroom_line_a_node_is_still_used_when_nothing_else_fits() {
        let pool = [node("a", 9, 10), node("b", 10, 10)];
        assert_eq!(place(&pool, &rules(Policy::Spread)).unwrap(), "a");
        let (fill, warn) = pool_pressure(&pool, 20);
        assert!(warn && fill > 0.9);
    }

    #[test]
    fn a_pool_with_no_usable_node_is_full_and_an_empty_one_is_not() {
        let mut a = node("a", 0, 10);
        a.state = NodeState::Cordoned;
        let mut b = node("b", 0, 10);
        b.up = false;
        assert_eq!(pool_pressure(&[a, b], 20), (1.0, true));
        assert_eq!(pool_pressure(&[], 20), (0.0, false));
    }

    #[test]
    fn capacity_counts_sessions_too() {
        let mut a = node("a", 1, 10);
        a.sessions = 1000;
        let pool = [a, node("b", 5, 10)];
        assert_eq!(place(&pool, &rules(Policy::Spread)).unwrap(), "b");
    }

    #[test]
    fn cordoned_draining_and_down_nodes_are_skipped() {
        let mut a = node("a", 0, 10);
        a.state = NodeState::Cordoned;
        let mut b = node("b", 0, 10);
        b.state = NodeState::Draining;
        let mut c = node("c", 0, 10);
        c.up = false;
        let d = node("d", 9, 10);
        let pool = [a.clone(), b.clone(), c.clone(), d];
        assert_eq!(place(&pool, &rules(Policy::Spread)).unwrap(), "d");
        let reason = place(&[a, b, c], &rules(Policy::Spread)).unwrap_err();
        assert!(
            reason.contains("2 nodes are cordoned or draining"),
            "{reason}"
        );
        assert!(reason.contains("1 node is down"), "{reason}");
    }

    #[test]
    fn required_labels_must_all_match() {
        let mut eu = node("eu", 5, 10);
        eu.labels.insert("region".into(), "eu".into());
        let us = node("us", 0, 10);
        let mut r = rules(Policy::Spread);
        r.required_labels.insert("region".into(), "eu".into());
        assert_eq!(place(&[eu, us.clone()], &r).unwrap(), "eu");
        let reason = place(&[us], &r).unwrap_err();
        assert!(reason.contains("missing the labels region=eu"), "{reason}");
    }

    #[test]
    fn nothing_fits_when_every_node_is_full_and_the_reason_says_so() {
        let reason = place(&[node("a", 10, 10)], &rules(Policy::Spread)).unwrap_err();
        assert!(reason.contains("1 node is at capacity"), "{reason}");
        assert!(reason.contains("as soon as capacity appears"), "{reason}");
        assert!(
            place(&[], &rules(Policy::Spread))
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn an_excluded_node_is_never_chosen() {
        let mut r = rules(Policy::Spread);
        r.exclude.push("a".into());
        assert_eq!(
            place(&[node("a", 0, 10), node("b", 5, 10)], &r).unwrap(),
            "b"
        );
        assert!(place(&[node("a", 0, 10)], &r).is_err());
    }

    #[test]
    fn ties_break_by_name_so_placement_is_deterministic() {
        let pool = [node("b", 1, 10), node("a", 1, 10)];
        assert_eq!(place(&pool, &rules(Policy::Spread)).unwrap(), "a");
        assert_eq!(place(&pool, &rules(Policy::Pack)).unwrap(), "a");
    }
}
