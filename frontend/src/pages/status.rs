//! A domain's public status page, `/status/<domain>`: a standalone document for anyone,
//! without the panel's navigation or anything about the signed-in person, built around the
//! domain page's [`UptimeCard`]. Its one stylesheet is the panel's; no script, no inline
//! style (the panel's CSP forbids both).

use leptos::prelude::*;

use super::domains::{UptimeCard, UptimeView};
use crate::{STYLESHEET_PATH, render};

/// What the public status page shows.
#[derive(Clone, Debug, Default)]
pub struct StatusView {
    /// The domain as people read it (Unicode labels).
    pub domain: String,
    /// A public view: steps, no error texts.
    pub uptime: UptimeView,
}

/// The status page of a domain whose team made it public.
pub fn page(v: StatusView) -> String {
    let title = format!("{} status", v.domain);
    render(move || {
        view! {
            <PublicShell title=title>
                <h1 class="status-domain">{v.domain.clone()}</h1>
                <p class="muted">{format!("The chat service of {}, as a robot sees it that logs in to it regularly, the way a chat app does: connect, TLS, log in, send a message.", v.domain)}</p>
                <UptimeCard uptime=v.uptime public=true/>
                <p class="hint">"Times are UTC. Days without a bar had no checks."</p>
            </PublicShell>
        }
    })
}

/// One page for every address without a status page: a domain that is not hosted here,
/// not public, or not running, alike, so the answer tells nobody which domains exist.
pub fn not_found() -> String {
    render(|| {
        view! {
            <PublicShell title="No status page here".to_string()>
                <h1>"No status page here"</h1>
                <p>"There is no public status page at this address. Check the domain name, or ask the people who run the chat service."</p>
            </PublicShell>
        }
    })
}

/// The bare document: the provider's name at the top, the content, no links into the panel.
#[component]
fn PublicShell(title: String, children: Children) -> impl IntoView {
    view! {
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <meta name="robots" content="noindex"/>
                <title>{title}</title>
                <link rel="stylesheet" href=STYLESHEET_PATH/>
            </head>
            <body class="status-public">
                <header class="site-header">
                    <span class="brand"><span class="brand-mark" aria-hidden="true">"◆"</span>" Rookery"</span>
                    <span class="muted small">"Service status"</span>
                </header>
                <main id="main" data-page="status" class="status-main">
                    {children()}
                </main>
                <footer class="site-footer">
                    <p>"Status page of a chat service hosted with Rookery."</p>
                </footer>
            </body>
        </html>
    }
}
