//! SQL of the prober: each domain's probe account, results, their daily roll-up, and
//! incidents.

use sqlx::Row;

use super::{ProbeResult, Stage};
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

/// Stores a result and counts it in its day's roll-up.
pub async fn record(
    db: &Pool,
    domain_id: &str,
    location: &str,
    at: i64,
    r: &ProbeResult,
) -> Result<(), sqlx::Error> {
    let stages: serde_json::Map<String, serde_json::Value> = r
        .stages
        .iter()
        .map(|(s, d)| {
            (
                s.as_str().to_string(),
                serde_json::json!(d.as_secs_f64() * 1000.0),
            )
        })
        .collect();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO probe_results (id, domain_id, location, at, ok, stage, error, total_ms, stages)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new_id())
    .bind(domain_id)
    .bind(location)
    .bind(at)
    .bind(i64::from(r.ok))
    .bind(r.failed_stage.map(Stage::as_str))
    .bind(&r.error)
    .bind(i64::try_from(r.total.as_millis()).unwrap_or(i64::MAX))
    .bind(serde_json::Value::Object(stages).to_string())
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO probe_daily (domain_id, day, up, down) VALUES ($1, $2, $3, $4)
         ON CONFLICT (domain_id, day) DO UPDATE SET up = probe_daily.up + excluded.up, down = probe_daily.down + excluded.down",
    )
    .bind(domain_id)
    .bind(at.div_euclid(86_400))
    .bind(i64::from(r.ok))
    .bind(i64::from(!r.ok))
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// The latest result of a domain: (at, ok, stage, error, total ms).
#[derive(Debug, Clone)]
pub struct Latest {
    pub at: i64,
    pub ok: bool,
    pub stage: Option<String>,
    pub error: Option<String>,
    pub total_ms: i64,
}

pub async fn latest(db: &Pool, domain_id: &str) -> Result<Option<Latest>, sqlx::Error> {
    sqlx::query(
        "SELECT at, ok, stage, error, total_ms FROM probe_results WHERE domain_id = $1 ORDER BY at DESC, id DESC LIMIT 1",
    )
    .bind(domain_id)
    .fetch_optional(db)
    .await?
    .map(|r| {
        Ok(Latest {
            at: r.try_get("at")?,
            ok: r.try_get::<i64, _>("ok")? != 0,
            stage: r.try_get("stage")?,
            error: r.try_get("error")?,
            total_ms: r.try_get("total_ms")?,
        })
    })
    .transpose()
}

/// (day, up, down) for days in (from_day, to_day], oldest first.
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

/// Up and down results since `since` (for the 24-hour figure).
pub async fn counts_since(
    db: &Pool,
    domain_id: &str,
    since: i64,
) -> Result<(i64, i64), sqlx::Error> {
    let r = sqlx::query(
        "SELECT CAST(COALESCE(SUM(ok), 0) AS BIGINT) AS up, COUNT(*) AS total FROM probe_results WHERE domain_id = $1 AND at >= $2",
    )
    .bind(domain_id)
    .bind(since)
    .fetch_one(db)
    .await?;
    let up: i64 = r.try_get("up")?;
    let total: i64 = r.try_get("total")?;
    Ok((up, total - up))
}

/// Drops raw results older than `before` (the daily roll-up stays).
pub async fn prune(db: &Pool, before: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM probe_results WHERE at < $1")
        .bind(before)
        .execute(db)
        .await?
        .rows_affected())
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
    sqlx::query(
        "INSERT INTO incidents (id, domain_id, started_at, stage, error) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(new_id())
    .bind(domain_id)
    .bind(started_at)
    .bind(stage)
    .bind(error)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn end_incident(db: &Pool, domain_id: &str, ended_at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE incidents SET ended_at = $1 WHERE domain_id = $2 AND ended_at IS NULL")
        .bind(ended_at)
        .bind(domain_id)
        .execute(db)
        .await?;
    Ok(())
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
    pub last_at: Option<i64>,
    pub last_ok: Option<bool>,
    pub last_stage: Option<String>,
    pub open_incident_since: Option<i64>,
    /// Up and down results over the last 24 hours.
    pub up: i64,
    pub down: i64,
}

/// Every placed domain with its latest result, open incident and 24-hour counts.
pub async fn overview(db: &Pool, since: i64) -> Result<Vec<OverviewRow>, sqlx::Error> {
    sqlx::query(
        "SELECT d.id, d.domain, d.state, n.name AS node,
            (SELECT at FROM probe_results r WHERE r.domain_id = d.id ORDER BY at DESC LIMIT 1) AS last_at,
            (SELECT ok FROM probe_results r WHERE r.domain_id = d.id ORDER BY at DESC LIMIT 1) AS last_ok,
            (SELECT stage FROM probe_results r WHERE r.domain_id = d.id ORDER BY at DESC LIMIT 1) AS last_stage,
            (SELECT MIN(started_at) FROM incidents i WHERE i.domain_id = d.id AND i.ended_at IS NULL) AS open_since,
            (SELECT COUNT(*) FROM probe_results r WHERE r.domain_id = d.id AND r.at >= $1 AND r.ok = 1) AS up,
            (SELECT COUNT(*) FROM probe_results r WHERE r.domain_id = d.id AND r.at >= $1 AND r.ok = 0) AS down
         FROM domains d LEFT JOIN nodes n ON n.id = d.applied_node_id
         WHERE d.state IN ('provisioning', 'active', 'suspended')",
    )
    .bind(since)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(OverviewRow {
            domain_id: r.try_get("id")?,
            domain: r.try_get("domain")?,
            state: r.try_get("state")?,
            node: r.try_get("node")?,
            last_at: r.try_get("last_at")?,
            last_ok: r.try_get::<Option<i64>, _>("last_ok")?.map(|v| v != 0),
            last_stage: r.try_get("last_stage")?,
            open_incident_since: r.try_get("open_since")?,
            up: r.try_get("up")?,
            down: r.try_get("down")?,
        })
    })
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
}
