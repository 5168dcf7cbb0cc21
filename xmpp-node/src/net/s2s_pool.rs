//! Outgoing server-to-server links (issue 10): one per (local domain, remote domain), made
//! on the first stanza between them. A stanza for a remote domain goes into its link's
//! queue ([`Pool::send`]); the link's task resolves the peer, connects, authenticates
//! (`net::s2s::connect`: STARTTLS, SASL EXTERNAL or dialback) and writes what waited, then
//! what comes, until it has been idle for `limits.s2s_idle_secs`.
//!
//! When a link cannot be made, every stanza that waited for it is bounced to its sender
//! (RFC 6120 §8.3.3, §10.4.3): `remote-server-timeout` when the attempt took too long,
//! `remote-server-not-found` when the peer could not be resolved, reached or authenticated
//! with. A queue over `limits.s2s_queue_stanzas` bounces with `resource-constraint`. An
//! error stanza is never bounced (dropped), so two servers cannot bounce errors back and
//! forth. Bounces are not delivered here: they go out on a channel that the server drains
//! into local delivery ([`Pool::take_bounces`]), which keeps the pool free of routing.
//!
//! Every queue change happens under the map's lock, so a link that retires (idle, or
//! failed) removes itself atomically: a stanza either reaches a live link's queue, or
//! starts a new link.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use tokio::sync::mpsc::{self, error::TrySendError};

use super::s2s::{Connector, connect};
use crate::{
    config::Limits,
    metrics::S2sMetrics,
    proto::{
        element::Element,
        jid::Jid,
        stanza::{Condition, error_reply},
    },
    router::Delivery,
};

/// A link's key: (local domain, remote domain).
type Key = (String, String);

/// Consecutive broken streams a link reconnects after before giving up on what waits.
const MAX_RECONNECTS: u32 = 3;

/// The outgoing links of the node.
pub struct Pool {
    /// Set when the server starts (None in unit tests of routing: every remote stanza
    /// bounces, as on a node that cannot federate).
    connector: OnceLock<(Arc<Connector>, String)>,
    links: Mutex<HashMap<Key, mpsc::Sender<Element>>>,
    bounces: mpsc::UnboundedSender<Element>,
    bounces_rx: Mutex<Option<mpsc::UnboundedReceiver<Element>>>,
    /// What routing delivers to remote senders (`SessionHandle::remote_sender`).
    replies: mpsc::UnboundedSender<Delivery>,
    replies_rx: Mutex<Option<mpsc::UnboundedReceiver<Delivery>>>,
    queue_limit: usize,
    /// Tells the links the node stops: each closes its stream.
    stop: tokio::sync::watch::Sender<bool>,
    connect_timeout: Duration,
    idle: Duration,
    metrics: S2sMetrics,
}

impl Pool {
    pub fn new(limits: &Limits, metrics: S2sMetrics) -> Arc<Self> {
        let (bounces, rx) = mpsc::unbounded_channel();
        let (replies, replies_rx) = mpsc::unbounded_channel();
        Arc::new(Self {
            replies,
            replies_rx: Mutex::new(Some(replies_rx)),
            connector: OnceLock::new(),
            links: Mutex::new(HashMap::new()),
            bounces,
            bounces_rx: Mutex::new(Some(rx)),
            queue_limit: limits.s2s_queue_stanzas.max(1),
            stop: tokio::sync::watch::channel(false).0,
            connect_timeout: Duration::from_secs(limits.s2s_connect_timeout_secs),
            idle: Duration::from_secs(limits.s2s_idle_secs),
            metrics,
        })
    }

    /// Makes the pool able to connect: where peers are and the dialback secret. What is
    /// delivered to remote senders is sent from now on.
    pub fn start(self: &Arc<Self>, connector: Arc<Connector>, dialback_secret: String) {
        let _ = self.connector.set((connector, dialback_secret));
        if let Some(mut rx) = self.take_replies() {
            let pool = Arc::downgrade(self);
            tokio::spawn(async move {
                while let Some(d) = rx.recv().await {
                    let Some(pool) = pool.upgrade() else { return };
                    if let Delivery::Stanza(s) = d {
                        let _ = pool.send(*s);
                    }
                }
            });
        }
    }

    /// The node stops: every link closes its stream (what still waits is dropped with the
    /// node's other queues).
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// The channel of remote senders' deliveries.
    pub fn replies(&self) -> mpsc::UnboundedSender<Delivery> {
        self.replies.clone()
    }

    /// What was delivered to remote senders, when nobody sends it (unit tests).
    pub fn take_replies(&self) -> Option<mpsc::UnboundedReceiver<Delivery>> {
        self.replies_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// The connector (for dialback checks of incoming streams), once started.
    pub fn connector(&self) -> Option<Arc<Connector>> {
        self.connector.get().map(|(c, _)| c.clone())
    }

    /// The error replies to stanzas that could not be sent, for local delivery (taken
    /// once, by the server).
    pub fn take_bounces(&self) -> Option<mpsc::UnboundedReceiver<Element>> {
        self.bounces_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// Links open or being made.
    pub fn links(&self) -> usize {
        self.links.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Sends a stanza (its `from` a local entity, its `to` on another server) over the
    /// link between their domains, making it if needed. Gives it back if the pool was
    /// never started (the node cannot federate) or the stanza names no sender or no
    /// recipient: the caller answers the sender.
    pub fn send(self: &Arc<Self>, stanza: Element) -> Result<(), Element> {
        let domain = |attr: &str| {
            stanza
                .attr(attr)
                .and_then(|v| Jid::parse(v).ok())
                .map(|j| j.domain().to_string())
        };
        let (Some(local), Some(remote)) = (domain("from"), domain("to")) else {
            return Err(stanza);
        };
        let key = (local, remote);
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let mut stanza = stanza;
        if let Some(tx) = links.get(&key) {
            match tx.try_send(stanza) {
                Ok(()) => {
                    self.metrics.queue.inc();
                    return Ok(());
                }
                Err(TrySendError::Full(s)) => {
                    drop(links);
                    let text = format!("Too many stanzas wait for the server of {}.", key.1);
                    self.bounce(&s, Condition::ResourceConstraint, &text);
                    return Ok(());
                }
                // A link retires under this lock, so this is a link whose task ended
                // without a word (a panic): a new one replaces it.
                Err(TrySendError::Closed(s)) => stanza = s,
            }
        }
        let Some((connector, secret)) = self.connector.get() else {
            return Err(stanza);
        };
        let (tx, rx) = mpsc::channel(self.queue_limit);
        if tx.try_send(stanza).is_ok() {
            self.metrics.queue.inc();
        }
        links.insert(key.clone(), tx.clone());
        drop(links);
        let span = tracing::info_span!("s2s_out", local = %key.0, remote = %key.1);
        let link = Link {
            pool: self.clone(),
            connector: connector.clone(),
            secret: secret.clone(),
            key,
            me: tx,
            rx,
        };
        tokio::spawn(tracing::Instrument::instrument(link.run(), span));
        Ok(())
    }

    /// Answers `stanza` with an error for its sender; an error is dropped instead.
    fn bounce(&self, stanza: &Element, condition: Condition, text: &str) {
        if stanza.attr("type") == Some("error") {
            return;
        }
        self.metrics.bounced.inc();
        let _ = self
            .bounces
            .send(error_reply(stanza, condition, Some(text)));
    }
}

/// One link's task and what it owns.
struct Link {
    pool: Arc<Pool>,
    connector: Arc<Connector>,
    secret: String,
    key: Key,
    /// A sender of its own queue, to know whether the map still names this link.
    me: mpsc::Sender<Element>,
    rx: mpsc::Receiver<Element>,
}

impl Link {
    async fn run(mut self) {
        let mut stop = self.pool.stop.subscribe();
        if *stop.borrow_and_update() {
            return;
        }
        tokio::select! {
            _ = self.serve() => {}
            _ = stop.changed() => {}
        }
    }

    async fn serve(&mut self) {
        let (local, remote) = self.key.clone();
        // A stanza taken from the queue that a broken stream did not carry.
        let mut carry: Option<Element> = None;
        let mut reconnects = 0;
        loop {
            let attempt = connect(&self.connector, &local, &remote, &self.secret);
            let mut stream = match tokio::time::timeout(self.pool.connect_timeout, attempt).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::info!(error = format!("{e:#}"), "no stream to the peer");
                    let text = format!("The server of {remote} could not be reached: {e:#}.");
                    return self.fail(carry, Condition::RemoteServerNotFound, &text);
                }
                Err(_) => {
                    tracing::info!("no stream to the peer: timed out");
                    let text = format!("The server of {remote} did not answer in time.");
                    return self.fail(carry, Condition::RemoteServerTimeout, &text);
                }
            };
            tracing::info!("outgoing stream ready");
            let open = self.pool.metrics.stream("out");
            open.inc();
            let broken = loop {
                if let Some(s) = carry.take() {
                    if stream.send(&s).await.is_err() {
                        carry = Some(s);
                        break true;
                    }
                    self.pool.metrics.stanza("out");
                    reconnects = 0;
                    continue;
                }
                tokio::select! {
                    _ = stream.closed() => break true,
                    next = tokio::time::timeout(self.pool.idle, self.rx.recv()) => match next {
                        Ok(Some(s)) => {
                            self.pool.metrics.queue.dec();
                            carry = Some(s);
                        }
                        // Never: the link holds a sender of its own queue.
                        Ok(None) => break false,
                        Err(_) => {
                            if self.retire() {
                                break false;
                            }
                        }
                    },
                }
            };
            open.dec();
            if !broken {
                tracing::info!("closing an idle outgoing stream");
                stream.close().await;
                return;
            }
            tracing::info!("the outgoing stream broke");
            if carry.is_none() && self.retire() {
                return;
            }
            reconnects += 1;
            if reconnects > MAX_RECONNECTS {
                let text = format!("The stream to the server of {remote} keeps breaking.");
                return self.fail(carry, Condition::RemoteServerTimeout, &text);
            }
        }
    }

    /// Leaves the map if nothing waits; true if it did (the task then ends).
    fn retire(&self) -> bool {
        let mut links = self.pool.links.lock().unwrap_or_else(|p| p.into_inner());
        if !self.rx.is_empty() {
            return false;
        }
        if links
            .get(&self.key)
            .is_some_and(|tx| tx.same_channel(&self.me))
        {
            links.remove(&self.key);
        }
        true
    }

    /// The link could not be made: it leaves the map and bounces what waited.
    fn fail(&mut self, carry: Option<Element>, condition: Condition, text: &str) {
        {
            let mut links = self.pool.links.lock().unwrap_or_else(|p| p.into_inner());
            if links
                .get(&self.key)
                .is_some_and(|tx| tx.same_channel(&self.me))
            {
                links.remove(&self.key);
            }
        }
        self.rx.close();
        if let Some(s) = carry {
            self.pool.bounce(&s, condition, text);
        }
        while let Ok(s) = self.rx.try_recv() {
            self.pool.metrics.queue.dec();
            self.pool.bounce(&s, condition, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        net::{s2s::S2sTls, s2s_resolve},
        proto::ns,
    };

    /// A connector whose only peer, `peer.test`, is at `place`.
    fn connector(place: &str) -> Arc<Connector> {
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new()));
        Arc::new(Connector {
            tls: Arc::new(S2sTls {
                server: Arc::new(server),
                anchors: Vec::new(),
                roots: Arc::new(rustls::RootCertStore::empty()),
                our_cert: Arc::new(|_| None),
                require_verified: false,
            }),
            static_hosts: BTreeMap::from([("peer.test".to_string(), place.to_string())]),
            resolver: s2s_resolve::resolver(
                Some("127.0.0.1:9".parse().unwrap()),
                Duration::from_secs(1),
            )
            .unwrap(),
        })
    }

    fn pool(limits: Limits, place: &str) -> Arc<Pool> {
        let pool = Pool::new(&limits, S2sMetrics::default());
        pool.start(connector(place), "secret".into());
        pool
    }

    fn message(kind: &str, n: usize) -> Element {
        Element::new("message", ns::CLIENT)
            .with_attr("from", "romeo@a.test/orchard")
            .with_attr("to", "juliet@peer.test")
            .with_attr("type", kind)
            .with_attr("id", format!("m{n}"))
    }

    fn condition(e: &Element) -> String {
        e.children()
            .find(|c| c.name() == "error")
            .and_then(|err| err.children().next())
            .map(|c| c.name().to_string())
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn stanzas_for_an_unreachable_peer_bounce_with_remote_server_not_found_except_errors() {
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pool = pool(Limits::default(), &format!("127.0.0.1:{port}"));
        let mut bounces = pool.take_bounces().unwrap();
        let _ = pool.send(message("chat", 1));
        let _ = pool.send(message("error", 2));
        let _ = pool.send(message("chat", 3));
        let mut got = Vec::new();
        for _ in 0..2 {
            let b = tokio::time::timeout(Duration::from_secs(10), bounces.recv())
                .await
                .unwrap()
                .unwrap();
            got.push((b.attr("id").unwrap().to_string(), condition(&b)));
            assert_eq!(b.attr("to"), Some("romeo@a.test/orchard"));
            assert_eq!(b.attr("type"), Some("error"));
        }
        assert_eq!(
            got,
            [
                ("m1".to_string(), "remote-server-not-found".to_string()),
                ("m3".to_string(), "remote-server-not-found".to_string())
            ]
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(300), bounces.recv())
                .await
                .is_err(),
            "the error stanza is dropped, never bounced"
        );
        assert_eq!(pool.links(), 0, "a failed link leaves the pool");
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out_with_remote_server_timeout() {
        // Accepts connections and says nothing.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = silent.accept().await {
                held.push(tcp);
            }
        });
        let limits = Limits {
            s2s_connect_timeout_secs: 1,
            ..Limits::default()
        };
        let pool = pool(limits, &addr.to_string());
        let mut bounces = pool.take_bounces().unwrap();
        let _ = pool.send(message("chat", 1));
        let b = tokio::time::timeout(Duration::from_secs(10), bounces.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(condition(&b), "remote-server-timeout");
    }

    #[tokio::test]
    async fn a_full_queue_bounces_with_resource_constraint() {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = silent.accept().await {
                held.push(tcp);
            }
        });
        let limits = Limits {
            s2s_queue_stanzas: 2,
            ..Limits::default()
        };
        let pool = pool(limits, &addr.to_string());
        let mut bounces = pool.take_bounces().unwrap();
        for n in 1..=3 {
            let _ = pool.send(message("chat", n));
        }
        let b = tokio::time::timeout(Duration::from_secs(5), bounces.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (b.attr("id"), condition(&b).as_str()),
            (Some("m3"), "resource-constraint")
        );
    }

    #[tokio::test]
    async fn queued_stanzas_cross_once_the_link_is_up_and_an_idle_link_closes() {
        let (connector, mut incoming, accepted) = crate::net::s2s::tests::setup(true).await;
        let limits = Limits {
            s2s_idle_secs: 1,
            ..Limits::default()
        };
        let pool = Pool::new(&limits, S2sMetrics::default());
        pool.start(connector, crate::net::s2s::tests::SECRET.into());
        let mut bounces = pool.take_bounces().unwrap();
        for n in 1..=3 {
            let m = Element::new("message", ns::CLIENT)
                .with_attr("from", "juliet@peer.test/balcony")
                .with_attr("to", "romeo@a.local")
                .with_attr("id", format!("q{n}"));
            pool.send(m).unwrap();
        }
        assert_eq!(pool.links(), 1, "one link for the pair");
        let mut ids = Vec::new();
        while ids.len() < 3 {
            let got = tokio::time::timeout(Duration::from_secs(10), incoming.recv())
                .await
                .unwrap()
                .unwrap();
            if let crate::net::s2s::Incoming::Stanza(e) = got {
                ids.push(e.attr("id").unwrap().to_string());
            }
        }
        assert_eq!(ids, ["q1", "q2", "q3"], "in order");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(pool.links(), 0, "the idle link closed");
        assert!(bounces.try_recv().is_err(), "nothing bounced");
    }

    #[tokio::test]
    async fn stopping_the_pool_ends_its_links() {
        let (connector, mut incoming, _) = crate::net::s2s::tests::setup(true).await;
        let pool = Pool::new(&Limits::default(), S2sMetrics::default());
        pool.start(connector, crate::net::s2s::tests::SECRET.into());
        let m = Element::new("message", ns::CLIENT)
            .with_attr("from", "juliet@peer.test/balcony")
            .with_attr("to", "romeo@a.local");
        pool.send(m).unwrap();
        while !matches!(
            tokio::time::timeout(Duration::from_secs(10), incoming.recv())
                .await
                .unwrap()
                .unwrap(),
            crate::net::s2s::Incoming::Stanza(_)
        ) {}
        let link = pool.links.lock().unwrap().values().next().cloned().unwrap();
        pool.stop();
        tokio::time::timeout(Duration::from_secs(5), link.closed())
            .await
            .expect("the link's task ended");
    }

    #[tokio::test]
    async fn a_pool_that_was_not_started_gives_the_stanza_back() {
        let pool = Pool::new(&Limits::default(), S2sMetrics::default());
        assert!(pool.send(message("chat", 1)).is_err());
        assert_eq!(pool.links(), 0);
    }
}
