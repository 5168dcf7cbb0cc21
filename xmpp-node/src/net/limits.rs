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
