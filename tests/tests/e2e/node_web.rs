//! Web clients on a real node: Converse.js (from npm, `tests/js`) in headless Chromium logs
//! in over XMPP-over-WebSocket (RFC 7395) on the node's HTTP port and chats with a slixmpp
//! client on c2s (`tests/python/web_scenario.py`), and the same over BOSH (XEP-0206); the
//! conversations end up in `target/screenshots/node-web-converse-{websocket,bosh}-conversation.png`.

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
const FROM_BROWSER: &str = "Hello from Converse.js in Chromium";
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
    converse_chats_with_slixmpp(Transport::WebSocket).await
}

/// The same conversation with Converse.js over BOSH (XEP-0206).
#[tokio::test]
async fn node_web_converse_chats_with_slixmpp_over_bosh() -> anyhow::Result<()> {
    converse_chats_with_slixmpp(Transport::Bosh).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    WebSocket,
    Bosh,
}

async fn converse_chats_with_slixmpp(transport: Transport) -> anyhow::Result<()> {
    let dist = converse_dist().await?;
    let node = NodeProcess::start().await?;
    node.provision(DOMAIN, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await?;
    node.wait_for_vhost(DOMAIN).await?;
    let ws = format!("ws://127.0.0.1:{}/xmpp-websocket", node.http_port);
    let bosh = format!("http://127.0.0.1:{}/http-bind", node.http_port);
    let site = serve_site(
        match transport {
            Transport::WebSocket => page(&ws, "", &format!("alice@{DOMAIN}"), "pass-alice-1"),
            Transport::Bosh => page("", &bosh, &format!("alice@{DOMAIN}"), "pass-alice-1"),
        },
        dist,
    )
    .await?;
    let browser = Browser::start().await?;

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
    let name = match transport {
        Transport::WebSocket => "websocket",
        Transport::Bosh => "bosh",
    };
    let outcome = chat_from_the_browser(&browser, site, name).await;
    if outcome.is_err() {
        let _ = browser
            .screenshot(&format!("node-web-converse-{name}-failure"))
            .await;
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
        "it comes from alice's browser session",
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
async fn chat_from_the_browser(browser: &Browser, site: u16, name: &str) -> anyhow::Result<()> {
    let bob = format!("bob@{DOMAIN}");
    browser
        .client
        .goto(&format!("http://127.0.0.1:{site}/"))
        .await?;
    // Logged in: Converse says so through its API.
    wait_until(browser, Duration::from_secs(60), "Converse.js logs in", &format!(
        "return !!(window.rookeryApi && window.rookeryApi.connection.connected() && window.rookeryApi.user.jid() && window.rookeryApi.user.jid().startsWith('alice@{DOMAIN}/'))"
    ))
    .await?;
    browser
        .screenshot(&format!("node-web-converse-{name}-logged-in"))
        .await?;
    // Over the transport under test: Strophe's connection names its service URL.
    let service: serde_json::Value = browser
        .client
        .execute("return window.rookeryApi.connection.get().service", vec![])
        .await?;
    let service = service.as_str().unwrap_or_default();
    let expected = if name == "bosh" {
        "/http-bind"
    } else {
        "ws://"
    };
    anyhow::ensure!(
        service.contains(expected),
        "Converse.js connected through {service:?}, not {name}"
    );
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
    browser
        .screenshot(&format!("node-web-converse-{name}-conversation"))
        .await?;
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

/// The HTTP port answers HTTPS with the vhost's certificate (chosen by SNI) and plain HTTP
/// on the same socket; WebSocket upgrades need the `xmpp` subprotocol, and a `wss://`
/// stream opens with `<open/>` (RFC 7395 §3.4).
#[tokio::test]
async fn node_web_the_http_port_serves_https_and_http_and_xmpp_over_wss() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = NodeProcess::start().await?;
    node.provision(DOMAIN, &[("alice", "pass-alice-1")]).await?;
    node.wait_for_vhost(DOMAIN).await?;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], node.http_port).into();
    let pem = std::fs::read(node.cert_of(DOMAIN))?;

    // HTTPS, the certificate checked against web.test.
    let https = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
        .resolve(DOMAIN, addr)
        .build()?;
    let url = format!(
        "https://{DOMAIN}:{}/.well-known/host-meta.json",
        node.http_port
    );
    let answer = https.get(&url).send().await?;
    anyhow::ensure!(answer.status().is_success(), "{url}: {}", answer.status());
    let doc: serde_json::Value = answer.json().await?;
    let rels: Vec<&str> = doc["links"]
        .as_array()
        .map(|l| l.iter().filter_map(|l| l["rel"].as_str()).collect())
        .unwrap_or_default();
    anyhow::ensure!(
        rels.contains(&"urn:xmpp:alt-connections:websocket"),
        "host-meta over HTTPS lists the WebSocket endpoint: {doc}"
    );
    // Plain HTTP on the same port.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/healthz", node.http_port)).await?;
    anyhow::ensure!(plain.status().is_success());
    // Without the xmpp subprotocol, no upgrade.
    let refused = upgrade(tokio::net::TcpStream::connect(addr).await?, DOMAIN, None).await?;
    anyhow::ensure!(refused.starts_with("HTTP/1.1 400"), "{refused}");

    // wss://: TLS, the upgrade, then <open/> answered by <open/> and the stream features.
    let mut roots = rustls::RootCertStore::empty();
    let cert = rustls::pki_types::pem::PemObject::from_pem_slice(&pem)?;
    roots.add(cert)?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(DOMAIN)?;
    let mut tls = connector
        .connect(name, tokio::net::TcpStream::connect(addr).await?)
        .await?;
    let head = upgrade(&mut tls, DOMAIN, Some("xmpp")).await?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    anyhow::ensure!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: xmpp"),
        "{head}"
    );
    let open =
        format!("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{DOMAIN}' version='1.0'/>");
    tls.write_all(&client_frame(&open)).await?;
    let first = read_frame(&mut tls).await?;
    anyhow::ensure!(
        first.starts_with("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing'")
            && first.contains(&format!("from=\"{DOMAIN}\"")),
        "{first}"
    );
    let features = read_frame(&mut tls).await?;
    anyhow::ensure!(
        features.starts_with("<stream:features xmlns:stream=")
            && features.contains("SCRAM-SHA-256")
            && !features.contains("starttls"),
        "over wss SASL is offered at once, and no STARTTLS: {features}"
    );
    tls.write_all(&client_frame(
        "<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
    ))
    .await?;
    let close = read_frame(&mut tls).await?;
    anyhow::ensure!(close.starts_with("<close "), "{close}");
    let _ = tls.shutdown().await;
    let _ = &mut tls.read(&mut [0u8; 1]).await;
    Ok(())
}

/// Sends a WebSocket upgrade request for `/xmpp-websocket`; returns the response head.
async fn upgrade<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    protocol: Option<&str>,
) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let protocol = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /xmpp-websocket HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A masked text frame, as clients send them (RFC 6455 §5.2).
fn client_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81];
    if payload.len() < 126 {
        frame.push(0x80 | payload.len() as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads one unmasked frame from the server; its payload as text.
async fn read_frame<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut head)).await??;
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            stream.read_exact(&mut l).await?;
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            stream.read_exact(&mut l).await?;
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await?;
    Ok(String::from_utf8_lossy(&payload).into_owned())
}

/// BOSH (XEP-0206) at `/http-bind`, scripted from Python with urllib
/// (`tests/python/bosh_scenario.py`): a session logs in, binds, chats with a slixmpp client
/// on c2s, and terminates; a wrong rid ends a session.
#[tokio::test]
async fn node_web_bosh_sessions_log_in_and_chat() {
    let node = NodeProcess::start().await.unwrap();
    node.provision(DOMAIN, &[("alice", "pass-alice-1"), ("bob", "pass-bob-1")])
        .await
        .unwrap();
    node.wait_for_vhost(DOMAIN).await.unwrap();
    let port = node.http_port.to_string();
    node.scenario(
        "bosh_scenario.py",
        DOMAIN,
        &[&port],
        &[
            "bob logs in over TCP",
            "a BOSH session starts with its sid and the stream features",
            "alice authenticates over BOSH",
            "the restarted stream offers bind",
            "alice binds a resource",
            "bob gets alice's message sent over BOSH",
            "alice receives bob's answer in a BOSH response",
            "terminate ends the session",
            "the ended session is unknown",
            "a wrong rid ends the session with item-not-found",
        ],
        Duration::from_secs(120),
    )
    .await;
}
