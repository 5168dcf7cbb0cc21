//! A Rookery node as a real process (`rookery-node serve`) on free loopback ports with a
//! fresh database and data folder, its CLI, its control API (an HTTPS client that trusts
//! exactly the node's control certificate), and the Python virtualenv whose XMPP client
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
    /// Where the control API listens (once the node has a secret).
    pub control_port: u16,
    /// Server-to-server streams (federation); `ROOKERY_NODE_S2S_LISTEN` in the extra
    /// settings overrides it.
    pub s2s_port: u16,
    /// The control API's bearer secret (None: the node waits for `rookery-node join`).
    pub control_secret: Option<String>,
    pub database: TestDatabase,
    data_dir: tempfile::TempDir,
    extra_env: Vec<(String, String)>,
    /// Killed when the struct drops (kill_on_drop).
    child: Option<Child>,
}

/// A control API answer: the status and the JSON body (`Null` when there is none).
pub type ControlAnswer = (reqwest::StatusCode, serde_json::Value);

impl NodeProcess {
    /// Starts a node and waits until its HTTP port answers `/healthz`.
    pub async fn start() -> anyhow::Result<NodeProcess> {
        Self::start_with_env(&[]).await
    }

    /// Like [`NodeProcess::start`], with extra `ROOKERY_NODE_*` settings. The node gets a
    /// random control secret, so its control API listens at once.
    pub async fn start_with_env(extra: &[(&str, &str)]) -> anyhow::Result<NodeProcess> {
        let secret = format!("test-secret-{}", uuid::Uuid::now_v7().simple());
        Self::launch(Some(secret), extra).await
    }

    /// A node with no control secret: its control API waits for `rookery-node join`.
    pub async fn start_unenrolled(extra: &[(&str, &str)]) -> anyhow::Result<NodeProcess> {
        Self::launch(None, extra).await
    }

    /// Enrolls a new node in the panel at `panel_url` (`rookery-node join … --name name`),
    /// then starts it; it serves the control API with the credentials `join` stored.
    pub async fn join_and_start(
        panel_url: &str,
        token: &str,
        name: &str,
    ) -> anyhow::Result<NodeProcess> {
        let mut node = Self::prepare(None, &[]).await?;
        let out = node.join_cli(panel_url, token, name).await?;
        anyhow::ensure!(
            out.status.success(),
            "rookery-node join failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        node.child = Some(node.spawn()?);
        node.wait_healthy().await?;
        Ok(node)
    }

    /// Runs `rookery-node join` for a new node that is never started, and returns what the
    /// command said (for tokens that must be refused).
    pub async fn join(panel_url: &str, token: &str, name: &str) -> anyhow::Result<Output> {
        Self::prepare(None, &[])
            .await?
            .join_cli(panel_url, token, name)
            .await
    }

    async fn join_cli(&self, panel_url: &str, token: &str, name: &str) -> anyhow::Result<Output> {
        self.cli(&["join", panel_url, "--token", token, "--name", name], None)
            .await
    }

    async fn launch(secret: Option<String>, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            let mut node = Self::prepare(secret.clone(), extra).await?;
            node.child = Some(node.spawn()?);
            match node.wait_healthy().await {
                Ok(()) => return Ok(node),
                // Another process took a port between picking and binding: new ports.
                Err(error) if attempt < 3 && node.output().contains("Address already in use") => {
                    eprintln!("retrying the node on other ports: {error:#}");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Ports, database and data folder for a node, not started yet.
    async fn prepare(secret: Option<String>, extra: &[(&str, &str)]) -> anyhow::Result<Self> {
        let database = fresh_database_url().await?;
        let data_dir = tempfile::Builder::new()
            .prefix("rookery-test-node-")
            .tempdir()?;
        Ok(NodeProcess {
            c2s_port: free_loopback_port()?,
            c2s_tls_port: free_loopback_port()?,
            http_port: free_loopback_port()?,
            control_port: free_loopback_port()?,
            s2s_port: free_loopback_port()?,
            control_secret: secret,
            database,
            data_dir,
            extra_env: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        })
    }

    fn spawn(&self) -> anyhow::Result<Child> {
        let mut command = Command::new(workspace_binary("rookery-node")?);
        command
            .arg("serve")
            .current_dir(self.data_dir.path())
            .kill_on_drop(true);
        command.envs(self.env());
        command.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        if test_log() {
            command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
        } else {
            // Appended to: a restarted node's log follows the first run's.
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.data_dir.path().join("node-output.log"))?;
            command.stdout(log.try_clone()?).stderr(log);
        }
        command.spawn().context("starting rookery-node")
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "the node exited with {status} before it was healthy; its output:\n{}",
                    self.output()
                );
            }
            if let Ok(r) =
                reqwest::get(format!("http://127.0.0.1:{}/healthz", self.http_port)).await
                && r.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the node did not start within 30 s; its output:\n{}",
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the node (no clean shutdown, as in a crash) and waits until it is gone.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Kills the node (no clean shutdown, as in a crash) and starts it again on the same
    /// ports, database and data folder.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.kill().await;
        self.child = Some(self.spawn()?);
        self.wait_healthy().await
    }

    /// `https://127.0.0.1:<control port>`.
    pub fn control_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.control_port)
    }

    /// The control API's self-signed certificate (PEM), generated by the node.
    pub fn control_cert(&self) -> PathBuf {
        self.data_dir.path().join("certs").join("_control.crt")
    }

    /// An HTTPS client that trusts exactly the node's control certificate.
    pub fn control_client(&self) -> anyhow::Result<reqwest::Client> {
        let pem = std::fs::read(self.control_cert())
            .with_context(|| format!("reading {}", self.control_cert().display()))?;
        Ok(reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// Calls the control API with the node's secret.
    pub async fn control(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<ControlAnswer> {
        let secret = self.control_secret.clone().unwrap_or_default();
        self.control_as(&secret, method, path, body).await
    }

    /// Calls the control API presenting `secret`.
    pub async fn control_as(
        &self,
        secret: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<ControlAnswer> {
        let mut req = self
            .control_client()?
            .request(method, format!("{}{path}", self.control_url()))
            .bearer_auth(secret);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.context("calling the control API")?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        let json = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "the control API answered {status} with no JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })?
        };
        Ok((status, json))
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

    /// Runs the client scenario `tests/python/<script>` against this node for `domain`
    /// (its arguments: 127.0.0.1, the c2s port, the domain, its certificate, then `extra`;
    /// at most `limit`), checks that it exited 0 and printed `ok <step>` for each of
    /// `steps`, and returns what it printed.
    pub async fn scenario(
        &self,
        script: &str,
        domain: &str,
        extra: &[&str],
        steps: &[&str],
        limit: Duration,
    ) -> String {
        let cert = self.cert_of(domain);
        let port = self.c2s_port.to_string();
        let mut args = vec!["127.0.0.1", &port, domain, cert.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = run_python(script, &args, limit)
            .await
            .unwrap_or_else(|e| panic!("running {script}: {e:#}"));
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        println!("{stdout}");
        assert!(
            out.status.success(),
            "the scenario {script} {extra:?} failed:\n{stdout}\n--- stderr ---\n{}\n--- node ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.output()
        );
        for step in steps {
            assert!(
                stdout.contains(&format!("ok {step}")),
                "missing {step:?} in:\n{stdout}"
            );
        }
        stdout
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
        command.envs(self.env());
        command.envs(self.extra_env.iter().map(|(k, v)| (k, v)));
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

impl NodeProcess {
    /// The settings that point the node (and its CLI) at this node's ports, database and
    /// data folder.
    fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "ROOKERY_NODE_DATABASE_URL".into(),
                self.database.url.clone(),
            ),
            (
                "ROOKERY_NODE_DATA_DIR".into(),
                self.data_dir.path().display().to_string(),
            ),
            (
                "ROOKERY_NODE_C2S_LISTEN".into(),
                format!("127.0.0.1:{}", self.c2s_port),
            ),
            (
                "ROOKERY_NODE_C2S_TLS_LISTEN".into(),
                format!("127.0.0.1:{}", self.c2s_tls_port),
            ),
            (
                "ROOKERY_NODE_HTTP_LISTEN".into(),
                format!("127.0.0.1:{}", self.http_port),
            ),
            (
                "ROOKERY_NODE_CONTROL_LISTEN".into(),
                format!("127.0.0.1:{}", self.control_port),
            ),
            // Any free port: the node names the one it got in its stream host answers.
            ("ROOKERY_NODE_PROXY65_LISTEN".into(), "127.0.0.1:0".into()),
            (
                "ROOKERY_NODE_S2S_LISTEN".into(),
                format!("127.0.0.1:{}", self.s2s_port),
            ),
            ("RUST_LOG".into(), "info,sqlx=warn".into()),
        ];
        if let Some(secret) = &self.control_secret {
            env.push(("ROOKERY_NODE_CONTROL_SECRET".into(), secret.clone()));
        }
        env
    }
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
