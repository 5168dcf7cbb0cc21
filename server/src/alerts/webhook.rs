//! Outgoing webhooks: one signed POST per attempt.
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! Rookery-Event-Id: <event id>            (the same on every retry)
//! Rookery-Signature: t=<now>,v1=<hex>     (see `signature`)
//! <the event's JSON, byte for byte as stored>
//! ```
//!
//! A 2xx answer within the timeout is a delivery; anything else (another status, a
//! redirect, which is not followed, a timeout, a refused connection) is a failed attempt
//! with its reason. Unless local targets are allowed, host names are resolved by a resolver
//! that drops loopback, private and link-local addresses, so a public name pointing inside
//! the platform's network reaches nothing.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::{
    rules,
    signature::{self, EVENT_ID_HEADER, SIGNATURE_HEADER},
};

/// At most this many characters of a failing answer's body go into the log.
const MAX_BODY_CHARS: usize = 200;

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub ok: bool,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// The HTTP client for webhooks (one per worker: it pools connections).
#[derive(Clone)]
pub struct WebhookSender {
    client: reqwest::Client,
    allow_local: bool,
}

impl WebhookSender {
    pub fn new(allow_local: bool, timeout: Duration) -> anyhow::Result<Self> {
        let tls = (*crate::probe::tls_config_webpki()).clone();
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Rookery-Webhooks/", env!("CARGO_PKG_VERSION")));
        if !allow_local {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Self {
            client: builder.build()?,
            allow_local,
        })
    }

    /// POSTs `body` to `url`, signed with `secret` at `now`.
    pub async fn post(
        &self,
        url: &str,
        secret: &str,
        event_id: &str,
        body: &str,
        now: i64,
    ) -> Posted {
        let failed = |error: String| Posted {
            ok: false,
            http_status: None,
            error: Some(error),
        };
        // Checked again: the rules (or the setting that relaxes them) may have changed.
        let url = match rules::webhook_url(url, self.allow_local) {
            Ok(Some(u)) => u,
            Ok(None) => return failed("no URL".into()),
            Err(why) => return failed(format!("the URL is not allowed: {why}")),
        };
        let response = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_ID_HEADER, event_id)
            .header(
                SIGNATURE_HEADER,
                signature::sign(secret, now, body.as_bytes()),
            )
            .body(body.to_string())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return failed(describe_error(&e)),
        };
        let status = response.status();
        if status.is_success() {
            return Posted {
                ok: true,
                http_status: Some(status.as_u16()),
                error: None,
            };
        }
        let detail = if status.is_redirection() {
            "redirects are not followed; use the final URL".to_string()
        } else {
            let text = read_some(response).await;
            if text.is_empty() {
                "the receiver did not answer with 2xx".to_string()
            } else {
                text
            }
        };
        Posted {
            ok: false,
            http_status: Some(status.as_u16()),
            error: Some(format!("HTTP {}: {detail}", status.as_u16())),
        }
    }
}

/// The start of a response body, as one line of printable text.
async fn read_some(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < 4 * MAX_BODY_CHARS {
        match tokio::time::timeout(Duration::from_secs(2), response.chunk()).await {
            Ok(Ok(Some(chunk))) => bytes.extend_from_slice(&chunk),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_BODY_CHARS)
        .collect();
    if text.chars().count() > MAX_BODY_CHARS {
        out.push('…');
    }
    out.trim().to_string()
}

/// "timed out", "connection refused" and the like, from the error's cause chain.
fn describe_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "no answer within the timeout".into();
    }
    let mut parts = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Resolves host names to their public addresses only.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| rules::is_public(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} has no public address (loopback, private and local addresses are not allowed)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::str::FromStr;

    use axum::{Router, http::HeaderMap, routing::post};

    #[tokio::test]
    async fn internal_urls_are_refused_before_any_request() {
        let sender = WebhookSender::new(false, Duration::from_secs(2)).unwrap();
        let posted = sender
            .post("https://localhost.:1/hook", "s", "e1", "{}", 0)
            .await;
        assert!(!posted.ok);
        assert!(posted.error.unwrap().contains("not allowed"));
    }

    #[tokio::test]
    async fn names_that_resolve_only_to_internal_addresses_resolve_to_nothing() {
        let resolved = PublicOnly
            .resolve(Name::from_str("localhost").unwrap())
            .await;
        let err = resolved
            .err()
            .expect("localhost has no public address")
            .to_string();
        assert!(err.contains("no public address"), "{err}");
    }

    /// A receiver on loopback answering `status`, which hands over what it got.
    async fn receiver(
        status: u16,
    ) -> (
        String,
        tokio::sync::mpsc::UnboundedReceiver<(HeaderMap, String)>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send((headers, body));
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        "receiver says no\nreally",
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, rx)
    }

    #[tokio::test]
    async fn a_webhook_is_posted_with_its_event_id_and_a_signature_that_verifies() {
        let (url, mut got) = receiver(204).await;
        let sender = WebhookSender::new(true, Duration::from_secs(5)).unwrap();
        let body = r#"{"type":"incident.opened","id":"evt-1"}"#;
        let posted = sender
            .post(&url, "whsec_x", "evt-1", body, 1_700_000_000)
            .await;
        assert_eq!(
            posted,
            Posted {
                ok: true,
                http_status: Some(204),
                error: None
            }
        );
        let (headers, received) = got.recv().await.unwrap();
        assert_eq!(received, body);
        assert_eq!(headers["rookery-event-id"], "evt-1");
        assert_eq!(headers["content-type"], "application/json");
        let sig = headers["rookery-signature"].to_str().unwrap();
        assert_eq!(
            signature::verify("whsec_x", sig, received.as_bytes(), 1_700_000_010, 300),
            Ok(())
        );
    }

    #[tokio::test]
    async fn a_non_2xx_answer_fails_with_its_status_and_the_start_of_its_body() {
        let (url, _got) = receiver(500).await;
        let sender = WebhookSender::new(true, Duration::from_secs(5)).unwrap();
        let posted = sender.post(&url, "s", "e", "{}", 0).await;
        assert!(!posted.ok);
        assert_eq!(posted.http_status, Some(500));
        assert_eq!(
            posted.error.as_deref(),
            Some("HTTP 500: receiver says no really")
        );
        let (url, _got) = receiver(302).await;
        let posted = sender.post(&url, "s", "e", "{}", 0).await;
        assert_eq!(posted.http_status, Some(302));
        assert!(posted.error.unwrap().contains("redirects are not followed"));
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_failed_attempt_with_its_reason() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let sender = WebhookSender::new(true, Duration::from_secs(2)).unwrap();
        let posted = sender
            .post(&format!("http://127.0.0.1:{port}/hook"), "s", "e1", "{}", 0)
            .await;
        assert!(!posted.ok);
        assert_eq!(posted.http_status, None);
        assert!(posted.error.is_some());
    }
}
