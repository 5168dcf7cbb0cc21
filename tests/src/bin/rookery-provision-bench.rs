//! `rookery-provision-bench`: how fast the panel turns a new domain into a working XMPP
//! service (issue 4, "Performance").
//!
//! It starts a real panel process and `--nodes` real `rookery-node` processes on loopback
//! (each enrolled with a join token), signs up a customer, then:
//!
//! 1. `--samples` times: adds a domain through the panel's form, waits until the panel shows
//!    it active, creates a chat account through the domain page, and logs in over
//!    STARTTLS + SCRAM on the node serving it; prints the median and worst time from "domain
//!    created" to "first successful XMPP login";
//! 2. adds `--domains` more domains and prints how long the pool takes to converge (every
//!    domain confirmed by its node), and how they spread.
//!
//! The panel runs with its default reconcile interval. Run it through
//! `scripts/bench-provisioning.sh`, which builds everything in release mode.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context, ensure};
use clap::Parser;
use rookery_tests::{
    app::{PASSWORD, TestClient, location, unique_email},
    node::NodeProcess,
    process::PanelProcess,
    xmpp::client::{Account, LoginConfig, Session, tls_connector},
};
use sqlx::Row;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Times domain provisioning: created → first XMPP login, and pool convergence")]
struct Args {
    /// Nodes in the pool.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Domains timed from creation to first login, one after another.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Domains added at once for the convergence measurement.
    #[arg(long, default_value_t = 1000)]
    domains: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.nodes >= 1 && args.samples >= 1,
        "at least one node and one sample"
    );
    println!(
        "command: rookery-provision-bench --nodes {} --samples {} --domains {}",
        args.nodes, args.samples, args.domains
    );
    let panel =
        PanelProcess::start_with_env(&[("ROOKERY_PROVISIONING__NODE_TIMEOUT_SECS", "30")]).await?;
    let admin = admin(&panel).await?;
    let mut nodes = BTreeMap::new();
    for i in 0..args.nodes {
        let token = token(&admin).await?;
        let name = format!("bench-{i}");
        let node = NodeProcess::join_and_start(&panel.base_url, &token, &name).await?;
        nodes.insert(name, node);
    }
    println!("pool: {} nodes enrolled", nodes.len());

    let customer = TestClient::new(&panel.base_url);
    let r = customer
        .post_form(
            "/signup",
            &[
                ("email", unique_email("bench").as_str()),
                ("password", PASSWORD),
                ("org_name", "Bench"),
            ],
        )
        .await;
    ensure!(r.status() == 303, "sign-up failed");
    let org = location(&r)
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();

    // 1. Created → first login.
    let mut times = Vec::new();
    // Phases: until the page shows it active, until the account exists, until logged in.
    let mut phases: Vec<[Duration; 3]> = Vec::new();
    for i in 0..args.samples {
        let domain = format!("s{i}.latency.bench");
        let started = Instant::now();
        let r = customer
            .post_form(&format!("{org}/domains"), &[("domain", domain.as_str())])
            .await;
        ensure!(r.status() == 303, "adding {domain} failed");
        let page = location(&r);
        // The customer reloads the domain page until it is active, then adds an account.
        loop {
            let html = customer.page(&page).await;
            if html.contains("data-state=\"active\"") {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "{domain} not active within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let active = started.elapsed();
        let r = customer
            .post_form(
                &format!("{page}/accounts"),
                &[("username", "first"), ("password", PASSWORD)],
            )
            .await;
        ensure!(
            r.status() == 303,
            "creating an account on {domain} failed: {}",
            r.text().await.unwrap_or_default()
        );
        let account_made = started.elapsed();
        let node_name = placement(&panel, &domain).await?;
        let node = &nodes[&node_name];
        let cfg = LoginConfig {
            addr: format!("127.0.0.1:{}", node.c2s_port).parse()?,
            domain: domain.clone(),
            tls: tls_connector(&node.cert_of(&domain))?,
            keys: Default::default(),
            resource: "bench".into(),
            presence: false,
        };
        let account = Account {
            user: "first".into(),
            password: PASSWORD.into(),
        };
        let session = loop {
            match Session::login(&cfg, &account).await {
                Ok(s) => break s,
                Err(e) => {
                    ensure!(
                        started.elapsed() < Duration::from_secs(60),
                        "no login to {domain}: {e:#}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        drop(session);
        let done = started.elapsed();
        phases.push([active, account_made - active, done - account_made]);
        times.push(done);
    }
    times.sort();
    let median_of = |i: usize| {
        let mut v: Vec<Duration> = phases.iter().map(|p| p[i]).collect();
        v.sort();
        v[v.len() / 2].as_secs_f64() * 1000.0
    };
    println!(
        "  phases (medians): created → shown active {:.0} ms, account created {:.0} ms, XMPP login {:.0} ms",
        median_of(0),
        median_of(1),
        median_of(2)
    );
    println!(
        "domain created → first XMPP login: median {:.0} ms, worst {:.0} ms over {} domains (target: median under 2 s)",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() - 1].as_secs_f64() * 1000.0,
        times.len()
    );

    // 2. Convergence of many domains.
    if args.domains > 0 {
        let started = Instant::now();
        for i in 0..args.domains {
            let domain = format!("c{i:05}.converge.bench");
            let r = customer
                .post_form(&format!("{org}/domains"), &[("domain", domain.as_str())])
                .await;
            ensure!(r.status() == 303, "adding {domain} failed");
        }
        let created = started.elapsed();
        let db = rookery_common::db::connect(&panel.database.url, 2).await?;
        let total = args.domains + args.samples;
        loop {
            let settled: i64 = sqlx::query(
                "SELECT COUNT(*) AS n FROM domains WHERE state = 'active' AND node_id = applied_node_id AND generation = applied_generation",
            )
            .fetch_one(&db)
            .await?
            .try_get("n")?;
            if settled as usize >= total {
                break;
            }
            ensure!(
                started.elapsed() < Duration::from_secs(600),
                "only {settled} of {total} domains converged in 10 min"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let converged = started.elapsed();
        let spread: Vec<(String, i64)> = sqlx::query("SELECT n.name AS name, COUNT(*) AS c FROM domains d JOIN nodes n ON n.id = d.node_id GROUP BY n.name ORDER BY n.name")
            .fetch_all(&db)
            .await?
            .iter()
            .map(|r| (r.get("name"), r.get("c")))
            .collect();
        println!(
            "{} domains over {} nodes: created through the panel in {:.1} s, all converged {:.1} s after the first was created (target: under 30 s)",
            args.domains,
            nodes.len(),
            created.as_secs_f64(),
            converged.as_secs_f64()
        );
        println!(
            "spread: {}",
            spread
                .iter()
                .map(|(n, c)| format!("{n} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, node) in &nodes {
            let out = node.cli(&["vhost", "list"], None).await?;
            let served = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.trim().is_empty())
                .count();
            println!("  {name} serves {served} vhosts");
        }
        db.close().await;
    }
    Ok(())
}

async fn admin(panel: &PanelProcess) -> anyhow::Result<TestClient> {
    let email = unique_email("admin");
    let out = panel
        .cli(
            &["admin", "create", "--email", &email],
            Some(&format!("{PASSWORD}\n")),
        )
        .await?;
    ensure!(
        out.status.success(),
        "admin create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = TestClient::new(&panel.base_url);
    ensure!(
        admin.login(&email, PASSWORD).await.status() == 303,
        "the admin cannot log in"
    );
    Ok(admin)
}

async fn token(admin: &TestClient) -> anyhow::Result<String> {
    let html = admin
        .post_form("/admin/nodes/tokens", &[("note", "bench")])
        .await
        .text()
        .await?;
    let start = html
        .find("id=\"join-token\" class=\"code\">")
        .context("no token on the page")?
        + "id=\"join-token\" class=\"code\">".len();
    let end = start + html[start..].find('<').context("no end of token")?;
    Ok(html[start..end].trim().to_string())
}

async fn placement(panel: &PanelProcess, domain: &str) -> anyhow::Result<String> {
    let db = rookery_common::db::connect(&panel.database.url, 1).await?;
    let name: String = sqlx::query("SELECT n.name AS name FROM domains d JOIN nodes n ON n.id = d.applied_node_id WHERE d.domain = $1")
        .bind(domain)
        .fetch_one(&db)
        .await?
        .try_get("name")?;
    db.close().await;
    Ok(name)
}
