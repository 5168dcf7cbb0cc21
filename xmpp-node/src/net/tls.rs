//! TLS for client connections: one certificate per virtual host, chosen by SNI, plus a
//! node-wide fallback. A vhost without a configured certificate gets a self-signed one,
//! generated once and kept under `<data_dir>/certs/`, so a new node works at once.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use anyhow::Context;
use rustls::{
    ServerConfig,
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use crate::store::Vhost;

/// Picks the certificate for the name a client asks for.
#[derive(Debug)]
pub struct CertResolver {
    by_domain: RwLock<HashMap<String, Arc<CertifiedKey>>>,
    fallback: Arc<CertifiedKey>,
    certs_dir: PathBuf,
}

impl CertResolver {
    /// A resolver with the fallback certificate (configured, or self-signed for `localhost`).
    pub fn new(data_dir: &Path, fallback: Option<(&Path, &Path)>) -> anyhow::Result<Self> {
        let certs_dir = data_dir.join("certs");
        let fallback = match fallback {
            Some((cert, key)) => load_pem(cert, key)?,
            None => self_signed(&certs_dir, "localhost")?,
        };
        Ok(Self {
            by_domain: RwLock::new(HashMap::new()),
            fallback: Arc::new(fallback),
            certs_dir,
        })
    }

    /// Makes the resolver serve exactly these vhosts (loading or generating certificates).
    pub fn set_vhosts(&self, vhosts: &[Vhost]) -> anyhow::Result<()> {
        let mut next = HashMap::new();
        for v in vhosts {
            let key = match (&v.cert_path, &v.key_path) {
                (Some(c), Some(k)) => load_pem(Path::new(c), Path::new(k))
                    .with_context(|| format!("certificate of {}", v.domain))?,
                _ => self_signed(&self.certs_dir, &v.domain)?,
            };
            next.insert(v.domain.clone(), Arc::new(key));
        }
        *self.by_domain.write().unwrap_or_else(|p| p.into_inner()) = next;
        Ok(())
    }

    /// The certificate of a hosted domain (not the fallback): offered to peers on
    /// server-to-server streams for SASL EXTERNAL.
    pub fn for_domain(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.by_domain
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .cloned()
    }

    fn lookup(&self, name: &str) -> Arc<CertifiedKey> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.by_domain
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name)
            .cloned()
            .unwrap_or_else(|| self.fallback.clone())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match hello.server_name() {
            Some(name) => self.lookup(name),
            None => self.fallback.clone(),
        })
    }
}

/// The server TLS configuration; `alpn` for direct TLS (XEP-0368: `xmpp-client`).
pub fn server_config(resolver: Arc<CertResolver>, alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS configuration serving one certificate (the control API's), for HTTP/1.1.
pub fn single_cert_config(key: Arc<CertifiedKey>) -> Arc<ServerConfig> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A certificate chain and key from PEM files.
pub fn load_pem(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the key {}", key.display()))?;
    let signing =
        any_supported_type(&key).map_err(|e| anyhow::anyhow!("unsupported private key: {e}"))?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Loads `<dir>/<domain>.crt`/`.key`, creating a self-signed pair the first time.
fn self_signed(dir: &Path, domain: &str) -> anyhow::Result<CertifiedKey> {
    let (cert, key) = (
        dir.join(format!("{domain}.crt")),
        dir.join(format!("{domain}.key")),
    );
    if !cert.exists() || !key.exists() {
        generate_self_signed(&cert, &key, vec![domain.to_string(), format!("*.{domain}")])?;
        tracing::warn!(
            domain,
            cert = %cert.display(),
            "no certificate configured for {domain}: generated a self-signed one (clients will not trust it; configure a real certificate for production)"
        );
    }
    load_pem(&cert, &key)
}

/// Writes a new self-signed certificate for `names` (host names or IP addresses) to
/// `cert` and its key to `key` (mode 0600).
pub fn generate_self_signed(cert: &Path, key: &Path, names: Vec<String>) -> anyhow::Result<()> {
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .context("generating a self-signed certificate")?;
    std::fs::write(cert, generated.cert.pem())
        .with_context(|| format!("writing {}", cert.display()))?;
    write_private(key, generated.signing_key.serialize_pem().as_bytes())
}

/// Writes a file only its owner may read (mode 0600 from the start).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vhost_gets_its_own_certificate_and_unknown_names_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let r = CertResolver::new(dir.path(), None).unwrap();
        let v = |d: &str| Vhost {
            domain: d.into(),
            cert_path: None,
            key_path: None,
            debug_log: false,
            policy: None,
        };
        r.set_vhosts(&[v("a.example"), v("b.example")]).unwrap();
        let (a, b, other) = (
            r.lookup("a.example"),
            r.lookup("B.Example."),
            r.lookup("c.example"),
        );
        assert_ne!(a.cert[0], b.cert[0]);
        assert_eq!(other.cert[0], r.fallback.cert[0]);
        // Generated once, then kept: a second resolver loads the same certificate.
        let again = CertResolver::new(dir.path(), None).unwrap();
        again.set_vhosts(&[v("a.example")]).unwrap();
        assert_eq!(again.lookup("a.example").cert[0], a.cert[0]);
        // Removing a vhost takes its certificate out of service.
        r.set_vhosts(&[v("b.example")]).unwrap();
        assert_eq!(r.lookup("a.example").cert[0], r.fallback.cert[0]);
    }
}
