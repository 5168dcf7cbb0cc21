//! A certificate authority made by a test, for servers that must verify each other (XMPP
//! federation between Rookery nodes, Prosody and ejabberd): each server gets a certificate
//! for its domains signed by the CA, and each is told to trust the CA's certificate.

use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long the CA's and its certificates are valid, from a day ago. Short on purpose:
/// rcgen's default (until the year 4096) crashes ejabberd 23.01, whose certificate store
/// sets a timer for each certificate's expiry and Erlang timers reach 49 days at most.
const VALIDITY: time::Duration = time::Duration::days(30);

/// Sets `params` valid from a day ago (clocks of servers in a test may differ a little)
/// for [`VALIDITY`].
fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + VALIDITY;
}

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

/// A certificate issued by a [`TestCa`]: the chain (the server's certificate, then the
/// CA's) and the private key, both PEM.
pub struct IssuedCert {
    pub chain_pem: String,
    pub key_pem: String,
}

impl IssuedCert {
    /// Writes `<dir>/<stem>.crt` (the chain) and `<dir>/<stem>.key`, the file pair that
    /// Rookery nodes (`<data_dir>/certs/<domain>.*`) and Prosody read.
    pub fn write_pair(&self, dir: &Path, stem: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{stem}.crt")), &self.chain_pem)?;
        std::fs::write(dir.join(format!("{stem}.key")), &self.key_pem)?;
        Ok(())
    }

    /// The chain and the key in one PEM file (what ejabberd's `certfiles` read).
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.chain_pem, self.key_pem)
    }
}

impl TestCa {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        set_validity(&mut params);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("making the test CA's key")?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// The CA's certificate, PEM: what servers are told to trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes the CA's certificate to `path`.
    pub fn write_cert(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, &self.cert_pem).with_context(|| format!("writing {path:?}"))
    }

    /// A certificate for `names` (DNS names; the first is also the common name), good for
    /// TLS servers and clients: servers present it in both roles on s2s links.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<IssuedCert> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        set_validity(&mut params);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().context("making a server key")?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_chain_to_the_ca() {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let ca = TestCa::new("Test CA").unwrap();
        let issued = ca.issue(&["a.test", "conference.a.test"]).unwrap();
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(chain.len(), 2);
        let ca_der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
        assert_eq!(chain[1], ca_der);
        assert!(issued.combined_pem().contains("PRIVATE KEY"));
    }
}
