//! "Check DNS" against a real authoritative DNS server: Knot (`knotd`, Debian's `knot`)
//! started in the foreground on a free loopback port with a configuration and zones this
//! test writes, and the panel in process asking it. In the zone `example.com`, one customer
//! domain has every record right and another has them missing or wrong; the DNS page shows
//! pass or fail per record with what DNS has. Another customer never sees the page.
//!
//! `KNOTD` names another knotd binary (default `/usr/sbin/knotd`; `scripts/test.sh`
//! installs it).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rookery::dns::{expected_records, stable_label};
use rookery_tests::{
    app::{TestApp, TestClient, spawn_app_with, unique_email},
    process::test_log,
};
use tokio::process::{Child, Command};

const PROVIDER_ZONE: &str = "hosting.test";

/// A knotd serving the zones it was given; killed when dropped.
struct Knot {
    addr: SocketAddr,
    // Dropped in this order: the process first, then its folder.
    _child: Child,
    _dir: tempfile::TempDir,
}

fn knotd() -> PathBuf {
    std::env::var_os("KNOTD")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/knotd"))
}

/// A loopback port free for both UDP and TCP a moment ago.
fn free_dns_port() -> anyhow::Result<u16> {
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind(("127.0.0.1", 0))?;
        let port = udp.local_addr()?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no loopback port free for UDP and TCP")
}

/// A DNS query for the SOA of `zone`, without recursion.
fn soa_query(id: u16, zone: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in zone.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 6, 0, 1]);
    q
}

/// Whether the server at `addr` answers for `zone` with its SOA (the zone is loaded).
async fn serves(addr: SocketAddr, zone: &str) -> bool {
    let Ok(socket) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
        return false;
    };
    let id = 0x5eed;
    if socket.send_to(&soa_query(id, zone), addr).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    match tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
        Ok(Ok(n)) if n >= 12 => {
            buf[..2] == id.to_be_bytes()
                && buf[3] & 0x0f == 0
                && u16::from_be_bytes([buf[6], buf[7]]) >= 1
        }
        _ => false,
    }
}

impl Knot {
    /// Starts knotd with `zones` (origin, zone file text) and waits until it serves them all.
    async fn start(zones: &[(&str, String)]) -> anyhow::Result<Knot> {
        let bin = knotd();
        if !bin.exists() {
            bail!(
                "{} is missing: install Debian's knot (scripts/test.sh does), or set KNOTD",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("rookery-test-knot-")
            .tempdir()?;
        for (origin, text) in zones {
            std::fs::write(dir.path().join(format!("{origin}.zone")), text)?;
        }
        let mut last_error = None;
        for _attempt in 0..3 {
            let port = free_dns_port()?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let conf = config(dir.path(), port, zones.iter().map(|(o, _)| *o));
            let conf_path = dir.path().join("knot.conf");
            std::fs::write(&conf_path, conf)?;
            let log_path = dir.path().join("knotd.log");
            let (stdout, stderr) = if test_log() {
                (Stdio::inherit(), Stdio::inherit())
            } else {
                let log = std::fs::File::create(&log_path)?;
                (Stdio::from(log.try_clone()?), Stdio::from(log))
            };
            let mut child = Command::new(&bin)
                .arg("--config")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let mut all = true;
                for (origin, _) in zones {
                    all &= serves(addr, origin).await;
                }
                if all {
                    return Ok(Knot {
                        addr,
                        _child: child,
                        _dir: dir,
                    });
                }
                if child.try_wait()?.is_some() || Instant::now() > deadline {
                    let _ = child.kill().await;
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    last_error = Some(anyhow::anyhow!(
                        "knotd on {addr} did not serve the zones: {log}"
                    ));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("knotd did not start")))
    }
}

/// knotd's configuration: everything inside `dir`, no journal, no zone file rewrites.
fn config<'a>(dir: &std::path::Path, port: u16, zones: impl Iterator<Item = &'a str>) -> String {
    let dir = dir.display();
    let zones: String = zones.map(|z| format!("  - domain: {z}\n")).collect();
    format!(
        r#"server:
    rundir: "{dir}"
    listen: 127.0.0.1@{port}
    background-workers: 1
    udp-workers: 1
    tcp-workers: 1
control:
    listen: "{dir}/knot.sock"
database:
    storage: "{dir}/db"
log:
  - target: stderr
    any: info
template:
  - id: default
    storage: "{dir}"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
{zones}"#
    )
}

fn soa(origin: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 300\n@ SOA ns.{origin}. hostmaster.{origin}. 1 3600 600 86400 300\n@ NS ns\nns A 127.0.0.1\n"
    )
}

/// The customer zone: `good` has every record (one SRV with its own priority and weight),
/// `bad` has one wrong target, one missing record, a wrong port, an address instead of a
/// CNAME, a wrong CNAME and a TXT instead of a CNAME.
fn customer_zone(settings: &rookery::config::DnsSettings) -> String {
    let mut zone = soa("example.com");
    for r in expected_records("good.example.com", settings)
        .unwrap()
        .records
    {
        let line = r.zone_line();
        if r.owner.starts_with("_xmpps-client.") {
            zone.push_str(&line.replace("SRV 0 5 ", "SRV 10 0 "));
        } else {
            zone.push_str(&line);
        }
        zone.push('\n');
    }
    let bad = format!(
        "{}.{PROVIDER_ZONE}.",
        stable_label("bad.example.com").unwrap()
    );
    zone.push_str(&format!(
        "_xmpp-client._tcp.bad 3600 IN SRV 0 5 5222 other.example.net.\n\
         _xmpp-server._tcp.bad 3600 IN SRV 0 5 5299 {bad}\n\
         conference.bad 3600 IN A 192.0.2.7\n\
         upload.bad 3600 IN CNAME wrong.example.net.\n\
         _acme-challenge.bad 3600 IN TXT \"not-a-cname\"\n"
    ));
    zone
}

/// The provider's zone: the stable names' addresses, as the panel will keep them.
fn provider_zone() -> String {
    let mut zone = soa(PROVIDER_ZONE);
    for d in ["good.example.com", "bad.example.com"] {
        zone.push_str(&format!("{} A 127.0.0.1\n", stable_label(d).unwrap()));
    }
    zone
}

async fn add_domain(app: &TestApp, org_id: &str, domain: &str, state: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    sqlx::query(
        "INSERT INTO domains (id, org_id, domain, state, generation, created_at, updated_at)
         VALUES ($1, $2, $3, $4, 1, 0, 0)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(domain)
    .bind(state)
    .execute(&app.state.db)
    .await
    .unwrap();
    id
}

/// The `<tr>` of the record named `owner` in a DNS page.
fn row<'a>(html: &'a str, owner: &str) -> &'a str {
    let start = html
        .find(&format!("data-record=\"{owner}\""))
        .unwrap_or_else(|| panic!("no row for {owner} in {html}"));
    let end = start + html[start..].find("</tr>").unwrap();
    &html[start..end]
}

fn assert_verdict(html: &str, owner: &str, pass: bool, found: &str) {
    let row = row(html, owner);
    let verdict = if pass { "pass" } else { "fail" };
    assert!(
        row.contains(&format!("data-check=\"{verdict}\"")),
        "{owner} should {verdict}: {row}"
    );
    assert!(row.contains(found), "{owner} should show {found:?}: {row}");
}

async fn customer(app: &TestApp, name: &str) -> (TestClient, String) {
    let email = unique_email(&name.to_lowercase().replace(' ', "-"));
    let (client, dashboard) = app.customer(&email, name).await;
    let org_id = dashboard.trim_start_matches("/o/").to_string();
    (client, org_id)
}

#[tokio::test]
async fn the_dns_check_passes_correct_records_and_shows_what_is_wrong() {
    let settings = rookery::config::DnsSettings {
        provider_zone: PROVIDER_ZONE.into(),
        ..Default::default()
    };
    let knot = Knot::start(&[
        ("example.com", customer_zone(&settings)),
        (PROVIDER_ZONE, provider_zone()),
    ])
    .await
    .unwrap();
    let app = spawn_app_with(|s| {
        s.dns.resolver = Some(knot.addr);
        s.dns.provider_zone = PROVIDER_ZONE.into();
        s.dns.timeout_secs = 3;
    })
    .await;
    let (client, org) = customer(&app, "Good and Bad Ltd").await;
    let good = add_domain(&app, &org, "good.example.com", "active").await;
    let bad = add_domain(&app, &org, "bad.example.com", "active").await;

    // The page lists the records to create, ready to copy, before any check.
    let good_label = stable_label("good.example.com").unwrap();
    let good_stable = format!("{good_label}.{PROVIDER_ZONE}.");
    let html = client.page(&format!("/o/{org}/domains/{good}/dns")).await;
    assert!(html.contains("data-page=\"domain-dns\""), "{html}");
    let srv = row(&html, "_xmpp-client._tcp.good.example.com.");
    assert!(srv.contains("readonly"), "{srv}");
    assert!(
        srv.contains(&format!("value=\"0 5 5222 {good_stable}\"")),
        "{srv}"
    );
    assert!(
        !srv.contains("data-check"),
        "no verdict before a check: {srv}"
    );
    for (owner, value) in [
        (
            "_xmpps-client._tcp.good.example.com.",
            format!("0 5 5223 {good_stable}"),
        ),
        (
            "_xmpp-server._tcp.good.example.com.",
            format!("0 5 5269 {good_stable}"),
        ),
        ("conference.good.example.com.", good_stable.clone()),
        ("upload.good.example.com.", good_stable.clone()),
        (
            "_acme-challenge.good.example.com.",
            format!("{good_label}.acme.{PROVIDER_ZONE}."),
        ),
    ] {
        assert!(
            row(&html, owner).contains(&format!("value=\"{value}\"")),
            "{owner} → {value}: {html}"
        );
    }
    assert!(html.contains("id=\"dns-check\""));

    // Every record of the good domain passes; the different priority is only noted.
    let checked = client
        .post_form(&format!("/o/{org}/domains/{good}/dns/check"), &[])
        .await;
    assert_eq!(checked.status(), 200);
    let html = checked.text().await.unwrap();
    assert!(html.contains("data-page=\"domain-dns\""));
    assert!(html.contains("All records are in place."), "{html}");
    assert_verdict(
        &html,
        "_xmpp-client._tcp.good.example.com.",
        true,
        &format!("found SRV 0 5 5222 {good_stable}"),
    );
    assert_verdict(
        &html,
        "_xmpps-client._tcp.good.example.com.",
        true,
        &format!("found SRV 10 0 5223 {good_stable}"),
    );
    assert!(
        row(&html, "_xmpps-client._tcp.good.example.com.").contains("Priority or weight differ")
    );
    assert_verdict(
        &html,
        "_xmpp-server._tcp.good.example.com.",
        true,
        &format!("found SRV 0 5 5269 {good_stable}"),
    );
    for owner in ["conference.good.example.com.", "upload.good.example.com."] {
        assert_verdict(&html, owner, true, &format!("found CNAME {good_stable}"));
    }
    assert_verdict(
        &html,
        "_acme-challenge.good.example.com.",
        true,
        &format!("found CNAME {good_label}.acme.{PROVIDER_ZONE}."),
    );

    // Every record of the bad domain fails, each showing what DNS has instead.
    let bad_stable = format!(
        "{}.{PROVIDER_ZONE}.",
        stable_label("bad.example.com").unwrap()
    );
    let html = client
        .post_form(&format!("/o/{org}/domains/{bad}/dns/check"), &[])
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("6 of 6 records are missing or wrong"),
        "{html}"
    );
    assert_verdict(
        &html,
        "_xmpp-client._tcp.bad.example.com.",
        false,
        "found SRV 0 5 5222 other.example.net.",
    );
    assert_verdict(
        &html,
        "_xmpps-client._tcp.bad.example.com.",
        false,
        "no such name (NXDOMAIN)",
    );
    assert_verdict(
        &html,
        "_xmpp-server._tcp.bad.example.com.",
        false,
        &format!("found SRV 0 5 5299 {bad_stable}"),
    );
    assert_verdict(
        &html,
        "conference.bad.example.com.",
        false,
        "no CNAME records; found A 192.0.2.7",
    );
    assert_verdict(
        &html,
        "upload.bad.example.com.",
        false,
        "found CNAME wrong.example.net.",
    );
    assert_verdict(
        &html,
        "_acme-challenge.bad.example.com.",
        false,
        "no CNAME records; found TXT",
    );
    assert!(row(&html, "_acme-challenge.bad.example.com.").contains("not-a-cname"));

    // A check without the form's CSRF token changes nothing and shows no verdicts.
    let forged = client
        .post_raw(&format!("/o/{org}/domains/{bad}/dns/check"), &[])
        .await;
    assert_eq!(forged.status(), 403);
}

#[tokio::test]
async fn another_customers_domain_has_no_dns_page() {
    let app = spawn_app_with(|s| {
        // Nothing listens here: no check may get as far as asking.
        s.dns.resolver = Some("127.0.0.1:9".parse().unwrap());
        s.dns.timeout_secs = 1;
    })
    .await;
    let (alice, alice_org) = customer(&app, "Alice Ltd").await;
    let (mallory, mallory_org) = customer(&app, "Mallory Ltd").await;
    let domain = add_domain(&app, &alice_org, "alice.example.org", "active").await;
    let gone = add_domain(&app, &alice_org, "gone.example.org", "deleted").await;

    alice
        .page(&format!("/o/{alice_org}/domains/{domain}/dns"))
        .await;
    for path in [
        format!("/o/{alice_org}/domains/{domain}/dns"),
        format!("/o/{mallory_org}/domains/{domain}/dns"),
        format!("/o/{mallory_org}/domains/nope/dns"),
    ] {
        assert_eq!(mallory.get(&path).await.status(), 404, "GET {path}");
        let r = mallory.post_form(&format!("{path}/check"), &[]).await;
        assert_eq!(r.status(), 404, "POST {path}/check");
    }
    // A deleted domain has no page, not even for its owner.
    let path = format!("/o/{alice_org}/domains/{gone}/dns");
    assert_eq!(alice.get(&path).await.status(), 404);
    assert_eq!(
        alice
            .post_form(&format!("{path}/check"), &[])
            .await
            .status(),
        404
    );
}
