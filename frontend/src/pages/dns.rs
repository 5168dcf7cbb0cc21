//! A domain's DNS page: the records the customer creates at their DNS provider, each ready
//! to copy, and after "Check DNS" the same table with pass or fail and what DNS has now.
//!
//! Copying works without JavaScript (the CSP allows none inline): every name and value is a
//! read-only text field, selected with a click or the keyboard and copied as usual.

use leptos::prelude::*;

use crate::{PageCtx, Shell, render, widgets::Csrf};

/// One record to create.
#[derive(Clone, Debug, Default)]
pub struct DnsRecordView {
    /// Fully qualified, with the trailing dot.
    pub owner: String,
    /// `SRV` or `CNAME`.
    pub kind: String,
    pub value: String,
    pub ttl: u32,
    /// One line on what it is for.
    pub why: String,
    /// The verdict of the last check, on the page that answers "Check DNS".
    pub check: Option<DnsCheckView>,
}

#[derive(Clone, Debug, Default)]
pub struct DnsCheckView {
    pub pass: bool,
    /// What DNS has there: `found SRV 0 5 5222 …`, `no such name (NXDOMAIN)`, `timed out`.
    pub found: String,
    pub note: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct DnsPageView {
    pub domain_id: String,
    /// As the customer knows it (may be Unicode).
    pub domain: String,
    /// The per-domain name in the provider's zone the records point at.
    pub stable_name: String,
    pub records: Vec<DnsRecordView>,
    /// All records as zone-file lines.
    pub zone_file: String,
    /// Whom "Check DNS" asks, for people: an address or "your system's resolver".
    pub resolver: String,
    /// Set when the check could not run at all.
    pub check_error: Option<String>,
}

fn copy_field(value: String, label: String) -> impl IntoView {
    view! {
        <input class="copy" type="text" readonly=true value=value aria-label=label spellcheck="false"/>
    }
}

fn verdict(c: DnsCheckView) -> impl IntoView {
    let (class, text, attr) = if c.pass {
        ("badge badge-ok", "pass", "pass")
    } else {
        ("badge badge-err", "fail", "fail")
    };
    view! {
        <span class=class data-check=attr>{text}</span>
        <p class="small found" data-found="">{c.found}</p>
        {c.note.map(|n| view! { <p class="muted small">{n}</p> })}
    }
}

pub fn page(ctx: PageCtx, org_id: String, v: DnsPageView) -> String {
    render(move || {
        let csrf = ctx.csrf.clone();
        let base = format!("/o/{org_id}/domains/{}", v.domain_id);
        let checked = v.records.iter().any(|r| r.check.is_some());
        let failed = v
            .records
            .iter()
            .filter(|r| r.check.as_ref().is_some_and(|c| !c.pass))
            .count();
        let summary = if let Some(e) = v.check_error.clone() {
            Some(view! { <div class="alert alert-error" role="alert" id="dns-summary">{format!("DNS could not be checked: {e}")}</div> }.into_any())
        } else if checked && failed == 0 {
            Some(view! { <div class="alert alert-success" role="status" id="dns-summary">"All records are in place."</div> }.into_any())
        } else if checked {
            Some(view! { <div class="alert alert-error" role="alert" id="dns-summary">{format!("{failed} of {} records are missing or wrong: see below.", v.records.len())}</div> }.into_any())
        } else {
            None
        };
        let rows = v
            .records
            .iter()
            .cloned()
            .map(|r| {
                let check = r.check.map(verdict);
                let owner_label = format!("Name of the {} record", r.kind);
                let value_label = format!("Value of the {} record for {}", r.kind, r.owner);
                view! {
                    <tr data-record=r.owner.clone() data-type=r.kind.clone()>
                        <td>{copy_field(r.owner.clone(), owner_label)}<p class="muted small">{r.why}</p></td>
                        <td>{r.kind.clone()}</td>
                        <td>{copy_field(r.value, value_label)}<p class="muted small">{format!("TTL {} (any value works)", r.ttl)}</p></td>
                        {checked.then(|| view! { <td>{check}</td> })}
                    </tr>
                }
            })
            .collect_view();
        let zone_rows = v.zone_file.lines().count().max(2).to_string();
        view! {
            <Shell ctx=ctx>
                <p><a href=base.clone()>{format!("← {}", v.domain)}</a></p>
                <h1>"DNS records for " {v.domain.clone()}</h1>
                <p class="muted">
                    "Create these records where the DNS of your domain is managed, so that chat apps and other servers find your service. They point at "
                    <code id="stable-name">{v.stable_name.clone()}</code>
                    ", a name we keep pointing at the server that hosts your domain: you never need to change them."
                </p>
                {summary}
                <table class="table dns-records" id="dns-records">
                    <thead><tr>
                        <th scope="col">"Name"</th><th scope="col">"Type"</th><th scope="col">"Value"</th>
                        {checked.then(|| view! { <th scope="col">"Check"</th> })}
                    </tr></thead>
                    <tbody>{rows}</tbody>
                </table>
                <p class="muted small">
                    "Names and values end with a dot: they are complete. If your provider asks only for the part in front of your zone, leave the zone out (for example "
                    <code>"_xmpp-client._tcp.chat"</code>" in the zone "<code>"example.com"</code>")."
                </p>
                <form method="post" action=format!("{base}/dns/check") class="inline-form">
                    <Csrf token=csrf/>
                    <button type="submit" class="button" id="dns-check">"Check DNS"</button>
                </form>
                <p class="muted small">{format!("The check asks {}. New records can take as long as their TTL to show.", v.resolver)}</p>
                <section class="card">
                    <h2>"As a zone file"</h2>
                    <label for="zone-file">"For providers that import zone files:"</label>
                    <textarea id="zone-file" class="copy" readonly=true rows=zone_rows spellcheck="false">{v.zone_file.clone()}</textarea>
                </section>
            </Shell>
        }
    })
}
