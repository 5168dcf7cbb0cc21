//! TLS client settings for probes: which certificates a node must present.
//!
//! In production the public web PKI ([`tls_config_webpki`]); in tests and private
//! deployments, the CA or self-signed certificates given as PEM files
//! ([`tls_config_with_roots`]). Either way the certificate is checked for the domain's
//! name, and session resumption is off so every probe verifies the certificate again.

use std::{path::Path, sync::Arc};

use anyhow::{Context, ensure};
use rustls::{
    ClientConfig, RootCertStore,
    client::Resumption,
    pki_types::{CertificateDer, pem::PemObject},
};

/// Trusts the Mozilla root programme's CAs (webpki-roots).
pub fn tls_config_webpki() -> Arc<ClientConfig> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Arc::new(client_config(roots))
}

/// Trusts exactly the certificates in these PEM files (CA certificates, or a node's
/// self-signed certificate, which then serves as its own trust anchor).
pub fn tls_config_with_roots<P: AsRef<Path>>(pem_files: &[P]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut pems = Vec::new();
    for file in pem_files {
        let file = file.as_ref();
        pems.push(
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        );
    }
    tls_config_with_pems(&pems)
}

/// Like [`tls_config_with_roots`], with the PEM text itself (what the panel hands a remote
/// probe location).
pub fn tls_config_with_pems(pems: &[String]) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    for (n, pem) in pems.iter().enumerate() {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.with_context(|| format!("a certificate in trust root {}", n + 1))?;
            roots
                .add(cert)
                .with_context(|| format!("a trust anchor from trust root {}", n + 1))?;
        }
    }
    ensure!(!roots.is_empty(), "no certificates in the trust roots");
    Ok(Arc::new(client_config(roots)))
}

fn client_config(roots: RootCertStore) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // A resumed session skips certificate verification: a probe must check it every time.
    config.resumption = Resumption::disabled();
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_web_pki_config_builds_with_the_bundled_roots() {
        assert!(!webpki_roots::TLS_SERVER_ROOTS.is_empty());
        let config = tls_config_webpki();
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn a_file_without_certificates_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        assert!(tls_config_with_roots(&[&empty]).is_err());
        assert!(tls_config_with_roots(&[dir.path().join("missing.pem")]).is_err());
    }
}
