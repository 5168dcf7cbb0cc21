//! The rest of the vhost spec, from the panel's forms to a real node: a plan's offline
//! message retention and its upload and group chat limits, a domain's federation (the
//! settings page's three choices and the API's `federation`), its XEP-0157 contact
//! addresses (seen in disco#info over XMPP) and its own TLS certificate (presented by SNI,
//! then removed again). Bad input is
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

/// A read-write API key of the customer's organisation, made on its API keys page.
async fn api_key(s: &Setup, name: &str) -> String {
    let r = s
        .customer
        .post_form(
            &format!("{}/api-keys", s.org),
            &[
                ("name", name),
                ("scope", "read_write"),
                ("expires_days", ""),
            ],
        )
        .await;
    let html = r.text().await.unwrap();
    let at = html.find("value=\"rk_").expect("the new key is shown") + "value=\"".len();
    html[at..].split('"').next().unwrap().to_string()
}

#[tokio::test]
async fn a_domains_federation_chosen_in_the_panel_and_the_api_reaches_the_node() {
    let s = setup("federation", "Federation Co").await;
    let domain = "federation.example.org";
    let page = s.live_domain(domain, None).await;
    let settings = format!("{page}/settings");
    let form = format!("{settings}/federation");

    // By default the whole network: the first choice is checked, the node federates.
    let html = s.customer.page(&settings).await;
    assert!(html.contains("Talk with the whole XMPP network"), "{html}");
    assert!(html.contains("id=\"federation-open\" checked"), "{html}");
    assert!(!html.contains("id=\"federation-closed\" checked"));
    assert!(html.contains("<textarea id=\"f-federation_allow\""));
    let spec = s.settled(domain).await;
    assert!(spec.features.federation && spec.features.federation_allow.is_empty());

    // Bad choices: each says what is wrong, keeps what was typed and changes nothing.
    let generation = s.generation(domain).await;
    let bad = [
        (
            "allowlist",
            "\n  \n",
            "List at least one domain to talk with",
        ),
        (
            "allowlist",
            "partner.example\nnot a domain\n",
            "Line 2: “not a domain”: This is not a valid domain name.",
        ),
        (
            "allowlist",
            "partner.example\nFederation.Example.org",
            "Line 2: federation.example.org is this domain itself",
        ),
        ("everyone", "", "Choose whom this domain talks with"),
    ];
    for (mode, allow, says) in bad {
        let (status, html) = answer(
            s.customer
                .post_form(&form, &[("federation", mode), ("federation_allow", allow)])
                .await,
        )
        .await;
        assert_eq!(status, 422, "{mode} {allow:?}");
        assert!(html.contains(says), "{says}: {html}");
        assert!(
            html.contains(&format!("{allow}</textarea>")),
            "the typed list is kept: {allow:?}"
        );
        if mode == "allowlist" {
            assert!(html.contains("id=\"federation-allowlist\" checked"));
            assert!(html.contains("id=\"f-federation_allow-error\""));
        } else {
            assert!(html.contains("id=\"f-federation-error\""));
        }
    }
    let hundred_and_one: String = (0..101).map(|i| format!("d{i}.example\n")).collect();
    let (status, html) = answer(
        s.customer
            .post_form(
                &form,
                &[
                    ("federation", "allowlist"),
                    ("federation_allow", &hundred_and_one),
                ],
            )
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(html.contains("List at most 100 domains (101 given)."));
    assert_eq!(s.generation(domain).await, generation, "nothing was saved");
    let stored: (String, String) =
        sqlx::query_as("SELECT federation_mode, federation_allow FROM domains WHERE domain = $1")
            .bind(domain)
            .fetch_one(&s.app.state.db)
            .await
            .unwrap();
    assert_eq!(stored, ("open".to_string(), String::new()));

    // Someone from another organisation sees nothing and changes nothing.
    let (stranger, _) = s.app.customer(&unique_email("stranger"), "Elsewhere").await;
    let r = stranger
        .post_form(&form, &[("federation", "closed"), ("federation_allow", "")])
        .await;
    assert_eq!(r.status(), 404);

    // Only these domains: normalised, repeats dropped, sorted; the node gets the list.
    let r = s
        .customer
        .post_form(
            &form,
            &[
                ("federation", "allowlist"),
                (
                    "federation_allow",
                    "Partner.Example.\r\n\r\nconference.partner.example\npartner.example\n",
                ),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        location(&r),
        format!("{settings}?notice=federation-allowlist")
    );
    assert_eq!(s.generation(domain).await, generation + 1);
    let spec = s.settled(domain).await;
    assert!(spec.features.federation);
    assert_eq!(
        spec.features.federation_allow,
        vec!["conference.partner.example", "partner.example"]
    );
    let html = s.customer.page(&location(&r)).await;
    assert!(html.contains("talks only with the listed domains"));
    assert!(html.contains("id=\"federation-allowlist\" checked"));
    assert!(html.contains("conference.partner.example\npartner.example</textarea>"));

    // Saving the same again is no new spec.
    let same = [
        ("federation", "allowlist"),
        (
            "federation_allow",
            "partner.example\nconference.partner.example",
        ),
    ];
    assert_eq!(s.customer.post_form(&form, &same).await.status(), 303);
    assert_eq!(s.generation(domain).await, generation + 1);

    // Only within this domain: federation off, no list sent, but the list is kept.
    let r = s
        .customer
        .post_form(
            &form,
            &[
                ("federation", "closed"),
                (
                    "federation_allow",
                    "partner.example\nconference.partner.example",
                ),
            ],
        )
        .await;
    assert_eq!(r.status(), 303);
    let spec = s.settled(domain).await;
    assert!(!spec.features.federation);
    assert!(spec.features.federation_allow.is_empty());
    let html = s.customer.page(&settings).await;
    assert!(html.contains("id=\"federation-closed\" checked"));
    assert!(html.contains("conference.partner.example\npartner.example</textarea>"));

    // The API shows and changes the same choice.
    let key = api_key(&s, "federation").await;
    let id = page.rsplit('/').next().unwrap();
    let url = format!("{}/api/v1/domains/{id}", s.app.address);
    let api = reqwest::Client::new();
    let got: serde_json::Value = api
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got["federation"],
        serde_json::json!({"mode": "closed", "allow": ["conference.partner.example", "partner.example"]}),
        "{got}"
    );
    let generation = s.generation(domain).await;
    for (body, field, code) in [
        (
            serde_json::json!({"federation": {"mode": "allowlist", "allow": []}}),
            "federation.allow",
            "federation_allow_empty",
        ),
        (
            serde_json::json!({"federation": {"allow": ["ok.example", "not a domain"]}}),
            "federation.allow[1]",
            "invalid_domain",
        ),
        (
            serde_json::json!({"federation": {"allow": ["", "ok.example"]}}),
            "federation.allow[0]",
            "invalid_domain",
        ),
        (
            serde_json::json!({"federation": {"allow": [domain]}}),
            "federation.allow[0]",
            "own_domain",
        ),
        (
            serde_json::json!({"federation": {"allow": (0..101).map(|i| format!("d{i}.example")).collect::<Vec<_>>()}}),
            "federation.allow",
            "too_many_domains",
        ),
        (
            serde_json::json!({"registration": true, "federation": {"mode": "everyone"}}),
            "body",
            "invalid_body",
        ),
    ] {
        let r = api
            .patch(&url)
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let problem: serde_json::Value = r.json().await.unwrap();
        assert_eq!(problem["code"], "validation_failed", "{problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        assert_eq!(problem["errors"][0]["code"], code, "{problem}");
    }
    assert_eq!(s.generation(domain).await, generation, "nothing was saved");
    let got: serde_json::Value = api
        .get(&url)
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got["registration"], false,
        "a refused PATCH changes nothing"
    );

    // The mode alone: the kept list is used.
    let r = api
        .patch(&url)
        .bearer_auth(&key)
        .json(&serde_json::json!({"federation": {"mode": "allowlist"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(got["federation"]["mode"], "allowlist");
    assert_eq!(
        s.settled(domain).await.features.federation_allow,
        vec!["conference.partner.example", "partner.example"]
    );
    // A new list, normalised.
    let r = api
        .patch(&url)
        .bearer_auth(&key)
        .json(&serde_json::json!({"federation": {"allow": ["Other.Example", "other.example."]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        got["federation"],
        serde_json::json!({"mode": "allowlist", "allow": ["other.example"]})
    );
    assert_eq!(
        s.settled(domain).await.features.federation_allow,
        vec!["other.example"]
    );
    // And open again.
    let r = api
        .patch(&url)
        .bearer_auth(&key)
        .json(&serde_json::json!({"federation": {"mode": "open"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spec = s.settled(domain).await;
    assert!(spec.features.federation && spec.features.federation_allow.is_empty());
    assert!(
        s.admin
            .page("/admin/audit")
            .await
            .contains("federation only with other.example")
    );
}

#[tokio::test]
async fn a_plans_upload_and_group_chat_limits_reach_the_node_and_bad_values_change_nothing() {
    let s = setup("limits", "Limits Co").await;
    let r = s
        .admin
        .post_form("/admin/plans", &plan_form("Chatty", "0", None))
        .await;
    assert_eq!(r.status(), 303);
    let plan: String = sqlx::query_scalar("SELECT id FROM plans WHERE name = 'Chatty'")
        .fetch_one(&s.app.state.db)
        .await
        .unwrap();
    let domain = "limits.example.org";
    s.live_domain(domain, Some(&plan)).await;
    let limits = s.settled(domain).await.limits;
    assert_eq!(
        (
            limits.upload_max_file_bytes,
            limits.upload_quota_bytes_per_account,
            limits.upload_retention_days,
            limits.max_rooms,
            limits.max_room_occupants
        ),
        (None, None, None, None, None),
        "left empty: the node's defaults"
    );
    assert_eq!(limits.upload_quota_bytes, Some(100 * 1024 * 1024));

    let page = format!("/admin/plans/{plan}");
    let html = s.admin.page(&page).await;
    for field in [
        "upload_max_file_mb",
        "upload_account_mb",
        "upload_retention_days",
        "max_rooms",
        "max_room_occupants",
    ] {
        assert!(html.contains(&format!("id=\"f-{field}\"")), "{field}");
    }
    let generation = s.generation(domain).await;
    for (field, bad, says) in [
        ("upload_max_file_mb", "-1", "0 or more"),
        (
            "upload_max_file_mb",
            "101",
            "the domain's file uploads (100 MB)",
        ),
        ("upload_account_mb", "lots", "0 or more"),
        ("upload_retention_days", "0", "from 1 to 3650"),
        ("max_rooms", "1.5", "0 or more"),
        ("max_room_occupants", "0", "at least 1"),
    ] {
        let mut edit = plan_form("Chatty", "0", None);
        edit.push((field, bad));
        if field != "max_rooms" {
            edit.push(("max_rooms", "7"));
        }
        let (status, html) = answer(s.admin.post_form(&page, &edit).await).await;
        assert_eq!(status, 422, "{field}={bad}");
        assert!(html.contains(says), "{field}={bad}: {html}");
        assert!(html.contains(&format!("id=\"f-{field}-error\"")), "{field}");
        assert!(
            html.contains(&format!("value=\"{bad}\"")),
            "the typed value is kept"
        );
        assert!(
            html.contains("value=\"7\"") || field == "max_rooms",
            "other fields are kept"
        );
    }
    let stored: (Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT upload_max_file_mb, max_rooms FROM plans WHERE id = $1")
            .bind(&plan)
            .fetch_one(&s.app.state.db)
            .await
            .unwrap();
    assert_eq!(stored, (None, None));
    assert_eq!(s.generation(domain).await, generation, "no new spec");

    let mut edit = plan_form("Chatty", "0", None);
    edit.extend([
        ("upload_max_file_mb", "25"),
        ("upload_account_mb", "50"),
        ("upload_retention_days", "30"),
        ("max_rooms", "0"),
        ("max_room_occupants", "40"),
    ]);
    let r = s.admin.post_form(&page, &edit).await;
    assert_eq!(r.status(), 303);
    assert_eq!(s.generation(domain).await, generation + 1);
    let limits = s.settled(domain).await.limits;
    assert_eq!(limits.upload_max_file_bytes, Some(25 * 1024 * 1024));
    assert_eq!(
        limits.upload_quota_bytes_per_account,
        Some(50 * 1024 * 1024)
    );
    assert_eq!(limits.upload_retention_days, Some(30));
    assert_eq!(limits.max_rooms, Some(0));
    assert_eq!(limits.max_room_occupants, Some(40));
    let html = s.admin.page(&page).await;
    assert!(html.contains("value=\"25\"") && html.contains("value=\"40\""));
    let list = s.admin.page("/admin/plans").await;
    assert!(
        list.contains("files ≤ 25 MB, 50 MB per account, kept 30 days"),
        "{list}"
    );
    assert!(
        s.admin
            .page("/admin/audit")
            .await
            .contains("largest file (MB) default→25")
    );

    // The API shows them.
    let key = api_key(&s, "plans").await;
    let got: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/plans/{plan}", s.app.address))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["upload_max_file_mb"], 25, "{got}");
    assert_eq!(got["upload_account_mb"], 50);
    assert_eq!(got["upload_retention_days"], 30);
    assert_eq!(got["max_rooms"], 0);
    assert_eq!(got["max_room_occupants"], 40);

    // Emptied again: the node's defaults.
    let r = s
        .admin
        .post_form(&page, &plan_form("Chatty", "0", None))
        .await;
    assert_eq!(r.status(), 303);
    let limits = s.settled(domain).await.limits;
    assert_eq!(limits.upload_max_file_bytes, None);
    assert_eq!(limits.max_rooms, None);
}
