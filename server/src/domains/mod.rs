//! An organisation's domains: adding one (placed on a node by the reconciler), following
//! its state, and its chat accounts, which live on the node that serves it.

pub mod db;
pub mod federation;
pub mod settings;
pub mod state;

use axum::http::StatusCode;
use axum::{
    Form, Router,
    extract::{Path, Query, State},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_common::control::{NewAccount, NewPassword};
use rookery_frontend::{
    FormErrors,
    pages::domains::{
        self as pages, AccountsView, DomainView, IncidentView, OrderForm, PlanCard, PlanChoice,
        UptimeView, UsageView,
    },
};
use serde::Deserialize;

use self::{db::DomainRow, state::DomainState};
use crate::{
    clock::format_ts,
    error::{AppError, AppResult},
    nodes::{client::CallError, db as nodes},
    orgs::OrgAccess,
    pages::{NoticeQuery, ctx},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/o/{org_id}/domains", get(show_list).post(add))
        .route("/o/{org_id}/domains/{domain_id}", get(show_detail))
        .route("/o/{org_id}/domains/{domain_id}/plan", post(change_plan))
        .merge(settings::router())
        .route(
            "/o/{org_id}/domains/{domain_id}/accounts",
            post(add_account),
        )
        .route(
            "/o/{org_id}/domains/{domain_id}/accounts/{username}/reset",
            post(reset_password),
        )
        .route(
            "/o/{org_id}/domains/{domain_id}/accounts/{username}/delete",
            get(confirm_delete).post(delete_account),
        )
}

/// A domain as typed, normalised with UTS-46 (IDNA): lower-case, Unicode labels, no
/// trailing dot, a valid host name with at least two labels, not an address.
pub fn normalize(input: &str) -> Result<String, &'static str> {
    let input = input.trim();
    if input.is_empty() {
        return Err("Enter a domain, e.g. chat.example.com.");
    }
    let domain = rookery_node::store::normalize_domain(input)
        .map_err(|_| "This is not a valid domain name. Use letters, digits, hyphens and dots, e.g. chat.example.com.")?;
    if !domain.contains('.')
        || domain.parse::<std::net::IpAddr>().is_ok()
        || domain.starts_with('[')
    {
        return Err("Use a full domain name with a dot, e.g. chat.example.com (not an address).");
    }
    if domain.len() > 253 {
        return Err("This domain is too long.");
    }
    Ok(domain)
}

/// Whether `domain` is one of `reserved` or under one of them.
pub fn is_reserved(domain: &str, reserved: &[String]) -> bool {
    reserved.iter().any(|r| {
        let r = r.trim().trim_matches('.').to_lowercase();
        !r.is_empty() && (domain == r || domain.ends_with(&format!(".{r}")))
    })
}

/// The reserved names: configured ones plus the provider's own (panel host, DNS zone).
fn reserved(state: &AppState) -> Vec<String> {
    let mut list = state.settings.ordering.reserved_domains.clone();
    if let Ok(url) = url::Url::parse(&state.settings.public_url)
        && let Some(host) = url.host_str()
        && host.contains('.')
        && host.parse::<std::net::IpAddr>().is_err()
    {
        list.push(host.to_string());
    }
    list.push(state.settings.dns.provider_zone.clone());
    list
}

fn view(d: &DomainRow) -> DomainView {
    DomainView {
        id: d.id.clone(),
        domain: d.domain.clone(),
        state: d.state.clone(),
        server: d
            .node_host
            .as_ref()
            .map(|h| format!("{h}:{}", d.node_c2s_port.unwrap_or(5222))),
        waiting: match d.state.as_str() {
            "pending_payment" => Some("This domain waits for its first payment.".into()),
            "provisioning" => Some(d.waiting_reason.clone().unwrap_or_else(|| {
                "Setting up the domain on its server; this takes a few seconds.".into()
            })),
            _ => None,
        },
        created: format_ts(d.created_at),
        can_pay: d.state == "pending_payment",
        billing_note: match (d.delete_after, d.grace_until) {
            (Some(at), _) => Some(format!(
                "The subscription has ended: the domain is suspended and its data will be deleted after {}.",
                format_ts(at)
            )),
            (None, Some(until)) => Some(format!(
                "The last payment failed. Unless it is paid, the domain is suspended after {}.",
                format_ts(until)
            )),
            _ => None,
        },
        usage: None,
        uptime: None,
        probe: None,
        status_page: None,
        plan: None,
    }
}

fn percent(up: i64, down: i64) -> String {
    if up + down == 0 {
        "no data".into()
    } else {
        let p = up as f64 * 100.0 / (up + down) as f64;
        if p >= 99.995 {
            "100 %".into()
        } else {
            format!("{p:.2} %")
        }
    }
}

fn lasted(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s => format!("{:.1} h", s as f64 / 3600.0),
    }
}

/// Who an uptime view is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The domain's team, on its page: the probe's error texts included.
    Team,
    /// Anyone, on the public status page: the failing steps only (an error text can name
    /// internal hosts), and a view even before the first check.
    Public,
}

/// The prober's view of a domain for its team; `None` before the first check.
async fn uptime(state: &AppState, d: &DomainRow) -> AppResult<Option<UptimeView>> {
    uptime_for(state, &d.id, Audience::Team).await
}

/// One bar per day for the 90 days up to `today`: (tooltip, colour class), oldest first,
/// from the daily roll-up `(day, up, down)`.
pub(crate) fn day_bars(days: &[(i64, i64, i64)], today: i64) -> Vec<(String, String)> {
    (today - 89..=today)
        .map(|day| {
            let date = format_ts(day * 86_400).chars().take(10).collect::<String>();
            match days.iter().find(|(x, _, _)| *x == day) {
                Some((_, u, dn)) if u + dn > 0 => {
                    let p = *u as f64 / (u + dn) as f64;
                    let class = crate::uptime::calc::day_class(Some(p));
                    (
                        format!("{date}: {} up ({u} of {} rounds)", percent(*u, *dn), u + dn),
                        class.to_string(),
                    )
                }
                _ => (format!("{date}: no data"), "nodata".to_string()),
            }
        })
        .collect()
}

/// The dashboard's domain health: the organisation's probed domains, worst first (open
/// incidents, failing, lowest 24-hour uptime), at most `limit`, each with its 30-day uptime
/// and 90 daily bars.
pub async fn health(
    state: &AppState,
    org_id: &str,
    limit: usize,
) -> AppResult<Vec<rookery_frontend::pages::org::DomainHealth>> {
    use crate::probe::db as probes;
    let worst = probes::org_worst(&state.db, org_id, limit).await?;
    let today = state.clock.now().div_euclid(86_400);
    let mut out = Vec::new();
    for (id, domain, s) in worst {
        let days = probes::daily(&state.db, &id, today - 90, today).await?;
        let (up, down) = days
            .iter()
            .filter(|(day, _, _)| *day > today - 30)
            .fold((0, 0), |a, (_, u, dn)| (a.0 + u, a.1 + dn));
        out.push(rookery_frontend::pages::org::DomainHealth {
            id,
            domain,
            status: match (s.incident, s.up) {
                (true, _) => "incident",
                (false, true) => "up",
                (false, false) => "down",
            }
            .into(),
            uptime_30d: percent(up, down),
            days: day_bars(&days, today),
        });
    }
    Ok(out)
}

/// The prober's view of a domain: status, uptime windows, 90 daily bars, incidents.
pub async fn uptime_for(
    state: &AppState,
    domain_id: &str,
    audience: Audience,
) -> AppResult<Option<UptimeView>> {
    use crate::probe::db as probes;
    let now = state.clock.now();
    let public = audience == Audience::Public;
    let last = probes::latest(&state.db, domain_id).await?;
    if last.is_none() && !public {
        return Ok(None);
    }
    let today = now.div_euclid(86_400);
    let days = probes::daily(&state.db, domain_id, today - 90, today).await?;
    let window = |n: i64| {
        let (up, down) = days
            .iter()
            .filter(|(day, _, _)| *day > today - n)
            .fold((0, 0), |a, (_, u, dn)| (a.0 + u, a.1 + dn));
        percent(up, down)
    };
    let (up24, down24) = probes::counts_since(&state.db, domain_id, now - 86_400).await?;
    let (up7, down7) = probes::counts_since(&state.db, domain_id, now - 7 * 86_400).await?;
    let bars = day_bars(&days, today);
    let incidents = probes::incidents(&state.db, domain_id, 20)
        .await?
        .into_iter()
        .map(|i| IncidentView {
            started: format_ts(i.started_at),
            ended: i
                .ended_at
                .map(format_ts)
                .unwrap_or_else(|| "ongoing".into()),
            duration: lasted(i.ended_at.unwrap_or(now) - i.started_at),
            stage: match i.error {
                Some(e) if !public => format!("{}: {e}", i.stage),
                _ => i.stage,
            },
        })
        .collect();
    let (status, detail) = match last {
        None => (
            "unknown",
            "This domain has not been checked yet.".to_string(),
        ),
        Some(last) if last.ok => (
            "up",
            format!(
                "Last check {} ago: a full login took {} ms.",
                lasted(now - last.at),
                last.total_ms
            ),
        ),
        Some(last) if public => (
            "down",
            format!(
                "Last check {} ago failed at the {} step.",
                lasted(now - last.at),
                last.stage.unwrap_or_default()
            ),
        ),
        Some(last) => (
            "down",
            format!(
                "Last check {} ago failed at the {} step: {}.",
                lasted(now - last.at),
                last.stage.unwrap_or_default(),
                last.error.unwrap_or_default()
            ),
        ),
    };
    Ok(Some(UptimeView {
        status: status.into(),
        detail,
        windows: vec![
            ("last 24 hours".into(), percent(up24, down24)),
            ("7 days".into(), percent(up7, down7)),
            ("30 days".into(), window(30)),
            ("90 days".into(), window(90)),
        ],
        days: bars,
        incidents,
    }))
}

fn bytes_label(n: i64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.0} kB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// A domain's usage as its nodes reported it: the daily roll-up of the last 30 days.
#[derive(Debug, Clone)]
pub struct UsageFigures {
    /// Days since the Unix epoch, UTC.
    pub today: i64,
    /// Oldest first; days without a report are absent.
    pub days: Vec<nodes::DayUsage>,
    /// The latest reported day.
    pub last: nodes::DayUsage,
}

impl UsageFigures {
    /// Whether the latest report is from today (else the day's figures are 0).
    pub fn is_today(&self) -> bool {
        self.last.day == self.today
    }
}

/// Today's figures and the last 30 days (`None` before the first report), as the domain
/// page's usage card and the REST API show them.
pub async fn usage_figures(state: &AppState, d: &DomainRow) -> AppResult<Option<UsageFigures>> {
    let today = state.clock.now().div_euclid(86_400);
    let mut days = nodes::daily_usage(&state.db, &d.domain, today, 30).await?;
    // Usage is kept by name, and a name can be ordered again after its domain was deleted:
    // then the days before this domain was ordered belong to the earlier one.
    if db::had_predecessor(&state.db, d).await? {
        let ordered = d.created_at.div_euclid(86_400);
        days.retain(|u| u.day >= ordered);
    }
    Ok(days
        .last()
        .cloned()
        .map(|last| UsageFigures { today, days, last }))
}

/// Today's figures and the last 30 days, from the daily roll-up of the nodes' reports.
async fn usage(state: &AppState, d: &DomainRow) -> AppResult<Option<UsageView>> {
    let Some(figures) = usage_figures(state, d).await? else {
        return Ok(None);
    };
    let is_today = figures.is_today();
    let UsageFigures { today, days, last } = figures;
    let label = |day: i64| format_ts(day * 86_400).chars().take(10).collect::<String>();
    let series = |f: fn(&nodes::DayUsage) -> i64, unit: &str| -> Vec<(String, i64)> {
        (today - 29..=today)
            .map(|day| {
                let v = days.iter().find(|u| u.day == day).map(f).unwrap_or(0);
                (format!("{}: {v} {unit}", label(day)), v)
            })
            .collect()
    };
    Ok(Some(UsageView {
        accounts: last.accounts,
        sessions_now: if is_today { last.sessions } else { 0 },
        peak_today: if is_today { last.peak_sessions } else { 0 },
        messages_today: if is_today { last.messages } else { 0 },
        storage: bytes_label(last.storage_bytes),
        updated: format_ts(last.updated_at),
        messages_per_day: series(|u| u.messages, "messages"),
        peak_per_day: series(|u| u.peak_sessions, "connections at the peak"),
        // A day without a report shows no bar rather than a drop to nothing stored.
        storage_per_day: (today - 29..=today)
            .map(|day| match days.iter().find(|u| u.day == day) {
                Some(u) => (
                    format!("{}: {} stored", label(day), bytes_label(u.storage_bytes)),
                    u.storage_bytes,
                ),
                None => (format!("{}: no report", label(day)), 0),
            })
            .collect(),
    }))
}

/// A plan as the order form and the plan card show it.
fn plan_choice(state: &AppState, p: rookery_frontend::pages::PlanView) -> PlanChoice {
    PlanChoice {
        price: if state.settings.stripe.enabled() {
            p.price_label()
        } else {
            "free while billing is off".into()
        },
        limits: format!(
            "{} accounts, {} connections, {} MB",
            p.max_accounts, p.max_sessions, p.storage_mb
        ),
        id: p.id,
        name: p.name,
    }
}

async fn plan_choices(state: &AppState) -> AppResult<Vec<PlanChoice>> {
    Ok(crate::admin::plans::list(&state.db, true)
        .await?
        .into_iter()
        .map(|p| plan_choice(state, p))
        .collect())
}

async fn render_list(
    state: &AppState,
    access: &OrgAccess,
    form: OrderForm,
) -> AppResult<Html<String>> {
    let probes = crate::probe::db::org_summary(&state.db, &access.org.id.0).await?;
    let list = db::for_org(&state.db, &access.org.id.0)
        .await?
        .iter()
        .map(|d| {
            let mut v = view(d);
            v.probe = probes.get(&d.id).map(|s| {
                let status = match (s.incident, s.up) {
                    (true, _) => "incident",
                    (false, true) => "up",
                    (false, false) => "down",
                };
                (status.to_string(), percent(s.up_24h, s.down_24h))
            });
            v
        })
        .collect();
    let plans = plan_choices(state).await?;
    let ctx = ctx(
        state,
        &access.signed_in.visitor,
        "Domains",
        "domains",
        Some(&access.org),
        None,
    )
    .await?;
    Ok(Html(pages::list(
        ctx,
        access.org.id.0.clone(),
        list,
        plans,
        form,
    )))
}

async fn show_list(State(state): State<AppState>, access: OrgAccess) -> AppResult<Html<String>> {
    render_list(&state, &access, OrderForm::default()).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AddForm {
    domain: String,
    plan: String,
}

/// Why an order was refused: per field (`domain`, `plan`), a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRefused(pub Vec<(&'static str, &'static str, String)>);

/// Orders a domain for an organisation, as the order form and the REST API do: the name
/// normalised and checked (reserved, already hosted), the plan among the public ones (when
/// there are plans). Free plans, and every plan while billing is off, go to provisioning
/// (the reconciler is woken); paid ones wait in `pending_payment` for a checkout.
pub async fn place_order(
    state: &AppState,
    org_id: &str,
    domain: &str,
    plan: &str,
) -> AppResult<Result<DomainRow, OrderRefused>> {
    let mut refused = Vec::new();
    let normalized = match normalize(domain) {
        Ok(d) if is_reserved(&d, &reserved(state)) => {
            refused.push((
                "domain",
                "domain_reserved",
                "This domain is reserved and cannot be hosted here. Use a domain you own.".into(),
            ));
            None
        }
        Ok(d) => Some(d),
        Err(why) => {
            refused.push(("domain", "invalid_domain", why.to_string()));
            None
        }
    };
    let plans = crate::admin::plans::list(&state.db, true).await?;
    let plan = if plans.is_empty() {
        None
    } else {
        let chosen = plans.iter().find(|p| p.id == plan);
        if chosen.is_none() {
            refused.push(("plan", "unknown_plan", "Choose a plan.".into()));
        }
        chosen
    };
    let Some(domain) = normalized.filter(|_| refused.is_empty()) else {
        return Ok(Err(OrderRefused(refused)));
    };
    let needs_payment = state.settings.stripe.enabled() && plan.is_some_and(|p| p.price_cents > 0);
    let initial = if needs_payment {
        DomainState::PendingPayment
    } else {
        DomainState::Provisioning
    };
    match db::create(
        &state.db,
        org_id,
        &domain,
        plan.map(|p| p.id.as_str()),
        initial,
        state.clock.now(),
    )
    .await?
    {
        Ok(d) => {
            tracing::info!(domain, org = org_id, state = %initial, "domain ordered");
            state.reconcile_now.notify_one();
            Ok(Ok(d))
        }
        Err(db::CreateError::Taken) => Ok(Err(OrderRefused(vec![(
            "domain",
            "domain_taken",
            "This domain is already hosted here. If it is yours, contact support.".into(),
        )]))),
    }
}

async fn add(
    State(state): State<AppState>,
    access: OrgAccess,
    Form(f): Form<AddForm>,
) -> AppResult<Response> {
    match place_order(&state, &access.org.id.0, &f.domain, &f.plan).await? {
        Ok(d) => {
            let page = format!("/o/{}/domains/{}", access.org.id.0, d.id);
            if d.state == DomainState::PendingPayment.as_str() {
                return Ok(
                    match crate::billing::start_checkout(
                        &state,
                        &crate::billing::Payer::of(&access),
                        &d,
                        &crate::billing::ReturnUrls::panel(&state, &d),
                    )
                    .await
                    {
                        Ok(url) => Redirect::to(&url).into_response(),
                        Err(e) => {
                            // The order stands; the domain page offers to pay again.
                            tracing::error!(
                                domain = d.domain,
                                error = format!("{e:#}"),
                                "starting a checkout failed"
                            );
                            Redirect::to(&format!("{page}?notice=checkout-failed")).into_response()
                        }
                    },
                );
            }
            Ok(Redirect::to(&page).into_response())
        }
        Err(OrderRefused(refused)) => {
            let mut errors = FormErrors::default();
            for (field, _, message) in refused {
                errors.add(field, message);
            }
            let form = OrderForm {
                domain: f.domain,
                plan: f.plan,
                errors,
            };
            Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                render_list(&state, &access, form).await?,
            )
                .into_response())
        }
    }
}

/// The organisation's domain `id` (not deleted), or the 404 of pages that do not exist.
pub(crate) async fn domain_of(
    state: &AppState,
    access: &OrgAccess,
    id: &str,
) -> AppResult<DomainRow> {
    match db::get(&state.db, id).await? {
        Some(d) if d.org_id == access.org.id.0 && d.state != "deleted" => Ok(d),
        _ => Err(AppError::NotFound),
    }
}

/// A page of the domain's chat accounts (in user-name order, after `after`), from the node
/// serving it, as the domain page and the REST API list them. `Ok(None)`: the domain is not
/// on a node (only active and suspended domains have accounts to list).
pub async fn account_page(
    state: &AppState,
    d: &DomainRow,
    after: Option<&str>,
    limit: u32,
) -> anyhow::Result<Option<rookery_common::control::AccountPage>> {
    if d.state != "active" && d.state != "suspended" {
        return Ok(None);
    }
    let Some(node_id) = d.applied_node_id.as_deref() else {
        return Ok(None);
    };
    let node = nodes::node(&state.db, node_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("node gone"))?;
    let client = state.node_clients.get(&node.endpoint(&state.sealer)?);
    Ok(Some(client.accounts(&d.domain, after, limit).await?))
}

/// How many chat accounts the domain has on its node (0 while it is on none), page by
/// page; the node's system accounts (the prober's) are not listed, so not counted.
pub async fn account_count(state: &AppState, d: &DomainRow) -> anyhow::Result<i64> {
    let mut count = 0;
    let mut after: Option<String> = None;
    loop {
        let Some(page) = account_page(state, d, after.as_deref(), 1000).await? else {
            return Ok(count);
        };
        count += i64::try_from(page.accounts.len()).unwrap_or(i64::MAX);
        match page.next {
            Some(next) if !page.accounts.is_empty() => after = Some(next),
            _ => return Ok(count),
        }
    }
}

/// The account list from the node serving the domain.
async fn accounts(state: &AppState, d: &DomainRow) -> AccountsView {
    let mut view = AccountsView::default();
    let result = account_page(state, d, None, 1000).await.map(|page| {
        page.map(|p| {
            p.accounts
                .into_iter()
                .map(|a| a.username)
                .collect::<Vec<_>>()
        })
    });
    match result {
        Ok(None) => {}
        Ok(Some(list)) => view.accounts = Some(list),
        Err(e) => {
            tracing::warn!(
                domain = d.domain,
                error = format!("{e:#}"),
                "listing accounts failed"
            );
            view.error = Some("The server of this domain does not answer right now; the accounts cannot be shown. Try again in a minute.".into());
        }
    }
    view
}

async fn render_detail(
    state: &AppState,
    access: &OrgAccess,
    d: &DomainRow,
    a: AccountsView,
) -> AppResult<Html<String>> {
    render_detail_with(state, access, d, a, None, PlanForm::default()).await
}

/// The domain's plan card: its plan, the plans it can move to, and how a change is billed.
async fn plan_card(state: &AppState, d: &DomainRow, form: PlanForm) -> AppResult<PlanCard> {
    let choices = plan_choices(state).await?;
    let current = match &d.plan_id {
        Some(id) => match choices.iter().find(|p| &p.id == id) {
            Some(p) => Some(p.clone()),
            // A plan no longer offered still shows as the domain's.
            None => crate::admin::plans::get_plan(&state.db, id)
                .await?
                .map(|p| plan_choice(state, p)),
        },
        None => None,
    };
    let hint = if state.settings.stripe.enabled() {
        "A change between paid plans applies at once, and Stripe prorates the difference on your next invoice. A change from a free plan to a paid one goes through the payment page; a change to a free plan ends the subscription. A plan must allow at least the chat accounts the domain has."
    } else {
        "The new limits apply within seconds. A plan must allow at least the chat accounts the domain has."
    };
    Ok(PlanCard {
        choices: choices
            .into_iter()
            .filter(|p| Some(&p.id) != d.plan_id.as_ref())
            .collect(),
        current,
        locked: crate::billing::plan_is_fixed(d).map(str::to_string),
        hint: hint.into(),
        chosen: form.plan,
        errors: form.errors,
    })
}

async fn render_detail_with(
    state: &AppState,
    access: &OrgAccess,
    d: &DomainRow,
    mut a: AccountsView,
    notice: Option<&str>,
    plan_form: PlanForm,
) -> AppResult<Html<String>> {
    let fetched = accounts(state, d).await;
    a.accounts = fetched.accounts;
    a.error = a.error.or(fetched.error);
    a.limit = d.max_accounts;
    let ctx = ctx(
        state,
        &access.signed_in.visitor,
        &d.domain,
        "domain",
        Some(&access.org),
        notice,
    )
    .await?;
    let mut shown = view(d);
    shown.usage = usage(state, d).await?;
    shown.uptime = uptime(state, d).await?;
    shown.status_page = Some(crate::status_page::switch(state, &access.org.id, d).await?);
    shown.plan = Some(plan_card(state, d, plan_form).await?);
    Ok(Html(pages::detail(ctx, access.org.id.0.clone(), shown, a)))
}

async fn show_detail(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let d = domain_of(&state, &access, &id).await?;
    render_detail_with(
        &state,
        &access,
        &d,
        AccountsView::default(),
        q.notice.as_deref(),
        PlanForm::default(),
    )
    .await
}

/// The "Change plan" form as posted (and, with errors, as shown again).
#[derive(Deserialize, Default)]
#[serde(default)]
struct PlanForm {
    plan: String,
    #[serde(skip)]
    errors: FormErrors,
}

async fn change_plan(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(f): Form<PlanForm>,
) -> AppResult<Response> {
    use crate::billing::{ChangePlanError, PlanChanged};
    let d = domain_of(&state, &access, &id).await?;
    let page = format!("/o/{}/domains/{}", access.org.id.0, d.id);
    let back = crate::billing::ReturnUrls {
        success: format!("{}{page}?notice=plan-paid", state.settings.base_url()),
        cancel: format!("{}{page}", state.settings.base_url()),
    };
    let payer = crate::billing::Payer::of(&access);
    match crate::billing::change_plan(&state, &payer, &d, &f.plan, &back).await {
        Ok(PlanChanged::Applied) => {
            Ok(Redirect::to(&format!("{page}?notice=plan-changed")).into_response())
        }
        Ok(PlanChanged::Pending) => {
            Ok(Redirect::to(&format!("{page}?notice=plan-change-sent")).into_response())
        }
        Ok(PlanChanged::Checkout(url)) => Ok(Redirect::to(&url).into_response()),
        Err(ChangePlanError::Internal(e)) => Err(AppError::Internal(e)),
        Err(refused) => {
            let mut errors = FormErrors::default();
            errors.add("plan", refused.to_string());
            let form = PlanForm {
                plan: f.plan,
                errors,
            };
            let html = render_detail_with(&state, &access, &d, AccountsView::default(), None, form)
                .await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, html).into_response())
        }
    }
}

/// A password people can read out and type: 4 groups of 5 from an unambiguous alphabet
/// (about 100 bits).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    chars
        .chunks(5)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// The node client for an active domain, or the sentence explaining why there is none
/// (chat accounts change only on active domains).
pub async fn node_client(
    state: &AppState,
    d: &DomainRow,
) -> AppResult<Result<crate::nodes::client::NodeClient, &'static str>> {
    let node = match (&d.applied_node_id, d.state.as_str()) {
        (Some(n), "active") => nodes::node(&state.db, n).await?,
        _ => None,
    };
    let Some(node) = node else {
        return Ok(Err("Accounts can be changed once the domain is active."));
    };
    Ok(Ok(state.node_clients.get(&node.endpoint(&state.sealer)?)))
}

/// Why the node did not answer, for people.
pub const NODE_DOWN: &str = "The server of this domain does not answer right now. Nothing was changed; try again in a minute.";
/// The rule for chat account names, for people.
pub const USERNAME_RULE: &str =
    "Use letters, digits and . _ - only (at most 64), without @ or spaces.";

/// A chat account name as typed, normalised for the domain (`None`: not a usable name).
pub fn check_username(d: &DomainRow, raw: &str) -> Option<String> {
    match rookery_node::store::normalize_username(&d.domain, raw.trim()) {
        Ok(u)
            if !u.is_empty()
                && u.len() <= 64
                && u.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
        {
            Some(u)
        }
        _ => None,
    }
}

/// What is wrong with a chosen password, if anything (`generated`: one we made up).
pub fn password_problem(password: &str, generated: bool) -> Option<&'static str> {
    if !generated && password.chars().count() < 10 {
        Some("Use at least 10 characters, or leave it empty to have one made up.")
    } else if password.len() > 1023 {
        Some("Use at most 1023 bytes.")
    } else {
        None
    }
}

/// Why a chat account could not be changed on the node.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("This account already exists.")]
    Exists,
    /// The plan's account limit (the node enforces it from the domain's spec).
    #[error("The plan's account limit is reached.")]
    OverLimit,
    #[error("There is no such account.")]
    NotFound,
    /// The node refused it for another reason (its message).
    #[error("The server refused the account: {0}")]
    Refused(String),
    #[error("{NODE_DOWN}")]
    NodeDown,
}

impl AccountError {
    /// `account_named`: the call names an existing account, so a 404 means it is missing.
    fn of(d: &DomainRow, what: &str, e: CallError, account_named: bool) -> Self {
        match e {
            CallError::Refused { error, .. } if error.code == "account_exists" => Self::Exists,
            CallError::Refused { error, .. } if error.code == "account_limit" => Self::OverLimit,
            CallError::Refused { status: 404, .. } if account_named => Self::NotFound,
            CallError::Refused { error, .. } => {
                tracing::warn!(domain = d.domain, code = error.code, "{what} refused");
                Self::Refused(error.message)
            }
            e => {
                tracing::warn!(domain = d.domain, error = %e, "{what} failed");
                Self::NodeDown
            }
        }
    }
}

/// Creates a chat account on the node serving an active domain (the plan's account limit
/// is the node's to enforce), as the domain page and the REST API do.
pub async fn create_account(
    client: &crate::nodes::client::NodeClient,
    d: &DomainRow,
    username: &str,
    password: &str,
) -> Result<(), AccountError> {
    let req = NewAccount {
        username: username.to_string(),
        password: password.to_string(),
        system: false,
    };
    client
        .create_account(&d.domain, &req)
        .await
        .map_err(|e| AccountError::of(d, "creating an account", e, false))?;
    tracing::info!(domain = d.domain, username, "chat account created");
    Ok(())
}

/// Sets a chat account's password on the node.
pub async fn set_account_password(
    client: &crate::nodes::client::NodeClient,
    d: &DomainRow,
    username: &str,
    password: &str,
) -> Result<(), AccountError> {
    client
        .set_password(
            &d.domain,
            username,
            &NewPassword {
                password: password.to_string(),
            },
        )
        .await
        .map_err(|e| AccountError::of(d, "resetting a password", e, true))?;
    tracing::info!(domain = d.domain, username, "chat account password reset");
    Ok(())
}

/// Deletes a chat account on the node.
pub async fn remove_account(
    client: &crate::nodes::client::NodeClient,
    d: &DomainRow,
    username: &str,
) -> Result<(), AccountError> {
    client
        .delete_account(&d.domain, username)
        .await
        .map_err(|e| AccountError::of(d, "deleting an account", e, true))?;
    tracing::info!(domain = d.domain, username, "chat account deleted");
    Ok(())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AccountForm {
    username: String,
    password: String,
}

async fn add_account(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id)): Path<(String, String)>,
    Form(f): Form<AccountForm>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    let mut errors = FormErrors::default();
    let username = check_username(&d, &f.username);
    if username.is_none() {
        errors.add("username", USERNAME_RULE);
    }
    let generated = f.password.is_empty();
    let password = if generated {
        generate_password()
    } else {
        f.password.clone()
    };
    if let Some(why) = password_problem(&password, generated) {
        errors.add("password", why);
    }
    let client = match node_client(&state, &d).await? {
        Ok(c) => Some(c),
        Err(why) => {
            errors.add("", why);
            None
        }
    };
    if let (true, Some(username), Some(client)) = (errors.is_empty(), username, client) {
        match create_account(&client, &d, &username, &password).await {
            Ok(()) => {
                crate::alerts::endpoints::account_created(&state, &access.org.id, &d.id, &d.domain, &username).await;
                let shown = generated.then(|| (format!("{username}@{}", d.domain), password));
                if shown.is_none() {
                    return Ok(Redirect::to(&format!("/o/{}/domains/{}?notice=account-created", access.org.id.0, d.id)).into_response());
                }
                let view = AccountsView { shown_once: shown, ..Default::default() };
                return Ok(render_detail(&state, &access, &d, view).await?.into_response());
            }
            Err(AccountError::Exists) => errors.add("username", "This account already exists."),
            Err(AccountError::OverLimit) => errors.add(
                "",
                format!(
                    "Your plan allows {} accounts and they are all in use. Delete one, or move to a bigger plan.",
                    d.max_accounts.map(|n| n.to_string()).unwrap_or_else(|| "no more".into())
                ),
            ),
            Err(e @ AccountError::Refused(_)) => errors.add("", e.to_string()),
            Err(AccountError::NotFound | AccountError::NodeDown) => errors.add("", NODE_DOWN),
        }
    }
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        render_detail(
            &state,
            &access,
            &d,
            AccountsView {
                username: f.username,
                errors,
                ..Default::default()
            },
        )
        .await?,
    )
        .into_response())
}

/// A user name from the address bar, checked like a typed one.
fn username_param(d: &DomainRow, raw: &str) -> AppResult<String> {
    rookery_node::store::normalize_username(&d.domain, raw).map_err(|_| AppError::NotFound)
}

/// The domain page again, saying what went wrong.
async fn detail_with_error(
    state: &AppState,
    access: &OrgAccess,
    d: &DomainRow,
    why: &str,
) -> AppResult<Response> {
    let mut errors = FormErrors::default();
    errors.add("", why);
    let view = AccountsView {
        errors,
        ..Default::default()
    };
    // The node not answering is the server's trouble; anything else, the request's.
    let status = if why == NODE_DOWN {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, render_detail(state, access, d, view).await?).into_response())
}

async fn reset_password(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id, username)): Path<(String, String, String)>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    let username = username_param(&d, &username)?;
    let client = match node_client(&state, &d).await? {
        Ok(c) => c,
        Err(why) => return detail_with_error(&state, &access, &d, why).await,
    };
    let password = generate_password();
    match set_account_password(&client, &d, &username, &password).await {
        Ok(()) => {
            let view = AccountsView {
                shown_once: Some((format!("{username}@{}", d.domain), password)),
                ..Default::default()
            };
            Ok(render_detail(&state, &access, &d, view)
                .await?
                .into_response())
        }
        Err(AccountError::NotFound) => Err(AppError::NotFound),
        Err(_) => detail_with_error(&state, &access, &d, NODE_DOWN).await,
    }
}

async fn confirm_delete(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id, username)): Path<(String, String, String)>,
) -> AppResult<Html<String>> {
    let d = domain_of(&state, &access, &id).await?;
    let username = username_param(&d, &username)?;
    let address = format!("{username}@{}", d.domain);
    let ctx = ctx(
        &state,
        &access.signed_in.visitor,
        &format!("Delete {address}"),
        "account-delete",
        Some(&access.org),
        None,
    )
    .await?;
    Ok(Html(pages::confirm_delete(
        ctx,
        access.org.id.0.clone(),
        d.id.clone(),
        address,
        username,
    )))
}

async fn delete_account(
    State(state): State<AppState>,
    access: OrgAccess,
    Path((_, id, username)): Path<(String, String, String)>,
) -> AppResult<Response> {
    let d = domain_of(&state, &access, &id).await?;
    let username = username_param(&d, &username)?;
    let client = match node_client(&state, &d).await? {
        Ok(c) => c,
        Err(why) => return detail_with_error(&state, &access, &d, why).await,
    };
    match remove_account(&client, &d, &username).await {
        Ok(()) => {
            let page = format!(
                "/o/{}/domains/{}?notice=account-deleted",
                access.org.id.0, d.id
            );
            Ok(Redirect::to(&page).into_response())
        }
        Err(AccountError::NotFound) => Err(AppError::NotFound),
        Err(_) => detail_with_error(&state, &access, &d, NODE_DOWN).await,
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn generated_passwords_are_long_readable_and_different() {
        let a = super::generate_password();
        assert_eq!(a.len(), 23);
        assert_eq!(a.split('-').count(), 4);
        assert!(
            a.chars()
                .all(|c| c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert!(!a.contains(['l', '1', '0', 'o', 'i']));
        assert_ne!(a, super::generate_password());
    }

    #[test]
    fn reserved_names_cover_their_subdomains_only() {
        let reserved = vec!["localhost".to_string(), "hosting.example.".to_string()];
        assert!(super::is_reserved("localhost", &reserved));
        assert!(super::is_reserved("a.b.localhost", &reserved));
        assert!(super::is_reserved("chat.hosting.example", &reserved));
        assert!(!super::is_reserved("myhosting.example", &reserved));
        assert!(!super::is_reserved("chat.example.com", &reserved));
    }

    #[test]
    fn international_domains_are_normalised_to_one_form() {
        assert_eq!(normalize("Bücher.Example").unwrap(), "bücher.example");
        assert_eq!(
            normalize("xn--bcher-kva.example").unwrap(),
            "bücher.example"
        );
    }

    #[test]
    fn domains_are_normalised_and_checked() {
        assert_eq!(
            normalize(" Chat.Example.COM. ").unwrap(),
            "chat.example.com"
        );
        assert!(normalize("").is_err());
        assert!(normalize("localhost").is_err());
        assert!(normalize("10.0.0.1").is_err());
        assert!(normalize("bad_domain.example").is_err());
        assert!(normalize("user@example.com").is_err());
    }
}
