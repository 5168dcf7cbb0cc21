//! Every table that holds per-vhost rows, listed once ([`VHOST_TABLES`]), and what is done
//! to a vhost's data table by table: delete it all, export it as JSON rows, import such
//! rows in place of what is there (to move a domain from one node to another), measure it.
//! A vhost taking part in a move is frozen meanwhile (`vhost_moves`, kept here so a
//! restarted node stays frozen): the running node then refuses every write of its data.
//!
//! A migration that adds a per-vhost table adds one entry here; the unit test at the bottom
//! compares the list with the schema, so a forgotten table or column fails the build's
//! tests rather than a customer's move.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use sqlx::Row;

use super::{Store, StoreError, bump_vhosts, now};

/// The type of a column, as JSON carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    /// TEXT: a JSON string (or null).
    Text,
    /// BIGINT: a JSON integer (or null).
    Int,
}

/// A table with a `vhost` column naming the domain each row belongs to.
pub struct VhostTable {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Col)],
}

use Col::{Int, Text};

/// Parents before children: imports insert in this order, deletions run backwards.
#[rustfmt::skip]
pub const VHOST_TABLES: &[VhostTable] = &[
    VhostTable { name: "accounts", columns: &[("vhost", Text), ("username", Text), ("scram_salt", Text), ("scram_iterations", Int), ("sha1_stored_key", Text), ("sha1_server_key", Text), ("sha256_stored_key", Text), ("sha256_server_key", Text), ("created_at", Int), ("system", Int)] },
    VhostTable { name: "offline_messages", columns: &[("id", Text), ("vhost", Text), ("username", Text), ("stanza", Text), ("created_at", Int)] },
    VhostTable { name: "roster_contacts", columns: &[("vhost", Text), ("username", Text), ("contact", Text), ("listed", Int), ("name", Text), ("group_names", Text), ("subscription", Text), ("pending_out", Int), ("pending_in", Int), ("request", Text), ("approved", Int), ("updated_at", Int)] },
    VhostTable { name: "roster_versions", columns: &[("vhost", Text), ("username", Text), ("epoch", Text), ("counter", Int)] },
    VhostTable { name: "vcards", columns: &[("vhost", Text), ("username", Text), ("vcard", Text), ("updated_at", Int)] },
    VhostTable { name: "blocklist", columns: &[("vhost", Text), ("username", Text), ("blocked_jid", Text), ("created_at", Int)] },
    VhostTable { name: "last_activity", columns: &[("vhost", Text), ("username", Text), ("seen_at", Int), ("status", Text)] },
    VhostTable { name: "push_registrations", columns: &[("vhost", Text), ("username", Text), ("app_server", Text), ("node", Text), ("options", Text), ("created_at", Int)] },
    VhostTable { name: "private_storage", columns: &[("vhost", Text), ("username", Text), ("namespace", Text), ("name", Text), ("xml", Text), ("updated_at", Int)] },
    VhostTable { name: "archive_messages", columns: &[("vhost", Text), ("username", Text), ("id", Text), ("created_us", Int), ("with_jid", Text), ("with_resource", Text), ("direction", Text), ("stanza", Text), ("stanza_bytes", Int)] },
    VhostTable { name: "archive_prefs", columns: &[("vhost", Text), ("username", Text), ("default_mode", Text), ("always_jids", Text), ("never_jids", Text), ("updated_at", Int)] },
    VhostTable { name: "pep_nodes", columns: &[("vhost", Text), ("username", Text), ("node", Text), ("access_model", Text), ("max_items", Int), ("persist_items", Int), ("send_last", Text), ("created_at", Int)] },
    VhostTable { name: "upload_files", columns: &[("vhost", Text), ("id", Text), ("username", Text), ("filename", Text), ("content_type", Text), ("size_bytes", Int), ("created_at", Int)] },
    VhostTable { name: "pep_items", columns: &[("vhost", Text), ("username", Text), ("node", Text), ("item_id", Text), ("payload", Text), ("seq", Int), ("published_at", Int)] },
    VhostTable { name: "muc_rooms", columns: &[("vhost", Text), ("room", Text), ("config", Text), ("created_at", Int), ("updated_at", Int)] },
    VhostTable { name: "muc_affiliations", columns: &[("vhost", Text), ("room", Text), ("jid", Text), ("affiliation", Text), ("reason", Text)] },
    VhostTable { name: "muc_archive", columns: &[("vhost", Text), ("room", Text), ("id", Text), ("created_us", Int), ("with_jid", Text), ("with_resource", Text), ("stanza", Text), ("stanza_bytes", Int)] },
];

impl VhostTable {
    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| *c)
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn select_sql(&self) -> String {
        format!(
            "SELECT {cols} FROM {t} WHERE vhost = $1 ORDER BY {cols}",
            cols = self.column_list(),
            t = self.name
        )
    }

    fn insert_sql(&self) -> String {
        let params = (1..=self.columns.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "INSERT INTO {} ({}) VALUES ({params})",
            self.name,
            self.column_list()
        )
    }

    /// What one row stores: the lengths of its text, 8 bytes per number.
    fn row_bytes_sql(&self) -> String {
        self.columns
            .iter()
            .map(|(c, t)| match t {
                Text => format!("COALESCE(LENGTH({c}), 0)"),
                Int => "8".to_string(),
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }

    /// `vhost, bytes` for every vhost with rows in this table.
    pub(super) fn storage_sql(&self) -> String {
        format!(
            "SELECT vhost, SUM({}) AS bytes FROM {} GROUP BY vhost",
            self.row_bytes_sql(),
            self.name
        )
    }

    /// `bytes` (NULL when there are no rows) of the vhost `$1` in this table.
    pub(super) fn vhost_storage_sql(&self) -> String {
        format!(
            "SELECT SUM({}) AS bytes FROM {} WHERE vhost = $1",
            self.row_bytes_sql(),
            self.name
        )
    }
}

/// Rows of one table, each a map from column to value.
pub type Rows = Vec<BTreeMap<String, Value>>;

/// Why imported data was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Deletes every row of `domain` in every vhost table (children first).
pub(super) async fn delete_all(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    domain: &str,
) -> Result<(), sqlx::Error> {
    for table in VHOST_TABLES.iter().rev() {
        sqlx::query(&format!("DELETE FROM {} WHERE vhost = $1", table.name))
            .bind(domain)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Checks imported rows against the table list before anything is written.
fn check(domain: &str, tables: &BTreeMap<String, Rows>) -> Result<(), ImportError> {
    let bad = |m: String| Err(ImportError::Invalid(m));
    for (name, rows) in tables {
        let Some(table) = VHOST_TABLES.iter().find(|t| t.name == name) else {
            return bad(format!("the table {name} is not part of a vhost's data"));
        };
        for (i, row) in rows.iter().enumerate() {
            for key in row.keys() {
                if !table.columns.iter().any(|(c, _)| c == key) {
                    return bad(format!("row {i} of {name} has an unknown column {key}"));
                }
            }
            for (column, kind) in table.columns {
                let fits = match (row.get(*column), kind) {
                    (None, _) => {
                        return bad(format!("row {i} of {name} has no column {column}"));
                    }
                    (Some(Value::Null), _) => true,
                    (Some(Value::String(_)), Text) => true,
                    (Some(Value::Number(n)), Int) => n.is_i64(),
                    _ => false,
                };
                if !fits {
                    let want = if *kind == Text {
                        "a string"
                    } else {
                        "an integer"
                    };
                    return bad(format!("{name}.{column} of row {i} must be {want}"));
                }
            }
            if row.get("vhost") != Some(&Value::String(domain.to_string())) {
                return bad(format!("row {i} of {name} belongs to another domain"));
            }
        }
    }
    Ok(())
}

impl Store {
    /// The highest node migration applied to this store: data travels with it, and an
    /// import from another schema is refused.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations")
                .fetch_one(&self.db)
                .await?
                .get::<Option<i64>, _>("v")
                .unwrap_or(0),
        )
    }

    /// Every row of `domain` in every vhost table, by table name.
    #[tracing::instrument(skip_all, fields(domain))]
    pub async fn export_vhost(&self, domain: &str) -> Result<BTreeMap<String, Rows>, StoreError> {
        let mut out = BTreeMap::new();
        for table in VHOST_TABLES {
            let mut rows = Vec::new();
            for r in sqlx::query(&table.select_sql())
                .bind(domain)
                .fetch_all(&self.db)
                .await?
            {
                let mut row = BTreeMap::new();
                for (column, kind) in table.columns {
                    let value = match kind {
                        Text => r
                            .try_get::<Option<String>, _>(*column)?
                            .map_or(Value::Null, Value::String),
                        Int => r
                            .try_get::<Option<i64>, _>(*column)?
                            .map_or(Value::Null, Value::from),
                    };
                    row.insert(column.to_string(), value);
                }
                rows.push(row);
            }
            out.insert(table.name.to_string(), rows);
        }
        Ok(out)
    }

    /// Replaces the data of `domain` (which must exist) with `tables`, in one transaction.
    /// Tables left out end up empty.
    #[tracing::instrument(skip_all, fields(domain))]
    pub async fn import_vhost(
        &self,
        domain: &str,
        tables: &BTreeMap<String, Rows>,
    ) -> Result<(), ImportError> {
        check(domain, tables)?;
        let mut tx = rookery_common::db::begin_write(&self.db)
            .await
            .map_err(StoreError::from)?;
        delete_all(&mut tx, domain)
            .await
            .map_err(StoreError::from)?;
        for table in VHOST_TABLES {
            let Some(rows) = tables.get(table.name) else {
                continue;
            };
            let sql = table.insert_sql();
            for (i, row) in rows.iter().enumerate() {
                let mut q = sqlx::query(&sql);
                for (column, kind) in table.columns {
                    let v = &row[*column];
                    q = match kind {
                        Text => q.bind(v.as_str().map(str::to_owned)),
                        Int => q.bind(v.as_i64()),
                    };
                }
                if let Err(e) = q.execute(&mut *tx).await {
                    return Err(match e {
                        // A constraint the rows break (a duplicate, a missing parent row, a
                        // null where none may be): the data is wrong, not the node.
                        sqlx::Error::Database(db) => ImportError::Invalid(format!(
                            "row {i} of {} does not fit: {}",
                            table.name,
                            db.message()
                        )),
                        other => StoreError::from(other).into(),
                    });
                }
            }
        }
        tx.commit().await.map_err(StoreError::from)?;
        self.remeasure_after_write(domain).await;
        Ok(())
    }

    /// The vhosts taking part in a move, with where their clients are sent (None: frozen,
    /// sessions stay).
    #[tracing::instrument(skip_all)]
    pub async fn vhost_moves(&self) -> Result<HashMap<String, Option<String>>, StoreError> {
        Ok(sqlx::query("SELECT domain, redirect_to FROM vhost_moves")
            .fetch_all(&self.db)
            .await?
            .iter()
            .map(|r| (r.get("domain"), r.get("redirect_to")))
            .collect())
    }

    /// Freezes `domain` (normalised, hosted) for a move, and sends its clients to
    /// `redirect_to` if given; a running node follows at its next reload.
    #[tracing::instrument(skip_all, fields(domain))]
    pub async fn set_vhost_move(
        &self,
        domain: &str,
        redirect_to: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        sqlx::query(
            "INSERT INTO vhost_moves (domain, redirect_to, frozen_at) VALUES ($1, $2, $3)
             ON CONFLICT (domain) DO UPDATE SET redirect_to = excluded.redirect_to",
        )
        .bind(domain)
        .bind(redirect_to)
        .bind(now())
        .execute(&mut *tx)
        .await?;
        bump_vhosts(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Ends the move of `domain` here: its data may change again.
    #[tracing::instrument(skip_all, fields(domain))]
    pub async fn clear_vhost_move(&self, domain: &str) -> Result<(), StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        sqlx::query("DELETE FROM vhost_moves WHERE domain = $1")
            .bind(domain)
            .execute(&mut *tx)
            .await?;
        bump_vhosts(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        (Store::open(&url).await.unwrap(), dir)
    }

    #[tokio::test]
    async fn the_table_list_covers_every_table_and_column_with_a_vhost() {
        let (store, _dir) = store().await;
        let tables: Vec<String> = sqlx::query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name",
        )
        .fetch_all(&store.db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("name"))
        .collect();
        for name in tables {
            let columns: Vec<(String, String)> = sqlx::query(&format!(
                "SELECT name, type FROM pragma_table_info('{name}')"
            ))
            .fetch_all(&store.db)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("name"), r.get("type")))
            .collect();
            if !columns.iter().any(|(c, _)| c == "vhost") {
                continue;
            }
            let table = VHOST_TABLES
                .iter()
                .find(|t| t.name == name)
                .unwrap_or_else(|| panic!("{name} has per-vhost rows: add it to VHOST_TABLES"));
            let listed: Vec<(String, String)> = table
                .columns
                .iter()
                .map(|(c, k)| {
                    let ty = if *k == Text { "TEXT" } else { "BIGINT" };
                    (c.to_string(), ty.to_string())
                })
                .collect();
            let mut columns = columns;
            columns.sort();
            let mut listed = listed;
            listed.sort();
            assert_eq!(listed, columns, "the columns of {name}");
        }
    }

    #[tokio::test]
    async fn a_vhost_exported_from_one_store_imports_into_another_unchanged() {
        let (a, _da) = store().await;
        a.add_vhost("example.com", None).await.unwrap();
        a.add_vhost("other.example", None).await.unwrap();
        a.add_account("example.com", "juliet", "balcony-1", 4096)
            .await
            .unwrap();
        a.add_account("other.example", "mallory", "not-me-1", 4096)
            .await
            .unwrap();
        a.store_offline(
            "example.com",
            "juliet",
            "<message to='juliet@example.com'><body>hi</body></message>",
            10,
        )
        .await
        .unwrap();
        a.set_vcard("example.com", "juliet", "<vCard xmlns='vcard-temp'/>")
            .await
            .unwrap();
        a.block("example.com", "juliet", &["tybalt@capulet.example".into()])
            .await
            .unwrap();
        a.set_last_activity("example.com", "juliet", "gone")
            .await
            .unwrap();
        let exported = a.export_vhost("example.com").await.unwrap();
        assert_eq!(exported["accounts"].len(), 1, "only this vhost's accounts");
        assert_eq!(exported["offline_messages"].len(), 1);
        assert_eq!(
            exported["blocklist"][0]["blocked_jid"],
            "tybalt@capulet.example"
        );

        let (b, _db) = store().await;
        b.add_vhost("example.com", None).await.unwrap();
        b.add_account("example.com", "someone-else", "x-password-1", 4096)
            .await
            .unwrap();
        b.import_vhost("example.com", &exported).await.unwrap();
        assert_eq!(b.export_vhost("example.com").await.unwrap(), exported);
        assert_eq!(b.accounts("example.com").await.unwrap(), vec!["juliet"]);
        let sha256 = crate::proto::sasl::ScramHash::Sha256;
        assert!(
            b.credentials("example.com", "juliet", sha256)
                .await
                .unwrap()
                == a.credentials("example.com", "juliet", sha256)
                    .await
                    .unwrap(),
            "the same password works on the new node"
        );
        let bytes = b.storage_bytes().await.unwrap();
        assert!(bytes["example.com"] > 100, "{bytes:?}");
        assert_eq!(b.account_counts().await.unwrap()["example.com"], 1);
    }

    #[tokio::test]
    async fn a_move_is_kept_until_it_is_cleared_or_its_vhost_goes() {
        let (a, _da) = store().await;
        a.add_vhost("example.com", None).await.unwrap();
        a.add_vhost("other.example", None).await.unwrap();
        a.set_vhost_move("example.com", None).await.unwrap();
        a.set_vhost_move("other.example", None).await.unwrap();
        a.set_vhost_move("other.example", Some("node2.example.net:5222"))
            .await
            .unwrap();
        let moves = a.vhost_moves().await.unwrap();
        assert_eq!(
            moves,
            HashMap::from([
                ("example.com".to_string(), None),
                (
                    "other.example".to_string(),
                    Some("node2.example.net:5222".to_string())
                ),
            ])
        );
        a.clear_vhost_move("example.com").await.unwrap();
        a.remove_vhost("other.example").await.unwrap();
        assert!(a.vhost_moves().await.unwrap().is_empty());
        // A vhost added again later is not frozen by a move long over.
        a.add_vhost("other.example", None).await.unwrap();
        assert!(a.vhost_moves().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn imports_of_foreign_or_malformed_rows_are_refused_and_change_nothing() {
        let (a, _da) = store().await;
        a.add_vhost("example.com", None).await.unwrap();
        a.add_account("example.com", "juliet", "balcony-1", 4096)
            .await
            .unwrap();
        let good = a.export_vhost("example.com").await.unwrap();
        let refused = |tables: BTreeMap<String, Rows>| {
            let a = a.clone();
            async move {
                match a.import_vhost("example.com", &tables).await {
                    Err(ImportError::Invalid(m)) => m,
                    other => panic!("{other:?}"),
                }
            }
        };
        let mut t = good.clone();
        t.insert("secrets".into(), vec![]);
        assert!(refused(t).await.contains("not part of a vhost's data"));
        let mut t = good.clone();
        t.get_mut("accounts").unwrap()[0].insert("vhost".into(), "other.example".into());
        assert!(refused(t).await.contains("another domain"));
        let mut t = good.clone();
        t.get_mut("accounts").unwrap()[0].insert("admin".into(), Value::Bool(true));
        assert!(refused(t).await.contains("unknown column admin"));
        let mut t = good.clone();
        t.get_mut("accounts").unwrap()[0].insert("created_at".into(), "yesterday".into());
        assert!(refused(t).await.contains("must be an integer"));
        let mut t = good.clone();
        t.get_mut("accounts").unwrap()[0].insert("scram_salt".into(), Value::Null);
        assert!(refused(t).await.contains("does not fit"));
        assert_eq!(a.export_vhost("example.com").await.unwrap(), good);
    }
}
