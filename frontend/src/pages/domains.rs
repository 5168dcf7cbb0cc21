//! An organisation's domains: the list with each domain's state, adding a domain, and a
//! domain's page with where it is served and its chat accounts.

use leptos::prelude::*;

use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{Csrf, Empty, Field, FormAlert},
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

pub fn list(
    ctx: PageCtx,
    org_id: String,
    domains: Vec<DomainView>,
    domain: String,
    errors: FormErrors,
) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let base = format!("/o/{org_id}/domains");
        let list = if domains.is_empty() {
            view! { <Empty title="No domains yet"><p>"Add your first domain below: its chat accounts will be name@your-domain."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="domains">
                    <thead><tr><th scope="col">"Domain"</th><th scope="col">"State"</th><th scope="col">"Server"</th><th scope="col">"Added"</th></tr></thead>
                    <tbody>
                        {domains.into_iter().map(|d| view! {
                            <tr data-domain=d.domain.clone()>
                                <td><a href=format!("{base}/{}", d.id)>{d.domain.clone()}</a></td>
                                <td>{state_badge(&d.state)}{d.waiting.map(|w| view! { <br/><span class="muted small">{w}</span> })}</td>
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
                <p class="muted">"Each domain is an XMPP service of its own, hosted on our servers. Reload this page to follow a new domain as it is set up."</p>
                {list}
                <section class="card">
                    <h2>"Add a domain"</h2>
                    <FormAlert errors=errors.clone()/>
                    <form method="post" action=base.clone() class="form-row">
                        <Csrf token=csrf/>
                        <Field name="domain" label="Domain" value=domain errors=errors hint="A domain you own, e.g. chat.example.com." required=true/>
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
}

pub fn detail(ctx: PageCtx, org_id: String, d: DomainView, a: AccountsView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let base = format!("/o/{org_id}/domains/{}", d.id);
        let active = d.state == "active";
        let accounts = match (&a.accounts, &a.error) {
            (_, Some(e)) => view! { <div class="alert alert-error" role="alert">{e.clone()}</div> }.into_any(),
            (Some(list), None) if list.is_empty() => view! { <p class="muted">"No chat accounts yet."</p> }.into_any(),
            (Some(list), None) => view! {
                <ul class="account-list" id="accounts">
                    {list.iter().map(|u| view! { <li>{format!("{u}@{}", d.domain)}</li> }).collect_view()}
                </ul>
            }.into_any(),
            (None, None) => view! { <p class="muted">"Chat accounts can be added once the domain is active."</p> }.into_any(),
        };
        let form = active.then(|| {
            let e = a.errors.clone();
            view! {
                <FormAlert errors=e.clone()/>
                <form method="post" action=format!("{base}/accounts") class="grid-form">
                    <Csrf token=csrf.clone()/>
                    <Field name="username" label="User name" value=a.username.clone() errors=e.clone() required=true/>
                    <Field name="password" label="Password" kind="password" errors=e.clone() hint="At least 10 characters." autocomplete="new-password" required=true/>
                    <button type="submit" class="button" id="account-submit">"Create account"</button>
                </form>
            }
        });
        view! {
            <Shell ctx=ctx>
                <p><a href=format!("/o/{org_id}/domains")>"← Domains"</a></p>
                <h1>{d.domain.clone()} " " {state_badge(&d.state)}</h1>
                {d.waiting.clone().map(|w| view! { <div class="alert alert-info" role="status">{w}</div> })}
                <section class="card">
                    <dl class="facts">
                        <dt>"Server"</dt><dd id="server">{d.server.clone().unwrap_or_else(|| "not placed yet".into())}</dd>
                        <dt>"Added"</dt><dd>{d.created.clone()}</dd>
                    </dl>
                </section>
                <section class="card">
                    <h2>"Chat accounts"</h2>
                    {accounts}
                    {form}
                </section>
            </Shell>
        }
    })
}
