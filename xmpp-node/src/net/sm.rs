//! The registry of resumable sessions (XEP-0198 §5) and what moves between connections when
//! one resumes another's session.
//!
//! Every connection that enabled stream management with resumption registers its SM-ID here
//! with the sending end of its session's delivery queue, where a [`Takeover`] request
//! arrives as [`Delivery::Takeover`]. When its socket breaks, the
//! connection task does not end: it *detaches* (the session stays bound in the router, so
//! deliveries keep queueing and nobody sees it go offline) and waits for a takeover, the
//! resume timeout, or shutdown.
//!
//! ```text
//!  new connection, authenticated ── <resume previd h/> ─► Registry::lookup(previd)
//!      Live(queue) ─► Delivery::Takeover{account, request, reply} ─► the old connection's task
//!          sm::resume() ok ─► (kicks its own stream with `conflict` if still attached)
//!                          ─► Handover{resumed, state} ─► the new connection adopts it
//!          refused         ─► Rejection ─► <failed/> or a stream error
//!      Expired(tombstone) ─► <failed h='…'><item-not-found/></failed>
//!      Unknown            ─► <failed><item-not-found/></failed>
//! ```
//!
//! The registry never holds session state itself, only the way to reach its owner, so a
//! takeover is serialised by the owning task and no lock is held across an await.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use tokio::sync::{mpsc, oneshot};

use crate::{
    control::usage::VhostCounters,
    proto::{
        jid::Jid,
        sm::{Rejection, Resume, Resumed, StreamManagement, Tombstone},
    },
    router::{Delivery, SessionHandle},
};

/// How many expired sessions are remembered for a `<failed h='…'/>` answer.
pub const MAX_TOMBSTONES: usize = 10_000;

/// A new connection asks the owner of a session to hand it over.
pub struct Takeover {
    /// The account the new connection authenticated as (bare JID).
    pub account: Jid,
    pub request: Resume,
    pub reply: oneshot::Sender<Result<Handover, Rejection>>,
}

/// A session moving to the connection that resumed it.
pub struct Handover {
    /// What to write on the new stream: `<resumed/>` and the stanzas the client missed.
    pub resumed: Resumed,
    pub state: SessionState,
}

/// Everything of a bound session that outlives its connection.
pub struct SessionState {
    pub sm: StreamManagement,
    pub handle: Arc<SessionHandle>,
    /// The session's delivery queue, with whatever arrived while detached.
    pub rx: mpsc::UnboundedReceiver<Delivery>,
    pub tx: mpsc::UnboundedSender<Delivery>,
    pub counters: Option<Arc<VhostCounters>>,
}

impl std::fmt::Debug for Takeover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Takeover")
            .field("account", &self.account)
            .field("previd", &self.request.previd)
            .finish_non_exhaustive()
    }
}

/// What the registry knows about an SM-ID.
#[derive(Debug)]
pub enum Lookup {
    Unknown,
    Expired(Tombstone),
    /// The session's queue: its owner (attached or detached) takes requests there.
    Live(mpsc::UnboundedSender<Delivery>),
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    live: HashMap<String, mpsc::UnboundedSender<Delivery>>,
    tombstones: HashMap<String, Tombstone>,
    /// Tombstone ids, oldest first, to forget the oldest past [`MAX_TOMBSTONES`].
    order: VecDeque<String>,
}

impl Registry {
    /// Registers a resumable session by the sending end of its delivery queue.
    pub fn register(&self, id: &str, queue: mpsc::UnboundedSender<Delivery>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.live.insert(id.to_string(), queue);
    }

    /// The session ended for good: forget it, keeping its tombstone (if resumable) so a late
    /// `<resume/>` learns its `h`.
    pub fn unregister(&self, id: &str, tombstone: Option<Tombstone>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.live.remove(id);
        if let Some(t) = tombstone {
            if inner.tombstones.insert(t.id.clone(), t).is_none() {
                inner.order.push_back(id.to_string());
            }
            while inner.order.len() > MAX_TOMBSTONES {
                if let Some(old) = inner.order.pop_front() {
                    inner.tombstones.remove(&old);
                }
            }
        }
    }

    pub fn lookup(&self, id: &str) -> Lookup {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = inner.live.get(id) {
            return Lookup::Live(tx.clone());
        }
        match inner.tombstones.get(id) {
            Some(t) => Lookup::Expired(t.clone()),
            None => Lookup::Unknown,
        }
    }

    /// Sessions that can be resumed right now (attached or detached).
    pub fn live(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .live
            .len()
    }
}

/// A fresh SM-ID: random, unguessable (§5, §9).
pub fn new_id() -> String {
    let mut b = [0u8; 18];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tombstone(id: &str, h: u32) -> Tombstone {
        Tombstone {
            id: id.into(),
            owner: Jid::parse("romeo@example.net/orchard").unwrap(),
            h,
        }
    }

    #[test]
    fn a_registered_session_is_found_until_it_ends_and_then_leaves_a_tombstone() {
        let registry = Registry::default();
        assert!(matches!(registry.lookup("a"), Lookup::Unknown));
        let (tx, _rx) = mpsc::unbounded_channel();
        registry.register("a", tx.clone());
        assert!(matches!(registry.lookup("a"), Lookup::Live(_)));
        assert_eq!(registry.live(), 1);
        registry.unregister("a", Some(tombstone("a", 7)));
        assert!(matches!(registry.lookup("a"), Lookup::Expired(t) if t.h == 7));
        assert_eq!(registry.live(), 0);
        // A session that was not resumable leaves nothing.
        registry.register("b", tx);
        registry.unregister("b", None);
        assert!(matches!(registry.lookup("b"), Lookup::Unknown));
    }

    #[test]
    fn only_the_newest_tombstones_are_kept() {
        let registry = Registry::default();
        for i in 0..=MAX_TOMBSTONES {
            registry.unregister(&i.to_string(), Some(tombstone(&i.to_string(), 1)));
        }
        assert!(matches!(registry.lookup("0"), Lookup::Unknown));
        assert!(matches!(registry.lookup("1"), Lookup::Expired(_)));
        assert!(matches!(
            registry.lookup(&MAX_TOMBSTONES.to_string()),
            Lookup::Expired(_)
        ));
    }

    #[tokio::test]
    async fn a_takeover_request_reaches_the_sessions_owner() {
        let registry = Registry::default();
        let (queue, mut rx) = mpsc::unbounded_channel();
        registry.register("a", queue);
        let Lookup::Live(tx) = registry.lookup("a") else {
            panic!("not live")
        };
        let (reply, answer) = oneshot::channel();
        tx.send(Delivery::Takeover(Box::new(Takeover {
            account: Jid::parse("romeo@example.net").unwrap(),
            request: Resume {
                previd: "a".into(),
                h: 0,
            },
            reply,
        })))
        .unwrap();
        let Some(Delivery::Takeover(request)) = rx.recv().await else {
            panic!("no takeover on the session's queue")
        };
        assert_eq!(request.request.previd, "a");
        // An owner that ends without answering: the new connection sees the channel close.
        drop(request);
        assert!(answer.await.is_err());
    }
}
