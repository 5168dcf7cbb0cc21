//! Push notification registrations (XEP-0357, `xep::push`): per account, the app servers
//! and nodes its devices enabled, with their publish options. A few per account at most.

use sqlx::Row;

use super::{Store, StoreError, now};

/// The most registrations an account keeps (one per device and app is the norm).
pub const MAX_PER_ACCOUNT: i64 = 10;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushRegistration {
    /// The app server's JID.
    pub app_server: String,
    pub node: String,
    /// The client's publish options (XML of a submit form), or empty.
    pub options: String,
}

impl Store {
    /// Adds or replaces the registration for this app server and node. `Ok(false)`: the
    /// account has [`MAX_PER_ACCOUNT`] others already.
    #[tracing::instrument(skip_all)]
    pub async fn enable_push(
        &self,
        vhost: &str,
        username: &str,
        registration: &PushRegistration,
    ) -> Result<bool, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let others: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM push_registrations
             WHERE vhost = $1 AND username = $2 AND NOT (app_server = $3 AND node = $4)",
        )
        .bind(vhost)
        .bind(username)
        .bind(&registration.app_server)
        .bind(&registration.node)
        .fetch_one(&mut *tx)
        .await?
        .get("n");
        if others >= MAX_PER_ACCOUNT {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO push_registrations (vhost, username, app_server, node, options, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (vhost, username, app_server, node)
             DO UPDATE SET options = excluded.options, created_at = excluded.created_at",
        )
        .bind(vhost)
        .bind(username)
        .bind(&registration.app_server)
        .bind(&registration.node)
        .bind(&registration.options)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes the registrations for `app_server` (only `node` of it when given); how many.
    #[tracing::instrument(skip_all)]
    pub async fn disable_push(
        &self,
        vhost: &str,
        username: &str,
        app_server: &str,
        node: Option<&str>,
    ) -> Result<u64, StoreError> {
        let done = match node {
            Some(node) => {
                sqlx::query(
                    "DELETE FROM push_registrations
                     WHERE vhost = $1 AND username = $2 AND app_server = $3 AND node = $4",
                )
                .bind(vhost)
                .bind(username)
                .bind(app_server)
                .bind(node)
                .execute(&self.db)
                .await?
            }
            None => {
                sqlx::query(
                    "DELETE FROM push_registrations
                     WHERE vhost = $1 AND username = $2 AND app_server = $3",
                )
                .bind(vhost)
                .bind(username)
                .bind(app_server)
                .execute(&self.db)
                .await?
            }
        };
        Ok(done.rows_affected())
    }

    /// The account's registrations, oldest first.
    #[tracing::instrument(skip_all)]
    pub async fn push_registrations(
        &self,
        vhost: &str,
        username: &str,
    ) -> Result<Vec<PushRegistration>, StoreError> {
        let rows = sqlx::query(
            "SELECT app_server, node, options FROM push_registrations
             WHERE vhost = $1 AND username = $2 ORDER BY created_at, app_server, node",
        )
        .bind(vhost)
        .bind(username)
        .fetch_all(&self.db)
        .await?;
        Ok(rows
            .iter()
            .map(|r| PushRegistration {
                app_server: r.get("app_server"),
                node: r.get("node"),
                options: r.get("options"),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOMAIN: &str = "example.com";

    fn registration(app: &str, node: &str) -> PushRegistration {
        PushRegistration {
            app_server: app.into(),
            node: node.into(),
            options: String::new(),
        }
    }

    #[tokio::test]
    async fn registrations_are_added_replaced_listed_limited_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        store.add_vhost(DOMAIN, None).await.unwrap();
        store
            .add_account(DOMAIN, "juliet", "a-password-1", 1)
            .await
            .unwrap();
        let a = registration("push.example.net", "n1");
        assert!(store.enable_push(DOMAIN, "juliet", &a).await.unwrap());
        // The same app server and node again replaces it.
        let again = PushRegistration {
            options: "<x/>".into(),
            ..a.clone()
        };
        assert!(store.enable_push(DOMAIN, "juliet", &again).await.unwrap());
        assert_eq!(
            store.push_registrations(DOMAIN, "juliet").await.unwrap(),
            std::slice::from_ref(&again)
        );
        for i in 1..MAX_PER_ACCOUNT {
            let r = registration("push.example.net", &format!("m{i}"));
            assert!(store.enable_push(DOMAIN, "juliet", &r).await.unwrap());
        }
        let one_too_many = registration("other.example.net", "x");
        assert!(
            !store
                .enable_push(DOMAIN, "juliet", &one_too_many)
                .await
                .unwrap()
        );
        // Replacing an existing one is still allowed at the limit.
        assert!(store.enable_push(DOMAIN, "juliet", &a).await.unwrap());
        assert_eq!(
            store
                .disable_push(DOMAIN, "juliet", "push.example.net", Some("n1"))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .disable_push(DOMAIN, "juliet", "push.example.net", None)
                .await
                .unwrap(),
            (MAX_PER_ACCOUNT - 1) as u64
        );
        assert!(
            store
                .push_registrations(DOMAIN, "juliet")
                .await
                .unwrap()
                .is_empty()
        );
        // Deleting the account deletes its registrations.
        assert!(store.enable_push(DOMAIN, "juliet", &a).await.unwrap());
        store.remove_account(DOMAIN, "juliet").await.unwrap();
        let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM push_registrations")
            .fetch_one(&store.db)
            .await
            .unwrap()
            .get("n");
        assert_eq!(left, 0);
    }
}
