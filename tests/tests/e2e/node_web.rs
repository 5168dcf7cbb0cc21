//! Web clients on a real node: Converse.js (from npm, `tests/js`) in headless Chromium logs
//! in over XMPP-over-WebSocket (RFC 7395) on the node's HTTP port and chats with a slixmpp
//! client on c2s (`tests/python/web_scenario.py`); the conversation ends up in
//! `target/screenshots/node-web-converse-conversation.png`.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use rookery_tests::{
    browser::Browser,
    node::{NodeProcess, run_python},
};

const DOMAIN: &str = "web.test";
const FROM_BROWSER: &str = "Hello from Converse.js over WebSocket";
const REPLY: &str = "Hello back from slixmpp over TCP";

/// The Converse.js `dist` folder, installed with `npm ci` into `tests/js` (scripts/test.sh
/// does it; so does this test when it is missing).
async fn converse_dist() -> anyhow::Result<PathBuf> {
    let js = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    let dist = js.join("node_modules/converse.js/dist");
    if !dist.join("converse.min.js").exists() {
        let out = tokio::process::Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&js)
            .output()
            .await
            .context("running npm ci in tests/js")?;
        if !out.status.success() {
            bail!("npm ci failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    Ok(dist)
}

struct Site {
    page: String,
    dist: PathBuf,
}

/// A static HTTP server on a free loopback port: the page at `/`, Converse.js at `/dist/`.
async fn serve_site(page: String, dist: PathBuf) -> anyhow::Result<u16> {
    async fn index(State(site): State<std::sync::Arc<Site>>) -> Html<String> {
        Html(site.page.clone())
    }
    async fn file(State(site): State<std::sync::Arc<Site>>, Path(path): Path<String>) -> Response {
        if path.split('/').any(|p| p == ".." || p.is_empty()) {
            return StatusCode::NOT_FOUND.into_response();
        }
        let Ok(bytes) = tokio::fs::read(site.dist.join(&path)).await else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let kind = match path.rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            Some("json") => "application/json",
            Some("wasm") => "application/wasm",
            Some("svg") => "image/svg+xml",
            Some("png") => "image/png",
            Some("woff2") => "font/woff2",
            Some("woff") => "font/woff",
            Some("ttf") => "font/ttf",
            _ => "application/octet-stream",
        };
        ([(header::CONTENT_TYPE, kind)], bytes).into_response()
    }
    let app = Router::new()
        .route("/", get(index))
        .route("/dist/{*path}", get(file))
        .with_state(std::sync::Arc::new(Site { page, dist }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(port)
}

fn page(websocket_url: &str, bosh_url: &str, jid: &str, password: &str) -> String {
    include_str!("../../web/converse.html")
        .replace("{{WEBSOCKET_URL}}", websocket_url)
        .replace("{{BOSH_URL}}", bosh_url)
        .replace("{{JID}}", jid)
        .replace("{{PASSWORD}}", password)
}

#[tokio::test]
async fn node_web_converse_chats_with_slixmpp_over_websocket() -> anyhow::Result<()> {
    let dist = converse_dist().await?;
    let node = NodeProcess::start().await?;
    node.provision(DOMAIN, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await?;
    node.wait_for_vhost(DOMAIN).await?;
    let ws = format!("ws://127.0.0.1:{}/xmpp-websocket", node.http_port);
    let bosh = format!("http://127.0.0.1:{}/http-bind", node.http_port);
    let site = serve_site(
        page(&ws, "", &format!("alice@{DOMAIN}"), "pass-alice-1"),
        dist,
    )
    .await?;
    let browser = Browser::start().await?;
    let _ = bosh;

    // bob (slixmpp, over TCP) waits for alice's message and answers it.
    let cert = node.cert_of(DOMAIN);
    let args: Vec<String> = vec![
        "127.0.0.1".into(),
        node.c2s_port.to_string(),
        DOMAIN.into(),
        cert.to_string_lossy().into_owned(),
        "90".into(),
    ];
    let bob = tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_python("web_scenario.py", &args, Duration::from_secs(150)).await
    });
    let outcome = chat_from_the_browser(&browser, site).await;
    if outcome.is_err() {
        let _ = browser.screenshot("node-web-converse-failure").await;
        let logs: serde_json::Value = browser
            .client
            .execute("return (window.__logs || []).join('\\n')", vec![])
            .await
            .unwrap_or_default();
        println!("--- browser ---\n{}", logs.as_str().unwrap_or_default());
    }
    let bob = bob.await?.context("running web_scenario.py")?;
    let said = String::from_utf8_lossy(&bob.stdout);
    println!(
        "--- bob ---\n{said}\n{}",
        String::from_utf8_lossy(&bob.stderr)
    );
    if outcome.is_err() || !bob.status.success() {
        println!("--- node ---\n{}", node.output());
    }
    browser.close().await;
    outcome?;
    for step in [
        "bob logs in over TCP",
        "bob gets alice's message from Converse.js",
        "it comes from alice's WebSocket session",
        "bob answers",
    ] {
        anyhow::ensure!(
            said.contains(&format!("ok {step}")),
            "missing {step:?} in:\n{said}"
        );
    }
    anyhow::ensure!(bob.status.success(), "web_scenario.py failed");
    Ok(())
}

/// Alice logs in with Converse.js, opens a chat with bob, sends him a message and waits for
/// his answer; then the screenshot.
async fn chat_from_the_browser(browser: &Browser, site: u16) -> anyhow::Result<()> {
    let bob = format!("bob@{DOMAIN}");
    browser
        .client
        .goto(&format!("http://127.0.0.1:{site}/"))
        .await?;
    // Logged in: Converse says so through its API.
    wait_until(browser, Duration::from_secs(60), "Converse.js logs in over WebSocket", &format!(
        "return !!(window.rookeryApi && window.rookeryApi.connection.connected() && window.rookeryApi.user.jid() && window.rookeryApi.user.jid().startsWith('alice@{DOMAIN}/'))"
    ))
    .await?;
    browser.screenshot("node-web-converse-logged-in").await?;
    browser
        .client
        .execute(
            "return window.rookeryApi.chats.open(arguments[0], {}, true).then(() => true)",
            vec![serde_json::json!(bob)],
        )
        .await?;
    // Typed into the chat box and sent with Enter, as a person would.
    let textarea = browser
        .wait_for_within("textarea.chat-textarea", Duration::from_secs(20))
        .await?;
    textarea.click().await?;
    textarea.send_keys(FROM_BROWSER).await?;
    textarea.send_keys("\u{E007}").await?;
    wait_until(
        browser,
        Duration::from_secs(60),
        "bob's answer arrives in Converse.js",
        &format!(
            "return window.rookeryApi.chats.get('{bob}').then(c => !!c && c.messages.models.some(m => m.get('body') === '{REPLY}'))"
        ),
    )
    .await?;
    // Let the chat view render the answer before the picture.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    browser.screenshot("node-web-converse-conversation").await?;
    let text: serde_json::Value = browser
        .client
        .execute("return document.body.innerText", vec![])
        .await?;
    let text = text.as_str().unwrap_or_default();
    anyhow::ensure!(
        text.contains(FROM_BROWSER) && text.contains(REPLY),
        "the chat view shows both messages; it shows:\n{text}"
    );
    Ok(())
}

/// Waits until the script returns true (promises are awaited).
async fn wait_until(
    browser: &Browser,
    timeout: Duration,
    what: &str,
    script: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let wrapped = format!(
        "const done = arguments[arguments.length - 1]; \
         Promise.resolve((() => {{ try {{ {script} }} catch (e) {{ return false; }} }})()).then(v => done(!!v), () => done(false));"
    );
    loop {
        let ok = browser
            .client
            .execute_async(&wrapped, vec![])
            .await
            .map(|v| v.as_bool() == Some(true))
            .unwrap_or(false);
        if ok {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out: {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
