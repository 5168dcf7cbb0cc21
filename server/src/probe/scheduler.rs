//! The prober inside the panel: the panel's own probes (through [`Runner`]: every active
//! domain once per interval at its own offset, bounded concurrency, a task each), the probe
//! accounts (a system account on each domain's node), and the round keeper: it reads every
//! location's stored results, decides rounds by quorum ([`Keeper`]), stores them with their
//! hourly and daily roll-ups, and opens and closes incidents from consecutive rounds.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use secrecy::SecretString;

use super::{
    db,
    rounds::Keeper,
    runner::{Finished, RunTarget, Runner},
    tls_config_webpki, tls_config_with_roots,
};
use crate::{
    nodes::db as nodes,
    state::AppState,
    telemetry::{DomainLabels, ProbeLabels},
    uptime::calc::{IncidentTracker, Round, TrackerState, Transition, UNKNOWN_STAGE, Verdict},
};

/// The probe account's user name on every vhost.
pub const PROBE_USERNAME: &str = "rookery-probe";

/// The trust roots' PEM files: the configured ones, else (when the local node runs) the
/// local node's generated certificates (the demo's domains have self-signed ones); empty
/// means the public web PKI.
pub fn trust_files(state: &AppState) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = state.settings.probe.trust_roots.clone();
    if files.is_empty() && state.settings.local_node.enabled {
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
        files.sort();
    }
    files
}

fn trust(files: &[PathBuf]) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    if files.is_empty() {
        return Ok(tls_config_webpki());
    }
    tls_config_with_roots(files)
}

/// What the trust roots are made of: each file with its size and modification time. The
/// probe loads the roots again when this changes (a domain added to the demo's local node
/// brings a new certificate, which must be trusted from its first probe on).
type TrustFingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

fn trust_fingerprint(files: &[PathBuf]) -> TrustFingerprint {
    files
        .iter()
        .map(|f| {
            let meta = std::fs::metadata(f).ok();
            (
                f.clone(),
                meta.as_ref().map_or(0, |m| m.len()),
                meta.and_then(|m| m.modified().ok()),
            )
        })
        .collect()
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

/// Runs forever: the probe accounts, the panel's own probes (unless `panel_probes` is
/// off), and the round keeper that decides rounds from every location's results.
pub async fn run_forever(state: AppState) {
    // One task (joined, not spawned), so aborting it (a lost leader lease) stops all three.
    let probes = async {
        if state.settings.probe.panel_probes {
            probes_forever(state.clone()).await;
        }
    };
    tokio::join!(
        accounts_forever(state.clone()),
        probes,
        rounds_forever(state.clone())
    );
}

/// Creates missing probe accounts every few seconds (in its own task, so a slow node API
/// never delays a probe).
async fn accounts_forever(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut tried = HashMap::new();
    loop {
        tick.tick().await;
        if let Err(e) = ensure_accounts(&state, &mut tried, 30).await {
            tracing::warn!(error = format!("{e:#}"), "probe accounts");
        }
    }
}

/// Each second, the panel's own probes of the domains whose turn it is; results are
/// stored as they finish (in batches) with the panel's location.
async fn probes_forever(state: AppState) {
    let p = &state.settings.probe;
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Finished>();
    let runner = Runner::new(
        p.interval_secs,
        Duration::from_secs(p.timeout_secs),
        p.concurrency,
        done_tx,
    );
    let recorder = {
        let state = state.clone();
        async move {
            let mut batch = Vec::new();
            while let Some(first) = done_rx.recv().await {
                batch.push(first);
                while let Ok(more) = done_rx.try_recv() {
                    batch.push(more);
                }
                record_local(&state, std::mem::take(&mut batch)).await;
            }
        }
    };
    let probing = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut trusted: Option<(TrustFingerprint, Arc<rustls::ClientConfig>)> = None;
        loop {
            tick.tick().await;
            let now = state.clock.now();
            let targets = match db::targets(&state.db).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "listing probe targets failed");
                    continue;
                }
            };
            let due: Vec<db::Target> = targets
                .into_iter()
                .filter(|t| runner.is_due(&t.domain_id, now))
                .collect();
            if due.is_empty() {
                continue;
            }
            // The trust roots are loaded again when their files change (new local-node
            // certificates appear as domains are added); looking costs a stat per file.
            let files = trust_files(&state);
            let fingerprint = trust_fingerprint(&files);
            if trusted
                .as_ref()
                .is_none_or(|(seen, _)| *seen != fingerprint)
            {
                match trust(&files) {
                    Ok(t) => trusted = Some((fingerprint, t)),
                    Err(e) => {
                        tracing::error!(
                            error = format!("{e:#}"),
                            "the probe's trust roots cannot be loaded"
                        );
                        // The roots loaded before stay in use until the files change again
                        // (a certificate being written is read once it is whole).
                        match trusted.take() {
                            Some((_, old)) => trusted = Some((fingerprint, old)),
                            None => continue,
                        }
                    }
                }
            }
            let Some((_, tls)) = trusted.clone() else {
                continue;
            };
            for t in due {
                let password = match state
                    .sealer
                    .open(&db::password_context(&t.domain_id), &t.password_sealed)
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::warn!(domain = t.domain, error = %e, "the probe password cannot be opened");
                        continue;
                    }
                };
                runner.launch(
                    RunTarget {
                        domain_id: t.domain_id,
                        domain: t.domain,
                        host: t.host,
                        port: t.port,
                        username: t.username,
                        password: SecretString::from(password),
                    },
                    tls.clone(),
                    now,
                );
            }
        }
    };
    tokio::join!(recorder, probing);
}

/// Stores the panel's own results and exports them as metrics.
async fn record_local(state: &AppState, batch: Vec<Finished>) {
    let location = &state.settings.probe.location;
    let rows: Vec<db::StoredResult> = batch
        .iter()
        .map(|f| db::StoredResult::new(&f.domain_id, location, f.at, &f.result))
        .collect();
    if let Err(e) = db::insert_results(&state.db, &rows, state.clock.now()).await {
        tracing::warn!(error = %e, results = rows.len(), "recording probe results failed");
    }
    for f in batch {
        let result = &f.result;
        if !result.ok {
            tracing::info!(domain = f.domain, stage = ?result.failed_stage, error = ?result.error, "probe failed");
        }
        let m = &state.metrics;
        let outcome = result.failed_stage.map(|s| s.as_str()).unwrap_or("ok");
        m.probes
            .get_or_create(&ProbeLabels {
                domain: f.domain.clone(),
                outcome,
            })
            .inc();
        let label = DomainLabels { domain: f.domain };
        m.probe_up.get_or_create(&label).set(i64::from(result.ok));
        m.probe_duration_ms
            .get_or_create(&label)
            .set(result.total_ms());
    }
}

/// The remote locations that count now: not revoked and heard from within two intervals
/// and a probe's timeout (a stopped `rookery probe` stops holding rounds back).
pub async fn active_locations(state: &AppState, now: i64) -> Result<Vec<String>, sqlx::Error> {
    let p = &state.settings.probe;
    let window = i64::try_from(2 * p.interval_secs.max(1) + p.timeout_secs + 10).unwrap_or(300);
    let mut active = db::active_locations(&state.db, now - window).await?;
    if p.panel_probes {
        active.push(p.location.clone());
    }
    active.sort();
    active.dedup();
    Ok(active)
}

/// Each second: reads the results stored since the last look (the panel's own and the
/// remote locations'), decides the rounds that are complete or overdue, stores them with
/// their roll-ups, and opens and closes incidents. Prunes old data once an hour.
async fn rounds_forever(state: AppState) {
    let p = state.settings.probe.clone();
    let interval = i64::try_from(p.interval_secs.max(1)).unwrap_or(60);
    let grace = i64::try_from(p.timeout_secs).unwrap_or(10) + 5;
    let mut keeper = Keeper::new(interval, grace, state.clock.now());
    let mut streaks: HashMap<String, Streak> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_prune = 0;
    loop {
        tick.tick().await;
        let now = state.clock.now();
        match db::received_since(&state.db, keeper.since()).await {
            Ok(results) => keeper.add(results),
            Err(e) => {
                tracing::warn!(error = %e, "reading probe results failed");
                continue;
            }
        }
        let active = match active_locations(&state, now).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "listing probe locations failed");
                continue;
            }
        };
        let quorum = super::rounds::quorum(p.quorum, active.len());
        for (domain_id, row) in keeper.ready(now, &active, quorum) {
            match db::store_round(&state.db, &domain_id, &row).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(domain_id, error = %e, "storing a probe round failed");
                    continue;
                }
            }
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
                    .observe(
                        &state,
                        &domain_id,
                        row.up,
                        row.stage,
                        row.error,
                        row.round_start,
                    )
                    .await
            {
                tracing::warn!(error = format!("{e:#}"), "incident bookkeeping failed");
            }
        }
        if now - last_prune >= 3600 {
            last_prune = now;
            let keep = p.retention_days * 86_400;
            let keep_hours = p.hourly_retention_days.max(8) * 86_400;
            if let Err(e) = db::prune(&state.db, now - keep, now - keep_hours).await {
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
            // The incident and what is sent about it commit together: a panel that stops
            // in between loses neither.
            Some(Transition::Opened { started, stage }) => {
                let mut tx = rookery_common::db::begin_write(&state.db).await?;
                db::start_incident_in(
                    &mut tx,
                    domain_id,
                    started,
                    &stage,
                    self.first_error.as_deref(),
                )
                .await?;
                crate::alerts::incident_in(&mut tx, state, domain_id, None).await?;
                tx.commit().await?;
                crate::alerts::worker::wake();
                tracing::warn!(domain_id, stage, "incident opened");
            }
            Some(Transition::Closed { ended, .. }) => {
                let mut tx = rookery_common::db::begin_write(&state.db).await?;
                db::end_incident_in(&mut tx, domain_id, ended).await?;
                crate::alerts::incident_in(&mut tx, state, domain_id, Some(ended)).await?;
                tx.commit().await?;
                crate::alerts::worker::wake();
                tracing::warn!(domain_id, "incident closed");
            }
            None => {}
        }
        Ok(())
    }
}
