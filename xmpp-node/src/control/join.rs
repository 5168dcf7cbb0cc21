//! Enrollment: `rookery-node join <panel-url> --token <token>` tells a panel about this
//! node (name, public host, client ports, control URL, the control certificate's SHA-256,
//! capacity, labels) with a one-time join token, and stores what the panel answers in
//! `<data_dir>/control.json`: the node's id and the digest of the secret the panel will
//! present. This is how a node from a pre-configured image joins the pool; a running
//! `serve` starts its control API within a second of the file appearing.
//!
//! The panel is reached over HTTPS, trusting `--panel-ca` if given, else the web's public
//! roots (webpki-roots); plain `http://` only to a loopback address (demos and tests).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use reqwest::Url;
use rookery_common::control::{ApiError, JoinRequest, JoinResponse};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};
use sha2::{Digest, Sha256};

use super::Credentials;
use crate::config::NodeSettings;

/// What the command line says beside the settings.
#[derive(Debug, Clone, Default)]
pub struct JoinArgs {
    pub panel_url: String,
    pub token: String,
    pub name: Option<String>,
    pub public_host: Option<String>,
    pub control_url: Option<String>,
    pub labels: Vec<(String, String)>,
    pub max_vhosts: Option<i64>,
    pub max_sessions: Option<i64>,
    pub panel_ca: Option<PathBuf>,
}

/// `key=value`, as `--label` takes it.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s} is not key=value")),
    }
}

/// The panel's URL: HTTPS, or HTTP to a loopback address only.
pub fn check_panel_url(url: &str) -> anyhow::Result<Url> {
    let parsed = Url::parse(url.trim()).with_context(|| format!("{url} is not a URL"))?;
    match parsed.scheme() {
        "https" => {}
        "http" if is_loopback(&parsed) => {}
        "http" => bail!(
            "{url}: the panel must be reached over https:// (plain http:// only to a loopback address)"
        ),
        other => bail!("{url}: {other}:// is not a panel URL; use https://"),
    }
    anyhow::ensure!(parsed.host().is_some(), "{url} names no host");
    Ok(parsed)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// `https://<control_listen>`, with `public_host` in place of an unspecified address.
pub fn default_control_url(listen: SocketAddr, public_host: &str) -> String {
    let host = match listen.ip() {
        ip if ip.is_unspecified() => public_host.to_string(),
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!("https://{host}:{}", listen.port())
}

/// The request this node sends, from its settings and the command line.
pub fn join_request(
    settings: &NodeSettings,
    args: &JoinArgs,
    control_cert_sha256: &str,
) -> JoinRequest {
    let public_host = args
        .public_host
        .clone()
        .unwrap_or_else(|| settings.public_host.clone());
    let mut capacity = settings.capacity.clone();
    if let Some(v) = args.max_vhosts {
        capacity.max_vhosts = v;
    }
    if let Some(s) = args.max_sessions {
        capacity.max_sessions = s;
    }
    let mut labels: BTreeMap<String, String> = settings.labels.clone();
    labels.extend(args.labels.iter().cloned());
    JoinRequest {
        token: args.token.clone(),
        name: args.name.clone().unwrap_or_else(|| public_host.clone()),
        control_url: args
            .control_url
            .clone()
            .unwrap_or_else(|| default_control_url(settings.control_listen, &public_host)),
        public_host,
        c2s_port: settings.c2s_listen.port(),
        c2s_tls_port: settings.c2s_tls_listen.port(),
        control_cert_sha256: control_cert_sha256.to_string(),
        capacity,
        labels,
        version: crate::VERSION.into(),
    }
}

/// An HTTP client that trusts `panel_ca`, or else the web's public roots.
fn client(panel_ca: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut roots = RootCertStore::empty();
    match panel_ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("parsing {}", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", path.display());
            for c in certs {
                roots
                    .add(c)
                    .with_context(|| format!("{} cannot be a trust anchor", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots)
            .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

/// Enrolls this node and stores its credentials; returns them.
pub async fn join(settings: &NodeSettings, args: &JoinArgs) -> anyhow::Result<Credentials> {
    anyhow::ensure!(!args.token.trim().is_empty(), "the join token is empty");
    let panel = check_panel_url(&args.panel_url)?;
    let cert = super::control_cert(settings)?;
    let request = join_request(settings, args, &cert.sha256);
    // Under the panel's URL, whatever path prefix it has.
    let endpoint = format!("{}/api/nodes/join", panel.as_str().trim_end_matches('/'));
    let response = client(args.panel_ca.as_deref())?
        .post(endpoint.clone())
        .json(&request)
        .send()
        .await
        .with_context(|| format!("reaching the panel at {endpoint}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .context("reading the panel's answer")?;
    if !status.is_success() {
        if let Ok(e) = serde_json::from_slice::<ApiError>(&body) {
            bail!(
                "the panel refused to enroll this node: {} ({})",
                e.message,
                e.code
            );
        }
        let text = String::from_utf8_lossy(&body);
        bail!(
            "the panel answered {status}: {}",
            text.chars().take(300).collect::<String>()
        );
    }
    let joined: JoinResponse = serde_json::from_slice(&body)
        .with_context(|| format!("the panel's answer is not a join response ({status})"))?;
    anyhow::ensure!(
        !joined.secret.is_empty() && !joined.node_id.is_empty(),
        "the panel's answer has no node id or secret"
    );
    let credentials = Credentials {
        node_id: joined.node_id,
        panel_url: panel.as_str().trim_end_matches('/').to_string(),
        secret_sha256: hex::encode(Sha256::digest(joined.secret.as_bytes())),
    };
    credentials.save(&settings.data_dir)?;
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_urls_are_https_except_on_loopback() {
        assert!(check_panel_url("https://panel.example.com").is_ok());
        assert!(check_panel_url("http://127.0.0.1:8080").is_ok());
        assert!(check_panel_url("http://localhost:8080/").is_ok());
        assert!(check_panel_url("http://[::1]:8080").is_ok());
        let e = check_panel_url("http://panel.example.com")
            .unwrap_err()
            .to_string();
        assert!(e.contains("https://"), "{e}");
        assert!(check_panel_url("ftp://panel.example.com").is_err());
        assert!(check_panel_url("panel.example.com").is_err());
    }

    #[test]
    fn the_request_combines_settings_and_command_line() {
        let mut settings = NodeSettings::default();
        settings.labels.insert("region".into(), "eu-west".into());
        settings.control_listen = "0.0.0.0:5290".parse().unwrap();
        let args = JoinArgs {
            token: "t0ken".into(),
            public_host: Some("node1.example.net".into()),
            labels: vec![parse_label("disk=ssd").unwrap()],
            max_sessions: Some(5000),
            ..JoinArgs::default()
        };
        let r = join_request(&settings, &args, "ab12");
        assert_eq!(r.name, "node1.example.net");
        assert_eq!(r.control_url, "https://node1.example.net:5290");
        assert_eq!((r.c2s_port, r.c2s_tls_port), (5222, 5223));
        assert_eq!(r.capacity.max_sessions, 5000);
        assert_eq!(r.capacity.max_vhosts, 1000);
        assert_eq!(r.labels.len(), 2);
        assert_eq!(r.control_cert_sha256, "ab12");
        assert_eq!(
            default_control_url("[::1]:5290".parse().unwrap(), "x"),
            "https://[::1]:5290"
        );
        assert!(parse_label("novalue").is_err() && parse_label("=v").is_err());
    }
}
