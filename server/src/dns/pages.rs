//! The DNS page of a domain (`/o/{org_id}/domains/{domain_id}/dns`) and its "Check DNS"
//! action, for members of the domain's organisation; anyone else gets a 404.
//!
//! The check's results are not kept: the POST answers with the page and its verdicts.

use axum::{
    Router,
    extract::{Path, State},
    response::Html,
    routing::{get, post},
};
use rookery_frontend::pages::dns::{self as page, DnsCheckView, DnsPageView, DnsRecordView};

use super::{DomainDns, check, expected_records};
use crate::{
    domains::db::{self as domains, DomainRow},
    error::{AppError, AppResult},
    orgs::OrgAccess,
    pages::ctx,
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/o/{org_id}/domains/{domain_id}/dns", get(show_dns))
        .route("/o/{org_id}/domains/{domain_id}/dns/check", post(check_dns))
}

/// The organisation's domain, unless deleted; a 404 for anything else.
async fn domain_of(state: &AppState, access: &OrgAccess, id: &str) -> AppResult<DomainRow> {
    match domains::get(&state.db, id).await? {
        Some(d) if d.org_id == access.org.id.0 && d.state != "deleted" => Ok(d),
        _ => Err(AppError::NotFound),
    }
}

/// The records of a stored domain (stored domains are valid, so an error is a bug).
fn records_of(state: &AppState, d: &DomainRow) -> AppResult<DomainDns> {
    expected_records(&d.domain, &state.settings.dns).map_err(|e| {
        AppError::Internal(anyhow::Error::new(e).context("the DNS records of a stored domain"))
    })
}

async fn render(
    state: &AppState,
    access: &OrgAccess,
    d: &DomainRow,
    dns: DomainDns,
    checked: Option<Result<Vec<check::RecordCheck>, check::CheckError>>,
) -> AppResult<Html<String>> {
    let (mut verdicts, check_error) = match checked {
        Some(Ok(v)) => (v.into_iter().map(Some).collect(), None),
        Some(Err(e)) => (Vec::new(), Some(e.to_string())),
        None => (Vec::new(), None),
    };
    verdicts.resize(dns.records.len(), None);
    let records = dns
        .records
        .iter()
        .zip(verdicts)
        .map(|(r, c)| DnsRecordView {
            owner: r.owner.clone(),
            kind: r.kind().into(),
            value: r.value(),
            ttl: r.ttl,
            why: r.why.clone(),
            check: c.map(|c| DnsCheckView {
                pass: c.pass,
                found: c.found,
                note: c.note,
            }),
        })
        .collect();
    let zone_file = dns
        .records
        .iter()
        .map(|r| r.zone_line())
        .collect::<Vec<_>>()
        .join("\n");
    let ctx = ctx(
        state,
        &access.signed_in.visitor,
        format!("DNS of {}", d.domain),
        "domain-dns",
        Some(&access.org),
        None,
    )
    .await?;
    Ok(Html(page::page(
        ctx,
        access.org.id.0.clone(),
        DnsPageView {
            domain_id: d.id.clone(),
            domain: d.domain.clone(),
            stable_name: dns.stable_name,
            records,
            zone_file,
            resolver: match state.settings.dns.resolver {
                Some(addr) => format!("the DNS server at {addr}"),
                None => "the panel's system resolver".into(),
            },
            check_error,
        },
    )))
}

async fn show_dns(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Html<String>> {
    let d = domain_of(&state, &access, &id).await?;
    let dns = records_of(&state, &d)?;
    render(&state, &access, &d, dns, None).await
}

async fn check_dns(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
) -> AppResult<Html<String>> {
    let d = domain_of(&state, &access, &id).await?;
    let dns = records_of(&state, &d)?;
    let result = check::check(&dns.records, &state.settings.dns).await;
    match &result {
        Ok(v) => tracing::info!(
            domain = d.domain,
            org = access.org.id.0,
            passed = v.iter().filter(|c| c.pass).count(),
            of = v.len(),
            "DNS checked"
        ),
        Err(e) => tracing::warn!(domain = d.domain, error = %e, "DNS check impossible"),
    }
    render(&state, &access, &d, dns, Some(result)).await
}
