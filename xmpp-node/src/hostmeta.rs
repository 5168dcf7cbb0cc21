//! XEP-0156 Discovering Alternative XMPP Connection Methods over HTTP: the node's HTTP port
//! answers `GET /.well-known/host-meta` (an XRD document, RFC 6415) and
//! `/.well-known/host-meta.json` (its JRD form) for the vhost the `Host` header names, and
//! 404 for any other host.
//!
//! The documents list the HTTP connection methods XEP-0156 defines (WebSocket, RFC 7395,
//! and BOSH, XEP-0206) that the node offers for the vhost, all of them from one place,
//! [`alt_connections`], under the node's public HTTP base URL. Direct TLS
//! (XEP-0368) is announced in DNS SRV records, which host-meta does not carry.
//!
//! Browsers fetch these documents from other origins, so every answer carries
//! `Access-Control-Allow-Origin: *` (XEP-0156 §3.3 recommends it).

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};

use crate::{node::Node, proto::element::escape_attr, store::normalize_domain};

/// The link relation of a connection method (XEP-0156 §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AltMethod {
    /// XMPP over WebSocket (RFC 7395): a `wss://` URL.
    WebSocket,
    /// BOSH (XEP-0124, XEP-0206): an `https://` URL.
    Bosh,
}

impl AltMethod {
    pub fn rel(self) -> &'static str {
        match self {
            AltMethod::WebSocket => "urn:xmpp:alt-connections:websocket",
            AltMethod::Bosh => "urn:xmpp:alt-connections:xbosh",
        }
    }
}

/// One connection method a vhost's clients may use, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AltConnection {
    pub method: AltMethod,
    pub href: String,
}

/// The HTTP connection methods the node offers for `domain`, the one list both documents
/// are made from: WebSocket and BOSH under the node's public HTTP base URL
/// ([`crate::config::NodeSettings::public_http_url`]).
pub fn alt_connections(node: &Node, domain: &str) -> Vec<AltConnection> {
    let base = node.settings.node.public_http_base(domain);
    let websocket = match base.split_once("://") {
        Some(("https", rest)) => format!("wss://{rest}"),
        Some(("http", rest)) => format!("ws://{rest}"),
        _ => base.clone(),
    };
    vec![
        AltConnection {
            method: AltMethod::WebSocket,
            href: format!("{websocket}/xmpp-websocket"),
        },
        AltConnection {
            method: AltMethod::Bosh,
            href: format!("{base}/http-bind"),
        },
    ]
}

/// The XRD document listing `links`.
pub fn xrd(links: &[AltConnection]) -> String {
    let mut out = String::from(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n",
    );
    for link in links {
        out.push_str("  <Link rel=\"");
        escape_attr(link.method.rel(), &mut out);
        out.push_str("\" href=\"");
        escape_attr(&link.href, &mut out);
        out.push_str("\"/>\n");
    }
    out.push_str("</XRD>\n");
    out
}

/// The JRD (JSON) document listing `links`.
pub fn jrd(links: &[AltConnection]) -> String {
    let links: Vec<serde_json::Value> = links
        .iter()
        .map(|l| serde_json::json!({"rel": l.method.rel(), "href": l.href}))
        .collect();
    serde_json::json!({ "links": links }).to_string()
}

/// The host-meta routes, for the node's HTTP port.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/.well-known/host-meta", get(get_host_meta))
        .route("/.well-known/host-meta.json", get(get_host_meta_json))
        .with_state(node)
}

async fn get_host_meta(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    answer(&node, &headers, "application/xrd+xml", xrd)
}

async fn get_host_meta_json(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    answer(&node, &headers, "application/json", jrd)
}

fn answer(
    node: &Node,
    headers: &HeaderMap,
    content_type: &'static str,
    render: fn(&[AltConnection]) -> String,
) -> Response {
    let Some(domain) = requested_vhost(headers).filter(|d| node.is_hosted(d)) else {
        return (StatusCode::NOT_FOUND, "no such host\n").into_response();
    };
    let mut response = render(&alt_connections(node, &domain)).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    response
}

/// The domain the `Host` header names, without its port, normalised as JIDs carry it.
fn requested_vhost(headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    if host.starts_with('[') {
        return None; // an IPv6 literal is no vhost
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    normalize_domain(name.strip_suffix('.').unwrap_or(name)).ok()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http_body_util::BodyExt;
    use serde_json::json;
    use tower::ServiceExt;

    use super::*;
    use crate::node::testing::node_with_spec;

    async fn get(app: &Router, path: &str, host: &str) -> (StatusCode, HeaderMap, String) {
        let resp = app
            .clone()
            .oneshot(
                axum::http::Request::get(path)
                    .header(header::HOST, host)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn a_hosted_vhost_gets_both_documents_with_cors_and_its_websocket_url() {
        let (node, _dir) =
            node_with_spec(json!({"domain": "example.com", "generation": 1}), &[]).await;
        let app = router(node);
        let (status, headers, body) = get(&app, "/.well-known/host-meta", "Example.COM:5280").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/xrd+xml");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(
            body.contains("<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>"),
            "{body}"
        );
        assert!(
            body.contains("<Link rel=\"urn:xmpp:alt-connections:websocket\" href=\"wss://127.0.0.1:5280/xmpp-websocket\"/>"),
            "{body}"
        );

        let (status, headers, body) = get(&app, "/.well-known/host-meta.json", "example.com").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            doc,
            json!({"links": [{
                "rel": "urn:xmpp:alt-connections:websocket",
                "href": "wss://127.0.0.1:5280/xmpp-websocket",
            }, {
                "rel": "urn:xmpp:alt-connections:xbosh",
                "href": "https://127.0.0.1:5280/http-bind",
            }]})
        );
    }

    #[tokio::test]
    async fn other_hosts_get_not_found() {
        let (node, _dir) =
            node_with_spec(json!({"domain": "example.com", "generation": 1}), &[]).await;
        let app = router(node);
        for host in [
            "example.net",
            "127.0.0.1:5280",
            "[::1]:5280",
            "example.com:x",
        ] {
            for path in ["/.well-known/host-meta", "/.well-known/host-meta.json"] {
                let (status, _, _) = get(&app, path, host).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{host} {path}");
            }
        }
    }

    #[test]
    fn links_render_as_xep_0156_shows_them() {
        let links = [
            AltConnection {
                method: AltMethod::Bosh,
                href: "https://web.example.com:5280/bosh?a=1&b=2".into(),
            },
            AltConnection {
                method: AltMethod::WebSocket,
                href: "wss://web.example.com:443/ws".into(),
            },
        ];
        let x = xrd(&links);
        assert!(x.contains(
            r#"<Link rel="urn:xmpp:alt-connections:xbosh" href="https://web.example.com:5280/bosh?a=1&amp;b=2"/>"#
        ), "{x}");
        assert!(x.contains(
            r#"<Link rel="urn:xmpp:alt-connections:websocket" href="wss://web.example.com:443/ws"/>"#
        ), "{x}");
        let j: serde_json::Value = serde_json::from_str(&jrd(&links)).unwrap();
        assert_eq!(
            j,
            json!({"links": [
                {"rel": "urn:xmpp:alt-connections:xbosh", "href": "https://web.example.com:5280/bosh?a=1&b=2"},
                {"rel": "urn:xmpp:alt-connections:websocket", "href": "wss://web.example.com:443/ws"},
            ]})
        );
    }
}
