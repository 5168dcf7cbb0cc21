//! The page shell: document head, header with the signed-in person's navigation, the flash
//! message, and `<main>` with the page's stable `data-page` name.

use leptos::prelude::*;

use crate::{NavUser, PageCtx, SCRIPT_PATH, STYLESHEET_PATH, widgets::ActionButton};

/// Wraps a page's content in the document and the navigation.
#[component]
pub fn Shell(ctx: PageCtx, children: Children) -> impl IntoView {
    let title = if ctx.title.is_empty() {
        "Rookery".to_string()
    } else {
        format!("{} · Rookery", ctx.title)
    };
    let signed_in = ctx.user.is_some();
    let refresh = ctx.refresh.clone();
    let nav = ctx
        .user
        .clone()
        .map(|u| view! { <SideNav user=u page=ctx.page/> });
    let verify_banner = ctx
        .user
        .as_ref()
        .filter(|u| !u.email_verified && !u.is_admin)
        .map(|_| {
            view! {
                <div class="alert alert-info" role="status">
                    "Please confirm your email address: we sent you a link. "
                    <a href="/account">"Send it again"</a>
                </div>
            }
        });
    let flash = ctx.flash.clone().map(|f| {
        let role = if f.kind == crate::FlashKind::Error {
            "alert"
        } else {
            "status"
        };
        view! { <div class=format!("alert alert-{}", f.kind.as_str()) role=role>{f.text}</div> }
    });
    let header_right = match &ctx.user {
        Some(u) => view! {
            <div class="header-user">
                <span class="who">{u.email.clone()}</span>
                <ActionButton action="/logout".into() csrf=ctx.csrf.clone() label="Log out" class="button button-quiet" id="logout"/>
            </div>
        }
        .into_any(),
        None => view! {
            <nav class="header-links" aria-label="Account">
                <a href="/login">"Log in"</a>
                <a class="button" href="/signup">"Sign up"</a>
            </nav>
        }
        .into_any(),
    };
    let home = match &ctx.user {
        Some(u) => u
            .current_org
            .as_ref()
            .or(u.orgs.first())
            .map(|o| format!("/o/{}", o.id))
            .unwrap_or_else(|| {
                if u.is_admin {
                    "/admin/tenants".into()
                } else {
                    "/dashboard".into()
                }
            }),
        None => "/".into(),
    };
    view! {
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <title>{title}</title>
                {refresh.map(|(secs, url)| view! { <meta http-equiv="refresh" content=format!("{secs}; url={url}")/> })}
                <link rel="stylesheet" href=STYLESHEET_PATH/>
                <script src=SCRIPT_PATH defer></script>
            </head>
            <body class:with-nav=signed_in>
                <a class="skip-link" href="#main">"Skip to content"</a>
                <header class="site-header">
                    <a class="brand" href=home>
                        <span class="brand-mark" aria-hidden="true">"◆"</span>
                        " Rookery"
                    </a>
                    {header_right}
                </header>
                <div class="frame">
                    {nav}
                    <main id="main" data-page=ctx.page tabindex="-1">
                        {verify_banner}
                        {flash}
                        {children()}
                    </main>
                </div>
                <footer class="site-footer">
                    <p>"Rookery — managed XMPP hosting for your own domain. " <a href="/docs/api">"REST API reference"</a></p>
                </footer>
            </body>
        </html>
    }
}

/// The navigation of a signed-in person: their organisation's sections, their account,
/// and for platform admins the operator's sections.
#[component]
fn SideNav(user: NavUser, page: &'static str) -> impl IntoView {
    let link = move |href: String, label: &'static str, name: &'static str| {
        let current = (page == name).then_some("page");
        view! { <li><a href=href aria-current=current>{label}</a></li> }
    };
    let org_links = user
        .current_org
        .clone()
        .or_else(|| user.orgs.first().cloned())
        .map(|org| {
            let base = format!("/o/{}", org.id);
            view! {
                <p class="nav-heading">{org.name.clone()}</p>
                <ul>
                    {link(base.clone(), "Dashboard", "dashboard")}
                    {link(format!("{base}/domains"), "Domains", "domains")}
                    {link(format!("{base}/billing"), "Billing", "billing")}
                    {link(format!("{base}/alerts"), "Alerts", "alerts")}
                    {link(format!("{base}/webhooks"), "Webhooks", "webhooks")}
                    {link(format!("{base}/api-keys"), "API keys", "api-keys")}
                    {link(format!("{base}/team"), "Team", "team")}
                </ul>
            }
        });
    let switcher = (user.orgs.len() > 1).then(|| {
        let current = user.current_org.clone();
        view! {
            <p class="nav-heading">"Organisations"</p>
            <ul>
                {user
                    .orgs
                    .iter()
                    .map(|o| {
                        let here = (current.as_ref() == Some(o)).then_some("true");
                        view! { <li><a href=format!("/o/{}", o.id) aria-current=here>{o.name.clone()}</a></li> }
                    })
                    .collect_view()}
            </ul>
        }
    });
    let admin = user.is_admin.then(|| {
        view! {
            <p class="nav-heading">"Platform"</p>
            <ul>
                {link("/admin/nodes".into(), "Nodes", "admin-nodes")}
                {link("/admin/uptime".into(), "Uptime", "admin-uptime")}
                {link("/admin/tenants".into(), "Tenants", "admin-tenants")}
                {link("/admin/plans".into(), "Plans", "admin-plans")}
                {link("/admin/outbox".into(), "Outbox", "admin-outbox")}
                {link("/admin/deliveries".into(), "Deliveries", "admin-deliveries")}
                {link("/admin/api-keys".into(), "API keys", "admin-api-keys")}
                {link("/admin/audit".into(), "Audit log", "admin-audit")}
            </ul>
        }
    });
    view! {
        <nav class="side-nav" aria-label="Main">
            {org_links}
            {switcher}
            <p class="nav-heading">"You"</p>
            <ul>{link("/account".into(), "Account", "account")}</ul>
            {admin}
        </nav>
    }
}
