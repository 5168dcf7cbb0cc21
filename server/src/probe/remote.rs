//! Probe locations elsewhere: `rookery probe --panel <url> --token <probe-token>`.
//!
//! The panel side is a small JSON API authenticated with the location's token:
//! `GET /api/probe/v1/assignment` hands out the schedule, the trust roots and the targets
//! (with their probe accounts), and `POST /api/probe/v1/results` takes results in batches.
//! The process side ([`run`]) fetches its assignment every 30 s, probes with the same
//! [`Runner`] as the panel (same offsets, so every location probes a domain in the same
//! round), and posts what finished each second, keeping results while the panel is
//! unreachable (up to a bound) and sending them later. The panel's round keeper then
//! decides each round by quorum across all active locations.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::{
    db::{self, StoredResult},
    runner::{Finished, RunTarget, Runner},
    tls_config_webpki, tls_config_with_pems,
};
use crate::state::AppState;

/// What a location is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub struct Assignment {
    /// The location's name, as the panel knows it.
    pub location: String,
    pub interval_secs: u64,
    pub timeout_secs: u64,
    pub concurrency: usize,
    /// PEM certificates to trust for the nodes' TLS; empty: the public web PKI.
    pub trust_roots_pem: Vec<String>,
    pub targets: Vec<AssignedTarget>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AssignedTarget {
    pub domain_id: String,
    pub domain: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
}

/// A batch of results from a location.
#[derive(Debug, Serialize, Deserialize)]
pub struct ResultBatch {
    pub results: Vec<WireResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireResult {
    pub domain_id: String,
    /// When the probe started, Unix seconds.
    pub at: i64,
    pub ok: bool,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    pub total_ms: i64,
    /// Milliseconds per stage.
    #[serde(default)]
    pub stages: BTreeMap<String, f64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub accepted: usize,
    /// Results refused, each with why (unknown domain, time out of range, bad stage).
    pub rejected: Vec<String>,
}

/// Results in one batch, at most.
pub const MAX_BATCH: usize = 2_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/probe/v1/assignment", get(assignment))
        .route("/api/probe/v1/results", post(results))
}

fn problem(status: StatusCode, detail: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "error": detail }).to_string(),
    )
        .into_response()
}

/// The location a request's bearer token belongs to.
async fn location(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<db::LocationRow, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(problem(
            StatusCode::UNAUTHORIZED,
            "send the probe token as `Authorization: Bearer <token>`",
        ));
    }
    match db::location_by_token(&state.db, token, state.clock.now(), &peer.ip().to_string()).await {
        Ok(Some(l)) => Ok(l),
        Ok(None) => {
            tracing::warn!(%peer, "a probe location presented an unknown or revoked token");
            Err(problem(
                StatusCode::UNAUTHORIZED,
                "this probe token is unknown or was revoked",
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "looking up a probe token failed");
            Err(problem(StatusCode::SERVICE_UNAVAILABLE, "try again later"))
        }
    }
}

async fn assignment(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let loc = match location(&state, &headers, peer).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let p = &state.settings.probe;
    if !p.enabled {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "monitoring is turned off on this panel (probe.enabled = false)",
        );
    }
    let built = async {
        let mut targets = Vec::new();
        for t in db::targets(&state.db).await? {
            let password = state
                .sealer
                .open(&db::password_context(&t.domain_id), &t.password_sealed)?;
            targets.push(AssignedTarget {
                domain_id: t.domain_id,
                domain: t.domain,
                host: t.host,
                port: t.port,
                username: t.username,
                password,
            });
        }
        let mut trust_roots_pem = Vec::new();
        for file in super::scheduler::trust_files(&state) {
            trust_roots_pem.push(
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?,
            );
        }
        anyhow::Ok(Assignment {
            location: loc.name.clone(),
            interval_secs: p.interval_secs.max(1),
            timeout_secs: p.timeout_secs,
            concurrency: p.concurrency,
            trust_roots_pem,
            targets,
        })
    }
    .await;
    match built {
        Ok(a) => ([(header::CACHE_CONTROL, "no-store")], Json(a)).into_response(),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "building a probe assignment failed"
            );
            problem(StatusCode::SERVICE_UNAVAILABLE, "try again later")
        }
    }
}

/// Checks a location's result; the reason it is refused otherwise.
pub fn check(
    r: &WireResult,
    known: &std::collections::HashSet<String>,
    now: i64,
) -> Result<(), String> {
    if !known.contains(&r.domain_id) {
        return Err(format!("{}: no such domain is monitored", r.domain_id));
    }
    if r.at < now - 3600 || r.at > now + 60 {
        return Err(format!(
            "{}: time {} is not within the last hour",
            r.domain_id, r.at
        ));
    }
    match (&r.ok, &r.stage) {
        (true, None) => {}
        (false, Some(s)) if super::Stage::from_name(s).is_some() => {}
        (true, Some(_)) => {
            return Err(format!(
                "{}: a passed probe has no failing stage",
                r.domain_id
            ));
        }
        (false, _) => {
            return Err(format!(
                "{}: a failed probe names its stage (connect, tls, auth, bind, ping, message or timeout)",
                r.domain_id
            ));
        }
    }
    if r.total_ms < 0 || r.stages.values().any(|ms| !ms.is_finite() || *ms < 0.0) {
        return Err(format!("{}: durations must be positive", r.domain_id));
    }
    Ok(())
}

async fn results(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<ResultBatch>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let loc = match location(&state, &headers, peer).await {
        Ok(l) => l,
        Err(r) => return r,
    };
    let Json(batch) = match body {
        Ok(b) => b,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    if batch.results.len() > MAX_BATCH {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("send at most {MAX_BATCH} results a batch"),
        );
    }
    let known: std::collections::HashSet<String> = match db::probed_domain_ids(&state.db).await {
        Ok(ids) => ids.into_iter().collect(),
        Err(e) => {
            tracing::error!(error = %e, "listing monitored domains failed");
            return problem(StatusCode::SERVICE_UNAVAILABLE, "try again later");
        }
    };
    let now = state.clock.now();
    let mut rows = Vec::new();
    let mut rejected = Vec::new();
    for r in batch.results {
        match check(&r, &known, now) {
            Ok(()) => rows.push(StoredResult {
                domain_id: r.domain_id,
                location: loc.name.clone(),
                at: r.at,
                ok: r.ok,
                stage: r.stage,
                error: r.error.map(|e| e.chars().take(500).collect()),
                total_ms: r.total_ms,
                stages: r.stages.into_iter().collect(),
            }),
            Err(why) => rejected.push(why),
        }
    }
    if let Err(e) = db::insert_results(&state.db, &rows, now).await {
        tracing::error!(error = %e, "storing a location's results failed");
        return problem(StatusCode::SERVICE_UNAVAILABLE, "try again later");
    }
    Json(BatchAnswer {
        accepted: rows.len(),
        rejected,
    })
    .into_response()
}

/// Options of `rookery probe`.
pub struct RemoteOptions {
    pub panel: String,
    pub token: SecretString,
    /// PEM file of the CA the panel's HTTPS certificate comes from (else the web PKI).
    pub panel_ca: Option<std::path::PathBuf>,
    /// PEM files to trust for the nodes' TLS instead of the roots the panel hands out (a
    /// location with its own CA bundle).
    pub trust_roots: Vec<std::path::PathBuf>,
}

/// The panel refused the token: the location was revoked (or never existed). Probing
/// stops, since nothing it measures would count.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the panel refused this location's token: {}", self.0)
    }
}

impl std::error::Error for Refused {}

/// An error answer from the panel; 401 becomes [`Refused`].
async fn panel_error(r: reqwest::Response) -> anyhow::Error {
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    let detail = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(text);
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::Error::new(Refused(detail))
    } else {
        anyhow::anyhow!("the panel answered {status}: {detail}")
    }
}

/// Results kept while the panel is unreachable; the oldest go first beyond this.
const MAX_BUFFERED: usize = 50_000;

/// Runs a remote probe location until stopped.
pub async fn run(o: RemoteOptions) -> anyhow::Result<()> {
    let base = o.panel.trim_end_matches('/').to_string();
    let http = http_client(o.panel_ca.as_deref())?;
    let fetch = |http: reqwest::Client| {
        let (base, token) = (base.clone(), o.token.clone());
        async move {
            let r = http
                .get(format!("{base}/api/probe/v1/assignment"))
                .bearer_auth(token.expose_secret())
                .send()
                .await
                .context("reaching the panel")?;
            if !r.status().is_success() {
                return Err(panel_error(r).await);
            }
            r.json::<Assignment>()
                .await
                .context("reading the assignment")
        }
    };
    // The first assignment must come: a wrong token or URL is an error at once.
    let mut current = fetch(http.clone()).await?;
    tracing::info!(
        location = current.location,
        targets = current.targets.len(),
        interval_secs = current.interval_secs,
        "probing for the panel at {base}"
    );
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Finished>();
    let mut runner = Runner::new(
        current.interval_secs,
        Duration::from_secs(current.timeout_secs),
        current.concurrency,
        done_tx.clone(),
    );
    let own_roots = if o.trust_roots.is_empty() {
        None
    } else {
        Some(super::tls_config_with_roots(&o.trust_roots)?)
    };
    let trust = |a: &Assignment| match &own_roots {
        Some(t) => Ok(t.clone()),
        None => trust(a),
    };
    let mut tls = trust(&current)?;
    let mut buffer: Vec<WireResult> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_fetch = std::time::Instant::now();
    loop {
        tick.tick().await;
        if last_fetch.elapsed() >= Duration::from_secs(30) {
            last_fetch = std::time::Instant::now();
            match fetch(http.clone()).await {
                Ok(next) => {
                    if (next.interval_secs, next.timeout_secs, next.concurrency)
                        != (
                            current.interval_secs,
                            current.timeout_secs,
                            current.concurrency,
                        )
                    {
                        runner = Runner::new(
                            next.interval_secs,
                            Duration::from_secs(next.timeout_secs),
                            next.concurrency,
                            done_tx.clone(),
                        );
                    }
                    match trust(&next) {
                        Ok(t) => tls = t,
                        Err(e) => {
                            tracing::error!(error = format!("{e:#}"), "the panel's trust roots")
                        }
                    }
                    current = next;
                }
                Err(e) if e.is::<Refused>() => return Err(e),
                Err(e) => tracing::warn!(
                    error = format!("{e:#}"),
                    "refreshing the assignment failed; probing the last one"
                ),
            }
        }
        let now = unix_now();
        for t in &current.targets {
            if runner.is_due(&t.domain_id, now) {
                runner.launch(
                    RunTarget {
                        domain_id: t.domain_id.clone(),
                        domain: t.domain.clone(),
                        host: t.host.clone(),
                        port: t.port,
                        username: t.username.clone(),
                        password: SecretString::from(t.password.clone()),
                    },
                    tls.clone(),
                    now,
                );
            }
        }
        while let Ok(f) = done_rx.try_recv() {
            buffer.push(wire(&f));
        }
        if buffer.len() > MAX_BUFFERED {
            let drop = buffer.len() - MAX_BUFFERED;
            tracing::warn!(
                dropped = drop,
                "the panel is unreachable: dropping the oldest results"
            );
            buffer.drain(..drop);
        }
        if buffer.is_empty() {
            continue;
        }
        let send: Vec<WireResult> = buffer.iter().take(MAX_BATCH).cloned().collect();
        match post_batch(&http, &base, &o.token, send).await {
            Ok(answer) => {
                buffer.drain(..answer.0);
                for why in answer.1 {
                    tracing::warn!(reason = why, "the panel refused a result");
                }
            }
            Err(e) if e.is::<Refused>() => return Err(e),
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                buffered = buffer.len(),
                "posting results failed; keeping them"
            ),
        }
    }
}

/// Posts a batch; (how many were taken off the buffer, refusals).
async fn post_batch(
    http: &reqwest::Client,
    base: &str,
    token: &SecretString,
    batch: Vec<WireResult>,
) -> anyhow::Result<(usize, Vec<String>)> {
    let n = batch.len();
    let r = http
        .post(format!("{base}/api/probe/v1/results"))
        .bearer_auth(token.expose_secret())
        .json(&ResultBatch { results: batch })
        .send()
        .await
        .context("reaching the panel")?;
    if !r.status().is_success() {
        return Err(panel_error(r).await);
    }
    let answer: BatchAnswer = r.json().await.context("reading the panel's answer")?;
    Ok((n, answer.rejected))
}

fn wire(f: &Finished) -> WireResult {
    let r = &f.result;
    WireResult {
        domain_id: f.domain_id.clone(),
        at: f.at,
        ok: r.ok,
        stage: r.stage_name(),
        error: r.error.clone(),
        total_ms: r.total_ms(),
        stages: r.stage_ms().collect(),
    }
}

fn trust(a: &Assignment) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    if a.trust_roots_pem.is_empty() {
        Ok(tls_config_webpki())
    } else {
        tls_config_with_pems(&a.trust_roots_pem)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// HTTPS to the panel with the web PKI, or the given CA; plain HTTP works for loopback.
fn http_client(panel_ca: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let tls = match panel_ca {
        Some(file) => super::tls_config_with_roots(&[file])?,
        None => tls_config_webpki(),
    };
    let mut tls = (*tls).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("rookery-probe/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("building the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(ok: bool, stage: Option<&str>) -> WireResult {
        WireResult {
            domain_id: "d1".into(),
            at: 1_000,
            ok,
            stage: stage.map(Into::into),
            error: None,
            total_ms: 12,
            stages: BTreeMap::from([("connect".to_string(), 1.5)]),
        }
    }

    #[test]
    fn results_are_checked_before_they_count() {
        let known = std::collections::HashSet::from(["d1".to_string()]);
        assert_eq!(check(&result(true, None), &known, 1_000), Ok(()));
        assert_eq!(check(&result(false, Some("tls")), &known, 1_000), Ok(()));
        let mut other = result(true, None);
        other.domain_id = "d2".into();
        assert!(
            check(&other, &known, 1_000)
                .unwrap_err()
                .contains("no such domain")
        );
        assert!(
            check(&result(true, None), &known, 1_000 + 3_601).is_err(),
            "too old"
        );
        assert!(
            check(&result(true, None), &known, 1_000 - 61).is_err(),
            "from the future"
        );
        assert!(
            check(&result(false, None), &known, 1_000)
                .unwrap_err()
                .contains("names its stage")
        );
        assert!(check(&result(false, Some("dns")), &known, 1_000).is_err());
        assert!(check(&result(true, Some("tls")), &known, 1_000).is_err());
        let mut negative = result(true, None);
        negative.stages.insert("auth".into(), f64::NAN);
        assert!(check(&negative, &known, 1_000).is_err());
    }

    #[test]
    fn a_finished_probe_goes_over_the_wire_with_its_stages() {
        let f = Finished {
            domain_id: "d1".into(),
            domain: "example.org".into(),
            at: 5,
            result: crate::probe::ProbeResult {
                ok: false,
                failed_stage: Some(crate::probe::Stage::Auth),
                during: Some(crate::probe::Stage::Auth),
                error: Some("not-authorized".into()),
                stages: vec![(crate::probe::Stage::Connect, Duration::from_millis(2))],
                total: Duration::from_millis(30),
            },
        };
        let w = wire(&f);
        assert_eq!(
            (w.at, w.ok, w.stage.as_deref(), w.total_ms),
            (5, false, Some("auth"), 30)
        );
        assert_eq!(w.stages.get("connect"), Some(&2.0));
        let back: WireResult = serde_json::from_str(&serde_json::to_string(&w).unwrap()).unwrap();
        assert_eq!(back.error.as_deref(), Some("not-authorized"));
    }
}
