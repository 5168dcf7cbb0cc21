//! An organisation's billing: each domain's plan and payment status, the invoices from
//! Stripe, and the way to Stripe's customer portal (cards, cancellation).

use leptos::prelude::*;

use crate::{
    PageCtx, Shell, render,
    widgets::{ActionButton, Empty},
};

#[derive(Clone, Debug, Default)]
pub struct SubscriptionView {
    pub domain: String,
    pub plan: String,
    pub price: String,
    pub status: String,
}

#[derive(Clone, Debug, Default)]
pub struct InvoiceView {
    pub number: String,
    pub date: String,
    pub amount: String,
    pub status: String,
    pub url: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct BillingView {
    /// Billing on (a Stripe key is configured).
    pub enabled: bool,
    pub has_customer: bool,
    pub subscriptions: Vec<SubscriptionView>,
    pub invoices: Vec<InvoiceView>,
    pub error: Option<String>,
}

pub fn billing(ctx: PageCtx, org_id: String, b: BillingView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let intro = if b.enabled {
            "Each domain is a subscription, paid monthly through Stripe."
        } else {
            "Billing is off on this installation: every plan is free."
        };
        let subscriptions = if b.subscriptions.is_empty() {
            view! { <Empty title="Nothing to pay"><p>"This organisation has no domains yet."</p></Empty> }.into_any()
        } else {
            view! {
                <table class="table" id="subscriptions">
                    <thead><tr><th scope="col">"Domain"</th><th scope="col">"Plan"</th><th scope="col">"Price"</th><th scope="col">"Status"</th></tr></thead>
                    <tbody>
                        {b.subscriptions.into_iter().map(|s| view! {
                            <tr><td>{s.domain}</td><td>{s.plan}</td><td>{s.price}</td><td>{s.status}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
            }.into_any()
        };
        let invoices = b.enabled.then(|| {
            let list = if let Some(e) = b.error.clone() {
                view! { <div class="alert alert-error" role="alert">{e}</div> }.into_any()
            } else if b.invoices.is_empty() {
                view! { <p class="muted">"No invoices yet."</p> }.into_any()
            } else {
                view! {
                    <table class="table" id="invoices">
                        <thead><tr><th scope="col">"Invoice"</th><th scope="col">"Date"</th><th scope="col">"Amount"</th><th scope="col">"Status"</th></tr></thead>
                        <tbody>
                            {b.invoices.into_iter().map(|i| view! {
                                <tr>
                                    <td>{match i.url { Some(u) => view! { <a href=u>{i.number}</a> }.into_any(), None => view! { <span>{i.number}</span> }.into_any() }}</td>
                                    <td>{i.date}</td><td>{i.amount}</td><td>{i.status}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            };
            view! {
                <section class="card">
                    <h2>"Invoices"</h2>
                    {list}
                    {b.has_customer.then(|| view! {
                        <ActionButton action=format!("/o/{org_id}/billing/portal") csrf=csrf.clone() label="Manage payment and subscriptions on Stripe" class="button button-quiet" id="portal"/>
                    })}
                </section>
            }
        });
        view! {
            <Shell ctx=ctx>
                <h1>"Billing"</h1>
                <p class="muted">{intro}</p>
                {subscriptions}
                {invoices}
            </Shell>
        }
    })
}
