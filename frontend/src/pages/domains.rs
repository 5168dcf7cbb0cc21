//! An organisation's domains: the list with each domain's state, adding a domain, and a
//! domain's page with where it is served, its plan and its chat accounts. While a domain
//! changes on its own (waiting for its payment, being set up or deleted) both pages reload
//! themselves every few seconds, so its state follows without JavaScript.

use leptos::prelude::*;

use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{ActionButton, BarChart, Csrf, Empty, Field, FormAlert},
};

#[derive(Clone, Debug, Default)]
pub struct DomainView {
    pub id: String,
    pub domain: String,
    /// The machine state: provisioning, active, suspended, deleting…
    pub state: String,
    /// Clients connect here (`host:port`), once placed.
    pub server: Option<String>,
    /// Why it is not active yet, for people.
    pub waiting: Option<String>,
    pub created: String,
    /// Waiting for payment: offer to pay (again).
    pub can_pay: bool,
    /// Billing news: a failed payment's deadline, a cancelled domain's deletion date.
    pub billing_note: Option<String>,
    pub usage: Option<UsageView>,
    pub uptime: Option<UptimeView>,
    /// The public status page switch, on the domain's own page.
    pub status_page: Option<StatusPageSwitch>,
    /// The prober's verdict for the list: status ("up", "down", "incident") and the
    /// 24-hour uptime; `None` before the first round.
    pub probe: Option<(String, String)>,
    /// The plan card, on the domain's own page.
    pub plan: Option<PlanCard>,
}

/// How often a page showing a domain in a transitional state reloads itself, in seconds.
pub const REFRESH_SECS: u32 = 5;

/// Whether a domain in `state` is changing on its own (waiting for its payment's webhook,
/// being set up, being deleted), so that a page showing it should reload itself.
pub fn is_transitional(state: &str) -> bool {
    matches!(state, "pending_payment" | "provisioning" | "deleting")
}

/// A domain's plan, the plans it can move to, and the form to change it.
#[derive(Clone, Debug, Default)]
pub struct PlanCard {
    /// The current plan; `None`: no plan (no limits).
    pub current: Option<PlanChoice>,
    /// The plans it can move to (the offered ones but the current one).
    pub choices: Vec<PlanChoice>,
    /// Why the plan cannot be changed now (shown instead of the form).
    pub locked: Option<String>,
    /// How a change is billed, for people.
    pub hint: String,
    /// The plan chosen in a refused form.
    pub chosen: String,
    pub errors: FormErrors,
}

/// Whether the domain's public status page is on, and where it is.
#[derive(Clone, Debug, Default)]
pub struct StatusPageSwitch {
    pub public: bool,
    /// `<public_url>/status/<ASCII domain>`.
    pub url: String,
}

/// What the prober saw: the current status, uptime over windows, 90 days of bars and the
/// incidents. A view for the public status page carries no error texts, only steps.
#[derive(Clone, Debug, Default)]
pub struct UptimeView {
    /// "up", "down" or "unknown" (not checked yet).
    pub status: String,
    pub detail: String,
    /// ("24 hours", "99.95 %"), …
    pub windows: Vec<(String, String)>,
    /// (tooltip, class) per day, oldest first: classes nodata, ok, degraded, down.
    pub days: Vec<(String, String)>,
    pub incidents: Vec<IncidentView>,
}

#[derive(Clone, Debug, Default)]
pub struct IncidentView {
    pub started: String,
    /// When it ended, or "ongoing".
    pub ended: String,
    pub duration: String,
    /// The failing step ("tls"), with the error after it for the domain's team.
    pub stage: String,
}

/// The uptime card: the current status, uptime over the windows, a bar per day and the
/// incidents. The domain page shows it to the domain's team; with `public`, the public
/// status page shows it to anyone (the wording differs; the server leaves the error texts
/// out of a public view).
#[component]
pub fn UptimeCard(uptime: UptimeView, #[prop(optional)] public: bool) -> impl IntoView {
    let (badge, label) = match uptime.status.as_str() {
        "up" => ("badge badge-ok", "up"),
        "down" => ("badge badge-err", "down"),
        _ => ("badge", "not checked yet"),
    };
    let (heading, incidents_heading) = if public {
        ("Status", "Recent incidents")
    } else {
        ("Uptime", "Incidents")
    };
    let incidents = if uptime.incidents.is_empty() {
        view! { <p class="muted" id="no-incidents">"No incidents recorded."</p> }.into_any()
    } else {
        view! {
            <div class="table-scroll">
                <table class="table incidents" id="incidents">
                    <thead><tr><th scope="col">"Started"</th><th scope="col">"Ended"</th><th scope="col">"Lasted"</th><th scope="col">"Failing step"</th></tr></thead>
                    <tbody>
                        {uptime.incidents.into_iter().map(|i| view! {
                            <tr><td>{i.started}</td><td>{i.ended}</td><td>{i.duration}</td><td>{i.stage}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </div>
        }
        .into_any()
    };
    view! {
        <section class="card" id="uptime">
            <h2>{heading} " " <span class=badge data-probe-status=uptime.status.clone()>{label}</span></h2>
            <p class="muted">{uptime.detail}</p>
            <div class="usage-figures">
                {uptime.windows.into_iter().map(|(label, pct)| view! { <div><strong>{pct}</strong>{label}</div> }).collect_view()}
            </div>
            {uptime_bars(uptime.days)}
            <div class="uptime-axis muted small" aria-hidden="true"><span>"90 days ago"</span><span>"today"</span></div>
            <h3>{incidents_heading}</h3>
            {incidents}
        </section>
    }
}

/// One bar per day, coloured by that day's uptime, each with a tooltip.
pub fn uptime_bars(days: Vec<(String, String)>) -> impl IntoView {
    let n = days.len().max(1) as f64;
    let (width, height) = (450.0_f64, 34.0_f64);
    let w = width / n;
    view! {
        <svg class="uptime-bars" viewBox=format!("0 0 {width} {height}") role="img" aria-label="Uptime per day over the last 90 days" preserveAspectRatio="none">
            {days.into_iter().enumerate().map(|(i, (tip, class))| view! {
                <rect class=format!("day day-{class}") x=format!("{:.2}", i as f64 * w + 0.5) y="0" width=format!("{:.2}", (w - 1.0).max(0.5)) height=format!("{height}")>
                    <title>{tip}</title>
                </rect>
            }).collect_view()}
        </svg>
    }
}

/// The domain's usage: today's figures and 30 days of history.
#[derive(Clone, Debug, Default)]
pub struct UsageView {
    pub accounts: i64,
    pub sessions_now: i64,
    pub peak_today: i64,
    /// `<message>` stanzas sent and received today (no presence or iq traffic).
    pub messages_today: i64,
    pub storage: String,
    pub updated: String,
    /// (tooltip, value) per day, oldest first, for the last 30 days.
    pub messages_per_day: Vec<(String, i64)>,
    pub peak_per_day: Vec<(String, i64)>,
    /// Bytes stored at each day's last report.
    pub storage_per_day: Vec<(String, i64)>,
}

fn state_label(state: &str) -> (&'static str, &'static str) {
    match state {
        "pending_payment" => ("badge badge-warn", "waiting for payment"),
        "provisioning" => ("badge badge-warn", "being set up"),
        "active" => ("badge badge-ok", "active"),
        "suspended" => ("badge badge-err", "suspended"),
        "deleting" => ("badge badge-warn", "being deleted"),
        _ => ("badge", "deleted"),
    }
}

fn state_badge(state: &str) -> impl IntoView + use<> {
    let (class, text) = state_label(state);
    view! { <span class=class data-state=state.to_string()>{text}</span> }
}

/// A plan to choose when adding a domain.
#[derive(Clone, Debug, Default)]
pub struct PlanChoice {
    pub id: String,
    pub name: String,
    /// "Free" or "EUR 4.00 / month".
    pub price: String,
    /// "10 accounts, 20 connections, 500 MB".
    pub limits: String,
}

/// The add-a-domain form as typed.
#[derive(Clone, Debug, Default)]
pub struct OrderForm {
    pub domain: String,
    pub plan: String,
    pub errors: FormErrors,
}

pub fn list(
    ctx: PageCtx,
    org_id: String,
    domains: Vec<DomainView>,
    plans: Vec<PlanChoice>,
    form: OrderForm,
) -> String {
    let OrderForm {
        domain,
        plan: chosen,
        errors,
    } = form;
    let base = format!("/o/{org_id}/domains");
    let mut ctx = ctx;
    // Not after a refused order: reloading would drop what was typed.
    if errors.is_empty() && domains.iter().any(|d| is_transitional(&d.state)) {
        ctx.refresh = Some((REFRESH_SECS, base.clone()));
    }
    render(move || {
        let csrf = ctx.csrf.clone();
        let list = if domains.is_empty() {
            view! { <Empty title="No domains yet"><p>"Add your first domain below: its chat accounts will be name@your-domain."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="domains">
                    <thead><tr><th scope="col">"Domain"</th><th scope="col">"State"</th><th scope="col">"Uptime, 24 h"</th><th scope="col">"Server"</th><th scope="col">"Added"</th></tr></thead>
                    <tbody>
                        {domains.into_iter().map(|d| view! {
                            <tr data-domain=d.domain.clone()>
                                <td><a href=format!("{base}/{}", d.id)>{d.domain.clone()}</a></td>
                                <td>{state_badge(&d.state)}{d.waiting.map(|w| view! { <br/><span class="muted small">{w}</span> })}</td>
                                <td>{match d.probe {
                                    Some((status, uptime)) => {
                                        let class = if status == "up" { "badge badge-ok" } else { "badge badge-err" };
                                        view! { <span class=class data-probe=status.clone()>{status.clone()}</span>" "{uptime} }.into_any()
                                    }
                                    None => view! { <span class="muted">"not checked yet"</span> }.into_any(),
                                }}</td>
                                <td>{d.server.unwrap_or_else(|| "not placed yet".into())}</td>
                                <td>{d.created}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        };
        view! {
            <Shell ctx=ctx>
                <h1>"Domains"</h1>
                <p class="muted">"Each domain is an XMPP service of its own, hosted on our servers. While a domain is being set up or deleted, this page updates itself every few seconds."</p>
                {list}
                <section class="card">
                    <h2>"Add a domain"</h2>
                    <FormAlert errors=errors.clone()/>
                    <form method="post" action=base.clone() class="order-form">
                        <Csrf token=csrf/>
                        <Field name="domain" label="Domain" value=domain errors=errors.clone() hint="A domain you own, e.g. chat.example.com." required=true/>
                        {(!plans.is_empty()).then(|| {
                            let plan_error = errors.get("plan");
                            let has_error = plan_error.is_some();
                            view! {
                                <fieldset class="field plan-choice" class:has-error=has_error>
                                    <legend>"Plan"</legend>
                                    {plans.iter().map(|p| {
                                        let checked = p.id == chosen || (chosen.is_empty() && plans.len() == 1);
                                        view! {
                                            <label class="plan-option">
                                                <input type="radio" name="plan" value=p.id.clone() checked=checked/>
                                                " " <strong>{p.name.clone()}</strong> " — " {p.price.clone()}
                                                <span class="muted small">{format!(" ({})", p.limits)}</span>
                                            </label>
                                        }
                                    }).collect_view()}
                                    {plan_error.map(|e| view! { <p class="field-error" id="f-plan-error">{e}</p> })}
                                </fieldset>
                            }
                        })}
                        <button type="submit" class="button" id="domain-submit">"Add domain"</button>
                    </form>
                </section>
            </Shell>
        }
    })
}

#[derive(Clone, Debug, Default)]
pub struct AccountsView {
    /// None when the node could not be asked (the error says why).
    pub accounts: Option<Vec<String>>,
    pub error: Option<String>,
    pub username: String,
    pub errors: FormErrors,
    /// A password just set (`address`, password): shown this once.
    pub shown_once: Option<(String, String)>,
    /// The plan's account limit, if any.
    pub limit: Option<i64>,
}

pub fn detail(ctx: PageCtx, org_id: String, d: DomainView, a: AccountsView) -> String {
    let base = format!("/o/{org_id}/domains/{}", d.id);
    let mut ctx = ctx;
    // Not while the page shows something once (a password) or a refused form.
    let quiet = a.shown_once.is_none()
        && a.errors.is_empty()
        && d.plan.as_ref().is_none_or(|p| p.errors.is_empty());
    if quiet && is_transitional(&d.state) {
        ctx.refresh = Some((REFRESH_SECS, base.clone()));
    }
    render(move || {
        let csrf = ctx.csrf.clone();
        let active = d.state == "active";
        let shown = a.shown_once.clone().map(|(address, password)| view! {
            <div class="alert alert-success" role="status" id="password-once">
                <p>{format!("The password of {address} is:")}</p>
                <p><input class="code copy" type="text" readonly value=password id="new-password" aria-label="The new password"/></p>
                <p>"Copy it now: it is not shown again. Give it to the person who uses the account."</p>
            </div>
        });
        let count = a.accounts.as_ref().map(Vec::len).unwrap_or(0) as i64;
        let limit_line = a.limit.map(|l| view! { <p class="muted" id="account-limit">{format!("{count} of {l} accounts in your plan.")}</p> });
        let accounts = match (&a.accounts, &a.error) {
            (_, Some(e)) => view! { <div class="alert alert-error" role="alert">{e.clone()}</div> }.into_any(),
            (Some(list), None) if list.is_empty() => view! { <p class="muted">"No chat accounts yet."</p> }.into_any(),
            (Some(list), None) => view! {
                <table class="table" id="accounts">
                    <thead><tr><th scope="col">"Address"</th><th scope="col"><span class="sr-only">"Actions"</span></th></tr></thead>
                    <tbody>
                        {list.iter().map(|u| {
                            let address = format!("{u}@{}", d.domain);
                            let key = u.clone();
                            view! {
                                <tr data-account=key>
                                    <td>{address}</td>
                                    <td class="row-actions">
                                        <ActionButton action=format!("{base}/accounts/{u}/reset") csrf=csrf.clone() label="New password" class="button button-quiet button-small"/>
                                        <a class="button button-danger button-small" href=format!("{base}/accounts/{u}/delete")>"Delete"</a>
                                    </td>
                                </tr>
                            }
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any(),
            (None, None) => view! { <p class="muted">"Chat accounts can be added once the domain is active."</p> }.into_any(),
        };
        let form = active.then(|| {
            let e = a.errors.clone();
            view! {
                <h3>"Add an account"</h3>
                <FormAlert errors=e.clone()/>
                <form method="post" action=format!("{base}/accounts") class="grid-form">
                    <Csrf token=csrf.clone()/>
                    <Field name="username" label="User name" value=a.username.clone() errors=e.clone() required=true/>
                    <Field name="password" label="Password" kind="password" errors=e.clone() hint="At least 10 characters; leave empty to have one made up." autocomplete="new-password"/>
                    <button type="submit" class="button" id="account-submit">"Create account"</button>
                </form>
            }
        });
        view! {
            <Shell ctx=ctx>
                <p><a href=format!("/o/{org_id}/domains")>"← Domains"</a></p>
                <h1>{d.domain.clone()} " " {state_badge(&d.state)}</h1>
                {d.waiting.clone().map(|w| view! { <div class="alert alert-info" role="status">{w}</div> })}
                {d.can_pay.then(|| view! {
                    <ActionButton action=format!("{base}/checkout") csrf=csrf.clone() label="Pay now" class="button" id="pay-now"/>
                })}
                {d.billing_note.clone().map(|n| view! {
                    <div class="alert alert-error" role="alert" id="billing-note">
                        {n} " " <a href=format!("{base}/export")>"Download this domain's data"</a>
                    </div>
                })}
                {shown}
                <section class="card">
                    <dl class="facts">
                        <dt>"Server"</dt><dd id="server">{d.server.clone().unwrap_or_else(|| "not placed yet".into())}</dd>
                        <dt>"Added"</dt><dd>{d.created.clone()}</dd>
                    </dl>
                    <p><a href=format!("{base}/dns")>"DNS records for this domain"</a></p>
                    <p><a href=format!("{base}/settings") id="domain-settings">"Contact addresses and TLS certificate"</a></p>
                </section>
                {d.plan.clone().map(|p| plan_card(&base, &csrf, p))}
                {d.uptime.clone().map(|u| view! { <UptimeCard uptime=u/> })}
                {d.status_page.clone().map(|p| status_page_switch(&base, &csrf, p))}
                {d.usage.clone().map(|u| view! {
                    <section class="card" id="usage">
                        <h2>"Usage"</h2>
                        <div class="usage-figures">
                            <div><strong>{u.accounts}</strong>"accounts"</div>
                            <div><strong>{u.sessions_now}</strong>"connected now"</div>
                            <div><strong>{u.peak_today}</strong>"peak connections today"</div>
                            <div><strong>{u.messages_today}</strong>"messages today"</div>
                            <div><strong>{u.storage.clone()}</strong>"stored"</div>
                        </div>
                        <div class="charts">
                            <div><h3>"Messages per day (sent and received)"</h3><BarChart label="Messages per day over the last 30 days".to_string() bars=u.messages_per_day.clone()/></div>
                            <div><h3>"Peak connections per day"</h3><BarChart label="Peak connections per day over the last 30 days".to_string() bars=u.peak_per_day.clone()/></div>
                            <div><h3>"Storage"</h3><BarChart label="Storage used per day over the last 30 days".to_string() bars=u.storage_per_day.clone()/></div>
                        </div>
                        <p class="hint">{format!("Last 30 days, UTC. Updated {}.", u.updated)}</p>
                    </section>
                })}
                <section class="card">
                    <h2>"Chat accounts"</h2>
                    {limit_line}
                    // The form shows its own errors; without it (the domain is not active)
                    // a refused action still says why.
                    {(!active).then(|| view! { <FormAlert errors=a.errors.clone()/> })}
                    {accounts}
                    {form}
                </section>
            </Shell>
        }
    })
}

/// The domain's plan with its limits, and the "Change plan" form (a choice among the other
/// plans) unless the plan cannot change now.
fn plan_card(base: &str, csrf: &str, p: PlanCard) -> impl IntoView + use<> {
    let current = match &p.current {
        Some(c) => view! {
            <p id="current-plan" data-plan=c.id.clone()>
                <strong>{c.name.clone()}</strong> " — " {c.price.clone()}
                <span class="muted small">{format!(" ({})", c.limits)}</span>
            </p>
        }
        .into_any(),
        None => view! { <p id="current-plan" class="muted">"No plan: no limits."</p> }.into_any(),
    };
    let form = match (&p.locked, p.choices.is_empty()) {
        (Some(why), _) => view! { <p class="muted">{why.clone()}</p> }.into_any(),
        (None, true) => {
            view! { <p class="muted">"There is no other plan to move to."</p> }.into_any()
        }
        (None, false) => {
            let error = p.errors.get("plan");
            let has_error = error.is_some();
            view! {
                <form method="post" action=format!("{base}/plan") class="plan-form" id="plan-form">
                    <Csrf token=csrf.to_string()/>
                    <fieldset class="field plan-choice" class:has-error=has_error>
                        <legend>"Change plan"</legend>
                        {p.choices.iter().map(|c| view! {
                            <label class="plan-option">
                                <input type="radio" name="plan" value=c.id.clone() checked=c.id == p.chosen required=true/>
                                " " <strong>{c.name.clone()}</strong> " — " {c.price.clone()}
                                <span class="muted small">{format!(" ({})", c.limits)}</span>
                            </label>
                        }).collect_view()}
                        {error.map(|e| view! { <p class="field-error" id="f-plan-error" role="alert">{e}</p> })}
                        <p class="hint">{p.hint.clone()}</p>
                    </fieldset>
                    <button type="submit" class="button" id="plan-submit">"Change plan"</button>
                </form>
            }
            .into_any()
        }
    };
    view! {
        <section class="card" id="plan">
            <h2>"Plan"</h2>
            {current}
            {form}
        </section>
    }
}

/// "Public status page: off", with a button to turn it on (or the other way round), and
/// the page's address while it is on.
fn status_page_switch(base: &str, csrf: &str, p: StatusPageSwitch) -> impl IntoView + use<> {
    let (now, set, button) = if p.public {
        ("on", "off", "Turn off")
    } else {
        ("off", "on", "Turn on")
    };
    view! {
        <section class="card" id="status-page">
            <h2>"Public status page: " <span data-status-page=now>{now}</span></h2>
            {if p.public {
                view! {
                    <p>"Anyone with this address sees the domain's status, uptime and incidents (the failing step, never the error messages): "
                        <a href=p.url.clone() id="status-page-url">{p.url.clone()}</a></p>
                }.into_any()
            } else {
                view! { <p class="muted">"Off: only your team sees this domain's uptime. Turn it on to give your users a page with the domain's status, uptime and incidents."</p> }.into_any()
            }}
            <form method="post" action=format!("{base}/status-page") class="inline-form">
                <Csrf token=csrf.to_string()/>
                <input type="hidden" name="public" value=set/>
                <button type="submit" class="button button-quiet" id="status-page-submit">{button}</button>
            </form>
        </section>
    }
}

/// Confirming the deletion of a chat account.
pub fn confirm_delete(
    ctx: PageCtx,
    org_id: String,
    domain_id: String,
    address: String,
    username: String,
) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let back = format!("/o/{org_id}/domains/{domain_id}");
        view! {
            <Shell ctx=ctx>
                <h1>{format!("Delete {address}?")}</h1>
                <section class="card">
                    <p>"The account, its contacts and its stored messages are deleted at once and cannot be brought back. Anyone logged in with it is disconnected."</p>
                    <div class="actions">
                        <ActionButton action=format!("{back}/accounts/{username}/delete") csrf=csrf label="Delete the account" class="button button-danger" id="confirm-delete"/>
                        <a class="button button-quiet" href=back>"Keep it"</a>
                    </div>
                </section>
            </Shell>
        }
    })
}
