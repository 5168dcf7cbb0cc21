//! SQL of alerts: organisations' contacts, the deliveries outbox with its attempts, and
//! the XMPP sender account. Every query on an organisation's data takes its [`OrgId`].

use sqlx::Row;

use crate::{clock::new_id, db::Pool, orgs::db::OrgId};

/// An organisation's saved alert contacts (empty strings: that channel is off).
#[derive(Debug, Clone, Default)]
pub struct Contacts {
    pub email: String,
    pub webhook_url: String,
    pub webhook_secret_sealed: Option<String>,
    pub xmpp_jid: String,
}

/// What an organisation's webhook secret is sealed against.
pub fn secret_context(org: &OrgId) -> String {
    format!("alert-webhook-secret:{}", org.0)
}

/// What a delivery's copy of its signing secret is sealed against.
pub fn delivery_secret_context(delivery_id: &str) -> String {
    format!("delivery-secret:{delivery_id}")
}

/// What the XMPP sender's password is sealed against.
pub fn sender_context(domain: &str) -> String {
    format!("alert-sender-password:{domain}")
}

#[tracing::instrument(skip_all)]
pub async fn contacts<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    org: &OrgId,
) -> Result<Option<Contacts>, sqlx::Error> {
    sqlx::query(
        "SELECT email, webhook_url, webhook_secret_sealed, xmpp_jid FROM alert_contacts WHERE org_id = $1",
    )
    .bind(&org.0)
    .fetch_optional(db)
    .await?
    .map(|r| {
        Ok(Contacts {
            email: r.try_get("email")?,
            webhook_url: r.try_get("webhook_url")?,
            webhook_secret_sealed: r.try_get("webhook_secret_sealed")?,
            xmpp_jid: r.try_get("xmpp_jid")?,
        })
    })
    .transpose()
}

/// Saves the contacts. `new_secret_sealed` is stored only when the organisation has no
/// secret yet (a secret, once made, changes only by rotation).
#[tracing::instrument(skip_all)]
pub async fn save_contacts(
    db: &Pool,
    org: &OrgId,
    c: &Contacts,
    new_secret_sealed: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_contacts (org_id, email, webhook_url, webhook_secret_sealed, xmpp_jid, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (org_id) DO UPDATE SET email = excluded.email, webhook_url = excluded.webhook_url,
            xmpp_jid = excluded.xmpp_jid, updated_at = excluded.updated_at,
            webhook_secret_sealed = COALESCE(alert_contacts.webhook_secret_sealed, excluded.webhook_secret_sealed)",
    )
    .bind(&org.0)
    .bind(&c.email)
    .bind(&c.webhook_url)
    .bind(new_secret_sealed)
    .bind(&c.xmpp_jid)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Replaces the signing secret (rotation). Creates the row, with the default email
/// (`default_email`), if the organisation never saved its contacts.
#[tracing::instrument(skip_all)]
pub async fn set_secret(
    db: &Pool,
    org: &OrgId,
    sealed: &str,
    default_email: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_contacts (org_id, email, webhook_secret_sealed, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (org_id) DO UPDATE SET webhook_secret_sealed = excluded.webhook_secret_sealed, updated_at = excluded.updated_at",
    )
    .bind(&org.0)
    .bind(default_email)
    .bind(sealed)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// The email of the organisation's first owner (the default alert address).
#[tracing::instrument(skip_all)]
pub async fn owner_email<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    org: &OrgId,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query(
        "SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.org_id = $1 AND m.role = 'owner' ORDER BY m.created_at, u.email LIMIT 1",
    )
    .bind(&org.0)
    .fetch_optional(db)
    .await?
    .map(|r| r.try_get("email"))
    .transpose()
}

/// Every platform admin's email.
#[tracing::instrument(skip_all)]
pub async fn admin_emails(db: &Pool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT email FROM users WHERE is_admin = 1 ORDER BY email")
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| r.try_get("email"))
        .collect()
}

/// An incident with its domain, for an alert about it.
#[derive(Debug, Clone)]
pub struct IncidentInfo {
    pub id: String,
    pub domain_id: String,
    pub domain: String,
    pub org_id: OrgId,
    pub stage: String,
    pub error: Option<String>,
    pub started_at: i64,
    pub ended_at: Option<i64>,
}

/// The domain's open incident (`ended_at` None), or the one that ended at `ended_at`.
#[tracing::instrument(skip_all)]
pub async fn incident<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    domain_id: &str,
    ended_at: Option<i64>,
) -> Result<Option<IncidentInfo>, sqlx::Error> {
    let filter = if ended_at.is_some() {
        "i.ended_at = $2"
    } else {
        "i.ended_at IS NULL"
    };
    let sql = format!(
        "SELECT i.id, i.domain_id, d.domain, d.org_id, i.stage, i.error, i.started_at, i.ended_at
         FROM incidents i JOIN domains d ON d.id = i.domain_id
         WHERE i.domain_id = $1 AND {filter} ORDER BY i.started_at DESC LIMIT 1"
    );
    let mut q = sqlx::query(&sql).bind(domain_id);
    if let Some(at) = ended_at {
        q = q.bind(at);
    }
    q.fetch_optional(db)
        .await?
        .map(|r| {
            Ok(IncidentInfo {
                id: r.try_get("id")?,
                domain_id: r.try_get("domain_id")?,
                domain: r.try_get("domain")?,
                org_id: OrgId(r.try_get("org_id")?),
                stage: r.try_get("stage")?,
                error: r.try_get("error")?,
                started_at: r.try_get("started_at")?,
                ended_at: r.try_get("ended_at")?,
            })
        })
        .transpose()
}

// ---- deliveries ------------------------------------------------------------------------

/// A delivery to put in the outbox.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    pub org_id: Option<&'a OrgId>,
    pub event_id: &'a str,
    pub event_type: &'a str,
    pub payload: &'a str,
    pub channel: &'a str,
    pub target: &'a str,
    /// The webhook signing secret, already sealed with [`delivery_secret_context`] of `id`.
    pub secret_sealed: Option<&'a str>,
    pub id: &'a str,
    pub give_up_at: i64,
}

/// Queues a delivery, due now. The same event to the same destination twice is one
/// delivery (the unique key absorbs it): returns whether a row was added.
#[tracing::instrument(skip_all)]
pub async fn insert_delivery<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(
    db: E,
    d: &NewDelivery<'_>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO deliveries (id, org_id, event_id, event_type, payload, channel, target, secret_sealed,
            status, attempts, next_attempt_at, give_up_at, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', 0, $9, $10, $9)
         ON CONFLICT (event_id, channel, target) DO NOTHING",
    )
    .bind(d.id)
    .bind(d.org_id.map(|o| o.0.as_str()))
    .bind(d.event_id)
    .bind(d.event_type)
    .bind(d.payload)
    .bind(d.channel)
    .bind(d.target)
    .bind(d.secret_sealed)
    .bind(now)
    .bind(d.give_up_at)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A delivery the worker holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: String,
    pub channel: String,
    pub target: String,
    pub secret_sealed: Option<String>,
    pub attempts: i64,
    pub give_up_at: i64,
    pub claim_token: String,
    /// The webhook endpoint it is for (outbound webhooks; see `endpoints`): signed with
    /// the endpoint's current secret and sent to its current URL.
    pub endpoint_id: Option<String>,
}

/// Claims up to `limit` due deliveries for `lease_secs`: their next attempt moves to the
/// lease's end under a fresh claim token, in one UPDATE whose WHERE is checked again on
/// each row, so two panel processes never both get one. A worker that dies loses its lease
/// and the delivery is due again when the lease runs out.
#[tracing::instrument(skip_all)]
pub async fn claim_due(
    db: &Pool,
    now: i64,
    lease_secs: i64,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let token = new_id();
    sqlx::query(
        "UPDATE deliveries SET next_attempt_at = $1, claim_token = $2
         WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $3
                      ORDER BY next_attempt_at LIMIT $4)
           AND status = 'pending' AND next_attempt_at <= $3
         RETURNING id, event_id, event_type, payload, channel, target, secret_sealed, attempts, give_up_at, claim_token, endpoint_id",
    )
    .bind(now + lease_secs)
    .bind(&token)
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(Claimed {
            id: r.try_get("id")?,
            event_id: r.try_get("event_id")?,
            event_type: r.try_get("event_type")?,
            payload: r.try_get("payload")?,
            channel: r.try_get("channel")?,
            target: r.try_get("target")?,
            secret_sealed: r.try_get("secret_sealed")?,
            attempts: r.try_get("attempts")?,
            give_up_at: r.try_get("give_up_at")?,
            claim_token: r.try_get("claim_token")?,
            endpoint_id: r.try_get("endpoint_id")?,
        })
    })
    .collect()
}

/// How one attempt went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub ok: bool,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// Records an attempt and the delivery's new state: delivered, due again at
/// `next_attempt_at`, or (None) given up. Only the claim's holder updates the delivery;
/// returns false when the claim was lost (the attempt is logged anyway).
#[tracing::instrument(skip_all)]
pub async fn finish_attempt(
    db: &Pool,
    d: &Claimed,
    outcome: &AttemptOutcome,
    next_attempt_at: Option<i64>,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    sqlx::query(
        "INSERT INTO delivery_attempts (id, delivery_id, at, ok, http_status, error, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(&d.id)
    .bind(now)
    .bind(i64::from(outcome.ok))
    .bind(outcome.http_status.map(i64::from))
    .bind(&outcome.error)
    .bind(outcome.duration_ms)
    .execute(&mut *tx)
    .await?;
    let (status, next) = match (outcome.ok, next_attempt_at) {
        (true, _) => ("delivered", now),
        (false, Some(at)) => ("pending", at),
        (false, None) => ("failed", now),
    };
    let updated = sqlx::query(
        "UPDATE deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, claim_token = NULL,
            last_attempt_at = $3, last_http_status = $4, last_error = $5,
            delivered_at = COALESCE($6, delivered_at)
         WHERE id = $7 AND claim_token = $8",
    )
    .bind(status)
    .bind(next)
    .bind(now)
    .bind(outcome.http_status.map(i64::from))
    .bind(&outcome.error)
    .bind(outcome.ok.then_some(now))
    .bind(&d.id)
    .bind(&d.claim_token)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(updated == 1)
}

/// Puts a delivery back in the queue, due now, with a fresh retry window. Not while a
/// worker holds it. `org` limits it to one organisation's deliveries (None: an admin).
#[tracing::instrument(skip_all)]
pub async fn redeliver(
    db: &Pool,
    id: &str,
    org: Option<&OrgId>,
    now: i64,
    give_up_at: i64,
) -> Result<bool, sqlx::Error> {
    let sql = if org.is_some() {
        "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, give_up_at = $2
         WHERE id = $3 AND claim_token IS NULL AND org_id = $4"
    } else {
        "UPDATE deliveries SET status = 'pending', next_attempt_at = $1, give_up_at = $2
         WHERE id = $3 AND claim_token IS NULL"
    };
    let mut q = sqlx::query(sql).bind(now).bind(give_up_at).bind(id);
    if let Some(o) = org {
        q = q.bind(&o.0);
    }
    Ok(q.execute(db).await?.rows_affected() == 1)
}

/// Whether a delivery exists (for the organisation, when given).
#[tracing::instrument(skip_all)]
pub async fn delivery_exists(
    db: &Pool,
    id: &str,
    org: Option<&OrgId>,
) -> Result<bool, sqlx::Error> {
    let row = match org {
        Some(o) => {
            sqlx::query("SELECT id FROM deliveries WHERE id = $1 AND org_id = $2")
                .bind(id)
                .bind(&o.0)
                .fetch_optional(db)
                .await?
        }
        None => {
            sqlx::query("SELECT id FROM deliveries WHERE id = $1")
                .bind(id)
                .fetch_optional(db)
                .await?
        }
    };
    Ok(row.is_some())
}

/// Pending webhook deliveries of an organisation (their secret follows a rotation).
#[tracing::instrument(skip_all)]
pub async fn pending_webhooks(db: &Pool, org: &OrgId) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query(
        "SELECT id FROM deliveries WHERE org_id = $1 AND channel = 'webhook' AND status = 'pending'",
    )
    .bind(&org.0)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| r.try_get("id"))
    .collect()
}

#[tracing::instrument(skip_all)]
pub async fn set_delivery_secret(db: &Pool, id: &str, sealed: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE deliveries SET secret_sealed = $1 WHERE id = $2")
        .bind(sealed)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// A line of a delivery log.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub org_name: Option<String>,
    pub event_id: String,
    pub event_type: String,
    pub channel: String,
    pub target: String,
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub last_attempt_at: Option<i64>,
    pub next_attempt_at: i64,
    pub last_http_status: Option<i64>,
    pub last_error: Option<String>,
    pub delivered_at: Option<i64>,
}

/// One attempt of a delivery.
#[derive(Debug, Clone)]
pub struct AttemptRow {
    pub delivery_id: String,
    pub at: i64,
    pub ok: bool,
    pub http_status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

const DELIVERY_COLUMNS: &str = "d.id, o.name AS org_name, d.event_id, d.event_type, d.channel, d.target, d.status, d.attempts,
    d.created_at, d.last_attempt_at, d.next_attempt_at, d.last_http_status, d.last_error, d.delivered_at";

fn delivery_from_row(r: &sqlx::any::AnyRow) -> Result<DeliveryRow, sqlx::Error> {
    Ok(DeliveryRow {
        id: r.try_get("id")?,
        org_name: r.try_get("org_name")?,
        event_id: r.try_get("event_id")?,
        event_type: r.try_get("event_type")?,
        channel: r.try_get("channel")?,
        target: r.try_get("target")?,
        status: r.try_get("status")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        last_attempt_at: r.try_get("last_attempt_at")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
        last_http_status: r.try_get("last_http_status")?,
        last_error: r.try_get("last_error")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}

/// The organisation's latest deliveries, newest first.
#[tracing::instrument(skip_all)]
pub async fn deliveries_of(
    db: &Pool,
    org: &OrgId,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN organisations o ON o.id = d.org_id
         WHERE d.org_id = $1 ORDER BY d.created_at DESC, d.id DESC LIMIT $2"
    ))
    .bind(&org.0)
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(delivery_from_row)
    .collect()
}

/// The deliveries of one webhook endpoint of the organisation: by id after `after`
/// (API pages), or newest first.
#[tracing::instrument(skip_all)]
pub async fn deliveries_of_endpoint(
    db: &Pool,
    org: &OrgId,
    endpoint_id: &str,
    after: Option<&str>,
    limit: i64,
    newest_first: bool,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let order = if newest_first {
        "d.created_at DESC, d.id DESC"
    } else {
        "d.id"
    };
    sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN organisations o ON o.id = d.org_id
         WHERE d.org_id = $1 AND d.endpoint_id = $2 AND d.id > $3 ORDER BY {order} LIMIT $4"
    ))
    .bind(&org.0)
    .bind(endpoint_id)
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(delivery_from_row)
    .collect()
}

/// Everyone's latest deliveries (the admin's view), newest first; `status` filters.
#[tracing::instrument(skip_all)]
pub async fn all_deliveries(
    db: &Pool,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    let filter = if status.is_some() {
        "WHERE d.status = $2"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d LEFT JOIN organisations o ON o.id = d.org_id
         {filter} ORDER BY d.created_at DESC, d.id DESC LIMIT $1"
    );
    let mut q = sqlx::query(&sql).bind(limit);
    if let Some(s) = status {
        q = q.bind(s);
    }
    q.fetch_all(db)
        .await?
        .iter()
        .map(delivery_from_row)
        .collect()
}

/// The attempts of these deliveries, oldest first.
#[tracing::instrument(skip_all)]
pub async fn attempts_of(
    db: &Pool,
    delivery_ids: &[String],
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    if delivery_ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders: Vec<String> = (1..=delivery_ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT delivery_id, at, ok, http_status, error, duration_ms FROM delivery_attempts
         WHERE delivery_id IN ({}) ORDER BY at, id",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(&sql);
    for id in delivery_ids {
        q = q.bind(id);
    }
    q.fetch_all(db)
        .await?
        .iter()
        .map(|r| {
            Ok(AttemptRow {
                delivery_id: r.try_get("delivery_id")?,
                at: r.try_get("at")?,
                ok: r.try_get::<i64, _>("ok")? != 0,
                http_status: r.try_get("http_status")?,
                error: r.try_get("error")?,
                duration_ms: r.try_get("duration_ms")?,
            })
        })
        .collect()
}

/// Deletes finished deliveries (and their attempts) created before `before`.
#[tracing::instrument(skip_all)]
pub async fn prune(db: &Pool, before: i64) -> Result<u64, sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    sqlx::query(
        "DELETE FROM delivery_attempts WHERE delivery_id IN
            (SELECT id FROM deliveries WHERE created_at < $1 AND status <> 'pending')",
    )
    .bind(before)
    .execute(&mut *tx)
    .await?;
    let n = sqlx::query("DELETE FROM deliveries WHERE created_at < $1 AND status <> 'pending'")
        .bind(before)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n)
}

// ---- the XMPP sender ---------------------------------------------------------------------

/// A domain hosted on the platform, settled on its node, with where clients reach it.
#[derive(Debug, Clone)]
pub struct HostedDomain {
    pub domain: String,
    pub node_id: String,
    pub host: String,
    pub port: u16,
}

#[tracing::instrument(skip_all)]
pub async fn hosted_domain(db: &Pool, domain: &str) -> Result<Option<HostedDomain>, sqlx::Error> {
    sqlx::query(
        "SELECT d.domain, n.id AS node_id, n.public_host, n.c2s_port
         FROM domains d JOIN nodes n ON n.id = d.applied_node_id
         WHERE d.domain = $1 AND d.state = 'active' AND d.move_from_node_id IS NULL",
    )
    .bind(domain)
    .fetch_optional(db)
    .await?
    .map(|r| {
        Ok(HostedDomain {
            domain: r.try_get("domain")?,
            node_id: r.try_get("node_id")?,
            host: r.try_get("public_host")?,
            port: u16::try_from(r.try_get::<i64, _>("c2s_port")?).unwrap_or(5222),
        })
    })
    .transpose()
}

/// The sender account on `domain`: (node id, user name, sealed password).
#[tracing::instrument(skip_all)]
pub async fn sender(
    db: &Pool,
    domain: &str,
) -> Result<Option<(String, String, String)>, sqlx::Error> {
    sqlx::query("SELECT node_id, username, password_sealed FROM alert_senders WHERE domain = $1")
        .bind(domain)
        .fetch_optional(db)
        .await?
        .map(|r| {
            Ok((
                r.try_get("node_id")?,
                r.try_get("username")?,
                r.try_get("password_sealed")?,
            ))
        })
        .transpose()
}

#[tracing::instrument(skip_all)]
pub async fn set_sender(
    db: &Pool,
    domain: &str,
    node_id: &str,
    username: &str,
    password_sealed: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO alert_senders (domain, node_id, username, password_sealed, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (domain) DO UPDATE SET node_id = excluded.node_id, username = excluded.username,
            password_sealed = excluded.password_sealed, created_at = excluded.created_at",
    )
    .bind(domain)
    .bind(node_id)
    .bind(username)
    .bind(password_sealed)
    .bind(now)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets the sender account (its log-in failed): the next XMPP delivery makes it again.
#[tracing::instrument(skip_all)]
pub async fn forget_sender(db: &Pool, domain: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM alert_senders WHERE domain = $1")
        .bind(domain)
        .execute(db)
        .await?;
    Ok(())
}
