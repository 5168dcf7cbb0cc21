//! Who is online: every bound session by full JID, grouped by account (bare JID), with its
//! current presence. Sessions receive stanzas through their channel; the router never holds
//! its lock across an await. A session whose connection broke but that may be resumed
//! (XEP-0198) stays bound here, and is found by its SM-ID in [`Router::resumable`].

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use tokio::sync::mpsc;

use crate::proto::{c2s::StreamError, element::Element, jid::Jid};

/// What a session's task receives from the rest of the node.
#[derive(Debug)]
pub enum Delivery {
    /// Write this stanza to the client. Boxed: the channel preallocates slots of this
    /// enum's size for every session, idle or not.
    Stanza(Box<Element>),
    /// End the session with this stream error (e.g. `conflict` when replaced, `see-other-host`
    /// when its domain moved). Boxed like `Stanza`, so a queue slot is one pointer wide.
    Kick(Box<StreamError>),
    /// Another connection resumes this session (XEP-0198 §5): hand it over or refuse. It
    /// comes through the session's own queue, so it is ordered after what was routed before
    /// and no channel per session is needed for it.
    Takeover(Box<crate::net::sm::Takeover>),
}

/// The most directed-presence targets a session's going offline is announced to.
pub const MAX_DIRECTED: usize = 1000;

/// A bound session as others see it.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    pub jid: Jid,
    /// A sender on another server, reached over server-to-server streams: the handle
    /// stands for one stanza that came in, and what is delivered to it (answers, errors)
    /// goes back through the outgoing links (`net::s2s_pool`). Never bound in the router.
    pub remote: bool,
    /// `jid` without its resource, kept for the routing checks of every stanza.
    pub bare: Jid,
    tx: mpsc::UnboundedSender<Delivery>,
    /// The last available presence the client broadcast (None: not available).
    presence: Mutex<Option<Element>>,
    /// Stanzas handed to the session task and not yet taken.
    pending: AtomicUsize,
    /// The client requested the roster, so it gets roster pushes: an "interested
    /// resource" (RFC 6121 §2.2).
    interested: AtomicBool,
    /// The client requested its block list, so it gets block list pushes (XEP-0191 §3.3).
    blocklist_requested: AtomicBool,
    /// The client enabled message carbons (XEP-0280): it gets copies of the account's
    /// conversations on other resources. Changed through [`Router::set_carbons`].
    carbons: AtomicBool,
    /// The session lost its connection and waits to be resumed (XEP-0198): what reaches it
    /// now is read only if the client comes back, so push notifications wake it (XEP-0357).
    detached: AtomicBool,
    /// Where the client sent directed presence while available (RFC 6121 §4.6): they get
    /// unavailable presence when it goes offline.
    directed: Mutex<HashSet<Jid>>,
}

impl SessionHandle {
    fn new(id: u64, jid: Jid, tx: mpsc::UnboundedSender<Delivery>, remote: bool) -> Self {
        SessionHandle {
            id,
            bare: jid.bare(),
            jid,
            remote,
            tx,
            presence: Mutex::new(None),
            pending: AtomicUsize::new(0),
            interested: AtomicBool::new(false),
            blocklist_requested: AtomicBool::new(false),
            carbons: AtomicBool::new(false),
            detached: AtomicBool::new(false),
            directed: Mutex::new(HashSet::new()),
        }
    }

    /// The sender of a stanza from another server (see [`SessionHandle::remote`]); what is
    /// delivered to it goes to `tx`, which the server hands to the outgoing links.
    pub fn remote_sender(jid: Jid, tx: mpsc::UnboundedSender<Delivery>) -> Arc<Self> {
        Arc::new(Self::new(u64::MAX, jid, tx, true))
    }

    pub fn deliver(&self, stanza: Element) -> bool {
        let sent = self.tx.send(Delivery::Stanza(Box::new(stanza))).is_ok();
        if sent {
            self.pending.fetch_add(1, Ordering::Relaxed);
        }
        sent
    }

    /// The session's task took a stanza off its queue.
    pub fn taken(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }

    /// Stanzas waiting in this session's queue (for the `delivery_queue` metric).
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub fn kick(&self, error: StreamError) {
        let _ = self.tx.send(Delivery::Kick(Box::new(error)));
    }

    pub fn set_presence(&self, presence: Option<Element>) {
        *self.presence.lock().unwrap_or_else(|p| p.into_inner()) = presence;
    }

    pub fn presence(&self) -> Option<Element> {
        self.presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether the client sent initial presence and has not gone unavailable since.
    pub fn is_available(&self) -> bool {
        self.presence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Notes that the client requested the roster.
    pub fn set_interested(&self) {
        self.interested.store(true, Ordering::Relaxed);
    }

    /// Whether the session waits detached for a resumption (XEP-0198).
    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }

    pub fn set_detached(&self, detached: bool) {
        self.detached.store(detached, Ordering::Relaxed);
    }

    /// Whether the client enabled message carbons (XEP-0280).
    pub fn carbons(&self) -> bool {
        self.carbons.load(Ordering::Relaxed)
    }

    /// Whether the client gets roster pushes.
    pub fn is_interested(&self) -> bool {
        self.interested.load(Ordering::Relaxed)
    }

    /// Notes that the client requested its block list.
    pub fn set_blocklist_requested(&self) {
        self.blocklist_requested.store(true, Ordering::Relaxed);
    }

    /// Whether the client gets block list pushes.
    pub fn blocklist_requested(&self) -> bool {
        self.blocklist_requested.load(Ordering::Relaxed)
    }

    /// Notes directed presence to `target`: available adds it, unavailable removes it.
    /// Beyond [`MAX_DIRECTED`] targets, new ones are not remembered.
    pub fn note_directed(&self, target: Jid, available: bool) {
        let mut set = self.directed.lock().unwrap_or_else(|p| p.into_inner());
        if available {
            if set.len() < MAX_DIRECTED {
                set.insert(target);
            }
        } else {
            set.remove(&target);
        }
    }

    /// The targets of directed presence, forgetting them (the client went unavailable).
    pub fn take_directed(&self) -> Vec<Jid> {
        let mut set = self.directed.lock().unwrap_or_else(|p| p.into_inner());
        set.drain().collect()
    }

    /// Available, with its priority (RFC 6121 §4.7.2.3; absent means 0).
    pub fn priority(&self) -> Option<i8> {
        let p = self.presence.lock().unwrap_or_else(|p| p.into_inner());
        p.as_ref().map(|e| {
            e.child_text("priority", crate::proto::ns::CLIENT)
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0)
        })
    }
}

#[derive(Default)]
pub struct Router {
    by_account: RwLock<HashMap<Jid, Vec<Arc<SessionHandle>>>>,
    next_id: AtomicU64,
    /// Sessions that can be resumed (XEP-0198), by SM-ID. A detached session stays bound
    /// above until it is resumed or its resume timeout ends it.
    pub resumable: crate::net::sm::Registry,
    /// Bound sessions with message carbons on: while none, routing skips carbons at once.
    carbons: AtomicUsize,
}

impl Router {
    /// Registers a session for `jid`; a session already bound to the same full JID is
    /// replaced (RFC 6120 §7.7.2.2: the newest wins; the old one gets `conflict`).
    pub fn bind(&self, jid: Jid, tx: mpsc::UnboundedSender<Delivery>) -> Arc<SessionHandle> {
        let handle = Arc::new(SessionHandle::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            jid.clone(),
            tx,
            false,
        ));
        let replaced = {
            let mut map = self.by_account.write().unwrap_or_else(|p| p.into_inner());
            let list = map.entry(jid.bare()).or_default();
            let old = list
                .iter()
                .position(|s| s.jid == jid)
                .map(|i| list.remove(i));
            list.push(handle.clone());
            old
        };
        if let Some(old) = replaced {
            self.carbons_off(&old);
            old.kick(StreamError::new(
                "conflict",
                "Replaced by a new session with the same resource.",
            ));
        }
        handle
    }

    /// Turns message carbons (XEP-0280) on or off for a session.
    pub fn set_carbons(&self, handle: &SessionHandle, on: bool) {
        if handle.carbons.swap(on, Ordering::Relaxed) != on {
            if on {
                self.carbons.fetch_add(1, Ordering::Relaxed);
            } else {
                self.carbons.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn carbons_off(&self, handle: &SessionHandle) {
        if handle.carbons.swap(false, Ordering::Relaxed) {
            self.carbons.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Whether any bound session has message carbons on.
    pub fn carbons_in_use(&self) -> bool {
        self.carbons.load(Ordering::Relaxed) > 0
    }

    /// Removes a session (if it is still the registered one for its JID).
    pub fn unbind(&self, handle: &SessionHandle) {
        let mut map = self.by_account.write().unwrap_or_else(|p| p.into_inner());
        let bare = handle.jid.bare();
        if let Some(list) = map.get_mut(&bare) {
            list.retain(|s| s.id != handle.id);
            self.carbons_off(handle);
            if list.is_empty() {
                map.remove(&bare);
            }
        }
    }

    /// The sessions of an account.
    pub fn sessions(&self, bare: &Jid) -> Vec<Arc<SessionHandle>> {
        self.by_account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&bare.bare())
            .cloned()
            .unwrap_or_default()
    }

    /// The session bound to exactly this full JID.
    pub fn session(&self, full: &Jid) -> Option<Arc<SessionHandle>> {
        self.session_of(&full.bare(), full)
    }

    /// [`Router::session`] when the caller has the bare JID at hand already.
    pub fn session_of(&self, bare: &Jid, full: &Jid) -> Option<Arc<SessionHandle>> {
        self.by_account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(bare)?
            .iter()
            .find(|s| s.jid.resource() == full.resource())
            .cloned()
    }

    /// Whether a resource name is taken for this account.
    pub fn is_bound(&self, full: &Jid) -> bool {
        self.session(full).is_some()
    }

    /// Bound sessions per vhost, for metrics.
    pub fn count_by_domain(&self) -> HashMap<String, usize> {
        let map = self.by_account.read().unwrap_or_else(|p| p.into_inner());
        let mut out = HashMap::new();
        for (bare, list) in map.iter() {
            *out.entry(bare.domain().to_string()).or_default() += list.len();
        }
        out
    }

    /// Bound sessions in total.
    pub fn count(&self) -> usize {
        self.by_account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(Vec::len)
            .sum()
    }

    /// The sessions of one vhost.
    pub fn of_domain(&self, domain: &str) -> Vec<Arc<SessionHandle>> {
        self.by_account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(bare, _)| bare.domain() == domain)
            .flat_map(|(_, list)| list.iter().cloned())
            .collect()
    }

    /// Every session (for shutdown).
    pub fn all(&self) -> Vec<Arc<SessionHandle>> {
        self.by_account
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .flatten()
            .cloned()
            .collect()
    }
}

/// The sessions a message to a bare JID goes to (RFC 6121 §8.5.2.1): the available
/// resources with non-negative priority. Empty means "store offline or bounce".
pub fn message_targets(sessions: &[Arc<SessionHandle>]) -> Vec<Arc<SessionHandle>> {
    sessions
        .iter()
        .filter(|s| s.priority().is_some_and(|p| p >= 0))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::ns;

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    #[test]
    fn binding_the_same_resource_again_replaces_the_old_session_with_conflict() {
        let router = Router::default();
        let (tx1, mut rx1) = mpsc::unbounded_channel();
        let (tx2, _rx2) = mpsc::unbounded_channel();
        let first = router.bind(jid("juliet@example.com/balcony"), tx1);
        let second = router.bind(jid("juliet@example.com/balcony"), tx2);
        assert!(matches!(rx1.try_recv(), Ok(Delivery::Kick(k)) if k.condition == "conflict"));
        assert_eq!(router.sessions(&jid("juliet@example.com")).len(), 1);
        // The replaced session's clean-up does not remove its successor.
        router.unbind(&first);
        assert_eq!(
            router
                .session(&jid("juliet@example.com/balcony"))
                .map(|s| s.id),
            Some(second.id)
        );
    }

    #[test]
    fn messages_to_a_bare_jid_go_to_available_resources_with_non_negative_priority() {
        let router = Router::default();
        let mk = || mpsc::unbounded_channel().0;
        let a = router.bind(jid("romeo@example.net/a"), mk());
        let b = router.bind(jid("romeo@example.net/b"), mk());
        let c = router.bind(jid("romeo@example.net/c"), mk());
        a.set_presence(Some(Element::new("presence", ns::CLIENT)));
        b.set_presence(Some(
            Element::new("presence", ns::CLIENT)
                .with_child(Element::new("priority", ns::CLIENT).with_text("-1")),
        ));
        // c sent no presence: not available.
        let _ = &c;
        let targets = message_targets(&router.sessions(&jid("romeo@example.net")));
        assert_eq!(
            targets
                .iter()
                .map(|s| s.jid.resource().unwrap_or_default().to_string())
                .collect::<Vec<_>>(),
            vec!["a"]
        );
    }
}
