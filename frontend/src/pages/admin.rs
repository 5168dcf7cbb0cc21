//! The platform admin's pages: tenants, plans, the mail outbox and the node pool.

use leptos::prelude::*;

use super::PlanView;
use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{ActionButton, Csrf, Empty, Field, FormAlert},
};

#[derive(Clone, Debug, Default)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub owners: String,
    pub members: i64,
    pub is_reseller: bool,
    pub parent: Option<String>,
    pub created: String,
}

pub fn tenants(ctx: PageCtx, rows: Vec<TenantRow>) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let body = if rows.is_empty() {
            view! { <Empty title="No tenants yet"><p>"Organisations appear here as customers sign up."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table">
                    <thead><tr>
                        <th scope="col">"Organisation"</th><th scope="col">"Owners"</th><th scope="col">"Members"</th>
                        <th scope="col">"Kind"</th><th scope="col">"Created"</th><th scope="col"><span class="sr-only">"Actions"</span></th>
                    </tr></thead>
                    <tbody>
                        {rows.into_iter().map(|r| {
                            let kind = if r.is_reseller { "reseller".to_string() } else {
                                r.parent.clone().map(|p| format!("customer of {p}")).unwrap_or_else(|| "customer".into())
                            };
                            let (label, value) = if r.is_reseller { ("Make customer", "0") } else { ("Make reseller", "1") };
                            view! {
                                <tr>
                                    <td>{r.name.clone()}</td>
                                    <td>{r.owners.clone()}</td>
                                    <td>{r.members}</td>
                                    <td>{kind}</td>
                                    <td>{r.created.clone()}</td>
                                    <td>
                                        <ActionButton action=format!("/admin/tenants/{}/reseller", r.id) csrf=csrf.clone()
                                            label=label class="button button-quiet button-small" confirm_field=("reseller", value.to_string())/>
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        };
        view! {
            <Shell ctx=ctx>
                <h1>"Tenants"</h1>
                <p class="muted">"Every organisation on the platform. Resellers own customer organisations and drive them through the API."</p>
                {body}
            </Shell>
        }
    })
}

/// The plan form as typed, for showing it again with its errors.
#[derive(Clone, Debug, Default)]
pub struct PlanForm {
    pub name: String,
    pub description: String,
    pub price: String,
    pub currency: String,
    pub max_accounts: String,
    pub max_sessions: String,
    pub storage_mb: String,
    pub upload_mb: String,
    pub archive_days: String,
    /// Empty: the node's default.
    pub offline_days: String,
    /// Upload and group chat limits; each empty: the node's default.
    pub upload_max_file_mb: String,
    pub upload_account_mb: String,
    pub upload_retention_days: String,
    pub max_rooms: String,
    pub max_room_occupants: String,
    pub node_labels: String,
    pub stripe_price_id: String,
    pub public: bool,
    pub errors: FormErrors,
}

/// The fields of a plan, for the new-plan form and the edit page.
fn plan_fields(
    form: PlanForm,
    csrf: String,
    action: String,
    submit: &'static str,
) -> impl IntoView {
    let e = form.errors.clone();
    view! {
        <FormAlert errors=e.clone()/>
        <form method="post" action=action class="grid-form plan-fields">
            <Csrf token=csrf/>
            <Field name="name" label="Name" value=form.name.clone() errors=e.clone() required=true/>
            <Field name="description" label="Description" value=form.description.clone() errors=e.clone()/>
            <Field name="price" label="Monthly price" value=form.price.clone() errors=e.clone() hint="For example 4.50; 0 for a free plan." required=true/>
            <Field name="currency" label="Currency" value=form.currency.clone() errors=e.clone() hint="ISO 4217 code, e.g. EUR." required=true/>
            <h3 class="form-section">"What each domain gets"</h3>
            <Field name="max_accounts" label="Chat accounts" kind="number" value=form.max_accounts.clone() errors=e.clone() required=true/>
            <Field name="max_sessions" label="Simultaneous connections" kind="number" value=form.max_sessions.clone() errors=e.clone() required=true/>
            <Field name="storage_mb" label="Storage (MB)" kind="number" value=form.storage_mb.clone() errors=e.clone() required=true/>
            <Field name="archive_days" label="Message archive (days)" kind="number" value=form.archive_days.clone() errors=e.clone() required=true/>
            <Field name="offline_days" label="Offline message retention (days)" kind="number" value=form.offline_days.clone() errors=e.clone() hint="1 to 3650; empty: kept until delivered (the server's default)."/>
            <h3 class="form-section">"File uploads"</h3>
            <Field name="upload_mb" label="File uploads (MB)" kind="number" value=form.upload_mb.clone() errors=e.clone() hint="What all of a domain's uploaded files may add up to." required=true/>
            <Field name="upload_max_file_mb" label="Largest uploaded file (MB)" kind="number" value=form.upload_max_file_mb.clone() errors=e.clone() hint="The biggest file a user can send; 0: none. Empty: the server's default."/>
            <Field name="upload_account_mb" label="Uploads per chat account (MB)" kind="number" value=form.upload_account_mb.clone() errors=e.clone() hint="What one account's files may add up to. Empty: no per-account limit."/>
            <Field name="upload_retention_days" label="Uploaded files kept (days)" kind="number" value=form.upload_retention_days.clone() errors=e.clone() hint="1 to 3650: older files are deleted. Empty: kept (the server's default)."/>
            <h3 class="form-section">"Group chat"</h3>
            <Field name="max_rooms" label="Group chat rooms" kind="number" value=form.max_rooms.clone() errors=e.clone() hint="Rooms a domain's group chat service holds; 0: none. Empty: the server's default."/>
            <Field name="max_room_occupants" label="People per group chat" kind="number" value=form.max_room_occupants.clone() errors=e.clone() hint="At least 1. Empty: the server's default."/>
            <h3 class="form-section">"Placement and sale"</h3>
            <Field name="node_labels" label="Required node labels" value=form.node_labels.clone() errors=e.clone() hint="name=value pairs separated by commas, e.g. region=eu-west: the plan's domains go only to nodes with all of them. Empty: any node."/>
            <Field name="stripe_price_id" label="Stripe price id" value=form.stripe_price_id.clone() errors=e.clone() hint="price_…; needed for paid plans when billing is on."/>
            <div class="field checkbox">
                <label><input type="checkbox" name="public" value="1" checked=form.public/>" Shown on the landing page"</label>
            </div>
            <button type="submit" class="button" id="plan-submit">{submit}</button>
        </form>
    }
}

/// The plan's upload limits beyond the total, for the plans table: ` (files ≤ 25 MB, 200 MB
/// per account, kept 30 days)`; empty when the plan leaves them to the server.
fn upload_details(p: &PlanView) -> String {
    let parts: Vec<String> = [
        p.upload_max_file_mb.map(|mb| format!("files ≤ {mb} MB")),
        p.upload_account_mb.map(|mb| format!("{mb} MB per account")),
        p.upload_retention_days.map(|d| format!("kept {d} days")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// The plan's group chat limits for the plans table: `10 rooms of ≤ 50`, `default`.
fn group_chat(p: &PlanView) -> String {
    match (p.max_rooms, p.max_room_occupants) {
        (None, None) => "default".into(),
        (Some(0), _) => "none".into(),
        (Some(r), None) => format!("{r} rooms"),
        (None, Some(o)) => format!("rooms of ≤ {o}"),
        (Some(r), Some(o)) => format!("{r} rooms of ≤ {o}"),
    }
}

pub fn plans(ctx: PageCtx, plans: Vec<PlanView>, form: PlanForm) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let list = if plans.is_empty() {
            view! { <Empty title="No plans yet"><p>"Create the first plan below; it appears on the landing page."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="plans">
                    <thead><tr>
                        <th scope="col">"Plan"</th><th scope="col">"Price"</th><th scope="col">"Accounts"</th>
                        <th scope="col">"Connections"</th><th scope="col">"Storage / uploads"</th><th scope="col">"Group chat"</th><th scope="col">"Archive"</th><th scope="col">"Offline messages"</th><th scope="col">"Nodes"</th><th scope="col">"Shown"</th>
                    </tr></thead>
                    <tbody>
                        {plans.into_iter().map(|p| view! {
                            <tr>
                                <td><a href=format!("/admin/plans/{}", p.id)>{p.name.clone()}</a></td>
                                <td>{p.price_label()}</td>
                                <td>{p.max_accounts}</td>
                                <td>{p.max_sessions}</td>
                                <td>{format!("{} MB / {} MB", p.storage_mb, p.upload_mb)}{upload_details(&p)}</td>
                                <td>{group_chat(&p)}</td>
                                <td>{format!("{} days", p.archive_days)}</td>
                                <td>{p.offline_days.map_or_else(|| "until delivered".to_string(), |d| format!("{d} days"))}</td>
                                <td>{if p.node_labels.is_empty() { "any".to_string() } else { p.node_labels_text() }}</td>
                                <td>{if p.public { "on landing page" } else { "hidden" }}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        };
        view! {
            <Shell ctx=ctx>
                <h1>"Plans"</h1>
                {list}
                <section class="card">
                    <h2>"New plan"</h2>
                    {plan_fields(form, csrf, "/admin/plans".into(), "Create plan")}
                </section>
            </Shell>
        }
    })
}

/// Editing a plan: changes reach every domain on it.
pub fn plan_edit(ctx: PageCtx, id: String, domains: i64, form: PlanForm) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        view! {
            <Shell ctx=ctx>
                <p><a href="/admin/plans">"← Plans"</a></p>
                <h1>{format!("Plan {}", form.name)}</h1>
                <p class="muted">{format!("{domains} domain(s) use this plan; new limits reach their servers within seconds of saving.")}</p>
                <section class="card">
                    {plan_fields(form, csrf, format!("/admin/plans/{id}"), "Save plan")}
                </section>
            </Shell>
        }
    })
}

#[derive(Clone, Debug, Default)]
pub struct MailRow {
    pub to: String,
    pub subject: String,
    pub body: String,
    pub created: String,
    pub status: String,
}

pub fn outbox(ctx: PageCtx, mails: Vec<MailRow>) -> String {
    render(move || {
        let body = if mails.is_empty() {
            view! { <Empty title="No mail yet"><p>"Mail the panel sends (confirmations, password resets, invitations) is listed here."</p></Empty> }.into_any()
        } else {
            view! {
                <ul class="mail-list">
                    {mails.into_iter().map(|m| view! {
                        <li class="card">
                            <details>
                                <summary>
                                    <span class="mail-subject">{m.subject.clone()}</span>
                                    <span class="muted">{format!(" to {} · {} · {}", m.to, m.created, m.status)}</span>
                                </summary>
                                <pre class="mail-body">{m.body.clone()}</pre>
                            </details>
                        </li>
                    }).collect_view()}
                </ul>
            }.into_any()
        };
        view! {
            <Shell ctx=ctx>
                <h1>"Outbox"</h1>
                <p class="muted">"The latest mail the panel sent. Without SMTP configured, this is where mail goes."</p>
                {body}
            </Shell>
        }
    })
}
