//! Webhooks: an organisation's outbound webhook endpoints (list, add), and one endpoint's
//! page: its signing secret (owners), subscribed events, enable/disable, delete, and its
//! delivery log with redelivery.

use leptos::prelude::*;

use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{ActionButton, Csrf, Empty, Field, FieldError, FormAlert},
};

/// One endpoint, as lists and its page show it.
#[derive(Clone, Debug, Default)]
pub struct EndpointView {
    pub id: String,
    pub url: String,
    pub description: String,
    /// The subscribed types; empty: all.
    pub events: Vec<String>,
    pub enabled: bool,
    pub created: String,
}

/// A line of an endpoint's delivery log.
#[derive(Clone, Debug, Default)]
pub struct EndpointDeliveryView {
    pub id: String,
    pub created: String,
    pub event_type: String,
    pub status: String,
    pub attempts: i64,
    /// "HTTP 500: …", "connection refused", or the HTTP status of a success.
    pub outcome: String,
}

/// The list page.
#[derive(Clone, Debug, Default)]
pub struct WebhooksView {
    pub org_id: String,
    pub can_edit: bool,
    pub endpoints: Vec<EndpointView>,
    /// Every event type, for the add form.
    pub event_types: Vec<String>,
    /// The add form as typed, when it had errors.
    pub url: String,
    pub description: String,
    pub chosen: Vec<String>,
    pub errors: FormErrors,
}

/// One endpoint's page.
#[derive(Clone, Debug, Default)]
pub struct WebhookView {
    pub org_id: String,
    pub can_edit: bool,
    pub endpoint: EndpointView,
    /// The signing secret (owners only).
    pub secret: Option<String>,
    pub event_types: Vec<String>,
    pub deliveries: Vec<EndpointDeliveryView>,
}

fn events_label(events: &[String]) -> String {
    if events.is_empty() {
        "all events".into()
    } else {
        events.join(", ")
    }
}

/// Checkboxes `event:<type>`; none ticked means all.
fn event_boxes(types: Vec<String>, chosen: Vec<String>, errors: FormErrors) -> impl IntoView {
    let has_error = errors.get("events").is_some();
    view! {
        <fieldset class="field" class:has-error=has_error id="webhook-events" aria-describedby=has_error.then_some("f-events-error")>
            <legend>"Events"</legend>
            <p class="hint">"Tick none to receive every event type."</p>
            <FieldError name="events" errors=errors/>
            {types.into_iter().map(|t| {
                let checked = chosen.contains(&t);
                let name = format!("event:{t}");
                view! {
                    <label class="checkbox"><input type="checkbox" name=name value="on" checked=checked/> " " {t.clone()}</label>
                }
            }).collect_view()}
        </fieldset>
    }
}

pub fn webhooks(ctx: PageCtx, v: WebhooksView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let base = format!("/o/{}/webhooks", v.org_id);
        let e = v.errors.clone();
        let list = if v.endpoints.is_empty() {
            view! {
                <Empty title="No webhook endpoints yet">
                    <p>"Add one to receive signed events about this organisation's domains, chat accounts and invoices."</p>
                </Empty>
            }
            .into_any()
        } else {
            view! {
                <table class="table" id="webhook-endpoints">
                    <thead><tr>
                        <th scope="col">"URL"</th><th scope="col">"Description"</th><th scope="col">"Events"</th>
                        <th scope="col">"Status"</th><th scope="col">"Added"</th>
                    </tr></thead>
                    <tbody>
                        {v.endpoints.iter().map(|ep| {
                            let href = format!("{base}/{}", ep.id);
                            let (badge, status) = if ep.enabled { ("badge badge-ok", "enabled") } else { ("badge badge-warn", "disabled") };
                            view! {
                                <tr data-endpoint=ep.id.clone()>
                                    <td><a href=href>{ep.url.clone()}</a></td>
                                    <td>{ep.description.clone()}</td>
                                    <td class="small">{events_label(&ep.events)}</td>
                                    <td><span class=badge>{status}</span></td>
                                    <td>{ep.created.clone()}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }
            .into_any()
        };
        let add = v.can_edit.then(|| {
            view! {
                <section class="card">
                    <h2>"Add an endpoint"</h2>
                    <FormAlert errors=e.clone()/>
                    <form method="post" action=base.clone() class="grid-form" id="add-webhook">
                        <Csrf token=csrf.clone()/>
                        <Field name="url" label="URL" kind="url" value=v.url.clone() errors=e.clone()
                            hint="We POST a signed JSON event here."/>
                        <Field name="description" label="Description" value=v.description.clone() errors=e.clone()/>
                        {event_boxes(v.event_types.clone(), v.chosen.clone(), e.clone())}
                        <button type="submit" class="button" id="webhook-add">"Add endpoint"</button>
                    </form>
                </section>
            }
        });
        view! {
            <Shell ctx=ctx>
                <h1>"Webhooks"</h1>
                <p class="muted">"Endpoints receive a signed POST for each event they subscribe to; failed deliveries are retried for a day. See the README's \"Outbound webhooks\" for the events and the signature."</p>
                {list}
                {add}
            </Shell>
        }
    })
}

pub fn webhook(ctx: PageCtx, v: WebhookView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let ep = v.endpoint.clone();
        let base = format!("/o/{}/webhooks/{}", v.org_id, ep.id);
        let secret = v.secret.clone().filter(|_| v.can_edit).map(|s| {
            view! {
                <section class="card" id="webhook-signing">
                    <h2>"Signing secret"</h2>
                    <p><input class="code copy" type="text" readonly value=s id="webhook-secret" aria-label="Signing secret"/></p>
                    <p>"Every delivery carries " <code>"Rookery-Signature: t=<unix time>,v1=<signature>"</code>
                        ", the hex HMAC-SHA256 of " <code>"<t>.<request body>"</code> " keyed with this secret, and "
                        <code>"Rookery-Event-Id"</code> ", the same on every retry."</p>
                    <ActionButton action=format!("{base}/secret") csrf=csrf.clone() label="Rotate secret"
                        class="button button-quiet" id="rotate-webhook-secret"/>
                </section>
            }
        });
        let manage = v.can_edit.then(|| {
            let toggle = if ep.enabled { ("0", "Disable") } else { ("1", "Enable") };
            view! {
                <section class="card">
                    <h2>"Events"</h2>
                    <form method="post" action=base.clone() class="grid-form" id="edit-webhook">
                        <Csrf token=csrf.clone()/>
                        {event_boxes(v.event_types.clone(), ep.events.clone(), FormErrors::default())}
                        <button type="submit" class="button" id="webhook-save">"Save events"</button>
                    </form>
                    <p class="row-actions">
                        <ActionButton action=format!("{base}/enabled") csrf=csrf.clone() label=toggle.1
                            class="button button-quiet" id="toggle-webhook" confirm_field=("enabled", toggle.0.to_string())/>
                        <ActionButton action=format!("{base}/delete") csrf=csrf.clone() label="Delete"
                            class="button button-danger" id="delete-webhook"/>
                    </p>
                </section>
            }
        });
        let log = if v.deliveries.is_empty() {
            view! { <Empty title="Nothing sent yet"><p>"Deliveries appear here with their attempts."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="deliveries">
                    <thead><tr>
                        <th scope="col">"Time"</th><th scope="col">"Event"</th><th scope="col">"Status"</th>
                        <th scope="col">"Attempts"</th><th scope="col">"HTTP status / error"</th>
                        <th scope="col"><span class="sr-only">"Actions"</span></th>
                    </tr></thead>
                    <tbody>
                        {v.deliveries.iter().map(|d| {
                            let badge = match d.status.as_str() {
                                "delivered" => "badge badge-ok",
                                "failed" => "badge badge-err",
                                _ => "badge badge-warn",
                            };
                            let action = (v.can_edit && (d.status != "pending" || d.attempts > 0)).then(|| view! {
                                <ActionButton action=format!("{base}/deliveries/{}/redeliver", d.id) csrf=csrf.clone()
                                    label="Redeliver" class="button button-quiet button-small"/>
                            });
                            view! {
                                <tr data-delivery=d.id.clone() data-delivery-status=d.status.clone() data-event=d.event_type.clone()>
                                    <td>{d.created.clone()}</td>
                                    <td>{d.event_type.clone()}</td>
                                    <td><span class=badge>{d.status.clone()}</span></td>
                                    <td>{d.attempts}</td>
                                    <td class="small">{d.outcome.clone()}</td>
                                    <td>{action}</td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }
            .into_any()
        };
        let status = if ep.enabled { "enabled" } else { "disabled" };
        view! {
            <Shell ctx=ctx>
                <p><a href=format!("/o/{}/webhooks", v.org_id)>"← Webhooks"</a></p>
                <h1>"Webhook endpoint"</h1>
                <dl class="facts">
                    <dt>"URL"</dt><dd id="webhook-url">{ep.url.clone()}</dd>
                    <dt>"Description"</dt><dd>{ep.description.clone()}</dd>
                    <dt>"Events"</dt><dd>{events_label(&ep.events)}</dd>
                    <dt>"Status"</dt><dd id="webhook-status">{status}</dd>
                    <dt>"Added"</dt><dd>{ep.created.clone()}</dd>
                </dl>
                {secret}
                {manage}
                <h2>"Delivery log"</h2>
                {log}
            </Shell>
        }
    })
}
