//! The Alerts pages: an organisation's contacts, signing secret, test button and delivery
//! log under `/o/{org_id}/alerts` (owners edit, members look), and every delivery for
//! platform admins under `/admin/deliveries`.

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_frontend::{
    Flash, FlashKind, FormErrors,
    pages::alerts::{self as pages, AlertsView, AttemptView, DeliveryView},
};
use serde::Deserialize;

use super::{db, rules, signature};
use crate::{
    auth::session::Admin,
    clock::format_ts,
    error::{AppError, AppResult},
    orgs::{OrgAccess, db::Role},
    pages::{NoticeQuery, ctx},
    state::AppState,
};

/// Deliveries shown on a log page.
const LOG_LENGTH: i64 = 50;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/o/{org_id}/alerts", get(show_alerts).post(save_contacts))
        .route("/o/{org_id}/alerts/test", post(send_test))
        .route("/o/{org_id}/alerts/secret", post(rotate_secret))
        .route(
            "/o/{org_id}/alerts/deliveries/{delivery_id}/redeliver",
            post(redeliver),
        )
        .route("/admin/deliveries", get(show_all))
        .route(
            "/admin/deliveries/{delivery_id}/redeliver",
            post(admin_redeliver),
        )
}

/// The sentence for one of this module's notice codes.
fn notice(code: Option<&str>) -> Option<Flash> {
    let (kind, text) = match code? {
        "alerts-saved" => (FlashKind::Success, "Alert contacts saved."),
        "alerts-test-sent" => (
            FlashKind::Success,
            "Test alert queued on every channel; the log below shows how each delivery went (reload to follow it).",
        ),
        "alerts-none" => (
            FlashKind::Error,
            "No channel is set up: add an email address, a webhook or a chat address first.",
        ),
        "alerts-secret-rotated" => (
            FlashKind::Success,
            "New signing secret made. Update your receiver: webhooks are signed with it from now on.",
        ),
        "alerts-redelivered" => (FlashKind::Success, "Delivery queued again."),
        "alerts-busy" => (
            FlashKind::Info,
            "That delivery is being sent right now; look again in a moment.",
        ),
        _ => return None,
    };
    Some(Flash {
        kind,
        text: text.into(),
    })
}

fn require_owner(access: &OrgAccess) -> AppResult<()> {
    match access.role {
        Role::Owner => Ok(()),
        Role::Member => Err(AppError::Forbidden(
            "Only owners of this organisation can change its alerts.",
        )),
    }
}

fn base(access: &OrgAccess) -> String {
    format!("/o/{}/alerts", access.org.id.0)
}

/// The log lines with their attempts.
async fn delivery_views(
    state: &AppState,
    rows: Vec<db::DeliveryRow>,
) -> AppResult<Vec<DeliveryView>> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let attempts = db::attempts_of(&state.db, &ids).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let log = attempts
                .iter()
                .filter(|a| a.delivery_id == r.id)
                .map(|a| AttemptView {
                    at: format_ts(a.at),
                    ok: a.ok,
                    detail: match (&a.http_status, &a.error) {
                        (Some(s), None) => format!("HTTP {s} in {} ms", a.duration_ms),
                        (_, Some(e)) => format!("{e} ({} ms)", a.duration_ms),
                        (None, None) => format!("{} ms", a.duration_ms),
                    },
                })
                .collect();
            DeliveryView {
                next_attempt: (r.status == "pending" && r.attempts > 0)
                    .then(|| format_ts(r.next_attempt_at)),
                id: r.id,
                org: r.org_name,
                created: format_ts(r.created_at),
                event_type: r.event_type,
                channel: r.channel,
                target: r.target,
                status: r.status,
                attempts: r.attempts,
                last_error: r.last_error,
                log,
            }
        })
        .collect())
}

/// The page as saved (or with the defaults when nothing is).
async fn saved_view(state: &AppState, access: &OrgAccess) -> AppResult<AlertsView> {
    let org = &access.org.id;
    let saved = db::contacts(&state.db, org).await?;
    let can_edit = access.role == Role::Owner;
    let mut view = AlertsView {
        org_id: org.0.clone(),
        can_edit,
        defaults: saved.is_none(),
        webhook_allow_local: state.settings.alerts.webhook_allow_local,
        sender_jid: sender_jid(state),
        deliveries: delivery_views(state, db::deliveries_of(&state.db, org, LOG_LENGTH).await?)
            .await?,
        ..Default::default()
    };
    match saved {
        Some(c) => {
            view.email = c.email;
            view.webhook_url = c.webhook_url;
            view.xmpp_jid = c.xmpp_jid;
            if can_edit && let Some(sealed) = c.webhook_secret_sealed {
                view.webhook_secret = Some(
                    state
                        .sealer
                        .open(&db::secret_context(org), &sealed)
                        .map_err(AppError::Internal)?,
                );
            }
        }
        None => view.email = db::owner_email(&state.db, org).await?.unwrap_or_default(),
    }
    Ok(view)
}

fn sender_jid(state: &AppState) -> Option<String> {
    let domain = state.settings.alerts.xmpp_sender_domain.trim();
    (!domain.is_empty()).then(|| format!("{}@{domain}", super::SENDER_USERNAME))
}

async fn render(
    state: &AppState,
    access: &OrgAccess,
    view: AlertsView,
    notice_code: Option<&str>,
) -> AppResult<String> {
    let mut page_ctx = ctx(
        state,
        &access.signed_in.visitor,
        "Alerts",
        "alerts",
        Some(&access.org),
        None,
    )
    .await?;
    page_ctx.flash = notice(notice_code);
    Ok(pages::alerts(page_ctx, view))
}

async fn show_alerts(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let view = saved_view(&state, &access).await?;
    Ok(Html(
        render(&state, &access, view, q.notice.as_deref()).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContactsForm {
    email: String,
    webhook_url: String,
    xmpp_jid: String,
}

async fn save_contacts(
    State(state): State<AppState>,
    access: OrgAccess,
    Form(form): Form<ContactsForm>,
) -> AppResult<Response> {
    require_owner(&access)?;
    let mut errors = FormErrors::default();
    let email = rules::email(&form.email).unwrap_or_else(|e| {
        errors.add("email", e);
        None
    });
    let url = rules::webhook_url(&form.webhook_url, state.settings.alerts.webhook_allow_local)
        .unwrap_or_else(|e| {
            errors.add("webhook_url", e);
            None
        });
    let jid = rules::jid(&form.xmpp_jid).unwrap_or_else(|e| {
        errors.add("xmpp_jid", e);
        None
    });
    if !errors.is_empty() {
        // Everything typed comes back, with the reasons next to the fields.
        let mut view = saved_view(&state, &access).await?;
        view.email = form.email.trim().to_string();
        view.webhook_url = form.webhook_url.trim().to_string();
        view.xmpp_jid = form.xmpp_jid.trim().to_string();
        view.defaults = false;
        errors.add(
            "",
            "Nothing was saved: please correct the fields marked below.",
        );
        view.errors = errors;
        let html = render(&state, &access, view, None).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, Html(html)).into_response());
    }
    let org = &access.org.id;
    let contacts = db::Contacts {
        email: email.unwrap_or_default(),
        webhook_url: url.map(|u| u.to_string()).unwrap_or_default(),
        webhook_secret_sealed: None,
        xmpp_jid: jid.unwrap_or_default(),
    };
    // A first webhook gets a signing secret; an existing one is kept.
    let new_secret = (!contacts.webhook_url.is_empty()).then(|| {
        state
            .sealer
            .seal(&db::secret_context(org), &signature::new_secret())
    });
    db::save_contacts(
        &state.db,
        org,
        &contacts,
        new_secret.as_deref(),
        state.clock.now(),
    )
    .await?;
    tracing::info!(
        org = org.0,
        user = access.signed_in.user.id,
        "alert contacts saved"
    );
    Ok(Redirect::to(&format!("{}?notice=alerts-saved", base(&access))).into_response())
}

async fn send_test(State(state): State<AppState>, access: OrgAccess) -> AppResult<Redirect> {
    require_owner(&access)?;
    let queued = super::send_test(&state, &access.org.id, &access.org.name)
        .await
        .map_err(AppError::Internal)?;
    let code = if queued == 0 {
        "alerts-none"
    } else {
        "alerts-test-sent"
    };
    Ok(Redirect::to(&format!("{}?notice={code}", base(&access))))
}

async fn rotate_secret(State(state): State<AppState>, access: OrgAccess) -> AppResult<Redirect> {
    require_owner(&access)?;
    let org = &access.org.id;
    let secret = signature::new_secret();
    let default_email = db::owner_email(&state.db, org).await?.unwrap_or_default();
    db::set_secret(
        &state.db,
        org,
        &state.sealer.seal(&db::secret_context(org), &secret),
        &default_email,
        state.clock.now(),
    )
    .await?;
    // Retries still waiting are signed with the new secret, which the receiver now has.
    for id in db::pending_webhooks(&state.db, org).await? {
        let sealed = state
            .sealer
            .seal(&db::delivery_secret_context(&id), &secret);
        db::set_delivery_secret(&state.db, &id, &sealed).await?;
    }
    tracing::info!(
        org = org.0,
        user = access.signed_in.user.id,
        "webhook secret rotated"
    );
    Ok(Redirect::to(&format!(
        "{}?notice=alerts-secret-rotated#webhook-signing",
        base(&access)
    )))
}

/// Due again now, with a fresh retry window; `false` when a worker holds it.
async fn requeue(
    state: &AppState,
    id: &str,
    org: Option<&crate::orgs::db::OrgId>,
) -> AppResult<&'static str> {
    let now = state.clock.now();
    let give_up = now + state.settings.alerts.give_up_after_secs;
    if db::redeliver(&state.db, id, org, now, give_up).await? {
        super::worker::wake();
        return Ok("alerts-redelivered");
    }
    if db::delivery_exists(&state.db, id, org).await? {
        Ok("alerts-busy")
    } else {
        Err(AppError::NotFound)
    }
}

async fn redeliver(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, delivery_id)): Path<(String, String)>,
) -> AppResult<Redirect> {
    require_owner(&access)?;
    let code = requeue(&state, &delivery_id, Some(&access.org.id)).await?;
    Ok(Redirect::to(&format!("{}?notice={code}", base(&access))))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AdminQuery {
    status: Option<String>,
    notice: Option<String>,
}

async fn show_all(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(q): Query<AdminQuery>,
) -> AppResult<Html<String>> {
    let status = q
        .status
        .filter(|s| matches!(s.as_str(), "pending" | "delivered" | "failed"));
    let rows = db::all_deliveries(&state.db, status.as_deref(), 200).await?;
    let rows = delivery_views(&state, rows).await?;
    let mut page_ctx = ctx(
        &state,
        &admin.visitor,
        "Deliveries",
        "admin-deliveries",
        None,
        None,
    )
    .await?;
    page_ctx.flash = notice(q.notice.as_deref());
    Ok(Html(pages::admin_deliveries(page_ctx, rows, status)))
}

async fn admin_redeliver(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(delivery_id): Path<String>,
) -> AppResult<Redirect> {
    let code = requeue(&state, &delivery_id, None).await?;
    tracing::info!(admin = admin.user.id, delivery_id, "delivery queued again");
    Ok(Redirect::to(&format!("/admin/deliveries?notice={code}")))
}
