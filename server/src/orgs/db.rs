//! SQL for organisations (tenants), memberships and invitations. Every query on an
//! organisation's data takes its [`OrgId`].

use sqlx::Row;

use crate::{clock::new_id, db::Pool};

/// An organisation's id: the tenant key of everything it owns.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OrgId(pub String);

#[derive(Clone, Debug)]
pub struct Org {
    pub id: OrgId,
    pub name: String,
    pub is_reseller: bool,
    pub parent_id: Option<OrgId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

fn org_from_row(row: &sqlx::any::AnyRow) -> Result<Org, sqlx::Error> {
    Ok(Org {
        id: OrgId(row.try_get("id")?),
        name: row.try_get("name")?,
        is_reseller: row.try_get::<i64, _>("is_reseller")? != 0,
        parent_id: row.try_get::<Option<String>, _>("parent_id")?.map(OrgId),
    })
}

fn role_from_row(row: &sqlx::any::AnyRow) -> Result<Role, sqlx::Error> {
    let role: String = row.try_get("role")?;
    Role::parse(&role).ok_or_else(|| sqlx::Error::Decode(format!("unknown role {role:?}").into()))
}

/// The organisations a person belongs to, oldest membership first.
#[tracing::instrument(skip_all)]
pub async fn orgs_of_user(db: &Pool, user_id: &str) -> Result<Vec<(Org, Role)>, sqlx::Error> {
    sqlx::query(
        "SELECT o.id, o.name, o.is_reseller, o.parent_id, m.role FROM memberships m
         JOIN organisations o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY m.created_at, o.name",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Ok((org_from_row(r)?, role_from_row(r)?)))
    .collect()
}

/// The organisation and the person's role in it, if they are a member.
#[tracing::instrument(skip_all)]
pub async fn membership(
    db: &Pool,
    org: &OrgId,
    user_id: &str,
) -> Result<Option<(Org, Role)>, sqlx::Error> {
    sqlx::query(
        "SELECT o.id, o.name, o.is_reseller, o.parent_id, m.role FROM memberships m
         JOIN organisations o ON o.id = m.org_id WHERE m.org_id = $1 AND m.user_id = $2",
    )
    .bind(&org.0)
    .bind(user_id)
    .fetch_optional(db)
    .await?
    .map(|r| Ok((org_from_row(&r)?, role_from_row(&r)?)))
    .transpose()
}

#[tracing::instrument(skip_all)]
pub async fn org_by_id(db: &Pool, org: &OrgId) -> Result<Option<Org>, sqlx::Error> {
    sqlx::query("SELECT id, name, is_reseller, parent_id FROM organisations WHERE id = $1")
        .bind(&org.0)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(org_from_row)
        .transpose()
}

/// A new organisation with `user_id` as its owner.
#[tracing::instrument(skip_all)]
pub async fn create_org<'c, E>(exec: E, name: &str, now: i64) -> Result<OrgId, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let id = new_id();
    sqlx::query("INSERT INTO organisations (id, name, is_reseller, parent_id, created_at) VALUES ($1, $2, 0, NULL, $3)")
        .bind(&id)
        .bind(name)
        .bind(now)
        .execute(exec)
        .await?;
    Ok(OrgId(id))
}

/// A new customer organisation of the reseller `parent` (the REST API's `POST /customers`);
/// it has no members until the reseller invites someone.
#[tracing::instrument(skip_all)]
pub async fn create_customer_org(
    db: &Pool,
    name: &str,
    parent: &OrgId,
    now: i64,
) -> Result<Org, sqlx::Error> {
    let id = new_id();
    sqlx::query("INSERT INTO organisations (id, name, is_reseller, parent_id, created_at) VALUES ($1, $2, 0, $3, $4)")
        .bind(&id)
        .bind(name)
        .bind(&parent.0)
        .bind(now)
        .execute(db)
        .await?;
    Ok(Org {
        id: OrgId(id),
        name: name.to_string(),
        is_reseller: false,
        parent_id: Some(parent.clone()),
    })
}

/// Customer organisations (those with a parent) ordered by id, after `after`, at most
/// `limit`: of one reseller, or of every reseller with None.
#[tracing::instrument(skip_all)]
pub async fn customers_page(
    db: &Pool,
    parent: Option<&OrgId>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(Org, i64)>, sqlx::Error> {
    let filter = if parent.is_some() {
        "parent_id = $1"
    } else {
        "parent_id IS NOT NULL AND $1 = ''"
    };
    sqlx::query(&format!(
        "SELECT id, name, is_reseller, parent_id, created_at FROM organisations
         WHERE {filter} AND id > $2 ORDER BY id LIMIT $3"
    ))
    .bind(parent.map(|p| p.0.as_str()).unwrap_or(""))
    .bind(after.unwrap_or(""))
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Ok((org_from_row(r)?, r.try_get("created_at")?)))
    .collect()
}

/// When an organisation was created.
#[tracing::instrument(skip_all)]
pub async fn created_at(db: &Pool, org: &OrgId) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query("SELECT created_at FROM organisations WHERE id = $1")
        .bind(&org.0)
        .fetch_optional(db)
        .await?
        .map(|r| r.try_get("created_at"))
        .transpose()
}

#[tracing::instrument(skip_all)]
pub async fn rename(db: &Pool, org: &OrgId, name: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE organisations SET name = $1 WHERE id = $2")
        .bind(name)
        .bind(&org.0)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// What [`delete_if_empty`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Yes,
    /// Nothing to delete (already gone).
    Gone,
    /// Kept: it has (or had) domains, or organisations of its own.
    NotEmpty {
        domains: i64,
        customers: i64,
    },
}

/// Deletes an organisation that never had a domain and has no child organisations, with
/// what hangs off it (memberships, invitations, API keys, alert contacts, webhook
/// endpoints and deliveries go by their foreign keys). The check and the deletion are one
/// statement, so a domain ordered meanwhile keeps the organisation.
pub async fn delete_if_empty(db: &Pool, org: &OrgId) -> Result<Deleted, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM organisations WHERE id = $1
            AND NOT EXISTS (SELECT 1 FROM domains WHERE org_id = $1)
            AND NOT EXISTS (SELECT 1 FROM organisations c WHERE c.parent_id = $1)",
    )
    .bind(&org.0)
    .execute(db)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(Deleted::Yes);
    }
    let r = sqlx::query(
        "SELECT (SELECT COUNT(*) FROM organisations WHERE id = $1) AS present,
            (SELECT COUNT(*) FROM domains WHERE org_id = $1) AS domains,
            (SELECT COUNT(*) FROM organisations WHERE parent_id = $1) AS customers",
    )
    .bind(&org.0)
    .fetch_one(db)
    .await?;
    use sqlx::Row;
    if r.try_get::<i64, _>("present")? == 0 {
        return Ok(Deleted::Gone);
    }
    Ok(Deleted::NotEmpty {
        domains: r.try_get("domains")?,
        customers: r.try_get("customers")?,
    })
}

/// Renames the organisation only while it still has the name and reseller it had when
/// read (an update checked against an ETag): false when either changed meanwhile.
pub async fn rename_unchanged(
    db: &Pool,
    org: &OrgId,
    was_name: &str,
    was_parent: Option<&str>,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE organisations SET name = $1 WHERE id = $2 AND name = $3
            AND COALESCE(parent_id, '') = $4",
    )
    .bind(name)
    .bind(&org.0)
    .bind(was_name)
    .bind(was_parent.unwrap_or(""))
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[tracing::instrument(skip_all)]
pub async fn add_member<'c, E>(
    exec: E,
    org: &OrgId,
    user_id: &str,
    role: Role,
    now: i64,
) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&org.0)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now)
    .execute(exec)
    .await?;
    Ok(())
}

#[derive(Clone, Debug)]
pub struct Member {
    pub user_id: String,
    pub email: String,
    pub role: Role,
    pub joined_at: i64,
}

#[tracing::instrument(skip_all)]
pub async fn members(db: &Pool, org: &OrgId) -> Result<Vec<Member>, sqlx::Error> {
    sqlx::query(
        "SELECT u.id, u.email, m.role, m.created_at FROM memberships m JOIN users u ON u.id = m.user_id
         WHERE m.org_id = $1 ORDER BY m.created_at, u.email",
    )
    .bind(&org.0)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| {
        Ok(Member { user_id: r.try_get("id")?, email: r.try_get("email")?, role: role_from_row(r)?, joined_at: r.try_get("created_at")? })
    })
    .collect()
}

#[tracing::instrument(skip_all)]
pub async fn remove_member(db: &Pool, org: &OrgId, user_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
        .bind(&org.0)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

#[tracing::instrument(skip_all)]
pub async fn count_customers(db: &Pool, org: &OrgId) -> Result<i64, sqlx::Error> {
    sqlx::query("SELECT COUNT(*) AS n FROM organisations WHERE parent_id = $1")
        .bind(&org.0)
        .fetch_one(db)
        .await?
        .try_get("n")
}

// ---- invitations ------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Invitation {
    pub id: String,
    pub org_id: OrgId,
    pub email: String,
    pub email_normalized: String,
    pub role: Role,
    pub expires_at: i64,
}

fn invitation_from_row(r: &sqlx::any::AnyRow) -> Result<Invitation, sqlx::Error> {
    Ok(Invitation {
        id: r.try_get("id")?,
        org_id: OrgId(r.try_get("org_id")?),
        email: r.try_get("email")?,
        email_normalized: r.try_get("email_normalized")?,
        role: role_from_row(r)?,
        expires_at: r.try_get("expires_at")?,
    })
}

pub struct NewInvitation<'a> {
    pub org: &'a OrgId,
    pub email: &'a str,
    pub email_normalized: &'a str,
    pub role: Role,
    pub token_hash: &'a str,
    /// The member who invited; `None` for an invitation made with an API key.
    pub invited_by: Option<&'a str>,
    pub expires_at: i64,
}

/// Records an invitation, revoking any pending one for the same address first.
#[tracing::instrument(skip_all)]
pub async fn insert_invitation(
    db: &Pool,
    inv: NewInvitation<'_>,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    sqlx::query(
        "UPDATE invitations SET revoked_at = $1 WHERE org_id = $2 AND email_normalized = $3 AND accepted_at IS NULL AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(&inv.org.0)
    .bind(inv.email_normalized)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO invitations (id, org_id, email, email_normalized, role, token_hash, invited_by, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new_id())
    .bind(&inv.org.0)
    .bind(inv.email)
    .bind(inv.email_normalized)
    .bind(inv.role.as_str())
    .bind(inv.token_hash)
    .bind(inv.invited_by)
    .bind(now)
    .bind(inv.expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

const INVITATION_COLUMNS: &str = "id, org_id, email, email_normalized, role, expires_at";

#[tracing::instrument(skip_all)]
pub async fn pending_invitations(
    db: &Pool,
    org: &OrgId,
    now: i64,
) -> Result<Vec<Invitation>, sqlx::Error> {
    let sql = format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE org_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at"
    );
    sqlx::query(&sql)
        .bind(&org.0)
        .bind(now)
        .fetch_all(db)
        .await?
        .iter()
        .map(invitation_from_row)
        .collect()
}

/// A pending invitation by the hash of its emailed token.
#[tracing::instrument(skip_all)]
pub async fn invitation_by_token(
    db: &Pool,
    token_hash: &str,
    now: i64,
) -> Result<Option<Invitation>, sqlx::Error> {
    let sql = format!(
        "SELECT {INVITATION_COLUMNS} FROM invitations WHERE token_hash = $1 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $2"
    );
    sqlx::query(&sql)
        .bind(token_hash)
        .bind(now)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(invitation_from_row)
        .transpose()
}

#[tracing::instrument(skip_all)]
pub async fn revoke_invitation(
    db: &Pool,
    org: &OrgId,
    id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE invitations SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND accepted_at IS NULL AND revoked_at IS NULL")
        .bind(now)
        .bind(&org.0)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Accepts an invitation for `user_id`: marks it used and adds the membership, once.
#[tracing::instrument(skip_all)]
pub async fn accept_invitation(
    db: &Pool,
    inv: &Invitation,
    user_id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    let mut tx = rookery_common::db::begin_write(db).await?;
    let claimed = sqlx::query("UPDATE invitations SET accepted_at = $1 WHERE id = $2 AND accepted_at IS NULL AND revoked_at IS NULL")
        .bind(now)
        .bind(&inv.id)
        .execute(&mut *tx)
        .await?;
    if claimed.rows_affected() == 1 {
        let exists =
            sqlx::query("SELECT 1 AS one FROM memberships WHERE org_id = $1 AND user_id = $2")
                .bind(&inv.org_id.0)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
        if !exists {
            add_member(&mut *tx, &inv.org_id, user_id, inv.role, now).await?;
        }
    }
    tx.commit().await
}

// ---- the platform admin's view ----------------------------------------------------------

#[derive(Clone, Debug)]
pub struct TenantSummary {
    pub org: Org,
    pub parent_name: Option<String>,
    pub owners: Vec<String>,
    pub members: i64,
    pub created_at: i64,
}

#[tracing::instrument(skip_all)]
pub async fn all_tenants(db: &Pool) -> Result<Vec<TenantSummary>, sqlx::Error> {
    let orgs = sqlx::query(
        "SELECT o.id, o.name, o.is_reseller, o.parent_id, o.created_at, p.name AS parent_name,
                (SELECT COUNT(*) FROM memberships m WHERE m.org_id = o.id) AS members
         FROM organisations o LEFT JOIN organisations p ON p.id = o.parent_id ORDER BY o.created_at DESC",
    )
    .fetch_all(db)
    .await?;
    let owners = sqlx::query(
        "SELECT m.org_id, u.email FROM memberships m JOIN users u ON u.id = m.user_id WHERE m.role = 'owner' ORDER BY u.email",
    )
    .fetch_all(db)
    .await?;
    orgs.iter()
        .map(|r| {
            let org = org_from_row(r)?;
            let owners = owners
                .iter()
                .filter(|o| {
                    o.try_get::<String, _>("org_id")
                        .is_ok_and(|id| id == org.id.0)
                })
                .filter_map(|o| o.try_get::<String, _>("email").ok())
                .collect();
            Ok(TenantSummary {
                parent_name: r.try_get("parent_name")?,
                members: r.try_get("members")?,
                created_at: r.try_get("created_at")?,
                owners,
                org,
            })
        })
        .collect()
}

#[tracing::instrument(skip_all)]
pub async fn set_reseller(db: &Pool, org: &OrgId, reseller: bool) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE organisations SET is_reseller = $1 WHERE id = $2")
        .bind(i64::from(reseller))
        .bind(&org.0)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}
