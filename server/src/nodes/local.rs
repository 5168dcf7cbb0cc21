//! The demo's local node: a `rookery-node` server inside the panel process, on loopback,
//! enrolled in the pool as `local` (no join token: the panel hands it a fresh secret at
//! every start and pins its control certificate). Customers' domains land on it, and any
//! XMPP client on the same machine logs in at 127.0.0.1:5222.

use std::collections::BTreeMap;

use anyhow::Context;
use rookery_common::control::{JoinRequest, NodeCapacity};
use rookery_node::{config::NodeSettings, server::Server};
use sha2::{Digest, Sha256};
use tokio::{sync::oneshot, task::JoinHandle};

use super::db;
use crate::{clock::new_token, state::AppState};

pub const NAME: &str = "local";

/// A running local node; dropping `stop` (or sending on it) shuts it down.
pub struct LocalNode {
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<anyhow::Result<()>>,
    pub c2s: std::net::SocketAddr,
}

pub async fn start(state: &AppState) -> anyhow::Result<LocalNode> {
    let local = &state.settings.local_node;
    let secret = new_token();
    let mut settings = NodeSettings::default();
    settings.data_dir = local
        .data_dir
        .clone()
        .unwrap_or_else(|| state.settings.data_dir.join("node"));
    settings.c2s_listen = local.c2s_listen;
    settings.c2s_tls_listen = local.c2s_tls_listen;
    settings.http_listen = local.http_listen;
    settings.control_listen = local.control_listen;
    settings.proxy65_listen = local.proxy65_listen;
    settings.s2s_listen = local.s2s_listen;
    settings.public_host = local.c2s_listen.ip().to_string();
    settings.control_secret = Some(secret.clone().into());
    let capacity = settings.capacity.clone();
    let server = Server::start(settings.clone()).await.context(
        "starting the local node (set local_node.enabled = false to run the panel alone)",
    )?;
    let c2s = server.c2s_addr();
    let c2s_tls = server.c2s_tls_addr();
    let control = server
        .control_addr()
        .context("the local node has no control API")?;
    let fingerprint = control_fingerprint(&settings)?;
    let req = JoinRequest {
        token: String::new(),
        name: NAME.into(),
        public_host: c2s.ip().to_string(),
        c2s_port: c2s.port(),
        c2s_tls_port: c2s_tls.port(),
        control_url: format!("https://{control}"),
        control_cert_sha256: fingerprint,
        capacity: NodeCapacity { ..capacity },
        labels: BTreeMap::from([("local".to_string(), "true".to_string())]),
        version: rookery_node::VERSION.into(),
    };
    match db::node_by_name(&state.db, NAME).await? {
        Some(existing) => {
            db::update_endpoint(&state.db, &existing.id, &req, &secret, &state.sealer).await?;
        }
        None => {
            let now = state.clock.now();
            let mut tx = rookery_common::db::begin_write(&state.db).await?;
            db::insert_node(&mut tx, &req, &secret, &state.sealer, now).await?;
            tx.commit().await?;
            db::audit(
                &state.db,
                None,
                "system",
                "node.joined",
                NAME,
                "the panel's local node",
                now,
            )
            .await?;
        }
    }
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async move {
        let _ = stopped.await;
    }));
    tracing::info!(%c2s, %control, "local node running: XMPP clients connect to {c2s}");
    Ok(LocalNode { stop, task, c2s })
}

/// SHA-256 of the control API's certificate, as the panel pins it.
fn control_fingerprint(settings: &NodeSettings) -> anyhow::Result<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let path = settings
        .control_cert
        .clone()
        .unwrap_or_else(|| settings.data_dir.join("certs").join("_control.crt"));
    let cert = CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .next()
        .with_context(|| format!("{} holds no certificate", path.display()))?
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(cert.as_ref())))
}
