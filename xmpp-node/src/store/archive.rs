//! Message archives (XEP-0313): every account keeps the messages it sent and received, one
//! row each, with its archive id (also the XEP-0359 stanza-id), its time in microseconds,
//! the bare JID (and resource) of the other party, the direction and the stanza as XML;
//! plus the account's archiving preferences.
//!
//! Writes never make routing wait for the database. Routing hands each row to an
//! [`ArchiveWriter`]: a bounded channel in front of one background task that takes every
//! row waiting (up to [`MAX_BATCH`]) and writes them in one transaction (prepared
//! `INSERT`s of [`INSERT_CHUNK`] rows) on a connection of its own
//! ([`ArchiveConnection`]), so the cost of a commit is shared by all messages of a burst.
//!
//! What a row costs is mostly the index pages it dirties: each index keyed by account
//! takes a row into a page of that account's range, a random page of the file, written to
//! the WAL at commit and again at checkpoint. A batch dirties about one page per index and
//! account that has rows in it, however many rows that is, so the writer lets batches grow
//! with its backlog (a busy node's batch holds several rows per account) and keeps the
//! pages of a batch in a page cache of its own ([`WRITER_CACHE_KIB`]) instead of spilling
//! them mid-transaction and reading them back. Measured with benches/archive_writes.rs
//! (10,000 accounts, 400,000 rows): batches of 1,000 in SQLite's default 2 MiB cache
//! cost 19 µs of CPU and 12.6 KB written per row, batches of 65,536 in 64 MiB 10 µs and
//! 5.4 KB; either change alone gains little. The writer's thread may be made to yield to
//! routing on a saturated machine ([`WriterOptions::nice`]).
//!
//! The channel holds [`QUEUE_ROWS`] rows (about a second of a saturated node's traffic,
//! about the size of the stanzas it holds in memory); when it is full,
//! [`ArchiveWriter::try_write`] gives up at once: the message is delivered without a
//! stanza-id and is not archived, and the loss is counted
//! (`rookery_node_archive_dropped_total{reason="queue_full"}`) and logged.
//! A batch that fails is tried once more, then row by row; a row that still fails (its
//! account was deleted meanwhile) is counted as `write_failed` and logged.
//!
//! Rows are charged to the vhost's storage quota when they are queued (the meter is an
//! atomic counter, see `quota`); a row that is never written gives its bytes back.
//! Reads ([`Store::archive_page`]) follow XEP-0059 result set management: filters make a
//! set ordered by (time, id), a page is the first, the last, or the `max` items after or
//! before an id of that set.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError, now, quota::row_bytes};
use crate::metrics::ArchiveMetrics;

/// Rows waiting for the writer at most.
pub const QUEUE_ROWS: usize = 65_536;

/// Rows written per transaction at most: all the queue can hold (see the module docs:
/// bigger batches share each dirty index page among more rows). A query that waits for
/// the writer (`flush`) waits for at most one such batch.
pub const MAX_BATCH: usize = QUEUE_ROWS;

/// The page cache of the writer's SQLite connection by default, in KiB: enough for the
/// index pages a batch of a busy node dirties (two per account with rows in the batch) to
/// stay in memory until the commit. SQLite's default is 2 MiB.
pub const WRITER_CACHE_KIB: u32 = 64 * 1024;

/// Rows per multi-row `INSERT` (9 parameters each).
const INSERT_CHUNK: usize = 64;

/// `INSERT … VALUES (…), (…)` for `rows` rows. SQLite gets anonymous `?` parameters:
/// sqlx binds a named one (`$n`) by asking SQLite its name, and SQLite finds a name by a
/// walk along the statement's parameters, so many `$n` made a big statement quadratic.
fn insert_sql(rows: usize, sqlite: bool) -> String {
    let mut sql = String::from(
        "INSERT INTO archive_messages (vhost, username, id, created_us, with_jid, with_resource, direction, stanza, stanza_bytes) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for k in 1..=9 {
            if k > 1 {
                sql.push_str(", ");
            }
            if sqlite {
                sql.push('?');
            } else {
                sql.push_str(&format!("${}", i * 9 + k));
            }
        }
        sql.push(')');
    }
    sql
}

fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    r: &'q ArchiveRow,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    q.bind(r.vhost.as_str())
        .bind(r.username.as_str())
        .bind(r.id.as_str())
        .bind(r.created_us)
        .bind(r.with_jid.as_str())
        .bind(r.with_resource.as_str())
        .bind(r.direction.as_str())
        .bind(&*r.stanza)
        .bind(r.stanza.len() as i64)
}

/// The digits of archive ids, in ASCII order, so ids sort as the numbers they write.
pub const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// Digits of an id's time: 11 base-32 digits (55 bits) of microseconds since 1970.
const ID_TIME_DIGITS: usize = 11;

/// The id of a message archived at `t_us` by the writer tagged `tag` (see
/// `xep::mam::IdGen`): the time in [`ID_TIME_DIGITS`] digits, then the tag. Ids of one
/// archive therefore sort as (time, tag): queries order by id alone, and a time range is
/// the id range of [`id_floor`], which the primary key serves.
pub fn id_at(t_us: i64, tag: &str) -> String {
    let mut id = id_floor(t_us);
    id.push_str(tag);
    id
}

/// The smallest possible id of a message archived at `t_us` or later: its time digits
/// alone, which sort before every id that begins with them. Times before 1970 count as
/// 1970, times past the 55 bits as the last one.
pub fn id_floor(t_us: i64) -> String {
    let t = t_us.clamp(0, (1 << (5 * ID_TIME_DIGITS)) - 1);
    (0..ID_TIME_DIGITS)
        .rev()
        .map(|i| ID_ALPHABET[((t >> (5 * i)) & 31) as usize] as char)
        .collect()
}

/// Whether the account sent or received a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Sent,
    Received,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "out",
            Direction::Received => "in",
        }
    }

    fn parse(s: &str) -> Self {
        if s == "out" {
            Direction::Sent
        } else {
            Direction::Received
        }
    }
}

/// One message in one account's archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveRow {
    pub vhost: String,
    pub username: String,
    pub id: String,
    pub created_us: i64,
    /// The other party's bare JID, and its resource ("" for none).
    pub with_jid: String,
    pub with_resource: String,
    pub direction: Direction,
    /// Shared by the sender's and the recipient's rows of one message.
    pub stanza: Arc<str>,
}

impl ArchiveRow {
    /// What the row counts against the storage quota (see `quota::row_bytes`).
    pub fn charge(&self) -> i64 {
        archive_row_bytes(
            &self.vhost,
            &self.username,
            &self.id,
            &self.with_jid,
            &self.with_resource,
            self.direction,
            self.stanza.chars().count() as i64,
        )
    }
}

fn archive_row_bytes(
    vhost: &str,
    username: &str,
    id: &str,
    with_jid: &str,
    with_resource: &str,
    direction: Direction,
    stanza_chars: i64,
) -> i64 {
    row_bytes(
        &[
            Some(vhost),
            Some(username),
            Some(id),
            Some(with_jid),
            Some(with_resource),
            Some(direction.as_str()),
        ],
        2,
    ) + stanza_chars
}

/// The id and the time (µs) of a message at one end of an archive.
pub type ArchiveBound = (String, i64);

/// An archived message as a query returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivedMessage {
    pub id: String,
    pub created_us: i64,
    pub direction: Direction,
    pub stanza: String,
}

/// What restricts the result set of a query (XEP-0313 §4.1, and the `#extended` fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveFilter {
    /// A bare JID (any resource), or a bare JID and one resource.
    pub with: Option<(String, Option<String>)>,
    pub start_us: Option<i64>,
    pub end_us: Option<i64>,
    pub after_id: Option<String>,
    pub before_id: Option<String>,
    pub ids: Option<Vec<String>>,
}

/// Which page of the result set (XEP-0059).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PageFrom {
    /// The first `max` items.
    Start,
    /// The `max` items right after this id.
    After(String),
    /// The `max` items right before this id, or the last page (None).
    Before(Option<String>),
}

/// One page of a result set, in archive order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchivePage {
    pub items: Vec<ArchivedMessage>,
    /// The size of the whole result set.
    pub count: i64,
    /// The position of the first item in the result set.
    pub first_index: Option<i64>,
    /// The page reaches the end of the set in its direction (the last page going forward,
    /// the first going backward).
    pub complete: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveQueryError {
    #[error("there is no archived message with the id {0}")]
    UnknownId(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The default of a preference (XEP-0313 §6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultMode {
    Always,
    Never,
    Roster,
}

impl DefaultMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultMode::Always => "always",
            DefaultMode::Never => "never",
            DefaultMode::Roster => "roster",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "always" => Some(DefaultMode::Always),
            "never" => Some(DefaultMode::Never),
            "roster" => Some(DefaultMode::Roster),
            _ => None,
        }
    }
}

/// An account's archiving preferences as stored: JIDs as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPrefs {
    pub default: DefaultMode,
    pub always: Vec<String>,
    pub never: Vec<String>,
}

impl Default for StoredPrefs {
    /// Everything is archived until the user says otherwise.
    fn default() -> Self {
        Self {
            default: DefaultMode::Always,
            always: Vec::new(),
            never: Vec::new(),
        }
    }
}

/// A parameter of a query built at run time.
enum Arg {
    Text(String),
    Int(i64),
}

/// SQL text with `$n` parameters and their values, in order.
#[derive(Default)]
struct Sql {
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    fn new(text: &str) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
        }
    }

    fn arg(&mut self, a: Arg) -> String {
        self.args.push(a);
        format!("${}", self.args.len())
    }

    fn query(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
        let mut q = sqlx::query(&self.text);
        for a in &self.args {
            q = match a {
                Arg::Text(t) => q.bind(t.as_str()),
                Arg::Int(i) => q.bind(*i),
            };
        }
        q
    }
}

/// Where an archive's rows are: the accounts' archives, or the rooms' (`xep::muc`). Both
/// tables have the same columns but the owner's (`username`, `room`) and the direction
/// (a room's messages are all "in").
#[derive(Clone, Copy, Debug)]
pub struct ArchiveTable {
    pub table: &'static str,
    pub owner: &'static str,
    pub direction: &'static str,
}

/// The accounts' archives (`archive_messages`).
pub const USER_ARCHIVE: ArchiveTable = ArchiveTable {
    table: "archive_messages",
    owner: "username",
    direction: "direction",
};

/// The rooms' archives (`muc_archive`, XEP-0045 rooms).
pub const ROOM_ARCHIVE: ArchiveTable = ArchiveTable {
    table: "muc_archive",
    owner: "room",
    direction: "'in'",
};

/// `WHERE` conditions of the result set of a filter (keys already resolved to times).
fn filter_conditions(
    sql: &mut Sql,
    t: ArchiveTable,
    vhost: &str,
    username: &str,
    f: &ArchiveFilter,
    after: Option<&String>,
    before: Option<&String>,
) {
    let v = sql.arg(Arg::Text(vhost.into()));
    let u = sql.arg(Arg::Text(username.into()));
    let mut text = format!("vhost = {v} AND {} = {u}", t.owner);
    if let Some((bare, resource)) = &f.with {
        let b = sql.arg(Arg::Text(bare.clone()));
        text += &format!(" AND with_jid = {b}");
        if let Some(r) = resource {
            let r = sql.arg(Arg::Text(r.clone()));
            text += &format!(" AND with_resource = {r}");
        }
    }
    // Ids sort as their times do (see `id_at`): a time range is an id range of the key.
    if let Some(s) = f.start_us {
        let s = sql.arg(Arg::Text(id_floor(s)));
        text += &format!(" AND id >= {s}");
    }
    if let Some(e) = f.end_us {
        let e = sql.arg(Arg::Text(id_floor(e.saturating_add(1))));
        text += &format!(" AND id < {e}");
    }
    for (key, op) in [(after, ">"), (before, "<")] {
        if let Some(id) = key {
            let i = sql.arg(Arg::Text(id.clone()));
            text += &format!(" AND id {op} {i}");
        }
    }
    if let Some(ids) = &f.ids {
        if ids.is_empty() {
            text += " AND 1 = 0";
        } else {
            let list: Vec<String> = ids.iter().map(|i| sql.arg(Arg::Text(i.clone()))).collect();
            text += &format!(" AND id IN ({})", list.join(", "));
        }
    }
    sql.text += &text;
}

/// How the writer's connection is set up (the node's `limits.archive_cache_mib` and
/// `limits.archive_writer_nice`).
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Its SQLite page cache (see [`WRITER_CACHE_KIB`]).
    pub cache_kib: u32,
    /// The niceness of the thread that runs its SQLite statements (Linux). Above 0, when
    /// the machine is saturated routing goes first: the writer gets what CPU is left, and
    /// what it cannot keep up with is delivered unarchived and counted (`queue_full`);
    /// the writer also falls behind sooner when its batches are small, so 0 (leave it) is
    /// the default. PostgreSQL's work runs in its own server.
    pub nice: i32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            cache_kib: WRITER_CACHE_KIB,
            nice: 0,
        }
    }
}

/// The ids of this process's threads that sqlx started to run SQLite connections (named
/// `sqlx-sqlite-worker-N`, which the kernel cuts to 15 bytes).
#[cfg(target_os = "linux")]
fn sqlite_worker_threads() -> std::collections::HashSet<i32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Default::default();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("sqlx-sqlite-wor"))
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// The archive writer's own database connection (not the pool's, so its page cache and
/// its thread's priority are its own: see [`WriterOptions`]).
pub struct ArchiveConnection {
    conn: sqlx::AnyConnection,
    sqlite: bool,
}

impl Store {
    /// A connection for the archive writer, opened for it; on SQLite its page cache holds
    /// `cache_kib`, and on Linux the thread that runs its statements gets the niceness
    /// `nice` (see [`WriterOptions`]; 0 leaves it).
    pub async fn archive_connection(
        &self,
        cache_kib: u32,
        nice: i32,
    ) -> Result<ArchiveConnection, StoreError> {
        let sqlite = rookery_common::db::pool_is_sqlite(&self.db);
        #[cfg(target_os = "linux")]
        let before = sqlite_worker_threads();
        // Not one of the pool's: its big cache is its own and goes with it.
        let mut conn = rookery_common::db::connect_one(&self.db).await?;
        if sqlite {
            sqlx::query(&format!("PRAGMA cache_size = -{cache_kib}"))
                .execute(&mut conn)
                .await?;
            #[cfg(target_os = "linux")]
            if nice != 0 {
                // The connection's thread is the one that appeared meanwhile; if the pool
                // opened one at the same time, which is which is unknown: leave both.
                let new: Vec<i32> = sqlite_worker_threads()
                    .difference(&before)
                    .copied()
                    .collect();
                let reniced = match new[..] {
                    [tid] => rustix::process::Pid::from_raw(tid).is_some_and(|pid| {
                        rustix::process::setpriority_process(Some(pid), nice).is_ok()
                    }),
                    _ => false,
                };
                if !reniced {
                    tracing::warn!(
                        "the archive writer's thread could not be given a lower priority: at saturation it competes with routing"
                    );
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = nice;
        Ok(ArchiveConnection { conn, sqlite })
    }

    /// Writes rows in one transaction on a connection of the pool (the writer uses its own,
    /// [`ArchiveConnection::insert`]).
    pub async fn insert_archive_rows(&self, rows: &[ArchiveRow]) -> Result<(), StoreError> {
        let sqlite = rookery_common::db::pool_is_sqlite(&self.db);
        let mut conn = self.db.acquire().await?;
        insert_rows(&mut conn, sqlite, rows).await
    }
}

impl ArchiveConnection {
    pub async fn insert(&mut self, rows: &[ArchiveRow]) -> Result<(), StoreError> {
        insert_rows(&mut self.conn, self.sqlite, rows).await
    }
}

/// Writes rows in one transaction: [`INSERT_CHUNK`] rows per prepared `INSERT`, then one
/// statement for the rest. (Measured with benches/archive_writes.rs: a statement per row
/// pays a trip to SQLx's SQLite worker thread each.)
#[tracing::instrument(skip_all, fields(rows = rows.len()))]
async fn insert_rows(
    conn: &mut sqlx::AnyConnection,
    sqlite: bool,
    rows: &[ArchiveRow],
) -> Result<(), StoreError> {
    use sqlx::Connection;
    use std::sync::OnceLock;
    static CHUNK_SQL: [OnceLock<String>; 2] = [OnceLock::new(), OnceLock::new()];
    let chunk_sql = CHUNK_SQL[usize::from(sqlite)].get_or_init(|| insert_sql(INSERT_CHUNK, sqlite));
    // BEGIN IMMEDIATE on SQLite, like `rookery_common::db::begin_write`.
    let mut tx = if sqlite {
        conn.begin_with("BEGIN IMMEDIATE").await?
    } else {
        conn.begin().await?
    };
    let mut chunks = rows.chunks_exact(INSERT_CHUNK);
    for chunk in &mut chunks {
        let mut q = sqlx::query(chunk_sql);
        for r in chunk {
            q = bind_row(q, r);
        }
        q.execute(&mut *tx).await?;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        // Not persistent: a statement for each possible remainder would crowd the cache.
        let sql = insert_sql(rest.len(), sqlite);
        let mut q = sqlx::query(&sql).persistent(rest.len() == 1);
        for r in rest {
            q = bind_row(q, r);
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

impl Store {
    /// The id, if the account's archive has it (XEP-0059: a page or filter bound the
    /// archive does not hold is an error, not an empty set).
    async fn archive_key(
        &self,
        t: ArchiveTable,
        vhost: &str,
        username: &str,
        id: &str,
    ) -> Result<String, ArchiveQueryError> {
        sqlx::query(&format!(
            "SELECT 1 FROM {} WHERE vhost = $1 AND {} = $2 AND id = $3",
            t.table, t.owner
        ))
        .bind(vhost)
        .bind(username)
        .bind(id)
        .fetch_optional(&self.db)
        .await
        .map_err(StoreError::from)?
        .map(|_| id.to_string())
        .ok_or_else(|| ArchiveQueryError::UnknownId(id.to_string()))
    }

    /// One page of the account's archive: the items of `filter` after or before an id,
    /// at most `max` of them, with the size of the whole set. An id (of the page or the
    /// filter) the archive does not hold is [`ArchiveQueryError::UnknownId`].
    #[tracing::instrument(skip_all)]
    pub async fn archive_page(
        &self,
        vhost: &str,
        username: &str,
        filter: &ArchiveFilter,
        from: &PageFrom,
        max: i64,
    ) -> Result<ArchivePage, ArchiveQueryError> {
        self.archive_page_in(USER_ARCHIVE, vhost, username, filter, from, max)
            .await
    }

    /// [`Store::archive_page`] of the archive `owner` in table `t`.
    #[tracing::instrument(skip_all, fields(table = t.table))]
    pub async fn archive_page_in(
        &self,
        t: ArchiveTable,
        vhost: &str,
        username: &str,
        filter: &ArchiveFilter,
        from: &PageFrom,
        max: i64,
    ) -> Result<ArchivePage, ArchiveQueryError> {
        let mut keys = [None, None];
        for (slot, id) in keys.iter_mut().zip([&filter.after_id, &filter.before_id]) {
            if let Some(id) = id {
                *slot = Some(self.archive_key(t, vhost, username, id).await?);
            }
        }
        let [after, before] = keys;
        let page_key = match from {
            PageFrom::After(id) | PageFrom::Before(Some(id)) => {
                Some(self.archive_key(t, vhost, username, id).await?)
            }
            _ => None,
        };
        let base = |sql: &mut Sql, extra_after: Option<&String>, extra_before: Option<&String>| {
            filter_conditions(
                sql,
                t,
                vhost,
                username,
                filter,
                after.as_ref(),
                before.as_ref(),
            );
            // A page bound narrows the set further (a second key condition).
            filter_conditions_key(sql, extra_after, ">");
            filter_conditions_key(sql, extra_before, "<");
        };

        let mut count = Sql::new(&format!("SELECT COUNT(*) AS n FROM {} WHERE ", t.table));
        base(&mut count, None, None);
        let total: i64 = count
            .query()
            .fetch_one(&self.db)
            .await
            .map_err(StoreError::from)?
            .get("n");

        let backward = matches!(from, PageFrom::Before(_));
        let mut page = Sql::new(&format!(
            "SELECT id, created_us, {} AS direction, stanza FROM {} WHERE ",
            t.direction, t.table
        ));
        match from {
            PageFrom::Start | PageFrom::Before(None) => base(&mut page, None, None),
            PageFrom::After(_) => base(&mut page, page_key.as_ref(), None),
            PageFrom::Before(Some(_)) => base(&mut page, None, page_key.as_ref()),
        }
        let order = if backward { "id DESC" } else { "id" };
        let limit = page.arg(Arg::Int(max.max(0) + 1));
        page.text += &format!(" ORDER BY {order} LIMIT {limit}");
        let mut items: Vec<ArchivedMessage> = page
            .query()
            .fetch_all(&self.db)
            .await
            .map_err(StoreError::from)?
            .iter()
            .map(|r| ArchivedMessage {
                id: r.get("id"),
                created_us: r.get("created_us"),
                direction: Direction::parse(&r.get::<String, _>("direction")),
                stanza: r.get("stanza"),
            })
            .collect();
        let complete = items.len() as i64 <= max.max(0);
        items.truncate(max.max(0) as usize);
        if backward {
            items.reverse();
        }
        let first_index = match items.first() {
            None => None,
            Some(first) => {
                let mut before_first =
                    Sql::new(&format!("SELECT COUNT(*) AS n FROM {} WHERE ", t.table));
                base(&mut before_first, None, Some(&first.id));
                Some(
                    before_first
                        .query()
                        .fetch_one(&self.db)
                        .await
                        .map_err(StoreError::from)?
                        .get("n"),
                )
            }
        };
        Ok(ArchivePage {
            items,
            count: total,
            first_index,
            complete,
        })
    }

    /// The oldest and the newest message of the account's archive, as (id, time).
    #[tracing::instrument(skip_all)]
    pub async fn archive_bounds(
        &self,
        vhost: &str,
        username: &str,
    ) -> Result<Option<(ArchiveBound, ArchiveBound)>, StoreError> {
        let one = |order: &'static str| async move {
            Ok::<_, StoreError>(
                sqlx::query(&format!(
                    "SELECT id, created_us FROM archive_messages WHERE vhost = $1 AND username = $2 ORDER BY {order} LIMIT 1"
                ))
                .bind(vhost)
                .bind(username)
                .fetch_optional(&self.db)
                .await?
                .map(|r| (r.get::<String, _>("id"), r.get::<i64, _>("created_us"))),
            )
        };
        let first = one("id").await?;
        let last = one("id DESC").await?;
        Ok(first.zip(last))
    }

    /// Deletes up to `batch` of the vhost's archived messages older than `before_us`,
    /// oldest first; returns how many went.
    #[tracing::instrument(skip_all, fields(vhost))]
    pub async fn expire_archive(
        &self,
        vhost: &str,
        before_us: i64,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = rookery_common::db::begin_write(&self.db).await?;
        let rows: Vec<(String, String, i64)> = sqlx::query(
            "SELECT username, id, with_jid, with_resource, direction, CAST(LENGTH(stanza) AS BIGINT) AS chars
             FROM archive_messages WHERE vhost = $1 AND created_us < $2 ORDER BY created_us, id LIMIT $3",
        )
        .bind(vhost)
        .bind(before_us)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            let (username, id): (String, String) = (r.get("username"), r.get("id"));
            let bytes = archive_row_bytes(
                vhost,
                &username,
                &id,
                &r.get::<String, _>("with_jid"),
                &r.get::<String, _>("with_resource"),
                Direction::parse(&r.get::<String, _>("direction")),
                r.get("chars"),
            );
            (username, id, bytes)
        })
        .collect();
        for (username, id, _) in &rows {
            sqlx::query(
                "DELETE FROM archive_messages WHERE vhost = $1 AND username = $2 AND id = $3",
            )
            .bind(vhost)
            .bind(username)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.meters
            .add(vhost, -rows.iter().map(|(_, _, b)| b).sum::<i64>());
        Ok(rows.len() as u64)
    }

    /// The account's archiving preferences (the defaults if it never set any).
    #[tracing::instrument(skip_all)]
    pub async fn archive_prefs(
        &self,
        vhost: &str,
        username: &str,
    ) -> Result<StoredPrefs, StoreError> {
        let split = |s: String| -> Vec<String> {
            s.split('\n')
                .filter(|j| !j.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(sqlx::query(
            "SELECT default_mode, always_jids, never_jids FROM archive_prefs WHERE vhost = $1 AND username = $2",
        )
        .bind(vhost)
        .bind(username)
        .fetch_optional(&self.db)
        .await?
        .map(|r| StoredPrefs {
            default: DefaultMode::parse(&r.get::<String, _>("default_mode"))
                .unwrap_or(DefaultMode::Always),
            always: split(r.get("always_jids")),
            never: split(r.get("never_jids")),
        })
        .unwrap_or_default())
    }

    /// Replaces the account's archiving preferences; [`StoreError::StorageFull`] when what
    /// they add would pass the vhost's storage quota.
    #[tracing::instrument(skip_all)]
    pub async fn set_archive_prefs(
        &self,
        vhost: &str,
        username: &str,
        prefs: &StoredPrefs,
    ) -> Result<(), StoreError> {
        let always = prefs.always.join("\n");
        let never = prefs.never.join("\n");
        let size = |default: &str, a: &str, n: &str| {
            row_bytes(
                &[Some(vhost), Some(username), Some(default), Some(a), Some(n)],
                1,
            )
        };
        let old = sqlx::query(
            "SELECT default_mode, always_jids, never_jids FROM archive_prefs WHERE vhost = $1 AND username = $2",
        )
        .bind(vhost)
        .bind(username)
        .fetch_optional(&self.db)
        .await?
        .map_or(0, |r| {
            size(
                &r.get::<String, _>("default_mode"),
                &r.get::<String, _>("always_jids"),
                &r.get::<String, _>("never_jids"),
            )
        });
        let growth = size(prefs.default.as_str(), &always, &never) - old;
        let reserved = self
            .meters
            .reserve(vhost, growth)
            .map_err(|o| StoreError::StorageFull(vhost.to_string(), o.quota))?;
        sqlx::query(
            "INSERT INTO archive_prefs (vhost, username, default_mode, always_jids, never_jids, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (vhost, username) DO UPDATE SET default_mode = excluded.default_mode,
             always_jids = excluded.always_jids, never_jids = excluded.never_jids, updated_at = excluded.updated_at",
        )
        .bind(vhost)
        .bind(username)
        .bind(prefs.default.as_str())
        .bind(&always)
        .bind(&never)
        .bind(now())
        .execute(&self.db)
        .await?;
        reserved.commit();
        Ok(())
    }
}

/// A key condition `id op key` on its own.
fn filter_conditions_key(sql: &mut Sql, key: Option<&String>, op: &str) {
    if let Some(id) = key {
        let i = sql.arg(Arg::Text(id.clone()));
        sql.text += &format!(" AND id {op} {i}");
    }
}

// ---- the batching writer ----------------------------------------------------------------

enum Job {
    Row(ArchiveRow),
    Flush(oneshot::Sender<()>),
}

/// The front of the archive's background writer (see the module docs).
#[derive(Clone)]
pub struct ArchiveWriter {
    tx: mpsc::Sender<Job>,
    metrics: ArchiveMetrics,
}

impl ArchiveWriter {
    /// Starts the writer task on the current tokio runtime; it ends once every clone of
    /// the writer is dropped and what they queued is written.
    pub fn start(
        store: Store,
        capacity: usize,
        options: WriterOptions,
        metrics: ArchiveMetrics,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        tokio::spawn(run(store, options, rx, metrics.clone()));
        Self { tx, metrics }
    }

    /// Queues a row without waiting. False when the queue is full (or the writer is gone):
    /// the row is not written, and that is counted here.
    pub fn try_write(&self, row: ArchiveRow) -> bool {
        match self.tx.try_send(Job::Row(row)) {
            Ok(()) => {
                self.metrics.queued.inc();
                true
            }
            Err(_) => {
                self.metrics.dropped("queue_full");
                warn_rarely("the archive queue is full: a message was delivered but not archived");
                false
            }
        }
    }

    /// Waits until every row queued before this call is written (or failed for good).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Job::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Logs a warning at most once a second (a full queue would otherwise log per message).
fn warn_rarely(message: &'static str) {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
        *last = Some(Instant::now());
        tracing::warn!("{message}");
    }
}

async fn run(
    store: Store,
    options: WriterOptions,
    mut rx: mpsc::Receiver<Job>,
    metrics: ArchiveMetrics,
) {
    let mut writer = Writer {
        store,
        options,
        conn: None,
    };
    let mut rows = Vec::new();
    let mut waiting = Vec::new();
    while let Some(job) = rx.recv().await {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Row(r) => rows.push(r),
                Job::Flush(done) => waiting.push(done),
            }
            if rows.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !rows.is_empty() {
            metrics.queued.dec_by(rows.len() as i64);
            write_batch(&mut writer, &rows, &metrics).await;
            rows.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// The writer task's store and connection (opened on first use, and again after a
/// failure that was not the database refusing a row).
struct Writer {
    store: Store,
    options: WriterOptions,
    conn: Option<ArchiveConnection>,
}

impl Writer {
    async fn insert(&mut self, rows: &[ArchiveRow]) -> Result<(), StoreError> {
        let conn = match &mut self.conn {
            Some(c) => c,
            None => self.conn.insert(
                self.store
                    .archive_connection(self.options.cache_kib, self.options.nice)
                    .await?,
            ),
        };
        let result = conn.insert(rows).await;
        if let Err(e) = &result
            && !refused_row(e)
        {
            self.conn = None;
        }
        result
    }
}

/// Whether the database refused a row (a constraint) rather than failed.
fn refused_row(e: &StoreError) -> bool {
    match e {
        StoreError::Internal(e) => e.chain().any(|c| {
            matches!(
                c.downcast_ref::<sqlx::Error>(),
                Some(sqlx::Error::Database(_))
            )
        }),
        _ => false,
    }
}

/// Writes a batch; retries once, then row by row, so one bad row loses only itself.
async fn write_batch(writer: &mut Writer, rows: &[ArchiveRow], metrics: &ArchiveMetrics) {
    let first = match writer.insert(rows).await {
        Ok(()) => {
            metrics.written.inc_by(rows.len() as u64);
            return;
        }
        Err(e) => e,
    };
    // A row the database refuses (its account was just deleted) fails the batch: the
    // others are written one by one at once. Anything else may pass: one more try first.
    if !refused_row(&first) {
        tracing::warn!(
            rows = rows.len(),
            error = format!("{first:#}"),
            "writing archived messages failed; trying again"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        if writer.insert(rows).await.is_ok() {
            metrics.written.inc_by(rows.len() as u64);
            return;
        }
    }
    for row in rows {
        match writer.insert(std::slice::from_ref(row)).await {
            Ok(()) => {
                metrics.written.inc();
            }
            Err(e) => {
                metrics.dropped("write_failed");
                writer.store.meters.add(&row.vhost, -row.charge());
                tracing::error!(vhost = %row.vhost, id = %row.id, error = format!("{e:#}"), "an archived message could not be written");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const DOMAIN: &str = "example.com";

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        store.add_vhost(DOMAIN, None).await.unwrap();
        for user in ["juliet", "romeo"] {
            store
                .add_account(DOMAIN, user, "a-password-1", 1)
                .await
                .unwrap();
        }
        (store, dir)
    }

    /// Message `n` of juliet's archive: with romeo (even) or nurse (odd), 10 µs apart,
    /// received when n % 3 == 0.
    fn row(n: i64) -> ArchiveRow {
        ArchiveRow {
            vhost: DOMAIN.into(),
            username: "juliet".into(),
            id: test_id(n),
            created_us: 1_000 + 10 * n,
            with_jid: if n % 2 == 0 {
                "romeo@example.com".into()
            } else {
                "nurse@example.com".into()
            },
            with_resource: if n % 4 == 0 { "balcony" } else { "" }.into(),
            direction: if n % 3 == 0 {
                Direction::Received
            } else {
                Direction::Sent
            },
            stanza: format!("<message><body>{n}</body></message>").into(),
        }
    }

    fn ids(page: &ArchivePage) -> Vec<String> {
        page.items.iter().map(|m| m.id.clone()).collect()
    }

    /// The id of message `n`, written at 1,000 + 10·n µs.
    fn test_id(n: i64) -> String {
        id_at(1_000 + 10 * n, "tag00")
    }

    fn want(range: impl IntoIterator<Item = i64>) -> Vec<String> {
        range.into_iter().map(test_id).collect()
    }

    async fn filled() -> (Store, tempfile::TempDir) {
        let (store, dir) = store().await;
        let rows: Vec<ArchiveRow> = (0..25).map(row).collect();
        store.insert_archive_rows(&rows).await.unwrap();
        (store, dir)
    }

    async fn page(store: &Store, f: &ArchiveFilter, from: PageFrom, max: i64) -> ArchivePage {
        store
            .archive_page(DOMAIN, "juliet", f, &from, max)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn full_chunks_and_the_rest_are_written_in_order() {
        let (store, _dir) = store().await;
        let n = 2 * INSERT_CHUNK as i64 + 3;
        let rows: Vec<ArchiveRow> = (0..n).map(row).collect();
        store.insert_archive_rows(&rows).await.unwrap();
        let p = page(&store, &ArchiveFilter::default(), PageFrom::Start, n).await;
        assert_eq!((ids(&p), p.count), (want(0..n), n));
        assert_eq!(p.items[5].stanza, "<message><body>5</body></message>");
        assert_eq!(p.items[5].created_us, 1_050);
    }

    #[test]
    fn ids_sort_as_their_times_and_floors_bound_them() {
        let (a, b) = (id_at(1_000, "zzzzz"), id_at(1_001, "00000"));
        assert!(a < b && a.len() == 16);
        assert!(id_floor(1_000) <= a && a < id_floor(1_001));
        assert_eq!(id_floor(-5), id_floor(0), "before 1970 counts as 1970");
        assert_eq!(id_floor(i64::MAX), "vvvvvvvvvvv");
    }

    #[tokio::test]
    async fn pages_go_forward_from_the_start_and_after_an_id_to_a_complete_end() {
        let (store, _dir) = filled().await;
        let all = ArchiveFilter::default();
        let p = page(&store, &all, PageFrom::Start, 10).await;
        assert_eq!(ids(&p), want(0..10));
        assert_eq!((p.count, p.first_index, p.complete), (25, Some(0), false));
        let p = page(&store, &all, PageFrom::After(test_id(9)), 10).await;
        assert_eq!(ids(&p), want(10..20));
        assert_eq!((p.first_index, p.complete), (Some(10), false));
        let p = page(&store, &all, PageFrom::After(test_id(19)), 10).await;
        assert_eq!(ids(&p), want(20..25));
        assert_eq!((p.first_index, p.complete), (Some(20), true));
        // Exactly at the end: an empty, complete page.
        let p = page(&store, &all, PageFrom::After(test_id(24)), 10).await;
        assert!(p.items.is_empty() && p.complete && p.first_index.is_none());
        // A page that ends exactly at the end is complete too.
        let p = page(&store, &all, PageFrom::After(test_id(14)), 10).await;
        assert_eq!((ids(&p), p.complete), (want(15..25), true));
    }

    #[tokio::test]
    async fn pages_go_backward_from_the_last_page_and_before_an_id() {
        let (store, _dir) = filled().await;
        let all = ArchiveFilter::default();
        let p = page(&store, &all, PageFrom::Before(None), 10).await;
        assert_eq!(ids(&p), want(15..25), "the last page, in archive order");
        assert_eq!((p.first_index, p.complete), (Some(15), false));
        let p = page(&store, &all, PageFrom::Before(Some(test_id(15))), 10).await;
        assert_eq!((ids(&p), p.complete), (want(5..15), false));
        let p = page(&store, &all, PageFrom::Before(Some(test_id(5))), 10).await;
        assert_eq!(
            (ids(&p), p.complete, p.first_index),
            (want(0..5), true, Some(0))
        );
        let p = page(&store, &all, PageFrom::Before(Some(test_id(10))), 10).await;
        assert_eq!((ids(&p), p.complete), (want(0..10), true));
        // max 0: only the count.
        let p = page(&store, &all, PageFrom::Start, 0).await;
        assert_eq!((p.items.len(), p.count), (0, 25));
    }

    #[tokio::test]
    async fn each_filter_narrows_the_set_and_unknown_ids_are_refused() {
        let (store, _dir) = filled().await;
        let with = |bare: &str, res: Option<&str>| ArchiveFilter {
            with: Some((bare.into(), res.map(str::to_string))),
            ..Default::default()
        };
        let p = page(
            &store,
            &with("romeo@example.com", None),
            PageFrom::Start,
            100,
        )
        .await;
        assert_eq!(ids(&p), want((0..25).filter(|n| n % 2 == 0)));
        assert_eq!(p.count, 13);
        let p = page(
            &store,
            &with("romeo@example.com", Some("balcony")),
            PageFrom::Start,
            100,
        )
        .await;
        assert_eq!(ids(&p), want((0..25).filter(|n| n % 4 == 0)));
        // Start and end are inclusive (microseconds).
        let times = ArchiveFilter {
            start_us: Some(1_050),
            end_us: Some(1_100),
            ..Default::default()
        };
        assert_eq!(
            ids(&page(&store, &times, PageFrom::Start, 100).await),
            want(5..=10)
        );
        let around = ArchiveFilter {
            after_id: Some(test_id(3)),
            before_id: Some(test_id(8)),
            ..Default::default()
        };
        let p = page(&store, &around, PageFrom::Start, 100).await;
        assert_eq!((ids(&p), p.count), (want(4..8), 4));
        let listed = ArchiveFilter {
            ids: Some(vec![test_id(7), test_id(2), "nope".into()]),
            ..Default::default()
        };
        assert_eq!(
            ids(&page(&store, &listed, PageFrom::Start, 100).await),
            want([2, 7])
        );
        // Filters and pages combine: romeo's messages, pages of 3, backward.
        let p = page(
            &store,
            &with("romeo@example.com", None),
            PageFrom::Before(Some(test_id(12))),
            3,
        )
        .await;
        assert_eq!((ids(&p), p.first_index), (want([6, 8, 10]), Some(3)));
        for (f, from) in [
            (ArchiveFilter::default(), PageFrom::After("nope".into())),
            (
                ArchiveFilter::default(),
                PageFrom::Before(Some("nope".into())),
            ),
            (
                ArchiveFilter {
                    after_id: Some("nope".into()),
                    ..Default::default()
                },
                PageFrom::Start,
            ),
        ] {
            let r = store.archive_page(DOMAIN, "juliet", &f, &from, 10).await;
            assert!(
                matches!(r, Err(ArchiveQueryError::UnknownId(ref i)) if i == "nope"),
                "{r:?}"
            );
        }
        // Another account's archive is another set.
        let p = store
            .archive_page(DOMAIN, "romeo", &Default::default(), &PageFrom::Start, 10)
            .await
            .unwrap();
        assert_eq!(p.count, 0);
        let bounds = store
            .archive_bounds(DOMAIN, "juliet")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(bounds, ((test_id(0), 1_000), (test_id(24), 1_240)));
    }

    #[tokio::test]
    async fn the_writer_batches_rows_counts_them_and_drops_rows_of_deleted_accounts() {
        let (store, _dir) = store().await;
        store
            .meters
            .configure([(DOMAIN.to_string(), Some(1_000_000))]);
        store.remeasure_storage(DOMAIN).await.unwrap();
        let metrics = crate::metrics::Metrics::new().archive;
        let writer = ArchiveWriter::start(
            store.clone(),
            1_000,
            WriterOptions::default(),
            metrics.clone(),
        );
        let mut orphan = row(99);
        orphan.username = "ghost".into();
        for r in (0..500).map(row).chain([orphan.clone()]) {
            store.meters.add(DOMAIN, r.charge());
            assert!(writer.try_write(r));
        }
        writer.flush().await;
        let p = page(&store, &ArchiveFilter::default(), PageFrom::Start, 1).await;
        assert_eq!(p.count, 500);
        assert_eq!(metrics.written.get(), 500);
        assert_eq!(metrics.queued.get(), 0);
        // The orphan's bytes were given back: the meter matches the database.
        assert_eq!(
            store.meters.get(DOMAIN).unwrap().used(),
            store.measure_storage(DOMAIN).await.unwrap()
        );
        // A full queue refuses at once instead of waiting.
        let (tx, _rx) = mpsc::channel(1);
        let tiny = ArchiveWriter {
            tx,
            metrics: metrics.clone(),
        };
        assert!(tiny.try_write(row(1)));
        assert!(!tiny.try_write(row(2)));
    }

    #[tokio::test]
    async fn the_writers_connection_has_its_own_page_cache_and_writes_batches() {
        let (store, _dir) = store().await;
        let mut conn = store.archive_connection(4_096, 5).await.unwrap();
        // Its thread runs with niceness 5 (field 19 of stat(5)); the pool's with 0.
        #[cfg(target_os = "linux")]
        {
            let nice_of = |tid: &i32| {
                let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
                let after_name = stat.rsplit_once(')').unwrap().1;
                after_name
                    .split_whitespace()
                    .nth(16)
                    .unwrap()
                    .parse::<i32>()
                    .unwrap()
            };
            let mut nices: Vec<i32> = sqlite_worker_threads().iter().map(nice_of).collect();
            nices.sort();
            assert_eq!(nices.last(), Some(&5), "{nices:?}");
            assert_eq!(nices.iter().filter(|&&n| n == 5).count(), 1, "{nices:?}");
        }
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut conn.conn)
            .await
            .unwrap();
        assert_eq!(cache, -4_096);
        // The pool's connections keep SQLite's default.
        let pooled: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&store.db)
            .await
            .unwrap();
        assert_ne!(pooled, -4_096);
        let rows: Vec<_> = (0..150).map(row).collect();
        conn.insert(&rows).await.unwrap();
        let p = page(&store, &ArchiveFilter::default(), PageFrom::Start, 1).await;
        assert_eq!(p.count, 150);
    }

    #[tokio::test]
    async fn expiry_deletes_old_rows_and_frees_their_bytes_and_prefs_round_trip() {
        let (store, _dir) = filled().await;
        store
            .meters
            .configure([(DOMAIN.to_string(), Some(1_000_000))]);
        store.remeasure_storage(DOMAIN).await.unwrap();
        assert_eq!(store.expire_archive(DOMAIN, 1_100, 4).await.unwrap(), 4);
        assert_eq!(store.expire_archive(DOMAIN, 1_100, 100).await.unwrap(), 6);
        let p = page(&store, &ArchiveFilter::default(), PageFrom::Start, 1).await;
        assert_eq!((p.count, ids(&p)), (15, want([10])));
        assert_eq!(
            store.meters.get(DOMAIN).unwrap().used(),
            store.measure_storage(DOMAIN).await.unwrap()
        );

        assert_eq!(
            store.archive_prefs(DOMAIN, "juliet").await.unwrap(),
            StoredPrefs::default()
        );
        let prefs = StoredPrefs {
            default: DefaultMode::Roster,
            always: vec!["romeo@example.com".into()],
            never: vec!["tybalt@example.com".into(), "example.net".into()],
        };
        store
            .set_archive_prefs(DOMAIN, "juliet", &prefs)
            .await
            .unwrap();
        assert_eq!(store.archive_prefs(DOMAIN, "juliet").await.unwrap(), prefs);
        assert_eq!(
            store.meters.get(DOMAIN).unwrap().used(),
            store.measure_storage(DOMAIN).await.unwrap()
        );
        // Deleting the account deletes its archive and preferences.
        store.remove_account(DOMAIN, "juliet").await.unwrap();
        let p = page(&store, &ArchiveFilter::default(), PageFrom::Start, 1).await;
        assert_eq!(p.count, 0);
        assert_eq!(
            store.archive_prefs(DOMAIN, "juliet").await.unwrap(),
            StoredPrefs::default()
        );
    }

    #[tokio::test]
    async fn archives_travel_with_a_moved_vhost() {
        let (a, _da) = filled().await;
        a.set_archive_prefs(DOMAIN, "juliet", &StoredPrefs::default())
            .await
            .unwrap();
        let exported = a.export_vhost(DOMAIN).await.unwrap();
        assert_eq!(exported["archive_messages"].len(), 25);
        assert_eq!(exported["archive_prefs"].len(), 1);
        let (b, _db) = store().await;
        b.import_vhost(DOMAIN, &exported).await.unwrap();
        let p = page(&b, &ArchiveFilter::default(), PageFrom::Start, 100).await;
        assert_eq!(ids(&p), want(0..25));
    }
}
