//! `/api/v1/customers`: a reseller's customer organisations (organisations whose
//! `parent_id` is the reseller). Reseller keys list, create, read, rename and delete their
//! own customers; admin keys see every customer organisation and name the reseller when
//! they create one; customer keys get 403 `reseller_only` on the list and 404 on the rest.

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    auth::{Kind, Principal},
    etag,
    pagination::{self, PageQuery},
    problem::{ApiJson, ApiQuery, ApiResult, FieldError, Problem},
};
use crate::{
    orgs::{
        self,
        db::{self as orgs_db, Org},
    },
    state::AppState,
};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/customers", get(list_customers).post(create_customer))
        .route(
            "/customers/{customer_id}",
            get(get_customer)
                .patch(update_customer)
                .delete(delete_customer),
        )
        .route("/customers/{customer_id}/invitations", post(invite))
}

/// A customer organisation of a reseller.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Customer {
    pub id: String,
    pub name: String,
    /// The reseller organisation it belongs to.
    pub reseller_id: String,
    /// Unix seconds, UTC.
    pub created_at: i64,
}

#[derive(Serialize, ToSchema)]
pub struct CustomerPage {
    pub items: Vec<Customer>,
    /// The cursor of the next page; null on the last one.
    pub next_cursor: Option<String>,
}

fn representation(org: &Org, created_at: i64) -> Customer {
    Customer {
        id: org.id.0.clone(),
        name: org.name.clone(),
        reseller_id: org
            .parent_id
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_default(),
        created_at,
    }
}

fn reseller_only() -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "reseller_only",
        "Only a reseller's key (or an admin key) manages customer organisations.",
    )
}

/// A customer organisation the key may act on; 404 otherwise (customer keys included).
async fn visible_customer(state: &AppState, who: &Principal, id: &str) -> ApiResult<Customer> {
    if who.kind == Kind::Customer {
        return Err(Problem::not_found());
    }
    let org = who.org(state, id).await?;
    if org.parent_id.is_none() {
        return Err(Problem::not_found());
    }
    let created = orgs_db::created_at(&state.db, &org.id)
        .await?
        .unwrap_or_default();
    Ok(representation(&org, created))
}

fn valid_name(field: &str, input: &str) -> ApiResult<String> {
    match orgs::org_name(input, String::new) {
        Ok(name) if !name.is_empty() => Ok(name),
        other => Err(Problem::validation(vec![FieldError {
            field: field.into(),
            code: "invalid_name".into(),
            message: other
                .err()
                .unwrap_or("Enter a name for the organisation.")
                .into(),
        }])),
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerFilter {
    /// Admin keys: only this reseller's customers.
    pub reseller_id: Option<String>,
}

/// List customers
#[utoipa::path(
    get,
    path = "/api/v1/customers",
    tag = "customers",
    operation_id = "list_customers",
    params(PageQuery, CustomerFilter),
    responses(
        (status = 200, description = "A page of customer organisations, by id", body = CustomerPage),
        (status = 403, description = "`reseller_only`: a customer's key", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn list_customers(
    State(state): State<AppState>,
    who: Principal,
    ApiQuery(q): ApiQuery<PageQuery>,
    ApiQuery(filter): ApiQuery<CustomerFilter>,
) -> ApiResult<Json<CustomerPage>> {
    let req = q.check()?;
    // What the key may not see is a 404 first, as everywhere.
    let parent = match (&filter.reseller_id, who.kind, &who.org_id) {
        (Some(reseller), _, _) => Some(who.org(&state, reseller).await?.id),
        (None, Kind::Reseller, Some(own)) => Some(own.clone()),
        _ => None,
    };
    if who.kind == Kind::Customer {
        return Err(reseller_only());
    }
    let rows = orgs_db::customers_page(
        &state.db,
        parent.as_ref(),
        req.after.as_deref(),
        i64::from(req.limit) + 1,
    )
    .await?;
    let (rows, next_cursor) = pagination::finish(rows, &req, |(o, _)| &o.id.0);
    Ok(Json(CustomerPage {
        items: rows.iter().map(|(o, at)| representation(o, *at)).collect(),
        next_cursor,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomer {
    /// 1 to 100 characters.
    #[schema(example = "Example Ltd")]
    pub name: String,
    /// Admin keys: the reseller the customer belongs to. Reseller keys: omit (or their own).
    pub reseller_id: Option<String>,
}

/// Create a customer
///
/// A new organisation under the reseller. It has no members yet; the reseller orders
/// domains for it with `POST /domains` and its `org_id`.
#[utoipa::path(
    post,
    path = "/api/v1/customers",
    tag = "customers",
    operation_id = "create_customer",
    params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry of this POST return the first answer (24 hours)")),
    request_body(content = CreateCustomer, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = Customer, headers(
            ("Location" = String, description = "The new customer's URL"),
            ("ETag" = String, description = "The customer's current ETag"))),
        (status = 403, description = "`reseller_only` or `read_only_key`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`invalid_name`, `invalid_reseller`) or `idempotency_key_reused`", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn create_customer(
    State(state): State<AppState>,
    who: Principal,
    ApiJson(body): ApiJson<CreateCustomer>,
) -> ApiResult<Response> {
    who.require_write()?;
    let reseller = match (&body.reseller_id, who.kind, &who.org_id) {
        (Some(r), _, _) => Some(who.org(&state, r).await?),
        (None, Kind::Reseller, Some(own)) => orgs_db::org_by_id(&state.db, own).await?,
        _ => None,
    };
    if who.kind == Kind::Customer {
        return Err(reseller_only());
    }
    let Some(reseller) = reseller.filter(|r| r.is_reseller) else {
        return Err(Problem::validation(vec![FieldError {
            field: "reseller_id".into(),
            code: "invalid_reseller".into(),
            message: "Name a reseller organisation.".into(),
        }]));
    };
    let name = valid_name("name", &body.name)?;
    let now = state.clock.now();
    let org = orgs_db::create_customer_org(&state.db, &name, &reseller.id, now).await?;
    tracing::info!(
        org = org.id.0,
        reseller = reseller.id.0,
        "customer organisation created through the API"
    );
    let mut response = etag::with_etag(StatusCode::CREATED, representation(&org, now));
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/customers/{}", org.id.0)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// Get a customer
#[utoipa::path(
    get,
    path = "/api/v1/customers/{customer_id}",
    tag = "customers",
    operation_id = "get_customer",
    params(("customer_id" = String, Path, description = "The customer organisation's id")),
    responses((status = 200, description = "The customer", body = Customer,
        headers(("ETag" = String, description = "The customer's current ETag")))),
)]
pub async fn get_customer(
    State(state): State<AppState>,
    who: Principal,
    Path(customer_id): Path<String>,
) -> ApiResult<Response> {
    let customer = visible_customer(&state, &who, &customer_id).await?;
    Ok(etag::with_etag(StatusCode::OK, customer))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomer {
    /// A new name, 1 to 100 characters.
    pub name: Option<String>,
}

/// Update a customer
///
/// Send `If-Match` with the ETag of the customer as read to change it only if nobody else
/// did meanwhile (412 `precondition_failed` otherwise).
#[utoipa::path(
    patch,
    path = "/api/v1/customers/{customer_id}",
    tag = "customers",
    operation_id = "update_customer",
    params(
        ("customer_id" = String, Path, description = "The customer organisation's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the change is based on"),
    ),
    request_body(content = UpdateCustomer, content_type = "application/json"),
    responses(
        (status = 200, description = "Updated", body = Customer,
            headers(("ETag" = String, description = "The customer's new ETag"))),
        (status = 412, description = "`precondition_failed`: If-Match does not match", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 422, description = "`validation_failed` (`invalid_name`)", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn update_customer(
    State(state): State<AppState>,
    who: Principal,
    Path(customer_id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateCustomer>,
) -> ApiResult<Response> {
    who.require_write()?;
    let mut customer = visible_customer(&state, &who, &customer_id).await?;
    etag::check_if_match(&headers, &etag::of(&customer))?;
    if let Some(name) = &body.name {
        let name = valid_name("name", name)?;
        let org = orgs_db::OrgId(customer.id.clone());
        if etag::conditional(&headers) {
            // Written only if nothing changed since the ETag was checked.
            let was = (&customer.name, Some(customer.reseller_id.as_str()));
            if !orgs_db::rename_unchanged(&state.db, &org, was.0, was.1, &name).await? {
                return Err(etag::changed_meanwhile());
            }
        } else {
            orgs_db::rename(&state.db, &org, &name).await?;
        }
        customer.name = name;
    }
    Ok(etag::with_etag(StatusCode::OK, customer))
}

/// Delete a customer
///
/// Removes a customer organisation that has no domains (none ordered, or the reseller made
/// it by mistake) and no customers of its own, with its members' access to it, its API
/// keys, alert contacts and webhook endpoints (the people's logins stay). An organisation
/// that had domains keeps its history, deleted domains included: 409
/// `customer_not_empty`. Send `If-Match` to delete only the customer as read.
#[utoipa::path(
    delete,
    path = "/api/v1/customers/{customer_id}",
    tag = "customers",
    operation_id = "delete_customer",
    params(
        ("customer_id" = String, Path, description = "The customer organisation's id"),
        ("If-Match" = Option<String>, Header, description = "The ETag the deletion is based on"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 409, description = "`customer_not_empty`: it has domains (or had them) or customers", body = super::problem::ProblemBody, content_type = "application/problem+json"),
        (status = 412, description = "`precondition_failed`: If-Match does not match", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn delete_customer(
    State(state): State<AppState>,
    who: Principal,
    Path(customer_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    who.require_write()?;
    let customer = visible_customer(&state, &who, &customer_id).await?;
    etag::check_if_match(&headers, &etag::of(&customer))?;
    let org = orgs_db::OrgId(customer.id.clone());
    match orgs_db::delete_if_empty(&state.db, &org).await? {
        orgs_db::Deleted::Yes => {
            tracing::info!(
                org = customer.id,
                reseller = customer.reseller_id,
                key = who.key_id,
                "customer organisation deleted through the API"
            );
            Ok(StatusCode::NO_CONTENT)
        }
        orgs_db::Deleted::Gone => Err(Problem::not_found()),
        orgs_db::Deleted::NotEmpty { domains, customers } => Err(Problem::new(
            StatusCode::CONFLICT,
            "customer_not_empty",
            format!(
                "The organisation has {domains} domain(s) (deleted ones count: their history is kept) and {customers} customer organisation(s); only an empty one can be deleted."
            ),
        )),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    /// Who to invite: they get the panel's invitation email with a link (7 days).
    #[schema(example = "owner@buyer.example")]
    pub email: String,
    /// `owner` (the default: manages the organisation's domains, team and billing) or
    /// `member`.
    pub role: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Invitation {
    pub customer_id: String,
    pub email: String,
    pub role: String,
    /// Unix seconds, UTC: the link stops working then.
    pub expires_at: i64,
}

/// Invite a person into a customer
///
/// Gives the people of a customer organisation made through the API their way into the
/// panel: they get the same invitation email as from its Team page, sign in or sign up,
/// and join as `owner` or `member`. A new invitation to the same address replaces a
/// pending one.
#[utoipa::path(
    post,
    path = "/api/v1/customers/{customer_id}/invitations",
    tag = "customers",
    operation_id = "invite_to_customer",
    params(
        ("customer_id" = String, Path, description = "The customer organisation's id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry of this POST return the first answer (24 hours)"),
    ),
    request_body(content = CreateInvitation, content_type = "application/json"),
    responses(
        (status = 201, description = "Invited: the email is on its way", body = Invitation),
        (status = 422, description = "`validation_failed` (`invalid_email`, `invalid_role`, `already_member`)", body = super::problem::ProblemBody, content_type = "application/problem+json"),
    ),
)]
pub async fn invite(
    State(state): State<AppState>,
    who: Principal,
    Path(customer_id): Path<String>,
    ApiJson(body): ApiJson<CreateInvitation>,
) -> ApiResult<Response> {
    who.require_write()?;
    let customer = visible_customer(&state, &who, &customer_id).await?;
    let field = |field: &str, code: &str, message: &str| {
        Problem::validation(vec![FieldError {
            field: field.into(),
            code: code.into(),
            message: message.into(),
        }])
    };
    let role = match body.role.as_deref() {
        None => orgs_db::Role::Owner,
        Some(r) => orgs_db::Role::parse(r)
            .ok_or_else(|| field("role", "invalid_role", "Use \"owner\" or \"member\"."))?,
    };
    let address = crate::auth::email::parse(&body.email)
        .map_err(|why| field("email", "invalid_email", why))?;
    let org = orgs_db::OrgId(customer.id.clone());
    if orgs_db::members(&state.db, &org)
        .await?
        .iter()
        .any(|m| m.email.to_lowercase() == address.normalized)
    {
        return Err(field(
            "email",
            "already_member",
            "This person is already a member of the organisation.",
        ));
    }
    let Some(org_row) = orgs_db::org_by_id(&state.db, &org).await? else {
        return Err(Problem::not_found());
    };
    // The email names who invites: the reseller (an admin key: the platform).
    let on_behalf_of = match &who.org_id {
        Some(own) => orgs_db::org_by_id(&state.db, own)
            .await?
            .map(|o| o.name)
            .unwrap_or_default(),
        None => "The platform's administrators".to_string(),
    };
    let expires_at = orgs::invite(
        &state,
        &org_row,
        &address,
        role,
        orgs::Inviter::Api {
            on_behalf_of: &on_behalf_of,
        },
    )
    .await
    .map_err(|e| {
        tracing::error!(error = format!("{e:#}"), "an API invitation failed");
        Problem::internal()
    })?;
    tracing::info!(
        org = customer.id,
        key = who.key_id,
        role = role.as_str(),
        "invitation sent through the API"
    );
    Ok((
        StatusCode::CREATED,
        Json(Invitation {
            customer_id: customer.id,
            email: address.display,
            role: role.as_str().into(),
            expires_at,
        }),
    )
        .into_response())
}
