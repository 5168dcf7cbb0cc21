//! Outbound webhooks: endpoints an organisation registers (on its Webhooks page or with
//! `/api/v1/webhooks`) for events about its domains, chat accounts and invoices.
//!
//! ```text
//!  domains::db (created, transition, applied, mark_deleted) ─┐ in the same transaction
//!  prober: incident opened/closed (domain.down / domain.up)  ─┤ as the change, or right
//!  account created (page, API), invoice.paid (billing)       ─┘ after it
//!                     ▼ enqueue_in: one row per subscribed, enabled endpoint
//!  deliveries (the alerts outbox, endpoint_id set) ─► worker ─► signed POST
//!                     (signed with the endpoint's current secret at each attempt)
//! ```
//!
//! Nothing is sent from memory: an event is a row before the caller goes on, so a panel
//! that restarts finds it pending and its worker sends it.

use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};

use super::event::{Event, IncidentData};
use crate::{clock::new_id, db::Pool, orgs::db::OrgId, state::AppState};

/// A domain was ordered.
pub const DOMAIN_CREATED: &str = "domain.created";
/// A domain went live (first provisioning, or resumed after a suspension).
pub const DOMAIN_ACTIVE: &str = "domain.active";
/// A domain was suspended (unpaid, cancelled, or by an admin).
pub const DOMAIN_SUSPENDED: &str = "domain.suspended";
/// A domain and its data are gone.
pub const DOMAIN_DELETED: &str = "domain.deleted";
/// An incident opened on a domain: logins fail.
pub const DOMAIN_DOWN: &str = "domain.down";
/// The incident closed: logins work again.
pub const DOMAIN_UP: &str = "domain.up";
/// A chat account was created on a domain.
pub const ACCOUNT_CREATED: &str = "account.created";
/// An invoice for a domain's subscription was paid.
pub const INVOICE_PAID: &str = "invoice.paid";

/// Every event type an endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 8] = [
    DOMAIN_CREATED,
    DOMAIN_ACTIVE,
    DOMAIN_SUSPENDED,
    DOMAIN_DELETED,
    DOMAIN_DOWN,
    DOMAIN_UP,
    ACCOUNT_CREATED,
    INVOICE_PAID,
];

/// The `events` column of an endpoint subscribed to everything.
pub const ALL_EVENTS: &str = "*";

/// Seconds an endpoint delivery is retried; the worker sets it from the settings (the
/// enqueueing code in `domains::db` has no settings at hand).
static GIVE_UP_SECS: AtomicI64 = AtomicI64::new(86_400);

/// Takes `alerts.give_up_after_secs` for endpoint deliveries.
pub fn configure(give_up_after_secs: i64) {
    GIVE_UP_SECS.store(give_up_after_secs.max(1), Ordering::Relaxed);
}

/// What `domain.created`, `domain.active`, `domain.suspended` and `domain.deleted` carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainData {
    pub domain: String,
    pub domain_id: String,
    pub org_id: String,
    /// The domain's state after the change.
    pub state: String,
    pub plan_id: Option<String>,
}

/// What `account.created` carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountData {
    /// `user@domain`.
    pub jid: String,
    pub username: String,
    pub domain: String,
    pub domain_id: String,
}

/// What `invoice.paid` carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceData {
    /// Stripe's invoice id (`in_…`).
    pub invoice_id: Option<String>,
    pub subscription_id: Option<String>,
    pub domain: String,
    pub domain_id: String,
}

/// Whether an endpoint with this `events` column wants events of type `kind`.
pub fn subscribed(events: &str, kind: &str) -> bool {
    events.trim() == ALL_EVENTS || events.split_whitespace().any(|e| e == kind)
}

/// The `events` column for a chosen list: `*` for none or every type (or `*` itself),
/// else the known types in canonical order. Unknown types are refused (returned).
pub fn events_column<S: AsRef<str>>(chosen: &[S]) -> Result<String, String> {
    let chosen: Vec<&str> = chosen.iter().map(|s| s.as_ref().trim()).collect();
    if let Some(bad) = chosen
        .iter()
        .find(|e| **e != ALL_EVENTS && !EVENT_TYPES.contains(e))
    {
        return Err((*bad).to_string());
    }
    if chosen.is_empty() || chosen.contains(&ALL_EVENTS) {
        return Ok(ALL_EVENTS.into());
    }
    let picked: Vec<&str> = EVENT_TYPES
        .iter()
        .copied()
        .filter(|t| chosen.contains(t))
        .collect();
    if picked.len() == EVENT_TYPES.len() {
        return Ok(ALL_EVENTS.into());
    }
    Ok(picked.join(" "))
}

/// The webhook event a domain's new state announces, if any.
pub fn domain_event_for_state(state: &str) -> Option<&'static str> {
    match state {
        "active" => Some(DOMAIN_ACTIVE),
        "suspended" => Some(DOMAIN_SUSPENDED),
        "deleted" => Some(DOMAIN_DELETED),
        _ => None,
    }
}

/// What an endpoint's signing secret is sealed against.
pub fn secret_context(endpoint_id: &str) -> String {
    format!("webhook-endpoint-secret:{endpoint_id}")
}

/// A registered endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub id: String,
    pub org_id: OrgId,
    pub url: String,
    pub description: String,
    /// `*`, or event types separated by spaces.
    pub events: String,
    pub secret_sealed: String,
    pub enabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Endpoint {
    /// The subscribed types, `["*"]` for all.
    pub fn event_list(&self) -> Vec<String> {
        self.events.split_whitespace().map(String::from).collect()
    }
}

const COLUMNS: &str =
    "id, org_id, url, description, events, secret_sealed, enabled, created_at, updated_at";

fn from_row(r: &sqlx::any::AnyRow) -> Result<Endpoint, sqlx::Error> {
    Ok(Endpoint {
        id: r.try_get("id")?,
        org_id: OrgId(r.try_get("org_id")?),
        url: r.try_get("url")?,
        description: r.try_get("description")?,
        events: r.try_get("events")?,
        secret_sealed: r.try_get("secret_sealed")?,
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

#[tracing::instrument(skip_all)]
pub async fn insert(db: &Pool, e: &Endpoint) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO webhook_endpoints ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&e.id)
    .bind(&e.org_id.0)
    .bind(&e.url)
    .bind(&e.description)
    .bind(&e.events)
    .bind(&e.secret_sealed)
    .bind(i64::from(e.enabled))
    .bind(e.created_at)
    .bind(e.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Whether another endpoint of the organisation (not `except`) has this URL. An
/// organisation registers a URL once: each event is queued once per URL (the outbox's
/// key), and one endpoint with the event types it wants says the same thing.
#[tracing::instrument(skip_all)]
pub async fn url_taken(
    db: &Pool,
    org: &OrgId,
    url: &str,
    except: Option<&str>,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT id FROM webhook_endpoints WHERE org_id = $1 AND url = $2 AND id <> $3")
            .bind(&org.0)
            .bind(url)
            .bind(except.unwrap_or(""))
            .fetch_optional(db)
            .await?
            .is_some(),
    )
}

/// The organisation's endpoints by id, after `after`, at most `limit`.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: &Pool,
    org: &OrgId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(&org.0)
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// The organisation's endpoint `id`.
#[tracing::instrument(skip_all)]
pub async fn get(db: &Pool, org: &OrgId, id: &str) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1 AND org_id = $2"
    ))
    .bind(id)
    .bind(&org.0)
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// An endpoint by id alone (the worker, which knows the delivery's endpoint).
#[tracing::instrument(skip_all)]
pub async fn by_id(db: &Pool, id: &str) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Saves URL, description, events, enabled flag and secret.
#[tracing::instrument(skip_all)]
pub async fn update(db: &Pool, e: &Endpoint) -> Result<bool, sqlx::Error> {
    save(db, e, None).await
}

/// [`update`], only while the endpoint's URL, description, events and enabled flag are
/// still those of `was` (an update checked against an ETag): false when they changed.
#[tracing::instrument(skip_all)]
pub async fn update_unchanged(
    db: &Pool,
    e: &Endpoint,
    was: &Endpoint,
) -> Result<bool, sqlx::Error> {
    save(db, e, Some(was)).await
}

async fn save(db: &Pool, e: &Endpoint, was: Option<&Endpoint>) -> Result<bool, sqlx::Error> {
    let guard = if was.is_some() {
        " AND url = $9 AND description = $10 AND events = $11 AND enabled = $12"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE webhook_endpoints SET url = $1, description = $2, events = $3, enabled = $4,
            secret_sealed = $5, updated_at = $6 WHERE id = $7 AND org_id = $8{guard}"
    );
    let mut q = sqlx::query(&sql)
        .bind(&e.url)
        .bind(&e.description)
        .bind(&e.events)
        .bind(i64::from(e.enabled))
        .bind(&e.secret_sealed)
        .bind(e.updated_at)
        .bind(&e.id)
        .bind(&e.org_id.0);
    if let Some(was) = was {
        q = q
            .bind(&was.url)
            .bind(&was.description)
            .bind(&was.events)
            .bind(i64::from(was.enabled));
    }
    Ok(q.execute(db).await?.rows_affected() == 1)
}

/// Deletes an endpoint with its deliveries and their attempts.
#[tracing::instrument(skip_all)]
pub async fn delete(db: &Pool, org: &OrgId, id: &str) -> Result<bool, sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    sqlx::query(
        "DELETE FROM delivery_attempts WHERE delivery_id IN
            (SELECT id FROM deliveries WHERE endpoint_id = $1 AND org_id = $2)",
    )
    .bind(id)
    .bind(&org.0)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM deliveries WHERE endpoint_id = $1 AND org_id = $2")
        .bind(id)
        .bind(&org.0)
        .execute(&mut *tx)
        .await?;
    let n = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1 AND org_id = $2")
        .bind(id)
        .bind(&org.0)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

/// Queues `event` for every enabled endpoint of `org` subscribed to its type, on `conn`
/// (a transaction's connection, so the event commits with the change it is about).
/// Returns how many deliveries were added. Wake the worker after the commit
/// ([`super::worker::wake`]); it also polls.
#[tracing::instrument(skip_all, fields(event = event.event_type))]
pub async fn enqueue_in(
    conn: &mut AnyConnection,
    org: &OrgId,
    event: &Event,
    now: i64,
) -> Result<usize, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, url, events FROM webhook_endpoints WHERE org_id = $1 AND enabled = 1 ORDER BY id",
    )
    .bind(&org.0)
    .fetch_all(&mut *conn)
    .await?;
    let payload = event.to_json();
    let give_up_at = now + GIVE_UP_SECS.load(Ordering::Relaxed);
    let mut queued = 0;
    for r in rows {
        let events: String = r.try_get("events")?;
        if !subscribed(&events, &event.event_type) {
            continue;
        }
        let endpoint_id: String = r.try_get("id")?;
        let url: String = r.try_get("url")?;
        let done = sqlx::query(
            "INSERT INTO deliveries (id, org_id, event_id, event_type, payload, channel, target, secret_sealed,
                status, attempts, next_attempt_at, give_up_at, created_at, endpoint_id)
             VALUES ($1, $2, $3, $4, $5, 'webhook', $6, NULL, 'pending', 0, $7, $8, $7, $9)
             ON CONFLICT (event_id, channel, target) DO NOTHING",
        )
        .bind(new_id())
        .bind(&org.0)
        .bind(&event.id)
        .bind(&event.event_type)
        .bind(&payload)
        .bind(&url)
        .bind(now)
        .bind(give_up_at)
        .bind(&endpoint_id)
        .execute(&mut *conn)
        .await?;
        queued += usize::try_from(done.rows_affected()).unwrap_or(0);
    }
    Ok(queued)
}

/// Queues the domain event `kind` (`domain.*`) about `domain_id` as it is now on `conn`.
pub async fn domain_event_in(
    conn: &mut AnyConnection,
    domain_id: &str,
    kind: &str,
    now: i64,
) -> Result<usize, sqlx::Error> {
    let Some(r) = sqlx::query("SELECT domain, org_id, state, plan_id FROM domains WHERE id = $1")
        .bind(domain_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(0);
    };
    let org = OrgId(r.try_get("org_id")?);
    let data = DomainData {
        domain: r.try_get("domain")?,
        domain_id: domain_id.into(),
        org_id: org.0.clone(),
        state: r.try_get("state")?,
        plan_id: r.try_get("plan_id")?,
    };
    enqueue_in(conn, &org, &Event::new(kind, now, &data), now).await
}

/// Queues an event right after the change it is about (where the change has no
/// transaction of its own) and wakes the worker. Never fails the caller: a problem is
/// logged.
pub async fn emit(state: &AppState, org: &OrgId, kind: &str, data: impl Serialize) {
    emit_event(state, org, Event::new(kind, state.clock.now(), data)).await;
}

/// [`emit`] of a made event.
async fn emit_event(state: &AppState, org: &OrgId, event: Event) {
    let (now, kind) = (state.clock.now(), event.event_type.as_str());
    let queued = async {
        let mut conn = state.db.acquire().await?;
        enqueue_in(&mut conn, org, &event, now).await
    }
    .await;
    match queued {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(
                org = org.0,
                event = kind,
                queued = n,
                "webhook event queued"
            );
            super::worker::wake();
        }
        Err(e) => tracing::error!(
            org = org.0,
            event = kind,
            error = %e,
            "queueing a webhook event failed"
        ),
    }
}

/// `domain.down` / `domain.up` for an incident that opened or closed, on `conn` (the
/// transaction that records the incident).
pub(super) async fn incident_in(
    conn: &mut AnyConnection,
    org: &OrgId,
    data: &IncidentData,
    now: i64,
) -> Result<usize, sqlx::Error> {
    let kind = if data.ended_at.is_some() {
        DOMAIN_UP
    } else {
        DOMAIN_DOWN
    };
    enqueue_in(conn, org, &Event::new(kind, now, data), now).await
}

/// `account.created`: a chat account `username@domain` was created (page or API).
pub async fn account_created(
    state: &AppState,
    org: &OrgId,
    domain_id: &str,
    domain: &str,
    username: &str,
) {
    let data = AccountData {
        jid: format!("{username}@{domain}"),
        username: username.into(),
        domain: domain.into(),
        domain_id: domain_id.into(),
    };
    emit(state, org, ACCOUNT_CREATED, &data).await;
}

/// `invoice.paid`: Stripe says an invoice of the domain's subscription was paid.
pub async fn invoice_paid(
    state: &AppState,
    d: &crate::domains::db::DomainRow,
    stripe: &crate::billing::webhook::Event,
) {
    let data = InvoiceData {
        invoice_id: stripe.object_str("id").map(String::from),
        subscription_id: stripe.subscription_id().map(String::from),
        domain: d.domain.clone(),
        domain_id: d.id.clone(),
    };
    // The id follows from Stripe's event id: Stripe sends an event again until its
    // processing is recorded, and the repeat then queues nothing.
    let event = Event::derived(INVOICE_PAID, &stripe.id, state.clock.now(), &data);
    emit_event(state, &OrgId(d.org_id.clone()), event).await;
}

/// Whether `delivery_id` is one of the endpoint's deliveries.
#[tracing::instrument(skip_all)]
pub async fn has_delivery(
    db: &Pool,
    org: &OrgId,
    endpoint_id: &str,
    delivery_id: &str,
) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("SELECT id FROM deliveries WHERE id = $1 AND org_id = $2 AND endpoint_id = $3")
            .bind(delivery_id)
            .bind(&org.0)
            .bind(endpoint_id)
            .fetch_optional(db)
            .await?
            .is_some(),
    )
}

/// Deliveries of one endpoint, by id, after `after` (API pages) or newest first (pages).
#[tracing::instrument(skip_all)]
pub async fn deliveries(
    db: &Pool,
    org: &OrgId,
    endpoint_id: &str,
    after: Option<&str>,
    limit: i64,
    newest_first: bool,
) -> Result<Vec<super::db::DeliveryRow>, sqlx::Error> {
    super::db::deliveries_of_endpoint(db, org, endpoint_id, after, limit, newest_first).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// A conditional update writes only over what was read; the organisation's rename
    /// likewise (both back `If-Match` on PATCH).
    #[tokio::test]
    async fn an_update_checked_against_what_was_read_refuses_a_change_made_meanwhile() {
        let db = crate::db::test_db_with_org().await;
        let org = OrgId("o".into());
        let read = Endpoint {
            id: new_id(),
            org_id: org.clone(),
            url: "https://hooks.example.com/a".into(),
            description: String::new(),
            events: "*".into(),
            secret_sealed: "sealed".into(),
            enabled: true,
            created_at: 1,
            updated_at: 1,
        };
        insert(&db, &read).await.unwrap();
        // Somebody else disables it after our read.
        let mut theirs = read.clone();
        theirs.enabled = false;
        theirs.updated_at = 2;
        assert!(update_unchanged(&db, &theirs, &read).await.unwrap());
        let mut ours = read.clone();
        ours.description = "ours".into();
        ours.updated_at = 3;
        assert!(!update_unchanged(&db, &ours, &read).await.unwrap());
        let now = get(&db, &org, &read.id).await.unwrap().unwrap();
        assert!(!now.enabled && now.description.is_empty(), "theirs stands");
        // Read again, the update goes through.
        assert!(update_unchanged(&db, &ours, &now).await.unwrap());

        use crate::orgs::db::{org_by_id, rename_unchanged};
        assert!(
            rename_unchanged(&db, &org, "Org", None, "Org 2")
                .await
                .unwrap()
        );
        assert!(
            !rename_unchanged(&db, &org, "Org", None, "Org 3")
                .await
                .unwrap()
        );
        assert!(
            !rename_unchanged(&db, &org, "Org 2", Some("r"), "Org 3")
                .await
                .unwrap()
        );
        assert_eq!(org_by_id(&db, &org).await.unwrap().unwrap().name, "Org 2");
    }

    #[test]
    fn an_endpoint_gets_the_types_it_subscribed_to_or_every_type_with_a_star() {
        assert!(subscribed("*", DOMAIN_CREATED));
        assert!(subscribed(" * ", INVOICE_PAID));
        let some = "domain.created invoice.paid";
        assert!(subscribed(some, DOMAIN_CREATED));
        assert!(subscribed(some, INVOICE_PAID));
        assert!(!subscribed(some, DOMAIN_DOWN));
        assert!(!subscribed(some, "domain"), "no prefix matches");
        assert!(!subscribed("", DOMAIN_CREATED));
    }

    #[test]
    fn chosen_event_lists_are_canonical_and_unknown_types_refused() {
        assert_eq!(events_column::<&str>(&[]).unwrap(), "*");
        assert_eq!(events_column(&["*"]).unwrap(), "*");
        assert_eq!(
            events_column(&["invoice.paid", "domain.created", "invoice.paid"]).unwrap(),
            "domain.created invoice.paid"
        );
        assert_eq!(events_column(&EVENT_TYPES).unwrap(), "*");
        assert_eq!(
            events_column(&["domain.created", "domain.exploded"]).unwrap_err(),
            "domain.exploded"
        );
        assert_eq!(
            events_column(&["incident.opened"]).unwrap_err(),
            "incident.opened"
        );
    }

    #[test]
    fn domain_states_map_to_their_events() {
        assert_eq!(domain_event_for_state("active"), Some(DOMAIN_ACTIVE));
        assert_eq!(domain_event_for_state("suspended"), Some(DOMAIN_SUSPENDED));
        assert_eq!(domain_event_for_state("deleted"), Some(DOMAIN_DELETED));
        assert_eq!(domain_event_for_state("provisioning"), None);
        assert_eq!(domain_event_for_state("deleting"), None);
    }

    #[test]
    fn payloads_are_the_envelope_with_a_data_object_per_type() {
        let e = Event::new(
            DOMAIN_CREATED,
            1_764_147_600,
            DomainData {
                domain: "chat.example.com".into(),
                domain_id: "d1".into(),
                org_id: "o1".into(),
                state: "provisioning".into(),
                plan_id: None,
            },
        );
        let json: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(json["type"], "domain.created");
        assert_eq!(json["id"], e.id.as_str());
        assert_eq!(json["id"].as_str().unwrap().len(), 36);
        assert_eq!(json["created_at"], 1_764_147_600);
        assert_eq!(json["data"]["domain"], "chat.example.com");
        assert_eq!(json["data"]["state"], "provisioning");
        assert_eq!(json["data"]["plan_id"], Value::Null);

        let e = Event::new(
            ACCOUNT_CREATED,
            0,
            AccountData {
                jid: "alice@chat.example.com".into(),
                username: "alice".into(),
                domain: "chat.example.com".into(),
                domain_id: "d1".into(),
            },
        );
        let json: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(json["data"]["jid"], "alice@chat.example.com");
        let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(keys, ["created_at", "data", "id", "type"]);

        let e = Event::new(
            INVOICE_PAID,
            0,
            InvoiceData {
                invoice_id: Some("in_1".into()),
                subscription_id: Some("sub_1".into()),
                domain: "chat.example.com".into(),
                domain_id: "d1".into(),
            },
        );
        let json: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(json["data"]["invoice_id"], "in_1");
        assert_eq!(json["data"]["subscription_id"], "sub_1");
    }
}
