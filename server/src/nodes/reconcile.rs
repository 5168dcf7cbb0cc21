//! The loops that make the node pool match the panel's database:
//! - the reconciler places waiting domains, pushes specs whose generation a node has not
//!   confirmed, moves domains off draining nodes (freeze the data on the old node, copy it
//!   to the new one, switch to the new one and only then send clients there, clean up:
//!   see [`move_step`]), and deletes domains being deleted. Every step is idempotent and
//!   recorded, so a panel restart anywhere in between just carries on; failures are
//!   retried with exponential back-off and their reason shown to people.
//! - the poller asks every node for its status, usage and vhosts; misses mark a node down;
//!   a vhost the node lost (or changed) is pushed again, and a vhost the panel no longer
//!   wants on a node is removed only once its data has moved or its domain was deleted.

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use rookery_common::control::{TlsMaterial, VhostFeatures, VhostLimits, VhostSpec};
use tokio::task::JoinSet;

use super::{
    client::CallError,
    db::{self as nodes, NodeRow},
    placement::{self, NodeState, Rules},
};
use crate::{
    domains::db::{self as domains, DomainRow},
    seal::Sealer,
    state::AppState,
};

/// Domains worked on at once.
const CONCURRENCY: usize = 16;

pub async fn reconcile_forever(state: AppState) {
    let every = Duration::from_millis(state.settings.provisioning.reconcile_interval_ms);
    loop {
        if let Err(e) = crate::billing::sweep(&state).await {
            tracing::warn!(error = format!("{e:#}"), "billing deadlines failed");
        }
        if let Err(e) = reconcile_once(&state).await {
            tracing::warn!(error = format!("{e:#}"), "reconciling failed");
        }
        // The interval, or sooner when someone changed something.
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = state.reconcile_now.notified() => {}
        }
    }
}

pub async fn poll_forever(state: AppState) {
    let every = Duration::from_secs(state.settings.provisioning.poll_interval_secs);
    loop {
        if let Err(e) = poll_once(&state).await {
            tracing::warn!(error = format!("{e:#}"), "polling nodes failed");
        }
        tokio::time::sleep(every).await;
    }
}

/// One pass: start moves off draining nodes, then work through every domain with work due.
pub async fn reconcile_once(state: &AppState) -> anyhow::Result<()> {
    let pool = nodes::nodes(&state.db).await?;
    let by_id: HashMap<String, NodeRow> = pool.iter().map(|n| (n.id.clone(), n.clone())).collect();
    start_drains(state, &pool).await?;
    let now = state.clock.now();
    let work = domains::needing_work(&state.db, now, 2000).await?;
    if work.is_empty() {
        return Ok(());
    }
    // Placement sees domains placed earlier in this pass.
    let mut candidates: Vec<placement::Candidate> = pool.iter().map(NodeRow::candidate).collect();
    let by_id = Arc::new(by_id);
    let mut tasks = JoinSet::new();
    for d in work {
        let d = if d.node_id.is_none() && d.state != "deleting" {
            // Placed now, and pushed in the same pass.
            if !place(state, &d, &mut candidates).await? {
                continue;
            }
            match domains::get(&state.db, &d.id).await? {
                Some(d) => d,
                None => continue,
            }
        } else {
            d
        };
        while tasks.len() >= CONCURRENCY {
            tasks.join_next().await;
        }
        let (state, by_id) = (state.clone(), by_id.clone());
        tasks.spawn(async move {
            let name = d.domain.clone();
            if let Err(e) = work_on(&state, &by_id, d).await {
                tracing::warn!(
                    domain = name,
                    error = format!("{e:#}"),
                    "reconciling a domain failed"
                );
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The placement rules for `d`: the pool's, with the labels its plan requires added (a
/// plan's value wins over the pool's for the same name).
fn rules(state: &AppState, d: &DomainRow) -> Rules {
    let p = &state.settings.provisioning;
    let mut required_labels = p.required_labels.clone();
    required_labels.extend(d.plan_node_labels.clone());
    Rules {
        policy: p.placement_policy,
        headroom_percent: p.headroom_percent,
        required_labels,
        exclude: vec![],
    }
}

/// Places a waiting domain; false when no node fits (the reason is recorded).
async fn place(
    state: &AppState,
    d: &DomainRow,
    candidates: &mut [placement::Candidate],
) -> anyhow::Result<bool> {
    let now = state.clock.now();
    match placement::place(candidates, &rules(state, d)) {
        Ok(node_id) => {
            domains::assign(&state.db, &d.id, &node_id, now).await?;
            if let Some(c) = candidates.iter_mut().find(|c| c.id == node_id) {
                c.vhosts += 1;
            }
            tracing::info!(domain = d.domain, node = node_id, "domain placed");
            Ok(true)
        }
        Err(reason) => {
            if d.waiting_reason.as_deref() != Some(reason.as_str()) {
                tracing::warn!(domain = d.domain, reason, "no node for a domain");
            }
            // Looked at again in a couple of seconds: capacity may appear at any time.
            domains::waiting(&state.db, &d.id, &reason, now + 2).await?;
            Ok(false)
        }
    }
}

/// Domains on draining nodes get a new node; their data moves in the reconciler's steps.
async fn start_drains(state: &AppState, pool: &[NodeRow]) -> anyhow::Result<()> {
    let draining: Vec<&NodeRow> = pool
        .iter()
        .filter(|n| n.state == NodeState::Draining)
        .collect();
    if draining.is_empty() {
        return Ok(());
    }
    let mut candidates: Vec<placement::Candidate> = pool.iter().map(NodeRow::candidate).collect();
    for node in draining {
        for d in domains::on_node(&state.db, &node.id).await? {
            if d.node_id.as_deref() != Some(node.id.as_str()) || d.move_from_node_id.is_some() {
                continue;
            }
            if d.state == "deleting" {
                continue;
            }
            let mut r = rules(state, &d);
            r.exclude.push(node.id.clone());
            let now = state.clock.now();
            match placement::place(&candidates, &r) {
                Ok(to) => {
                    if d.applied_node_id.as_deref() == Some(node.id.as_str()) {
                        domains::start_move(&state.db, &d.id, &node.id, &to, now).await?;
                    } else {
                        // Never reached the draining node: nothing to move.
                        domains::assign(&state.db, &d.id, &to, now).await?;
                    }
                    if let Some(c) = candidates.iter_mut().find(|c| c.id == to) {
                        c.vhosts += 1;
                    }
                    tracing::info!(
                        domain = d.domain,
                        from = node.name,
                        to,
                        "moving a domain off a draining node"
                    );
                }
                Err(reason) => {
                    domains::waiting(
                        &state.db,
                        &d.id,
                        &format!("Cannot leave the draining node {}: {reason}", node.name),
                        now,
                    )
                    .await?;
                }
            }
        }
    }
    Ok(())
}

/// The spec the panel wants a node to serve for a domain: the plan's limits, the domain's
/// state, contact addresses and certificate (its key opened from its seal; an error only
/// when the panel's secret key cannot open it).
///
/// Of `features`, the customer's choices on the domain's settings page are set:
/// `registration` (XEP-0077 in-band registration) and `federation` with
/// `federation_allow` (whom the domain talks with; see [`crate::domains::federation`]).
/// The other switches (MUC, HTTP upload, archive, push) stay at their defaults: no plan or
/// page sets them.
///
/// The plan's sizes are MiB, the spec's bytes; a plan's empty upload and group chat limits
/// (None) leave the node's defaults.
pub fn spec_for(
    d: &DomainRow,
    sealer: &Sealer,
    moved_to: Option<String>,
) -> anyhow::Result<VhostSpec> {
    let tls = match (&d.tls_cert_pem, &d.tls_key_sealed) {
        (Some(cert_pem), Some(sealed)) => Some(TlsMaterial {
            cert_pem: cert_pem.clone(),
            key_pem: Some(
                sealer
                    .open(&crate::domains::settings::tls_key_context(&d.id), sealed)
                    .context("opening the domain's TLS key")?,
            ),
        }),
        _ => None,
    };
    let (federation, federation_allow) = d.federation.features();
    // Plans keep sizes below 10^7 MiB (`admin::plans`), so this cannot overflow; saturate
    // rather than wrap should a stored value ever be larger.
    let mib = |mb: i64| mb.saturating_mul(1024 * 1024);
    Ok(VhostSpec {
        domain: d.domain.clone(),
        generation: d.generation,
        limits: VhostLimits {
            max_accounts: d.max_accounts,
            max_sessions: d.max_sessions,
            storage_quota_bytes: d.storage_mb.map(mib),
            upload_quota_bytes: d.upload_mb.map(mib),
            upload_max_file_bytes: d.upload_max_file_mb.map(mib),
            upload_quota_bytes_per_account: d.upload_account_mb.map(mib),
            upload_retention_days: d.upload_retention_days,
            archive_retention_days: d.archive_days,
            offline_retention_days: d.offline_days,
            max_rooms: d.max_rooms,
            max_room_occupants: d.max_room_occupants,
        },
        features: VhostFeatures {
            registration: d.registration,
            federation,
            federation_allow,
            ..Default::default()
        },
        tls,
        suspended: d.state == "suspended",
        moved_to,
        contacts: d.contacts.clone(),
    })
}

fn c2s_address(n: &NodeRow) -> String {
    if n.c2s_port == 5222 {
        n.public_host.clone()
    } else {
        format!("{}:{}", n.public_host, n.c2s_port)
    }
}

async fn work_on(
    state: &AppState,
    pool: &HashMap<String, NodeRow>,
    d: DomainRow,
) -> anyhow::Result<()> {
    let now = state.clock.now();
    let max_retry = state.settings.provisioning.max_retry_secs;
    let client = |id: &str| -> anyhow::Result<super::client::NodeClient> {
        let node = pool
            .get(id)
            .ok_or_else(|| anyhow::anyhow!("node {id} is no longer in the pool"))?;
        Ok(state.node_clients.get(&node.endpoint(&state.sealer)?))
    };
    let name = |id: &str| {
        pool.get(id)
            .map(|n| n.name.clone())
            .unwrap_or_else(|| id.to_string())
    };

    if d.state == "deleting" {
        let mut holders: Vec<String> = [&d.applied_node_id, &d.move_from_node_id, &d.node_id]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        holders.dedup();
        for id in holders {
            if !pool.contains_key(&id) {
                continue;
            }
            if let Err(e) = client(&id)?.delete_vhost(&d.domain).await {
                let why = format!("Removing it from {} failed: {e}", name(&id));
                return Ok(domains::failed(&state.db, &d.id, &why, now, max_retry).await?);
            }
        }
        domains::mark_deleted(&state.db, &d.id, now).await?;
        tracing::info!(domain = d.domain, "domain deleted from its nodes");
        return Ok(());
    }

    let Some(target) = d.node_id.clone() else {
        return Ok(());
    };

    if let Some(from) = d.move_from_node_id.clone() {
        return move_step(state, pool, &d, &from, &target).await;
    }

    let spec = spec_for(&d, &state.sealer, None)?;
    match client(&target)?.put_vhost(&spec).await {
        Ok(outcome) => {
            domains::applied(&state.db, &d.id, &target, spec.generation, now).await?;
            tracing::info!(
                domain = d.domain,
                node = name(&target),
                generation = spec.generation,
                changed = outcome.changed,
                "spec applied"
            );
        }
        Err(e) if e.code() == Some("stale_generation") => {
            // The node has seen a newer generation than the panel knows (a restored panel
            // database): move past it.
            domains::set_state(&state.db, &d.id, &d.state, now).await?;
        }
        Err(e) => {
            let why = describe(&name(&target), &e);
            domains::failed(&state.db, &d.id, &why, now, max_retry).await?;
        }
    }
    Ok(())
}

fn describe(node: &str, e: &CallError) -> String {
    match e {
        CallError::Refused { error, .. } => {
            format!("The node {node} refused the domain: {}", error.message)
        }
        CallError::Unreachable(why) => {
            format!("The node {node} cannot be reached ({why}); retrying.")
        }
    }
}

/// Moves a domain's data from `from` to `to`, going through the steps still to do. Each
/// finished step is recorded before the next starts, so a restart of the panel or of
/// either node resumes where it stopped; a failed step is retried with back-off, its
/// reason shown.
///
/// 1. `freeze` (or `copy`): the old node freezes the vhost (no write gets through, its
///    sessions stay), and its data is exported; the new node gets the spec, is frozen too
///    and imports the data. Repeated after a failure or a restart, this copies again
///    from the same still data and overwrites nothing written since.
/// 2. `switch`: the new node is thawed and recorded as the domain's node (account
///    changes go there from now on); only then does the old node send its clients there
///    with `<see-other-host/>`, so they can log in at once with their data in place.
/// 3. `cleanup`: the old node removes the vhost.
async fn move_step(
    state: &AppState,
    pool: &HashMap<String, NodeRow>,
    d: &DomainRow,
    from: &str,
    to: &str,
) -> anyhow::Result<()> {
    let (Some(src), Some(dst)) = (pool.get(from), pool.get(to)) else {
        let now = state.clock.now();
        let max_retry = state.settings.provisioning.max_retry_secs;
        domains::failed(
            &state.db,
            &d.id,
            "A node of this move left the pool.",
            now,
            max_retry,
        )
        .await?;
        return Ok(());
    };
    let m = Move {
        state,
        d,
        src,
        dst,
        src_client: state.node_clients.get(&src.endpoint(&state.sealer)?),
        dst_client: state.node_clients.get(&dst.endpoint(&state.sealer)?),
    };
    let mut step = d.move_step.clone().unwrap_or_else(|| "freeze".into());
    loop {
        let next = match step.as_str() {
            "freeze" | "copy" => m.copy().await?,
            "switch" => m.switch().await?,
            _ => m.cleanup().await?,
        };
        match next {
            Some(next) => step = next.to_string(),
            None => return Ok(()),
        }
    }
}

/// One domain's move between two nodes (see [`move_step`]). Each step answers the step
/// recorded after it, or None when the move stops here (finished, or failed and recorded).
struct Move<'a> {
    state: &'a AppState,
    d: &'a DomainRow,
    src: &'a NodeRow,
    dst: &'a NodeRow,
    src_client: super::client::NodeClient,
    dst_client: super::client::NodeClient,
}

impl Move<'_> {
    /// Records why the move cannot go on now; it is tried again later.
    async fn fail(&self, why: String) -> anyhow::Result<Option<&'static str>> {
        let now = self.state.clock.now();
        let max_retry = self.state.settings.provisioning.max_retry_secs;
        domains::failed(&self.state.db, &self.d.id, &why, now, max_retry).await?;
        Ok(None)
    }

    /// "Moving to b: <what the node said>".
    fn moving(&self, node: &NodeRow, what: &str, e: &CallError) -> String {
        format!(
            "Moving to {}: {what}{}",
            self.dst.name,
            describe(&node.name, e)
        )
    }

    /// The spec on the new node (a newer one there is fine: the panel catches up later).
    async fn spec_on_target(&self) -> anyhow::Result<Result<(), CallError>> {
        let spec = spec_for(self.d, &self.state.sealer, None)?;
        Ok(match self.dst_client.put_vhost(&spec).await {
            Err(e) if e.code() != Some("stale_generation") => Err(e),
            _ => Ok(()),
        })
    }

    async fn copy(&self) -> anyhow::Result<Option<&'static str>> {
        let (d, src, dst) = (self.d, self.src, self.dst);
        if let Err(e) = self.src_client.freeze(&d.domain, None).await {
            return self.fail(self.moving(src, "", &e)).await;
        }
        let data = match self.src_client.export(&d.domain).await {
            Ok(data) => data,
            Err(e) => return self.fail(self.moving(src, "exporting failed: ", &e)).await,
        };
        if let Err(e) = self.spec_on_target().await? {
            return self.fail(self.moving(dst, "", &e)).await;
        }
        // Frozen before the data arrives: nothing written there meanwhile could be
        // overwritten by a copy made again after a failure.
        if let Err(e) = self.dst_client.freeze(&d.domain, None).await {
            return self.fail(self.moving(dst, "", &e)).await;
        }
        if let Err(e) = self.dst_client.import(&data).await {
            return self.fail(self.moving(dst, "importing failed: ", &e)).await;
        }
        // Uploaded files (XEP-0363) live on the nodes' disks, not in the data: each one
        // follows its row, one at a time (a file is held in memory on the way).
        let uploads = data
            .tables
            .get("upload_files")
            .map(Vec::as_slice)
            .unwrap_or_default();
        for id in uploads
            .iter()
            .filter_map(|r| r.get("id").and_then(|v| v.as_str()))
        {
            let bytes = match self.src_client.upload_file(&d.domain, id).await {
                Ok(b) => b,
                Err(e) if e.status() == Some(404) => {
                    // Gone from the old node's disk already: nothing to copy.
                    tracing::warn!(
                        domain = d.domain,
                        id,
                        "an uploaded file to move was missing on the old node"
                    );
                    continue;
                }
                Err(e) => {
                    return self
                        .fail(self.moving(src, "copying an uploaded file failed: ", &e))
                        .await;
                }
            };
            if let Err(e) = self.dst_client.put_upload_file(&d.domain, id, bytes).await {
                return self
                    .fail(self.moving(dst, "copying an uploaded file failed: ", &e))
                    .await;
            }
        }
        let now = self.state.clock.now();
        domains::set_move_step(&self.state.db, &d.id, Some("switch"), now).await?;
        tracing::info!(
            domain = d.domain,
            from = src.name,
            to = dst.name,
            "domain data copied"
        );
        Ok(Some("switch"))
    }

    async fn switch(&self) -> anyhow::Result<Option<&'static str>> {
        let (d, src, dst) = (self.d, self.src, self.dst);
        // The spec again: the domain may have changed since its data was copied.
        if let Err(e) = self.spec_on_target().await? {
            return self.fail(self.moving(dst, "", &e)).await;
        }
        if let Err(e) = self.dst_client.thaw(&d.domain).await {
            return self.fail(self.moving(dst, "", &e)).await;
        }
        let now = self.state.clock.now();
        domains::applied(&self.state.db, &d.id, &dst.id, d.generation, now).await?;
        let recorded = domains::get(&self.state.db, &d.id).await?;
        if recorded.and_then(|r| r.applied_node_id).as_deref() != Some(dst.id.as_str()) {
            // A newer generation came meanwhile: the next pass pushes it and switches.
            return Ok(None);
        }
        match self
            .src_client
            .freeze(&d.domain, Some(&c2s_address(dst)))
            .await
        {
            // Gone from the old node already: nobody there to send on.
            Err(e) if e.status() != Some(404) => {
                return self.fail(self.moving(src, "", &e)).await;
            }
            _ => {}
        }
        domains::set_move_step(&self.state.db, &d.id, Some("cleanup"), now).await?;
        tracing::info!(
            domain = d.domain,
            from = src.name,
            to = dst.name,
            "domain served by its new node; clients sent there"
        );
        Ok(Some("cleanup"))
    }

    async fn cleanup(&self) -> anyhow::Result<Option<&'static str>> {
        let (d, src) = (self.d, self.src);
        if let Err(e) = self.src_client.delete_vhost(&d.domain).await {
            let why = format!(
                "Removing the moved domain from {}: {}",
                src.name,
                describe(&src.name, &e)
            );
            return self.fail(why).await;
        }
        let now = self.state.clock.now();
        domains::set_move_step(&self.state.db, &d.id, None, now).await?;
        tracing::info!(
            domain = d.domain,
            from = src.name,
            "moved domain removed from its old node"
        );
        Ok(None)
    }
}

/// One round of health and usage polling over every node, concurrently.
pub async fn poll_once(state: &AppState) -> anyhow::Result<()> {
    // Raw samples are kept a week (pruned hourly); the daily roll-up keeps the rest.
    static LAST_PRUNE: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = state.clock.now();
    if now - LAST_PRUNE.load(std::sync::atomic::Ordering::Relaxed) >= 3600 {
        LAST_PRUNE.store(now, std::sync::atomic::Ordering::Relaxed);
        nodes::prune_samples(&state.db, now, 7 * 86_400).await?;
    }
    let pool = nodes::nodes(&state.db).await?;
    let mut tasks = JoinSet::new();
    for node in pool {
        let state = state.clone();
        tasks.spawn(async move {
            if let Err(e) = poll_node(&state, &node).await {
                tracing::warn!(
                    node = node.name,
                    error = format!("{e:#}"),
                    "polling a node failed"
                );
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn poll_node(state: &AppState, node: &NodeRow) -> anyhow::Result<()> {
    let client = state.node_clients.get(&node.endpoint(&state.sealer)?);
    let now = state.clock.now();
    let status = match client.status().await {
        Ok(s) => s,
        Err(e) => {
            let down = nodes::record_miss(
                &state.db,
                &node.id,
                &e.to_string(),
                state.settings.provisioning.down_after_misses,
            )
            .await?;
            if down {
                tracing::error!(node = node.name, error = %e, "node marked down");
                crate::alerts::node_down(state, &node.id, &node.name, &e.to_string()).await;
                nodes::audit(
                    &state.db,
                    None,
                    "system",
                    "node.down",
                    &node.name,
                    &e.to_string(),
                    now,
                )
                .await?;
            }
            return Ok(());
        }
    };
    if node.health == "down" {
        tracing::info!(node = node.name, "node is back up");
        crate::alerts::node_up(state, &node.id, &node.name).await;
        nodes::audit(
            &state.db,
            None,
            "system",
            "node.up",
            &node.name,
            "answering again",
            now,
        )
        .await?;
    }
    nodes::record_status(&state.db, &node.id, &status, now).await?;
    if let Ok(usage) = client.usage().await {
        nodes::record_usage(&state.db, &node.id, usage.period_secs, &usage.vhosts, now).await?;
    }
    let Ok(reported) = client.vhosts().await else {
        return Ok(());
    };
    // Drift: what the node serves against what the panel recorded as applied there.
    let wanted = domains::on_node(&state.db, &node.id).await?;
    let reported_gen: HashMap<&str, Option<i64>> = reported
        .iter()
        .map(|v| (v.domain.as_str(), v.generation))
        .collect();
    for d in &wanted {
        if d.applied_node_id.as_deref() == Some(node.id.as_str())
            && d.move_from_node_id.is_none()
            && d.applied_generation > 0
            && reported_gen.get(d.domain.as_str()).copied().flatten() != Some(d.applied_generation)
        {
            tracing::warn!(
                domain = d.domain,
                node = node.name,
                "the node does not serve the applied spec: pushing it again"
            );
            domains::forget_applied(&state.db, &d.id).await?;
        }
    }
    for v in &reported {
        if v.generation.is_none() || wanted.iter().any(|d| d.domain == v.domain) {
            continue;
        }
        // Managed by a panel but not wanted here: remove only if its domain was deleted or
        // its data now lives on another node.
        let safe = match domains::by_name(&state.db, &v.domain).await? {
            Some(d) if d.state == "deleted" => true,
            Some(d) => {
                d.applied_node_id.is_some()
                    && d.applied_node_id.as_deref() != Some(node.id.as_str())
                    && d.move_from_node_id.as_deref() != Some(node.id.as_str())
            }
            None => false,
        };
        if safe {
            tracing::info!(
                domain = v.domain,
                node = node.name,
                "removing a vhost the panel no longer wants on this node"
            );
            if let Err(e) = client.delete_vhost(&v.domain).await {
                tracing::warn!(domain = v.domain, error = %e, "removing a stray vhost failed");
            }
        } else if first_sighting(&node.id, &v.domain) {
            tracing::warn!(
                domain = v.domain,
                node = node.name,
                "the node serves a domain this panel does not know; leaving it alone"
            );
        }
    }
    Ok(())
}

/// Whether this process has not yet reported `domain` on `node` as unknown: the warning is
/// logged once, not at every poll.
fn first_sighting(node: &str, domain: &str) -> bool {
    static SEEN: std::sync::LazyLock<
        std::sync::Mutex<std::collections::HashSet<(String, String)>>,
    > = std::sync::LazyLock::new(Default::default);
    SEEN.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((node.to_string(), domain.to_string()))
}

#[cfg(test)]
mod tests {
    use crate::domains::federation::{Federation, FederationMode};

    use super::*;

    fn sealer() -> Sealer {
        Sealer::new([7; 32])
    }

    #[test]
    fn a_plans_limits_reach_the_spec_with_sizes_in_bytes() {
        let mut d = DomainRow::example("chat.example.com");
        d.max_accounts = Some(10);
        d.storage_mb = Some(100);
        d.upload_mb = Some(1024);
        d.upload_max_file_mb = Some(25);
        d.upload_account_mb = Some(200);
        d.upload_retention_days = Some(30);
        d.max_rooms = Some(0);
        d.max_room_occupants = Some(50);
        let limits = spec_for(&d, &sealer(), None).unwrap().limits;
        assert_eq!(limits.max_accounts, Some(10));
        assert_eq!(limits.storage_quota_bytes, Some(100 * 1024 * 1024));
        assert_eq!(limits.upload_quota_bytes, Some(1024 * 1024 * 1024));
        assert_eq!(limits.upload_max_file_bytes, Some(25 * 1024 * 1024));
        assert_eq!(
            limits.upload_quota_bytes_per_account,
            Some(200 * 1024 * 1024)
        );
        assert_eq!(limits.upload_retention_days, Some(30));
        assert_eq!(
            limits.max_rooms,
            Some(0),
            "0 rooms is a limit, not unlimited"
        );
        assert_eq!(limits.max_room_occupants, Some(50));
    }

    #[test]
    fn a_plan_without_upload_or_group_chat_limits_leaves_the_nodes_defaults() {
        let d = DomainRow::example("chat.example.com");
        let limits = spec_for(&d, &sealer(), None).unwrap().limits;
        assert_eq!(limits, VhostLimits::default());
    }

    #[test]
    fn the_domains_federation_choice_reaches_the_spec() {
        let mut d = DomainRow::example("chat.example.com");
        let features = |d: &DomainRow| spec_for(d, &sealer(), None).unwrap().features;
        let f = features(&d);
        assert!(
            f.federation && f.federation_allow.is_empty(),
            "open by default"
        );

        let allow = vec!["a.example".to_string(), "b.example".to_string()];
        d.federation = Federation {
            mode: FederationMode::Allowlist,
            allow: allow.clone(),
        };
        let f = features(&d);
        assert!(f.federation);
        assert_eq!(f.federation_allow, allow);

        d.federation.mode = FederationMode::Closed;
        let f = features(&d);
        assert!(!f.federation);
        assert!(
            f.federation_allow.is_empty(),
            "a kept list is not sent when closed"
        );

        d.federation.mode = FederationMode::Open;
        let f = features(&d);
        assert!(f.federation && f.federation_allow.is_empty());
    }
}
