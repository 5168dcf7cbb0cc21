//! The node under test: accounts provisioned straight into its store (thousands of CLI
//! runs would take minutes), `rookery-node serve` started on free loopback ports in a
//! temporary folder, and what `/proc` says about its memory and CPU time.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rookery_node::{proto::sasl::ScramHash, store::Store};
use tokio::{process::Child, task::JoinSet};

use crate::{
    client::{Account, SaltCache},
    scram::salted_password,
};

/// Creates the vhost and the accounts, `tasks` at a time (each derives SCRAM keys).
pub async fn provision(
    database_url: &str,
    domain: &str,
    accounts: &[Account],
    iterations: u32,
    tasks: usize,
    archive: bool,
) -> anyhow::Result<()> {
    let store = Store::open(database_url).await?;
    store.add_vhost(domain, None).await?;
    if !archive {
        // A spec as the panel sends it, with the archive (XEP-0313) switched off.
        let spec: rookery_common::control::VhostSpec = serde_json::from_value(
            serde_json::json!({"domain": domain, "generation": 1, "features": {"archive": false}}),
        )?;
        let valid = rookery_node::control::spec::validate(domain, spec)
            .map_err(|e| anyhow::anyhow!("the benchmark's vhost spec: {e:?}"))?;
        store
            .apply_spec(&valid.domain, &valid.policy, &valid.stored_json, None)
            .await?;
    }
    let mut set = JoinSet::new();
    let chunk = accounts.len().div_ceil(tasks.max(1)).max(1);
    for part in accounts.chunks(chunk) {
        let part: Vec<(String, String)> = part
            .iter()
            .map(|a| (a.user.clone(), a.password.clone()))
            .collect();
        let (store, domain) = (store.clone(), domain.to_string());
        set.spawn(async move {
            for (user, password) in part {
                store
                    .add_account(&domain, &user, &password, iterations)
                    .await
                    .with_context(|| format!("adding {user}@{domain}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    store.db.close().await;
    Ok(())
}

/// Fills the client's salted-password cache, as if every account had logged in before
/// (reading each account's salt from the store, computing PBKDF2 on every core).
pub async fn prime_salted_passwords(
    database_url: &str,
    domain: &str,
    accounts: &[Account],
    cache: &Arc<SaltCache>,
) -> anyhow::Result<()> {
    let store = Store::open(database_url).await?;
    let mut asks = Vec::with_capacity(accounts.len());
    for a in accounts {
        let creds = store
            .credentials(domain, &a.user, ScramHash::Sha256)
            .await?
            .with_context(|| format!("{}@{domain} was not stored", a.user))?;
        asks.push((
            a.user.clone(),
            a.password.clone(),
            creds.salt,
            creds.iterations,
        ));
    }
    store.db.close().await;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = asks.len().div_ceil(threads).max(1);
    let mut set = JoinSet::new();
    for part in asks.chunks(chunk) {
        let (part, cache) = (part.to_vec(), cache.clone());
        set.spawn_blocking(move || {
            for (user, password, salt, iterations) in part {
                cache.insert(
                    &user,
                    &salt,
                    iterations,
                    salted_password(&password, &salt, iterations),
                );
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done?;
    }
    Ok(())
}

/// A running `rookery-node serve`; killed when dropped.
pub struct NodeProcess {
    pub pid: u32,
    pub c2s: SocketAddr,
    pub http: SocketAddr,
    pub cert: PathBuf,
    log: PathBuf,
    child: Child,
}

pub struct NodeOptions<'a> {
    pub binary: &'a Path,
    pub data_dir: &'a Path,
    pub database_url: &'a str,
    pub domain: &'a str,
    pub max_connections_per_ip: usize,
    pub log_filter: &'a str,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl NodeProcess {
    /// Starts the node and waits (at most 30 s) until `/healthz` answers.
    pub async fn start(o: &NodeOptions<'_>) -> anyhow::Result<NodeProcess> {
        let (c2s, c2s_tls, http) = (free_port()?, free_port()?, free_port()?);
        let log = o.data_dir.join("node.log");
        let out = std::fs::File::create(&log).context("creating the node's log file")?;
        let mut command = tokio::process::Command::new(o.binary);
        command
            .arg("serve")
            .current_dir(o.data_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        // The node sees only the settings given here.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ROOKERY_") {
                command.env_remove(key);
            }
        }
        let limits = [
            ("DATA_DIR", o.data_dir.display().to_string()),
            ("DATABASE_URL", o.database_url.to_string()),
            ("C2S_LISTEN", format!("127.0.0.1:{c2s}")),
            ("C2S_TLS_LISTEN", format!("127.0.0.1:{c2s_tls}")),
            ("HTTP_LISTEN", format!("127.0.0.1:{http}")),
            ("PROXY65_LISTEN", "127.0.0.1:0".into()),
            // Every session comes from 127.0.0.1 and the pairs send as fast as they can.
            (
                "LIMITS__MAX_CONNECTIONS_PER_IP",
                o.max_connections_per_ip.to_string(),
            ),
            ("LIMITS__STANZAS_PER_SECOND", "1000000".into()),
            // No idle pings in the middle of a run.
            ("LIMITS__IDLE_PING_SECS", "86400".into()),
            ("LIMITS__PRE_AUTH_TIMEOUT_SECS", "120".into()),
        ];
        for (key, value) in limits {
            command.env(format!("ROOKERY_NODE_{key}"), value);
        }
        command.env("RUST_LOG", o.log_filter);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", o.binary.display()))?;
        let mut node = NodeProcess {
            pid: child.id().context("the node exited at once")?,
            c2s: SocketAddr::from(([127, 0, 0, 1], c2s)),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            cert: o.data_dir.join("certs").join(format!("{}.crt", o.domain)),
            log,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "the node exited ({status}) while starting:\n{}",
                    node.log_tail()
                );
            }
            if let Ok(r) = client
                .get(format!("http://{}/healthz", node.http))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                && r.status().is_success()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the node did not answer /healthz within 30 s:\n{}",
                    node.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !node.cert.is_file() {
            bail!(
                "the node made no certificate at {}:\n{}",
                node.cert.display(),
                node.log_tail()
            );
        }
        Ok(node)
    }

    /// The last lines the node logged.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A counter from the node's `/metrics`.
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("no {name} in the node's metrics"))
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Resident memory of a process, KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// User + system CPU time of a process (`pid`, or `self`), in clock ticks, all threads.
pub fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses; utime and
    // stime are fields 14 and 15 of the whole line, 12th and 13th after ")".
    let rest = &stat[stat.rfind(')').context("odd /proc/<pid>/stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("odd /proc/<pid>/stat")
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux).
pub fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// Busy and total CPU ticks of the whole machine (`/proc/stat`).
pub fn machine_ticks() -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|v| v.parse().ok())
        .collect();
    anyhow::ensure!(values.len() == 8, "odd /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal
    let idle = values[3] + values[4];
    let total: u64 = values.iter().sum();
    Ok((total - idle, total))
}

/// The soft limit on open files of this process.
pub fn open_files_limit() -> anyhow::Result<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-file limit in /proc/self/limits")?;
    let soft = line
        .split_whitespace()
        .nth(3)
        .context("odd /proc/self/limits")?;
    Ok(if soft == "unlimited" {
        u64::MAX
    } else {
        soft.parse()?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_can_be_measured() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        cpu_ticks("self").unwrap();
        let (busy, total) = machine_ticks().unwrap();
        assert!(busy <= total && total > 0);
        assert!(open_files_limit().unwrap() > 0);
        assert!(clock_ticks_per_second() > 0);
    }
}
