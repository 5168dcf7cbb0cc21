//! The rest of the vhost spec, from the panel's forms to a real node: a plan's offline
//! message retention, a domain's XEP-0157 contact addresses (seen in disco#info over XMPP)
//! and its own TLS certificate (presented by SNI, then removed again). Bad input is
//! refused with its reason and changes nothing. Each test runs the panel in process with
//! one `rookery-node` process joined to it.

use std::{sync::Arc, time::Duration};

use rookery_tests::{
    app::{PASSWORD, eventually, location, plan_form, unique_email},
    node::NodeProcess,
    xmpp::client::{Account, LoginConfig, Session, tls_connector},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::panel_node::{Setup, setup};

impl Setup {
    /// A chat account made through the domain page.
    async fn account(&self, page: &str, username: &str) {
        let r = self
            .customer
            .post_form(
                &format!("{page}/accounts"),
                &[("username", username), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    }

    fn login_config(&self, domain: &str, tls: TlsConnector) -> LoginConfig {
        LoginConfig {
            addr: format!("127.0.0.1:{}", self.node.c2s_port).parse().unwrap(),
            domain: domain.into(),
            tls,
            keys: Default::default(),
            resource: "settings".into(),
            presence: false,
        }
    }
}

async fn answer(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn a_plans_offline_retention_reaches_the_node_and_bad_values_change_nothing() {
    let s = setup("settings", "Settings Co").await;
    let mut form = plan_form("Small", "0", None);
    form.push(("offline_days", ""));
    let r = s.admin.post_form("/admin/plans", &form).await;
    assert_eq!(r.status(), 303);
    let plan: String = sqlx::query_scalar("SELECT id FROM plans WHERE name = 'Small'")
        .fetch_one(&s.app.state.db)
        .await
        .unwrap();
    let domain = "offline.example.org";
    s.live_domain(domain, Some(&plan)).await;
    let spec = s.settled(domain).await;
    assert_eq!(
        spec.limits.offline_retention_days, None,
        "empty: the node's default"
    );
    assert_eq!(spec.limits.max_accounts, Some(10));

    let page = format!("/admin/plans/{plan}");
    let generation = s.generation(domain).await;
    for bad in ["0", "3651", "-1", "two weeks"] {
        let mut edit = plan_form("Small", "0", None);
        edit.push(("offline_days", bad));
        let (status, html) = answer(s.admin.post_form(&page, &edit).await).await;
        assert_eq!(status, 422, "{bad}");
        assert!(
            html.contains("Enter a number of days from 1 to 3650"),
            "{bad}: {html}"
        );
        assert!(
            html.contains(&format!("value=\"{bad}\"")),
            "the typed value is kept"
        );
    }
    let stored: Option<i64> = sqlx::query_scalar("SELECT offline_days FROM plans WHERE id = $1")
        .bind(&plan)
        .fetch_one(&s.app.state.db)
        .await
        .unwrap();
    assert_eq!(stored, None);
    assert_eq!(s.generation(domain).await, generation, "no new spec");

    let mut edit = plan_form("Small", "0", None);
    edit.push(("offline_days", "14"));
    let r = s.admin.post_form(&page, &edit).await;
    assert_eq!(r.status(), 303);
    assert_eq!(s.generation(domain).await, generation + 1);
    let spec = s.settled(domain).await;
    assert_eq!(spec.limits.offline_retention_days, Some(14));
    assert!(s.admin.page(&page).await.contains("value=\"14\""));
    assert!(s.admin.page("/admin/plans").await.contains("14 days"));
    assert!(
        s.admin
            .page("/admin/audit")
            .await
            .contains("offline messages default→14 days")
    );

    // Back to the default.
    let mut edit = plan_form("Small", "0", None);
    edit.push(("offline_days", ""));
    assert_eq!(s.admin.post_form(&page, &edit).await.status(), 303);
    assert_eq!(s.settled(domain).await.limits.offline_retention_days, None);
}

/// disco#info of the domain, as `session` sees it: the serverinfo form's fields.
async fn contact_fields(
    session: &mut Session,
    domain: &str,
    id: &str,
) -> Vec<(String, Vec<String>)> {
    session
        .send(&format!(
            "<iq type='get' id='{id}' to='{domain}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await
        .unwrap();
    let reply = loop {
        let el = tokio::time::timeout(Duration::from_secs(10), session.next_element())
            .await
            .expect("the node answers within 10 s")
            .unwrap();
        if el.name == "iq" && el.attr("id") == Some(id) {
            break el;
        }
    };
    assert_eq!(reply.attr("type"), Some("result"), "{reply:?}");
    let query = reply.child("query").unwrap();
    query
        .child("x")
        .map(|form| {
            form.children
                .iter()
                .map(|f| {
                    (
                        f.attr("var").unwrap().to_string(),
                        f.children.iter().map(|v| v.text.clone()).collect(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn contact_addresses_saved_in_the_panel_are_in_the_domains_disco_info() {
    let s = setup("settings", "Settings Co").await;
    let domain = "contacts.example.org";
    let page = s.live_domain(domain, None).await;
    let settings = format!("{page}/settings");
    assert!(
        s.customer
            .page(&page)
            .await
            .contains(&format!("href=\"{settings}\"")),
        "the domain page links to its settings"
    );
    let html = s.customer.page(&settings).await;
    for kind in ["abuse", "admin", "feedback", "sales", "security", "support"] {
        assert!(
            html.contains(&format!("<textarea id=\"f-{kind}\"")),
            "{kind}"
        );
    }

    // Bad addresses: each field says what is wrong, and nothing is saved.
    let generation = s.generation(domain).await;
    let (status, html) = answer(
        s.customer
            .post_form(
                &format!("{settings}/contacts"),
                &[
                    ("abuse", "abuse@example.org"),
                    ("support", "xmpp:help@contacts.example.org"),
                    (
                        "security",
                        "https://example.org/security\nftp://example.org/report",
                    ),
                ],
            )
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        html.contains("Line 1: \"abuse@example.org\" is not an address"),
        "{html}"
    );
    assert!(html.contains("Line 2: \"ftp://example.org/report\" is not an address"));
    assert!(html.contains("id=\"f-abuse-error\""));
    assert!(html.contains("id=\"f-security-error\""));
    assert!(!html.contains("id=\"f-support-error\""));
    assert!(
        html.contains("xmpp:help@contacts.example.org</textarea>"),
        "typed text is kept"
    );
    let stored: String = sqlx::query_scalar("SELECT contacts FROM domains WHERE domain = $1")
        .bind(domain)
        .fetch_one(&s.app.state.db)
        .await
        .unwrap();
    assert_eq!(stored, "{}");
    assert_eq!(s.generation(domain).await, generation);

    // Someone from another organisation sees nothing and changes nothing.
    let (stranger, _) = s.app.customer(&unique_email("stranger"), "Elsewhere").await;
    assert_eq!(stranger.get(&settings).await.status(), 404);
    let r = stranger
        .post_form(
            &format!("{settings}/contacts"),
            &[("abuse", "mailto:x@example.org")],
        )
        .await;
    assert_eq!(r.status(), 404);

    let r = s
        .customer
        .post_form(
            &format!("{settings}/contacts"),
            &[
                ("abuse", "mailto:abuse@example.org\n"),
                (
                    "support",
                    "xmpp:help@contacts.example.org\r\nhttps://example.org/help",
                ),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r), format!("{settings}?notice=contacts-saved"));
    let html = s.customer.page(&location(&r)).await;
    assert!(html.contains("Contact addresses saved"));
    assert!(html.contains("xmpp:help@contacts.example.org\nhttps://example.org/help</textarea>"));

    let spec = s.settled(domain).await;
    assert_eq!(
        spec.contacts,
        [
            (
                "abuse".to_string(),
                vec!["mailto:abuse@example.org".to_string()]
            ),
            (
                "support".to_string(),
                vec![
                    "xmpp:help@contacts.example.org".to_string(),
                    "https://example.org/help".to_string()
                ]
            ),
        ]
        .into()
    );

    s.account(&page, "alice").await;
    let cfg = s.login_config(domain, tls_connector(&s.node.cert_of(domain)).unwrap());
    let alice = Account {
        user: "alice".into(),
        password: PASSWORD.into(),
    };
    let mut session = Session::login(&cfg, &alice).await.expect("alice logs in");
    let fields = contact_fields(&mut session, domain, "d1").await;
    let fields: Vec<(&str, Vec<&str>)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.iter().map(String::as_str).collect()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("FORM_TYPE", vec!["http://jabber.org/network/serverinfo"]),
            ("abuse-addresses", vec!["mailto:abuse@example.org"]),
            (
                "support-addresses",
                vec!["xmpp:help@contacts.example.org", "https://example.org/help"]
            ),
        ]
    );

    // Emptied again: the form is gone.
    let r = s
        .customer
        .post_form(
            &format!("{settings}/contacts"),
            &[("abuse", ""), ("support", "")],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert!(s.settled(domain).await.contacts.is_empty());
    assert!(contact_fields(&mut session, domain, "d2").await.is_empty());
}

/// A certificate authority the test trusts, issuing certificates for domains.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: CertificateDer<'static>,
    pem: String,
}

impl TestCa {
    fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Rookery settings test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// (leaf DER, chain PEM: leaf then CA, key PEM) for `names`, valid `days_before` days
    /// ago until `days_after` days from now.
    fn issue(
        &self,
        names: &[&str],
        days_before: i64,
        days_after: i64,
    ) -> (Vec<u8>, String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(days_before);
        params.not_after = now + time::Duration::days(days_after);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &self.issuer).unwrap();
        (
            leaf.der().to_vec(),
            format!("{}{}", leaf.pem(), self.pem),
            key.serialize_pem(),
        )
    }

    /// A TLS client that trusts this CA only (names checked as usual).
    fn connector(&self) -> TlsConnector {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let config =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    }
}

/// The certificate the node presents on its direct-TLS port to a client asking for
/// `domain` by SNI, if `connector` accepts it.
async fn presented(node: &NodeProcess, domain: &str, connector: &TlsConnector) -> Option<Vec<u8>> {
    let tcp = TcpStream::connect(("127.0.0.1", node.c2s_tls_port))
        .await
        .ok()?;
    let name = ServerName::try_from(domain.to_string()).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .ok()?
        .ok()?;
    let (_, conn) = tls.get_ref();
    Some(conn.peer_certificates()?.first()?.as_ref().to_vec())
}

#[tokio::test]
async fn a_certificate_uploaded_in_the_panel_is_presented_by_sni_until_removed() {
    let s = setup("settings", "Settings Co").await;
    let domain = "secure.example.org";
    let page = s.live_domain(domain, None).await;
    s.account(&page, "romeo").await;
    let settings = format!("{page}/settings");
    assert!(
        s.customer
            .page(&settings)
            .await
            .contains("id=\"no-certificate\"")
    );

    let ca = TestCa::new();
    let (leaf, chain, key) = ca.issue(&[domain], 1, 90);
    let (_, _, other_key) = ca.issue(&[domain], 1, 90);
    let (_, elsewhere, elsewhere_key) = ca.issue(&["elsewhere.example.org"], 1, 90);
    let (_, expired, expired_key) = ca.issue(&[domain], 100, -10);

    // Refused, each with its reason at its field; nothing stored, no new spec, and the key
    // never comes back in the page.
    let generation = s.generation(domain).await;
    let cases: [(&str, &str, &str, &str); 5] = [
        (
            chain.as_str(),
            other_key.as_str(),
            "key_pem",
            "does not belong to the first certificate",
        ),
        (
            elsewhere.as_str(),
            elsewhere_key.as_str(),
            "cert_pem",
            "is not valid for secure.example.org: it names elsewhere.example.org",
        ),
        (
            expired.as_str(),
            expired_key.as_str(),
            "cert_pem",
            "This certificate expired on",
        ),
        (
            "garbage",
            key.as_str(),
            "cert_pem",
            "Paste the certificate chain",
        ),
        (
            chain.as_str(),
            "not a key",
            "key_pem",
            "Paste the private key",
        ),
    ];
    for (cert_pem, key_pem, field, expected) in cases {
        let (status, html) = answer(
            s.customer
                .post_form(
                    &format!("{settings}/tls"),
                    &[("cert_pem", cert_pem), ("key_pem", key_pem)],
                )
                .await,
        )
        .await;
        assert_eq!(status, 422, "{expected}");
        assert!(html.contains(expected), "{expected}: {html}");
        assert!(
            html.contains(&format!("id=\"f-{field}-error\"")),
            "{expected}"
        );
        let key_body = key_pem.lines().nth(1).unwrap_or(key_pem);
        assert!(!html.contains(key_body), "the key is not shown again");
    }
    let stored: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT tls_cert_pem, tls_key_sealed FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_one(&s.app.state.db)
            .await
            .unwrap();
    assert_eq!(stored, (None, None));
    assert_eq!(s.generation(domain).await, generation);

    let r = s
        .customer
        .post_form(
            &format!("{settings}/tls"),
            &[("cert_pem", chain.as_str()), ("key_pem", key.as_str())],
        )
        .await;
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    let (cert_pem, sealed): (String, String) =
        sqlx::query_as("SELECT tls_cert_pem, tls_key_sealed FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_one(&s.app.state.db)
            .await
            .unwrap();
    assert_eq!(cert_pem.matches("BEGIN CERTIFICATE").count(), 2);
    assert!(
        sealed.starts_with("v1.") && !sealed.contains("PRIVATE KEY"),
        "sealed at rest"
    );
    let html = s.customer.page(&settings).await;
    let fingerprint: String = {
        use sha2::Digest;
        sha2::Sha256::digest(&leaf)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    assert!(html.contains(&fingerprint), "the fingerprint is shown");
    assert!(html.contains("<dd id=\"certificate-names\">secure.example.org</dd>"));
    assert!(html.contains("id=\"certificate-expiry\""));
    assert!(
        !html.contains(key.lines().nth(1).unwrap()),
        "the key is never shown"
    );

    // The node presents exactly that certificate for the domain, and a login works
    // trusting only the test CA.
    let spec = s.settled(domain).await;
    let tls = spec.tls.expect("the spec carries the certificate");
    assert!(tls.key_pem.is_none(), "the node never answers with the key");
    assert_eq!(tls.cert_pem, cert_pem);
    let trusting_ca = ca.connector();
    eventually(10, || async {
        presented(&s.node, domain, &trusting_ca).await.as_deref() == Some(leaf.as_slice())
    })
    .await
    .expect("the node presents the uploaded certificate");
    let romeo = Account {
        user: "romeo".into(),
        password: PASSWORD.into(),
    };
    Session::login(&s.login_config(domain, ca.connector()), &romeo)
        .await
        .expect("romeo logs in over STARTTLS with the uploaded certificate");

    // Removed: back to the node's own self-signed certificate.
    let r = s
        .customer
        .post_form(&format!("{settings}/tls/remove"), &[])
        .await;
    assert_eq!(r.status(), 303);
    assert!(
        s.customer
            .page(&settings)
            .await
            .contains("id=\"no-certificate\"")
    );
    assert!(s.settled(domain).await.tls.is_none());
    let own = tls_connector(&s.node.cert_of(domain)).unwrap();
    let own_der = CertificateDer::from_pem_file(s.node.cert_of(domain)).unwrap();
    eventually(10, || async {
        presented(&s.node, domain, &own).await.as_deref() == Some(own_der.as_ref())
    })
    .await
    .expect("the node presents its own certificate again");
    assert!(presented(&s.node, domain, &trusting_ca).await.is_none());
    Session::login(&s.login_config(domain, own), &romeo)
        .await
        .expect("romeo logs in with the node's own certificate");
}
