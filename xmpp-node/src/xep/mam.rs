//! Message archive management (XEP-0313, `urn:xmpp:mam:2` with `#extended`) for user
//! archives, and unique and stable stanza ids (XEP-0359).
//!
//! Archiving: `im` calls [`Archiving::archive`] once for every message between two local
//! accounts, on the hot path (`route_fast`, where [`Archiving::cached`] decides from memory
//! only) and on the full path (`message`, where [`Archiving::resolve`] may read the store).
//! A message worth keeping (a `chat` or `normal` message with a body, or one carrying a
//! XEP-0334 `<store/>` hint; never `error` or `groupchat`, never one with `<no-store/>` or
//! `<no-permanent-store/>`) goes into the sender's archive and the recipient's, each as
//! its owner's preferences say (`always`, `never`, or only contacts of the `roster`, with
//! lists of JIDs always or never archived). The recipient's copy gets a XEP-0359
//! `<stanza-id by='recipient@domain' id='…'/>` before delivery, once any stanza-id the
//! sender wrote in the recipient's name is removed (XEP-0359 §5). Rows go to the store's
//! batching writer (`store::archive`), so routing never waits for the database; a vhost
//! whose spec switches `features.archive` off archives nothing and advertises nothing.
//!
//! Archive ids ([`IdGen`]) are 16 URL-safe characters: 11 for the time in microseconds
//! (base32, so they sort as the time does) and 5 random ones chosen when the node starts.
//! The time is the wall clock moved forward by at least one microsecond per id (one
//! atomic operation, no system call: the clock is read through the vDSO), so ids are
//! unique and ordered within a node and distinct from another node's. The archive relies
//! on that order: it sorts by id alone and finds a time range as an id range.
//!
//! Queries: only the account itself reads its archive. A query (a data form with `with`,
//! `start`, `end`, `before-id`, `after-id`, `ids`, and XEP-0059 paging) is answered with one
//! `<message><result><forwarded>` per archived message, then the iq result carrying
//! `<fin/>`; pages hold at most [`MAX_PAGE`] messages. Preferences are read and written
//! with `<prefs/>`, the archive's first and last message with `<metadata/>`.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, Ordering},
    },
};

use crate::{
    control::moving::moving_text,
    im::storage_full_text,
    metrics::ArchiveMetrics,
    node::{Node, format_utc, parse_stored},
    proto::{
        element::Element,
        jid::Jid,
        ns,
        stanza::{Condition, error_reply, iq_result},
    },
    router::SessionHandle,
    store::{
        Store, StoreError,
        archive::{
            ArchiveFilter, ArchivePage, ArchiveQueryError, ArchiveRow, ArchiveWriter, DefaultMode,
            Direction, ID_ALPHABET, PageFrom, QUEUE_ROWS, StoredPrefs, WriterOptions, id_at,
        },
    },
    xep::blocking,
};

pub const NS: &str = "urn:xmpp:mam:2";
pub const NS_EXTENDED: &str = "urn:xmpp:mam:2#extended";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
pub const NS_HINTS: &str = "urn:xmpp:hints";

/// Messages per page when the query does not say.
pub const DEFAULT_PAGE: i64 = 50;
/// Messages per page at most, whatever the query asks.
pub const MAX_PAGE: i64 = 250;
/// Ids one `ids` field may list.
const MAX_IDS: usize = 250;

/// Archived messages deleted per transaction by upkeep, and batches per vhost per round.
const EXPIRE_BATCH: i64 = 500;
const EXPIRE_BATCHES: usize = 20;

// ---- archive ids ---------------------------------------------------------------------------

/// Time-ordered archive ids (see the module docs).
pub struct IdGen {
    last_us: AtomicI64,
    tag: String,
}

impl IdGen {
    pub fn new() -> Self {
        let mut b = [0u8; 5];
        let _ = getrandom::fill(&mut b);
        Self::with_tag(
            b.iter()
                .map(|x| ID_ALPHABET[usize::from(x % 32)] as char)
                .collect(),
        )
    }

    fn with_tag(tag: String) -> Self {
        Self {
            last_us: AtomicI64::new(0),
            tag,
        }
    }

    /// A new id and its time in microseconds.
    pub fn next(&self) -> (String, i64) {
        self.next_at(now_us())
    }

    fn next_at(&self, now: i64) -> (String, i64) {
        let prev = self
            .last_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        let t = now.max(prev + 1);
        (id_at(t, &self.tag), t)
    }
}

impl Default for IdGen {
    fn default() -> Self {
        Self::new()
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// ---- preferences ---------------------------------------------------------------------------

/// An account's archiving preferences (XEP-0313 §6), JIDs parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefs {
    pub default: DefaultMode,
    pub always: Vec<Jid>,
    pub never: Vec<Jid>,
}

/// What preferences say about one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Archive,
    Skip,
    /// Archive if the other party is in the owner's roster.
    IfInRoster,
}

impl Prefs {
    /// The rule for a message with `with`: a `never` JID wins over an `always` one, and
    /// either over the default. A listed bare JID covers its resources, a domain its users
    /// (the matching of block lists).
    pub fn rule(&self, with: &Jid) -> Rule {
        let listed = |list: &[Jid]| list.iter().any(|j| blocking::matches(j, with));
        if listed(&self.never) {
            Rule::Skip
        } else if listed(&self.always) {
            Rule::Archive
        } else {
            match self.default {
                DefaultMode::Always => Rule::Archive,
                DefaultMode::Never => Rule::Skip,
                DefaultMode::Roster => Rule::IfInRoster,
            }
        }
    }

    fn from_stored(s: StoredPrefs) -> Self {
        let parse = |l: Vec<String>| l.iter().filter_map(|j| Jid::parse(j).ok()).collect();
        Self {
            default: s.default,
            always: parse(s.always),
            never: parse(s.never),
        }
    }

    fn to_stored(&self) -> StoredPrefs {
        let text = |l: &[Jid]| l.iter().map(Jid::to_string).collect();
        StoredPrefs {
            default: self.default,
            always: text(&self.always),
            never: text(&self.never),
        }
    }

    /// `<prefs default='…'><always><jid/>…</always><never>…</never></prefs>`.
    pub fn to_element(&self) -> Element {
        let list = |name: &str, jids: &[Jid]| {
            let mut e = Element::new(name, NS);
            for j in jids {
                e.append_child(Element::new("jid", NS).with_text(j.to_string()));
            }
            e
        };
        Element::new("prefs", NS)
            .with_attr("default", self.default.as_str())
            .with_child(list("always", &self.always))
            .with_child(list("never", &self.never))
    }

    /// Reads a `<prefs/>` of a set.
    pub fn parse(prefs: &Element) -> Result<Self, &'static str> {
        let default = prefs
            .attr("default")
            .ok_or("The prefs element needs a default attribute.")
            .and_then(|d| {
                DefaultMode::parse(d).ok_or("The default must be always, never or roster.")
            })?;
        let list = |name: &str| -> Result<Vec<Jid>, &'static str> {
            let mut out = Vec::new();
            for e in prefs
                .get_child(name, NS)
                .into_iter()
                .flat_map(|l| l.children())
            {
                if e.is("jid", NS) {
                    let j = Jid::parse(e.text().trim())
                        .map_err(|_| "A JID in the preferences is not valid.")?;
                    if !out.contains(&j) {
                        out.push(j);
                    }
                }
            }
            Ok(out)
        };
        Ok(Self {
            default,
            always: list("always")?,
            never: list("never")?,
        })
    }
}

fn default_prefs() -> Arc<Prefs> {
    static DEFAULT: std::sync::OnceLock<Arc<Prefs>> = std::sync::OnceLock::new();
    DEFAULT
        .get_or_init(|| Arc::new(Prefs::from_stored(StoredPrefs::default())))
        .clone()
}

/// The archive's state in the running node: the writer, the ids, the preferences of the
/// accounts seen so far (loaded at bind, or when first needed; replaced when set).
pub struct Mam {
    pub writer: ArchiveWriter,
    pub ids: IdGen,
    prefs: RwLock<HashMap<Jid, Arc<Prefs>>>,
    metrics: ArchiveMetrics,
}

impl Mam {
    /// Starts the archive writer on the current runtime.
    pub fn start(store: Store, options: WriterOptions, metrics: ArchiveMetrics) -> Self {
        Self {
            writer: ArchiveWriter::start(store, QUEUE_ROWS, options, metrics.clone()),
            ids: IdGen::new(),
            prefs: RwLock::default(),
            metrics,
        }
    }

    /// The account's preferences if they are in memory.
    pub fn cached_prefs(&self, owner: &Jid) -> Option<Arc<Prefs>> {
        self.prefs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(owner)
            .cloned()
    }

    fn put_prefs(&self, owner: Jid, prefs: Prefs) {
        let prefs = if prefs == *default_prefs() {
            default_prefs()
        } else {
            Arc::new(prefs)
        };
        self.prefs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(owner, prefs);
    }

    /// Drops an account's cached preferences (the account was deleted).
    pub fn forget(&self, owner: &Jid) {
        self.prefs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&owner.bare());
    }

    /// Drops the cached preferences of a vhost's accounts (its data was replaced or gone).
    pub fn forget_domain(&self, domain: &str) {
        self.prefs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|owner, _| owner.domain() != domain);
    }
}

/// The account's preferences, from memory or the store (then kept in memory). Call it at
/// bind so that routing the account's messages never needs the store.
pub async fn load_prefs(node: &Node, owner: &Jid) -> Arc<Prefs> {
    let owner = owner.bare();
    if let Some(p) = node.mam.cached_prefs(&owner) {
        return p;
    }
    let Some(user) = owner.node() else {
        return default_prefs();
    };
    match node.store.archive_prefs(owner.domain(), user).await {
        Ok(stored) => {
            node.mam
                .put_prefs(owner.clone(), Prefs::from_stored(stored));
            node.mam.cached_prefs(&owner).unwrap_or_else(default_prefs)
        }
        Err(e) => {
            tracing::error!(error = %e, "reading archiving preferences failed");
            default_prefs()
        }
    }
}

// ---- archiving -----------------------------------------------------------------------------

/// Whether a message is archived at all (XEP-0313 §5.1.1, XEP-0334 hints).
pub fn archivable(stanza: &Element) -> bool {
    if stanza.name() != "message" {
        return false;
    }
    let kind = stanza.attr("type").unwrap_or("normal");
    if matches!(kind, "error" | "groupchat") {
        return false;
    }
    let hint = |name| stanza.has_child(name, NS_HINTS);
    if hint("no-store") || hint("no-permanent-store") {
        return false;
    }
    hint("store") || (matches!(kind, "chat" | "normal") && stanza.has_child("body", ns::CLIENT))
}

/// Whether the vhost archives (its spec may switch the archive off).
pub fn enabled(node: &Node, domain: &str) -> bool {
    node.host(domain)
        .is_some_and(|h| h.policy.as_ref().is_none_or(|p| p.features.archive))
}

/// The disco#info features of an account on `domain`.
pub fn account_features(node: &Node, domain: &str) -> &'static [&'static str] {
    if enabled(node, domain) {
        &[NS, NS_EXTENDED, NS_SID]
    } else {
        &[]
    }
}

/// Which archives one message goes into.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Archiving {
    pub sent: bool,
    pub received: bool,
}

impl Archiving {
    /// Decided from memory only, for the hot path: None when the store is needed (the
    /// preferences of either side are not in memory, or one says "roster").
    pub fn cached(node: &Node, from: &Jid, to: &Jid, stanza: &Element) -> Option<Self> {
        if !archivable(stanza) {
            return Some(Self::default());
        }
        let side = |owner: &Jid, with: &Jid| -> Option<bool> {
            if owner.node().is_none() || !enabled(node, owner.domain()) {
                return Some(false);
            }
            match node.mam.cached_prefs(&owner.bare())?.rule(with) {
                Rule::Archive => Some(true),
                Rule::Skip => Some(false),
                Rule::IfInRoster => None,
            }
        };
        let own = from.bare() == to.bare();
        Some(Self {
            sent: !own && side(from, to)?,
            received: side(to, from)?,
        })
    }

    /// Decided with the store's help where memory does not know.
    pub async fn resolve(node: &Node, from: &Jid, to: &Jid, stanza: &Element) -> Self {
        if let Some(a) = Self::cached(node, from, to, stanza) {
            return a;
        }
        let side = async |owner: &Jid, with: &Jid| -> bool {
            if owner.node().is_none() || !enabled(node, owner.domain()) {
                return false;
            }
            match load_prefs(node, owner).await.rule(with) {
                Rule::Archive => true,
                Rule::Skip => false,
                Rule::IfInRoster => match node.store.contact(&owner.bare(), &with.bare()).await {
                    Ok(c) => c.is_some_and(|c| c.listed),
                    Err(e) => {
                        tracing::error!(error = %e, "reading a roster for archiving failed");
                        false
                    }
                },
            }
        };
        let own = from.bare() == to.bare();
        Self {
            sent: !own && side(from, to).await,
            received: side(to, from).await,
        }
    }

    /// Archives the message from `from` to the local account `to` as decided: in the
    /// sender's archive (its id is returned, for carbons) and in the recipient's, whose id
    /// the stanza then carries as its stanza-id. Stanza-ids claiming to be by the
    /// recipient are removed first, archived or not (XEP-0359 §5). Never waits.
    pub fn archive(
        self,
        node: &Node,
        from: &Jid,
        to: &Jid,
        stanza: &mut Element,
    ) -> Option<String> {
        // Most messages carry no stanza-id and most are archived: the recipient's bare JID
        // is written out only when one of the two needs it.
        let by = || to.bare().to_string();
        if stanza.children().any(|c| c.is("stanza-id", NS_SID)) {
            let by = by();
            stanza.remove_children(|c| c.is("stanza-id", NS_SID) && c.attr("by") == Some(&by));
        }
        if !self.sent && !self.received {
            return None;
        }
        let xml: Arc<str> = stanza.to_xml().into();
        let sent = self
            .sent
            .then(|| write_row(node, from, to, Direction::Sent, &xml))
            .flatten();
        if self.received
            && let Some(id) = write_row(node, to, from, Direction::Received, &xml)
        {
            stanza.append_child(
                Element::new("stanza-id", NS_SID)
                    .with_attr("by", by())
                    .with_attr("id", id),
            );
        }
        sent
    }
}

/// Queues one row for `owner`'s archive; its id, or None if it was not archived (counted).
fn write_row(
    node: &Node,
    owner: &Jid,
    with: &Jid,
    direction: Direction,
    xml: &Arc<str>,
) -> Option<String> {
    let metrics = &node.mam.metrics;
    let (vhost, username) = (owner.domain(), owner.node()?);
    if node.is_frozen(vhost) {
        // Its data is being copied to another node: nothing may be added now.
        metrics.dropped("moving");
        return None;
    }
    let (id, created_us) = node.mam.ids.next();
    let row = ArchiveRow {
        vhost: vhost.to_string(),
        username: username.to_string(),
        id,
        created_us,
        with_jid: with.bare().to_string(),
        with_resource: with.resource().unwrap_or_default().to_string(),
        direction,
        stanza: xml.clone(),
    };
    let charge = row.charge();
    if let Some(meter) = node.store.meters.get(vhost)
        && meter.try_add(charge).is_err()
    {
        metrics.dropped("quota");
        return None;
    }
    let id = row.id.clone();
    if node.mam.writer.try_write(row) {
        Some(id)
    } else {
        node.store.meters.add(vhost, -charge);
        None
    }
}

/// Deletes the archived messages past each vhost's `archive_retention_days` as of `now`
/// (Unix seconds), in bounded batches; returns how many went per vhost.
pub async fn expire(node: &Node, now: i64) -> Vec<(String, u64)> {
    let mut dropped = Vec::new();
    for (domain, host) in node.hosts() {
        let Some(days) = host.policy.as_ref().and_then(|p| p.archive_retention_days) else {
            continue;
        };
        let cutoff_us = crate::upkeep::offline_cutoff(now, days).saturating_mul(1_000_000);
        let mut count = 0;
        for _ in 0..EXPIRE_BATCHES {
            match node
                .store
                .expire_archive(&domain, cutoff_us, EXPIRE_BATCH)
                .await
            {
                Ok(n) => {
                    count += n;
                    if n < EXPIRE_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(vhost = %domain, error = format!("{e:#}"), "deleting expired archived messages failed");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        // The rooms' archives (XEP-0045) keep the same retention.
        match node
            .store
            .expire_muc_archive(&domain, cutoff_us, EXPIRE_BATCH * EXPIRE_BATCHES as i64)
            .await
        {
            Ok(n) => count += n,
            Err(e) => {
                tracing::warn!(vhost = %domain, error = format!("{e:#}"), "deleting expired room messages failed")
            }
        }
        if count > 0 {
            tracing::info!(vhost = %domain, dropped = count, retention_days = days, "deleted archived messages past the retention");
            dropped.push((domain, count));
        }
    }
    dropped
}

// ---- queries -------------------------------------------------------------------------------

/// A parsed archive query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub queryid: Option<String>,
    pub filter: ArchiveFilter,
    pub from: PageFrom,
    pub max: i64,
    /// `<flip-page/>` (`#extended`): the page's messages are sent newest first.
    pub flip: bool,
}

/// Why a query is refused: a condition and a sentence.
pub type Refusal = (Condition, String);

fn bad(text: impl Into<String>) -> Refusal {
    (Condition::BadRequest, text.into())
}

/// Reads a `<query xmlns='urn:xmpp:mam:2'>` of a set: its form and its XEP-0059 set.
pub fn parse_query(query: &Element) -> Result<Query, Refusal> {
    let mut filter = ArchiveFilter::default();
    if let Some(form) = query.get_child("x", ns::DATA_FORMS) {
        if !matches!(form.attr("type"), Some("submit") | None) {
            return Err(bad("The query form must be of type submit."));
        }
        for field in form.children().filter(|f| f.is("field", ns::DATA_FORMS)) {
            let var = field.attr("var").unwrap_or_default();
            let values: Vec<String> = field
                .children()
                .filter(|v| v.is("value", ns::DATA_FORMS))
                .map(|v| v.text().trim().to_string())
                .collect();
            let one = || -> Result<Option<&str>, Refusal> {
                match values.as_slice() {
                    [] => Ok(None),
                    [v] if v.is_empty() => Ok(None),
                    [v] => Ok(Some(v.as_str())),
                    _ => Err(bad(format!("The field {var} takes one value."))),
                }
            };
            let time = |v: Option<&str>| -> Result<Option<i64>, Refusal> {
                v.map(|v| {
                    parse_datetime(v).ok_or_else(|| {
                        bad(format!(
                            "The field {var} is not a XEP-0082 date and time: {v}."
                        ))
                    })
                })
                .transpose()
            };
            match var {
                "FORM_TYPE" => {
                    if one()? != Some(NS) {
                        return Err(bad(format!("The form's FORM_TYPE must be {NS}.")));
                    }
                }
                "with" => {
                    if let Some(v) = one()? {
                        let jid = Jid::parse(v)
                            .map_err(|_| bad(format!("The field with is not a JID: {v}.")))?;
                        filter.with =
                            Some((jid.bare().to_string(), jid.resource().map(str::to_string)));
                    }
                }
                "start" => filter.start_us = time(one()?)?,
                "end" => filter.end_us = time(one()?)?,
                "after-id" => filter.after_id = one()?.map(str::to_string),
                "before-id" => filter.before_id = one()?.map(str::to_string),
                "ids" => {
                    let ids: Vec<String> = values.into_iter().filter(|v| !v.is_empty()).collect();
                    if ids.len() > MAX_IDS {
                        return Err(bad(format!("The field ids lists at most {MAX_IDS} ids.")));
                    }
                    filter.ids = Some(ids);
                }
                other => {
                    return Err(bad(format!("The field {other} is not supported.")));
                }
            }
        }
    }
    let (from, max) = match query.get_child("set", NS_RSM) {
        None => (PageFrom::Start, DEFAULT_PAGE),
        Some(set) => {
            if set.has_child("index", NS_RSM) {
                return Err((
                    Condition::FeatureNotImplemented,
                    "Paging by index is not supported; use after or before.".into(),
                ));
            }
            let max = match set.child_text("max", NS_RSM) {
                None => DEFAULT_PAGE,
                Some(m) => m
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .filter(|m| *m >= 0)
                    .ok_or_else(|| bad("The max of the set must be a number, 0 or more."))?,
            };
            let after = set
                .child_text("after", NS_RSM)
                .map(|a| a.trim().to_string());
            let before = set
                .get_child("before", NS_RSM)
                .map(|b| b.text().trim().to_string());
            let from = match (after, before) {
                (Some(_), Some(_)) => return Err(bad("A set takes after or before, not both.")),
                (Some(a), None) if a.is_empty() => {
                    return Err(bad("The after of the set needs an id."));
                }
                (Some(a), None) => PageFrom::After(a),
                (None, Some(b)) => PageFrom::Before(Some(b).filter(|b| !b.is_empty())),
                (None, None) => PageFrom::Start,
            };
            (from, max.min(MAX_PAGE))
        }
    };
    if let (Some(s), Some(e)) = (filter.start_us, filter.end_us)
        && s > e
    {
        return Err(bad("The start of the query is after its end."));
    }
    Ok(Query {
        queryid: query.attr("queryid").map(str::to_string),
        filter,
        from,
        max,
        flip: query.has_child("flip-page", NS),
    })
}

/// XEP-0082 date and time (`2026-11-27T09:00:00Z`, `…:00.123456+01:00`) to microseconds.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut micros = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let kept: String = frac[..digits]
            .chars()
            .chain("000000".chars())
            .take(6)
            .collect();
        micros = kept.parse().ok()?;
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            let (oh, om) = (
                rest[1..3].parse::<i64>().ok()?,
                rest[4..6].parse::<i64>().ok()?,
            );
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset;
    Some(secs * 1_000_000 + micros)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// XEP-0082 date and time with microseconds, in UTC.
pub fn format_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let whole = format_utc(secs);
    format!("{}.{micros:06}Z", whole.trim_end_matches('Z'))
}

/// The query form (XEP-0313 §4.1.1, with the `#extended` fields).
pub fn query_form() -> Element {
    let field = |var: &str, kind: &str| {
        Element::new("field", ns::DATA_FORMS)
            .with_attr("var", var)
            .with_attr("type", kind)
    };
    Element::new("query", NS).with_child(
        Element::new("x", ns::DATA_FORMS)
            .with_attr("type", "form")
            .with_child(
                field("FORM_TYPE", "hidden")
                    .with_child(Element::new("value", ns::DATA_FORMS).with_text(NS)),
            )
            .with_child(field("with", "jid-single"))
            .with_child(field("start", "text-single"))
            .with_child(field("end", "text-single"))
            .with_child(field("before-id", "text-single"))
            .with_child(field("after-id", "text-single"))
            .with_child(field("ids", "text-multi")),
    )
}

/// `<fin/>` of a page, with its XEP-0059 set.
pub fn fin(page: &ArchivePage) -> Element {
    let mut set = Element::new("set", NS_RSM);
    if let (Some(first), Some(last)) = (page.items.first(), page.items.last()) {
        set.append_child(
            Element::new("first", NS_RSM)
                .with_opt_attr("index", page.first_index.map(|i| i.to_string()))
                .with_text(first.id.clone()),
        );
        set.append_child(Element::new("last", NS_RSM).with_text(last.id.clone()));
    }
    set.append_child(Element::new("count", NS_RSM).with_text(page.count.to_string()));
    let mut fin = Element::new("fin", NS).with_child(set);
    if page.complete {
        fin.set_attr("complete", "true");
    }
    fin
}

/// One archived message as a query result from the archive `account` (an account or a
/// room), for the full JID `to`.
pub fn result_message(
    account: &Jid,
    to: &Jid,
    queryid: Option<&str>,
    id: &str,
    created_us: i64,
    message: Element,
) -> Element {
    Element::new("message", ns::CLIENT)
        .with_attr("from", account.to_string())
        .with_attr("to", to.to_string())
        .with_child(
            Element::new("result", NS)
                .with_opt_attr("queryid", queryid)
                .with_attr("id", id)
                .with_child(
                    Element::new("forwarded", NS_FORWARD)
                        .with_child(
                            Element::new("delay", ns::DELAY)
                                .with_attr("stamp", format_us(created_us)),
                        )
                        .with_child(message),
                ),
        )
}

/// Answers query `q` with a page of the archive of `owner` (an account or a room): each
/// message as a result, in the order asked, then the iq result with `<fin/>`; or the error
/// the read gave.
pub fn send_page(
    me: &SessionHandle,
    owner: &Jid,
    iq: &Element,
    q: &Query,
    page: Result<ArchivePage, ArchiveQueryError>,
) {
    let page = match page {
        Ok(p) => p,
        Err(ArchiveQueryError::UnknownId(id)) => {
            me.deliver(error_reply(
                iq,
                Condition::ItemNotFound,
                Some(&format!("The archive has no message with the id {id}.")),
            ));
            return;
        }
        Err(ArchiveQueryError::Store(e)) => {
            tracing::error!(error = %e, archive = %owner, "reading an archive failed");
            me.deliver(error_reply(iq, Condition::InternalServerError, None));
            return;
        }
    };
    let mut items: Vec<_> = page.items.iter().collect();
    if q.flip {
        items.reverse();
    }
    for m in items {
        match parse_stored(&m.stanza) {
            Ok(message) => me.deliver(result_message(
                owner,
                &me.jid,
                q.queryid.as_deref(),
                &m.id,
                m.created_us,
                message,
            )),
            Err(e) => {
                tracing::error!(error = %e, id = %m.id, archive = %owner, "an archived message could not be parsed");
                false
            }
        };
    }
    me.deliver(iq_result(iq).with_child(fin(&page)));
}

/// Answers an iq in the `urn:xmpp:mam:2` namespace addressed to `account` (a bare JID);
/// what it sends goes to `me`.
pub async fn handle(node: &Node, me: &SessionHandle, account: &Jid, iq: &Element) {
    let Some(payload) = iq.children().next() else {
        return;
    };
    let refuse = |condition, text: Option<&str>| {
        me.deliver(error_reply(iq, condition, text));
    };
    if !enabled(node, account.domain()) {
        return refuse(Condition::ServiceUnavailable, None);
    }
    if *account != me.jid.bare() {
        return refuse(
            Condition::Forbidden,
            Some("Only the account itself may use its archive."),
        );
    }
    let (Some(user), vhost) = (account.node(), account.domain()) else {
        return refuse(Condition::ServiceUnavailable, None);
    };
    let set = iq.attr("type") == Some("set");
    match (payload.name(), set) {
        ("query", false) => {
            me.deliver(iq_result(iq).with_child(query_form()));
        }
        ("query", true) => {
            let q = match parse_query(payload) {
                Ok(q) => q,
                Err((c, text)) => return refuse(c, Some(&text)),
            };
            // What was archived before the query is in its answer.
            node.mam.writer.flush().await;
            let page = node
                .store
                .archive_page(vhost, user, &q.filter, &q.from, q.max)
                .await;
            send_page(me, account, iq, &q, page);
        }
        ("prefs", false) => {
            let prefs = load_prefs(node, account).await;
            me.deliver(iq_result(iq).with_child(prefs.to_element()));
        }
        ("prefs", true) => {
            let prefs = match Prefs::parse(payload) {
                Ok(p) => p,
                Err(text) => return refuse(Condition::BadRequest, Some(text)),
            };
            if node.is_frozen(vhost) {
                return refuse(Condition::ResourceConstraint, Some(&moving_text(vhost)));
            }
            match node
                .store
                .set_archive_prefs(vhost, user, &prefs.to_stored())
                .await
            {
                Ok(()) => {
                    let answer = prefs.to_element();
                    node.mam.put_prefs(account.clone(), prefs);
                    me.deliver(iq_result(iq).with_child(answer));
                }
                Err(StoreError::StorageFull(domain, _)) => refuse(
                    Condition::ResourceConstraint,
                    Some(&storage_full_text(
                        &domain,
                        "the preferences were not saved",
                    )),
                ),
                Err(e) => {
                    tracing::error!(error = %e, "saving archiving preferences failed");
                    refuse(Condition::InternalServerError, None)
                }
            }
        }
        ("metadata", false) => {
            node.mam.writer.flush().await;
            match node.store.archive_bounds(vhost, user).await {
                Ok(bounds) => {
                    let mut meta = Element::new("metadata", NS);
                    if let Some(((first, t0), (last, t1))) = bounds {
                        for (name, id, t) in [("start", first, t0), ("end", last, t1)] {
                            meta.append_child(
                                Element::new(name, NS)
                                    .with_attr("id", id)
                                    .with_attr("timestamp", format_us(t)),
                            );
                        }
                    }
                    me.deliver(iq_result(iq).with_child(meta));
                }
                Err(e) => {
                    tracing::error!(error = %e, "reading an archive failed");
                    refuse(Condition::InternalServerError, None)
                }
            }
        }
        _ => refuse(Condition::ServiceUnavailable, None),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{
        im,
        node::testing::{apply_spec, bind, delivered, node_with_spec, stanza},
    };

    const DOMAIN: &str = "example.com";

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn ids_are_url_safe_unique_and_sort_as_their_time_even_when_the_clock_stands_still() {
        let ids = IdGen::with_tag("abcde".into());
        let (a, ta) = ids.next_at(1_000);
        let (b, tb) = ids.next_at(1_000);
        let (c, tc) = ids.next_at(900);
        let (d, td) = ids.next_at(5_000_000);
        assert_eq!((ta, tb, tc, td), (1_000, 1_001, 1_002, 5_000_000));
        assert!(a < b && b < c && c < d, "{a} {b} {c} {d}");
        assert_eq!(a.len(), 16);
        assert!(a.ends_with("abcde"));
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        // Today's times keep the same length and order.
        let (e, _) = ids.next_at(1_795_683_600_000_000);
        let (f, _) = ids.next_at(1_795_683_600_000_001);
        assert!(d < e && e < f && e.len() == 16);
        // Two generators (two nodes) never make the same id.
        let other = IdGen::with_tag("zzzzz".into());
        assert_ne!(
            other.next_at(1_000).0,
            IdGen::with_tag("abcde".into()).next_at(1_000).0
        );
    }

    #[test]
    fn dates_parse_as_xep_0082_with_fractions_and_offsets() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_datetime("2026-11-26T09:00:00Z"),
            Some(1_795_683_600_000_000)
        );
        assert_eq!(
            parse_datetime("2026-11-26T10:00:00.25+01:00"),
            Some(1_795_683_600_250_000)
        );
        assert_eq!(
            parse_datetime("2026-11-26T08:30:00.000001-00:30"),
            Some(1_795_683_600_000_001)
        );
        for bad in [
            "2026-11-26",
            "2026-13-01T00:00:00Z",
            "2026-11-26T09:00:00",
            "yesterday",
            "2026-11-26T09:00:00.Z",
        ] {
            assert_eq!(parse_datetime(bad), None, "{bad}");
        }
        assert_eq!(
            format_us(1_795_683_600_000_042),
            "2026-11-26T09:00:00.000042Z"
        );
        assert_eq!(
            parse_datetime(&format_us(1_795_683_600_123_456)),
            Some(1_795_683_600_123_456)
        );
    }

    #[test]
    fn only_chat_and_normal_messages_with_a_body_are_archived_unless_a_hint_says_otherwise() {
        let m = |attrs: &str, inner: &str| {
            stanza(&format!(
                "<message xmlns='jabber:client' to='b@example.com' {attrs}>{inner}</message>"
            ))
        };
        let body = "<body>hi</body>";
        assert!(archivable(&m("type='chat'", body)));
        assert!(archivable(&m("", body)));
        assert!(!archivable(&m(
            "type='chat'",
            "<active xmlns='http://jabber.org/protocol/chatstates'/>"
        )));
        assert!(!archivable(&m("type='headline'", body)));
        assert!(!archivable(&m("type='groupchat'", body)));
        assert!(!archivable(&m("type='error'", body)));
        assert!(!archivable(&m(
            "type='chat'",
            "<body>x</body><no-store xmlns='urn:xmpp:hints'/>"
        )));
        assert!(!archivable(&m(
            "type='chat'",
            "<body>x</body><no-permanent-store xmlns='urn:xmpp:hints'/>"
        )));
        assert!(archivable(&m(
            "type='chat'",
            "<received xmlns='urn:xmpp:receipts'/><store xmlns='urn:xmpp:hints'/>"
        )));
        assert!(archivable(&m(
            "type='headline'",
            "<body>x</body><store xmlns='urn:xmpp:hints'/>"
        )));
        assert!(!archivable(&m(
            "type='error'",
            "<body>x</body><store xmlns='urn:xmpp:hints'/>"
        )));
    }

    #[test]
    fn preferences_prefer_never_then_always_then_the_default() {
        let prefs = Prefs::parse(&stanza(
            "<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>romeo@example.com</jid><jid>example.org</jid></always><never><jid>tybalt@example.org</jid><jid>romeo@example.com</jid></never></prefs>",
        ))
        .unwrap();
        assert_eq!(prefs.rule(&jid("romeo@example.com/balcony")), Rule::Skip);
        assert_eq!(prefs.rule(&jid("tybalt@example.org")), Rule::Skip);
        assert_eq!(prefs.rule(&jid("nurse@example.org/x")), Rule::Archive);
        assert_eq!(prefs.rule(&jid("friar@example.net")), Rule::IfInRoster);
        // It comes back as it went in.
        assert_eq!(Prefs::parse(&prefs.to_element()).unwrap(), prefs);
        assert_eq!(Prefs::from_stored(prefs.to_stored()), prefs);
        for bad in [
            "<prefs xmlns='urn:xmpp:mam:2'/>",
            "<prefs xmlns='urn:xmpp:mam:2' default='sometimes'/>",
            "<prefs xmlns='urn:xmpp:mam:2' default='always'><always><jid>@@</jid></always></prefs>",
        ] {
            assert!(Prefs::parse(&stanza(bad)).is_err(), "{bad}");
        }
    }

    fn query(xml: &str) -> Result<Query, Refusal> {
        parse_query(&stanza(xml))
    }

    #[test]
    fn queries_read_the_form_and_the_set_and_refuse_what_they_cannot_serve() {
        let q = query(
            "<query xmlns='urn:xmpp:mam:2' queryid='f27'><x xmlns='jabber:x:data' type='submit'>
               <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>
               <field var='with'><value>Romeo@Example.com/balcony</value></field>
               <field var='start'><value>2026-11-26T09:00:00Z</value></field>
               <field var='end'><value>2026-11-26T10:00:00Z</value></field>
               <field var='after-id'><value>a1</value></field>
               <field var='before-id'><value>b2</value></field>
               <field var='ids'><value>i1</value><value>i2</value></field>
             </x><set xmlns='http://jabber.org/protocol/rsm'><max>10</max><after>p9</after></set></query>",
        )
        .unwrap();
        assert_eq!(q.queryid.as_deref(), Some("f27"));
        assert_eq!(
            q.filter,
            ArchiveFilter {
                with: Some(("romeo@example.com".into(), Some("balcony".into()))),
                start_us: Some(1_795_683_600_000_000),
                end_us: Some(1_795_687_200_000_000),
                after_id: Some("a1".into()),
                before_id: Some("b2".into()),
                ids: Some(vec!["i1".into(), "i2".into()]),
            }
        );
        assert_eq!(
            (q.from, q.max, q.flip),
            (PageFrom::After("p9".into()), 10, false)
        );
        let plain = query("<query xmlns='urn:xmpp:mam:2'/>").unwrap();
        assert_eq!(
            (plain.from, plain.max, plain.filter),
            (PageFrom::Start, DEFAULT_PAGE, ArchiveFilter::default())
        );
        let last = query("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>5000</max><before/></set></query>").unwrap();
        assert_eq!((last.from, last.max), (PageFrom::Before(None), MAX_PAGE));
        let before = query("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><before>x</before></set><flip-page/></query>").unwrap();
        assert_eq!(
            (before.from, before.flip),
            (PageFrom::Before(Some("x".into())), true)
        );

        let form = |fields: &str| {
            format!(
                "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'>{fields}</x></query>"
            )
        };
        for (xml, condition, text) in [
            (form("<field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field>"), Condition::BadRequest, "FORM_TYPE must be urn:xmpp:mam:2"),
            (form("<field var='with'><value>@@</value></field>"), Condition::BadRequest, "not a JID"),
            (form("<field var='start'><value>last week</value></field>"), Condition::BadRequest, "not a XEP-0082 date"),
            (form("<field var='fulltext'><value>hi</value></field>"), Condition::BadRequest, "fulltext is not supported"),
            (form("<field var='with'><value>a@b</value><value>c@d</value></field>"), Condition::BadRequest, "takes one value"),
            (form("<field var='start'><value>2026-11-27T00:00:00Z</value></field><field var='end'><value>2026-11-26T00:00:00Z</value></field>"), Condition::BadRequest, "start of the query is after its end"),
            ("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><max>-1</max></set></query>".into(), Condition::BadRequest, "max"),
            ("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>a</after><before>b</before></set></query>".into(), Condition::BadRequest, "not both"),
            ("<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><index>3</index></set></query>".into(), Condition::FeatureNotImplemented, "index"),
        ] {
            let (c, t) = query(&xml).unwrap_err();
            assert_eq!(c, condition, "{xml}");
            assert!(t.contains(text) && t.ends_with('.'), "{t}");
        }
    }

    /// A node with alice and bob, both bound, their preferences in memory.
    async fn two_users(
        spec: serde_json::Value,
    ) -> (
        std::sync::Arc<Node>,
        tempfile::TempDir,
        [(
            std::sync::Arc<SessionHandle>,
            tokio::sync::mpsc::UnboundedReceiver<crate::router::Delivery>,
        ); 2],
    ) {
        let (node, dir) = node_with_spec(spec, &["alice", "bob"]).await;
        let a = bind(&node, "alice@example.com/desk");
        let b = bind(&node, "bob@example.com/phone");
        for s in [&a.0, &b.0] {
            load_prefs(&node, &s.jid).await;
            blocking::current(&node, &s.jid.bare()).await;
        }
        (node, dir, [a, b])
    }

    fn chat(from: &str, to: &str, body: &str, extra: &str) -> Element {
        stanza(&format!(
            "<message xmlns='jabber:client' from='{from}' to='{to}' type='chat'><body>{body}</body>{extra}</message>"
        ))
    }

    /// Runs a MAM iq from `me`; returns the result messages and the final answer.
    /// (A `<prefs/>` without a default and `<metadata/>` are gets, the rest sets.)
    async fn ask(
        node: &Node,
        me: &std::sync::Arc<SessionHandle>,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<crate::router::Delivery>,
        payload: &str,
    ) -> (Vec<Element>, Element) {
        delivered(rx);
        let get = (payload.starts_with("<prefs") && !payload.contains("default="))
            || payload.starts_with("<metadata");
        let kind = if get { "get" } else { "set" };
        let iq = stanza(&format!(
            "<iq xmlns='jabber:client' type='{kind}' id='q'>{payload}</iq>"
        ));
        im::handle(node, me, iq).await;
        let mut out = delivered(rx);
        let last = out.pop().unwrap();
        (out, last)
    }

    /// The stanza-id the server added (the last one).
    fn stanza_id(m: &Element) -> Option<(String, String)> {
        m.children()
            .filter(|c| c.is("stanza-id", NS_SID))
            .last()
            .map(|s| {
                (
                    s.attr("by").unwrap().to_string(),
                    s.attr("id").unwrap().to_string(),
                )
            })
    }

    #[tokio::test]
    async fn messages_are_archived_on_both_sides_and_delivered_with_the_recipients_archive_id() {
        let (node, _dir, [(alice, mut alice_rx), (bob, mut bob_rx)]) =
            two_users(json!({"domain": DOMAIN, "generation": 1})).await;
        bob.set_presence(Some(Element::new("presence", ns::CLIENT)));
        // The hot path: a forged stanza-id in bob's name is removed, another kept.
        let forged = "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.com' id='forged'/><stanza-id xmlns='urn:xmpp:sid:0' by='elsewhere.example' id='kept'/>";
        assert!(
            im::route_fast(
                &node,
                &alice,
                chat(
                    "alice@example.com/desk",
                    "bob@example.com/phone",
                    "one",
                    forged
                )
            )
            .is_ok()
        );
        // The full path: to the bare JID.
        im::handle(
            &node,
            &alice,
            chat("alice@example.com/desk", "bob@example.com", "two", ""),
        )
        .await;
        // Not archived: no body.
        im::handle(&node, &alice, stanza("<message xmlns='jabber:client' to='bob@example.com' type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>")).await;
        let got = delivered(&mut bob_rx);
        assert_eq!(got.len(), 3);
        let ids: Vec<String> = got[..2]
            .iter()
            .map(|m| {
                let (by, id) = stanza_id(m).unwrap();
                assert_eq!(by, "bob@example.com");
                id
            })
            .collect();
        assert_eq!(
            got[0]
                .children()
                .filter(|c| c.is("stanza-id", NS_SID))
                .count(),
            2
        );
        assert!(!got[0].to_xml().contains("forged"));
        assert!(stanza_id(&got[2]).is_none());

        let (results, fin) = ask(
            &node,
            &bob,
            &mut bob_rx,
            "<query xmlns='urn:xmpp:mam:2' queryid='q1'/>",
        )
        .await;
        assert_eq!(fin.attr("type"), Some("result"), "{}", fin.to_xml());
        let fin = fin.get_child("fin", NS).unwrap();
        assert_eq!(fin.attr("complete"), Some("true"));
        let result_ids: Vec<String> = results
            .iter()
            .map(|m| {
                let r = m.get_child("result", NS).unwrap();
                assert_eq!(r.attr("queryid"), Some("q1"));
                let fwd = r.get_child("forwarded", NS_FORWARD).unwrap();
                assert!(fwd.get_child("delay", ns::DELAY).is_some());
                assert_eq!(
                    fwd.get_child("message", ns::CLIENT).unwrap().attr("from"),
                    Some("alice@example.com/desk")
                );
                r.attr("id").unwrap().to_string()
            })
            .collect();
        assert_eq!(result_ids, ids, "the stanza-ids are the archive's ids");
        // Alice's archive has them too, as sent.
        let (results, _) = ask(
            &node,
            &alice,
            &mut alice_rx,
            "<query xmlns='urn:xmpp:mam:2'/>",
        )
        .await;
        assert_eq!(results.len(), 2);
        // Alice may not read bob's archive.
        let mut iq = stanza(
            "<iq xmlns='jabber:client' type='set' id='x' to='bob@example.com'><query xmlns='urn:xmpp:mam:2'/></iq>",
        );
        iq.set_attr("from", "alice@example.com/desk");
        delivered(&mut alice_rx);
        im::handle(&node, &alice, iq).await;
        let got = delivered(&mut alice_rx);
        assert_eq!(got.len(), 1);
        assert!(got[0].to_xml().contains("forbidden"), "{}", got[0].to_xml());
        // A flipped page comes newest first.
        let (flipped, _) = ask(
            &node,
            &bob,
            &mut bob_rx,
            "<query xmlns='urn:xmpp:mam:2'><flip-page/></query>",
        )
        .await;
        let flipped: Vec<&str> = flipped
            .iter()
            .map(|m| m.get_child("result", NS).unwrap().attr("id").unwrap())
            .collect();
        assert_eq!(flipped, [ids[1].as_str(), ids[0].as_str()]);
        // An unknown after id is item-not-found.
        let (_, missing) = ask(&node, &bob, &mut bob_rx, "<query xmlns='urn:xmpp:mam:2'><set xmlns='http://jabber.org/protocol/rsm'><after>nope</after></set></query>").await;
        assert!(
            missing.to_xml().contains("item-not-found"),
            "{}",
            missing.to_xml()
        );
        // Metadata names the first and the last.
        let (_, meta) = ask(
            &node,
            &bob,
            &mut bob_rx,
            "<metadata xmlns='urn:xmpp:mam:2'/>",
        )
        .await;
        let meta = meta.get_child("metadata", NS).unwrap();
        assert_eq!(
            meta.get_child("start", NS).unwrap().attr("id"),
            Some(ids[0].as_str())
        );
        assert_eq!(
            meta.get_child("end", NS).unwrap().attr("id"),
            Some(ids[1].as_str())
        );
    }

    #[tokio::test]
    async fn preferences_decide_and_the_hot_path_defers_what_memory_cannot_decide() {
        let (node, _dir, [(alice, mut alice_rx), (bob, mut bob_rx)]) =
            two_users(json!({"domain": DOMAIN, "generation": 1})).await;
        let (_, answer) = ask(&node, &bob, &mut bob_rx, "<prefs xmlns='urn:xmpp:mam:2' default='never'><always><jid>carol@example.com</jid></always></prefs>").await;
        assert_eq!(
            answer.get_child("prefs", NS).unwrap().attr("default"),
            Some("never"),
            "{}",
            answer.to_xml()
        );
        let (_, got) = ask(&node, &bob, &mut bob_rx, "<prefs xmlns='urn:xmpp:mam:2'/>").await;
        assert_eq!(
            got.get_child("prefs", NS).unwrap().to_xml(),
            answer.get_child("prefs", NS).unwrap().to_xml()
        );
        assert!(
            im::route_fast(
                &node,
                &alice,
                chat("alice@example.com/desk", "bob@example.com/phone", "x", "")
            )
            .is_ok()
        );
        let m = delivered(&mut bob_rx).pop().unwrap();
        assert!(
            stanza_id(&m).is_none(),
            "bob archives nothing from alice now"
        );
        let (sent, _) = ask(
            &node,
            &alice,
            &mut alice_rx,
            "<query xmlns='urn:xmpp:mam:2'/>",
        )
        .await;
        assert_eq!(sent.len(), 1, "alice still archives what she sends");
        // "roster" needs the store: the hot path hands the message on.
        ask(
            &node,
            &bob,
            &mut bob_rx,
            "<prefs xmlns='urn:xmpp:mam:2' default='roster'/>",
        )
        .await;
        let m = chat("alice@example.com/desk", "bob@example.com/phone", "y", "");
        let m = im::route_fast(&node, &alice, m).unwrap_err();
        im::handle(&node, &alice, m).await;
        assert!(
            stanza_id(&delivered(&mut bob_rx).pop().unwrap()).is_none(),
            "alice is not in bob's roster"
        );
        // Preferences that are not in memory: the hot path hands the message on too.
        node.mam.forget(&bob.jid);
        let m = chat("alice@example.com/desk", "bob@example.com/phone", "z", "");
        assert!(im::route_fast(&node, &alice, m).is_err());
    }

    #[tokio::test]
    async fn a_vhost_with_the_archive_off_archives_nothing_and_advertises_nothing() {
        let (node, _dir, [(alice, mut alice_rx), (_bob, mut bob_rx)]) =
            two_users(json!({"domain": DOMAIN, "generation": 1, "features": {"archive": false}}))
                .await;
        assert!(
            im::route_fast(
                &node,
                &alice,
                chat("alice@example.com/desk", "bob@example.com/phone", "x", "")
            )
            .is_ok()
        );
        assert!(stanza_id(&delivered(&mut bob_rx).pop().unwrap()).is_none());
        let (_, refused) = ask(
            &node,
            &alice,
            &mut alice_rx,
            "<query xmlns='urn:xmpp:mam:2'/>",
        )
        .await;
        assert!(
            refused.to_xml().contains("service-unavailable"),
            "{}",
            refused.to_xml()
        );
        im::handle(&node, &alice, stanza("<iq xmlns='jabber:client' type='get' id='d' to='alice@example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
        let info = delivered(&mut alice_rx).pop().unwrap().to_xml();
        assert!(!info.contains(NS) && !info.contains(NS_SID), "{info}");
        // Switched on again: advertised.
        apply_spec(&node, json!({"domain": DOMAIN, "generation": 2})).await;
        im::handle(&node, &alice, stanza("<iq xmlns='jabber:client' type='get' id='d' to='alice@example.com'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
        let info = delivered(&mut alice_rx).pop().unwrap().to_xml();
        assert!(
            info.contains(NS) && info.contains(NS_EXTENDED) && info.contains(NS_SID),
            "{info}"
        );
        let rows = node
            .store
            .archive_page(
                DOMAIN,
                "bob",
                &ArchiveFilter::default(),
                &PageFrom::Start,
                10,
            )
            .await
            .unwrap();
        assert_eq!(rows.count, 0);
    }

    fn not_archived(node: &Node, reason: &'static str) -> u64 {
        node.metrics
            .archive
            .not_archived
            .get_or_create(&crate::metrics::ReasonLabel { reason })
            .get()
    }

    #[tokio::test]
    async fn a_full_quota_or_a_move_delivers_without_archiving_and_says_so_in_the_metrics() {
        let (node, _dir, [(alice, _alice_rx), (_bob, mut bob_rx)]) =
            two_users(json!({"domain": DOMAIN, "generation": 1})).await;
        let stored = node.store.measure_storage(DOMAIN).await.unwrap();
        apply_spec(
            &node,
            json!({"domain": DOMAIN, "generation": 2, "limits": {"storage_quota_bytes": stored + 10}}),
        )
        .await;
        let send = |body: &str| {
            im::route_fast(
                &node,
                &alice,
                chat("alice@example.com/desk", "bob@example.com/phone", body, ""),
            )
            .is_ok()
        };
        assert!(send("full"));
        assert!(stanza_id(&delivered(&mut bob_rx).pop().unwrap()).is_none());
        assert_eq!(not_archived(&node, "quota"), 2, "neither side");
        // Frozen for a move: nothing is added to its data.
        apply_spec(&node, json!({"domain": DOMAIN, "generation": 3})).await;
        node.store.set_vhost_move(DOMAIN, None).await.unwrap();
        node.reload_vhosts().await.unwrap();
        assert!(send("moving"));
        assert!(stanza_id(&delivered(&mut bob_rx).pop().unwrap()).is_none());
        assert_eq!(not_archived(&node, "moving"), 2);
        node.store.clear_vhost_move(DOMAIN).await.unwrap();
        node.reload_vhosts().await.unwrap();
        assert!(send("thawed"));
        assert!(stanza_id(&delivered(&mut bob_rx).pop().unwrap()).is_some());
    }

    #[tokio::test]
    async fn messages_to_offline_accounts_are_archived_stamped_and_expire_with_the_retention() {
        let (node, _dir) = node_with_spec(
            json!({"domain": DOMAIN, "generation": 1, "limits": {"archive_retention_days": 1}}),
            &["alice", "bob"],
        )
        .await;
        let (alice, _rx) = bind(&node, "alice@example.com/desk");
        im::handle(
            &node,
            &alice,
            chat("alice@example.com/desk", "bob@example.com", "later", ""),
        )
        .await;
        let stored = node.store.take_offline(DOMAIN, "bob").await.unwrap();
        assert_eq!(stored.len(), 1);
        assert!(stored[0].0.contains("urn:xmpp:sid:0"), "{}", stored[0].0);
        node.mam.writer.flush().await;
        let now = crate::node::unix_now();
        assert!(
            expire(&node, now).await.is_empty(),
            "nothing is a day old yet"
        );
        assert_eq!(
            expire(&node, now + 2 * 86_400).await,
            vec![(DOMAIN.to_string(), 2)]
        );
    }
}
