//! SQL of the node pool: nodes, join tokens, usage samples and the audit log.

use std::collections::BTreeMap;

use rookery_common::control::{JoinRequest, NodeStatus, VhostUsage};
use sqlx::Row;

use super::{
    client::NodeEndpoint,
    placement::{Candidate, NodeState},
};
use crate::{
    clock::{new_id, new_token, token_hash},
    db::Pool,
    seal::Sealer,
};

/// A node as the pool pages and the reconciler see it.
#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: String,
    pub name: String,
    pub public_host: String,
    pub c2s_port: i64,
    pub c2s_tls_port: i64,
    pub control_url: String,
    pub control_cert_sha256: String,
    pub secret_sealed: String,
    pub capacity_vhosts: i64,
    pub capacity_sessions: i64,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub state: NodeState,
    /// unknown, up or down.
    pub health: String,
    pub missed_polls: i64,
    pub last_heartbeat_at: Option<i64>,
    pub last_error: Option<String>,
    pub sessions: i64,
    pub reported_vhosts: i64,
    pub cpu_seconds: f64,
    pub load_average: f64,
    pub cpu_cores: i64,
    pub memory_bytes: i64,
    pub memory_total_bytes: i64,
    pub uptime_secs: i64,
    pub created_at: i64,
    /// Domains the panel wants on this node (not stored: counted).
    pub domains: i64,
}

impl NodeRow {
    pub fn endpoint(&self, sealer: &Sealer) -> anyhow::Result<NodeEndpoint> {
        Ok(NodeEndpoint {
            control_url: self.control_url.clone(),
            cert_sha256: self.control_cert_sha256.clone(),
            secret: sealer.open(&secret_context(&self.id), &self.secret_sealed)?,
        })
    }

    pub fn candidate(&self) -> Candidate {
        Candidate {
            id: self.id.clone(),
            name: self.name.clone(),
            state: self.state,
            up: self.health != "down",
            labels: self.labels.clone(),
            max_vhosts: self.capacity_vhosts,
            max_sessions: self.capacity_sessions,
            vhosts: self.domains,
            sessions: self.sessions,
        }
    }
}

/// What a node's sealed secret is bound to.
pub fn secret_context(node_id: &str) -> String {
    format!("node-secret:{node_id}")
}

const NODE_COLUMNS: &str = "n.id, n.name, n.public_host, n.c2s_port, n.c2s_tls_port, n.control_url, n.control_cert_sha256, n.secret_sealed, n.capacity_vhosts, n.capacity_sessions, n.labels, n.version, n.state, n.health, n.missed_polls, n.last_heartbeat_at, n.last_error, n.sessions, n.reported_vhosts, n.cpu_seconds, n.load_average, n.cpu_cores, n.memory_bytes, n.memory_total_bytes, n.uptime_secs, n.created_at, (SELECT COUNT(*) FROM domains d WHERE d.node_id = n.id AND d.state <> 'deleted') AS domain_count";

fn node_from_row(r: &sqlx::any::AnyRow) -> Result<NodeRow, sqlx::Error> {
    let labels: String = r.try_get("labels")?;
    let state: String = r.try_get("state")?;
    Ok(NodeRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        public_host: r.try_get("public_host")?,
        c2s_port: r.try_get("c2s_port")?,
        c2s_tls_port: r.try_get("c2s_tls_port")?,
        control_url: r.try_get("control_url")?,
        control_cert_sha256: r.try_get("control_cert_sha256")?,
        secret_sealed: r.try_get("secret_sealed")?,
        capacity_vhosts: r.try_get("capacity_vhosts")?,
        capacity_sessions: r.try_get("capacity_sessions")?,
        labels: serde_json::from_str(&labels).unwrap_or_default(),
        version: r.try_get("version")?,
        state: NodeState::parse(&state).unwrap_or(NodeState::Cordoned),
        health: r.try_get("health")?,
        missed_polls: r.try_get("missed_polls")?,
        last_heartbeat_at: r.try_get("last_heartbeat_at")?,
        last_error: r.try_get("last_error")?,
        sessions: r.try_get("sessions")?,
        reported_vhosts: r.try_get("reported_vhosts")?,
        cpu_seconds: r.try_get("cpu_seconds")?,
        load_average: r.try_get("load_average")?,
        cpu_cores: r.try_get("cpu_cores")?,
        memory_bytes: r.try_get("memory_bytes")?,
        memory_total_bytes: r.try_get("memory_total_bytes")?,
        uptime_secs: r.try_get("uptime_secs")?,
        created_at: r.try_get("created_at")?,
        domains: r.try_get("domain_count")?,
    })
}

#[tracing::instrument(skip_all)]
pub async fn nodes(db: &Pool) -> Result<Vec<NodeRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes n ORDER BY n.name"
    ))
    .fetch_all(db)
    .await?
    .iter()
    .map(node_from_row)
    .collect()
}

#[tracing::instrument(skip_all)]
pub async fn node(db: &Pool, id: &str) -> Result<Option<NodeRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes n WHERE n.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(node_from_row)
    .transpose()
}

/// Registers a node (a join, or the panel's own local node). Returns its id.
#[tracing::instrument(skip_all, fields(name = %req.name))]
pub async fn insert_node(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    req: &JoinRequest,
    secret: &str,
    sealer: &Sealer,
    now: i64,
) -> Result<String, sqlx::Error> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO nodes (id, name, public_host, c2s_port, c2s_tls_port, control_url, control_cert_sha256, secret_sealed,
            capacity_vhosts, capacity_sessions, labels, version, state, health, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'active', 'unknown', $13)",
    )
    .bind(&id)
    .bind(&req.name)
    .bind(&req.public_host)
    .bind(i64::from(req.c2s_port))
    .bind(i64::from(req.c2s_tls_port))
    .bind(&req.control_url)
    .bind(req.control_cert_sha256.to_ascii_lowercase())
    .bind(sealer.seal(&secret_context(&id), secret))
    .bind(req.capacity.max_vhosts)
    .bind(req.capacity.max_sessions)
    .bind(serde_json::to_string(&req.labels).unwrap_or_else(|_| "{}".into()))
    .bind(&req.version)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

pub async fn node_by_name(db: &Pool, name: &str) -> Result<Option<NodeRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {NODE_COLUMNS} FROM nodes n WHERE n.name = $1"
    ))
    .bind(name)
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(node_from_row)
    .transpose()
}

/// Refreshes how the panel reaches an already registered node (the local node after a
/// restart: new secret, maybe a new certificate).
pub async fn update_endpoint(
    db: &Pool,
    id: &str,
    req: &JoinRequest,
    secret: &str,
    sealer: &Sealer,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE nodes SET public_host = $1, c2s_port = $2, c2s_tls_port = $3, control_url = $4, control_cert_sha256 = $5,
            secret_sealed = $6, capacity_vhosts = $7, capacity_sessions = $8, labels = $9, version = $10 WHERE id = $11",
    )
    .bind(&req.public_host)
    .bind(i64::from(req.c2s_port))
    .bind(i64::from(req.c2s_tls_port))
    .bind(&req.control_url)
    .bind(req.control_cert_sha256.to_ascii_lowercase())
    .bind(sealer.seal(&secret_context(id), secret))
    .bind(req.capacity.max_vhosts)
    .bind(req.capacity.max_sessions)
    .bind(serde_json::to_string(&req.labels).unwrap_or_else(|_| "{}".into()))
    .bind(&req.version)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_state(db: &Pool, id: &str, state: NodeState) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("UPDATE nodes SET state = $1 WHERE id = $2")
        .bind(state.as_str())
        .bind(id)
        .execute(db)
        .await?
        .rows_affected()
        == 1)
}

/// Removes a node that holds no domain (desired, applied or being moved away from).
/// Returns false when some domain still refers to it.
pub async fn remove_node(db: &Pool, id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    let used: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM domains WHERE state <> 'deleted' AND (node_id = $1 OR applied_node_id = $1 OR move_from_node_id = $1)",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?
    .try_get("n")?;
    if used > 0 {
        return Ok(false);
    }
    sqlx::query("UPDATE domains SET node_id = NULL, applied_node_id = NULL WHERE node_id = $1 OR applied_node_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// A poll answered: the node is up, with this status.
pub async fn record_status(
    db: &Pool,
    id: &str,
    s: &NodeStatus,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE nodes SET health = 'up', missed_polls = 0, last_heartbeat_at = $1, last_error = NULL, sessions = $2,
            reported_vhosts = $3, cpu_seconds = $4, load_average = $5, cpu_cores = $6, memory_bytes = $7,
            memory_total_bytes = $8, uptime_secs = $9, version = $10 WHERE id = $11",
    )
    .bind(now)
    .bind(s.sessions)
    .bind(s.vhosts)
    .bind(s.cpu_seconds)
    .bind(s.load_average)
    .bind(s.cpu_cores)
    .bind(s.memory_bytes)
    .bind(s.memory_total_bytes)
    .bind(s.uptime_secs)
    .bind(&s.version)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// A poll failed. Returns true when this miss marked the node down.
pub async fn record_miss(
    db: &Pool,
    id: &str,
    error: &str,
    down_after: i64,
) -> Result<bool, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE nodes SET missed_polls = missed_polls + 1, last_error = $1 WHERE id = $2 RETURNING missed_polls, health",
    )
    .bind(error)
    .bind(id)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let missed: i64 = row.try_get("missed_polls")?;
    let health: String = row.try_get("health")?;
    if missed >= down_after && health != "down" {
        sqlx::query("UPDATE nodes SET health = 'down' WHERE id = $1")
            .bind(id)
            .execute(db)
            .await?;
        return Ok(true);
    }
    Ok(false)
}

// ---- join tokens ----------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub note: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub used_at: Option<i64>,
    pub node_name: Option<String>,
}

/// A new join token; the plaintext is returned once and only its hash is kept.
pub async fn create_token(
    db: &Pool,
    created_by: &str,
    note: &str,
    now: i64,
    ttl: i64,
) -> Result<String, sqlx::Error> {
    let token = format!("rjt_{}", new_token());
    sqlx::query(
        "INSERT INTO join_tokens (id, token_hash, note, created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(token_hash(&token))
    .bind(note)
    .bind(created_by)
    .bind(now)
    .bind(now + ttl)
    .execute(db)
    .await?;
    Ok(token)
}

pub async fn tokens(db: &Pool, limit: i64) -> Result<Vec<TokenRow>, sqlx::Error> {
    sqlx::query(
        "SELECT t.id, t.note, t.created_at, t.expires_at, t.used_at, n.name AS node_name
         FROM join_tokens t LEFT JOIN nodes n ON n.id = t.node_id ORDER BY t.created_at DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(TokenRow {
            id: r.try_get("id")?,
            note: r.try_get("note")?,
            created_at: r.try_get("created_at")?,
            expires_at: r.try_get("expires_at")?,
            used_at: r.try_get("used_at")?,
            node_name: r.try_get("node_name")?,
        })
    })
    .collect()
}

/// Why a join token was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenProblem {
    Unknown,
    Used,
    Expired,
}

/// Takes a token for one join: valid, unused and unexpired, atomically (two nodes racing
/// with one token: one wins). Returns the token's id.
pub async fn consume_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    token: &str,
    now: i64,
) -> Result<Result<String, TokenProblem>, sqlx::Error> {
    let hash = token_hash(token);
    let taken = sqlx::query(
        "UPDATE join_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1 RETURNING id",
    )
    .bind(now)
    .bind(&hash)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(row) = taken {
        return Ok(Ok(row.try_get("id")?));
    }
    let row = sqlx::query("SELECT used_at, expires_at FROM join_tokens WHERE token_hash = $1")
        .bind(&hash)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(Err(match row {
        None => TokenProblem::Unknown,
        Some(r) if r.try_get::<Option<i64>, _>("used_at")?.is_some() => TokenProblem::Used,
        Some(_) => TokenProblem::Expired,
    }))
}

pub async fn token_used_by(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    token_id: &str,
    node_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE join_tokens SET node_id = $1 WHERE id = $2")
        .bind(node_id)
        .bind(token_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

// ---- usage ----------------------------------------------------------------------------

pub async fn record_usage(
    db: &Pool,
    node_id: &str,
    period_secs: i64,
    usage: &[VhostUsage],
    now: i64,
) -> Result<(), sqlx::Error> {
    if usage.is_empty() {
        return Ok(());
    }
    let mut tx = rookery_common::db::begin_write(db).await?;
    for u in usage {
        sqlx::query(
            "INSERT INTO usage_samples (id, domain, node_id, at, period_secs, accounts, sessions, peak_sessions, messages_in, messages_out, storage_bytes)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(new_id())
        .bind(&u.domain)
        .bind(node_id)
        .bind(now)
        .bind(period_secs)
        .bind(u.accounts)
        .bind(u.sessions)
        .bind(u.peak_sessions)
        .bind(u.messages_in)
        .bind(u.messages_out)
        .bind(u.storage_bytes)
        .execute(&mut *tx)
        .await?;
        // The day's roll-up: latest counts, highest peak, messages added up.
        sqlx::query(
            "INSERT INTO usage_daily (domain, day, accounts, sessions, peak_sessions, messages, storage_bytes, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (domain, day) DO UPDATE SET
               accounts = excluded.accounts, sessions = excluded.sessions,
               peak_sessions = CASE WHEN excluded.peak_sessions > usage_daily.peak_sessions
                                    THEN excluded.peak_sessions ELSE usage_daily.peak_sessions END,
               messages = usage_daily.messages + excluded.messages,
               storage_bytes = excluded.storage_bytes, updated_at = excluded.updated_at",
        )
        .bind(&u.domain)
        .bind(now.div_euclid(86_400))
        .bind(u.accounts)
        .bind(u.sessions)
        .bind(u.peak_sessions.max(u.sessions))
        .bind(u.messages_in + u.messages_out)
        .bind(u.storage_bytes)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// One day of a domain's usage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayUsage {
    pub day: i64,
    pub accounts: i64,
    pub sessions: i64,
    pub peak_sessions: i64,
    pub messages: i64,
    pub storage_bytes: i64,
    pub updated_at: i64,
}

/// The last `days` days of a domain's usage, oldest first (days without data are absent).
pub async fn daily_usage(
    db: &Pool,
    domain: &str,
    today: i64,
    days: i64,
) -> Result<Vec<DayUsage>, sqlx::Error> {
    sqlx::query(
        "SELECT day, accounts, sessions, peak_sessions, messages, storage_bytes, updated_at FROM usage_daily
         WHERE domain = $1 AND day > $2 AND day <= $3 ORDER BY day",
    )
    .bind(domain)
    .bind(today - days)
    .bind(today)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(DayUsage {
            day: r.try_get("day")?,
            accounts: r.try_get("accounts")?,
            sessions: r.try_get("sessions")?,
            peak_sessions: r.try_get("peak_sessions")?,
            messages: r.try_get("messages")?,
            storage_bytes: r.try_get("storage_bytes")?,
            updated_at: r.try_get("updated_at")?,
        })
    })
    .collect()
}

/// Drops raw samples older than `keep_secs` (the daily roll-up keeps the history).
pub async fn prune_samples(db: &Pool, now: i64, keep_secs: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM usage_samples WHERE at < $1")
        .bind(now - keep_secs)
        .execute(db)
        .await?
        .rows_affected())
}

// ---- audit log ------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct AuditRow {
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: String,
}

/// Notes an admin action (or the system's, with no actor id).
pub async fn audit(
    db: &Pool,
    actor_id: Option<&str>,
    actor: &str,
    action: &str,
    target: &str,
    details: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, at, actor_id, actor, action, target, details) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(now)
    .bind(actor_id)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(details)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn audit_log(db: &Pool, limit: i64) -> Result<Vec<AuditRow>, sqlx::Error> {
    sqlx::query(
        "SELECT at, actor, action, target, details FROM audit_log ORDER BY at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(AuditRow {
            at: r.try_get("at")?,
            actor: r.try_get("actor")?,
            action: r.try_get("action")?,
            target: r.try_get("target")?,
            details: r.try_get("details")?,
        })
    })
    .collect()
}
