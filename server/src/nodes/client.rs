//! Calls to a node's control API. The node's certificate is pinned: the panel learned its
//! SHA-256 at enrollment (through the one-time join token), so it needs no CA and trusts
//! nothing else; the node's secret travels as a bearer token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use reqwest::{Method, StatusCode};
use rookery_common::control::{
    AccountPage, ApiError, ApplyOutcome, NewAccount, NewPassword, NodeStatus, UsageReport,
    VhostData, VhostMove, VhostSpec, VhostSummary,
};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{WebPkiSupportedAlgorithms, ring::default_provider},
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How a node is reached.
#[derive(Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    pub control_url: String,
    pub cert_sha256: String,
    pub secret: String,
}

/// Why a call failed: the node answered with an error, or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the node answered {status}: {} ({})", .error.message, .error.code)]
    Refused { status: u16, error: ApiError },
    #[error("the node could not be reached: {0}")]
    Unreachable(String),
}

impl CallError {
    pub fn code(&self) -> Option<&str> {
        match self {
            CallError::Refused { error, .. } => Some(&error.code),
            CallError::Unreachable(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            CallError::Refused { status, .. } => Some(*status),
            CallError::Unreachable(_) => None,
        }
    }
}

/// One HTTP client per node (its pinned certificate is part of the TLS configuration).
#[derive(Default)]
pub struct NodeClients {
    timeout: Duration,
    clients: Mutex<HashMap<String, (String, reqwest::Client)>>,
}

impl NodeClients {
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            clients: Mutex::default(),
        }
    }

    pub fn get(&self, endpoint: &NodeEndpoint) -> NodeClient {
        let mut map = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let client = match map.get(&endpoint.control_url) {
            Some((pin, c)) if *pin == endpoint.cert_sha256 => c.clone(),
            _ => {
                let c = build_client(&endpoint.cert_sha256, self.timeout);
                map.insert(
                    endpoint.control_url.clone(),
                    (endpoint.cert_sha256.clone(), c.clone()),
                );
                c
            }
        };
        NodeClient {
            http: client,
            base: endpoint.control_url.trim_end_matches('/').to_string(),
            secret: endpoint.secret.clone(),
        }
    }
}

fn build_client(pin: &str, timeout: Duration) -> reqwest::Client {
    let provider = Arc::new(default_provider());
    let verifier = Arc::new(PinnedCert {
        sha256: hex::decode(pin).unwrap_or_default(),
        algorithms: provider.signature_verification_algorithms,
    });
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .expect("a client with a rustls configuration")
}

/// Accepts exactly the certificate whose SHA-256 was pinned, and checks the handshake
/// signature with its key (so only the holder of that key passes).
#[derive(Debug)]
struct PinnedCert {
    sha256: Vec<u8>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = Sha256::digest(end_entity.as_ref());
        if !self.sha256.is_empty() && bool::from(seen.as_slice().ct_eq(&self.sha256)) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the node's certificate is not the one pinned at enrollment".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A node's control API, ready to call.
pub struct NodeClient {
    http: reqwest::Client,
    base: String,
    secret: String,
}

/// Path segments are escaped: domains and user names come from people.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl NodeClient {
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, CallError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.secret);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Unreachable(error_chain(&e)))?;
        if status.is_success() {
            serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                CallError::Unreachable(format!("an answer the panel cannot read: {e}"))
            })
        } else {
            let error = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| ApiError {
                code: "unexpected".into(),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            });
            Err(CallError::Refused {
                status: status.as_u16(),
                error,
            })
        }
    }

    /// A request with raw bytes both ways (uploaded files during a move).
    async fn bytes(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CallError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.secret);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CallError::Unreachable(error_chain(&e)))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| CallError::Unreachable(error_chain(&e)))?;
        if status.is_success() {
            Ok(bytes.to_vec())
        } else {
            let error = serde_json::from_slice::<ApiError>(&bytes).unwrap_or_else(|_| ApiError {
                code: "unexpected".into(),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            });
            Err(CallError::Refused {
                status: status.as_u16(),
                error,
            })
        }
    }

    async fn expect<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        self.call(method, path, body)
            .await?
            .ok_or_else(|| CallError::Unreachable("an empty answer".into()))
    }

    pub async fn status(&self) -> Result<NodeStatus, CallError> {
        self.expect(Method::GET, "/v1/status", None::<&()>).await
    }

    pub async fn vhosts(&self) -> Result<Vec<VhostSummary>, CallError> {
        self.expect(Method::GET, "/v1/vhosts", None::<&()>).await
    }

    pub async fn usage(&self) -> Result<UsageReport, CallError> {
        self.expect(Method::GET, "/v1/usage", None::<&()>).await
    }

    pub async fn put_vhost(&self, spec: &VhostSpec) -> Result<ApplyOutcome, CallError> {
        self.expect(
            Method::PUT,
            &format!("/v1/vhosts/{}", seg(&spec.domain)),
            Some(spec),
        )
        .await
    }

    /// Removes a vhost and its data; one that is already gone counts as removed.
    pub async fn delete_vhost(&self, domain: &str) -> Result<(), CallError> {
        match self
            .call::<(), serde_json::Value>(
                Method::DELETE,
                &format!("/v1/vhosts/{}", seg(domain)),
                None,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn export(&self, domain: &str) -> Result<VhostData, CallError> {
        self.expect(
            Method::GET,
            &format!("/v1/vhosts/{}/export", seg(domain)),
            None::<&()>,
        )
        .await
    }

    pub async fn import(&self, data: &VhostData) -> Result<(), CallError> {
        self.call::<_, serde_json::Value>(
            Method::PUT,
            &format!("/v1/vhosts/{}/data", seg(&data.domain)),
            Some(data),
        )
        .await
        .map(|_| ())
    }

    /// The bytes of an uploaded file (XEP-0363) of a vhost, for a move.
    pub async fn upload_file(&self, domain: &str, id: &str) -> Result<Vec<u8>, CallError> {
        self.bytes(
            Method::GET,
            &format!("/v1/vhosts/{}/uploads/{}", seg(domain), seg(id)),
            None,
        )
        .await
    }

    /// Stores an uploaded file whose row came with the vhost's data.
    pub async fn put_upload_file(
        &self,
        domain: &str,
        id: &str,
        bytes: Vec<u8>,
    ) -> Result<(), CallError> {
        self.bytes(
            Method::PUT,
            &format!("/v1/vhosts/{}/uploads/{}", seg(domain), seg(id)),
            Some(bytes),
        )
        .await
        .map(|_| ())
    }

    /// Freezes a vhost for a move: no write of its data gets through until [`Self::thaw`]
    /// or its removal. With `redirect_to` its clients are also sent to that node.
    pub async fn freeze(&self, domain: &str, redirect_to: Option<&str>) -> Result<(), CallError> {
        let body = VhostMove {
            redirect_to: redirect_to.map(str::to_owned),
        };
        self.call::<_, serde_json::Value>(
            Method::PUT,
            &format!("/v1/vhosts/{}/move", seg(domain)),
            Some(&body),
        )
        .await
        .map(|_| ())
    }

    /// Ends a vhost's move on this node: its data may change again.
    pub async fn thaw(&self, domain: &str) -> Result<(), CallError> {
        self.call::<(), serde_json::Value>(
            Method::DELETE,
            &format!("/v1/vhosts/{}/move", seg(domain)),
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn accounts(
        &self,
        domain: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<AccountPage, CallError> {
        let mut path = format!("/v1/vhosts/{}/accounts?limit={limit}", seg(domain));
        if let Some(a) = after {
            path.push_str(&format!("&after={}", seg(a)));
        }
        self.expect(Method::GET, &path, None::<&()>).await
    }

    pub async fn create_account(
        &self,
        domain: &str,
        account: &NewAccount,
    ) -> Result<(), CallError> {
        self.call::<_, serde_json::Value>(
            Method::POST,
            &format!("/v1/vhosts/{}/accounts", seg(domain)),
            Some(account),
        )
        .await
        .map(|_| ())
    }

    pub async fn set_password(
        &self,
        domain: &str,
        username: &str,
        password: &NewPassword,
    ) -> Result<(), CallError> {
        self.call::<_, serde_json::Value>(
            Method::PUT,
            &format!(
                "/v1/vhosts/{}/accounts/{}/password",
                seg(domain),
                seg(username)
            ),
            Some(password),
        )
        .await
        .map(|_| ())
    }

    pub async fn delete_account(&self, domain: &str, username: &str) -> Result<(), CallError> {
        self.call::<(), serde_json::Value>(
            Method::DELETE,
            &format!("/v1/vhosts/{}/accounts/{}", seg(domain), seg(username)),
            None,
        )
        .await
        .map(|_| ())
    }
}

/// "error sending request: connection refused" rather than only the outer layer.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
