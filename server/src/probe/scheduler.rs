//! The prober inside the panel: every active domain is probed once per interval, the
//! domains spread evenly over the interval (each at its own offset), at most
//! `concurrency` probes at a time, each in its own task so a slow domain never delays the
//! others. It also creates each domain's probe account (a system account on the node) and
//! opens and closes incidents from consecutive results.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::{ProbeTarget, db, probe, tls_config_webpki, tls_config_with_roots};
use crate::{
    nodes::db as nodes,
    state::AppState,
    telemetry::{DomainLabels, ProbeLabels},
    uptime::calc::{IncidentTracker, Round, TrackerState, Transition, UNKNOWN_STAGE, Verdict},
};

/// The probe account's user name on every vhost.
pub const PROBE_USERNAME: &str = "rookery-probe";

/// Where in the interval a domain is probed: a stable offset from its id.
pub fn offset(domain_id: &str, interval: u64) -> u64 {
    let h = Sha256::digest(domain_id.as_bytes());
    u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % interval.max(1)
}

/// The trust roots: configured PEM files, else the public web PKI plus the local node's
/// generated certificates (the demo's domains have self-signed ones).
fn trust(state: &AppState) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut files: Vec<PathBuf> = state.settings.probe.trust_roots.clone();
    if files.is_empty() {
        if !state.settings.local_node.enabled {
            return Ok(tls_config_webpki());
        }
        let dir = state
            .settings
            .local_node
            .data_dir
            .clone()
            .unwrap_or_else(|| state.settings.data_dir.join("node"))
            .join("certs");
        if let Ok(entries) = std::fs::read_dir(&dir) {
            files.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                p.extension().is_some_and(|x| x == "crt") && !p.ends_with("_control.crt")
            }));
        }
        if files.is_empty() {
            return Ok(tls_config_webpki());
        }
    }
    tls_config_with_roots(&files)
}

/// Creates the probe account on the node serving each active domain that lacks one. A
/// domain whose attempt failed is retried after `retry_after` seconds (`tried` remembers
/// when), and nodes marked down are skipped, so an unreachable node does not hold up the
/// probes of everyone else.
pub async fn ensure_accounts(
    state: &AppState,
    tried: &mut HashMap<String, i64>,
    retry_after: i64,
) -> anyhow::Result<()> {
    let now = state.clock.now();
    for (domain_id, domain, node_id) in db::missing_accounts(&state.db).await? {
        if tried
            .get(&domain_id)
            .is_some_and(|at| now - at < retry_after)
        {
            continue;
        }
        let Some(node) = nodes::node(&state.db, &node_id).await? else {
            continue;
        };
        if node.health == "down" {
            continue;
        }
        tried.insert(domain_id.clone(), now);
        let client = state.node_clients.get(&node.endpoint(&state.sealer)?);
        let password = crate::clock::new_token();
        let account = rookery_common::control::NewAccount {
            username: PROBE_USERNAME.into(),
            password: password.clone(),
            system: true,
        };
        let created = match client.create_account(&domain, &account).await {
            Err(e) if e.code() == Some("account_exists") => {
                let new = rookery_common::control::NewPassword {
                    password: password.clone(),
                };
                client.set_password(&domain, PROBE_USERNAME, &new).await
            }
            other => other,
        };
        match created {
            Ok(()) => {
                let sealed = state
                    .sealer
                    .seal(&db::password_context(&domain_id), &password);
                db::set_account(&state.db, &domain_id, PROBE_USERNAME, &sealed, &node_id).await?;
                tracing::info!(domain, node = node.name, "probe account ready");
            }
            Err(e) => tracing::warn!(domain, error = %e, "creating the probe account failed"),
        }
    }
    Ok(())
}

/// Runs forever: each second, the domains whose turn it is are probed.
pub async fn run_forever(state: AppState) {
    let interval = state.settings.probe.interval_secs.max(1);
    let permits = Arc::new(Semaphore::new(state.settings.probe.concurrency.max(1)));
    let in_flight: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let mut streaks: HashMap<String, Streak> = HashMap::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(
        String,
        bool,
        Option<String>,
        Option<String>,
        i64,
    )>();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut second: u64 = 0;
    let mut tried = HashMap::new();
    let mut trusted: Option<(std::time::Instant, Arc<rustls::ClientConfig>)> = None;
    loop {
        tick.tick().await;
        second += 1;
        if let Err(e) = ensure_accounts(&state, &mut tried, 30).await {
            tracing::warn!(error = format!("{e:#}"), "probe accounts");
        }
        // Results that came in: incidents.
        while let Ok((domain_id, ok, stage, error, at)) = done_rx.try_recv() {
            if !streaks.contains_key(&domain_id) {
                match Streak::new(&state, &domain_id).await {
                    Ok(s) => {
                        streaks.insert(domain_id.clone(), s);
                    }
                    Err(e) => {
                        tracing::warn!(error = format!("{e:#}"), "incident bookkeeping failed");
                        continue;
                    }
                }
            }
            if let Some(streak) = streaks.get_mut(&domain_id)
                && let Err(e) = streak
                    .observe(&state, &domain_id, ok, stage, error, at)
                    .await
            {
                tracing::warn!(error = format!("{e:#}"), "incident bookkeeping failed");
            }
        }
        let targets = match db::targets(&state.db).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "listing probe targets failed");
                continue;
            }
        };
        let now_s = u64::try_from(state.clock.now()).unwrap_or(second);
        let due: Vec<db::Target> = targets
            .into_iter()
            .filter(|t| now_s % interval == offset(&t.domain_id, interval))
            .collect();
        if due.is_empty() {
            continue;
        }
        // The trust roots are read again every 30 s (new local-node certificates appear
        // as domains are added), not on every tick.
        if trusted
            .as_ref()
            .is_none_or(|(at, _)| at.elapsed() >= Duration::from_secs(30))
        {
            match trust(&state) {
                Ok(t) => trusted = Some((std::time::Instant::now(), t)),
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "the probe's trust roots cannot be loaded"
                    );
                    continue;
                }
            }
        }
        let Some((_, tls)) = trusted.clone() else {
            continue;
        };
        for t in due {
            // A domain still being probed from the last round is not probed twice.
            if !in_flight
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(t.domain_id.clone())
            {
                continue;
            }
            let (state, permits, in_flight, tls, done) = (
                state.clone(),
                permits.clone(),
                in_flight.clone(),
                tls.clone(),
                done_tx.clone(),
            );
            tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                let password = state
                    .sealer
                    .open(&db::password_context(&t.domain_id), &t.password_sealed)
                    .unwrap_or_default();
                let target = ProbeTarget {
                    host: t.host.clone(),
                    port: t.port,
                    domain: t.domain.clone(),
                    username: t.username.clone(),
                    password: SecretString::from(password),
                    tls,
                };
                let at = state.clock.now();
                let result = probe(
                    &target,
                    Duration::from_secs(state.settings.probe.timeout_secs),
                )
                .await;
                if let Err(e) = db::record(
                    &state.db,
                    &t.domain_id,
                    &state.settings.probe.location,
                    at,
                    &result,
                )
                .await
                {
                    tracing::warn!(domain = t.domain, error = %e, "recording a probe result failed");
                }
                if !result.ok {
                    tracing::info!(domain = t.domain, stage = ?result.failed_stage, error = ?result.error, "probe failed");
                }
                let m = &state.metrics;
                let outcome = result.failed_stage.map(|s| s.as_str()).unwrap_or("ok");
                m.probes
                    .get_or_create(&ProbeLabels {
                        domain: t.domain.clone(),
                        outcome,
                    })
                    .inc();
                let label = DomainLabels {
                    domain: t.domain.clone(),
                };
                m.probe_up.get_or_create(&label).set(i64::from(result.ok));
                m.probe_duration_ms
                    .get_or_create(&label)
                    .set(i64::try_from(result.total.as_millis()).unwrap_or(i64::MAX));
                let stage = result.failed_stage.map(|s| s.as_str().to_string());
                let _ = done.send((
                    t.domain_id.clone(),
                    result.ok,
                    stage,
                    result.error.clone(),
                    at,
                ));
                in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&t.domain_id);
            });
        }
        if second.is_multiple_of(3600) {
            let keep = state.settings.probe.retention_days * 86_400;
            if let Err(e) = db::prune(&state.db, state.clock.now() - keep).await {
                tracing::warn!(error = %e, "pruning probe results failed");
            }
        }
    }
}

/// Consecutive results of one domain, in the pure tracker of `uptime::calc` (N failed
/// rounds in a row open an incident, M good ones close it), with the incident stored.
/// After a panel restart the tracker starts from the open incident in the database.
struct Streak {
    tracker: IncidentTracker,
    /// The error of the round that opened the streak of failures, for the incident.
    first_error: Option<String>,
}

impl Streak {
    async fn new(state: &AppState, domain_id: &str) -> anyhow::Result<Self> {
        let p = &state.settings.probe;
        let mut tracker = IncidentTracker::new(p.open_after, p.close_after);
        if let Some(open) = db::open_incident(&state.db, domain_id).await? {
            tracker.state = TrackerState::Open {
                started: open.started_at,
                stage: open.stage,
                down_rounds: p.open_after,
                ups: 0,
                first_up: None,
            };
        }
        Ok(Self {
            tracker,
            first_error: None,
        })
    }

    async fn observe(
        &mut self,
        state: &AppState,
        domain_id: &str,
        ok: bool,
        stage: Option<String>,
        error: Option<String>,
        at: i64,
    ) -> anyhow::Result<()> {
        let verdict = if ok {
            self.first_error = None;
            Verdict::Up
        } else {
            if self.first_error.is_none() {
                self.first_error = error;
            }
            Verdict::Down {
                stage: stage.unwrap_or_else(|| UNKNOWN_STAGE.into()),
            }
        };
        match self.tracker.observe(&Round { start: at, verdict }) {
            Some(Transition::Opened { started, stage }) => {
                db::start_incident(
                    &state.db,
                    domain_id,
                    started,
                    &stage,
                    self.first_error.as_deref(),
                )
                .await?;
                tracing::warn!(domain_id, stage, "incident opened");
            }
            Some(Transition::Closed { ended, .. }) => {
                db::end_incident(&state.db, domain_id, ended).await?;
                tracing::warn!(domain_id, "incident closed");
            }
            None => {}
        }
        Ok(())
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
