//! Real XMPP servers written by others, Prosody and ejabberd from Debian's packages, as
//! federation peers for end-to-end tests: each runs as a child process of the test in a
//! temporary folder, configured entirely by the test (no `/etc`, no system service, no
//! outside network), on free loopback ports, with a certificate issued by the test's
//! [`TestCa`] for its own domain.
//!
//! Servers find each other's s2s port through an [`S2sMap`], the test's stand-in for DNS:
//!
//! - **Prosody** 0.12 has no static host map and its resolver reads only
//!   `/etc/resolv.conf` (port 53), so the fixture loads a small module of its own
//!   (`mod_rookery_test_s2s_map`, written into the server's folder) that replaces
//!   `net.resolvers.service.new`, the SRV resolver `mod_s2s` calls for every new outgoing
//!   connection, with one that answers `127.0.0.1:<port>` from the map's file (read on
//!   every new connection, so the map may grow after Prosody started) and nothing for
//!   domains the map lacks (never the real DNS).
//! - **ejabberd** resolves with Erlang's `inet_res`, which `ERL_INETRC` points at a
//!   nameserver of our choosing on any port: the map runs a tiny authoritative DNS
//!   responder on a loopback UDP port that answers `_xmpp-server._tcp.<domain>` SRV
//!   records (the mapped port, and the target `127.0.0.1`: ejabberd resolves SRV targets
//!   and A records with the C library, which only knows `/etc/hosts`, so the target must
//!   be an address literal), `<domain>` A records (127.0.0.1), and NXDOMAIN for
//!   everything else. Without it, ejabberd's SRV query fails with `timeout` and it gives
//!   up instead of falling back to the A record.
//!
//! A Rookery node in the same test gets the same map as its static host map
//! ([`S2sMap::entries`]), and registers its own s2s port with [`S2sMap::add`].
//!
//! Authentication of s2s links ([`S2sAuth`]): with `Certificates` each server trusts the
//! test CA and allows nothing but SASL EXTERNAL (XEP-0178): Prosody with
//! `s2s_secure_auth = true` and no dialback module, ejabberd without
//! `mod_s2s_dialback`. With `Dialback` each trusts only a stranger CA that signed nobody's
//! certificate, so no peer certificate verifies, and Server Dialback (XEP-0220) is the
//! only way in (TLS stays required).
//!
//! Both run as root (CI does): Prosody with `run_as_root = true`; ejabberd is started with
//! `erl` directly rather than `ejabberdctl` (which switches to the `ejabberd` user) and
//! without Erlang distribution (no node name, no cookie, no epmd), so instances running
//! side by side cannot collide. Its admin commands go through `mod_http_api` on a loopback
//! port instead ([`PeerServer::ejabberd_api`]).
//!
//! Logs stay in the server's folder ([`PeerServer::log`]) and are printed when a test
//! panics while the fixture is alive; `TEST_LOG=1` also shows the processes' own output.
//!
//! A Rookery node against a peer, in outline (`tests/tests/e2e/federation_peers.rs` does
//! the same with two peers):
//!
//! ```text
//! let ca = TestCa::new("…")?;
//! let map = S2sMap::new().await?;
//! let prosody = PeerServer::prosody("prosody.test", &ca, &map, S2sAuth::Certificates).await?;
//! prosody.register_test_users(&["bob"]).await?;
//! // The node: a certificate for its vhost from `ca` (<data_dir>/certs/<domain>.crt/.key),
//! // the test CA trusted for s2s, `map.entries()` as its static host map; then
//! map.add("rookery.test", node_s2s_port)?;
//! federation_scenario(&node_endpoint, &prosody.endpoint(), Duration::from_secs(15)).await?;
//! prosody.wait_inbound_s2s_auth("rookery.test", S2sAuth::Certificates, limit).await?;
//! ```
//!
//! Start every server and fill the map before any stanza crosses: ejabberd remembers a
//! failed outgoing connection and bounces stanzas to that domain for a minute or more.
//! Both peers ask for the initiating server's certificate on incoming links (TLS client
//! authentication) and offer SASL EXTERNAL only when it verifies for the stream's `from`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::{
    net::UdpSocket,
    process::{Child, Command},
    task::JoinHandle,
};

use crate::{
    node::run_python,
    process::{free_loopback_port, test_log},
    test_ca::TestCa,
};

/// How long a server may take to listen on all its ports after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one `prosodyctl` or HTTP API call may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// The Prosody module that maps domains to loopback s2s ports (see the module's docs).
const PROSODY_MAP_MODULE: &str = "rookery_test_s2s_map";

/// Which server a [`PeerServer`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerKind {
    Prosody,
    Ejabberd,
}

/// How a peer authenticates s2s links, in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S2sAuth {
    /// Trust the test CA; SASL EXTERNAL (XEP-0178) only, no dialback.
    Certificates,
    /// Trust no peer's certificate; Server Dialback (XEP-0220) only.
    Dialback,
}

/// Where an XMPP client reaches a server: its c2s port (STARTTLS), its domain and a CA
/// file that verifies its certificate for that domain. A Rookery node's is
/// `127.0.0.1`, `c2s_port`, the vhost and the CA that issued the vhost's certificate.
#[derive(Debug, Clone)]
pub struct XmppEndpoint {
    pub host: String,
    pub port: u16,
    pub domain: String,
    pub ca_file: PathBuf,
}

// ---------------------------------------------------------------------------------------
// The host map.

/// The test's stand-in for DNS: which loopback port serves s2s for each test domain. It is
/// kept in a file (for Prosody's module) and served by a DNS responder on a loopback UDP
/// port (for ejabberd); both reflect every [`S2sMap::add`] at once. Drop it after the
/// servers that use it.
pub struct S2sMap {
    records: Arc<Mutex<BTreeMap<String, u16>>>,
    dns_addr: SocketAddr,
    dns_task: JoinHandle<()>,
    dir: tempfile::TempDir,
}

impl S2sMap {
    /// An empty map with its DNS responder listening.
    pub async fn new() -> anyhow::Result<S2sMap> {
        let dir = tempfile::Builder::new()
            .prefix("rookery-test-s2s-map-")
            .tempdir()
            .context("creating the s2s map's folder")?;
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .context("binding the test DNS responder")?;
        let dns_addr = socket.local_addr()?;
        let records = Arc::new(Mutex::new(BTreeMap::new()));
        let dns_task = tokio::spawn(serve_dns(socket, records.clone()));
        let map = S2sMap {
            records,
            dns_addr,
            dns_task,
            dir,
        };
        map.write_file()?;
        Ok(map)
    }

    /// Maps `domain` to `127.0.0.1:<s2s_port>` (replacing an earlier mapping).
    pub fn add(&self, domain: &str, s2s_port: u16) -> anyhow::Result<()> {
        anyhow::ensure!(
            !domain.is_empty() && !domain.contains(char::is_whitespace),
            "bad domain {domain:?} for the s2s map"
        );
        self.lock().insert(domain.to_ascii_lowercase(), s2s_port);
        self.write_file()
    }

    /// Every mapping, `(domain, s2s port)`, for a Rookery node's static host map.
    pub fn entries(&self) -> Vec<(String, u16)> {
        self.lock().iter().map(|(d, p)| (d.clone(), *p)).collect()
    }

    /// Where the DNS responder listens (UDP, 127.0.0.1).
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns_addr
    }

    /// The map as a file, one `<domain> <port>` a line (what Prosody's module reads).
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("s2s-map.txt")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u16>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Rewrites the file whole and renames it into place, so a reader never sees half.
    fn write_file(&self) -> anyhow::Result<()> {
        let text: String = self
            .lock()
            .iter()
            .map(|(d, p)| format!("{d} {p}\n"))
            .collect();
        let tmp = self.dir.path().join("s2s-map.txt.new");
        std::fs::write(&tmp, text).context("writing the s2s map")?;
        std::fs::rename(&tmp, self.file()).context("replacing the s2s map")
    }
}

impl Drop for S2sMap {
    fn drop(&mut self) {
        self.dns_task.abort();
    }
}

async fn serve_dns(socket: UdpSocket, records: Arc<Mutex<BTreeMap<String, u16>>>) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let answer = {
            let records = records
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            dns_answer(&buf[..n], &records)
        };
        if let Some(answer) = answer {
            let _ = socket.send_to(&answer, from).await;
        }
    }
}

/// The target of every SRV record: the name `127.0.0.1` (labels "127", "0", "0", "1").
/// ejabberd resolves SRV targets with the C library's `getaddrinfo` (`net:getaddrinfo`),
/// which reads `/etc/hosts` and `/etc/resolv.conf` and never asks this responder; an
/// address literal is the one target it resolves without them. Certificates are still
/// checked against the domain, not the target (RFC 6125).
const SRV_TARGET: &[u8] = b"\x03127\x010\x010\x011\x00";

const DNS_TYPE_A: u16 = 1;
const DNS_TYPE_SRV: u16 = 33;
const DNS_CLASS_IN: u16 = 1;
const DNS_RCODE_NXDOMAIN: u8 = 3;
const DNS_RCODE_NOTIMP: u8 = 4;

/// The answer to one DNS query (RFC 1035 4.1) from the map: an SRV record for
/// `_xmpp-server._tcp.<domain>` (target [`SRV_TARGET`]), an A record (127.0.0.1) for `<domain>`, no data for other
/// types of those names, NXDOMAIN for other names. None for what is no query at all.
fn dns_answer(query: &[u8], records: &BTreeMap<String, u16>) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let is_response = header[2] & 0x80 != 0;
    let question_count = u16::from_be_bytes([header[4], header[5]]);
    if is_response {
        return None;
    }
    let opcode = (header[2] >> 3) & 0x0f;
    let mut reply = header.to_vec();
    // QR, the query's opcode, AA, the query's RD; no RA.
    reply[2] = 0x80 | (opcode << 3) | 0x04 | (header[2] & 0x01);
    reply[3] = 0;
    reply[6..12].fill(0);
    if opcode != 0 || question_count != 1 {
        reply[3] = DNS_RCODE_NOTIMP;
        reply[4..6].fill(0);
        return Some(reply);
    }

    let mut pos = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*query.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // no compression in a question
        }
        labels.push(String::from_utf8_lossy(query.get(pos..pos + len)?).to_ascii_lowercase());
        pos += len;
    }
    let qtype = u16::from_be_bytes([*query.get(pos)?, *query.get(pos + 1)?]);
    let qclass = u16::from_be_bytes([*query.get(pos + 2)?, *query.get(pos + 3)?]);
    reply.extend_from_slice(query.get(12..pos + 4)?);

    let name = labels.join(".");
    let srv_of = name
        .strip_prefix("_xmpp-server._tcp.")
        .and_then(|domain| records.get(domain).copied());
    let answer: Option<(u16, Vec<u8>)> = if let Some(port) = srv_of {
        (qtype == DNS_TYPE_SRV && qclass == DNS_CLASS_IN).then(|| {
            let mut rdata = vec![0, 0, 0, 0]; // priority 0, weight 0
            rdata.extend_from_slice(&port.to_be_bytes());
            rdata.extend_from_slice(SRV_TARGET);
            (DNS_TYPE_SRV, rdata)
        })
    } else if records.contains_key(&name) {
        (qtype == DNS_TYPE_A && qclass == DNS_CLASS_IN).then(|| (DNS_TYPE_A, vec![127, 0, 0, 1]))
    } else {
        reply[3] = DNS_RCODE_NXDOMAIN;
        None
    };
    if let Some((rtype, rdata)) = answer {
        reply[7] = 1; // ANCOUNT
        reply.extend_from_slice(&[0xc0, 0x0c]); // the owner: the question's name
        reply.extend_from_slice(&rtype.to_be_bytes());
        reply.extend_from_slice(&DNS_CLASS_IN.to_be_bytes());
        reply.extend_from_slice(&60u32.to_be_bytes());
        reply.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        reply.extend_from_slice(&rdata);
    }
    Some(reply)
}

// ---------------------------------------------------------------------------------------
// The servers.

/// A running Prosody or ejabberd serving one domain; killed when dropped.
pub struct PeerServer {
    pub kind: PeerKind,
    pub domain: String,
    pub c2s_port: u16,
    pub s2s_port: u16,
    /// ejabberd's `mod_http_api` port (None for Prosody).
    pub api_port: Option<u16>,
    /// The test CA's certificate: verifies this server's certificate (c2s and s2s).
    pub ca_file: PathBuf,
    /// How its s2s links authenticate.
    pub auth: S2sAuth,
    /// From spawning the process until it listened on every port.
    pub started_in: Duration,
    log_file: PathBuf,
    output_file: PathBuf,
    config_file: PathBuf,
    child: Child,
    // Dropped after the child (fields drop in order).
    dir: tempfile::TempDir,
}

impl PeerServer {
    /// Starts Prosody for `domain` with a certificate from `ca`, finding peers through
    /// `map`, to which it adds its own s2s port.
    pub async fn prosody(
        domain: &str,
        ca: &TestCa,
        map: &S2sMap,
        auth: S2sAuth,
    ) -> anyhow::Result<PeerServer> {
        Self::start(PeerKind::Prosody, domain, ca, map, auth).await
    }

    /// Starts ejabberd for `domain` with a certificate from `ca`, finding peers through
    /// `map`, to which it adds its own s2s port.
    pub async fn ejabberd(
        domain: &str,
        ca: &TestCa,
        map: &S2sMap,
        auth: S2sAuth,
    ) -> anyhow::Result<PeerServer> {
        Self::start(PeerKind::Ejabberd, domain, ca, map, auth).await
    }

    /// Starts `kind` for `domain` (see [`PeerServer::prosody`]); when another process took
    /// one of its ports between picking and binding, tries again on other ports.
    pub async fn start(
        kind: PeerKind,
        domain: &str,
        ca: &TestCa,
        map: &S2sMap,
        auth: S2sAuth,
    ) -> anyhow::Result<PeerServer> {
        let mut attempt = 1;
        loop {
            let started = Instant::now();
            let mut peer = Self::launch(kind, domain, ca, map, auth).await?;
            match peer.wait_ready().await {
                Ok(()) => {
                    peer.started_in = started.elapsed();
                    return Ok(peer);
                }
                Err(error) if attempt < 3 && peer.lost_a_port() => {
                    eprintln!("retrying {kind:?} for {domain} on other ports: {error:#}");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Writes the configuration for new ports and spawns the server, without waiting.
    async fn launch(
        kind: PeerKind,
        domain: &str,
        ca: &TestCa,
        map: &S2sMap,
        auth: S2sAuth,
    ) -> anyhow::Result<PeerServer> {
        anyhow::ensure!(
            !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "bad peer domain {domain:?}: letters, digits, dots and hyphens only"
        );
        let name = match kind {
            PeerKind::Prosody => "prosody",
            PeerKind::Ejabberd => "ejabberd",
        };
        let dir = tempfile::Builder::new()
            .prefix(&format!("rookery-test-{name}-"))
            .tempdir()
            .with_context(|| format!("creating {name}'s folder"))?;
        let root = dir.path();
        let ca_file = root.join("ca.crt");
        ca.write_cert(&ca_file)?;
        // What the server trusts on s2s links: the test CA, or a CA nobody's
        // certificate comes from.
        let trust_file = match auth {
            S2sAuth::Certificates => ca_file.clone(),
            S2sAuth::Dialback => {
                let path = root.join("stranger-ca.crt");
                TestCa::new("Stranger CA")?.write_cert(&path)?;
                path
            }
        };
        let cert = ca.issue(&[domain])?;
        let c2s_port = free_loopback_port()?;
        let s2s_port = free_loopback_port()?;
        map.add(domain, s2s_port)?;

        let (mut command, config_file, log_file, api_port) = match kind {
            PeerKind::Prosody => {
                cert.write_pair(root, domain)?;
                let config = prosody_config(&ProsodyConfig {
                    root,
                    domain,
                    c2s_port,
                    s2s_port,
                    trust_file: &trust_file,
                    map_file: &map.file(),
                    auth,
                });
                let config_file = root.join("prosody.cfg.lua");
                std::fs::write(&config_file, config)?;
                std::fs::create_dir_all(root.join("plugins"))?;
                std::fs::create_dir_all(root.join("data"))?;
                std::fs::create_dir_all(root.join("certs"))?;
                std::fs::write(
                    root.join("plugins")
                        .join(format!("mod_{PROSODY_MAP_MODULE}.lua")),
                    PROSODY_MAP_MODULE_SOURCE,
                )?;
                let mut command = Command::new(prosody_binary("prosody")?);
                command.arg("--config").arg(&config_file).arg("-F");
                (command, config_file, root.join("prosody.log"), None)
            }
            PeerKind::Ejabberd => {
                let pem = root.join("ejabberd.pem");
                std::fs::write(&pem, cert.combined_pem())?;
                let api_port = free_loopback_port()?;
                let config = ejabberd_config(&EjabberdConfig {
                    domain,
                    c2s_port,
                    s2s_port,
                    api_port,
                    cert_file: &pem,
                    trust_file: &trust_file,
                    auth,
                });
                let config_file = root.join("ejabberd.yml");
                std::fs::write(&config_file, config)?;
                let inetrc = root.join("inetrc");
                std::fs::write(&inetrc, ejabberd_inetrc(map.dns_addr()))?;
                std::fs::create_dir_all(root.join("logs"))?;
                std::fs::create_dir_all(root.join("spool"))?;
                let mut command = Command::new("erl");
                command
                    .args(["-noinput", "-noshell", "-mnesia", "dir"])
                    .arg(format!("\"{}\"", root.join("spool").display()))
                    .args(["-s", "ejabberd"])
                    .env("ERL_LIBS", ejabberd_erl_libs()?)
                    .env("EJABBERD_CONFIG_PATH", &config_file)
                    .env("EJABBERD_LOG_PATH", root.join("logs").join("ejabberd.log"))
                    .env("ERL_INETRC", &inetrc)
                    .env("ERL_CRASH_DUMP", root.join("logs").join("erl_crash.dump"))
                    .env("HOME", root);
                (
                    command,
                    config_file,
                    root.join("logs").join("ejabberd.log"),
                    Some(api_port),
                )
            }
        };

        let output_file = root.join("output.log");
        command
            .current_dir(root)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if test_log() {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            let out = std::fs::File::create(&output_file)?;
            command.stdout(out.try_clone()?).stderr(out);
        }
        let child = command.spawn().with_context(|| {
            format!("starting {name} (install Debian's {name}: scripts/test.sh does)")
        })?;
        Ok(PeerServer {
            kind,
            domain: domain.to_owned(),
            c2s_port,
            s2s_port,
            api_port,
            ca_file,
            auth,
            started_in: Duration::ZERO,
            log_file,
            output_file,
            config_file,
            child,
            dir,
        })
    }

    /// Waits until the server's log says it listens on each of its ports. (A port that
    /// answers is no proof: another process may have taken it.)
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let needles: Vec<String> = match self.kind {
            PeerKind::Prosody => [("c2s", self.c2s_port), ("s2s", self.s2s_port)]
                .iter()
                .map(|(service, port)| {
                    format!("Activated service '{service}' on [127.0.0.1]:{port}")
                })
                .collect(),
            PeerKind::Ejabberd => [Some(self.c2s_port), Some(self.s2s_port), self.api_port]
                .into_iter()
                .flatten()
                .map(|port| format!("Start accepting TCP connections at 127.0.0.1:{port} "))
                .collect(),
        };
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{:?} for {} exited with {status} before it listened{}",
                    self.kind,
                    self.domain,
                    self.diagnostics()
                );
            }
            if self.lost_a_port() {
                bail!(
                    "{:?} for {} could not listen on one of its ports{}",
                    self.kind,
                    self.domain,
                    self.diagnostics()
                );
            }
            let log = self.log();
            if needles.iter().all(|needle| log.contains(needle.as_str())) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{:?} for {} did not log that it listens ({needles:?}) within \
                     {START_TIMEOUT:?}{}",
                    self.kind,
                    self.domain,
                    self.diagnostics()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the server said it could not bind one of its ports (taken by another
    /// process after the test picked it).
    fn lost_a_port(&self) -> bool {
        let output = std::fs::read_to_string(&self.output_file).unwrap_or_default();
        [self.log(), output].iter().any(|text| {
            let text = text.to_ascii_lowercase();
            // Prosody's portmanager: "Failed to open server port 1234 on 127.0.0.1, this
            // port is in use by another application"; ejabberd's listener: "Failed to open
            // socket at 127.0.0.1:1234 for ejabberd_c2s: address already in use".
            text.contains("failed to open server port")
                || text.contains("eaddrinuse")
                || text.contains("address already in use")
        })
    }

    /// Creates the account `user@<domain>` with `password`.
    pub async fn register(&self, user: &str, password: &str) -> anyhow::Result<()> {
        match self.kind {
            PeerKind::Prosody => {
                let mut command = Command::new(prosody_binary("prosodyctl")?);
                command
                    .arg("--config")
                    .arg(&self.config_file)
                    .args(["register", user, &self.domain, password])
                    .current_dir(self.dir.path())
                    .stdin(Stdio::null())
                    .kill_on_drop(true);
                let out = tokio::time::timeout(COMMAND_TIMEOUT, command.output())
                    .await
                    .context("prosodyctl register took too long")?
                    .context("running prosodyctl")?;
                anyhow::ensure!(
                    out.status.success(),
                    "prosodyctl register {user} {} failed: {}{}",
                    self.domain,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(())
            }
            PeerKind::Ejabberd => {
                self.ejabberd_api(
                    "register",
                    serde_json::json!({"user": user, "host": self.domain, "password": password}),
                )
                .await?;
                Ok(())
            }
        }
    }

    /// Creates `alice` and `bob` (and any of `users`) with the test passwords
    /// `pass-<user>-1` that the Python scenarios use.
    pub async fn register_test_users(&self, users: &[&str]) -> anyhow::Result<()> {
        for user in users {
            self.register(user, &format!("pass-{user}-1")).await?;
        }
        Ok(())
    }

    /// Calls ejabberd's admin command `command` (`mod_http_api`, loopback only) with the
    /// JSON `args`, and returns its JSON answer: `incoming_s2s_number`,
    /// `outgoing_s2s_number`, `connected_users`, `registered_users`, …
    pub async fn ejabberd_api(
        &self,
        command: &str,
        args: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let port = self
            .api_port
            .context("admin commands over HTTP are ejabberd's")?;
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .no_proxy()
            .build()?;
        let response = http
            .post(format!("http://127.0.0.1:{port}/api/{command}"))
            .json(&args)
            .send()
            .await
            .with_context(|| format!("calling ejabberd's {command}"))?;
        let status = response.status();
        let body = response.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "ejabberd's {command} answered {status}: {body}"
        );
        serde_json::from_str(&body).with_context(|| format!("ejabberd's {command} said {body}"))
    }

    /// Where clients reach this server, for [`federation_scenario`].
    pub fn endpoint(&self) -> XmppEndpoint {
        XmppEndpoint {
            host: "127.0.0.1".to_owned(),
            port: self.c2s_port,
            domain: self.domain.clone(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// The server's log (Prosody: debug level; ejabberd: info).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// The server's log file, in its folder.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server's folder (configuration, certificates, data, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The line of this server's log saying it accepted an incoming s2s link from
    /// `remote` authenticated with `auth`, if there is one.
    pub fn inbound_s2s_auth_line(&self, remote: &str, auth: S2sAuth) -> Option<String> {
        let remote = remote.to_ascii_lowercase();
        let needle = match (self.kind, auth) {
            // Logged by the fixture's module on the event mod_saslauth and mod_dialback
            // fire once a link is authenticated.
            (PeerKind::Prosody, S2sAuth::Certificates) => {
                format!("s2s map: incoming s2s from {remote} authenticated by EXTERNAL")
            }
            (PeerKind::Prosody, S2sAuth::Dialback) => {
                format!("s2s map: incoming s2s from {remote} authenticated by dialback")
            }
            (PeerKind::Ejabberd, S2sAuth::Certificates) => format!(
                "Accepted inbound s2s EXTERNAL authentication {remote} -> {}",
                self.domain
            ),
            (PeerKind::Ejabberd, S2sAuth::Dialback) => format!(
                "Accepted inbound s2s dialback authentication {remote} -> {}",
                self.domain
            ),
        };
        self.log()
            .lines()
            .find(|line| line.contains(&needle))
            .map(str::to_owned)
    }

    /// Waits (at most `limit`) for [`PeerServer::inbound_s2s_auth_line`].
    pub async fn wait_inbound_s2s_auth(
        &self,
        remote: &str,
        auth: S2sAuth,
        limit: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(line) = self.inbound_s2s_auth_line(remote, auth) {
                return Ok(line);
            }
            if Instant::now() > deadline {
                bail!(
                    "{:?} ({}) logged no inbound s2s link from {remote} authenticated by \
                     {auth:?} within {limit:?}{}",
                    self.kind,
                    self.domain,
                    self.diagnostics()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The end of the server's log and output, for error messages.
    pub fn diagnostics(&self) -> String {
        let mut text = String::new();
        for (what, path) in [("log", &self.log_file), ("output", &self.output_file)] {
            let content = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(150)..].join("\n");
            let _ = write!(
                text,
                "\n--- {:?} {what} ({}) ---\n{tail}",
                self.kind,
                path.display()
            );
        }
        text
    }
}

impl Drop for PeerServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

/// The arguments of `tests/python/peer_federation.py` for `a` and `b`.
fn endpoint_args(a: &XmppEndpoint, b: &XmppEndpoint) -> Vec<String> {
    [a, b]
        .iter()
        .flat_map(|e| {
            [
                e.host.clone(),
                e.port.to_string(),
                e.domain.clone(),
                e.ca_file.display().to_string(),
            ]
        })
        .collect()
}

/// The steps `peer_federation.py` reports when all goes well.
pub const FEDERATION_STEPS: &[&str] = &[
    "alice logs in",
    "bob logs in",
    "alice->bob subscription request arrives",
    "alice->bob subscription approval arrives",
    "alice sees bob online",
    "bob->alice subscription request arrives",
    "bob->alice subscription approval arrives",
    "bob sees alice online",
    "alice's roster has bob as both",
    "bob's roster has alice as both",
    "alice sees bob's new status",
    "message alice->bob",
    "message bob->alice",
    "alice sees bob go offline",
];

/// Runs `tests/python/peer_federation.py`: alice@`a` and bob@`b` (accounts with the test
/// passwords, see [`PeerServer::register_test_users`]) subscribe to each other, see each
/// other's presence and exchange messages, each step bounded by `step_timeout`. Returns
/// what it printed when every step passed; an error with its output otherwise.
pub async fn federation_scenario(
    a: &XmppEndpoint,
    b: &XmppEndpoint,
    step_timeout: Duration,
) -> anyhow::Result<String> {
    let mut args = endpoint_args(a, b);
    args.push(step_timeout.as_secs().max(1).to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Every step waits at most step_timeout, and there are fewer than 20 waits.
    let out = run_python("peer_federation.py", &args, step_timeout * 20).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let missing: Vec<&str> = FEDERATION_STEPS
        .iter()
        .copied()
        .filter(|step| !stdout.contains(&format!("ok {step}\n")))
        .collect();
    if !out.status.success() || !missing.is_empty() {
        bail!(
            "peer_federation.py {a_domain} <-> {b_domain} failed ({status}; missing: \
             {missing:?}):\n{stdout}\n--- stderr ---\n{stderr}",
            a_domain = a.domain,
            b_domain = b.domain,
            status = out.status,
            stderr = String::from_utf8_lossy(&out.stderr),
        );
    }
    Ok(stdout)
}

// ---------------------------------------------------------------------------------------
// Configuration files.

/// `/usr/bin/<name>` for Prosody's programs (`PROSODY_BIN_DIR` names another folder).
fn prosody_binary(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("PROSODY_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin"));
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: install Debian's prosody (scripts/test.sh does)",
            path.display()
        );
    }
    Ok(path)
}

/// The folder holding ejabberd's Erlang applications (`ERL_LIBS`), as Debian's
/// `ejabberdctl` sets it: `/usr/lib/<multiarch triple>`.
fn ejabberd_erl_libs() -> anyhow::Result<PathBuf> {
    for entry in std::fs::read_dir("/usr/lib").context("reading /usr/lib")? {
        let dir = entry?.path();
        let Ok(children) = std::fs::read_dir(&dir) else {
            continue;
        };
        for child in children.flatten() {
            let name = child.file_name();
            if name.to_string_lossy().starts_with("ejabberd-")
                && child.path().join("ebin").join("ejabberd.app").is_file()
            {
                return Ok(dir);
            }
        }
    }
    bail!(
        "ejabberd's Erlang application is missing: install Debian's ejabberd (scripts/test.sh does)"
    )
}

/// A Lua string literal.
fn lua_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

struct ProsodyConfig<'a> {
    root: &'a Path,
    domain: &'a str,
    c2s_port: u16,
    s2s_port: u16,
    trust_file: &'a Path,
    map_file: &'a Path,
    auth: S2sAuth,
}

fn prosody_config(c: &ProsodyConfig<'_>) -> String {
    let path = |p: &Path| lua_string(&p.display().to_string());
    let root = c.root;
    let (secure_auth, dialback) = match c.auth {
        S2sAuth::Certificates => ("true", ""),
        S2sAuth::Dialback => ("false", " \"dialback\";"),
    };
    format!(
        r#"-- Written by the Rookery test harness (tests/src/peers.rs).
run_as_root = true -- CI runs as root; nothing here is shared with other users
pidfile = {pidfile}
data_path = {data}
plugin_paths = {{ {plugins} }}
certificates = {certs}
interfaces = {{ "127.0.0.1" }}
local_interfaces = {{ "127.0.0.1" }}
use_ipv6 = false
c2s_ports = {{ {c2s} }}
s2s_ports = {{ {s2s} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping";{dialback} "{map_module}" }}
{map_module}_file = {map_file}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure_auth}
s2s_timeout = 20
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = {log} }} }}
ssl = {{ certificate = {cert}; key = {key}; cafile = {trust} }}
VirtualHost {domain}
"#,
        pidfile = path(&root.join("prosody.pid")),
        data = path(&root.join("data")),
        plugins = path(&root.join("plugins")),
        certs = path(&root.join("certs")),
        c2s = c.c2s_port,
        s2s = c.s2s_port,
        map_module = PROSODY_MAP_MODULE,
        map_file = path(c.map_file),
        log = path(&root.join("prosody.log")),
        cert = path(&root.join(format!("{}.crt", c.domain))),
        key = path(&root.join(format!("{}.key", c.domain))),
        trust = path(c.trust_file),
        domain = lua_string(c.domain),
    )
}

/// Prosody's module for the test's s2s map: see the module docs at the top of this file.
const PROSODY_MAP_MODULE_SOURCE: &str = r#"-- Written by the Rookery test harness (tests/src/peers.rs): outgoing s2s connections
-- go to 127.0.0.1 and the port the test's map file names for the remote domain, never
-- to the real DNS. mod_s2s builds its resolver with net.resolvers.service.new(...) for
-- every new connection; replacing that function in the shared module table reroutes it.
-- It also logs how each s2s link was authenticated (which Prosody itself logs only for
-- some mechanisms and directions), for the test to check.
local service = require "net.resolvers.service";
local manual = require "net.resolvers.manual";
local map_file = module:get_option_string("rookery_test_s2s_map_file");

local function port_of(domain)
	local file = io.open(map_file);
	if not file then return nil; end
	for line in file:lines() do
		local name, port = line:match("^(%S+)%s+(%d+)$");
		if name == domain then
			file:close();
			return tonumber(port);
		end
	end
	file:close();
	return nil;
end

local original_new = service.rookery_original_new or service.new;
service.rookery_original_new = original_new;
service.new = function (hostname, service_name, proto, extra)
	local port = port_of(hostname:lower());
	local resolver;
	if port and service_name == "xmpp-server" then
		module:log("info", "s2s map: %s is at 127.0.0.1:%d", hostname, port);
		resolver = manual.new({ { proto .. "4", "127.0.0.1", port, extra } }, proto, extra);
	else
		-- No direct TLS (xmpps-server) in tests, and no domain outside the map.
		resolver = manual.new({}, proto, extra);
		if not port then
			module:log("info", "s2s map: %s is not in %s", hostname, map_file);
			resolver.last_error = "not in the test's s2s map";
		end
	end
	return resolver;
end

module:hook("s2s-authenticated", function (event)
	local session = event.session;
	module:log("info", "s2s map: %s s2s %s %s authenticated by %s", session.direction,
		session.direction == "incoming" and "from" or "to", event.host, event.mechanism);
end, 10);

function module.unload()
	service.new = original_new;
end
"#;

struct EjabberdConfig<'a> {
    domain: &'a str,
    c2s_port: u16,
    s2s_port: u16,
    api_port: u16,
    cert_file: &'a Path,
    trust_file: &'a Path,
    auth: S2sAuth,
}

/// A YAML string (JSON's syntax is YAML's).
fn yaml_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn ejabberd_config(c: &EjabberdConfig<'_>) -> String {
    let path = |p: &Path| yaml_string(&p.display().to_string());
    // Without mod_s2s_dialback, SASL EXTERNAL is the only way to authenticate a link.
    let dialback = match c.auth {
        S2sAuth::Certificates => "",
        S2sAuth::Dialback => "  mod_s2s_dialback: {}\n",
    };
    format!(
        r#"# Written by the Rookery test harness (tests/src/peers.rs).
hosts: [{domain}]
loglevel: info
log_rotate_count: 0
certfiles: [{cert}]
# What verifies the certificates of s2s peers.
ca_file: {trust}
listen:
  - port: {c2s}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls_required: true
  - port: {s2s}
    ip: "127.0.0.1"
    module: ejabberd_s2s_in
  - port: {api}
    ip: "127.0.0.1"
    module: ejabberd_http
    request_handlers:
      /api: mod_http_api
s2s_use_starttls: required
s2s_access: all
outgoing_s2s_families: [ipv4]
s2s_dns_timeout: 3
s2s_dns_retries: 1
s2s_timeout: 20
auth_method: internal
default_db: mnesia
api_permissions:
  "loopback admin":
    from: [mod_http_api]
    who:
      ip: 127.0.0.1/8
    what: "*"
modules:
  mod_roster: {{}}
  mod_disco: {{}}
  mod_ping: {{}}
  mod_http_api: {{}}
{dialback}"#,
        domain = yaml_string(c.domain),
        cert = path(c.cert_file),
        trust = path(c.trust_file),
        c2s = c.c2s_port,
        s2s = c.s2s_port,
        api = c.api_port,
    )
}

/// Erlang's resolver configuration (`ERL_INETRC`): names come from the test's DNS
/// responder only; no `/etc/resolv.conf`, no `/etc/hosts`.
fn ejabberd_inetrc(dns: SocketAddr) -> String {
    let ip = match dns.ip() {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{{{a},{b},{c},{d}}}")
        }
        std::net::IpAddr::V6(_) => "{127,0,0,1}".to_owned(),
    };
    format!(
        "%% Written by the Rookery test harness (tests/src/peers.rs).\n\
         {{resolv_conf, \"\"}}.\n\
         {{hosts_file, \"\"}}.\n\
         {{lookup, [dns]}}.\n\
         {{nameserver, {ip}, {port}}}.\n\
         {{timeout, 1000}}.\n\
         {{retry, 2}}.\n",
        port = dns.port()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&DNS_CLASS_IN.to_be_bytes());
        q
    }

    fn records() -> BTreeMap<String, u16> {
        BTreeMap::from([("peer.test".to_owned(), 23456)])
    }

    #[test]
    fn srv_records_name_the_mapped_port_and_domain() {
        let q = query(7, "_xmpp-server._tcp.PEER.test", DNS_TYPE_SRV);
        let a = dns_answer(&q, &records()).unwrap();
        assert_eq!(&a[..2], &[0, 7]);
        assert_eq!(a[2] & 0x80, 0x80, "a response");
        assert_eq!(a[3] & 0x0f, 0, "NOERROR");
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1, "one answer");
        let rr = &a[q.len()..];
        assert_eq!(&rr[..2], &[0xc0, 0x0c]);
        assert_eq!(u16::from_be_bytes([rr[2], rr[3]]), DNS_TYPE_SRV);
        let rdata = &rr[12..];
        assert_eq!(u16::from_be_bytes([rdata[4], rdata[5]]), 23456);
        assert_eq!(&rdata[6..], b"\x03127\x010\x010\x011\x00");
    }

    #[test]
    fn a_records_are_loopback_and_unknown_names_do_not_exist() {
        let q = query(8, "peer.test", DNS_TYPE_A);
        let a = dns_answer(&q, &records()).unwrap();
        assert_eq!(u16::from_be_bytes([a[6], a[7]]), 1);
        assert_eq!(&a[a.len() - 4..], &[127, 0, 0, 1]);

        let q = query(9, "peer.test", 28); // AAAA: the name exists, no data
        let a = dns_answer(&q, &records()).unwrap();
        assert_eq!((a[3] & 0x0f, a[7]), (0, 0));

        for name in [
            "other.test",
            "_xmpps-server._tcp.peer.test",
            "_xmpp-server._tcp.other.test",
        ] {
            let q = query(10, name, DNS_TYPE_SRV);
            let a = dns_answer(&q, &records()).unwrap();
            assert_eq!(a[3] & 0x0f, DNS_RCODE_NXDOMAIN, "{name}");
            assert_eq!(a[7], 0);
        }
    }

    #[test]
    fn responses_and_garbage_get_no_answer() {
        let mut q = query(11, "peer.test", DNS_TYPE_A);
        q[2] |= 0x80;
        assert!(dns_answer(&q, &records()).is_none());
        assert!(dns_answer(&[1, 2, 3], &records()).is_none());
        let q = query(12, "peer.test", DNS_TYPE_A);
        assert!(dns_answer(&q[..q.len() - 2], &records()).is_none());
    }

    #[test]
    fn lua_strings_are_escaped() {
        assert_eq!(lua_string(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
