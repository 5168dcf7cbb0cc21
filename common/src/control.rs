//! The node control API's wire types (JSON), shared by the node that serves them and the
//! panel that calls them. Paths, all under `https://<node>:5290/v1`, with
//! `Authorization: Bearer <node secret>`:
//!
//! | method and path | body → answer |
//! |---|---|
//! | `GET /v1/status` | → [`NodeStatus`] |
//! | `GET /v1/vhosts` | → `Vec<`[`VhostSummary`]`>` |
//! | `PUT /v1/vhosts/{domain}` | [`VhostSpec`] → [`ApplyOutcome`] (409 `stale_generation` when older) |
//! | `GET /v1/vhosts/{domain}` | → [`VhostSpec`] (the TLS key left out) |
//! | `DELETE /v1/vhosts/{domain}` | → 204; the vhost and all its data are gone |
//! | `GET /v1/vhosts/{domain}/accounts?after=&limit=` | → [`AccountPage`] |
//! | `POST /v1/vhosts/{domain}/accounts` | [`NewAccount`] → 201 [`AccountInfo`] |
//! | `PUT /v1/vhosts/{domain}/accounts/{username}/password` | [`NewPassword`] → 204 |
//! | `DELETE /v1/vhosts/{domain}/accounts/{username}` | → 204 |
//! | `GET /v1/usage` | → [`UsageReport`] (counters since the previous report) |
//! | `GET /v1/vhosts/{domain}/export` | → [`VhostData`] |
//! | `PUT /v1/vhosts/{domain}/data` | [`VhostData`] → 204 (replaces the vhost's data) |
//! | `GET /v1/vhosts/{domain}/uploads/{id}` | → the bytes of an uploaded file (XEP-0363) |
//! | `PUT /v1/vhosts/{domain}/uploads/{id}` | bytes → 204 (a file of an imported `upload_files` row) |
//! | `PUT /v1/vhosts/{domain}/move` | [`VhostMove`] → 204 (frozen for a move; redirected if asked) |
//! | `DELETE /v1/vhosts/{domain}/move` | → 204 (the move is over here: writes are accepted again) |
//!
//! Errors are [`ApiError`] bodies with a 4xx/5xx status. Enrollment goes the other way:
//! the node posts a [`JoinRequest`] to the panel's `POST /api/nodes/join` and gets a
//! [`JoinResponse`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The control API's default port (DESIGN.md, "Ports").
pub const DEFAULT_CONTROL_PORT: u16 = 5290;

/// Everything a node needs to serve one domain. Applying it is idempotent: the node keeps
/// the highest generation it has applied and ignores the same one again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostSpec {
    /// The domain (normalised by the node; must match the path).
    pub domain: String,
    /// Bumped by the panel at every change; at least 1.
    pub generation: i64,
    #[serde(default)]
    pub limits: VhostLimits,
    #[serde(default)]
    pub features: VhostFeatures,
    /// The domain's certificate chain and key (PEM). None: the node uses a self-signed one.
    #[serde(default)]
    pub tls: Option<TlsMaterial>,
    /// Logins are refused with `policy-violation` and open sessions are closed; data is kept.
    #[serde(default)]
    pub suspended: bool,
    /// The domain is being moved to another node: clients are sent `<see-other-host/>`
    /// naming this `host` or `host:port`, and new logins are refused the same way.
    #[serde(default)]
    pub moved_to: Option<String>,
    /// XEP-0157 contact addresses, e.g. `"abuse" → ["mailto:abuse@example.com"]`.
    /// Keys: abuse, admin, feedback, sales, security, status, support.
    #[serde(default)]
    pub contacts: BTreeMap<String, Vec<String>>,
}

/// Limits from the customer's plan; None means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VhostLimits {
    pub max_accounts: Option<i64>,
    pub max_sessions: Option<i64>,
    pub storage_quota_bytes: Option<i64>,
    pub offline_retention_days: Option<i64>,
    pub archive_retention_days: Option<i64>,
    /// XEP-0363: what the vhost's uploaded files may add up to.
    pub upload_quota_bytes: Option<i64>,
    /// XEP-0363: the largest file one upload may be (None: the node's default).
    pub upload_max_file_bytes: Option<i64>,
    /// XEP-0363: what one account's uploaded files may add up to.
    pub upload_quota_bytes_per_account: Option<i64>,
    /// XEP-0363: uploaded files older than this many days are deleted.
    pub upload_retention_days: Option<i64>,
    /// Group chat rooms (XEP-0045) the domain's `conference.` service holds at most.
    pub max_rooms: Option<i64>,
    /// Occupants one room holds at most (a room's own `maxusers` may say fewer).
    pub max_room_occupants: Option<i64>,
}

/// Feature switches of a vhost: what the domain is allowed, declared up front. A node
/// serves the switched-on features it implements and ignores the others until a version
/// that has them runs. In-band registration (off unless switched on: the customer's choice
/// in the panel), the archive (XEP-0313: switched off, the domain archives nothing and
/// advertises nothing), push notifications (XEP-0357) and group chat (XEP-0045 at
/// `conference.<domain>`: switched off, the service does not exist), HTTP upload and
/// federation are implemented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VhostFeatures {
    /// XEP-0077 in-band registration.
    pub registration: bool,
    /// Federation: whether the domain exchanges stanzas with other domains, wherever they
    /// are hosted (another vhost of the same node counts like a remote server). Off: only
    /// within the domain and its services; on: with every domain, or only with those of
    /// `federation_allow` when it is not empty.
    pub federation: bool,
    /// With `federation` on and this list not empty, the only remote domains (normalised,
    /// exact names) the domain exchanges stanzas with. Empty: every domain.
    pub federation_allow: Vec<String>,
    /// XEP-0045 group chat at `conference.<domain>`.
    pub muc: bool,
    pub upload: bool,
    pub archive: bool,
    /// XEP-0357 push notifications to the app servers of the users' devices.
    pub push: bool,
    /// Push notifications carry the sender and the text of the message. Off: they say only
    /// that messages wait, so the app servers (run by the apps' makers) learn nothing.
    pub push_message_content: bool,
}

impl Default for VhostFeatures {
    fn default() -> Self {
        Self {
            registration: false,
            federation: true,
            federation_allow: Vec::new(),
            muc: true,
            upload: true,
            archive: true,
            push: true,
            push_message_content: false,
        }
    }
}

/// A certificate chain and its private key, both PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsMaterial {
    pub cert_pem: String,
    /// Left out (None) when a node answers `GET`: keys only ever travel to the node.
    #[serde(default)]
    pub key_pem: Option<String>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &self.key_pem.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// The answer to a PUT of a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    pub domain: String,
    /// The generation the node now serves.
    pub generation: i64,
    /// False when this generation was already applied (nothing changed).
    pub changed: bool,
}

/// One line of `GET /v1/vhosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostSummary {
    pub domain: String,
    /// None for vhosts added by the CLI (not managed by a panel).
    pub generation: Option<i64>,
    pub suspended: bool,
    pub sessions: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    pub username: String,
    pub password: String,
    /// An account the platform uses (the uptime prober's): left out of account lists and
    /// of the plan's account limit.
    #[serde(default)]
    pub system: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountInfo {
    pub username: String,
    /// Unix seconds, UTC.
    pub created_at: i64,
}

/// A page of accounts in user-name order; `next` is the `after` of the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountPage {
    pub accounts: Vec<AccountInfo>,
    pub next: Option<String>,
}

/// The node as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub version: String,
    pub uptime_secs: i64,
    pub sessions: i64,
    pub vhosts: i64,
    /// CPU time the node process used since it started, seconds.
    pub cpu_seconds: f64,
    /// One-minute load average of the machine.
    pub load_average: f64,
    pub cpu_cores: i64,
    /// Resident memory of the node process and the machine's total, bytes.
    pub memory_bytes: i64,
    pub memory_total_bytes: i64,
    pub capacity: NodeCapacity,
}

/// What an operator says a node can carry; placement keeps within it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeCapacity {
    pub max_vhosts: i64,
    pub max_sessions: i64,
}

impl Default for NodeCapacity {
    fn default() -> Self {
        Self {
            max_vhosts: 1000,
            max_sessions: 100_000,
        }
    }
}

/// Per-vhost usage. Message counters and the session peak cover the time since the
/// previous report (each `GET /v1/usage` starts a new period); the rest are current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VhostUsage {
    pub domain: String,
    pub accounts: i64,
    pub sessions: i64,
    pub peak_sessions: i64,
    pub messages_in: i64,
    pub messages_out: i64,
    pub storage_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// Length of the period the counters cover, seconds.
    pub period_secs: i64,
    pub vhosts: Vec<VhostUsage>,
}

/// All of a vhost's stored data, to move it to another node: each table's rows as JSON
/// values keyed by column. The node's schema version travels along, and a node refuses
/// data from a schema it does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VhostData {
    pub domain: String,
    pub schema_version: i64,
    pub tables: BTreeMap<String, Vec<BTreeMap<String, serde_json::Value>>>,
}

/// `PUT /v1/vhosts/{domain}/move`: the vhost takes part in a move between nodes, at either
/// end. While it does, it is frozen: every write of its data is refused (control API
/// account changes with 409 `vhost_moving`, stanzas that would store something with a
/// `resource-constraint` wait error), so an export taken now is still whole when the
/// vhost is removed later. Sessions stay unless `redirect_to` says where they go. The
/// answer comes once writes that were under way have finished; the state survives a
/// restart of the node and ends with `DELETE` on the same path or with the vhost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VhostMove {
    /// `host` or `host:port` of the node that now serves the domain: open sessions end
    /// with `<see-other-host/>` naming it, and new ones are refused the same way. Set it
    /// only once that node holds the data and serves the spec.
    #[serde(default)]
    pub redirect_to: Option<String>,
}

/// An error answer of the control API (and of the panel's join endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable, machine-readable: `unauthorized`, `not_found`, `invalid_spec`,
    /// `stale_generation`, `account_exists`, `account_limit`, `invalid_account`,
    /// `vhost_moving`, …
    pub code: String,
    /// A sentence for people.
    pub message: String,
}

/// What `rookery-node join` sends to the panel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The one-time join token an admin created in the panel.
    pub token: String,
    /// A name for the pool page, unique in the pool (e.g. the host name).
    pub name: String,
    /// The host name clients connect to (the target of the domains' SRV records).
    pub public_host: String,
    /// Client ports at that host.
    pub c2s_port: u16,
    pub c2s_tls_port: u16,
    /// Where the panel reaches the control API, e.g. `https://10.0.0.5:5290`.
    pub control_url: String,
    /// SHA-256 of the control API's certificate (DER), hex: the panel pins it.
    pub control_cert_sha256: String,
    pub capacity: NodeCapacity,
    /// Labels placement can require, e.g. `region = "eu-west"`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub version: String,
}

/// The panel's answer to a join: who the node is and the secret the panel will present.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinResponse {
    pub node_id: String,
    pub secret: String,
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("node_id", &self.node_id)
            .field("secret", &"[redacted]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_spec_gets_the_default_limits_and_features() {
        let spec: VhostSpec =
            serde_json::from_str(r#"{"domain":"example.com","generation":1}"#).unwrap();
        assert_eq!(spec.limits, VhostLimits::default());
        assert!(spec.features.federation && !spec.features.registration);
        assert!(!spec.suspended && spec.tls.is_none() && spec.moved_to.is_none());
    }

    #[test]
    fn unknown_fields_are_refused_so_typos_are_not_silently_ignored() {
        let e = serde_json::from_str::<VhostSpec>(
            r#"{"domain":"example.com","generation":1,"suspend":true}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `suspend`"), "{e}");
    }

    #[test]
    fn keys_and_secrets_never_show_in_debug_output() {
        let tls = TlsMaterial {
            cert_pem: "CERT".into(),
            key_pem: Some("PRIVATE KEY".into()),
        };
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        let join = JoinResponse {
            node_id: "n".into(),
            secret: "s3cret".into(),
        };
        assert!(!format!("{join:?}").contains("s3cret"));
    }
}
