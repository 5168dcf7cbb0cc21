//! The loops that make the node pool match the panel's database:
//! - the reconciler places waiting domains, pushes specs whose generation a node has not
//!   confirmed, moves domains off draining nodes (freeze on the old node, copy the data,
//!   serve on the new one, clean up), and deletes domains being deleted. Every step is
//!   idempotent and recorded, so a panel restart anywhere in between just carries on;
//!   failures are retried with exponential back-off and their reason shown to people.
//! - the poller asks every node for its status, usage and vhosts; misses mark a node down;
//!   a vhost the node lost (or changed) is pushed again, and a vhost the panel no longer
//!   wants on a node is removed only once its data has moved or its domain was deleted.

use std::{collections::HashMap, sync::Arc, time::Duration};

use rookery_common::control::{VhostLimits, VhostSpec};
use tokio::task::JoinSet;

use super::{
    client::CallError,
    db::{self as nodes, NodeRow},
    placement::{self, NodeState, Rules},
};
use crate::{
    domains::db::{self as domains, DomainRow},
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

fn rules(state: &AppState) -> Rules {
    let p = &state.settings.provisioning;
    Rules {
        policy: p.placement_policy,
        headroom_percent: p.headroom_percent,
        required_labels: p.required_labels.clone(),
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
    match placement::place(candidates, &rules(state)) {
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
            let mut r = rules(state);
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

/// The spec the panel wants a node to serve for a domain.
pub fn spec_for(d: &DomainRow, moved_to: Option<String>) -> VhostSpec {
    VhostSpec {
        domain: d.domain.clone(),
        generation: d.generation,
        limits: VhostLimits {
            max_accounts: d.max_accounts,
            max_sessions: d.max_sessions,
            storage_quota_bytes: d.storage_mb.map(|mb| mb * 1024 * 1024),
            upload_quota_bytes: d.upload_mb.map(|mb| mb * 1024 * 1024),
            archive_retention_days: d.archive_days,
            ..Default::default()
        },
        features: Default::default(),
        tls: None,
        suspended: d.state == "suspended",
        moved_to,
        contacts: Default::default(),
    }
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

    let spec = spec_for(&d, None);
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

/// One step of moving a domain's data from `from` to `to`.
async fn move_step(
    state: &AppState,
    pool: &HashMap<String, NodeRow>,
    d: &DomainRow,
    from: &str,
    to: &str,
) -> anyhow::Result<()> {
    let now = state.clock.now();
    let max_retry = state.settings.provisioning.max_retry_secs;
    let (Some(src), Some(dst)) = (pool.get(from), pool.get(to)) else {
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
    let src_client = state.node_clients.get(&src.endpoint(&state.sealer)?);
    let dst_client = state.node_clients.get(&dst.endpoint(&state.sealer)?);
    let fail =
        |why: String| async move { domains::failed(&state.db, &d.id, &why, now, max_retry).await };
    match d.move_step.as_deref().unwrap_or("freeze") {
        "freeze" => {
            // The old node sends its clients to the new one and takes no new logins, so
            // the data stops changing before it is copied.
            let spec = spec_for(d, Some(c2s_address(dst)));
            match src_client.put_vhost(&spec).await {
                Ok(_) => domains::set_move_step(&state.db, &d.id, Some("copy"), now).await?,
                Err(e) => {
                    fail(format!(
                        "Moving to {}: {}",
                        dst.name,
                        describe(&src.name, &e)
                    ))
                    .await?
                }
            }
        }
        "copy" => {
            let data = match src_client.export(&d.domain).await {
                Ok(data) => data,
                Err(e) => {
                    return Ok(fail(format!(
                        "Moving to {}: exporting failed: {}",
                        dst.name,
                        describe(&src.name, &e)
                    ))
                    .await?);
                }
            };
            let spec = spec_for(d, None);
            if let Err(e) = dst_client.put_vhost(&spec).await
                && e.code() != Some("stale_generation")
            {
                return Ok(fail(format!(
                    "Moving to {}: {}",
                    dst.name,
                    describe(&dst.name, &e)
                ))
                .await?);
            }
            if let Err(e) = dst_client.import(&data).await {
                return Ok(fail(format!(
                    "Moving to {}: importing failed: {}",
                    dst.name,
                    describe(&dst.name, &e)
                ))
                .await?);
            }
            domains::applied(&state.db, &d.id, to, d.generation, now).await?;
            domains::set_move_step(&state.db, &d.id, Some("cleanup"), now).await?;
            tracing::info!(
                domain = d.domain,
                from = src.name,
                to = dst.name,
                "domain data moved"
            );
        }
        _ => match src_client.delete_vhost(&d.domain).await {
            Ok(()) => {
                domains::set_move_step(&state.db, &d.id, None, now).await?;
                tracing::info!(
                    domain = d.domain,
                    from = src.name,
                    "moved domain removed from its old node"
                );
            }
            Err(e) => {
                fail(format!(
                    "Removing the moved domain from {}: {}",
                    src.name,
                    describe(&src.name, &e)
                ))
                .await?
            }
        },
    }
    Ok(())
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
        } else {
            tracing::warn!(
                domain = v.domain,
                node = node.name,
                "the node serves a domain this panel does not know; leaving it alone"
            );
        }
    }
    Ok(())
}
