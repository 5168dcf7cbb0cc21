//! A customer organisation's pages (dashboard, domains, billing, API keys, team) and the
//! signed-in person's own account settings.

use leptos::prelude::*;

use crate::{
    FormErrors, PageCtx, Shell, render,
    widgets::{ActionButton, Csrf, Empty, Field, FieldError, FormAlert},
};

#[derive(Clone, Debug, Default)]
pub struct DashboardView {
    pub org_id: String,
    pub org_name: String,
    pub role: String,
    pub members: i64,
    pub is_reseller: bool,
    pub customers: i64,
    pub domains: i64,
    /// The probed domains, worst first (at most ten).
    pub health: Vec<DomainHealth>,
}

/// One domain on the dashboard: status, 30-day uptime and its 90 daily bars.
#[derive(Clone, Debug, Default)]
pub struct DomainHealth {
    pub id: String,
    pub domain: String,
    /// "up", "down" or "incident".
    pub status: String,
    pub uptime_30d: String,
    /// (tooltip, class) per day, oldest first.
    pub days: Vec<(String, String)>,
}

pub fn dashboard(ctx: PageCtx, d: DashboardView) -> String {
    render(move || {
        let base = format!("/o/{}", d.org_id);
        view! {
            <Shell ctx=ctx>
                <h1>{d.org_name.clone()}</h1>
                <p class="muted">{format!("You are {} of this organisation.", article(&d.role))}</p>
                <div class="tiles">
                    <a class="tile card" href=format!("{base}/domains")>
                        <h2>"Domains"</h2>
                        <p class="tile-figure">{d.domains}</p>
                        <p>"XMPP domains hosted for this organisation."</p>
                    </a>
                    <a class="tile card" href=format!("{base}/team")>
                        <h2>"Team"</h2>
                        <p class="tile-figure">{d.members}</p>
                        <p>{if d.members == 1 { "person has access." } else { "people have access." }}</p>
                    </a>
                    {d.is_reseller.then(|| view! {
                        <div class="tile card">
                            <h2>"Customers"</h2>
                            <p class="tile-figure">{d.customers}</p>
                            <p>"Customer organisations you resell to."</p>
                        </div>
                    })}
                </div>
                {(!d.health.is_empty()).then(|| view! {
                    <section class="card" id="domain-health">
                        <h2>"Domain health"</h2>
                        <table class="table">
                            <thead><tr><th scope="col">"Domain"</th><th scope="col">"Now"</th><th scope="col">"30 days"</th><th scope="col">"Last 90 days"</th></tr></thead>
                            <tbody>
                                {d.health.iter().cloned().map(|h| {
                                    let class = if h.status == "up" { "badge badge-ok" } else { "badge badge-err" };
                                    view! {
                                        <tr data-domain=h.domain.clone()>
                                            <td><a href=format!("{base}/domains/{}", h.id)>{h.domain.clone()}</a></td>
                                            <td><span class=class data-probe=h.status.clone()>{h.status.clone()}</span></td>
                                            <td>{h.uptime_30d.clone()}</td>
                                            <td class="health-bars">{super::domains::uptime_bars(h.days)}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                        {(d.domains > d.health.len() as i64).then(|| view! {
                            <p><a href=format!("{base}/domains")>{format!("All {} domains", d.domains)}</a></p>
                        })}
                    </section>
                })}
                <section class="card">
                    <h2>"Getting started"</h2>
                    <ol class="steps">
                        <li>"Order a domain and pick a plan under " <a href=format!("{base}/domains")>"Domains"</a>"."</li>
                        <li>"Create the DNS records the domain page shows you."</li>
                        <li>"Add chat accounts and log in with any XMPP client."</li>
                    </ol>
                </section>
            </Shell>
        }
    })
}

fn article(role: &str) -> String {
    match role {
        "owner" => "an owner".into(),
        other => format!("a {other}"),
    }
}

/// A section of the organisation that holds nothing yet (domains, billing, API keys).
pub fn section(
    ctx: PageCtx,
    heading: &'static str,
    empty_title: &'static str,
    text: &'static str,
) -> String {
    render(move || {
        view! {
            <Shell ctx=ctx>
                <h1>{heading}</h1>
                <Empty title=empty_title>
                    <p>{text}</p>
                </Empty>
            </Shell>
        }
    })
}

#[derive(Clone, Debug, Default)]
pub struct MemberView {
    pub user_id: String,
    pub email: String,
    pub role: String,
    pub joined: String,
    pub is_self: bool,
}

#[derive(Clone, Debug, Default)]
pub struct PendingInvite {
    pub id: String,
    pub email: String,
    pub role: String,
    pub expires: String,
}

#[derive(Clone, Debug, Default)]
pub struct TeamView {
    pub org_id: String,
    pub org_name: String,
    /// Owners manage the team; members only see it.
    pub can_manage: bool,
    pub members: Vec<MemberView>,
    pub invitations: Vec<PendingInvite>,
    pub invite_email: String,
    pub invite_role: String,
    pub errors: FormErrors,
}

pub fn team(ctx: PageCtx, t: TeamView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let base = format!("/o/{}/team", t.org_id);
        let manage = t.can_manage;
        let rows = t
            .members
            .iter()
            .map(|m| {
                let remove = (manage && !m.is_self).then(|| {
                    view! {
                        <ActionButton action=format!("{base}/members/{}/remove", m.user_id) csrf=csrf.clone()
                            label="Remove" class="button button-danger button-small"/>
                    }
                });
                view! {
                    <tr>
                        <td>{m.email.clone()} {m.is_self.then_some(" (you)")}</td>
                        <td>{m.role.clone()}</td>
                        <td>{m.joined.clone()}</td>
                        <td>{remove}</td>
                    </tr>
                }
            })
            .collect_view();
        let invites = (!t.invitations.is_empty()).then(|| {
            view! {
                <h2>"Pending invitations"</h2>
                <table class="table">
                    <thead><tr><th scope="col">"Email"</th><th scope="col">"Role"</th><th scope="col">"Expires"</th><th scope="col"><span class="sr-only">"Actions"</span></th></tr></thead>
                    <tbody>
                        {t.invitations.iter().map(|i| view! {
                            <tr>
                                <td>{i.email.clone()}</td>
                                <td>{i.role.clone()}</td>
                                <td>{i.expires.clone()}</td>
                                <td>{manage.then(|| view! {
                                    <ActionButton action=format!("{base}/invitations/{}/revoke", i.id) csrf=csrf.clone()
                                        label="Revoke" class="button button-quiet button-small"/>
                                })}</td>
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }
        });
        let invite_form = manage.then(|| {
            let role = t.invite_role.clone();
            let role_error = t.errors.get("role").is_some();
            view! {
                <section class="card">
                    <h2>"Invite someone"</h2>
                    <FormAlert errors=t.errors.clone()/>
                    <form method="post" action=format!("{base}/invite") class="form-row">
                        <Csrf token=csrf.clone()/>
                        <Field name="email" label="Email" kind="email" value=t.invite_email.clone() errors=t.errors.clone() required=true/>
                        <div class="field" class:has-error=role_error>
                            <label for="f-role">"Role"</label>
                            <select id="f-role" name="role" aria-invalid=role_error.then_some("true") aria-describedby=role_error.then_some("f-role-error")>
                                <option value="member" selected=role != "owner">"Member"</option>
                                <option value="owner" selected=role == "owner">"Owner"</option>
                            </select>
                            <FieldError name="role" errors=t.errors.clone()/>
                        </div>
                        <button type="submit" class="button" id="invite-submit">"Send invitation"</button>
                    </form>
                    <p class="hint">"Owners can manage billing and the team; members manage domains and chat accounts."</p>
                </section>
            }
        });
        view! {
            <Shell ctx=ctx>
                <h1>"Team"</h1>
                <p class="muted">{format!("People with access to {}.", t.org_name)}</p>
                <table class="table">
                    <thead><tr><th scope="col">"Email"</th><th scope="col">"Role"</th><th scope="col">"Joined"</th><th scope="col"><span class="sr-only">"Actions"</span></th></tr></thead>
                    <tbody>{rows}</tbody>
                </table>
                {invites}
                {invite_form}
            </Shell>
        }
    })
}

#[derive(Clone, Debug, Default)]
pub struct AccountView {
    pub email: String,
    pub verified: bool,
    pub created: String,
    pub errors: FormErrors,
}

pub fn account(ctx: PageCtx, a: AccountView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        view! {
            <Shell ctx=ctx>
                <h1>"Account"</h1>
                <section class="card">
                    <h2>"Email"</h2>
                    <p><strong>{a.email.clone()}</strong>
                        {if a.verified { view! { <span class="badge badge-ok">"confirmed"</span> }.into_any() }
                         else { view! { <span class="badge badge-warn">"not confirmed"</span> }.into_any() }}
                    </p>
                    {(!a.verified).then(|| view! {
                        <ActionButton action="/account/verify/resend".into() csrf=csrf.clone() label="Send confirmation link again" class="button button-quiet" id="resend-verification"/>
                    })}
                    <p class="hint">{format!("Account created {}.", a.created)}</p>
                </section>
                <section class="card">
                    <h2>"Change password"</h2>
                    <FormAlert errors=a.errors.clone()/>
                    <form method="post" action="/account/password">
                        <Csrf token=csrf.clone()/>
                        <Field name="current_password" label="Current password" kind="password" errors=a.errors.clone() autocomplete="current-password" required=true/>
                        <Field name="new_password" label="New password" kind="password" errors=a.errors.clone() autocomplete="new-password" required=true
                            hint="At least 10 characters. Your other sessions are logged out."/>
                        <button type="submit" class="button" id="change-password-submit">"Change password"</button>
                    </form>
                </section>
            </Shell>
        }
    })
}

/// For a signed-in person who belongs to no organisation (their last one removed them).
pub fn no_org(ctx: PageCtx, errors: FormErrors) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        view! {
            <Shell ctx=ctx>
                <section class="narrow card">
                    <h1>"You are not in an organisation"</h1>
                    <p>"Ask an owner to invite you again, or start an organisation of your own."</p>
                    <FormAlert errors=errors.clone()/>
                    <form method="post" action="/orgs">
                        <Csrf token=csrf/>
                        <Field name="name" label="Organisation name" errors=errors required=true/>
                        <button type="submit" class="button" id="create-org-submit">"Create organisation"</button>
                    </form>
                </section>
            </Shell>
        }
    })
}
