//! Rosters in the database: one row per (account, contact) in `roster_contacts`, and the
//! account's roster version in `roster_versions`.
//!
//! Every change goes through [`Store::update_contact`]: it bumps the account's version row
//! first — which locks it (a row lock on PostgreSQL, the write lock on SQLite) — then reads
//! the contact, lets a pure function from `proto::roster` decide, and writes the result in
//! the same transaction. Changes to one roster are therefore serialised without any lock
//! in the process, and a change that decides nothing is rolled back, version included.
//! A new contact is refused when the roster is full, or when its row would pass the
//! vhost's storage quota; changes to stored contacts and deletions are only counted.

use anyhow::Context;
use sqlx::{Row, any::AnyRow};

use super::{Store, StoreError, now, quota::row_bytes};
use crate::proto::{
    jid::Jid,
    roster::{Contact, Edit, RosterVersion, State, Subscription},
};

/// The (vhost, username) key of an account's bare JID.
fn key(account: &Jid) -> Result<(&str, &str), StoreError> {
    match account.node() {
        Some(user) => Ok((account.domain(), user)),
        None => Err(StoreError::Internal(anyhow::anyhow!(
            "{account} is not an account"
        ))),
    }
}

impl Store {
    /// The account's roster version (`0` before its first change).
    #[tracing::instrument(skip_all)]
    pub async fn roster_version(&self, account: &Jid) -> Result<RosterVersion, StoreError> {
        let (vhost, username) = key(account)?;
        Ok(sqlx::query(
            "SELECT epoch, counter FROM roster_versions WHERE vhost = $1 AND username = $2",
        )
        .bind(vhost)
        .bind(username)
        .fetch_optional(&self.db)
        .await?
        .map(|r| RosterVersion {
            epoch: r.get("epoch"),
            counter: r.get("counter"),
        })
        .unwrap_or_default())
    }

    /// Every contact the server keeps for the account (listed or only requesting), with
    /// the roster version. The version is read first, so a change in between makes the
    /// version look older than the items, never newer: the next get sends them again.
    #[tracing::instrument(skip_all)]
    pub async fn roster(&self, account: &Jid) -> Result<(RosterVersion, Vec<Contact>), StoreError> {
        let version = self.roster_version(account).await?;
        let (vhost, username) = key(account)?;
        let rows = sqlx::query(
            "SELECT contact, listed, name, group_names, subscription, pending_out, pending_in, request, approved
             FROM roster_contacts WHERE vhost = $1 AND username = $2 ORDER BY contact",
        )
        .bind(vhost)
        .bind(username)
        .fetch_all(&self.db)
        .await?;
        let contacts = rows
            .iter()
            .map(contact_from_row)
            .collect::<Result<_, _>>()?;
        Ok((version, contacts))
    }

    /// One contact of the account, if the server keeps anything about it.
    #[tracing::instrument(skip_all)]
    pub async fn contact(
        &self,
        account: &Jid,
        contact: &Jid,
    ) -> Result<Option<Contact>, StoreError> {
        let (vhost, username) = key(account)?;
        sqlx::query(
            "SELECT contact, listed, name, group_names, subscription, pending_out, pending_in, request, approved
             FROM roster_contacts WHERE vhost = $1 AND username = $2 AND contact = $3",
        )
        .bind(vhost)
        .bind(username)
        .bind(contact.bare().to_string())
        .fetch_optional(&self.db)
        .await?
        .as_ref()
        .map(contact_from_row)
        .transpose()
    }

    /// Changes one contact of the account: `decide` gets the stored contact (if any) and
    /// says what to do, plus a value handed back. Returns that value and, when something
    /// was written, the roster's new version.
    #[tracing::instrument(skip_all)]
    pub async fn update_contact<T, F>(
        &self,
        account: &Jid,
        contact: &Jid,
        decide: F,
    ) -> Result<(T, Option<RosterVersion>), StoreError>
    where
        F: FnOnce(Option<Contact>) -> (Edit, T) + Send,
        T: Send,
    {
        let (vhost, username) = key(account)?;
        let contact_key = contact.bare().to_string();
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        // The version row first: it is the per-account lock.
        sqlx::query(
            "INSERT INTO roster_versions (vhost, username, epoch, counter) VALUES ($1, $2, $3, 1)
             ON CONFLICT (vhost, username) DO UPDATE SET counter = roster_versions.counter + 1",
        )
        .bind(vhost)
        .bind(username)
        .bind(new_epoch())
        .execute(&mut *tx)
        .await?;
        let version = sqlx::query(
            "SELECT epoch, counter FROM roster_versions WHERE vhost = $1 AND username = $2",
        )
        .bind(vhost)
        .bind(username)
        .fetch_one(&mut *tx)
        .await
        .map(|r| RosterVersion {
            epoch: r.get("epoch"),
            counter: r.get("counter"),
        })?;
        let current = sqlx::query(
            "SELECT contact, listed, name, group_names, subscription, pending_out, pending_in, request, approved
             FROM roster_contacts WHERE vhost = $1 AND username = $2 AND contact = $3",
        )
        .bind(vhost)
        .bind(username)
        .bind(&contact_key)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(contact_from_row)
        .transpose()?;
        let is_new = current.is_none();
        let stored_bytes = current
            .as_ref()
            .map_or(0, |c| contact_row_bytes(vhost, username, &contact_key, c));
        let (edit, out) = decide(current);
        let growth = match &edit {
            Edit::Save(c) => contact_row_bytes(vhost, username, &contact_key, c) - stored_bytes,
            Edit::Delete => -stored_bytes,
            Edit::Keep => 0,
        };
        let mut reserved = None;
        if is_new && matches!(edit, Edit::Save(_)) {
            let count: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM roster_contacts WHERE vhost = $1 AND username = $2",
            )
            .bind(vhost)
            .bind(username)
            .fetch_one(&mut *tx)
            .await?
            .get("n");
            if count >= self.max_roster_items {
                tx.rollback().await?;
                return Err(StoreError::RosterFull(self.max_roster_items));
            }
            match self.meters.reserve(vhost, growth) {
                Ok(r) => reserved = Some(r),
                Err(over) => {
                    tx.rollback().await?;
                    return Err(StoreError::StorageFull(vhost.to_string(), over.quota));
                }
            }
        }
        match edit {
            Edit::Keep => {
                tx.rollback().await?;
                return Ok((out, None));
            }
            Edit::Delete => {
                sqlx::query(
                    "DELETE FROM roster_contacts WHERE vhost = $1 AND username = $2 AND contact = $3",
                )
                .bind(vhost)
                .bind(username)
                .bind(&contact_key)
                .execute(&mut *tx)
                .await?;
            }
            Edit::Save(c) => {
                sqlx::query(
                    "INSERT INTO roster_contacts (vhost, username, contact, listed, name, group_names, subscription, pending_out, pending_in, request, approved, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (vhost, username, contact) DO UPDATE SET
                       listed = excluded.listed, name = excluded.name, group_names = excluded.group_names,
                       subscription = excluded.subscription, pending_out = excluded.pending_out,
                       pending_in = excluded.pending_in, request = excluded.request,
                       approved = excluded.approved, updated_at = excluded.updated_at",
                )
                .bind(vhost)
                .bind(username)
                .bind(&contact_key)
                .bind(i64::from(c.listed))
                .bind(c.name.as_deref())
                .bind(join_groups(&c.groups))
                .bind(c.state.subscription.as_str())
                .bind(i64::from(c.state.pending_out))
                .bind(i64::from(c.state.pending_in))
                .bind(c.request.as_deref())
                .bind(i64::from(c.state.approved))
                .bind(now())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        match reserved {
            Some(r) => r.commit(),
            None => self.meters.add(vhost, growth),
        }
        Ok((out, Some(version)))
    }
}

/// The storage of a contact's row (see `quota::row_bytes`): seven text columns, five numbers.
fn contact_row_bytes(vhost: &str, username: &str, contact: &str, c: &Contact) -> i64 {
    let groups = join_groups(&c.groups);
    row_bytes(
        &[
            Some(vhost),
            Some(username),
            Some(contact),
            c.name.as_deref(),
            Some(&groups),
            Some(c.state.subscription.as_str()),
            c.request.as_deref(),
        ],
        5,
    )
}

fn contact_from_row(r: &AnyRow) -> Result<Contact, StoreError> {
    let jid: String = r.get("contact");
    let subscription: String = r.get("subscription");
    let flag = |col: &str| r.get::<i64, _>(col) != 0;
    Ok(Contact {
        jid: Jid::parse(&jid)
            .with_context(|| format!("a stored roster contact is not a JID: {jid:?}"))?,
        listed: flag("listed"),
        name: r.get("name"),
        groups: split_groups(&r.get::<String, _>("group_names")),
        state: State {
            subscription: Subscription::parse(&subscription)
                .with_context(|| format!("a stored subscription is unknown: {subscription:?}"))?,
            pending_out: flag("pending_out"),
            pending_in: flag("pending_in"),
            approved: flag("approved"),
        },
        request: r.get("request"),
    })
}

fn new_epoch() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// Group names in one column: joined by newlines, with `\` escaping a newline or itself.
/// (Group names are never empty, so the empty string is the empty list.)
fn join_groups(groups: &[String]) -> String {
    groups
        .iter()
        .map(|g| g.replace('\\', "\\\\").replace('\n', "\\n"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn split_groups(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split('\n')
        .map(|g| {
            let mut out = String::with_capacity(g.len());
            let mut chars = g.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                out.push(match chars.next() {
                    Some('n') => '\n',
                    Some(other) => other,
                    None => '\\',
                });
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::roster::{Direction, SubscriptionKind};

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    async fn store_with_account() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        store.add_vhost("example.com", None).await.unwrap();
        store
            .add_account("example.com", "juliet", "a-password-1", 1)
            .await
            .unwrap();
        (store, dir)
    }

    #[test]
    fn group_names_survive_the_column_encoding() {
        for groups in [
            vec![],
            vec!["Friends".to_string()],
            vec!["a\nb".into(), "c\\d".into(), "\\n".into(), "e\\".into()],
        ] {
            let joined = join_groups(&groups);
            assert_eq!(split_groups(&joined), groups, "{joined:?}");
        }
    }

    #[tokio::test]
    async fn a_full_roster_refuses_new_contacts_but_still_changes_old_ones() {
        let (mut store, _dir) = store_with_account().await;
        store.max_roster_items = 2;
        let me = jid("juliet@example.com");
        let save = |c: Option<Contact>, who: &Jid| {
            let mut c = c.unwrap_or_else(|| Contact::new(who.clone()));
            c.listed = true;
            c.name = Some(who.to_string());
            (Edit::Save(c), ())
        };
        for who in ["a@example.net", "b@example.net"] {
            let who = jid(who);
            store
                .update_contact(&me, &who, |c| save(c, &who))
                .await
                .unwrap();
        }
        let third = jid("c@example.net");
        let refused = store.update_contact(&me, &third, |c| save(c, &third)).await;
        assert!(
            matches!(refused, Err(StoreError::RosterFull(2))),
            "{refused:?}"
        );
        assert_eq!(store.roster(&me).await.unwrap().1.len(), 2);
        // Renaming a contact already there is no new item.
        let a = jid("a@example.net");
        store
            .update_contact(&me, &a, |c| save(c, &a))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn contacts_are_stored_changed_and_forgotten_with_a_version_per_change() {
        let (store, _dir) = store_with_account().await;
        let me = jid("juliet@example.com");
        let romeo = jid("romeo@example.net");
        assert_eq!(store.roster_version(&me).await.unwrap().counter, 0);

        let (_, v1) = store
            .update_contact(&me, &romeo, |c| {
                let (c, _) =
                    Contact::apply(c, &romeo, Direction::Outbound, SubscriptionKind::Subscribe);
                let mut c = c.unwrap();
                c.name = Some("Romeo".into());
                c.groups = vec!["Friends".into(), "Line\nbreak".into()];
                (Edit::Save(c), ())
            })
            .await
            .unwrap();
        let v1 = v1.unwrap();
        assert_eq!(v1.counter, 1);
        let (v, contacts) = store.roster(&me).await.unwrap();
        assert_eq!(v, v1);
        assert_eq!(contacts.len(), 1);
        assert_eq!(contacts[0].name.as_deref(), Some("Romeo"));
        assert_eq!(
            contacts[0].groups,
            vec!["Friends".to_string(), "Line\nbreak".into()]
        );
        assert!(contacts[0].state.pending_out && contacts[0].listed);

        // Deciding nothing leaves the version alone.
        let (seen, none) = store
            .update_contact(&me, &romeo, |c| (Edit::Keep, c.map(|c| c.state)))
            .await
            .unwrap();
        assert!(none.is_none());
        assert!(seen.unwrap().pending_out);
        assert_eq!(store.roster_version(&me).await.unwrap(), v1);

        let (_, v2) = store
            .update_contact(&me, &romeo, |_| (Edit::Delete, ()))
            .await
            .unwrap();
        let v2 = v2.unwrap();
        assert_eq!((v2.epoch.as_str(), v2.counter), (v1.epoch.as_str(), 2));
        assert!(store.roster(&me).await.unwrap().1.is_empty());
    }

    #[tokio::test]
    async fn a_deleted_account_takes_its_roster_along() {
        let (store, _dir) = store_with_account().await;
        let me = jid("juliet@example.com");
        let romeo = jid("romeo@example.net");
        store
            .update_contact(&me, &romeo, |_| {
                let mut c = Contact::new(romeo.clone());
                c.listed = true;
                (Edit::Save(c), ())
            })
            .await
            .unwrap();
        let before = store.roster_version(&me).await.unwrap();
        store.remove_account("example.com", "juliet").await.unwrap();
        store
            .add_account("example.com", "juliet", "a-password-2", 1)
            .await
            .unwrap();
        assert!(store.roster(&me).await.unwrap().1.is_empty());
        let (_, after) = store
            .update_contact(&me, &romeo, |_| (Edit::Delete, ()))
            .await
            .unwrap();
        assert_ne!(after.unwrap().to_string(), before.to_string());
    }
}
