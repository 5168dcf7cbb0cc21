//! Alerts: when an incident on a customer's domain opens or closes, the organisation hears
//! about it by email, by a signed webhook and by an XMPP message, each where it chose on its
//! Alerts page; platform admins hear when a node goes down or comes back.
//!
//! ```text
//!  prober: incident opened/closed ─► incident_in (in its transaction) ──┐
//!  poller: node down/up           ─► node_down / node_up ───────────────┤ one Event,
//!  Alerts page: "Send a test alert" ─► send_test ───────────────────────┘ one row per channel
//!                                                                       ▼
//!                                   deliveries (outbox table) ─► worker ─► email | webhook | xmpp
//!                                                                 └─ every attempt in delivery_attempts
//! ```
//!
//! The outbox and the worker are generic (an event type, a JSON payload, a channel and a
//! target), so other outgoing webhooks use them: the organisations' webhook endpoints
//! ([`endpoints`], pages in `webhooks_pages`, API in `api::webhooks`). Incident alerts and
//! `domain.*` events are queued in the transaction that makes the change they are about, so
//! a panel that stops in between loses neither; node alerts and test alerts are queued
//! right after, and a failure there is logged without failing the caller.

pub mod db;
pub mod endpoints;
pub mod event;
mod pages;
pub mod rules;
pub mod signature;
pub mod webhook;
mod webhook_pages;
pub mod worker;
mod xmpp;

use anyhow::Context;

use self::event::{Event, IncidentData, NodeData, TestData};
use sqlx::AnyConnection;

use crate::{clock::new_id, config::AlertSettings, orgs::db::OrgId, state::AppState};

/// The Alerts pages and the Webhooks pages.
pub fn router() -> axum::Router<AppState> {
    pages::router().merge(webhook_pages::router())
}
pub use xmpp::SENDER_USERNAME;

/// Where one copy of an event goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `email`, `webhook` or `xmpp`.
    pub channel: &'static str,
    pub target: String,
    /// The signing secret, for webhooks.
    pub secret: Option<String>,
}

/// Checks the `alerts` settings at start-up.
pub fn validate_settings(s: &AlertSettings) -> anyhow::Result<()> {
    anyhow::ensure!(
        s.webhook_timeout_secs > 0 && s.xmpp_timeout_secs > 0 && s.poll_interval_ms > 0,
        "webhook_timeout_secs, xmpp_timeout_secs and poll_interval_ms must be positive"
    );
    anyhow::ensure!(
        s.give_up_after_secs > 0,
        "give_up_after_secs must be positive"
    );
    rules::webhook_url(&s.admin_webhook_url, s.webhook_allow_local)
        .map_err(|e| anyhow::anyhow!("admin_webhook_url: {e}"))?;
    if !s.admin_webhook_url.trim().is_empty() {
        anyhow::ensure!(
            !s.admin_webhook_secret.trim().is_empty(),
            "admin_webhook_secret is needed with admin_webhook_url"
        );
    }
    rules::jid(&s.admin_xmpp_jid).map_err(|e| anyhow::anyhow!("admin_xmpp_jid: {e}"))?;
    if !s.xmpp_sender_domain.trim().is_empty() {
        rookery_node::proto::jid::normalize_domainpart(s.xmpp_sender_domain.trim())
            .map_err(|e| anyhow::anyhow!("xmpp_sender_domain: {e}"))?;
    }
    Ok(())
}

/// An incident on `domain_id` has just opened (`ended_at` None: it is the domain's open
/// incident) or closed at `ended_at`, on `conn`, the transaction that records it: queues
/// `domain.down` / `domain.up` for the organisation's webhook endpoints and, when alerts
/// are on, the incident alert to its contacts, so they commit with the incident or not at
/// all. Wake the worker ([`worker::wake`]) after the commit.
pub async fn incident_in(
    conn: &mut AnyConnection,
    state: &AppState,
    domain_id: &str,
    ended_at: Option<i64>,
) -> anyhow::Result<()> {
    let Some(i) = db::incident(&mut *conn, domain_id, ended_at).await? else {
        anyhow::bail!("the incident is not in the database");
    };
    let now = state.clock.now();
    let data = IncidentData {
        status_url: format!(
            "{}/o/{}/domains/{}",
            state.settings.base_url(),
            i.org_id.0,
            i.domain_id
        ),
        duration_secs: i.ended_at.map(|e| (e - i.started_at).max(0)),
        domain: i.domain,
        domain_id: i.domain_id,
        incident_id: i.id,
        stage: i.stage,
        error: i.error,
        started_at: i.started_at,
        ended_at: i.ended_at,
    };
    // Outbound webhooks hear of it as domain.down / domain.up, alerts on or off.
    endpoints::incident_in(conn, &i.org_id, &data, now).await?;
    if !state.settings.alerts.enabled {
        return Ok(());
    }
    let kind = if ended_at.is_some() {
        event::INCIDENT_CLOSED
    } else {
        event::INCIDENT_OPENED
    };
    let event = Event::new(kind, now, &data);
    let to = org_destinations_in(conn, state, &i.org_id).await?;
    let queued = enqueue_in(conn, state, Some(&i.org_id), &event, &to).await?;
    tracing::info!(
        domain = data.domain,
        event = kind,
        queued,
        "incident alert queued"
    );
    Ok(())
}

/// The poller marked a node down: alerts to the platform's admins.
pub async fn node_down(state: &AppState, node_id: &str, node_name: &str, error: &str) {
    node_alert(state, event::NODE_DOWN, node_id, node_name, Some(error)).await;
}

/// A node marked down answers again.
pub async fn node_up(state: &AppState, node_id: &str, node_name: &str) {
    node_alert(state, event::NODE_UP, node_id, node_name, None).await;
}

async fn node_alert(
    state: &AppState,
    kind: &str,
    node_id: &str,
    node_name: &str,
    error: Option<&str>,
) {
    if !state.settings.alerts.enabled {
        return;
    }
    let now = state.clock.now();
    let data = NodeData {
        node: node_name.into(),
        node_id: node_id.into(),
        error: error.map(str::to_string),
        at: now,
        status_url: format!("{}/admin/nodes/{node_id}", state.settings.base_url()),
    };
    let queued = async {
        let to = admin_destinations(state).await?;
        enqueue(state, None, &Event::new(kind, now, &data), &to).await
    }
    .await;
    if let Err(e) = queued {
        tracing::error!(
            node = node_name,
            error = format!("{e:#}"),
            "queueing the node alert failed"
        );
    }
}

/// A test alert to every channel the organisation set up; returns how many were queued.
pub async fn send_test(state: &AppState, org: &OrgId, org_name: &str) -> anyhow::Result<usize> {
    let data = TestData {
        organisation: org_name.into(),
        message: format!(
            "This is a test alert from Rookery for {org_name}: alerts reach you here. {}/o/{}/alerts",
            state.settings.base_url(),
            org.0
        ),
    };
    let event = Event::new(event::ALERT_TEST, state.clock.now(), &data);
    let mut conn = state.db.acquire().await?;
    let to = org_destinations_in(&mut conn, state, org).await?;
    drop(conn);
    enqueue(state, Some(org), &event, &to).await
}

/// Where the organisation's alerts go: its saved contacts, or its owner's email. A webhook
/// whose secret cannot be opened (the panel's key changed) is left out, with an error in
/// the log, so the other channels still hear of the incident; an error is the database's.
pub async fn org_destinations_in(
    conn: &mut AnyConnection,
    state: &AppState,
    org: &OrgId,
) -> anyhow::Result<Vec<Destination>> {
    let Some(c) = db::contacts(&mut *conn, org).await? else {
        return Ok(db::owner_email(&mut *conn, org)
            .await?
            .into_iter()
            .map(|email| Destination {
                channel: "email",
                target: email,
                secret: None,
            })
            .collect());
    };
    let mut to = Vec::new();
    if !c.email.is_empty() {
        to.push(Destination {
            channel: "email",
            target: c.email,
            secret: None,
        });
    }
    if !c.webhook_url.is_empty() {
        let secret = c
            .webhook_secret_sealed
            .context("a webhook URL without a signing secret")
            .and_then(|sealed| {
                state
                    .sealer
                    .open(&db::secret_context(org), &sealed)
                    .context("opening the webhook secret")
            });
        match secret {
            Ok(secret) => to.push(Destination {
                channel: "webhook",
                target: c.webhook_url,
                secret: Some(secret),
            }),
            Err(e) => tracing::error!(
                org = org.0,
                error = format!("{e:#}"),
                "the alert webhook is left out"
            ),
        }
    }
    if !c.xmpp_jid.is_empty() {
        to.push(Destination {
            channel: "xmpp",
            target: c.xmpp_jid,
            secret: None,
        });
    }
    Ok(to)
}

/// Every admin's email, and the admin webhook and chat address from the settings.
async fn admin_destinations(state: &AppState) -> anyhow::Result<Vec<Destination>> {
    let s = &state.settings.alerts;
    let mut to: Vec<Destination> = db::admin_emails(&state.db)
        .await?
        .into_iter()
        .map(|email| Destination {
            channel: "email",
            target: email,
            secret: None,
        })
        .collect();
    if !s.admin_webhook_url.trim().is_empty() {
        to.push(Destination {
            channel: "webhook",
            target: s.admin_webhook_url.trim().into(),
            secret: Some(s.admin_webhook_secret.trim().into()),
        });
    }
    if let Ok(Some(jid)) = rules::jid(&s.admin_xmpp_jid) {
        to.push(Destination {
            channel: "xmpp",
            target: jid,
            secret: None,
        });
    }
    Ok(to)
}

/// Puts one delivery per destination in the outbox and wakes the worker; returns how many
/// were new.
pub async fn enqueue(
    state: &AppState,
    org: Option<&OrgId>,
    event: &Event,
    to: &[Destination],
) -> anyhow::Result<usize> {
    let mut conn = state.db.acquire().await?;
    let queued = enqueue_in(&mut conn, state, org, event, to).await?;
    if queued > 0 {
        worker::wake();
    }
    Ok(queued)
}

/// [`enqueue`] on `conn` (a transaction's, so the deliveries commit with the change they
/// are about), without waking the worker.
pub async fn enqueue_in(
    conn: &mut AnyConnection,
    state: &AppState,
    org: Option<&OrgId>,
    event: &Event,
    to: &[Destination],
) -> anyhow::Result<usize> {
    let now = state.clock.now();
    let payload = event.to_json();
    let mut queued = 0;
    for d in to {
        let id = new_id();
        let sealed = d
            .secret
            .as_deref()
            .map(|s| state.sealer.seal(&db::delivery_secret_context(&id), s));
        let added = db::insert_delivery(
            &mut *conn,
            &db::NewDelivery {
                id: &id,
                org_id: org,
                event_id: &event.id,
                event_type: &event.event_type,
                payload: &payload,
                channel: d.channel,
                target: &d.target,
                secret_sealed: sealed.as_deref(),
                give_up_at: now + state.settings.alerts.give_up_after_secs,
            },
            now,
        )
        .await
        .context("queueing a delivery")?;
        queued += usize::from(added);
    }
    Ok(queued)
}
