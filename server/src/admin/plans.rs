//! Plans customers choose from: name, monthly price, limits (accounts, connections,
//! storage, uploads, archive, offline message retention) and the Stripe price. Admins
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

const COLUMNS: &str = "id, name, description, price_cents, currency, max_accounts, max_sessions, storage_mb, upload_mb, archive_days, offline_days, stripe_price_id, is_public, node_labels";

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
    node_labels: String,
    stripe_price_id: String,
    public: Option<String>,
}

/// A checked plan, ready to store.
struct Plan {
    name: String,
    description: String,
    price_cents: i64,
    currency: String,
    limits: [i64; 5],
    /// Days an offline message is kept; None: the node's default.
    offline_days: Option<i64>,
    stripe_price_id: Option<String>,
    public: bool,
    /// Node labels the plan's domains need, as stored (a JSON object).
    node_labels: String,
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl Plan {
    /// Binds the plan's thirteen columns in this order: name, description, price_cents,
    /// currency, max_accounts, max_sessions, storage_mb, upload_mb, archive_days,
    /// stripe_price_id, is_public, offline_days, node_labels.
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
                "INSERT INTO plans (id, name, description, price_cents, currency, max_accounts, max_sessions, storage_mb, upload_mb, archive_days, stripe_price_id, is_public, offline_days, node_labels, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
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
        offline_days: p.offline_days.map(|d| d.to_string()).unwrap_or_default(),
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
                    node_labels = $13, updated_at = $14 WHERE id = $15",
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
                    // (all of them, offline retention included: `spec_for` reads the plan).
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
                    let details = format!(
                        "accounts {}→{}, connections {}→{}, storage {}→{} MB, offline messages {}→{}{labels}; {moved} domain(s) updated",
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
