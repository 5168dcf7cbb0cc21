//! Alerts: an organisation's alert contacts (email, signed webhook, XMPP), its webhook
//! signing secret, a test button and the delivery log; and the admin's log of every
//! delivery on the platform.

use leptos::prelude::*;

use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{ActionButton, Csrf, Empty, Field, FormAlert},
};

/// One attempt of a delivery, for its details.
#[derive(Clone, Debug, Default)]
pub struct AttemptView {
    pub at: String,
    pub ok: bool,
    /// "HTTP 200 in 35 ms", "connection refused (10 ms)".
    pub detail: String,
}

/// A line of a delivery log.
#[derive(Clone, Debug, Default)]
pub struct DeliveryView {
    pub id: String,
    /// The organisation (admin view); None for deliveries to the platform's admins.
    pub org: Option<String>,
    pub created: String,
    pub event_type: String,
    pub channel: String,
    pub target: String,
    /// pending, delivered or failed.
    pub status: String,
    pub attempts: i64,
    /// The last error, with the HTTP status when there was one.
    pub last_error: Option<String>,
    /// When the next retry is due (pending ones that failed before).
    pub next_attempt: Option<String>,
    pub log: Vec<AttemptView>,
}

/// The Alerts page of an organisation.
#[derive(Clone, Debug, Default)]
pub struct AlertsView {
    pub org_id: String,
    /// Owners edit; members see.
    pub can_edit: bool,
    /// The form's values: as saved, or as typed when they had errors.
    pub email: String,
    pub webhook_url: String,
    pub xmpp_jid: String,
    /// Nothing saved yet: the email shown is the owner's, the default.
    pub defaults: bool,
    /// The signing secret (owners only), once a webhook was set up.
    pub webhook_secret: Option<String>,
    /// `rookery-alerts@…`, the address XMPP alerts come from; None: XMPP alerts are not
    /// set up on this platform.
    pub sender_jid: Option<String>,
    /// Webhooks may use http:// and local addresses (tests, private deployments).
    pub webhook_allow_local: bool,
    pub errors: FormErrors,
    pub deliveries: Vec<DeliveryView>,
}

pub fn alerts(ctx: PageCtx, v: AlertsView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let base = format!("/o/{}/alerts", v.org_id);
        let e = v.errors.clone();
        let url_hint = if v.webhook_allow_local {
            "We POST a signed JSON event here. Empty: no webhook."
        } else {
            "An https:// URL; we POST a signed JSON event to it. Empty: no webhook."
        };
        let jid_hint = match &v.sender_jid {
            Some(_) => "A chat address like ops@chat.example.com. Empty: no chat alerts.",
            None => {
                "This platform does not send chat alerts yet; the address is kept for when it does."
            }
        };
        let contacts = if v.can_edit {
            view! {
                <FormAlert errors=e.clone()/>
                <form method="post" action=base.clone() class="grid-form" id="alert-contacts">
                    <Csrf token=csrf.clone()/>
                    <Field name="email" label="Email" kind="email" value=v.email.clone() errors=e.clone()
                        hint="Empty: no email alerts." autocomplete="email"/>
                    <Field name="webhook_url" label="Webhook URL" kind="url" value=v.webhook_url.clone() errors=e.clone() hint=url_hint/>
                    <Field name="xmpp_jid" label="Chat address (XMPP)" value=v.xmpp_jid.clone() errors=e.clone() hint=jid_hint/>
                    <button type="submit" class="button" id="alerts-save">"Save"</button>
                </form>
            }
            .into_any()
        } else {
            let show = |s: &str| {
                if s.is_empty() {
                    "off".to_string()
                } else {
                    s.to_string()
                }
            };
            view! {
                <dl class="facts">
                    <dt>"Email"</dt><dd>{show(&v.email)}</dd>
                    <dt>"Webhook"</dt><dd>{show(&v.webhook_url)}</dd>
                    <dt>"Chat address"</dt><dd>{show(&v.xmpp_jid)}</dd>
                </dl>
                <p class="hint">"Owners of the organisation can change these."</p>
            }
            .into_any()
        };
        let defaults = v.defaults.then(|| {
            view! { <p class="hint">"Nothing saved yet: alerts go by email to the organisation's owner."</p> }
        });
        let sender = v.sender_jid.clone().map(|jid| {
            view! {
                <p class="hint">"Chat alerts come from " <strong>{jid}</strong>
                    "; add it to your contacts if your server only accepts messages from them."</p>
            }
        });
        let secret = v.webhook_secret.clone().filter(|_| v.can_edit).map(|s| {
            view! {
                <section class="card" id="webhook-signing">
                    <h2>"Webhook signing secret"</h2>
                    <p><input class="code copy" type="text" readonly value=s id="webhook-secret" aria-label="Webhook signing secret"/></p>
                    <p>"Every webhook carries " <code>"Rookery-Signature: t=<unix time>,v1=<signature>"</code>
                        ", where the signature is the hex HMAC-SHA256 of " <code>"<t>.<request body>"</code>
                        " keyed with this secret, and " <code>"Rookery-Event-Id"</code>
                        ", the same on every retry. Check both, and refuse a t more than five minutes old."</p>
                    <ActionButton action=format!("{base}/secret") csrf=csrf.clone() label="Rotate secret"
                        class="button button-quiet" id="rotate-secret"/>
                    <p class="hint">"Rotating makes a new secret at once; pending retries are signed with the new one."</p>
                </section>
            }
        });
        let test = v.can_edit.then(|| {
            view! {
                <section class="card">
                    <h2>"Test"</h2>
                    <p>"Sends a test alert on every channel above, to check that it reaches you."</p>
                    <ActionButton action=format!("{base}/test") csrf=csrf.clone() label="Send a test alert" id="send-test-alert"/>
                </section>
            }
        });
        let log = deliveries_table(
            v.deliveries.clone(),
            csrf.clone(),
            v.can_edit.then(|| base.clone()),
            false,
        );
        view! {
            <Shell ctx=ctx>
                <h1>"Alerts"</h1>
                <p class="muted">"When a domain of this organisation stops answering logins (an incident opens) or works again, we tell you on each channel set up here. Failed deliveries are retried for a day."</p>
                <section class="card">
                    <h2>"Where alerts go"</h2>
                    {defaults}
                    {contacts}
                    {sender}
                </section>
                {secret}
                {test}
                <h2>"Delivery log"</h2>
                {log}
            </Shell>
        }
    })
}

/// Every delivery on the platform, for admins; `filter` is the status shown (or all).
pub fn admin_deliveries(ctx: PageCtx, rows: Vec<DeliveryView>, filter: Option<String>) -> String {
    let shown = |s: Option<&str>| filter.as_deref() == s;
    let (all, pending, failed, delivered) = (
        shown(None),
        shown(Some("pending")),
        shown(Some("failed")),
        shown(Some("delivered")),
    );
    render(move || {
        let csrf = ctx.csrf.clone();
        let link = |href: &'static str, label: &'static str, on: bool| {
            let current = on.then_some("page");
            view! { <a href=href aria-current=current class="button button-quiet button-small">{label}</a> }
        };
        view! {
            <Shell ctx=ctx>
                <h1>"Deliveries"</h1>
                <p class="muted">"Alerts and webhooks the panel sends, newest first: customers' incident alerts and the admins' node alerts (every admin's email, plus the admin webhook and chat address in the settings)."</p>
                <p class="row-actions">
                    {link("/admin/deliveries", "All", all)}
                    {link("/admin/deliveries?status=pending", "Pending", pending)}
                    {link("/admin/deliveries?status=failed", "Failed", failed)}
                    {link("/admin/deliveries?status=delivered", "Delivered", delivered)}
                </p>
                {deliveries_table(rows, csrf, Some("/admin/deliveries".into()), true)}
            </Shell>
        }
    })
}

/// The log table; `redeliver_base` (when the viewer may redeliver) prefixes
/// `/deliveries/<id>/redeliver` (org pages) or `/<id>/redeliver` (admin page).
fn deliveries_table(
    rows: Vec<DeliveryView>,
    csrf: String,
    redeliver_base: Option<String>,
    admin: bool,
) -> impl IntoView {
    if rows.is_empty() {
        return view! {
            <Empty title="Nothing sent yet">
                <p>"Alerts appear here as they are sent, with every attempt."</p>
            </Empty>
        }
        .into_any();
    }
    view! {
        <table class="table" id="deliveries">
            <thead><tr>
                <th scope="col">"Time"</th>
                {admin.then(|| view! { <th scope="col">"For"</th> })}
                <th scope="col">"Event"</th><th scope="col">"Channel"</th><th scope="col">"To"</th>
                <th scope="col">"Status"</th><th scope="col">"Attempts"</th><th scope="col">"Last error"</th>
                <th scope="col"><span class="sr-only">"Actions"</span></th>
            </tr></thead>
            <tbody>
                {rows.into_iter().map(|d| {
                    let badge = match d.status.as_str() {
                        "delivered" => "badge badge-ok",
                        "failed" => "badge badge-err",
                        _ => "badge badge-warn",
                    };
                    let action = redeliver_base.as_ref().filter(|_| d.status != "pending" || d.attempts > 0).map(|b| {
                        let href = if admin { format!("{b}/{}/redeliver", d.id) } else { format!("{b}/deliveries/{}/redeliver", d.id) };
                        view! { <ActionButton action=href csrf=csrf.clone() label="Redeliver" class="button button-quiet button-small"/> }
                    });
                    let error = match (&d.last_error, &d.next_attempt) {
                        (Some(e), Some(n)) => format!("{e} (next try {n})"),
                        (Some(e), None) => e.clone(),
                        (None, _) => String::new(),
                    };
                    let log = (!d.log.is_empty()).then(|| view! {
                        <details>
                            <summary class="small">{format!("{} attempt(s)", d.log.len())}</summary>
                            <ul class="small">
                                {d.log.iter().map(|a| view! {
                                    <li>{a.at.clone()} " · " {if a.ok { "ok" } else { "failed" }} " · " {a.detail.clone()}</li>
                                }).collect_view()}
                            </ul>
                        </details>
                    });
                    view! {
                        <tr data-delivery=d.id.clone() data-channel=d.channel.clone() data-delivery-status=d.status.clone() data-event=d.event_type.clone()>
                            <td>{d.created.clone()}</td>
                            {admin.then(|| view! { <td>{d.org.clone().unwrap_or_else(|| "platform admins".into())}</td> })}
                            <td>{d.event_type.clone()}</td>
                            <td>{d.channel.clone()}</td>
                            <td class="small">{d.target.clone()}</td>
                            <td><span class=badge>{d.status.clone()}</span></td>
                            <td>{d.attempts}{log}</td>
                            <td class="small">{error}</td>
                            <td>{action}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}
