//! Plans customers choose from: name, monthly price, limits (accounts, connections,
//! storage, uploads — the total, the largest file, per account, how long files are kept —,
//! group chat rooms and their size, archive, offline message retention) and the Stripe
//! price. The optional limits are empty (NULL) for the node's default. Admins
//! create and edit them here; an edit reaches every domain on the plan through a new vhost
//! spec.

use axum::{
    Form, Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use rookery_frontend::{
    FormErrors,
    pages::{
        PlanView,
        admin::{PlanForm, plan_edit, plans as plans_page},
    },
};
use std::collections::BTreeMap;

use serde::Deserialize;
use sqlx::Row;

use crate::{
    auth::session::Admin,
    clock::new_id,
    db::{Pool, is_unique_violation},
    error::{AppError, AppResult},
    nodes::db as nodes,
    pages::{NoticeQuery, ctx},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/admin/plans", get(show_plans).post(create_plan))
        .route("/admin/plans/{id}", get(show_plan).post(update_plan))
}

const COLUMNS: &str = "id, name, description, price_cents, currency, max_accounts, max_sessions, storage_mb, upload_mb, archive_days, offline_days, stripe_price_id, is_public, node_labels, upload_max_file_mb, upload_account_mb, upload_retention_days, max_rooms, max_room_occupants";

fn from_row(r: &sqlx::any::AnyRow) -> Result<PlanView, sqlx::Error> {
    Ok(PlanView {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        price_cents: r.try_get("price_cents")?,
        currency: r.try_get("currency")?,
        max_accounts: r.try_get("max_accounts")?,
        max_sessions: r.try_get("max_sessions")?,
        storage_mb: r.try_get("storage_mb")?,
        upload_mb: r.try_get("upload_mb")?,
        archive_days: r.try_get("archive_days")?,
        offline_days: r.try_get("offline_days")?,
        upload_max_file_mb: r.try_get("upload_max_file_mb")?,
        upload_account_mb: r.try_get("upload_account_mb")?,
        upload_retention_days: r.try_get("upload_retention_days")?,
        max_rooms: r.try_get("max_rooms")?,
        max_room_occupants: r.try_get("max_room_occupants")?,
        stripe_price_id: r.try_get("stripe_price_id")?,
        public: r.try_get::<i64, _>("is_public")? != 0,
        node_labels: serde_json::from_str(&r.try_get::<String, _>("node_labels")?)
            .unwrap_or_default(),
    })
}

/// Plans, cheapest first; only those on the landing page when `public_only`.
#[tracing::instrument(skip_all)]
pub async fn list(db: &Pool, public_only: bool) -> Result<Vec<PlanView>, sqlx::Error> {
    let filter = if public_only {
        "WHERE is_public = 1"
    } else {
        ""
    };
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM plans {filter} ORDER BY price_cents, name"
    ))
    .fetch_all(db)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

pub async fn get_plan(db: &Pool, id: &str) -> Result<Option<PlanView>, sqlx::Error> {
    sqlx::query(&format!("SELECT {COLUMNS} FROM plans WHERE id = $1"))
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

async fn show_plans(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let plans = list(&state.db, false).await?;
    let ctx = ctx(
        &state,
        &admin.visitor,
        "Plans",
        "admin-plans",
        None,
        q.notice.as_deref(),
    )
    .await?;
    let form = PlanForm {
        currency: "EUR".into(),
        upload_mb: "1024".into(),
        archive_days: "365".into(),
        public: true,
        ..Default::default()
    };
    Ok(Html(plans_page(ctx, plans, form)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PlanInput {
    name: String,
    description: String,
    price: String,
    currency: String,
    max_accounts: String,
    max_sessions: String,
    storage_mb: String,
    upload_mb: String,
    archive_days: String,
    offline_days: String,
    upload_max_file_mb: String,
    upload_account_mb: String,
    upload_retention_days: String,
    max_rooms: String,
    max_room_occupants: String,
    node_labels: String,
    stripe_price_id: String,
    public: Option<String>,
}

/// A checked plan, ready to store.
#[derive(Debug)]
struct Plan {
    name: String,
    description: String,
    price_cents: i64,
    currency: String,
    limits: [i64; 5],
    /// Days an offline message is kept; None: the node's default.
    offline_days: Option<i64>,
    /// The optional upload and group chat limits; None: the node's default.
    extra: ExtraLimits,
    stripe_price_id: Option<String>,
    public: bool,
    /// Node labels the plan's domains need, as stored (a JSON object).
    node_labels: String,
}

/// A plan's optional upload (XEP-0363) and group chat (XEP-0045) limits, as stored.
#[derive(Debug, Default, PartialEq, Eq)]
struct ExtraLimits {
    /// The largest file, in MiB.
    upload_max_file_mb: Option<i64>,
    /// What one account's files may add up to, in MiB.
    upload_account_mb: Option<i64>,
    upload_retention_days: Option<i64>,
    max_rooms: Option<i64>,
    max_room_occupants: Option<i64>,
}

/// The most an optional size or count may be (as for the required limits).
const MAX_LIMIT: i64 = 10_000_000;

/// An optional whole number within `range`: empty is None (the node's default); anything
/// else outside the range (or not a number) is `why`, at `field`.
fn optional(
    errors: &mut FormErrors,
    field: &'static str,
    value: &str,
    range: std::ops::RangeInclusive<i64>,
    why: &str,
) -> Option<i64> {
    match value.trim() {
        "" => None,
        v => {
            let n = v.parse::<i64>().ok().filter(|n| range.contains(n));
            if n.is_none() {
                errors.add(field, why);
            }
            n
        }
    }
}

impl PlanInput {
    /// The optional upload and group chat limits, each checked, then against each other and
    /// the domain's upload total (`upload_mb`, when it is valid).
    fn extra_limits(&self, errors: &mut FormErrors, upload_mb: Option<i64>) -> ExtraLimits {
        let size =
            "Enter a whole number of MB, 0 or more, or leave it empty for the server's default.";
        let extra = ExtraLimits {
            upload_max_file_mb: optional(
                errors,
                "upload_max_file_mb",
                &self.upload_max_file_mb,
                0..=MAX_LIMIT,
                size,
            ),
            upload_account_mb: optional(
                errors,
                "upload_account_mb",
                &self.upload_account_mb,
                0..=MAX_LIMIT,
                size,
            ),
            upload_retention_days: optional(
                errors,
                "upload_retention_days",
                &self.upload_retention_days,
                OFFLINE_DAYS,
                "Enter a number of days from 1 to 3650, or leave it empty to keep files.",
            ),
            max_rooms: optional(
                errors,
                "max_rooms",
                &self.max_rooms,
                0..=MAX_LIMIT,
                "Enter a whole number of rooms, 0 or more, or leave it empty for the server's default.",
            ),
            max_room_occupants: optional(
                errors,
                "max_room_occupants",
                &self.max_room_occupants,
                1..=MAX_LIMIT,
                "Enter a whole number of people, at least 1, or leave it empty for the server's default.",
            ),
        };
        let (file, account) = (extra.upload_max_file_mb, extra.upload_account_mb);
        if let (Some(file), Some(account)) = (file, account)
            && file > account
        {
            errors.add(
                "upload_max_file_mb",
                format!("The largest file cannot be bigger than what one account may upload in all ({account} MB)."),
            );
        } else if let (Some(file), Some(total)) = (file, upload_mb)
            && file > total
        {
            errors.add(
                "upload_max_file_mb",
                format!(
                    "The largest file cannot be bigger than the domain's file uploads ({total} MB)."
                ),
            );
        }
        if let (Some(account), Some(total)) = (account, upload_mb)
            && account > total
        {
            errors.add(
                "upload_account_mb",
                format!("One account cannot upload more than the whole domain's file uploads ({total} MB)."),
            );
        }
        extra
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl Plan {
    /// Binds the plan's eighteen columns in this order: name, description, price_cents,
    /// currency, max_accounts, max_sessions, storage_mb, upload_mb, archive_days,
    /// stripe_price_id, is_public, offline_days, node_labels, upload_max_file_mb,
    /// upload_account_mb, upload_retention_days, max_rooms, max_room_occupants.
    fn bind_fields<'q>(&'q self, q: AnyQuery<'q>) -> AnyQuery<'q> {
        let q = q
            .bind(&self.name)
            .bind(&self.description)
            .bind(self.price_cents)
            .bind(&self.currency);
        self.limits
            .iter()
            .fold(q, |q, n| q.bind(*n))
            .bind(&self.stripe_price_id)
            .bind(i64::from(self.public))
            .bind(self.offline_days)
            .bind(&self.node_labels)
            .bind(self.extra.upload_max_file_mb)
            .bind(self.extra.upload_account_mb)
            .bind(self.extra.upload_retention_days)
            .bind(self.extra.max_rooms)
            .bind(self.extra.max_room_occupants)
    }
}

impl PlanInput {
    fn check(&self, billing_on: bool) -> Result<Plan, FormErrors> {
        let mut errors = FormErrors::default();
        let name = self.name.trim().to_string();
        if name.is_empty() || name.chars().count() > 60 {
            errors.add("name", "Enter a name of at most 60 characters.");
        }
        if self.description.trim().chars().count() > 300 {
            errors.add("description", "Keep the description under 300 characters.");
        }
        let price = parse_price(&self.price);
        if price.is_none() {
            errors.add("price", "Enter a price like 4.50 (or 0 for a free plan).");
        }
        let currency = self.currency.trim().to_uppercase();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            errors.add("currency", "Enter a three-letter currency code like EUR.");
        }
        let limits = [
            ("max_accounts", &self.max_accounts),
            ("max_sessions", &self.max_sessions),
            ("storage_mb", &self.storage_mb),
            ("upload_mb", &self.upload_mb),
            ("archive_days", &self.archive_days),
        ]
        .map(|(field, v)| {
            let n = positive(v);
            if n.is_none() {
                errors.add(field, "Enter a whole number above 0.");
            }
            n.unwrap_or_default()
        });
        let offline_days = match self.offline_days.trim() {
            "" => None,
            v => {
                let days = v.parse::<i64>().ok().filter(|d| OFFLINE_DAYS.contains(d));
                if days.is_none() {
                    errors.add(
                        "offline_days",
                        "Enter a number of days from 1 to 3650, or leave it empty for the server's default.",
                    );
                }
                days
            }
        };
        let upload_mb = positive(&self.upload_mb);
        let extra = self.extra_limits(&mut errors, upload_mb);
        let node_labels = parse_node_labels(&self.node_labels).unwrap_or_else(|why| {
            errors.add("node_labels", why);
            Default::default()
        });
        let stripe_price_id =
            Some(self.stripe_price_id.trim().to_string()).filter(|s| !s.is_empty());
        if let Some(p) = &stripe_price_id
            && (!p.starts_with("price_")
                || p.len() > 100
                || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            errors.add(
                "stripe_price_id",
                "A Stripe price id looks like price_1AbC…; copy it from the Stripe dashboard.",
            );
        }
        if billing_on && price.is_some_and(|p| p > 0) && stripe_price_id.is_none() {
            errors.add(
                "stripe_price_id",
                "A paid plan needs its Stripe price id while billing is on.",
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Plan {
            name,
            description: self.description.trim().to_string(),
            price_cents: price.unwrap_or_default(),
            currency,
            limits,
            offline_days,
            extra,
            stripe_price_id,
            public: self.public.is_some(),
            node_labels: serde_json::to_string(&node_labels).unwrap_or_else(|_| "{}".into()),
        })
    }

    fn into_form(self, errors: FormErrors) -> PlanForm {
        PlanForm {
            name: self.name,
            description: self.description,
            price: self.price,
            currency: self.currency,
            max_accounts: self.max_accounts,
            max_sessions: self.max_sessions,
            storage_mb: self.storage_mb,
            upload_mb: self.upload_mb,
            archive_days: self.archive_days,
            offline_days: self.offline_days,
            upload_max_file_mb: self.upload_max_file_mb,
            upload_account_mb: self.upload_account_mb,
            upload_retention_days: self.upload_retention_days,
            max_rooms: self.max_rooms,
            max_room_occupants: self.max_room_occupants,
            node_labels: self.node_labels,
            stripe_price_id: self.stripe_price_id,
            public: self.public.is_some(),
            errors,
        }
    }
}

/// `region=eu-west, tier=gold` → {region: eu-west, tier: gold}: at most 32 pairs, names of
/// 1–63 characters and values of up to 255, as nodes declare them when they join.
pub fn parse_node_labels(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(format!("“{pair}” is not name=value."));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || name.chars().count() > 63 || value.chars().count() > 255 {
            return Err(format!(
                "“{pair}”: a name is 1 to 63 characters, a value at most 255."
            ));
        }
        if name.chars().chain(value.chars()).any(char::is_control) {
            return Err(format!("“{pair}” holds characters that cannot be shown."));
        }
        if labels.insert(name.to_string(), value.to_string()).is_some() {
            return Err(format!("The label {name} is given twice."));
        }
    }
    if labels.len() > 32 {
        return Err("Name at most 32 labels.".into());
    }
    Ok(labels)
}

/// `4.50` → 450 cents. At most two decimals, no sign, no exponent.
pub fn parse_price(s: &str) -> Option<i64> {
    let s = s.trim().replace(',', ".");
    let (whole, frac) = s.split_once('.').unwrap_or((&s, ""));
    if whole.is_empty()
        || !whole.chars().all(|c| c.is_ascii_digit())
        || frac.len() > 2
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = format!("{frac:0<2}").parse().ok()?;
    whole
        .checked_mul(100)?
        .checked_add(frac)
        .filter(|c| *c <= 100_000_000)
}

/// Days an offline message may be kept for: a day to ten years.
const OFFLINE_DAYS: std::ops::RangeInclusive<i64> = 1..=3650;

fn positive(s: &str) -> Option<i64> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0 && *n <= 10_000_000)
}

fn billing_on(state: &AppState) -> bool {
    state.settings.stripe.enabled()
}

async fn create_plan(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Form(f): Form<PlanInput>,
) -> AppResult<Response> {
    let mut errors = match f.check(billing_on(&state)) {
        Ok(p) => {
            let now = state.clock.now();
            let inserted = sqlx::query(
                "INSERT INTO plans (id, name, description, price_cents, currency, max_accounts, max_sessions, storage_mb, upload_mb, archive_days, stripe_price_id, is_public, offline_days, node_labels,
                    upload_max_file_mb, upload_account_mb, upload_retention_days, max_rooms, max_room_occupants, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $20)",
            )
            .bind(new_id());
            let inserted = p.bind_fields(inserted).bind(now).execute(&state.db).await;
            match inserted {
                Ok(_) => {
                    nodes::audit(
                        &state.db,
                        Some(&admin.user.id),
                        &admin.user.email,
                        "plan.created",
                        &p.name,
                        &format!("{} {}", p.price_cents, p.currency),
                        now,
                    )
                    .await?;
                    return Ok(Redirect::to("/admin/plans?notice=plan-created").into_response());
                }
                Err(e) if is_unique_violation(&e) => {
                    let mut errors = FormErrors::default();
                    errors.add("name", "A plan with this name exists already.");
                    errors
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(errors) => errors,
    };
    if errors.is_empty() {
        errors.add("", "The plan could not be saved.");
    }
    let plans = list(&state.db, false).await?;
    let ctx = ctx(&state, &admin.visitor, "Plans", "admin-plans", None, None).await?;
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        Html(plans_page(ctx, plans, f.into_form(errors))),
    )
        .into_response())
}

fn form_of(p: &PlanView) -> PlanForm {
    let text = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    PlanForm {
        name: p.name.clone(),
        description: p.description.clone(),
        price: format!("{}.{:02}", p.price_cents / 100, p.price_cents % 100),
        currency: p.currency.clone(),
        max_accounts: p.max_accounts.to_string(),
        max_sessions: p.max_sessions.to_string(),
        storage_mb: p.storage_mb.to_string(),
        upload_mb: p.upload_mb.to_string(),
        archive_days: p.archive_days.to_string(),
        offline_days: text(p.offline_days),
        upload_max_file_mb: text(p.upload_max_file_mb),
        upload_account_mb: text(p.upload_account_mb),
        upload_retention_days: text(p.upload_retention_days),
        max_rooms: text(p.max_rooms),
        max_room_occupants: text(p.max_room_occupants),
        node_labels: p.node_labels_text(),
        stripe_price_id: p.stripe_price_id.clone().unwrap_or_default(),
        public: p.public,
        errors: FormErrors::default(),
    }
}

async fn domains_on(db: &Pool, plan_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM domains WHERE plan_id = $1 AND state <> 'deleted'")
        .bind(plan_id)
        .fetch_one(db)
        .await?
        .try_get("n")
}

async fn show_plan(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let plan = get_plan(&state.db, &id).await?.ok_or(AppError::NotFound)?;
    let domains = domains_on(&state.db, &id).await?;
    let ctx = ctx(
        &state,
        &admin.visitor,
        &plan.name,
        "admin-plan",
        None,
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(plan_edit(ctx, id, domains, form_of(&plan))))
}

async fn update_plan(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Path(id): Path<String>,
    Form(f): Form<PlanInput>,
) -> AppResult<Response> {
    let old = get_plan(&state.db, &id).await?.ok_or(AppError::NotFound)?;
    let errors = match f.check(billing_on(&state)) {
        Ok(p) => {
            let now = state.clock.now();
            let mut tx = rookery_common::db::begin_write(&state.db).await?;
            let updated = sqlx::query(
                "UPDATE plans SET name = $1, description = $2, price_cents = $3, currency = $4, max_accounts = $5, max_sessions = $6,
                    storage_mb = $7, upload_mb = $8, archive_days = $9, stripe_price_id = $10, is_public = $11, offline_days = $12,
                    node_labels = $13, upload_max_file_mb = $14, upload_account_mb = $15, upload_retention_days = $16,
                    max_rooms = $17, max_room_occupants = $18, updated_at = $19 WHERE id = $20",
            );
            let updated = p
                .bind_fields(updated)
                .bind(now)
                .bind(&id)
                .execute(&mut *tx)
                .await;
            match updated {
                Ok(_) => {
                    // Every domain on the plan gets a new spec generation with the new limits
                    // (all of them, offline retention, upload and group chat limits
                    // included: `spec_for` reads the plan).
                    let moved = sqlx::query(
                        "UPDATE domains SET generation = generation + 1, next_attempt_at = 0, updated_at = $1
                         WHERE plan_id = $2 AND state IN ('provisioning', 'active', 'suspended')",
                    )
                    .bind(now)
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    tx.commit().await?;
                    state.reconcile_now.notify_one();
                    let days = |d: Option<i64>| d.map_or("default".into(), |d| format!("{d} days"));
                    let new_labels: BTreeMap<String, String> =
                        serde_json::from_str(&p.node_labels).unwrap_or_default();
                    let labels = if new_labels == old.node_labels {
                        String::new()
                    } else {
                        let text = |l: &BTreeMap<String, String>| {
                            if l.is_empty() {
                                "any".to_string()
                            } else {
                                l.iter()
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            }
                        };
                        format!(
                            ", nodes {}→{} (for new placements)",
                            text(&old.node_labels),
                            text(&new_labels)
                        )
                    };
                    let limit = |v: Option<i64>| v.map_or("default".into(), |v| v.to_string());
                    let extras = [
                        (
                            "largest file (MB)",
                            old.upload_max_file_mb,
                            p.extra.upload_max_file_mb,
                        ),
                        (
                            "uploads per account (MB)",
                            old.upload_account_mb,
                            p.extra.upload_account_mb,
                        ),
                        (
                            "uploads kept (days)",
                            old.upload_retention_days,
                            p.extra.upload_retention_days,
                        ),
                        ("rooms", old.max_rooms, p.extra.max_rooms),
                        (
                            "people per room",
                            old.max_room_occupants,
                            p.extra.max_room_occupants,
                        ),
                    ]
                    .into_iter()
                    .filter(|(_, was, now)| was != now)
                    .map(|(what, was, now)| format!(", {what} {}→{}", limit(was), limit(now)))
                    .collect::<String>();
                    let details = format!(
                        "accounts {}→{}, connections {}→{}, storage {}→{} MB, offline messages {}→{}{extras}{labels}; {moved} domain(s) updated",
                        old.max_accounts,
                        p.limits[0],
                        old.max_sessions,
                        p.limits[1],
                        old.storage_mb,
                        p.limits[2],
                        days(old.offline_days),
                        days(p.offline_days)
                    );
                    nodes::audit(
                        &state.db,
                        Some(&admin.user.id),
                        &admin.user.email,
                        "plan.updated",
                        &p.name,
                        &details,
                        now,
                    )
                    .await?;
                    return Ok(
                        Redirect::to(&format!("/admin/plans/{id}?notice=plan-updated"))
                            .into_response(),
                    );
                }
                Err(e) if is_unique_violation(&e) => {
                    let mut errors = FormErrors::default();
                    errors.add("name", "A plan with this name exists already.");
                    errors
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(errors) => errors,
    };
    let domains = domains_on(&state.db, &id).await?;
    let ctx = ctx(&state, &admin.visitor, &old.name, "admin-plan", None, None).await?;
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        Html(plan_edit(ctx, id, domains, f.into_form(errors))),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_labels_are_name_value_pairs() {
        assert_eq!(parse_node_labels("  ").unwrap(), BTreeMap::new());
        let l = parse_node_labels("region=eu-west, tier = gold,").unwrap();
        assert_eq!(
            l.into_iter().collect::<Vec<_>>(),
            vec![
                ("region".to_string(), "eu-west".to_string()),
                ("tier".to_string(), "gold".to_string())
            ]
        );
        assert_eq!(parse_node_labels("ssd=").unwrap()["ssd"], "");
        for bad in ["region", "=eu", "a=1,a=2", &format!("{}=x", "n".repeat(64))] {
            assert!(parse_node_labels(bad).is_err(), "{bad}");
        }
        let many = (0..33)
            .map(|i| format!("l{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_node_labels(&many).is_err());
    }

    #[test]
    fn prices_are_read_in_cents() {
        assert_eq!(parse_price("4.50"), Some(450));
        assert_eq!(parse_price("4,5"), Some(450));
        assert_eq!(parse_price("12"), Some(1200));
        assert_eq!(parse_price("0"), Some(0));
        for bad in ["", "-1", "1.234", "abc", "1e3", ".5"] {
            assert_eq!(parse_price(bad), None, "{bad}");
        }
    }

    fn small(extra: &[(&str, &str)]) -> PlanInput {
        let mut input = PlanInput {
            name: "Small".into(),
            price: "0".into(),
            currency: "EUR".into(),
            max_accounts: "10".into(),
            max_sessions: "20".into(),
            storage_mb: "100".into(),
            upload_mb: "100".into(),
            archive_days: "30".into(),
            ..Default::default()
        };
        for (field, value) in extra {
            let value = value.to_string();
            match *field {
                "upload_max_file_mb" => input.upload_max_file_mb = value,
                "upload_account_mb" => input.upload_account_mb = value,
                "upload_retention_days" => input.upload_retention_days = value,
                "max_rooms" => input.max_rooms = value,
                "max_room_occupants" => input.max_room_occupants = value,
                "upload_mb" => input.upload_mb = value,
                other => panic!("no field {other}"),
            }
        }
        input
    }

    #[test]
    fn upload_and_group_chat_limits_are_optional_whole_numbers() {
        assert_eq!(
            small(&[]).check(false).unwrap().extra,
            ExtraLimits::default()
        );
        let p = small(&[
            ("upload_max_file_mb", " 25 "),
            ("upload_account_mb", "50"),
            ("upload_retention_days", "30"),
            ("max_rooms", "0"),
            ("max_room_occupants", "1"),
        ])
        .check(false)
        .unwrap();
        assert_eq!(
            p.extra,
            ExtraLimits {
                upload_max_file_mb: Some(25),
                upload_account_mb: Some(50),
                upload_retention_days: Some(30),
                max_rooms: Some(0),
                max_room_occupants: Some(1),
            }
        );
        for (field, bad, says) in [
            ("upload_max_file_mb", "-1", "0 or more"),
            ("upload_max_file_mb", "2.5", "0 or more"),
            ("upload_account_mb", "lots", "0 or more"),
            ("upload_account_mb", "10000001", "0 or more"),
            ("upload_retention_days", "0", "1 to 3650"),
            ("upload_retention_days", "3651", "1 to 3650"),
            ("max_rooms", "-5", "0 or more"),
            ("max_room_occupants", "0", "at least 1"),
            ("max_room_occupants", "ten", "at least 1"),
        ] {
            let errors = small(&[(field, bad)]).check(false).unwrap_err();
            assert!(
                errors.get(field).is_some_and(|e| e.contains(says)),
                "{field}={bad}: {errors:?}"
            );
        }
    }

    #[test]
    fn the_largest_file_fits_in_an_accounts_uploads_and_those_in_the_domains() {
        let errors = small(&[("upload_max_file_mb", "60"), ("upload_account_mb", "50")])
            .check(false)
            .unwrap_err();
        assert!(
            errors
                .get("upload_max_file_mb")
                .unwrap()
                .contains("(50 MB)"),
            "{errors:?}"
        );
        let errors = small(&[("upload_max_file_mb", "101")])
            .check(false)
            .unwrap_err();
        assert!(
            errors
                .get("upload_max_file_mb")
                .unwrap()
                .contains("the domain's file uploads (100 MB)")
        );
        let errors = small(&[("upload_account_mb", "101")])
            .check(false)
            .unwrap_err();
        assert!(
            errors
                .get("upload_account_mb")
                .unwrap()
                .contains("(100 MB)")
        );
        // Equal is fine.
        assert!(
            small(&[("upload_max_file_mb", "100"), ("upload_account_mb", "100")])
                .check(false)
                .is_ok()
        );
        // A bad total is its own error, not a comparison.
        let errors = small(&[("upload_mb", "x"), ("upload_max_file_mb", "5")])
            .check(false)
            .unwrap_err();
        assert!(errors.get("upload_mb").is_some());
        assert!(errors.get("upload_max_file_mb").is_none());
    }

    #[test]
    fn offline_retention_is_optional_and_between_a_day_and_ten_years() {
        let input = |days: &str| PlanInput {
            name: "Small".into(),
            price: "0".into(),
            currency: "EUR".into(),
            max_accounts: "10".into(),
            max_sessions: "20".into(),
            storage_mb: "100".into(),
            upload_mb: "100".into(),
            archive_days: "30".into(),
            offline_days: days.into(),
            ..Default::default()
        };
        let days = |d: &str| input(d).check(false).map(|p| p.offline_days);
        assert_eq!(days("").ok(), Some(None));
        assert_eq!(days(" 14 ").ok(), Some(Some(14)));
        assert_eq!(days("1").ok(), Some(Some(1)));
        assert_eq!(days("3650").ok(), Some(Some(3650)));
        for bad in ["0", "-3", "3651", "2.5", "a week"] {
            let errors = days(bad).unwrap_err();
            assert!(
                errors.get("offline_days").unwrap().contains("1 to 3650"),
                "{bad}"
            );
        }
    }
}
