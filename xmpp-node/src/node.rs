//! The running node's shared state: settings, storage, the session router, the set of
//! hosted domains with their policy and usage counters (reloaded when the store says it
//! changed, or right after the control API wrote a spec), TLS certificates and metrics.
//! A reload also hands each vhost's storage quota to the store's meters and measures the
//! vhosts whose quota is new or changed.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::Instant,
};

use crate::{
    config::NodeSettings,
    control::{
        moving::{WriteGate, access_while_moving},
        usage::VhostCounters,
    },
    metrics::Metrics,
    net::tls::CertResolver,
    proto::{
        c2s::{HostAccess, StreamError},
        element::Element,
    },
    router::Router,
    store::{Store, VhostPolicy},
};

/// A hosted domain as the running node serves it.
#[derive(Debug)]
pub struct HostState {
    /// Open, suspended or moved (from the applied spec; open for CLI vhosts).
    pub access: HostAccess,
    /// The applied spec's policy (None: a CLI vhost, no limits).
    pub policy: Option<VhostPolicy>,
    /// Kept across reloads while the domain stays hosted.
    pub counters: Arc<VhostCounters>,
    /// Taking part in a move: its data must not change (see `control::moving`).
    pub frozen: bool,
}

impl HostState {
    pub fn max_sessions(&self) -> Option<i64> {
        self.policy.as_ref().and_then(|p| p.max_sessions)
    }
}

/// Whether a vhost with these features exchanges stanzas with the domain `other`.
pub fn federation_allows(features: &rookery_common::control::VhostFeatures, other: &str) -> bool {
    features.federation
        && (features.federation_allow.is_empty()
            || features.federation_allow.iter().any(|d| d == other))
}

/// How a policy lets clients in: a suspension wins over a move.
pub fn access_of(policy: Option<&VhostPolicy>) -> HostAccess {
    match policy {
        Some(p) if p.suspended => HostAccess::Suspended,
        Some(VhostPolicy {
            moved_to: Some(host),
            ..
        }) => HostAccess::MovedTo(host.clone()),
        _ => HostAccess::Open,
    }
}

pub struct Node {
    pub settings: Settings,
    pub store: Store,
    pub router: Router,
    pub certs: Arc<CertResolver>,
    pub metrics: Metrics,
    pub started: Instant,
    pub auth_throttle: crate::net::c2s::AuthThrottle,
    pub blocks: crate::xep::blocking::BlockCache,
    /// In-band registrations per client address (XEP-0077).
    pub registrations: crate::xep::register::RegistrationLimiter,
    /// Message archives (XEP-0313): the writer, archive ids, cached preferences.
    pub mam: crate::xep::mam::Mam,
    /// Verified XEP-0115 capabilities, for PEP's filtered notifications.
    pub caps: crate::xep::caps::Caps,
    /// Group chat rooms (XEP-0045) of the vhosts whose service was used.
    pub muc: crate::xep::muc::Muc,
    /// Held by every write of vhost data, so that freezing a vhost waits for them.
    pub writes: WriteGate,
    /// The SOCKS5 bytestreams proxy (XEP-0065): its port and the ends waiting in it.
    pub proxy: crate::xep::proxy::Proxy,
    /// When the current usage period started (`GET /v1/usage` starts the next).
    pub usage_period: Mutex<Instant>,
    /// Outgoing server-to-server links (federation, issue 10).
    pub s2s: Arc<crate::net::s2s_pool::Pool>,
    hosts: RwLock<HashMap<String, Arc<HostState>>>,
    /// One reload at a time, so an older read of the store never overwrites a newer one.
    reload_lock: tokio::sync::Mutex<()>,
    /// Vhosts whose stanzas are logged (the runtime debug switch).
    debug_hosts: RwLock<HashSet<String>>,
}

/// Settings the stanza handlers need, copied out of [`NodeSettings`].
pub struct Settings {
    pub node: NodeSettings,
    pub max_offline_per_account: i64,
}

impl Node {
    pub fn new(settings: NodeSettings, store: Store, certs: Arc<CertResolver>) -> Arc<Self> {
        let registrations = crate::xep::register::RegistrationLimiter::new(
            settings.limits.registrations_per_ip_per_hour,
        );
        let metrics = Metrics::new();
        let muc = crate::xep::muc::Muc::new(metrics.muc_rooms.clone());
        let mam = crate::xep::mam::Mam::start(
            store.clone(),
            crate::store::archive::WriterOptions {
                cache_kib: settings.limits.archive_cache_mib.saturating_mul(1024),
                nice: settings.limits.archive_writer_nice,
            },
            metrics.archive.clone(),
        );
        let s2s = crate::net::s2s_pool::Pool::new(&settings.limits, metrics.s2s.clone());
        Arc::new(Self {
            s2s,
            registrations,
            settings: Settings {
                node: settings,
                max_offline_per_account: 1000,
            },
            store,
            router: Router::default(),
            certs,
            metrics,
            mam,
            started: Instant::now(),
            auth_throttle: Default::default(),
            blocks: Default::default(),
            caps: Default::default(),
            muc,
            writes: WriteGate::default(),
            proxy: Default::default(),
            usage_period: Mutex::new(Instant::now()),
            hosts: RwLock::new(HashMap::new()),
            reload_lock: tokio::sync::Mutex::new(()),
            debug_hosts: RwLock::new(HashSet::new()),
        })
    }

    pub fn is_hosted(&self, domain: &str) -> bool {
        self.hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(domain)
    }

    /// A hosted domain's state.
    pub fn host(&self, domain: &str) -> Option<Arc<HostState>> {
        self.hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .cloned()
    }

    /// Whether `domain` is frozen for a move. Ask while holding a permit of `writes`, and
    /// write only if it is not.
    pub fn is_frozen(&self, domain: &str) -> bool {
        self.host(domain).is_some_and(|h| h.frozen)
    }

    /// How clients of `domain` are let in.
    pub fn access(&self, domain: &str) -> HostAccess {
        self.host(domain)
            .map_or(HostAccess::Unknown, |h| h.access.clone())
    }

    /// Every hosted domain, in no particular order.
    pub fn hosts(&self) -> Vec<(String, Arc<HostState>)> {
        self.hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(d, h)| (d.clone(), h.clone()))
            .collect()
    }

    /// The hosted domain `domain` belongs to: itself, or the vhost of a service under it
    /// (`conference.`, `upload.`, `proxy.`); None for a domain not served here.
    pub fn vhost_of(&self, domain: &str) -> Option<String> {
        if self.is_hosted(domain) {
            return Some(domain.to_string());
        }
        crate::xep::services::service_of(self, domain).map(|s| s.vhost)
    }

    /// Whether stanzas may pass between domains `a` and `b` (either may be hosted here or
    /// elsewhere): the federation policy of each hosted side (its spec's
    /// `features.federation` and `federation_allow`) must allow the other. A domain and
    /// its services are one; another vhost of this node counts like a remote server.
    pub fn federates(&self, a: &str, b: &str) -> bool {
        let (va, vb) = (self.vhost_of(a), self.vhost_of(b));
        let (base_a, base_b) = (va.as_deref().unwrap_or(a), vb.as_deref().unwrap_or(b));
        if base_a == base_b {
            return true;
        }
        let allows = |vhost: &Option<String>, other: &str| match vhost {
            None => true,
            Some(v) => self.host(v).is_none_or(|h| {
                h.policy
                    .as_ref()
                    .is_none_or(|p| federation_allows(&p.features, other))
            }),
        };
        allows(&va, base_b) && allows(&vb, base_a)
    }

    /// Whether this vhost's stanzas are logged.
    pub fn logs_stanzas(&self, domain: &str) -> bool {
        self.debug_hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(domain)
    }

    /// Loads the vhosts from the store and serves exactly those (certificates, policies
    /// and storage quotas included). Sessions of a vhost that is gone end with `host-gone`;
    /// those of a suspended or moved one with `policy-violation` or `see-other-host`. A
    /// vhost is marked frozen for a move only after the writes under way have finished.
    pub async fn reload_vhosts(&self) -> anyhow::Result<()> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let vhosts = self.store.vhosts().await?;
        let moves = self.store.vhost_moves().await?;
        self.certs.set_vhosts(&vhosts)?;
        let to_measure = self.store.meters.configure(vhosts.iter().map(|v| {
            let quota = v.policy.as_ref().and_then(|p| p.storage_quota_bytes);
            (v.domain.clone(), quota)
        }));
        for domain in to_measure {
            // A failed measurement leaves the count low until upkeep measures again.
            match self.store.measure_storage(&domain).await {
                Ok(bytes) => {
                    if let Some(meter) = self.store.meters.get(&domain) {
                        meter.set_used(bytes);
                        tracing::info!(vhost = %domain, stored_bytes = bytes, quota_bytes = ?meter.quota(), "storage quota applied");
                    }
                }
                Err(e) => {
                    tracing::warn!(vhost = %domain, error = format!("{e:#}"), "measuring a vhost's storage failed")
                }
            }
        }
        *self.debug_hosts.write().unwrap_or_else(|p| p.into_inner()) = vhosts
            .iter()
            .filter(|v| v.debug_log)
            .map(|v| v.domain.clone())
            .collect();
        let mut refused: Vec<(String, StreamError)> = Vec::new();
        // A vhost about to be frozen: no write may be under way while the hosts change.
        let _quiet = if moves.keys().any(|d| !self.is_frozen(d)) {
            Some(self.writes.quiet().await)
        } else {
            None
        };
        let removed: Vec<String> = {
            let mut hosts = self.hosts.write().unwrap_or_else(|p| p.into_inner());
            let mut next = HashMap::with_capacity(vhosts.len());
            for v in vhosts {
                let moving = moves.get(&v.domain);
                let redirect_to = moving.and_then(|to| to.as_deref());
                let access = access_while_moving(access_of(v.policy.as_ref()), redirect_to);
                let counters = match hosts.get(&v.domain) {
                    Some(old) => {
                        if old.access != access {
                            tracing::info!(vhost = %v.domain, ?access, "access changed");
                        }
                        old.counters.clone()
                    }
                    None => {
                        tracing::info!(vhost = %v.domain, ?access, "now serving");
                        Arc::default()
                    }
                };
                if let Some(error) = access.refusal()
                    && counters.sessions() > 0
                {
                    refused.push((v.domain.clone(), error));
                }
                next.insert(
                    v.domain,
                    Arc::new(HostState {
                        access,
                        policy: v.policy,
                        counters,
                        frozen: moving.is_some(),
                    }),
                );
            }
            let removed = hosts
                .keys()
                .filter(|d| !next.contains_key(*d))
                .cloned()
                .collect();
            *hosts = next;
            removed
        };
        // Sessions of a removed vhost end (RFC 6120 §4.9.3.9).
        for domain in &removed {
            tracing::info!(vhost = %domain, "no longer serving");
            self.blocks.forget_domain(domain);
            self.mam.forget_domain(domain);
            self.muc.forget_domain(domain);
            for s in self.router.of_domain(domain) {
                s.kick(StreamError::new(
                    "host-gone",
                    "This domain is no longer served here.",
                ));
            }
        }
        for (domain, error) in refused {
            let sessions = self.router.of_domain(&domain);
            tracing::info!(vhost = %domain, sessions = sessions.len(), condition = error.condition, "closing the sessions of a domain that no longer lets clients in");
            for s in sessions {
                s.kick(error.clone());
            }
        }
        Ok(())
    }
}

/// Parses one stanza stored as XML text (offline messages).
pub fn parse_stored(xml: &str) -> anyhow::Result<Element> {
    crate::proto::parser::parse_stanza(xml).map_err(|e| anyhow::anyhow!("stored stanza: {e}"))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// XEP-0082 date-time in UTC: `2026-11-26T09:00:00Z`.
pub fn format_utc(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A node on a fresh SQLite store for unit tests, not listening anywhere.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use tokio::sync::mpsc;

    use super::Node;
    use crate::{
        config::NodeSettings,
        control::spec,
        net::tls::CertResolver,
        proto::{element::Element, jid::Jid},
        router::{Delivery, SessionHandle},
        store::Store,
    };

    /// A node serving `spec` (a vhost spec as JSON), with the accounts `users` on it.
    pub async fn node_with_spec(
        spec: serde_json::Value,
        users: &[&str],
    ) -> (Arc<Node>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/node.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        let settings = NodeSettings {
            data_dir: dir.path().to_path_buf(),
            ..NodeSettings::default()
        };
        let certs = Arc::new(CertResolver::new(dir.path(), None).unwrap());
        let node = Node::new(settings, store, certs);
        let domain = apply_spec(&node, spec).await;
        for user in users {
            node.store
                .add_account(&domain, user, "a-password-1", 1)
                .await
                .unwrap();
        }
        (node, dir)
    }

    /// Applies a vhost spec (JSON) as the control API does; returns its domain.
    pub async fn apply_spec(node: &Node, spec: serde_json::Value) -> String {
        let domain = spec["domain"].as_str().unwrap().to_string();
        let valid = spec::validate(&domain, serde_json::from_value(spec).unwrap()).unwrap();
        node.store
            .apply_spec(&valid.domain, &valid.policy, &valid.stored_json, None)
            .await
            .unwrap();
        node.reload_vhosts().await.unwrap();
        valid.domain
    }

    /// A bound session of `jid` and what is delivered to it.
    pub fn bind(node: &Node, jid: &str) -> (Arc<SessionHandle>, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (node.router.bind(Jid::parse(jid).unwrap(), tx), rx)
    }

    /// The stanzas delivered so far.
    pub fn delivered(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Vec<Element> {
        let mut out = Vec::new();
        while let Ok(d) = rx.try_recv() {
            if let Delivery::Stanza(s) = d {
                out.push(*s);
            }
        }
        out
    }

    /// A stanza from XML text (in the client namespace).
    pub fn stanza(xml: &str) -> Element {
        super::parse_stored(xml).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_xep_0082_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_795_683_600), "2026-11-26T09:00:00Z");
    }
}
