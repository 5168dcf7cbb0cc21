//! XMPP alerts: a chat message from `rookery-alerts@<alerts.xmpp_sender_domain>`.
//!
//! The sender domain is one the platform hosts. Like the probe account, the sender is a
//! system account (hidden from the domain's owner, outside the plan's limits) that the panel
//! creates through the control API of the node serving the domain, with a random password
//! sealed in `alert_senders`. Each delivery logs in with the probe's client (STARTTLS with
//! the probe's trust roots, SCRAM, bind), sends the message, waits for a ping's answer (so
//! an immediate bounce is seen) and closes the stream.

use std::{sync::LazyLock, time::Duration};

use secrecy::SecretString;

use super::db;
use crate::{
    nodes::db as nodes,
    probe::{ProbeTarget, tls_config_webpki, tls_config_with_roots},
    state::AppState,
};

/// The sender's user name on the sender domain.
pub const SENDER_USERNAME: &str = "rookery-alerts";

/// One account creation at a time in this process (two would race on the password).
static ENSURING: LazyLock<tokio::sync::Mutex<()>> = LazyLock::new(Default::default);

/// Sends `text` to `to`; the error is the reason for the delivery log.
pub async fn send(state: &AppState, to: &str, text: &str) -> Result<(), String> {
    let domain = state.settings.alerts.xmpp_sender_domain.trim();
    if domain.is_empty() {
        return Err(
            "XMPP alerts are not set up on this platform (alerts.xmpp_sender_domain is empty)"
                .into(),
        );
    }
    let hosted = db::hosted_domain(&state.db, domain)
        .await
        .map_err(|e| format!("database: {e}"))?
        .ok_or_else(|| {
            format!("the sender domain {domain} is not an active domain hosted on this platform")
        })?;
    let password = ensure_sender(state, &hosted).await?;
    let tls = trust(state).map_err(|e| format!("the trust roots cannot be loaded: {e:#}"))?;
    let target = ProbeTarget {
        host: hosted.host.clone(),
        port: hosted.port,
        domain: hosted.domain.clone(),
        username: SENDER_USERNAME.into(),
        password: SecretString::from(password),
        tls,
    };
    let timeout = Duration::from_secs(state.settings.alerts.xmpp_timeout_secs.max(1));
    let sent = crate::probe::send_message(&target, to, text, timeout).await;
    if let Err(e) = &sent
        && e.contains("not-authorized")
    {
        // The node lost the account (restored from a backup, say): make it again next time.
        let _ = db::forget_sender(&state.db, &hosted.domain).await;
    }
    sent
}

/// The sender's password, after creating the account on the domain's node if it is missing
/// there (first use, or the domain moved to another node).
async fn ensure_sender(state: &AppState, hosted: &db::HostedDomain) -> Result<String, String> {
    let _one_at_a_time = ENSURING.lock().await;
    let context = db::sender_context(&hosted.domain);
    if let Some((node_id, _, sealed)) = db::sender(&state.db, &hosted.domain)
        .await
        .map_err(|e| format!("database: {e}"))?
        && node_id == hosted.node_id
        && let Ok(password) = state.sealer.open(&context, &sealed)
    {
        return Ok(password);
    }
    let node = nodes::node(&state.db, &hosted.node_id)
        .await
        .map_err(|e| format!("database: {e}"))?
        .ok_or("the sender domain's node is gone")?;
    if node.health == "down" {
        return Err(format!(
            "node {} serving the sender domain is down",
            node.name
        ));
    }
    let endpoint = node
        .endpoint(&state.sealer)
        .map_err(|e| format!("the node's secret cannot be read: {e:#}"))?;
    let client = state.node_clients.get(&endpoint);
    let password = crate::clock::new_token();
    let account = rookery_common::control::NewAccount {
        username: SENDER_USERNAME.into(),
        password: password.clone(),
        system: true,
    };
    let created = match client.create_account(&hosted.domain, &account).await {
        Err(e) if e.code() == Some("account_exists") => {
            let new = rookery_common::control::NewPassword {
                password: password.clone(),
            };
            client
                .set_password(&hosted.domain, SENDER_USERNAME, &new)
                .await
        }
        other => other,
    };
    created.map_err(|e| format!("creating the sender account failed: {e}"))?;
    db::set_sender(
        &state.db,
        &hosted.domain,
        &node.id,
        SENDER_USERNAME,
        &state.sealer.seal(&context, &password),
        state.clock.now(),
    )
    .await
    .map_err(|e| format!("database: {e}"))?;
    tracing::info!(
        domain = hosted.domain,
        node = node.name,
        "alert sender account ready"
    );
    Ok(password)
}

/// The probe's trust roots: what the probe trusts for a domain's certificate, the alert
/// sender trusts too.
fn trust(state: &AppState) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    let files = crate::probe::scheduler::trust_files(state);
    if files.is_empty() {
        return Ok(tls_config_webpki());
    }
    tls_config_with_roots(&files)
}
