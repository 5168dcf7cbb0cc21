//! A real headless Chromium, driven over WebDriver, for tests that click through the panel
//! as a person would.
//!
//! [`Browser::start`] launches its own `chromedriver` on a free loopback port (it starts and
//! ends Chromium), then opens a WebDriver session whose Chromium runs headless with a fresh
//! profile and none of its background traffic. Dropping the [`Browser`] kills chromedriver's
//! whole process group, so no Chromium outlives a failed test.
//!
//! `CHROMEDRIVER` and `CHROMIUM` override the paths of the two binaries (defaults: Debian's
//! `/usr/bin/chromedriver` and `/usr/bin/chromium`). Screenshots land in
//! `<workspace>/target/screenshots/<name>.png`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::process::{Child, Command};

use crate::process::{free_loopback_port, test_log};

const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// How long chromedriver may take to listen, and then Chromium to open a session.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`Browser::wait_for`] waits by default: a page load on a busy 2-core CI machine.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15);

/// A headless Chromium session and the chromedriver that runs it.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver session: `goto`, `find`, `click`, `send_keys`, ...
    pub client: Client,
    chromedriver: Child,
    /// Chromium's profile; removed after chromedriver (and with it Chromium) is gone.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub async fn start() -> anyhow::Result<Browser> {
        let chromedriver = binary_path("CHROMEDRIVER", DEFAULT_CHROMEDRIVER)?;
        let chromium = binary_path("CHROMIUM", DEFAULT_CHROMIUM)?;
        let profile = tempfile::Builder::new()
            .prefix("rookery-test-chromium-")
            .tempdir()
            .context("creating a Chromium profile folder")?;

        let port = free_loopback_port()?;
        let mut command = Command::new(&chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            // Its own process group, so Drop can end chromedriver and every Chromium process.
            .process_group(0)
            .kill_on_drop(true);
        if test_log() {
            command
                .arg("--verbose")
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited with {status} before it listened on 127.0.0.1:{port} \
                     (TEST_LOG=1 shows its output)",
                    chromedriver.display()
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() >= deadline {
                kill_group(&mut child);
                bail!("chromedriver did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let webdriver = format!("http://127.0.0.1:{port}");
        let client = match tokio::time::timeout(START_TIMEOUT, builder.connect(&webdriver)).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => {
                kill_group(&mut child);
                return Err(error).with_context(|| {
                    format!(
                        "opening a WebDriver session with {} (TEST_LOG=1 shows chromedriver's log)",
                        chromium.display()
                    )
                });
            }
            Err(_) => {
                kill_group(&mut child);
                bail!("Chromium did not open a WebDriver session within {START_TIMEOUT:?}");
            }
        };

        Ok(Browser {
            client,
            chromedriver: child,
            _profile: profile,
        })
    }

    /// Saves a PNG of the viewport to `<workspace>/target/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self
            .client
            .screenshot()
            .await
            .with_context(|| format!("taking the screenshot {name}"))?;
        let dir = screenshot_dir();
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{name}.png"));
        tokio::fs::write(&path, png)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Waits (at most [`WAIT_TIMEOUT`]) until an element matches `css`, and returns it.
    ///
    /// Errors while a page is being replaced (a stale or missing document) count as "not yet".
    /// On time-out the error names the page the browser is on and what its `<main>` says.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<Element> {
        self.wait_for_within(css, WAIT_TIMEOUT).await
    }

    /// Like [`Browser::wait_for`], with its own time limit.
    pub async fn wait_for_within(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return Ok(element);
            }
            if Instant::now() >= deadline {
                bail!(
                    "no element matched `{css}` within {timeout:?}; {}",
                    self.describe_page().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Finds the element matching `css` now, with the page described in the error if none.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Ok(element),
            Err(error) => {
                let page = self.describe_page().await;
                Err(error).with_context(|| format!("no element matches `{css}`; {page}"))
            }
        }
    }

    /// Clicks into the field matching `css`, clears it and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let field = self.find(css).await?;
        field
            .click()
            .await
            .with_context(|| format!("clicking into `{css}`"))?;
        field
            .clear()
            .await
            .with_context(|| format!("clearing `{css}`"))?;
        field
            .send_keys(text)
            .await
            .with_context(|| format!("typing into `{css}`"))?;
        Ok(())
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .with_context(|| format!("clicking `{css}`"))
    }

    /// The `data-page` of the current page's `<main>`, if it has one.
    pub async fn page_name(&self) -> Option<String> {
        let main = self
            .client
            .find(Locator::Css("main[data-page]"))
            .await
            .ok()?;
        main.attr("data-page").await.ok().flatten()
    }

    /// The visible text of the whole page.
    pub async fn page_text(&self) -> anyhow::Result<String> {
        self.client
            .find(Locator::Css("body"))
            .await
            .context("finding the page's body")?
            .text()
            .await
            .context("reading the page's text")
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        kill_group(&mut self.chromedriver);
        let _ = self.chromedriver.wait().await;
    }

    /// Where the browser is and what it shows, for error messages.
    async fn describe_page(&self) -> String {
        let url = match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(error) => format!("<unknown: {error}>"),
        };
        let page = self
            .page_name()
            .await
            .unwrap_or_else(|| "<none>".to_owned());
        let mut text = self.page_text().await.unwrap_or_default();
        if text.len() > 600 {
            let mut end = 600;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        format!("the browser is on {url} (main[data-page]={page}), showing:\n{text}")
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(&mut self.chromedriver);
    }
}

/// `<workspace>/target/screenshots`.
pub fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
        .join("target")
        .join("screenshots")
}

fn binary_path(variable: &str, default: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os(variable)
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(default), PathBuf::from);
    if !path.is_file() {
        bail!(
            "{} is missing: install Debian's `chromium` and `chromium-driver` packages \
             (scripts/test.sh does when run as root) or set {variable}",
            path.display()
        );
    }
    Ok(path)
}

/// Kills chromedriver and everything in its process group (Chromium and its helpers).
fn kill_group(child: &mut Child) {
    if let Some(pid) = child.id() {
        // Signalling a process group needs kill(2) on a negative pid; the crate forbids
        // unsafe code, so ask the shell's `kill` (there on every machine, unlike procps).
        // It is fine for this to fail: the group may be gone already.
        let _ = std::process::Command::new("sh")
            .args(["-c", &format!("kill -KILL -{pid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.start_kill();
}
