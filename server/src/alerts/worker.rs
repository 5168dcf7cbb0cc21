//! The delivery worker: every panel process runs one. Each poll (and each wake-up after an
//! enqueue) it claims the due deliveries (see [`db::claim_due`]: a lease, so processes
//! never share one), attempts them concurrently, and records each attempt: delivered, due
//! again after the backoff of [`rules::next_attempt`], or given up.
//!
//! ```text
//!  deliveries (pending, due) ─claim─► email   → Mailer (outbox, SMTP)
//!                                     webhook → signed POST (webhook.rs)
//!                                     xmpp    → chat message (xmpp.rs)
//!                           ◄─finish─ attempt logged; delivered | pending (+backoff) | failed
//! ```

use std::{
    sync::LazyLock,
    time::{Duration, Instant},
};

use tokio::{sync::Notify, task::JoinSet};

use super::{
    db::{self, AttemptOutcome, Claimed},
    event::{Event, describe},
    rules,
    webhook::WebhookSender,
    xmpp,
};
use crate::state::AppState;

/// Seconds a claim holds a delivery at least; always well over what one attempt may take.
const LEASE_SECS: i64 = 120;
/// Deliveries claimed per round.
const BATCH: i64 = 32;
/// Finished deliveries are kept this long for the logs.
const KEEP_SECS: i64 = 30 * 86_400;

/// Wakes this process's worker at once (something was queued).
static WAKE: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Tells the worker there is work.
pub fn wake() {
    WAKE.notify_one();
}

/// Runs forever: it sends the alerts (when they are on) and the organisations' outbound
/// webhooks (always).
pub async fn deliver_forever(state: AppState) {
    let sender = match WebhookSender::new(
        state.settings.alerts.webhook_allow_local,
        Duration::from_secs(state.settings.alerts.webhook_timeout_secs.max(1)),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "the webhook client cannot be built; alerts and webhooks are not delivered"
            );
            return;
        }
    };
    super::endpoints::configure(state.settings.alerts.give_up_after_secs);
    let every = Duration::from_millis(state.settings.alerts.poll_interval_ms.max(50));
    let mut last_prune = 0;
    loop {
        loop {
            match deliver_due(&state, &sender).await {
                // A full batch: there may be more due right now.
                Ok(n) if n as i64 >= BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = format!("{e:#}"), "delivering alerts failed");
                    break;
                }
            }
        }
        let now = state.clock.now();
        if now - last_prune >= 3600 {
            last_prune = now;
            if let Err(e) = db::prune(&state.db, now - KEEP_SECS).await {
                tracing::warn!(error = %e, "pruning old deliveries failed");
            }
        }
        tokio::select! {
            () = WAKE.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Claims the due deliveries and attempts them, concurrently; returns how many.
pub async fn deliver_due(state: &AppState, sender: &WebhookSender) -> anyhow::Result<usize> {
    let a = &state.settings.alerts;
    let longest = a.webhook_timeout_secs.max(a.xmpp_timeout_secs);
    let lease = LEASE_SECS.max(i64::try_from(longest.saturating_mul(4)).unwrap_or(i64::MAX));
    let claimed = db::claim_due(&state.db, state.clock.now(), lease, BATCH).await?;
    let n = claimed.len();
    let mut tasks = JoinSet::new();
    for d in claimed {
        let (state, sender) = (state.clone(), sender.clone());
        tasks.spawn(async move {
            let started = Instant::now();
            let posted = attempt(&state, &sender, &d).await;
            let outcome = AttemptOutcome {
                ok: posted.ok,
                http_status: posted.http_status,
                error: posted.error,
                duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
            };
            let now = state.clock.now();
            let attempts = d.attempts + 1;
            let next = if outcome.ok {
                None
            } else {
                rules::next_attempt_capped(
                    attempts,
                    now,
                    d.give_up_at,
                    state.settings.alerts.max_retry_delay_secs,
                )
            };
            let (id, channel, event) = (&d.id, &d.channel, &d.event_type);
            match (&outcome.error, next) {
                (None, _) => tracing::info!(id, channel, event, attempts, "delivered"),
                (Some(error), Some(at)) => tracing::warn!(
                    id,
                    channel,
                    event,
                    attempts,
                    error,
                    retry_in = at - now,
                    "delivery failed; will retry"
                ),
                (Some(error), None) => tracing::error!(
                    id,
                    channel,
                    event,
                    attempts,
                    error,
                    "delivery failed; giving up"
                ),
            }
            match db::finish_attempt(&state.db, &d, &outcome, next, now).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(id, "the claim ran out before the attempt ended"),
                Err(e) => tracing::error!(id, error = %e, "recording a delivery attempt failed"),
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(n)
}

/// One attempt of one delivery, on its channel.
async fn attempt(state: &AppState, sender: &WebhookSender, d: &Claimed) -> super::webhook::Posted {
    let failed = |error: String| super::webhook::Posted {
        ok: false,
        http_status: None,
        error: Some(error),
    };
    let done = super::webhook::Posted {
        ok: true,
        http_status: None,
        error: None,
    };
    match d.channel.as_str() {
        "webhook" if d.secret_sealed.is_none() && d.endpoint_id.is_some() => {
            let id = d.endpoint_id.as_deref().unwrap_or_default();
            let endpoint = match super::endpoints::by_id(&state.db, id).await {
                Ok(Some(e)) if e.enabled => e,
                Ok(Some(_)) => return failed("the endpoint is disabled".into()),
                Ok(None) => return failed("the endpoint was deleted".into()),
                Err(e) => return failed(format!("the endpoint cannot be read: {e}")),
            };
            let secret = match state.sealer.open(
                &super::endpoints::secret_context(id),
                &endpoint.secret_sealed,
            ) {
                Ok(s) => s,
                Err(e) => return failed(format!("the signing secret cannot be read: {e:#}")),
            };
            sender
                .post(
                    &endpoint.url,
                    &secret,
                    &d.event_id,
                    &d.payload,
                    state.clock.now(),
                )
                .await
        }
        "webhook" => {
            let Some(sealed) = &d.secret_sealed else {
                return failed("the delivery has no signing secret".into());
            };
            let secret = match state
                .sealer
                .open(&db::delivery_secret_context(&d.id), sealed)
            {
                Ok(s) => s,
                Err(e) => return failed(format!("the signing secret cannot be read: {e:#}")),
            };
            sender
                .post(
                    &d.target,
                    &secret,
                    &d.event_id,
                    &d.payload,
                    state.clock.now(),
                )
                .await
        }
        "email" | "xmpp" => {
            let event: Event = match serde_json::from_str(&d.payload) {
                Ok(e) => e,
                Err(e) => return failed(format!("the stored event is not readable: {e}")),
            };
            let text = describe(&event);
            let sent = if d.channel == "email" {
                state
                    .mailer
                    .send(&d.target, &text.subject, format!("{}\n", text.body))
                    .await
                    .map_err(|e| format!("{e:#}"))
            } else {
                xmpp::send(state, &d.target, &text.body).await
            };
            match sent {
                Ok(()) => done,
                Err(e) => failed(e),
            }
        }
        other => failed(format!("unknown channel {other}")),
    }
}
