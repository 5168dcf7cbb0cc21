//! The panel as a real process: the `rookery` binary that operators run, started on a free
//! loopback port with a fresh database and data folder, and its command-line interface.
//!
//! The binary comes from the cargo target folder this test executable was built into, so
//! `cargo build --workspace --bins` must run before the tests (`scripts/test.sh` does).
//! `ROOKERY_BIN` points at another binary. Every `ROOKERY_*` variable of the test's own
//! environment is withheld from the child, which sees only the settings given here.
//!
//! Output: with `TEST_LOG=1` the panel writes to the test's stdout and stderr; otherwise it
//! goes to a file in its data folder, and the end of that file is part of the error when
//! the panel fails to start.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

use crate::db::{TestDatabase, fresh_database_url};

/// How long the panel may take to answer its health check after it is started.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command-line invocation may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// Name of the file in the data folder that takes the panel's output when `TEST_LOG` is off.
const OUTPUT_FILE: &str = "panel-output.log";

/// Where the demo's local node listens (see [`PanelProcess::start_demo`]).
#[derive(Debug, Clone, Copy)]
pub struct LocalNodePorts {
    pub c2s: u16,
    pub c2s_tls: u16,
    pub http: u16,
    pub control: u16,
}

/// A running `rookery serve` with its own database and data folder; killed when dropped.
#[derive(Debug)]
pub struct PanelProcess {
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub base_url: String,
    /// The panel's database; dropped (for SQLite: deleted) after the process.
    pub database: TestDatabase,
    child: Child,
    data_dir: tempfile::TempDir,
    port: u16,
    extra_env: Vec<(String, String)>,
}

impl PanelProcess {
    /// Starts the panel with a fresh database and waits until `GET /healthz` answers 200.
    pub async fn start() -> anyhow::Result<PanelProcess> {
        Self::start_with_env(&[]).await
    }

    /// Like [`PanelProcess::start`], with extra environment variables for the panel
    /// (for example `ROOKERY_SMTP_URL`); they override the defaults set here.
    pub async fn start_with_env(extra_env: &[(&str, &str)]) -> anyhow::Result<PanelProcess> {
        let database = fresh_database_url().await?;
        let data_dir = tempfile::Builder::new()
            .prefix("rookery-test-panel-")
            .tempdir()
            .context("creating the panel's data folder")?;

        // A port picked by binding to port 0 can be taken by someone else before the panel
        // binds it; a second try with another port makes that race harmless.
        let mut last_error = None;
        for _attempt in 0..3 {
            let port = free_loopback_port()?;
            match spawn_panel(port, &database, data_dir.path(), extra_env).await {
                Ok(child) => {
                    return Ok(PanelProcess {
                        base_url: format!("http://127.0.0.1:{port}"),
                        database,
                        child,
                        data_dir,
                        port,
                        extra_env: extra_env
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect(),
                    });
                }
                Err(StartError::Exited(error)) => last_error = Some(error),
                Err(StartError::Other(error)) => return Err(error),
            }
        }
        Err(last_error.expect("at least one attempt ran"))
    }

    /// A second panel process on this one's database (and secret key), with a data folder
    /// of its own, as a deployment with several panels behind a load balancer runs.
    pub async fn start_sibling(&self, extra_env: &[(&str, &str)]) -> anyhow::Result<PanelProcess> {
        let key = std::fs::read_to_string(self.data_dir.path().join("secret.key"))
            .context("reading the first panel's secret key")?;
        let data_dir = tempfile::Builder::new()
            .prefix("rookery-test-panel-")
            .tempdir()
            .context("creating the panel's data folder")?;
        let mut env: Vec<(&str, &str)> = vec![("ROOKERY_SECRET_KEY", key.trim())];
        env.extend_from_slice(extra_env);
        let database = self.database.shared();
        let port = free_loopback_port()?;
        let child = match spawn_panel(port, &database, data_dir.path(), &env).await {
            Ok(child) => child,
            Err(StartError::Exited(e) | StartError::Other(e)) => return Err(e),
        };
        Ok(PanelProcess {
            base_url: format!("http://127.0.0.1:{port}"),
            database,
            child,
            data_dir,
            port,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        })
    }

    /// The README's demo: the panel with its in-process local node, on free loopback ports,
    /// plus `extra_env`. Returns where the local node listens.
    pub async fn start_demo(
        extra_env: &[(&str, &str)],
    ) -> anyhow::Result<(PanelProcess, LocalNodePorts)> {
        let ports = LocalNodePorts {
            c2s: free_loopback_port()?,
            c2s_tls: free_loopback_port()?,
            http: free_loopback_port()?,
            control: free_loopback_port()?,
        };
        let at = |p: u16| format!("127.0.0.1:{p}");
        let owned = [
            ("ROOKERY_LOCAL_NODE__ENABLED", "true".to_string()),
            ("ROOKERY_LOCAL_NODE__C2S_LISTEN", at(ports.c2s)),
            ("ROOKERY_LOCAL_NODE__C2S_TLS_LISTEN", at(ports.c2s_tls)),
            ("ROOKERY_LOCAL_NODE__HTTP_LISTEN", at(ports.http)),
            ("ROOKERY_LOCAL_NODE__CONTROL_LISTEN", at(ports.control)),
            (
                "ROOKERY_LOCAL_NODE__PROXY65_LISTEN",
                "127.0.0.1:0".to_string(),
            ),
            // Poll the local node often, so pages show its heartbeat and usage quickly.
            ("ROOKERY_PROVISIONING__POLL_INTERVAL_SECS", "1".to_string()),
        ];
        let mut env: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.extend_from_slice(extra_env);
        Ok((Self::start_with_env(&env).await?, ports))
    }

    /// Creates a platform admin with `rookery admin create` (the password, [`PASSWORD`]
    /// of the app module, on standard input) and returns their email address.
    ///
    /// [`PASSWORD`]: crate::app::PASSWORD
    pub async fn create_admin(&self) -> anyhow::Result<String> {
        let email = crate::app::unique_email("admin");
        let out = self
            .cli(
                &["admin", "create", "--email", &email],
                Some(&format!("{}\n", crate::app::PASSWORD)),
            )
            .await?;
        anyhow::ensure!(
            out.status.success(),
            "rookery admin create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(email)
    }

    /// A new platform admin (see [`PanelProcess::create_admin`]) and a client logged in as them.
    pub async fn admin_client(&self) -> anyhow::Result<crate::app::TestClient> {
        let email = self.create_admin().await?;
        let admin = crate::app::TestClient::new(&self.base_url);
        let r = admin.login(&email, crate::app::PASSWORD).await;
        anyhow::ensure!(
            r.status() == 303,
            "the new admin cannot log in: {}",
            r.status()
        );
        Ok(admin)
    }

    /// The full URL of `path` (which starts with `/`) on this panel.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The process id of the running panel (None once it has exited and been waited for),
    /// for benchmarks that read its CPU time and memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The panel's data folder (also its working directory).
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The settings that point a `rookery` command at this panel's database and data folder.
    pub fn cli_env(&self) -> Vec<(&str, &str)> {
        vec![
            ("ROOKERY_DATABASE_URL", self.database.url.as_str()),
            (
                "ROOKERY_DATA_DIR",
                self.data_dir.path().to_str().unwrap_or_default(),
            ),
            ("ROOKERY_PUBLIC_URL", self.base_url.as_str()),
        ]
    }

    /// Runs `rookery <args>` against this panel's database and data folder.
    pub async fn cli(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        run_cli(args, &self.cli_env(), stdin).await
    }

    /// Sends SIGTERM, as systemd does to stop a service, and waits (bounded) for the exit.
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().context("the panel has already exited")?;
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .context("running kill")?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .context("the panel did not exit within 20 s of SIGTERM")?
            .context("waiting for the panel")
    }

    /// Kills the panel (SIGKILL: no clean shutdown, as in a crash) and starts it again on
    /// the same port, database and data folder.
    pub async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        let _ = self.child.kill().await;
        let env: Vec<(&str, &str)> = self
            .extra_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.child = match spawn_panel(self.port, &self.database, self.data_dir.path(), &env).await
        {
            Ok(child) => child,
            Err(StartError::Exited(e) | StartError::Other(e)) => return Err(e),
        };
        Ok(())
    }

    /// Kills the panel (SIGKILL, as in a crash) and waits until it is gone; the database
    /// and data folder stay until the struct drops.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Kills the panel and waits until it is gone.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl Drop for PanelProcess {
    fn drop(&mut self) {
        // kill_on_drop does the same when the Child drops; doing it here first makes sure the
        // process is gone before the data folder and database are removed.
        let _ = self.child.start_kill();
    }
}

/// Runs the `rookery` binary once with `args` and the given environment, feeding `stdin`
/// (for example a password) when given, and returns its exit status and output.
///
/// The command runs in a fresh empty working folder, so a default `./data` never lands in
/// the source tree; pass `ROOKERY_DATABASE_URL` and `ROOKERY_DATA_DIR` (see
/// [`PanelProcess::cli_env`]) to act on a panel's state.
pub async fn run_cli(
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&str>,
) -> anyhow::Result<Output> {
    let binary = rookery_binary()?;
    let cwd = tempfile::Builder::new()
        .prefix("rookery-test-cli-")
        .tempdir()
        .context("creating a working folder for the command")?;

    let mut command = Command::new(&binary);
    command
        .args(args)
        .current_dir(cwd.path())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    withhold_rookery_env(&mut command);
    command.envs(env.iter().copied());

    let mut child = command
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("the child has no stdin pipe")?;
        // A command that exits without reading its input closes the pipe: not our error.
        match pipe.write_all(input.as_bytes()).await {
            Err(error) if error.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(error).context("writing the command's standard input");
            }
            _ => {}
        }
        drop(pipe);
    }

    let output = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| {
            format!(
                "`rookery {}` did not finish within {CLI_TIMEOUT:?}",
                args.join(" ")
            )
        })?
        .context("waiting for the command")?;
    if test_log() {
        eprintln!(
            "$ rookery {}\n{}\n--- stdout ---\n{}--- stderr ---\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    Ok(output)
}

/// The `rookery` binary: `ROOKERY_BIN`, or the one beside this test executable's `deps/`.
pub fn rookery_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("ROOKERY_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("ROOKERY_BIN is set to {}, which is no file", path.display());
        }
        return Ok(path);
    }
    workspace_binary("rookery")
}

/// A binary of the workspace, from the cargo target folder this test executable is in.
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the test executable")?;
    let file = format!("{name}{}", std::env::consts::EXE_SUFFIX);
    // The test executable is `<target>/<profile>/deps/<test>-<hash>` (with a target triple
    // folder in between when cross-compiling); the binary is `<target>/<profile>/<name>`.
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join(&file);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "the `{name}` binary was not found next to {}; run `cargo build --workspace --bins` \
         first (scripts/test.sh does)",
        exe.display()
    )
}

/// Where test ports come from: below Linux's ephemeral range (32768–60999), so that no
/// outgoing connection of any process can take a port between the moment a test picks it
/// and the moment its server binds it (that race, with ports from `bind(0)`, made a node
/// fail with "Address already in use" once in a while).
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback TCP port that was free a moment ago, never handed out twice by this process.
pub fn free_loopback_port() -> anyhow::Result<u16> {
    use std::hash::BuildHasher;
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let random = std::collections::hash_map::RandomState::new();
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for attempt in 0u64..1_000 {
        let port = TEST_PORTS.start + (random.hash_one(attempt) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free loopback port in {TEST_PORTS:?} after 1,000 tries")
}

/// Whether the test run asked for the output of the processes it starts (`TEST_LOG=1`).
pub fn test_log() -> bool {
    std::env::var("TEST_LOG").is_ok_and(|value| !value.is_empty() && value != "0")
}

/// Removes every `ROOKERY_*` variable the test process has from `command`'s environment,
/// so the child sees only what the test sets (`ROOKERY_TEST_DATABASE_URL`, for one, is no
/// setting of the panel's).
fn withhold_rookery_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ROOKERY_") {
            command.env_remove(key);
        }
    }
}

enum StartError {
    /// The process exited before it was healthy: maybe its port was taken; worth a retry.
    Exited(anyhow::Error),
    Other(anyhow::Error),
}

async fn spawn_panel(
    port: u16,
    database: &TestDatabase,
    data_dir: &Path,
    extra_env: &[(&str, &str)],
) -> Result<Child, StartError> {
    let binary = rookery_binary().map_err(StartError::Other)?;
    let listen = format!("127.0.0.1:{port}");
    let base_url = format!("http://{listen}");
    let output_path = data_dir.join(OUTPUT_FILE);

    let mut command = Command::new(&binary);
    command
        .arg("serve")
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    withhold_rookery_env(&mut command);
    command
        .env("ROOKERY_LISTEN", &listen)
        .env("ROOKERY_DATABASE_URL", &database.url)
        .env("ROOKERY_DATA_DIR", data_dir)
        .env("ROOKERY_PUBLIC_URL", &base_url)
        .env("ROOKERY_LOCAL_NODE__ENABLED", "false")
        .envs(extra_env.iter().copied());
    if test_log() {
        command.stdout(Stdio::inherit()).stderr(Stdio::inherit());
    } else {
        let file = std::fs::File::create(&output_path)
            .context("creating the panel's output file")
            .map_err(StartError::Other)?;
        let file2 = file
            .try_clone()
            .context("sharing the panel's output file")
            .map_err(StartError::Other)?;
        command.stdout(file).stderr(file2);
    }

    let mut child = command
        .spawn()
        .with_context(|| format!("starting {} serve", binary.display()))
        .map_err(StartError::Other)?;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .context("building an HTTP client")
        .map_err(StartError::Other)?;
    let health = format!("{base_url}/healthz");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child
            .try_wait()
            .context("checking on the panel process")
            .map_err(StartError::Other)?
        {
            return Err(StartError::Exited(anyhow::anyhow!(
                "`rookery serve` on {listen} exited with {status} before it was healthy{}",
                output_tail(&output_path)
            )));
        }
        let last_answer = match http.get(&health).send().await {
            Ok(response) if response.status() == reqwest::StatusCode::OK => return Ok(child),
            Ok(response) => format!("status {}", response.status()),
            Err(error) => error.to_string(),
        };
        if Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(StartError::Other(anyhow::anyhow!(
                "`rookery serve` on {listen} was not healthy within {START_TIMEOUT:?} \
                 (GET /healthz: {last_answer}){}",
                output_tail(&output_path)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The last lines the panel wrote, for an error message (empty with `TEST_LOG=1`).
fn output_tail(path: &Path) -> String {
    if test_log() {
        return String::new();
    }
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    if tail.is_empty() {
        "; it printed nothing (TEST_LOG=1 shows its output)".to_owned()
    } else {
        format!("; its last output:\n{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_on_loopback_and_not_zero() {
        let port = free_loopback_port().unwrap();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
