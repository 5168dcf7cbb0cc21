//! `/api/v1/domains/{domain_id}/dns`: the records the DNS page lists
//! ([`crate::dns::expected_records`]) and `POST …/dns/check`, the "Check DNS" button's
//! check ([`crate::dns::check::check`]): real look-ups through the configured resolver,
//! a verdict per record with what was found. Checks change nothing and are not kept, so
//! read-only keys may run them.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    auth::Principal,
    domains::{DnsRecord, visible_domain},
    problem::{ApiResult, Problem, ProblemBody},
};
use crate::{
    dns::{self, DomainDns},
    domains::db::DomainRow,
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/domains/{domain_id}/dns", get(get_dns))
        .route("/domains/{domain_id}/dns/check", post(check_dns))
}

/// What a domain needs in DNS.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DomainDnsRecords {
    pub domain_id: String,
    pub domain: String,
    /// The provider's name every record points at (`<label>.<provider zone>.`).
    pub stable_name: String,
    pub records: Vec<DnsRecord>,
    /// The records as zone-file lines.
    pub zone_file: String,
}

/// The verdict on one record.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DnsRecordCheck {
    #[serde(flatten)]
    pub record: DnsRecord,
    pub pass: bool,
    /// What DNS has there: `found SRV 0 5 5222 x.example.net.`, `timed out`…
    pub found: String,
    /// A remark on a pass, or a hint on a failure.
    pub note: Option<String>,
}

/// The result of a DNS check.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DnsCheck {
    pub domain_id: String,
    /// Unix seconds, UTC.
    pub checked_at: i64,
    /// Whether every record passed.
    pub pass: bool,
    pub records: Vec<DnsRecordCheck>,
}

/// The records of a stored domain (stored domains are valid, so an error is a bug).
fn records_of(state: &AppState, d: &DomainRow) -> ApiResult<DomainDns> {
    dns::expected_records(&d.domain, &state.settings.dns).map_err(|e| {
        anyhow::Error::new(e)
            .context("the DNS records of a stored domain")
            .into()
    })
}

/// Get a domain's DNS records
///
/// The records to create in the domain's zone, as the DNS page lists them.
#[utoipa::path(
    get,
    path = "/api/v1/domains/{domain_id}/dns",
    tag = "domains",
    operation_id = "get_domain_dns",
    params(("domain_id" = String, Path, description = "The domain's id")),
    responses((status = 200, description = "The records", body = DomainDnsRecords)),
)]
pub async fn get_dns(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
) -> ApiResult<Json<DomainDnsRecords>> {
    let d = visible_domain(&state, &who, &domain_id).await?;
    let dns = records_of(&state, &d)?;
    Ok(Json(DomainDnsRecords {
        domain_id: d.id.clone(),
        domain: d.domain.clone(),
        stable_name: dns.stable_name.clone(),
        zone_file: dns
            .records
            .iter()
            .map(|r| r.zone_line())
            .collect::<Vec<_>>()
            .join("\n"),
        records: dns.records.iter().map(DnsRecord::from).collect(),
    }))
}

/// Check a domain's DNS records
///
/// Looks every record up through the panel's resolver now and says per record whether it
/// is right and what was found. Read-only keys may check (nothing changes).
#[utoipa::path(
    post,
    path = "/api/v1/domains/{domain_id}/dns/check",
    tag = "domains",
    operation_id = "check_domain_dns",
    params(("domain_id" = String, Path, description = "The domain's id")),
    responses(
        (status = 200, description = "A verdict per record", body = DnsCheck),
        (status = 503, description = "`dns_check_unavailable`: the panel has no resolver to ask", body = ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn check_dns(
    State(state): State<AppState>,
    who: Principal,
    Path(domain_id): Path<String>,
) -> ApiResult<Json<DnsCheck>> {
    let d = visible_domain(&state, &who, &domain_id).await?;
    let dns = records_of(&state, &d)?;
    let verdicts = match dns::check::check(&dns.records, &state.settings.dns).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(domain = d.domain, error = %e, "DNS check impossible");
            return Err(Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "dns_check_unavailable",
                "The panel cannot check DNS right now (no resolver); try again later.",
            ));
        }
    };
    tracing::info!(
        domain = d.domain,
        passed = verdicts.iter().filter(|c| c.pass).count(),
        of = verdicts.len(),
        "DNS checked through the API"
    );
    let records: Vec<DnsRecordCheck> = dns
        .records
        .iter()
        .zip(verdicts)
        .map(|(r, c)| DnsRecordCheck {
            record: DnsRecord::from(r),
            pass: c.pass,
            found: c.found,
            note: c.note,
        })
        .collect();
    Ok(Json(DnsCheck {
        domain_id: d.id,
        checked_at: state.clock.now(),
        pass: records.iter().all(|r| r.pass),
        records,
    }))
}
