//! SQL of the prober: each domain's probe account, results, their daily roll-up, and
//! incidents.

use sqlx::Row;

use super::ProbeResult;
use crate::{clock::new_id, db::Pool};

/// A domain the prober logs in to.
#[derive(Debug, Clone)]
pub struct Target {
    pub domain_id: String,
    pub domain: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password_sealed: String,
}

/// What a probe account is sealed against.
pub fn password_context(domain_id: &str) -> String {
    format!("probe-password:{domain_id}")
}

/// Active domains settled on a node, with a probe account there.
pub async fn targets(db: &Pool) -> Result<Vec<Target>, sqlx::Error> {
    sqlx::query(
        "SELECT d.id, d.domain, n.public_host, n.c2s_port, d.probe_username, d.probe_password_sealed
         FROM domains d JOIN nodes n ON n.id = d.applied_node_id
         WHERE d.state IN ('active', 'suspended') AND d.move_from_node_id IS NULL AND d.probe_node_id = d.applied_node_id
           AND d.probe_username IS NOT NULL AND d.probe_password_sealed IS NOT NULL
         ORDER BY d.id",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(Target {
            domain_id: r.try_get("id")?,
            domain: r.try_get("domain")?,
            host: r.try_get("public_host")?,
            port: u16::try_from(r.try_get::<i64, _>("c2s_port")?).unwrap_or(5222),
            username: r.try_get("probe_username")?,
            password_sealed: r.try_get("probe_password_sealed")?,
        })
    })
    .collect()
}

/// Active domains whose probe account is missing on the node serving them: (id, domain,
/// node id).
pub async fn missing_accounts(db: &Pool) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query(
        "SELECT id, domain, applied_node_id FROM domains
         WHERE state = 'active' AND applied_node_id IS NOT NULL AND move_from_node_id IS NULL
           AND applied_node_id = node_id AND (probe_node_id IS NULL OR probe_node_id <> applied_node_id)",
    )
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("id")?, r.try_get("domain")?, r.try_get("applied_node_id")?)))
    .collect()
}

pub async fn set_account(
    db: &Pool,
    domain_id: &str,
    username: &str,
    password_sealed: &str,
    node_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE domains SET probe_username = $1, probe_password_sealed = $2, probe_node_id = $3 WHERE id = $4",
    )
    .bind(username)
    .bind(password_sealed)
    .bind(node_id)
    .bind(domain_id)
    .execute(db)
    .await?;
    Ok(())
}

/// One probe result as stored: from the panel's own prober or a remote location.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResult {
    pub domain_id: String,
    pub location: String,
    pub at: i64,
    pub ok: bool,
    pub stage: Option<String>,
    pub error: Option<String>,
    pub total_ms: i64,
    /// Per-stage latency in milliseconds, by stage name.
    pub stages: Vec<(String, f64)>,
}

impl StoredResult {
    pub fn new(domain_id: &str, location: &str, at: i64, r: &ProbeResult) -> Self {
        Self {
            domain_id: domain_id.into(),
            location: location.into(),
            at,
            ok: r.ok,
            stage: r.stage_name(),
            error: r.error.clone(),
            total_ms: r.total_ms(),
            stages: r.stage_ms().collect(),
        }
    }
}

/// Stores results; `received_at` is the panel's clock, for the round keeper.
pub async fn insert_results(
    db: &Pool,
    results: &[StoredResult],
    received_at: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    for r in results {
        let stages: serde_json::Map<String, serde_json::Value> = r
            .stages
            .iter()
            .map(|(s, ms)| (s.clone(), serde_json::json!(ms)))
            .collect();
        sqlx::query(
            "INSERT INTO probe_results (id, domain_id, location, at, ok, stage, error, total_ms, stages, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(new_id())
        .bind(&r.domain_id)
        .bind(&r.location)
        .bind(r.at)
        .bind(i64::from(r.ok))
        .bind(&r.stage)
        .bind(&r.error)
        .bind(r.total_ms)
        .bind(serde_json::Value::Object(stages).to_string())
        .bind(received_at)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// A stored result as the round keeper reads it back.
#[derive(Debug, Clone)]
pub struct ReceivedResult {
    pub id: String,
    pub received_at: i64,
    pub result: StoredResult,
}

/// Results the panel stored at or after `since` (its own clock), oldest first.
pub async fn received_since(db: &Pool, since: i64) -> Result<Vec<ReceivedResult>, sqlx::Error> {
    sqlx::query(
        "SELECT id, received_at, domain_id, location, at, ok, stage, error, total_ms FROM probe_results
         WHERE received_at >= $1 ORDER BY received_at, at",
    )
    .bind(since)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(ReceivedResult {
            id: r.try_get("id")?,
            received_at: r.try_get("received_at")?,
            result: StoredResult {
                domain_id: r.try_get("domain_id")?,
                location: r.try_get("location")?,
                at: r.try_get("at")?,
                ok: r.try_get::<i64, _>("ok")? != 0,
                stage: r.try_get("stage")?,
                error: r.try_get("error")?,
                total_ms: r.try_get("total_ms")?,
                stages: Vec::new(),
            },
        })
    })
    .collect()
}

/// A decided round of one domain, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRow {
    pub round_start: i64,
    pub up: bool,
    pub stage: Option<String>,
    /// The error of a failing location (for the dashboard), `None` when up.
    pub error: Option<String>,
    /// The fastest full login among the locations that passed.
    pub total_ms: Option<i64>,
    /// The latest probe time among the round's results.
    pub checked_at: i64,
    pub reporting: i64,
    pub failing: i64,
}

/// Stores a decided round once: counts it in its hour and day, and makes it the domain's
/// current status when it is the newest. Returns false when the round was stored before
/// (a restarted panel reads recent results again).
pub async fn store_round(db: &Pool, domain_id: &str, r: &RoundRow) -> Result<bool, sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    let inserted = sqlx::query(
        "INSERT INTO probe_rounds (domain_id, round_start, up, stage, reporting, failing)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (domain_id, round_start) DO NOTHING",
    )
    .bind(domain_id)
    .bind(r.round_start)
    .bind(i64::from(r.up))
    .bind(&r.stage)
    .bind(r.reporting)
    .bind(r.failing)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    let (up, down) = (i64::from(r.up), i64::from(!r.up));
    let hour = r.round_start.div_euclid(3600);
    for (table, unit, key) in [
        ("probe_hourly", "hour", hour),
        ("probe_daily", "day", r.round_start.div_euclid(86_400)),
    ] {
        sqlx::query(&format!(
            "INSERT INTO {table} (domain_id, {unit}, up, down) VALUES ($1, $2, $3, $4)
             ON CONFLICT (domain_id, {unit}) DO UPDATE SET up = {table}.up + excluded.up, down = {table}.down + excluded.down"
        ))
        .bind(domain_id)
        .bind(key)
        .bind(up)
        .bind(down)
        .execute(&mut *tx)
        .await?;
    }
    let counts = sqlx::query(
        "SELECT CAST(COALESCE(SUM(up), 0) AS BIGINT) AS up, CAST(COALESCE(SUM(down), 0) AS BIGINT) AS down
         FROM probe_hourly WHERE domain_id = $1 AND hour > $2",
    )
    .bind(domain_id)
    .bind(hour - 24)
    .fetch_one(&mut *tx)
    .await?;
    let (up_24h, down_24h): (i64, i64) = (counts.try_get("up")?, counts.try_get("down")?);
    sqlx::query(
        "INSERT INTO probe_status (domain_id, round_start, checked_at, up, stage, error, total_ms, reporting, failing, up_24h, down_24h,
            domain)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, COALESCE((SELECT domain FROM domains WHERE id = $1), ''))
         ON CONFLICT (domain_id) DO UPDATE SET round_start = excluded.round_start, checked_at = excluded.checked_at,
            up = excluded.up, stage = excluded.stage, error = excluded.error, total_ms = excluded.total_ms,
            reporting = excluded.reporting, failing = excluded.failing, up_24h = excluded.up_24h, down_24h = excluded.down_24h
         WHERE probe_status.round_start <= excluded.round_start",
    )
    .bind(domain_id)
    .bind(r.round_start)
    .bind(r.checked_at)
    .bind(i64::from(r.up))
    .bind(&r.stage)
    .bind(&r.error)
    .bind(r.total_ms)
    .bind(r.reporting)
    .bind(r.failing)
    .bind(up_24h)
    .bind(down_24h)
    .execute(&mut *tx)
    .await?;
    rerank(&mut tx, domain_id).await?;
    tx.commit().await?;
    Ok(true)
}

/// The overview's groups, in its order: the group is the top of [`RANK`].
pub const GROUP_INCIDENT: i64 = 0;
pub const GROUP_FAILING: i64 = 1;
pub const GROUP_PASSING: i64 = 2;
/// Domains no longer provisioning, active or suspended (deleting, deleted): not listed.
pub const GROUP_UNLISTED: i64 = 3;
/// A group's share of the rank: the rank is group × 2^52 + incident start × 2^20 +
/// 24-hour uptime in millionths (below 2^20), so one BIGINT sorts like the tuple (and an
/// incident start in seconds fits in 32 bits until 2106).
pub const GROUP_UNIT: i64 = 1 << 52;

/// The overview rank of a `probe_status` row from its other columns (as migration 0012
/// sets it). Sorting by it and then by name puts the worst first: see [`worst_first`].
const RANK: &str = "CASE WHEN listed = 0 THEN 3 WHEN incident_since IS NOT NULL THEN 0 WHEN up = 0 THEN 1 ELSE 2 END * 4503599627370496
    + CASE WHEN listed <> 0 AND incident_since IS NOT NULL THEN incident_since * 1048576 ELSE 0 END
    + CASE WHEN up_24h + down_24h = 0 THEN 1000000 ELSE up_24h * 1000000 / (up_24h + down_24h) END";

/// Whether domain `$1` is listed in the overview, and the start of its oldest open incident.
const LISTED_AND_SINCE: &str = "listed = CASE WHEN (SELECT state FROM domains WHERE id = $1)
        IN ('provisioning', 'active', 'suspended') THEN 1 ELSE 0 END,
    incident_since = (SELECT MIN(started_at) FROM incidents WHERE domain_id = $1 AND ended_at IS NULL)";

/// Brings a domain's overview rank up to date with its status, open incidents and state:
/// called in the transaction that changes any of them (a stored round, an incident
/// opening or closing, a change of the domain's state). A domain not probed yet has no
/// status row, and this changes nothing.
pub async fn rerank(conn: &mut sqlx::AnyConnection, domain_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "UPDATE probe_status SET {LISTED_AND_SINCE} WHERE domain_id = $1"
    ))
    .bind(domain_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(&format!(
        "UPDATE probe_status SET rank = {RANK} WHERE domain_id = $1"
    ))
    .bind(domain_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Recomputes every domain's overview rank from its status, name and open incidents: for
/// data written straight into the tables (the uptime benchmark's seed) or repaired by hand.
pub async fn rerank_all(db: &Pool) -> Result<(), sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    sqlx::query(
        "UPDATE probe_status SET
            domain = COALESCE((SELECT d.domain FROM domains d WHERE d.id = probe_status.domain_id), ''),
            listed = CASE WHEN (SELECT d.state FROM domains d WHERE d.id = probe_status.domain_id)
                IN ('provisioning', 'active', 'suspended') THEN 1 ELSE 0 END,
            incident_since = (SELECT MIN(i.started_at) FROM incidents i
                              WHERE i.domain_id = probe_status.domain_id AND i.ended_at IS NULL)",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(&format!("UPDATE probe_status SET rank = {RANK}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A domain's current status: its latest decided round.
#[derive(Debug, Clone)]
pub struct Latest {
    pub at: i64,
    pub ok: bool,
    pub stage: Option<String>,
    pub error: Option<String>,
    pub total_ms: i64,
    /// Locations that reported in that round, and how many of them failed.
    pub reporting: i64,
    pub failing: i64,
}

pub async fn latest(db: &Pool, domain_id: &str) -> Result<Option<Latest>, sqlx::Error> {
    sqlx::query(
        "SELECT checked_at, up, stage, error, total_ms, reporting, failing FROM probe_status WHERE domain_id = $1",
    )
    .bind(domain_id)
    .fetch_optional(db)
    .await?
    .map(|r| {
        Ok(Latest {
            at: r.try_get("checked_at")?,
            ok: r.try_get::<i64, _>("up")? != 0,
            stage: r.try_get("stage")?,
            error: r.try_get("error")?,
            total_ms: r.try_get::<Option<i64>, _>("total_ms")?.unwrap_or(0),
            reporting: r.try_get("reporting")?,
            failing: r.try_get("failing")?,
        })
    })
    .transpose()
}

/// (day, up, down) rounds for days in (from_day, to_day], oldest first.
pub async fn daily(
    db: &Pool,
    domain_id: &str,
    from_day: i64,
    to_day: i64,
) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
    sqlx::query(
        "SELECT day, up, down FROM probe_daily WHERE domain_id = $1 AND day > $2 AND day <= $3 ORDER BY day",
    )
    .bind(domain_id)
    .bind(from_day)
    .bind(to_day)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Ok((r.try_get("day")?, r.try_get("up")?, r.try_get("down")?)))
    .collect()
}

/// Up and down rounds in the hours from the one holding `since` on (the 24-hour and 7-day
/// figures, from the hourly roll-up).
pub async fn counts_since(
    db: &Pool,
    domain_id: &str,
    since: i64,
) -> Result<(i64, i64), sqlx::Error> {
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(up), 0) AS BIGINT) AS up, CAST(COALESCE(SUM(down), 0) AS BIGINT) AS down
         FROM probe_hourly WHERE domain_id = $1 AND hour >= $2",
    )
    .bind(domain_id)
    .bind(since.div_euclid(3600))
    .fetch_one(db)
    .await?;
    Ok((r.try_get("up")?, r.try_get("down")?))
}

/// Drops raw results and rounds older than `before`, and hourly roll-ups older than
/// `hours_before` (the daily roll-up stays).
pub async fn prune(db: &Pool, before: i64, hours_before: i64) -> Result<u64, sqlx::Error> {
    let mut n = 0;
    for (sql, at) in [
        ("DELETE FROM probe_results WHERE at < $1", before),
        ("DELETE FROM probe_rounds WHERE round_start < $1", before),
        (
            "DELETE FROM probe_hourly WHERE hour < $1",
            hours_before.div_euclid(3600),
        ),
    ] {
        n += sqlx::query(sql).bind(at).execute(db).await?.rows_affected();
    }
    Ok(n)
}

#[derive(Debug, Clone)]
pub struct IncidentRow {
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub stage: String,
    pub error: Option<String>,
}

pub async fn open_incident(db: &Pool, domain_id: &str) -> Result<Option<IncidentRow>, sqlx::Error> {
    Ok(incidents(db, domain_id, 50)
        .await?
        .into_iter()
        .find(|i| i.ended_at.is_none()))
}

pub async fn start_incident(
    db: &Pool,
    domain_id: &str,
    started_at: i64,
    stage: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    start_incident_in(&mut tx, domain_id, started_at, stage, error).await?;
    tx.commit().await
}

/// Opens an incident on `conn` (a transaction's: the alerts about it join it).
pub async fn start_incident_in(
    conn: &mut sqlx::AnyConnection,
    domain_id: &str,
    started_at: i64,
    stage: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO incidents (id, domain_id, started_at, stage, error) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new_id())
    .bind(domain_id)
    .bind(started_at)
    .bind(stage)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    rerank(conn, domain_id).await
}

pub async fn end_incident(db: &Pool, domain_id: &str, ended_at: i64) -> Result<(), sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    end_incident_in(&mut tx, domain_id, ended_at).await?;
    tx.commit().await
}

/// Closes the domain's open incidents on `conn` (a transaction's).
pub async fn end_incident_in(
    conn: &mut sqlx::AnyConnection,
    domain_id: &str,
    ended_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE incidents SET ended_at = $1 WHERE domain_id = $2 AND ended_at IS NULL")
        .bind(ended_at)
        .bind(domain_id)
        .execute(&mut *conn)
        .await?;
    rerank(conn, domain_id).await
}

/// A domain's incidents, newest first.
pub async fn incidents(
    db: &Pool,
    domain_id: &str,
    limit: i64,
) -> Result<Vec<IncidentRow>, sqlx::Error> {
    sqlx::query(
        "SELECT started_at, ended_at, stage, error FROM incidents WHERE domain_id = $1 ORDER BY started_at DESC LIMIT $2",
    )
    .bind(domain_id)
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(IncidentRow {
            started_at: r.try_get("started_at")?,
            ended_at: r.try_get("ended_at")?,
            stage: r.try_get("stage")?,
            error: r.try_get("error")?,
        })
    })
    .collect()
}

/// The last `n` results of a domain, newest first: (at, ok, stage, error).
pub async fn recent(
    db: &Pool,
    domain_id: &str,
    n: i64,
) -> Result<Vec<(i64, bool, Option<String>, Option<String>)>, sqlx::Error> {
    sqlx::query(
        "SELECT at, ok, stage, error FROM probe_results WHERE domain_id = $1 ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(domain_id)
    .bind(n)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("at")?,
            r.try_get::<i64, _>("ok")? != 0,
            r.try_get("stage")?,
            r.try_get("error")?,
        ))
    })
    .collect()
}

/// One line of the admin's uptime overview.
#[derive(Debug, Clone)]
pub struct OverviewRow {
    pub domain_id: String,
    pub domain: String,
    pub state: String,
    pub node: Option<String>,
    /// The node's health from its heartbeats (`up`, `down`, …) and its last heartbeat.
    pub node_health: Option<String>,
    pub node_heartbeat_at: Option<i64>,
    pub last_at: Option<i64>,
    pub last_ok: Option<bool>,
    pub last_stage: Option<String>,
    pub open_incident_since: Option<i64>,
    /// Up and down rounds over the last 24 hours.
    pub up: i64,
    pub down: i64,
}

/// The overview's rows before ordering: every domain being set up or running, its node and
/// its status row, which carries the start of its open incident (`incident_since`, kept
/// with the incidents by [`start_incident`] and [`end_incident`]).
const OVERVIEW_FROM: &str = "FROM domains d LEFT JOIN nodes n ON n.id = d.applied_node_id
    LEFT JOIN probe_status s ON s.domain_id = d.id
    WHERE d.state IN ('provisioning', 'active', 'suspended')";

const OVERVIEW_COLUMNS: &str =
    "d.id, d.domain, d.state, n.name AS node, n.health AS node_health, n.last_heartbeat_at,
    s.checked_at, s.up AS last_ok, s.stage, s.up_24h, s.down_24h, s.incident_since AS open_since";

fn overview_row(r: &sqlx::any::AnyRow) -> Result<OverviewRow, sqlx::Error> {
    Ok(OverviewRow {
        domain_id: r.try_get("id")?,
        domain: r.try_get("domain")?,
        state: r.try_get("state")?,
        node: r.try_get("node")?,
        node_health: r.try_get("node_health")?,
        node_heartbeat_at: r.try_get("last_heartbeat_at")?,
        last_at: r.try_get("checked_at")?,
        last_ok: r.try_get::<Option<i64>, _>("last_ok")?.map(|v| v != 0),
        last_stage: r.try_get("stage")?,
        open_incident_since: r.try_get("open_since")?,
        up: r.try_get::<Option<i64>, _>("up_24h")?.unwrap_or(0),
        down: r.try_get::<Option<i64>, _>("down_24h")?.unwrap_or(0),
    })
}

/// Every placed domain with its current status, its node's heartbeat, open incident and
/// 24-hour counts: one row a domain from `probe_status`, no scan of results. The admin's
/// page reads [`overview_counts`] and [`overview_page`] instead: with 10,000 domains,
/// decoding every row costs far more than the page may take.
#[tracing::instrument(skip_all)]
pub async fn overview(db: &Pool) -> Result<Vec<OverviewRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {OVERVIEW_COLUMNS} {OVERVIEW_FROM}"))
        .fetch_all(db)
        .await?
        .iter()
        .map(overview_row)
        .collect()
}

/// How many of the overview's domains have an open incident, fail (no incident yet), are
/// up, and are not probed yet: the groups of [`worst_first`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverviewCounts {
    pub incident: i64,
    pub down: i64,
    pub up: i64,
    pub unknown: i64,
}

impl OverviewCounts {
    pub fn total(&self) -> i64 {
        self.incident + self.down + self.up + self.unknown
    }
}

/// The overview's counts per group: the probed domains' groups from their stored rank,
/// and the listed domains without a status row are the unprobed ones.
#[tracing::instrument(skip_all)]
pub async fn overview_counts(db: &Pool) -> Result<OverviewCounts, sqlx::Error> {
    let listed: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM domains WHERE state IN ('provisioning', 'active', 'suspended')",
    )
    .fetch_one(db)
    .await?
    .try_get("n")?;
    let mut counts = OverviewCounts::default();
    for r in sqlx::query(
        "SELECT rank / $1 AS grp, COUNT(*) AS n FROM probe_status WHERE rank < $2 GROUP BY rank / $1",
    )
    .bind(GROUP_UNIT)
    .bind(GROUP_UNLISTED * GROUP_UNIT)
    .fetch_all(db)
    .await?
    {
        let (group, n): (i64, i64) = (r.try_get("grp")?, r.try_get("n")?);
        match group {
            GROUP_INCIDENT => counts.incident = n,
            GROUP_FAILING => counts.down = n,
            GROUP_PASSING => counts.up = n,
            _ => {}
        }
    }
    counts.unknown = (listed - counts.incident - counts.down - counts.up).max(0);
    Ok(counts)
}

/// `limit` rows of the overview from `offset` on, in the order of [`worst_first`] (which
/// the database applies, so only the page's rows leave it): open incidents (oldest first),
/// failing, then by 24-hour uptime in millionths, unprobed last, each by name.
#[tracing::instrument(skip_all)]
pub async fn overview_page(
    db: &Pool,
    offset: i64,
    limit: i64,
) -> Result<Vec<OverviewRow>, sqlx::Error> {
    // Probed domains first, in their stored rank (migration 0012): the page is a walk along
    // the index `probe_status_rank` of one table, however many domains there are. The
    // inner ORDER BY picks the page, the outer one keeps it.
    let listed_below = GROUP_UNLISTED * GROUP_UNIT;
    let mut rows = sqlx::query(&format!(
        "SELECT {OVERVIEW_COLUMNS}
         FROM (SELECT domain_id, rank, domain FROM probe_status WHERE rank < $3
               ORDER BY rank, domain LIMIT $1 OFFSET $2) p
         JOIN domains d ON d.id = p.domain_id LEFT JOIN nodes n ON n.id = d.applied_node_id
         JOIN probe_status s ON s.domain_id = p.domain_id
         ORDER BY p.rank, p.domain"
    ))
    .bind(limit)
    .bind(offset)
    .bind(listed_below)
    .fetch_all(db)
    .await?
    .iter()
    .map(overview_row)
    .collect::<Result<Vec<_>, _>>()?;
    let wanted = usize::try_from(limit).unwrap_or(0);
    if rows.len() >= wanted {
        return Ok(rows);
    }
    // The page runs past the probed domains into the unprobed ones, by name.
    let unprobed_offset = if rows.is_empty() {
        let probed: i64 = sqlx::query("SELECT COUNT(*) AS n FROM probe_status WHERE rank < $1")
            .bind(listed_below)
            .fetch_one(db)
            .await?
            .try_get("n")?;
        (offset - probed).max(0)
    } else {
        0
    };
    let more = sqlx::query(&format!(
        "SELECT {OVERVIEW_COLUMNS} {OVERVIEW_FROM} AND s.domain_id IS NULL
         ORDER BY d.domain LIMIT $1 OFFSET $2"
    ))
    .bind(limit - rows.len() as i64)
    .bind(unprobed_offset)
    .fetch_all(db)
    .await?;
    for r in &more {
        rows.push(overview_row(r)?);
    }
    Ok(rows)
}

/// A domain's status in its organisation's domain list.
#[derive(Debug, Clone)]
pub struct Summary {
    pub up: bool,
    pub incident: bool,
    pub up_24h: i64,
    pub down_24h: i64,
}

/// The status of every probed domain of an organisation, by domain id.
pub async fn org_summary(
    db: &Pool,
    org_id: &str,
) -> Result<std::collections::HashMap<String, Summary>, sqlx::Error> {
    sqlx::query(
        "SELECT s.domain_id, s.up, s.up_24h, s.down_24h,
            (SELECT COUNT(*) FROM incidents i WHERE i.domain_id = s.domain_id AND i.ended_at IS NULL) AS open
         FROM probe_status s JOIN domains d ON d.id = s.domain_id WHERE d.org_id = $1",
    )
    .bind(org_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("domain_id")?,
            Summary {
                up: r.try_get::<i64, _>("up")? != 0,
                incident: r.try_get::<i64, _>("open")? > 0,
                up_24h: r.try_get("up_24h")?,
                down_24h: r.try_get("down_24h")?,
            },
        ))
    })
    .collect()
}

/// The organisation's `limit` worst probed domains, ranked in the database (open incident,
/// failing, lowest 24-hour uptime, then by name): (id, domain, status), so a reseller's
/// dashboard reads ten rows, not its thousand domains.
pub async fn org_worst(
    db: &Pool,
    org_id: &str,
    limit: usize,
) -> Result<Vec<(String, String, Summary)>, sqlx::Error> {
    sqlx::query(
        "SELECT d.id, d.domain, s.up, s.up_24h, s.down_24h,
            CASE WHEN o.domain_id IS NULL THEN 0 ELSE 1 END AS open
         FROM domains d JOIN probe_status s ON s.domain_id = d.id
         LEFT JOIN (SELECT domain_id FROM incidents WHERE ended_at IS NULL GROUP BY domain_id) o
             ON o.domain_id = d.id
         WHERE d.org_id = $1 AND d.state <> 'deleted'
         ORDER BY CASE WHEN o.domain_id IS NOT NULL THEN 0 WHEN s.up = 0 THEN 1 ELSE 2 END,
            CASE WHEN s.up_24h + s.down_24h = 0 THEN 1000000
                 ELSE s.up_24h * 1000000 / (s.up_24h + s.down_24h) END,
            d.domain
         LIMIT $2",
    )
    .bind(org_id)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok((
            r.try_get("id")?,
            r.try_get("domain")?,
            Summary {
                up: r.try_get::<i64, _>("up")? != 0,
                incident: r.try_get::<i64, _>("open")? != 0,
                up_24h: r.try_get("up_24h")?,
                down_24h: r.try_get("down_24h")?,
            },
        ))
    })
    .collect()
}

/// A probe location besides the panel's own.
#[derive(Debug, Clone)]
pub struct LocationRow {
    pub id: String,
    pub name: String,
    pub token_prefix: String,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    pub last_address: Option<String>,
    pub revoked_at: Option<i64>,
}

fn location_row(r: &sqlx::any::AnyRow) -> Result<LocationRow, sqlx::Error> {
    Ok(LocationRow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        token_prefix: r.try_get("token_prefix")?,
        created_at: r.try_get("created_at")?,
        last_seen_at: r.try_get("last_seen_at")?,
        last_address: r.try_get("last_address")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const LOCATION_COLUMNS: &str =
    "id, name, token_prefix, created_at, last_seen_at, last_address, revoked_at";

/// The SHA-256 of a probe token, as stored.
pub fn token_hash(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Adds a location and returns its token (shown once). `None` when the name is taken.
pub async fn create_location(
    db: &Pool,
    name: &str,
    created_by: &str,
    now: i64,
) -> Result<Option<String>, sqlx::Error> {
    let token = format!("rkp_{}", crate::clock::new_token());
    let done = sqlx::query(
        "INSERT INTO probe_locations (id, name, token_hash, token_prefix, created_at, created_by)
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING",
    )
    .bind(new_id())
    .bind(name)
    .bind(token_hash(&token))
    .bind(token.chars().take(10).collect::<String>())
    .bind(now)
    .bind(created_by)
    .execute(db)
    .await?;
    Ok((done.rows_affected() == 1).then_some(token))
}

pub async fn locations(db: &Pool) -> Result<Vec<LocationRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {LOCATION_COLUMNS} FROM probe_locations ORDER BY revoked_at IS NOT NULL, name"
    ))
    .fetch_all(db)
    .await?
    .iter()
    .map(location_row)
    .collect()
}

/// The unrevoked location a token belongs to; notes that it was seen (and from where).
pub async fn location_by_token(
    db: &Pool,
    token: &str,
    now: i64,
    address: &str,
) -> Result<Option<LocationRow>, sqlx::Error> {
    let hash = token_hash(token);
    let row = sqlx::query(&format!(
        "SELECT {LOCATION_COLUMNS} FROM probe_locations WHERE token_hash = $1 AND revoked_at IS NULL"
    ))
    .bind(&hash)
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    sqlx::query(
        "UPDATE probe_locations SET last_seen_at = $1, last_address = $2 WHERE token_hash = $3",
    )
    .bind(now)
    .bind(address)
    .bind(&hash)
    .execute(db)
    .await?;
    location_row(&row).map(Some)
}

/// Revokes a location: its token stops working and it no longer counts for quorum.
pub async fn revoke_location(db: &Pool, id: &str, now: i64) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE probe_locations SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL RETURNING name",
    )
    .bind(now)
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(|r| r.try_get("name")).transpose()
}

/// Names of the remote locations seen since `since` and not revoked.
pub async fn active_locations(db: &Pool, since: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query(
        "SELECT name FROM probe_locations WHERE revoked_at IS NULL AND last_seen_at >= $1 ORDER BY name",
    )
    .bind(since)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| r.try_get("name"))
    .collect()
}

/// Active and suspended domains by id, for validating a remote location's results.
pub async fn probed_domain_ids(db: &Pool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT id FROM domains WHERE state IN ('active', 'suspended')")
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect()
}

/// Worst first: open incidents (oldest first), then failing, then by 24-hour uptime,
/// then unprobed, then by name.
pub fn worst_first(rows: &mut [OverviewRow]) {
    let rank = |r: &OverviewRow| -> (u8, i64, u64, String) {
        let uptime = if r.up + r.down == 0 {
            1.0
        } else {
            r.up as f64 / (r.up + r.down) as f64
        };
        let group = match (r.open_incident_since, r.last_ok) {
            (Some(_), _) => 0,
            (None, Some(false)) => 1,
            (None, Some(true)) => 2,
            (None, None) => 3,
        };
        (
            group,
            r.open_incident_since.unwrap_or(i64::MAX),
            (uptime * 1_000_000.0) as u64,
            r.domain.clone(),
        )
    };
    rows.sort_by_key(rank);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        domain: &str,
        ok: Option<bool>,
        incident: Option<i64>,
        up: i64,
        down: i64,
    ) -> OverviewRow {
        OverviewRow {
            domain_id: domain.into(),
            domain: domain.into(),
            state: "active".into(),
            node: None,
            node_health: None,
            node_heartbeat_at: None,
            last_at: ok.map(|_| 0),
            last_ok: ok,
            last_stage: None,
            open_incident_since: incident,
            up,
            down,
        }
    }

    #[test]
    fn the_overview_puts_incidents_then_failures_then_the_lowest_uptime_first() {
        let mut rows = vec![
            row("never", None, None, 0, 0),
            row("fine", Some(true), None, 100, 0),
            row("shaky", Some(true), None, 90, 10),
            row("failing", Some(false), None, 99, 1),
            row("new-incident", Some(false), Some(200), 50, 50),
            row("old-incident", Some(false), Some(100), 80, 20),
        ];
        worst_first(&mut rows);
        let order: Vec<&str> = rows.iter().map(|r| r.domain.as_str()).collect();
        assert_eq!(
            order,
            [
                "old-incident",
                "new-incident",
                "failing",
                "shaky",
                "fine",
                "never"
            ]
        );
    }

    /// A database with the panel's schema and, as (name, status, open incident since, up,
    /// down), the domains of the test above, plus a deleted one and a closed incident.
    async fn overview_db() -> Pool {
        let db = crate::db::test_db_with_org().await;
        let domains = [
            ("never", "provisioning", None, None::<i64>, 0_i64, 0_i64),
            ("fine", "active", Some(true), None, 100, 0),
            ("shaky", "active", Some(true), None, 90, 10),
            ("failing", "suspended", Some(false), None, 99, 1),
            ("new-incident", "active", Some(false), Some(200), 50, 50),
            ("old-incident", "active", Some(false), Some(100), 80, 20),
            ("gone", "deleted", Some(false), Some(50), 0, 10),
        ];
        for (name, state, ok, since, up, down) in domains {
            sqlx::query(
                "INSERT INTO domains (id, org_id, domain, state, generation, created_at, updated_at)
                 VALUES ($1, 'o', $1, $2, 1, 0, 0)",
            )
            .bind(name)
            .bind(state)
            .execute(&db)
            .await
            .unwrap();
            if let Some(ok) = ok {
                sqlx::query(
                    "INSERT INTO probe_status (domain_id, round_start, checked_at, up, reporting, failing, up_24h, down_24h)
                     VALUES ($1, 300, 305, $2, 1, $3, $4, $5)",
                )
                .bind(name)
                .bind(i64::from(ok))
                .bind(i64::from(!ok))
                .bind(up)
                .bind(down)
                .execute(&db)
                .await
                .unwrap();
            }
            if let Some(at) = since {
                start_incident(&db, name, at, "connect", None)
                    .await
                    .unwrap();
            }
        }
        start_incident(&db, "fine", 10, "tls", None).await.unwrap();
        end_incident(&db, "fine", 20).await.unwrap();
        // The status rows above were written straight into the table, without their names.
        rerank_all(&db).await.unwrap();
        db
    }

    #[tokio::test]
    async fn the_database_pages_the_overview_in_the_order_of_worst_first() {
        let db = overview_db().await;
        let names = |rows: &[OverviewRow]| -> Vec<String> {
            rows.iter().map(|r| r.domain.clone()).collect()
        };
        let mut all = overview(&db).await.unwrap();
        worst_first(&mut all);
        assert_eq!(
            names(&all),
            [
                "old-incident",
                "new-incident",
                "failing",
                "shaky",
                "fine",
                "never"
            ]
        );
        let page = overview_page(&db, 0, 100).await.unwrap();
        assert_eq!(names(&page), names(&all));
        assert_eq!(page[0].open_incident_since, Some(100));
        assert_eq!((page[3].up, page[3].down), (90, 10));
        assert_eq!(
            names(&overview_page(&db, 2, 2).await.unwrap()),
            ["failing", "shaky"]
        );
        assert!(overview_page(&db, 6, 100).await.unwrap().is_empty());
        assert_eq!(
            overview_counts(&db).await.unwrap(),
            OverviewCounts {
                incident: 2,
                down: 1,
                up: 2,
                unknown: 1
            }
        );
    }

    /// The stored rank follows the rounds and incidents as the round keeper writes them:
    /// after each step of a scripted history, every page of the overview matches
    /// [`worst_first`] over the domains' status with their open incidents read afresh.
    #[tokio::test]
    async fn the_stored_rank_follows_rounds_and_incidents() {
        let db = crate::db::test_db_with_org().await;
        let names = [
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf",
        ];
        for (i, name) in names.iter().enumerate() {
            let state = if i == 6 { "provisioning" } else { "active" };
            sqlx::query(
                "INSERT INTO domains (id, org_id, domain, state, generation, created_at, updated_at)
                 VALUES ($1, 'o', $1, $2, 1, 0, 0)",
            )
            .bind(*name)
            .bind(state)
            .execute(&db)
            .await
            .unwrap();
        }
        let expected = async |db: &Pool| -> Vec<String> {
            let open: std::collections::HashMap<String, i64> = sqlx::query(
                "SELECT domain_id, MIN(started_at) AS since FROM incidents WHERE ended_at IS NULL GROUP BY domain_id",
            )
            .fetch_all(db)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.try_get("domain_id").unwrap(), r.try_get("since").unwrap()))
            .collect();
            let mut rows = overview(db).await.unwrap();
            for r in &mut rows {
                r.open_incident_since = open.get(&r.domain_id).copied();
            }
            worst_first(&mut rows);
            rows.into_iter().map(|r| r.domain).collect()
        };
        let paged = async |db: &Pool, size: i64| -> Vec<String> {
            let mut all = Vec::new();
            for page in 0.. {
                let rows = overview_page(db, page * size, size).await.unwrap();
                assert!(rows.len() as i64 <= size);
                if rows.is_empty() {
                    break;
                }
                all.extend(rows.into_iter().map(|r| r.domain));
            }
            all
        };
        let round = |start: i64, up: bool| RoundRow {
            round_start: start,
            up,
            stage: (!up).then(|| "connect".into()),
            error: None,
            total_ms: up.then_some(40),
            checked_at: start + 1,
            reporting: 1,
            failing: i64::from(!up),
        };
        // (minute, domain, up or down, then: 1 open an incident, 2 close it).
        let script: &[(i64, &str, bool, u8)] = &[
            (1, "alpha", true, 0),
            (1, "bravo", true, 0),
            (1, "charlie", false, 0),
            (1, "delta", true, 0),
            (2, "charlie", false, 1),
            (2, "echo", false, 0),
            (2, "bravo", false, 0),
            (3, "echo", false, 1),
            (3, "bravo", true, 0),
            (4, "charlie", true, 0),
            (5, "charlie", true, 2),
            (5, "foxtrot", true, 0),
            (6, "alpha", false, 0),
            (6, "echo", true, 2),
            (7, "alpha", false, 1),
            (7, "echo", false, 1),
        ];
        let mut steps = 0;
        for &(minute, domain, up, incident) in script {
            let start = 1_000_000 + minute * 60;
            assert!(store_round(&db, domain, &round(start, up)).await.unwrap());
            match incident {
                1 => start_incident(&db, domain, start, "connect", None)
                    .await
                    .unwrap(),
                2 => end_incident(&db, domain, start).await.unwrap(),
                _ => {}
            }
            let want = expected(&db).await;
            for size in [1, 2, 3, 100] {
                assert_eq!(
                    paged(&db, size).await,
                    want,
                    "page size {size} after {domain} at {minute}"
                );
            }
            steps += 1;
        }
        assert_eq!(steps, script.len());
        // The end: echo's and alpha's incidents (opened the same minute, so by 24-hour
        // uptime: echo 1 of 4 rounds up, alpha 1 of 3), charlie recovered (3 of 5), bravo
        // (2 of 3), the fully-up domains by name, and golf, never probed.
        assert_eq!(
            expected(&db).await,
            [
                "echo", "alpha", "charlie", "bravo", "delta", "foxtrot", "golf"
            ]
        );
        let counts = overview_counts(&db).await.unwrap();
        assert_eq!(
            counts,
            OverviewCounts {
                incident: 2,
                down: 0,
                up: 4,
                unknown: 1
            }
        );
        // A deleted domain leaves the overview, and a suspended one stays in it.
        crate::domains::db::mark_deleted(&db, "bravo", 2_000_000)
            .await
            .unwrap();
        crate::domains::db::set_state(&db, "delta", "suspended", 2_000_000)
            .await
            .unwrap();
        let want = expected(&db).await;
        assert_eq!(
            want,
            ["echo", "alpha", "charlie", "delta", "foxtrot", "golf"]
        );
        for size in [1, 2, 3, 100] {
            assert_eq!(
                paged(&db, size).await,
                want,
                "page size {size} after deletion"
            );
        }
        assert_eq!(overview_counts(&db).await.unwrap().up, 3);
    }
}
