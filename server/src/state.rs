//! What every request handler shares: the database, settings, clock, mailer, password
//! hasher, metrics and the keys the panel signs with.

use std::{ops::Deref, sync::Arc};

use crate::{
    auth::passwords::Hasher, clock::Clock, config::Settings, db::Pool, mail::Mailer,
    nodes::client::NodeClients, seal::Sealer, telemetry::Metrics,
};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: Pool,
    pub settings: Settings,
    pub clock: Clock,
    pub mailer: Mailer,
    pub hasher: Hasher,
    pub metrics: Arc<Metrics>,
    /// Signs CSRF tokens. Generated once and stored in the database, so every panel
    /// instance of a deployment agrees.
    pub csrf_key: [u8; 32],
    /// Seals the secrets the panel keeps (node secrets).
    pub sealer: Sealer,
    /// HTTP clients for the nodes' control APIs.
    pub node_clients: Arc<NodeClients>,
    /// Wakes the reconciler at once (a domain was added or changed, a node was drained).
    pub reconcile_now: Arc<tokio::sync::Notify>,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}
