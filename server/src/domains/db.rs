//! SQL of customer domains: their state and their desired and applied placement.

use std::collections::BTreeMap;

use sqlx::Row;

use super::state::DomainState;
use crate::{alerts::endpoints as webhooks, clock::new_id, db::Pool};

/// `pending_payment → provisioning → active ⇄ suspended → deleting → deleted`.
pub const STATES: &[&str] = &[
    "pending_payment",
    "provisioning",
    "active",
    "suspended",
    "deleting",
    "deleted",
];

#[derive(Debug, Clone)]
pub struct DomainRow {
    pub id: String,
    pub org_id: String,
    pub domain: String,
    pub state: String,
    pub plan_id: Option<String>,
    pub node_id: Option<String>,
    pub generation: i64,
    pub applied_node_id: Option<String>,
    pub applied_generation: i64,
    pub move_from_node_id: Option<String>,
    pub move_step: Option<String>,
    pub waiting_reason: Option<String>,
    pub attempts: i64,
    pub created_at: i64,
    pub active_at: Option<i64>,
    /// The plan's limits (None without a plan: unlimited).
    pub max_accounts: Option<i64>,
    pub max_sessions: Option<i64>,
    pub storage_mb: Option<i64>,
    pub upload_mb: Option<i64>,
    pub archive_days: Option<i64>,
    pub grace_until: Option<i64>,
    pub delete_after: Option<i64>,
    pub stripe_subscription_id: Option<String>,
    pub suspended_by_admin: bool,
    /// Where the domain is served, for the pages.
    pub node_name: Option<String>,
    pub node_host: Option<String>,
    pub node_c2s_port: Option<i64>,
    /// The plan's offline message retention in days (None: the node's default).
    pub offline_days: Option<i64>,
    /// XEP-0157 contact addresses by kind (see `domains::settings`).
    pub contacts: BTreeMap<String, Vec<String>>,
    /// The customer's certificate chain (PEM) and its key, sealed (see
    /// `domains::settings`); None: the node serves a certificate of its own.
    pub tls_cert_pem: Option<String>,
    pub tls_key_sealed: Option<String>,
    /// Node labels the domain's plan requires (on top of the pool-wide ones).
    pub plan_node_labels: BTreeMap<String, String>,
    /// XEP-0077: people may create accounts from their XMPP app (see `domains::settings`).
    pub registration: bool,
    /// Whom the domain exchanges stanzas with (see `domains::federation`).
    pub federation: super::federation::Federation,
    /// The plan's upload limits (XEP-0363; None: the node's default): the largest file and
    /// what one account's files may add up to, in MiB, and days a file is kept.
    pub upload_max_file_mb: Option<i64>,
    pub upload_account_mb: Option<i64>,
    pub upload_retention_days: Option<i64>,
    /// The plan's group chat limits (XEP-0045; None: the node's default).
    pub max_rooms: Option<i64>,
    pub max_room_occupants: Option<i64>,
}

#[cfg(test)]
impl DomainRow {
    /// An active domain on no plan, with every setting at its default, for unit tests.
    pub fn example(domain: &str) -> Self {
        DomainRow {
            id: "d1".into(),
            org_id: "o1".into(),
            domain: domain.into(),
            state: "active".into(),
            plan_id: None,
            node_id: None,
            generation: 1,
            applied_node_id: None,
            applied_generation: 0,
            move_from_node_id: None,
            move_step: None,
            waiting_reason: None,
            attempts: 0,
            created_at: 0,
            active_at: None,
            max_accounts: None,
            max_sessions: None,
            storage_mb: None,
            upload_mb: None,
            archive_days: None,
            grace_until: None,
            delete_after: None,
            stripe_subscription_id: None,
            suspended_by_admin: false,
            node_name: None,
            node_host: None,
            node_c2s_port: None,
            offline_days: None,
            contacts: Default::default(),
            tls_cert_pem: None,
            tls_key_sealed: None,
            plan_node_labels: Default::default(),
            registration: false,
            federation: Default::default(),
            upload_max_file_mb: None,
            upload_account_mb: None,
            upload_retention_days: None,
            max_rooms: None,
            max_room_occupants: None,
        }
    }
}

impl DomainRow {
    /// Settled: on its node at the desired generation, nothing moving.
    pub fn converged(&self) -> bool {
        self.node_id.is_some()
            && self.applied_node_id == self.node_id
            && self.applied_generation == self.generation
            && self.move_from_node_id.is_none()
    }
}

const COLUMNS: &str = "d.id, d.org_id, d.domain, d.state, d.plan_id, d.node_id, d.generation, d.applied_node_id, d.applied_generation, d.move_from_node_id, d.move_step, d.waiting_reason, d.attempts, d.created_at, d.active_at, p.max_accounts, p.max_sessions, p.storage_mb, p.upload_mb, p.archive_days, d.grace_until, d.delete_after, d.stripe_subscription_id, d.suspended_by_admin, n.name AS node_name, n.public_host AS node_host, n.c2s_port AS node_c2s_port, p.offline_days, d.contacts, d.tls_cert_pem, d.tls_key_sealed, COALESCE(p.node_labels, '{}') AS plan_node_labels, d.registration, d.federation_mode, d.federation_allow, p.upload_max_file_mb, p.upload_account_mb, p.upload_retention_days, p.max_rooms, p.max_room_occupants";
const FROM: &str =
    "FROM domains d LEFT JOIN plans p ON p.id = d.plan_id LEFT JOIN nodes n ON n.id = d.node_id";

fn from_row(r: &sqlx::any::AnyRow) -> Result<DomainRow, sqlx::Error> {
    Ok(DomainRow {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        domain: r.try_get("domain")?,
        state: r.try_get("state")?,
        plan_id: r.try_get("plan_id")?,
        node_id: r.try_get("node_id")?,
        generation: r.try_get("generation")?,
        applied_node_id: r.try_get("applied_node_id")?,
        applied_generation: r.try_get("applied_generation")?,
        move_from_node_id: r.try_get("move_from_node_id")?,
        move_step: r.try_get("move_step")?,
        waiting_reason: r.try_get("waiting_reason")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
        active_at: r.try_get("active_at")?,
        max_accounts: r.try_get("max_accounts")?,
        max_sessions: r.try_get("max_sessions")?,
        storage_mb: r.try_get("storage_mb")?,
        upload_mb: r.try_get("upload_mb")?,
        archive_days: r.try_get("archive_days")?,
        grace_until: r.try_get("grace_until")?,
        delete_after: r.try_get("delete_after")?,
        stripe_subscription_id: r.try_get("stripe_subscription_id")?,
        suspended_by_admin: r.try_get::<i64, _>("suspended_by_admin")? != 0,
        node_name: r.try_get("node_name")?,
        node_host: r.try_get("node_host")?,
        node_c2s_port: r.try_get("node_c2s_port")?,
        offline_days: r.try_get("offline_days")?,
        contacts: serde_json::from_str(&r.try_get::<String, _>("contacts")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        tls_cert_pem: r.try_get("tls_cert_pem")?,
        tls_key_sealed: r.try_get("tls_key_sealed")?,
        plan_node_labels: serde_json::from_str(&r.try_get::<String, _>("plan_node_labels")?)
            .unwrap_or_default(),
        registration: r.try_get::<i64, _>("registration")? != 0,
        federation: super::federation::Federation::from_stored(
            &r.try_get::<String, _>("federation_mode")?,
            &r.try_get::<String, _>("federation_allow")?,
        ),
        upload_max_file_mb: r.try_get("upload_max_file_mb")?,
        upload_account_mb: r.try_get("upload_account_mb")?,
        upload_retention_days: r.try_get("upload_retention_days")?,
        max_rooms: r.try_get("max_rooms")?,
        max_room_occupants: r.try_get("max_room_occupants")?,
    })
}

/// The domain matching `filter` (SQL over `d`, with `$1` bound to `value`), if any.
async fn one(db: &Pool, filter: &str, value: &str) -> Result<Option<DomainRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} {FROM} WHERE {filter}"))
        .bind(value)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// The domains matching `filter` (SQL over `d`, ordering included, `$1` bound to `value`).
async fn many(db: &Pool, filter: &str, value: &str) -> Result<Vec<DomainRow>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} {FROM} WHERE {filter}"))
        .bind(value)
        .fetch_all(db)
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Why a domain could not be added.
#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    /// A domain of that name is not deleted (it waits for payment, is set up, runs, is
    /// suspended or is being deleted). Deleted domains keep their row but not their name.
    Taken,
}

/// Adds a domain for an organisation: `provisioning` (placed by the reconciler) or
/// `pending_payment` (waiting for its first payment).
pub async fn create(
    db: &Pool,
    org_id: &str,
    domain: &str,
    plan_id: Option<&str>,
    initial: DomainState,
    now: i64,
) -> Result<Result<DomainRow, CreateError>, sqlx::Error> {
    debug_assert!(matches!(
        initial,
        DomainState::Provisioning | DomainState::PendingPayment
    ));
    let id = new_id();
    let mut tx = rookery_common::db::begin_write(db).await?;
    let inserted = sqlx::query(
        "INSERT INTO domains (id, org_id, domain, state, plan_id, generation, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 1, $6, $6)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(domain)
    .bind(initial.as_str())
    .bind(plan_id)
    .bind(now)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if crate::db::is_unique_violation(&e) => return Ok(Err(CreateError::Taken)),
        Err(e) => return Err(e),
    }
    webhooks::domain_event_in(&mut tx, &id, webhooks::DOMAIN_CREATED, now).await?;
    tx.commit().await?;
    crate::alerts::worker::wake();
    Ok(Ok(get(db, &id).await?.expect("just inserted")))
}

pub async fn get(db: &Pool, id: &str) -> Result<Option<DomainRow>, sqlx::Error> {
    one(db, "d.id = $1", id).await
}

/// The domain called `domain`: the live one (not deleted) if there is one, else the one
/// deleted last. A name is free to order again once its domain is deleted, so several
/// deleted rows and one live row can share it; callers that act on a domain check its
/// state (the reconciler removes a stray vhost only when its domain was deleted).
pub async fn by_name(db: &Pool, domain: &str) -> Result<Option<DomainRow>, sqlx::Error> {
    match one(db, "d.domain = $1 AND d.state <> 'deleted'", domain).await? {
        Some(live) => Ok(Some(live)),
        None => {
            let filter = "d.domain = $1 AND d.state = 'deleted' ORDER BY d.updated_at DESC, d.id DESC LIMIT 1";
            one(db, filter, domain).await
        }
    }
}

/// Whether another domain had this domain's name before it (and was deleted).
pub async fn had_predecessor(db: &Pool, d: &DomainRow) -> Result<bool, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM domains WHERE domain = $1 AND id <> $2 AND state = 'deleted' AND created_at <= $3",
    )
    .bind(&d.domain)
    .bind(&d.id)
    .bind(d.created_at)
    .fetch_one(db)
    .await?;
    Ok(n > 0)
}

/// An organisation's domains (deleted ones left out), by name.
pub async fn for_org(db: &Pool, org_id: &str) -> Result<Vec<DomainRow>, sqlx::Error> {
    many(
        db,
        "d.org_id = $1 AND d.state <> 'deleted' ORDER BY d.domain",
        org_id,
    )
    .await
}

/// How many domains an organisation has (deleted ones aside).
pub async fn count_for_org(db: &Pool, org_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM domains WHERE org_id = $1 AND state <> 'deleted'")
        .bind(org_id)
        .fetch_one(db)
        .await
}

/// Domains placed on (or moving away from) a node.
pub async fn on_node(db: &Pool, node_id: &str) -> Result<Vec<DomainRow>, sqlx::Error> {
    let filter = "d.state <> 'deleted' AND (d.node_id = $1 OR d.applied_node_id = $1 OR d.move_from_node_id = $1) ORDER BY d.domain";
    many(db, filter, node_id).await
}

/// Domains the reconciler has something to do for, oldest first.
pub async fn needing_work(db: &Pool, now: i64, limit: i64) -> Result<Vec<DomainRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} {FROM} WHERE d.state IN ('provisioning', 'active', 'suspended', 'deleting')
           AND d.next_attempt_at <= $1
           AND (d.state = 'deleting' OR d.node_id IS NULL OR d.applied_node_id IS NULL OR d.applied_node_id <> d.node_id
                OR d.applied_generation <> d.generation OR d.move_from_node_id IS NOT NULL)
         ORDER BY d.created_at, d.id LIMIT $2"
    ))
    .bind(now)
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// Counts per state over all domains, for the admin overview and convergence checks.
pub async fn count_unsettled(db: &Pool) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM domains WHERE state IN ('provisioning', 'active', 'suspended', 'deleting')
           AND (state IN ('provisioning', 'deleting') OR node_id IS NULL OR applied_node_id IS NULL OR applied_node_id <> node_id
                OR applied_generation <> generation OR move_from_node_id IS NOT NULL)",
    )
    .fetch_one(db)
    .await?
    .try_get("n")
}

/// Places a domain on a node (a new generation for it).
pub async fn assign(db: &Pool, id: &str, node_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE domains SET node_id = $1, generation = generation + 1, waiting_reason = NULL, attempts = 0, next_attempt_at = 0, updated_at = $2 WHERE id = $3",
    )
    .bind(node_id)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Starts moving a domain from the node that holds its data to `to`.
pub async fn start_move(
    db: &Pool,
    id: &str,
    from: &str,
    to: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE domains SET move_from_node_id = $1, move_step = 'freeze', node_id = $2, generation = generation + 1,
            waiting_reason = NULL, attempts = 0, next_attempt_at = 0, updated_at = $3 WHERE id = $4",
    )
    .bind(from)
    .bind(to)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_move_step(
    db: &Pool,
    id: &str,
    step: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let done = step.is_none();
    sqlx::query(&format!(
        "UPDATE domains SET move_step = $1, {} attempts = 0, next_attempt_at = 0, waiting_reason = NULL, updated_at = $2 WHERE id = $3",
        if done { "move_from_node_id = NULL," } else { "" }
    ))
    .bind(step)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// The node confirmed `generation`: record it, and a new domain becomes active.
pub async fn applied(
    db: &Pool,
    id: &str,
    node_id: &str,
    generation: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    let activated = sqlx::query(
        "UPDATE domains SET state = 'active', active_at = $1 WHERE id = $2 AND generation = $3 AND state = 'provisioning'",
    )
    .bind(now)
    .bind(id)
    .bind(generation)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "UPDATE domains SET applied_node_id = $1, applied_generation = $2, attempts = 0, next_attempt_at = 0,
            waiting_reason = NULL, updated_at = $3
         WHERE id = $4 AND generation = $2",
    )
    .bind(node_id)
    .bind(generation)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if activated {
        webhooks::domain_event_in(&mut tx, id, webhooks::DOMAIN_ACTIVE, now).await?;
    }
    tx.commit().await?;
    if activated {
        crate::alerts::worker::wake();
    }
    Ok(())
}

/// Something failed: note why and try again later (exponential back-off).
pub async fn failed(
    db: &Pool,
    id: &str,
    reason: &str,
    now: i64,
    max_retry_secs: i64,
) -> Result<(), sqlx::Error> {
    let row = sqlx::query("SELECT attempts FROM domains WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    let attempts: i64 = row.map(|r| r.try_get("attempts")).transpose()?.unwrap_or(0);
    let delay = (1i64 << attempts.min(16)).min(max_retry_secs);
    sqlx::query(
        "UPDATE domains SET attempts = attempts + 1, next_attempt_at = $1, waiting_reason = $2, updated_at = $3 WHERE id = $4",
    )
    .bind(now + delay)
    .bind(reason)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Placement found no node: say why, and look again shortly.
pub async fn waiting(db: &Pool, id: &str, reason: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE domains SET waiting_reason = $1, next_attempt_at = $2, updated_at = $2 WHERE id = $3",
    )
    .bind(reason)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Forgets what a node confirmed, so the spec is pushed again (drift repair).
pub async fn forget_applied(db: &Pool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE domains SET applied_generation = 0, next_attempt_at = 0 WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn mark_deleted(db: &Pool, id: &str, now: i64) -> Result<(), sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    let done = sqlx::query(
        "UPDATE domains SET state = 'deleted', node_id = NULL, applied_node_id = NULL, move_from_node_id = NULL, move_step = NULL,
            waiting_reason = NULL, updated_at = $1 WHERE id = $2 AND state <> 'deleted'",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 1 {
        webhooks::domain_event_in(&mut tx, id, webhooks::DOMAIN_DELETED, now).await?;
        crate::probe::db::rerank(&mut tx, id).await?;
    }
    tx.commit().await?;
    crate::alerts::worker::wake();
    Ok(())
}

/// Changes the state (suspend, resume, delete); a new generation carries it to the node.
pub async fn set_state(db: &Pool, id: &str, state: &str, now: i64) -> Result<(), sqlx::Error> {
    debug_assert!(STATES.contains(&state));
    let mut tx = rookery_common::db::begin_write(db).await?;
    sqlx::query(
        "UPDATE domains SET state = $1, generation = generation + 1, attempts = 0, next_attempt_at = 0, updated_at = $2 WHERE id = $3",
    )
    .bind(state)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    crate::probe::db::rerank(&mut tx, id).await?;
    tx.commit().await
}

/// Domains waiting for a node (placement found none yet).
pub async fn count_waiting(db: &Pool) -> Result<i64, sqlx::Error> {
    sqlx::query(
        "SELECT COUNT(*) AS n FROM domains WHERE state IN ('provisioning', 'active', 'suspended') AND node_id IS NULL",
    )
    .fetch_one(db)
    .await?
    .try_get("n")
}

/// Moves a domain through its state machine (see [`super::state`]). A change of state
/// bumps the generation, so the node learns of it (a suspension, a resumption); an event
/// that changes nothing writes nothing. The update only applies if nobody changed the
/// state meanwhile; `Ok(Err(..))` is an illegal transition, `Ok(Ok(None))` an unknown id.
pub async fn transition(
    db: &Pool,
    id: &str,
    event: super::state::Event,
    now: i64,
) -> Result<Result<Option<DomainState>, super::state::Illegal>, sqlx::Error> {
    for _ in 0..5 {
        let Some(row) = sqlx::query("SELECT state FROM domains WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?
        else {
            return Ok(Ok(None));
        };
        let current: String = row.try_get("state")?;
        let Some(from) = DomainState::parse(&current) else {
            return Ok(Ok(None));
        };
        let to = match super::state::next(from, event) {
            Ok(to) => to,
            Err(e) => return Ok(Err(e)),
        };
        if to == from {
            return Ok(Ok(Some(to)));
        }
        let mut tx = rookery_common::db::begin_write(db).await?;
        let done = sqlx::query(
            "UPDATE domains SET state = $1, generation = generation + 1, attempts = 0, next_attempt_at = 0,
                active_at = CASE WHEN $1 = 'active' AND active_at IS NULL THEN $2 ELSE active_at END, updated_at = $2
             WHERE id = $3 AND state = $4",
        )
        .bind(to.as_str())
        .bind(now)
        .bind(id)
        .bind(from.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            // The webhook event commits with the change (see alerts::endpoints).
            if let Some(kind) = webhooks::domain_event_for_state(to.as_str()) {
                webhooks::domain_event_in(&mut tx, id, kind, now).await?;
            }
            crate::probe::db::rerank(&mut tx, id).await?;
            tx.commit().await?;
            crate::alerts::worker::wake();
            return Ok(Ok(Some(to)));
        }
    }
    Err(sqlx::Error::Protocol(
        "the domain's state kept changing; try again".into(),
    ))
}

/// Sets billing fields of a domain (None leaves a field as it is).
pub async fn set_billing(
    db: &Pool,
    id: &str,
    subscription: Option<&str>,
    checkout: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE domains SET stripe_subscription_id = COALESCE($1, stripe_subscription_id),
            stripe_checkout_id = COALESCE($2, stripe_checkout_id), updated_at = $3 WHERE id = $4",
    )
    .bind(subscription)
    .bind(checkout)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Sets (or, with None, clears) the domain's Stripe subscription.
pub async fn set_subscription(
    db: &Pool,
    id: &str,
    subscription: Option<&str>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE domains SET stripe_subscription_id = $1, updated_at = $2 WHERE id = $3")
        .bind(subscription)
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// The Checkout Session the domain's payment was last started with, if any.
pub async fn checkout_id(db: &Pool, id: &str) -> Result<Option<String>, sqlx::Error> {
    Ok(
        sqlx::query("SELECT stripe_checkout_id FROM domains WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?
            .map(|r| r.try_get("stripe_checkout_id"))
            .transpose()?
            .flatten(),
    )
}

/// Moves a domain to another plan; a new generation carries the plan's limits to its node.
/// `chosen_at` is when the plan was chosen: the Stripe event's time, or now for a change
/// made in the panel. A choice older than the current plan's (a late or replayed Stripe
/// event), the plan the domain already has, or a domain that is not waiting for payment,
/// being set up, active or suspended, changes nothing. Returns whether it changed.
#[tracing::instrument(skip_all, fields(domain_id = %id, plan_id = %plan_id))]
pub async fn set_plan(
    db: &Pool,
    id: &str,
    plan_id: &str,
    chosen_at: i64,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let changed = sqlx::query(
        "UPDATE domains SET plan_id = $1, plan_changed_at = $2, generation = generation + 1, attempts = 0,
            next_attempt_at = 0, updated_at = $3
         WHERE id = $4 AND state IN ('pending_payment', 'provisioning', 'active', 'suspended')
           AND (plan_id IS NULL OR plan_id <> $1) AND plan_changed_at <= $2",
    )
    .bind(plan_id)
    .bind(chosen_at)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?
    .rows_affected()
        == 1;
    Ok(changed)
}

/// The plan sold at a Stripe price (public plans first), if any.
pub async fn plan_for_price(db: &Pool, price_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM plans WHERE stripe_price_id = $1 ORDER BY is_public DESC, created_at, id LIMIT 1",
    )
    .bind(price_id)
    .fetch_optional(db)
    .await
}

/// Starts (or clears, with None) a failed payment's grace period.
pub async fn set_grace(db: &Pool, id: &str, until: Option<i64>) -> Result<(), sqlx::Error> {
    let sql = if until.is_some() {
        // A grace period already running is not extended by a second failure.
        "UPDATE domains SET grace_until = COALESCE(grace_until, $1) WHERE id = $2"
    } else {
        "UPDATE domains SET grace_until = $1 WHERE id = $2"
    };
    sqlx::query(sql).bind(until).bind(id).execute(db).await?;
    Ok(())
}

pub async fn set_delete_after(db: &Pool, id: &str, at: Option<i64>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE domains SET delete_after = $1 WHERE id = $2")
        .bind(at)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn by_subscription(
    db: &Pool,
    subscription: &str,
) -> Result<Option<DomainRow>, sqlx::Error> {
    one(db, "d.stripe_subscription_id = $1", subscription).await
}

/// Domains whose grace period or retention period is over.
pub async fn billing_due(db: &Pool, now: i64) -> Result<Vec<DomainRow>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} {FROM} WHERE (d.grace_until IS NOT NULL AND d.grace_until <= $1 AND d.state IN ('provisioning', 'active'))
            OR (d.delete_after IS NOT NULL AND d.delete_after <= $1 AND d.state = 'suspended')"
    ))
    .bind(now)
    .fetch_all(db)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// Whose domains a list covers (the REST API's `GET /domains`).
#[derive(Debug, Clone, Copy)]
pub enum OrgScope<'a> {
    /// One organisation.
    One(&'a str),
    /// A reseller and its customer organisations.
    WithCustomers(&'a str),
    /// Every organisation (admins).
    All,
}

/// A page of domains (deleted ones left out) ordered by id: those after `after`, at most
/// `limit`. Ids are UUIDv7, so new domains land after every existing one.
pub async fn page(
    db: &Pool,
    scope: OrgScope<'_>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<DomainRow>, sqlx::Error> {
    let (filter, org) = match scope {
        OrgScope::One(org) => ("d.org_id = $1", org),
        OrgScope::WithCustomers(org) => (
            "(d.org_id = $1 OR d.org_id IN (SELECT id FROM organisations WHERE parent_id = $1))",
            org,
        ),
        OrgScope::All => ("$1 = ''", ""),
    };
    sqlx::query(&format!(
        "SELECT {COLUMNS} {FROM} WHERE {filter} AND d.state <> 'deleted' AND d.id > $2 ORDER BY d.id LIMIT $3"
    ))
    .bind(org)
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db_with_plans() -> Pool {
        let db = crate::db::test_db_with_org().await;
        for (id, price) in [("small", "price_small"), ("big", "price_big")] {
            sqlx::query(
                "INSERT INTO plans (id, name, description, price_cents, currency, max_accounts, max_sessions, storage_mb, created_at, stripe_price_id)
                 VALUES ($1, $1, '', 100, 'eur', 5, 5, 5, 0, $2)",
            )
            .bind(id)
            .bind(price)
            .execute(&db)
            .await
            .unwrap();
        }
        db
    }

    #[tokio::test]
    async fn a_deleted_domains_name_can_be_ordered_again_and_a_live_ones_cannot() {
        let db = db_with_plans().await;
        let first = create(
            &db,
            "o",
            "chat.example",
            None,
            DomainState::PendingPayment,
            10,
        )
        .await
        .unwrap()
        .unwrap();
        let again = create(
            &db,
            "o",
            "chat.example",
            None,
            DomainState::Provisioning,
            11,
        )
        .await
        .unwrap();
        assert_eq!(again.unwrap_err(), CreateError::Taken);

        mark_deleted(&db, &first.id, 12).await.unwrap();
        assert_eq!(
            by_name(&db, "chat.example").await.unwrap().unwrap().id,
            first.id
        );
        let second = create(
            &db,
            "o",
            "chat.example",
            None,
            DomainState::Provisioning,
            13,
        )
        .await
        .unwrap()
        .expect("the name is free once its domain is deleted");
        assert_eq!(
            by_name(&db, "chat.example").await.unwrap().unwrap().id,
            second.id
        );

        // With every domain of the name deleted, the last one deleted is the answer.
        mark_deleted(&db, &second.id, 14).await.unwrap();
        let last = by_name(&db, "chat.example").await.unwrap().unwrap();
        assert_eq!(
            (last.id.as_str(), last.state.as_str()),
            (second.id.as_str(), "deleted")
        );
        assert!(by_name(&db, "other.example").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_plan_change_bumps_the_generation_unless_it_is_older_than_the_current_plan() {
        let db = db_with_plans().await;
        let d = create(
            &db,
            "o",
            "chat.example",
            Some("small"),
            DomainState::Provisioning,
            10,
        )
        .await
        .unwrap()
        .unwrap();
        assert!(set_plan(&db, &d.id, "big", 100, 101).await.unwrap());
        let moved = get(&db, &d.id).await.unwrap().unwrap();
        assert_eq!(moved.plan_id.as_deref(), Some("big"));
        assert_eq!(moved.generation, d.generation + 1);

        // The same plan again, or a choice made before the current one: nothing changes.
        assert!(!set_plan(&db, &d.id, "big", 200, 201).await.unwrap());
        assert!(!set_plan(&db, &d.id, "small", 99, 202).await.unwrap());
        let kept = get(&db, &d.id).await.unwrap().unwrap();
        assert_eq!(
            (kept.plan_id.as_deref(), kept.generation),
            (Some("big"), moved.generation)
        );

        assert!(set_plan(&db, &d.id, "small", 100, 203).await.unwrap());
        assert_eq!(
            plan_for_price(&db, "price_small").await.unwrap().as_deref(),
            Some("small")
        );
        assert_eq!(plan_for_price(&db, "price_gone").await.unwrap(), None);

        // A deleted domain's plan stays as it was.
        mark_deleted(&db, &d.id, 300).await.unwrap();
        assert!(!set_plan(&db, &d.id, "big", 400, 400).await.unwrap());
    }
}
