//! One module per area of the panel: public pages (landing, sign-up, log-in, password
//! reset, invitations), a customer organisation's pages, and the platform admin's pages.

pub mod admin;
pub mod alerts;
pub mod api;
pub mod billing;
pub mod dns;
pub mod domain_settings;
pub mod domains;
pub mod nodes;
pub mod org;
pub mod public;
pub mod status;
pub mod webhooks;

use leptos::prelude::*;

use crate::{PageCtx, Shell, render};

/// A plan as the landing page and the admin list show it.
#[derive(Clone, Debug, Default)]
pub struct PlanView {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Price per month in the currency's minor unit (cents).
    pub price_cents: i64,
    pub currency: String,
    pub max_accounts: i64,
    pub max_sessions: i64,
    pub storage_mb: i64,
    pub upload_mb: i64,
    pub archive_days: i64,
    /// Days an offline message waits for its recipient; None: the node's default.
    pub offline_days: Option<i64>,
    /// Upload (XEP-0363) and group chat (XEP-0045) limits; None: the node's default.
    /// The largest file and one account's uploads in MiB, days a file is kept.
    pub upload_max_file_mb: Option<i64>,
    pub upload_account_mb: Option<i64>,
    pub upload_retention_days: Option<i64>,
    pub max_rooms: Option<i64>,
    pub max_room_occupants: Option<i64>,
    pub stripe_price_id: Option<String>,
    pub public: bool,
    /// Node labels the plan's domains are placed by (name → value); empty: any node.
    pub node_labels: std::collections::BTreeMap<String, String>,
}

impl PlanView {
    /// The node labels as typed and shown: `region=eu-west, tier=gold`.
    pub fn node_labels_text(&self) -> String {
        self.node_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl PlanView {
    /// `Free`, or the price with its currency: `EUR 4.00 / month`.
    pub fn price_label(&self) -> String {
        if self.price_cents == 0 {
            "Free".into()
        } else {
            format!(
                "{} {}.{:02} / month",
                self.currency.to_uppercase(),
                self.price_cents / 100,
                self.price_cents % 100
            )
        }
    }
}

/// A page with a heading, a paragraph and an optional link: confirmations, errors, 404.
pub fn message(
    ctx: PageCtx,
    heading: &'static str,
    text: String,
    link: Option<(String, &'static str)>,
) -> String {
    render(move || {
        view! {
            <Shell ctx=ctx>
                <section class="narrow card">
                    <h1>{heading}</h1>
                    <p>{text}</p>
                    {link.map(|(href, label)| view! { <p><a class="button" href=href>{label}</a></p> })}
                </section>
            </Shell>
        }
    })
}
