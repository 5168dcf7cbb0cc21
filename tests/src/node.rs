//! A Rookery node as a real process (`rookery-node serve`) on free loopback ports with a
//! fresh database and data folder, its CLI, and the Python virtualenv whose XMPP client
//! libraries (written by others) the tests drive against it.

use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::{
    io::AsyncWriteExt,
    process::{Child, Command},
};

use crate::{
    db::{TestDatabase, fresh_database_url},
    process::{free_loopback_port, test_log, workspace_binary},
};

pub struct NodeProcess {
    pub c2s_port: u16,
    pub c2s_tls_port: u16,
    pub http_port: u16,
    pub database: TestDatabase,
    data_dir: tempfile::TempDir,
    /// Killed when the struct drops (kill_on_drop).
    _child: Child,
}

impl NodeProcess {
    /// Starts a node and waits until its HTTP port answers `/healthz`.
    pub async fn start() -> anyhow::Result<NodeProcess> {
        Self::start_with_env(&[]).await
    }

    /// Like [`NodeProcess::start`], with extra `ROOKERY_NODE_*` settings.
    pub async fn start_with_env(extra: &[(&str, &str)]) -> anyhow::Result<NodeProcess> {
        let database = fresh_database_url().await?;
        let data_dir = tempfile::Builder::new()
            .prefix("rookery-test-node-")
            .tempdir()?;
        let (c2s_port, c2s_tls_port, http_port) = (
            free_loopback_port()?,
            free_loopback_port()?,
            free_loopback_port()?,
        );
        let mut command = Command::new(workspace_binary("rookery-node")?);
        command
            .arg("serve")
            .current_dir(data_dir.path())
            .kill_on_drop(true);
        for (k, v) in node_env(
            &database,
            data_dir.path(),
            c2s_port,
            c2s_tls_port,
            http_port,
        ) {
            command.env(k, v);
        }
        command.envs(extra.iter().copied());
        if test_log() {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            let log = std::fs::File::create(data_dir.path().join("node-output.log"))?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        let child = command.spawn().context("starting rookery-node")?;
        let node = NodeProcess {
            c2s_port,
            c2s_tls_port,
            http_port,
            database,
            data_dir,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{http_port}/healthz")).await
                && r.status() == 200
            {
                return Ok(node);
            }
            if Instant::now() > deadline {
                bail!(
                    "the node did not start within 30 s; its output:\n{}",
                    node.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The node's `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(
            reqwest::get(format!("http://127.0.0.1:{}/metrics", self.http_port))
                .await?
                .text()
                .await?,
        )
    }

    /// The self-signed certificate the node generated for `domain`.
    pub fn cert_of(&self, domain: &str) -> PathBuf {
        self.data_dir
            .path()
            .join("certs")
            .join(format!("{domain}.crt"))
    }

    /// What the node printed (when `TEST_LOG` is off).
    pub fn output(&self) -> String {
        std::fs::read_to_string(self.data_dir.path().join("node-output.log")).unwrap_or_default()
    }

    /// Runs `rookery-node <args>` against this node's database and data folder.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        let mut command = Command::new(workspace_binary("rookery-node")?);
        command
            .args(args)
            .current_dir(self.data_dir.path())
            .kill_on_drop(true);
        for (k, v) in node_env(
            &self.database,
            self.data_dir.path(),
            self.c2s_port,
            self.c2s_tls_port,
            self.http_port,
        ) {
            command.env(k, v);
        }
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn()?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().context("stdin")?;
            pipe.write_all(input.as_bytes()).await?;
        }
        Ok(
            tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
                .await
                .context("rookery-node CLI timed out")??,
        )
    }

    /// Adds a vhost and accounts `(user, password)` through the CLI.
    pub async fn provision(&self, domain: &str, users: &[(&str, &str)]) -> anyhow::Result<()> {
        let out = self.cli(&["vhost", "add", domain], None).await?;
        anyhow::ensure!(
            out.status.success(),
            "vhost add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (user, password) in users {
            let out = self
                .cli(
                    &["user", "add", &format!("{user}@{domain}")],
                    Some(&format!("{password}\n")),
                )
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "user add: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Waits (bounded) until the running node serves `domain` (it polls for vhost changes).
    pub async fn wait_for_vhost(&self, domain: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.cert_of(domain).exists() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "the node did not pick up {domain}; its output:\n{}",
            self.output()
        )
    }
}

fn node_env(
    db: &TestDatabase,
    data: &Path,
    c2s: u16,
    c2s_tls: u16,
    http: u16,
) -> Vec<(String, String)> {
    vec![
        ("ROOKERY_NODE_DATABASE_URL".into(), db.url.clone()),
        ("ROOKERY_NODE_DATA_DIR".into(), data.display().to_string()),
        ("ROOKERY_NODE_C2S_LISTEN".into(), format!("127.0.0.1:{c2s}")),
        (
            "ROOKERY_NODE_C2S_TLS_LISTEN".into(),
            format!("127.0.0.1:{c2s_tls}"),
        ),
        (
            "ROOKERY_NODE_HTTP_LISTEN".into(),
            format!("127.0.0.1:{http}"),
        ),
        ("RUST_LOG".into(), "info,sqlx=warn".into()),
    ]
}

/// The Python of the test virtualenv (`ROOKERY_TEST_PYTHON`, or `<workspace>/.venv`), which
/// `scripts/test.sh` creates with `tests/python/requirements.txt`.
pub fn python() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("ROOKERY_TEST_PYTHON") {
        return Ok(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if venv.exists() {
        return Ok(venv);
    }
    bail!(
        "no test virtualenv at {}: run scripts/test.sh (or python3 -m venv .venv && .venv/bin/pip install -r tests/python/requirements.txt)",
        venv.display()
    )
}

/// Runs a script from `tests/python/` with the virtualenv's Python (bounded in time).
pub async fn run_python(script: &str, args: &[&str], timeout: Duration) -> anyhow::Result<Output> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let child = Command::new(python()?)
        .arg("-u")
        .arg(&path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("running {}", path.display()))?;
    Ok(tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .with_context(|| format!("{script} did not finish in {timeout:?}"))??)
}
