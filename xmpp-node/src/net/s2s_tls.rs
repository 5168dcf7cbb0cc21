//! TLS for server-to-server streams (issue 10 groundwork): which domains a peer's
//! certificate proves, and the trust anchors that decide it.
//!
//! A peer presents its server certificate as a TLS client certificate on the streams it
//! opens to us. Public CAs increasingly issue certificates for server authentication only
//! (no clientAuth usage), so rustls' client-certificate verifier, which demands that usage,
//! would refuse most of the network. Instead the handshake asks for a certificate and
//! accepts any ([`AnyClientCert`]: the TLS signatures are still checked, so the peer holds
//! the key), and the stream then asks [`verified_domains`] which of the domains it claims
//! the certificate is valid for: chain to a trust anchor, serverAuth usage, in date, the
//! name in its subjectAltNames. A certificate that proves nothing leaves dialback.

use std::{path::Path, sync::Arc};

use anyhow::Context;
use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime, pem::PemObject},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

/// The CAs peer certificates must chain to: the public web PKI's, plus the PEM file of
/// the configuration (a private CA for tests and private federations).
pub fn trust_anchors(extra_ca: Option<&Path>) -> anyhow::Result<Vec<TrustAnchor<'static>>> {
    let mut anchors: Vec<TrustAnchor<'static>> = webpki_roots::TLS_SERVER_ROOTS.to_vec();
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for der in CertificateDer::pem_slice_iter(&pem) {
            let der =
                der.with_context(|| format!("reading a certificate of {}", path.display()))?;
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .with_context(|| format!("a CA certificate of {}", path.display()))?
                .to_owned();
            anchors.push(anchor);
        }
    }
    Ok(anchors)
}

/// Of `candidates`, the domains the certificate chain (leaf first) is valid for now.
pub fn verified_domains(
    chain: &[CertificateDer<'_>],
    anchors: &[TrustAnchor<'_>],
    candidates: &[&str],
    now: UnixTime,
) -> Vec<String> {
    let Some(leaf) = chain.first() else {
        return Vec::new();
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return Vec::new();
    };
    let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
    if cert
        .verify_for_usage(
            algs.all,
            anchors,
            &chain[1..],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .is_err()
    {
        return Vec::new();
    }
    candidates
        .iter()
        .filter(|d| {
            ServerName::try_from(d.to_string())
                .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
        })
        .map(|d| d.to_string())
        .collect()
}

/// Asks peers for a certificate and takes any, checking only the handshake's signatures
/// (see the module docs); what the certificate proves is decided after.
#[derive(Debug)]
pub struct AnyClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl AnyClientCert {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::{ClientConfig, RootCertStore, ServerConfig, pki_types::PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        der: CertificateDer<'static>,
    }

    fn ca() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let key = KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().clone();
        Ca {
            issuer: Issuer::new(params, key),
            der,
        }
    }

    /// A server certificate for `names` signed by `ca` (serverAuth only, as public CAs
    /// issue them now): (chain, key).
    fn leaf(ca: &Ca, names: &[&str]) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        (
            vec![cert.der().clone(), ca.der.clone()],
            PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
    }

    fn anchors(ca: &Ca) -> Vec<TrustAnchor<'static>> {
        vec![
            webpki::anchor_from_trusted_cert(&ca.der)
                .unwrap()
                .to_owned(),
        ]
    }

    #[test]
    fn a_chain_proves_the_names_it_carries_under_a_trusted_ca_only() {
        let (ca, other) = (ca(), ca());
        let (chain, _) = leaf(&ca, &["peer.test", "*.wild.test"]);
        let now = UnixTime::now();
        let candidates = ["peer.test", "other.test", "a.wild.test"];
        assert_eq!(
            verified_domains(&chain, &anchors(&ca), &candidates, now),
            ["peer.test", "a.wild.test"]
        );
        assert!(
            verified_domains(&chain, &anchors(&other), &candidates, now).is_empty(),
            "another CA"
        );
        assert!(
            verified_domains(&chain[..1], &[], &candidates, now).is_empty(),
            "no anchors"
        );
        assert!(verified_domains(&[], &anchors(&ca), &candidates, now).is_empty());
        // Far in the future the certificate has expired.
        let later = UnixTime::since_unix_epoch(std::time::Duration::from_secs(253_402_300_800));
        assert!(verified_domains(&chain, &anchors(&ca), &candidates, later).is_empty());
    }

    #[tokio::test]
    async fn a_peer_presenting_its_server_certificate_as_client_is_accepted_and_checked() {
        let ca = ca();
        let (server_chain, server_key) = leaf(&ca, &["a.local"]);
        let (peer_chain, peer_key) = leaf(&ca, &["peer.test"]);
        let server = ServerConfig::builder()
            .with_client_cert_verifier(AnyClientCert::new())
            .with_single_cert(server_chain, server_key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
        let client = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(peer_chain, peer_key)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let accepted = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut b = [0u8; 2];
            tls.read_exact(&mut b).await.unwrap();
            let chain: Vec<CertificateDer<'static>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .unwrap()
                .iter()
                .map(|c| c.clone().into_owned())
                .collect();
            chain
        });
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut tls = connector
            .connect(ServerName::try_from("a.local").unwrap(), tcp)
            .await
            .unwrap();
        tls.write_all(b"hi").await.unwrap();
        let chain = accepted.await.unwrap();
        assert_eq!(
            verified_domains(
                &chain,
                &anchors(&ca),
                &["peer.test", "a.local"],
                UnixTime::now()
            ),
            ["peer.test"]
        );
    }
}
