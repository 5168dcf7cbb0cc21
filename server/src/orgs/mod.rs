//! Organisations (tenants): every customer works inside one, as its owner or a member;
//! owners invite their team by email. A reseller organisation owns customer organisations.
//!
//! Pages live under `/o/{org_id}/…`. [`OrgAccess`] admits members only: anyone else gets
//! the same 404 as for an organisation that does not exist.

pub mod db;

use axum::{
    Form, Router,
    extract::{FromRequestParts, Path, Query, State},
    http::request::Parts,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use rookery_frontend::{
    FormErrors,
    pages::{
        org::{self as pages, DashboardView, MemberView, PendingInvite, TeamView},
        public::{InvitationState, InvitationView, invitation as invitation_page},
    },
};
use serde::Deserialize;

use self::db::{Org, OrgId, Role};
use crate::{
    auth::{
        email,
        session::{LoginRedirectOr, SignedIn, Visitor},
    },
    clock::{format_ts, new_token, token_hash},
    error::{AppError, AppResult},
    pages::{NoticeQuery, ctx},
    state::AppState,
};

/// How long an emailed invitation can be accepted.
const INVITATION_TTL: i64 = 7 * 24 * 3600;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/dashboard", get(dashboard_redirect))
        .route("/orgs", post(create_org))
        .route("/o/{org_id}", get(show_dashboard))
        .route("/o/{org_id}/team", get(show_team))
        .route("/o/{org_id}/team/invite", post(invite_member))
        .route(
            "/o/{org_id}/team/invitations/{invitation_id}/revoke",
            post(revoke_invitation),
        )
        .route(
            "/o/{org_id}/team/members/{user_id}/remove",
            post(remove_member),
        )
        .route(
            "/invitations/{token}",
            get(show_invitation).post(accept_invitation),
        )
}

/// A signed-in member of the organisation named in the path.
pub struct OrgAccess {
    pub signed_in: SignedIn,
    pub org: Org,
    pub role: Role,
}

#[derive(Deserialize)]
struct OrgPath {
    org_id: String,
}

impl FromRequestParts<AppState> for OrgAccess {
    type Rejection = LoginRedirectOr;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, LoginRedirectOr> {
        let signed_in =
            <SignedIn as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        let Path(OrgPath { org_id }) = Path::<OrgPath>::from_request_parts(parts, state)
            .await
            .map_err(|_| LoginRedirectOr::Error(AppError::NotFound))?;
        match db::membership(&state.db, &OrgId(org_id), &signed_in.user.id)
            .await
            .map_err(AppError::from)?
        {
            Some((org, role)) => Ok(OrgAccess {
                signed_in,
                org,
                role,
            }),
            None => Err(LoginRedirectOr::Error(AppError::NotFound)),
        }
    }
}

impl OrgAccess {
    pub fn require_owner(&self) -> AppResult<()> {
        match self.role {
            Role::Owner => Ok(()),
            Role::Member => Err(AppError::Forbidden(
                "Only owners of this organisation can do that.",
            )),
        }
    }

    fn base(&self) -> String {
        format!("/o/{}", self.org.id.0)
    }
}

/// `/dashboard`: the person's first organisation, or a way to make one.
async fn dashboard_redirect(
    State(state): State<AppState>,
    signed_in: SignedIn,
) -> AppResult<Response> {
    let orgs = db::orgs_of_user(&state.db, &signed_in.user.id).await?;
    if let Some((org, _)) = orgs.first() {
        return Ok(Redirect::to(&format!("/o/{}", org.id.0)).into_response());
    }
    if signed_in.user.is_admin {
        return Ok(Redirect::to("/admin/tenants").into_response());
    }
    let ctx = ctx(
        &state,
        &signed_in.visitor,
        "No organisation",
        "no-org",
        None,
        None,
    )
    .await?;
    Ok(Html(pages::no_org(ctx, FormErrors::default())).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CreateOrgForm {
    name: String,
}

/// Validates an organisation name; `default` stands in for an empty one.
pub fn org_name(input: &str, default: impl FnOnce() -> String) -> Result<String, &'static str> {
    let name = input.trim();
    if name.is_empty() {
        return Ok(default());
    }
    if name.chars().count() > 100 {
        return Err("Use at most 100 characters.");
    }
    if name.chars().any(char::is_control) {
        return Err("The name contains characters that cannot be shown.");
    }
    Ok(name.to_string())
}

async fn create_org(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Form(form): Form<CreateOrgForm>,
) -> AppResult<Response> {
    let name = match org_name(&form.name, String::new) {
        Ok(n) if !n.is_empty() => n,
        Ok(_) | Err(_) => {
            let mut errors = FormErrors::default();
            errors.add(
                "name",
                org_name(&form.name, String::new)
                    .err()
                    .unwrap_or("Enter a name for the organisation."),
            );
            let ctx = ctx(
                &state,
                &signed_in.visitor,
                "No organisation",
                "no-org",
                None,
                None,
            )
            .await?;
            return Ok((
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                Html(pages::no_org(ctx, errors)),
            )
                .into_response());
        }
    };
    let now = state.clock.now();
    let mut tx = rookery_common::db::begin_write(&state.db).await?;
    let org = db::create_org(&mut *tx, &name, now).await?;
    db::add_member(&mut *tx, &org, &signed_in.user.id, Role::Owner, now).await?;
    tx.commit().await?;
    Ok(Redirect::to(&format!("/o/{}?notice=org-created", org.0)).into_response())
}

async fn show_dashboard(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let members = db::members(&state.db, &access.org.id).await?.len() as i64;
    let customers = if access.org.is_reseller {
        db::count_customers(&state.db, &access.org.id).await?
    } else {
        0
    };
    let ctx = ctx(
        &state,
        &access.signed_in.visitor,
        access.org.name.clone(),
        "dashboard",
        Some(&access.org),
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(pages::dashboard(
        ctx,
        DashboardView {
            org_id: access.org.id.0.clone(),
            org_name: access.org.name.clone(),
            role: access.role.as_str().into(),
            members,
            is_reseller: access.org.is_reseller,
            customers,
            domains: crate::domains::db::count_for_org(&state.db, &access.org.id.0).await?,
            health: crate::domains::health(&state, &access.org.id.0, 10).await?,
        },
    )))
}

async fn team_view(state: &AppState, access: &OrgAccess) -> AppResult<TeamView> {
    let now = state.clock.now();
    let members = db::members(&state.db, &access.org.id).await?;
    let invitations = if access.role == Role::Owner {
        db::pending_invitations(&state.db, &access.org.id, now).await?
    } else {
        vec![]
    };
    Ok(TeamView {
        org_id: access.org.id.0.clone(),
        org_name: access.org.name.clone(),
        can_manage: access.role == Role::Owner,
        members: members
            .into_iter()
            .map(|m| MemberView {
                is_self: m.user_id == access.signed_in.user.id,
                user_id: m.user_id,
                email: m.email,
                role: m.role.as_str().into(),
                joined: format_ts(m.joined_at),
            })
            .collect(),
        invitations: invitations
            .into_iter()
            .map(|i| PendingInvite {
                id: i.id,
                email: i.email,
                role: i.role.as_str().into(),
                expires: format_ts(i.expires_at),
            })
            .collect(),
        invite_role: "member".into(),
        ..Default::default()
    })
}

async fn show_team(
    State(state): State<AppState>,
    access: OrgAccess,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let view = team_view(&state, &access).await?;
    let ctx = ctx(
        &state,
        &access.signed_in.visitor,
        "Team",
        "team",
        Some(&access.org),
        q.notice.as_deref(),
    )
    .await?;
    Ok(Html(pages::team(ctx, view)))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct InviteForm {
    email: String,
    role: String,
}

async fn invite_member(
    State(state): State<AppState>,
    access: OrgAccess,
    Form(form): Form<InviteForm>,
) -> AppResult<Response> {
    access.require_owner()?;
    let mut errors = FormErrors::default();
    let role = Role::parse(&form.role);
    if role.is_none() {
        errors.add("role", "Choose member or owner.");
    }
    let address = match email::parse(&form.email) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.add("email", e);
            None
        }
    };
    if let Some(a) = &address {
        let members = db::members(&state.db, &access.org.id).await?;
        if members
            .iter()
            .any(|m| m.email.to_lowercase() == a.normalized)
        {
            errors.add("email", "This person is already a member.");
        }
    }
    let (Some(address), Some(role), true) = (address, role, errors.is_empty()) else {
        let mut view = team_view(&state, &access).await?;
        view.invite_email = form.email.trim().to_string();
        view.invite_role = form.role;
        view.errors = errors;
        let ctx = ctx(
            &state,
            &access.signed_in.visitor,
            "Team",
            "team",
            Some(&access.org),
            None,
        )
        .await?;
        return Ok((
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            Html(pages::team(ctx, view)),
        )
            .into_response());
    };
    invite(
        &state,
        &access.org,
        &address,
        role,
        Inviter::Member {
            id: &access.signed_in.user.id,
            email: &access.signed_in.user.email,
        },
    )
    .await?;
    Ok(Redirect::to(&format!("{}/team?notice=invited", access.base())).into_response())
}

/// Who invites someone into an organisation.
pub enum Inviter<'a> {
    /// A member, on the Team page.
    Member { id: &'a str, email: &'a str },
    /// An API key of a reseller (or an admin), named in the email by its organisation.
    Api { on_behalf_of: &'a str },
}

/// Invites `address` into `org` as `role`: records the invitation (replacing a pending one
/// for the same address) and emails its link, valid for 7 days. Returns when it expires.
pub async fn invite(
    state: &AppState,
    org: &Org,
    address: &email::Email,
    role: Role,
    by: Inviter<'_>,
) -> anyhow::Result<i64> {
    let now = state.clock.now();
    let token = new_token();
    let (invited_by, who) = match by {
        Inviter::Member { id, email } => (Some(id), email),
        Inviter::Api { on_behalf_of } => (None, on_behalf_of),
    };
    let expires_at = now + INVITATION_TTL;
    db::insert_invitation(
        &state.db,
        db::NewInvitation {
            org: &org.id,
            email: &address.display,
            email_normalized: &address.normalized,
            role,
            token_hash: &token_hash(&token),
            invited_by,
            expires_at,
        },
        now,
    )
    .await?;
    let link = format!("{}/invitations/{token}", state.settings.base_url());
    state
        .mailer
        .send(
            &address.display,
            &format!("You are invited to join {} on Rookery", org.name),
            format!(
                "Hello,\n\n{who} invited you to join {} on Rookery as {}.\n\nAccept the invitation here (the link works for 7 days):\n{link}\n\nIf you did not expect this, ignore this email.\n",
                org.name,
                role.as_str()
            ),
        )
        .await?;
    Ok(expires_at)
}

#[derive(Deserialize)]
struct InvitationPath {
    invitation_id: String,
}

async fn revoke_invitation(
    State(state): State<AppState>,
    access: OrgAccess,
    Path(p): Path<InvitationPath>,
) -> AppResult<Redirect> {
    access.require_owner()?;
    if !db::revoke_invitation(
        &state.db,
        &access.org.id,
        &p.invitation_id,
        state.clock.now(),
    )
    .await?
    {
        return Err(AppError::NotFound);
    }
    Ok(Redirect::to(&format!(
        "{}/team?notice=invitation-revoked",
        access.base()
    )))
}

#[derive(Deserialize)]
struct MemberPath {
    user_id: String,
}

async fn remove_member(
    State(state): State<AppState>,
    access: OrgAccess,
    Path(p): Path<MemberPath>,
) -> AppResult<Redirect> {
    access.require_owner()?;
    if p.user_id == access.signed_in.user.id {
        return Err(AppError::BadRequest(
            "You cannot remove yourself. Ask another owner to do it.".into(),
        ));
    }
    if !db::remove_member(&state.db, &access.org.id, &p.user_id).await? {
        return Err(AppError::NotFound);
    }
    Ok(Redirect::to(&format!(
        "{}/team?notice=member-removed",
        access.base()
    )))
}

#[derive(Deserialize)]
struct TokenPath {
    token: String,
}

async fn load_invitation(state: &AppState, token: &str) -> AppResult<(db::Invitation, Org)> {
    let inv = db::invitation_by_token(&state.db, &token_hash(token), state.clock.now())
        .await?
        .ok_or(AppError::NotFound)?;
    let org = db::org_by_id(&state.db, &inv.org_id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok((inv, org))
}

async fn show_invitation(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(p): Path<TokenPath>,
) -> AppResult<Html<String>> {
    let (inv, org) = load_invitation(&state, &p.token).await?;
    let state_for_person = match &visitor.user {
        None => InvitationState::SignInFirst,
        Some(u) if u.email.to_lowercase() != inv.email_normalized => {
            InvitationState::WrongAccount(u.email.clone())
        }
        Some(_) => InvitationState::CanAccept,
    };
    let ctx = ctx(
        &state,
        &visitor,
        format!("Join {}", org.name),
        "invitation",
        None,
        None,
    )
    .await?;
    Ok(Html(invitation_page(
        ctx,
        InvitationView {
            token: p.token,
            org_name: org.name,
            email: inv.email,
            role: inv.role.as_str().into(),
            state: state_for_person,
        },
    )))
}

async fn accept_invitation(
    State(state): State<AppState>,
    signed_in: SignedIn,
    Path(p): Path<TokenPath>,
) -> AppResult<Redirect> {
    let (inv, org) = load_invitation(&state, &p.token).await?;
    if signed_in.user.email.to_lowercase() != inv.email_normalized {
        return Err(AppError::Forbidden(
            "This invitation is for another email address.",
        ));
    }
    let now = state.clock.now();
    db::accept_invitation(&state.db, &inv, &signed_in.user.id, now).await?;
    // The invitation reached this address, which confirms it.
    crate::auth::db::mark_verified(&state.db, &signed_in.user.id, now).await?;
    Ok(Redirect::to(&format!("/o/{}?notice=joined", org.id.0)))
}
