//! Plans customers choose from: name, monthly price, limits. Admins create them here; the
//! landing page shows the public ones.

use axum::{
    Form, Router,
    extract::{Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use rookery_frontend::{
    FormErrors,
    pages::{
        PlanView,
        admin::{PlanForm, plans as plans_page},
    },
};
use serde::Deserialize;
use sqlx::Row;

use crate::{
    auth::session::Admin,
    clock::new_id,
    db::{Pool, is_unique_violation},
    error::AppResult,
    pages::{NoticeQuery, ctx},
    state::AppState,
};

pub fn router() -> Router<AppState> {
    Router::new().route("/admin/plans", get(show_plans).post(create_plan))
}

/// Plans, cheapest first; only those on the landing page when `public_only`.
#[tracing::instrument(skip_all)]
pub async fn list(db: &Pool, public_only: bool) -> Result<Vec<PlanView>, sqlx::Error> {
    let sql = format!(
        "SELECT id, name, description, price_cents, currency, max_accounts, max_sessions, storage_mb, is_public FROM plans {} ORDER BY price_cents, name",
        if public_only {
            "WHERE is_public = 1"
        } else {
            ""
        }
    );
    sqlx::query(&sql)
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| {
            Ok(PlanView {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                price_cents: r.try_get("price_cents")?,
                currency: r.try_get("currency")?,
                max_accounts: r.try_get("max_accounts")?,
                max_sessions: r.try_get("max_sessions")?,
                storage_mb: r.try_get("storage_mb")?,
                public: r.try_get::<i64, _>("is_public")? != 0,
            })
        })
        .collect()
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
        ..Default::default()
    };
    Ok(Html(plans_page(ctx, plans, form)))
}

#[derive(Deserialize)]
struct NewPlan {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    price: String,
    #[serde(default)]
    currency: String,
    #[serde(default)]
    max_accounts: String,
    #[serde(default)]
    max_sessions: String,
    #[serde(default)]
    storage_mb: String,
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

fn positive(s: &str) -> Option<i64> {
    s.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0 && *n <= 10_000_000)
}

async fn create_plan(
    State(state): State<AppState>,
    Admin(admin): Admin,
    Form(f): Form<NewPlan>,
) -> AppResult<Response> {
    let mut errors = FormErrors::default();
    let name = f.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 60 {
        errors.add("name", "Enter a name of at most 60 characters.");
    }
    let price = parse_price(&f.price);
    if price.is_none() {
        errors.add("price", "Enter a price like 4.50 (or 0 for free).");
    }
    let currency = f.currency.trim().to_uppercase();
    if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
        errors.add("currency", "Enter a three-letter currency code like EUR.");
    }
    let limits = [
        ("max_accounts", &f.max_accounts),
        ("max_sessions", &f.max_sessions),
        ("storage_mb", &f.storage_mb),
    ]
    .map(|(field, v)| {
        let n = positive(v);
        if n.is_none() {
            errors.add(field, "Enter a whole number above 0.");
        }
        n
    });
    if errors.is_empty() {
        let inserted = sqlx::query(
            "INSERT INTO plans (id, name, description, price_cents, currency, max_accounts, max_sessions, storage_mb, is_public, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9)",
        )
        .bind(new_id())
        .bind(&name)
        .bind(f.description.trim())
        .bind(price.unwrap_or_default())
        .bind(&currency)
        .bind(limits[0].unwrap_or_default())
        .bind(limits[1].unwrap_or_default())
        .bind(limits[2].unwrap_or_default())
        .bind(state.clock.now())
        .execute(&state.db)
        .await;
        match inserted {
            Ok(_) => return Ok(Redirect::to("/admin/plans?notice=plan-created").into_response()),
            Err(e) if is_unique_violation(&e) => {
                errors.add("name", "A plan with this name exists already.")
            }
            Err(e) => return Err(e.into()),
        }
    }
    let plans = list(&state.db, false).await?;
    let ctx = ctx(&state, &admin.visitor, "Plans", "admin-plans", None, None).await?;
    let form = PlanForm {
        name: f.name,
        description: f.description,
        price: f.price,
        currency: f.currency,
        max_accounts: f.max_accounts,
        max_sessions: f.max_sessions,
        storage_mb: f.storage_mb,
        errors,
    };
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        Html(plans_page(ctx, plans, form)),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
