//! The node's connection limits: open connections in total and per client address, shared
//! by every transport (TCP, direct TLS, WebSocket, BOSH).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use tokio::sync::Semaphore;

use crate::{config::NodeSettings, node::Node};

/// Open connections in total (a semaphore) and per client address.
pub struct ConnLimits {
    pub(crate) total: Arc<Semaphore>,
    pub(crate) max: usize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max_per_ip: usize,
}

impl ConnLimits {
    pub fn new(s: &NodeSettings) -> Self {
        Self {
            total: Arc::new(Semaphore::new(s.limits.max_connections)),
            max: s.limits.max_connections,
            per_ip: Mutex::new(HashMap::new()),
            max_per_ip: s.limits.max_connections_per_ip,
        }
    }

    /// A place for one more connection from `ip`, or `None` when the node or the address
    /// is at its limit. The place is given back when the returned slot is dropped.
    pub fn admit(self: &Arc<Self>, node: &Arc<Node>, ip: IpAddr) -> Option<Box<dyn Send>> {
        let Ok(permit) = self.total.clone().try_acquire_owned() else {
            tracing::warn!(%ip, "connection refused: the node is at its connection limit");
            return None;
        };
        if !self.admit_ip(ip) {
            tracing::warn!(%ip, "connection refused: too many connections from this address");
            return None;
        }
        node.metrics.connections.inc();
        Some(Box::new(Slot {
            node: node.clone(),
            limits: self.clone(),
            ip,
            _permit: permit,
        }))
    }

    /// Whether connections are still open.
    pub fn in_use(&self) -> bool {
        self.total.available_permits() < self.max
    }

    fn admit_ip(&self, ip: IpAddr) -> bool {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(ip).or_default();
        if *n >= self.max_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    fn release_ip(&self, ip: IpAddr) {
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// One open connection's place in [`ConnLimits`] and the connections gauge, given back when
/// dropped.
struct Slot {
    node: Arc<Node>,
    limits: Arc<ConnLimits>,
    ip: IpAddr,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.node.metrics.connections.dec();
        self.limits.release_ip(self.ip);
    }
}

/// Incoming server-to-server streams per key (a remote domain, or an address for streams
/// not yet authenticated): at most `max` each. A place is given back when its guard drops.
pub struct PeerCounts<K: std::hash::Hash + Eq + Clone + Send + 'static> {
    counts: Mutex<HashMap<K, usize>>,
    max: usize,
}

impl<K: std::hash::Hash + Eq + Clone + Send + 'static> PeerCounts<K> {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(HashMap::new()),
            max,
        })
    }

    /// A place for one more stream of `key`, or None at the limit.
    pub fn admit(self: &Arc<Self>, key: K) -> Option<PeerPlace<K>> {
        let mut map = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(key.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(PeerPlace {
            counts: self.clone(),
            key,
        })
    }

    /// Streams of `key` now.
    pub fn count(&self, key: &K) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// A place in [`PeerCounts`].
pub struct PeerPlace<K: std::hash::Hash + Eq + Clone + Send + 'static> {
    counts: Arc<PeerCounts<K>>,
    key: K,
}

impl<K: std::hash::Hash + Eq + Clone + Send + 'static> Drop for PeerPlace<K> {
    fn drop(&mut self) {
        let mut map = self.counts.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_at_most_its_places_and_gets_them_back() {
        let counts = PeerCounts::new(2);
        let a = counts.admit("peer.test".to_string()).unwrap();
        let _b = counts.admit("peer.test".to_string()).unwrap();
        assert!(counts.admit("peer.test".to_string()).is_none());
        assert!(
            counts.admit("other.test".to_string()).is_some(),
            "others are not affected"
        );
        drop(a);
        assert_eq!(counts.count(&"peer.test".to_string()), 1);
        assert!(counts.admit("peer.test".to_string()).is_some());
    }
}
