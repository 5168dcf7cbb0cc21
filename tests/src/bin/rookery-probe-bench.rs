//! `rookery-probe-bench`: whether one panel process probes 5,000 domains per 60 s interval
//! on this machine using less than one core (issue 6, "Performance").
//!
//! It starts a real panel process and `--nodes` real `rookery-node` processes on loopback
//! (each enrolled with a join token), signs up a customer, adds `--domains` domains through
//! the panel's form and lets the panel do the rest: its reconciler puts each domain on a
//! node, its account keeper creates the probe's system account there, and its prober logs
//! in to every domain once per interval (STARTTLS, SCRAM-SHA-256, bind, ping, message).
//! Once every domain has been probed, it measures for `--secs` seconds:
//!
//! - probes per minute (rows the panel stored in `probe_results` for its own location,
//!   started in the window), ok and failed, failures by stage;
//! - rounds decided per minute (rows added to `probe_rounds`);
//! - the panel process's CPU time (utime + stime from `/proc/<pid>/stat`) over the wall
//!   time, as a percentage of one core; the nodes' likewise, for information; the panel's
//!   peak resident memory (`VmHWM`), and how busy the whole machine was (other work on it
//!   shows there).
//!
//! Then (unless `--no-restart`) it restarts the panel and measures its first interval the
//! same way: with no salted password cached, every login computes PBKDF2 again.
//!
//! Certificates: the probe verifies each domain's certificate, as in production. Listing
//! 5,000 self-signed certificates as trust roots would not fit in an environment variable,
//! so the benchmark plays the public CA: it makes a test CA, the panel trusts only that CA
//! (`ROOKERY_PROBE__TRUST_ROOTS`), and before a domain exists the benchmark writes a
//! certificate for it, issued by that CA, where the node keeps the pair it would otherwise
//! generate (`<node data dir>/certs/<domain>.crt|.key`); the node loads it instead.
//! Every probe's handshake thus checks a two-certificate chain against one root, like a
//! probe of a domain with a Let's Encrypt certificate.
//!
//! Run it through `scripts/bench-probe.sh`, which builds everything in release mode.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rookery_common::db::Pool;
use rookery_tests::{
    app::{PASSWORD, TestClient, location, unique_email},
    node::NodeProcess,
    process::PanelProcess,
};
use sqlx::Row;
use tokio::time::Instant;

/// The panel's own location name in `probe_results` (its default `probe.location`).
const LOCATION: &str = "panel";
/// The panel's default probe timeout, in seconds (results of probes started before the
/// end of the window are all stored this long after it).
const PROBE_TIMEOUT_SECS: u64 = 10;
/// Rows of the usage samples the panel's node poller stores (one per vhost and poll).
const USAGE_ROWS_SQL: &str = "SELECT COUNT(*) AS n FROM usage_samples";
/// Domain forms submitted at once.
const FORM_WORKERS: usize = 4;

#[derive(Parser)]
#[command(about = "Measures the panel's prober: probes per minute and the panel's CPU")]
struct Args {
    /// Nodes in the pool.
    #[arg(long, default_value_t = 2)]
    nodes: usize,
    /// Domains probed.
    #[arg(long, default_value_t = 5000)]
    domains: usize,
    /// Length of the measurement window, in seconds.
    #[arg(long, default_value_t = 180)]
    secs: u64,
    /// The probe interval (`ROOKERY_PROBE__INTERVAL_SECS`).
    #[arg(long, default_value_t = 60)]
    interval: u64,
    /// Minutes the set-up (provisioning, probe accounts, every domain probed once) may take.
    #[arg(long, default_value_t = 45)]
    setup_minutes: u64,
    /// Skip the second measurement: the first interval after a panel restart.
    #[arg(long)]
    no_restart: bool,
    /// How often the panel polls each node for status, usage and vhosts
    /// (`ROOKERY_PROVISIONING__POLL_INTERVAL_SECS`; default: the panel's own, 5 s). A long
    /// one takes the poller's share out of the panel's CPU.
    #[arg(long)]
    poll_secs: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Dropping the run's future kills the panel and the nodes (kill_on_drop), also when the
    // benchmark is interrupted.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        done = run(args) => done,
        _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        _ = term.recv() => bail!("terminated"),
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    ensure!(
        args.nodes >= 1 && args.domains >= 1 && args.secs >= 1 && args.interval >= 1,
        "at least one node, one domain, one second and a positive interval"
    );
    println!(
        "command: rookery-probe-bench --nodes {} --domains {} --secs {} --interval {}{}{}",
        args.nodes,
        args.domains,
        args.secs,
        args.interval,
        args.poll_secs
            .map(|s| format!(" --poll-secs {s}"))
            .unwrap_or_default(),
        if args.no_restart { " --no-restart" } else { "" }
    );
    let setup_deadline = Instant::now() + Duration::from_secs(args.setup_minutes * 60);
    let ticks_per_sec = clock_ticks_per_sec();

    let ca_dir = tempfile::Builder::new()
        .prefix("rookery-probe-bench-ca-")
        .tempdir()?;
    let ca = TestCa::new()?;
    let ca_file = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.cert_pem)?;
    let trust_roots = format!("[\"{}\"]", ca_file.display());
    let interval = args.interval.to_string();
    let poll = args.poll_secs.map(|s| s.to_string());
    let mut env = vec![
        ("ROOKERY_PROBE__INTERVAL_SECS", interval.as_str()),
        ("ROOKERY_PROBE__TRUST_ROOTS", trust_roots.as_str()),
        ("ROOKERY_PROVISIONING__NODE_TIMEOUT_SECS", "30"),
    ];
    if let Some(poll) = &poll {
        env.push(("ROOKERY_PROVISIONING__POLL_INTERVAL_SECS", poll.as_str()));
    }
    let mut panel = PanelProcess::start_with_env(&env).await?;
    let panel_pid = panel.pid().context("the panel has exited")?;
    let admin = panel.admin_client().await?;
    let mut nodes = BTreeMap::new();
    for i in 0..args.nodes {
        let token = join_token(&admin).await?;
        let name = format!("bench-{i}");
        let node = NodeProcess::join_and_start(&panel.base_url, &token, &name).await?;
        nodes.insert(name, node);
    }
    // A node joins with room for 1,000 domains; the operator of a bigger node says so
    // (`rookery-node join --max-vhosts`), as this does for the enrolled ones.
    let db = rookery_common::db::connect(&panel.database.url, 2).await?;
    sqlx::query("UPDATE nodes SET capacity_vhosts = $1 WHERE capacity_vhosts < $1")
        .bind(i64::try_from(args.domains)?)
        .execute(&db)
        .await?;
    let node_pids = child_pids("rookery-node")?;
    ensure!(
        node_pids.len() == args.nodes,
        "found {} rookery-node processes, expected {}",
        node_pids.len(),
        args.nodes
    );
    println!(
        "pool: {} nodes enrolled; panel pid {panel_pid}, node pids {node_pids:?}",
        nodes.len()
    );

    // Certificates first: a node loads the pair it finds for a new vhost.
    let domains: Vec<String> = (0..args.domains)
        .map(|i| format!("d{i:05}.probe.bench"))
        .collect();
    let started = Instant::now();
    let cert_dirs: Vec<PathBuf> = nodes.values().map(|n| n.data_dir().join("certs")).collect();
    let issued = {
        let domains = domains.clone();
        tokio::task::spawn_blocking(move || ca.issue_all(&domains, &cert_dirs)).await??
    };
    println!(
        "{issued} certificates issued by the test CA into the nodes' certificate folders in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let customer = TestClient::new(&panel.base_url);
    let r = customer
        .post_form(
            "/signup",
            &[
                ("email", unique_email("probe-bench").as_str()),
                ("password", PASSWORD),
                ("org_name", "Probe bench"),
            ],
        )
        .await;
    ensure!(r.status() == 303, "sign-up failed: {}", r.status());
    let org = location(&r)
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();

    let started = Instant::now();
    add_domains(&customer, &org, &domains).await?;
    println!(
        "{} domains added through the panel's form in {:.1} s",
        domains.len(),
        started.elapsed().as_secs_f64()
    );

    let total = i64::try_from(domains.len())?;
    wait_for(
        &db,
        "active on their node",
        "SELECT COUNT(*) AS n FROM domains WHERE state = 'active' AND node_id = applied_node_id AND generation = applied_generation",
        total,
        setup_deadline,
    )
    .await?;
    println!(
        "all domains active on their node {:.1} s after the first was added",
        started.elapsed().as_secs_f64()
    );
    wait_for(
        &db,
        "with a probe account",
        "SELECT COUNT(*) AS n FROM domains WHERE probe_node_id IS NOT NULL AND probe_node_id = applied_node_id",
        total,
        setup_deadline,
    )
    .await?;
    println!(
        "all probe accounts created {:.1} s after the first domain was added",
        started.elapsed().as_secs_f64()
    );
    let probed_sql = format!(
        "SELECT COUNT(DISTINCT domain_id) AS n FROM probe_results WHERE location = '{LOCATION}'"
    );
    wait_for(
        &db,
        "probed at least once",
        &probed_sql,
        total,
        setup_deadline,
    )
    .await?;
    let ok_once: i64 = count(
        &db,
        &format!(
            "SELECT COUNT(DISTINCT domain_id) AS n FROM probe_results WHERE location = '{LOCATION}' AND ok = 1"
        ),
    )
    .await?;
    println!("every domain probed: {ok_once} of {total} with at least one successful probe");
    if ok_once == 0 {
        let error: Option<String> = sqlx::query(&format!(
            "SELECT error FROM probe_results WHERE location = '{LOCATION}' AND ok = 0 LIMIT 1"
        ))
        .fetch_optional(&db)
        .await?
        .map(|r| r.try_get("error"))
        .transpose()?;
        bail!(
            "no probe succeeded, for example: {}",
            error.unwrap_or_default()
        );
    }

    let names: Vec<&str> = nodes.keys().map(String::as_str).collect();
    let scale = Scale {
        domains: domains.len(),
        nodes: &names,
        interval: args.interval,
        ticks_per_sec,
    };
    println!("measuring the steady state for {} s…", args.secs);
    let steady = measure(&db, panel_pid, &node_pids, args.secs, &scale).await?;
    steady.print("steady state", &scale);
    let (targets_ms, recent_ms) = fixed_costs(&db, ticks_per_sec).await?;
    println!(
        "  per-second queries of the prober, run here through the same driver: listing the {} targets {targets_ms:.1} ms CPU per call (the scheduler lists them every second: {:.1} % of a core), the round keeper's read of recent results {recent_ms:.1} ms per call ({:.1} %)",
        domains.len(),
        targets_ms / 10.0,
        recent_ms / 10.0
    );

    if !args.no_restart {
        // A restarted panel has no salted password cached: one PBKDF2 per domain and login
        // in its first interval, as after every deployment.
        panel.kill_and_restart().await?;
        let restarted = unix_now() as i64;
        let panel_pid = panel.pid().context("the restarted panel has exited")?;
        // The killed process still holds the prober's lease until it runs out (a crash, as
        // far as the panel can tell): the new one starts probing then.
        let probing_sql = format!(
            "SELECT COUNT(*) AS n FROM probe_results WHERE location = '{LOCATION}' AND at >= {restarted}"
        );
        let deadline = Instant::now() + Duration::from_secs(120);
        while count(&db, &probing_sql).await? == 0 {
            ensure!(
                Instant::now() < deadline,
                "the restarted panel did not probe within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "panel restarted (pid {panel_pid}), probing again {:.0} s later (when the killed process's lease ran out); measuring its first interval ({} s)…",
            unix_now() - restarted as f64,
            args.interval
        );
        let cold = measure(&db, panel_pid, &node_pids, args.interval, &scale).await?;
        cold.print(
            "first interval after a restart (no salted password cached)",
            &scale,
        );
    }
    db.close().await;

    panel.stop().await;
    for (_, mut node) in nodes {
        node.kill().await;
    }
    Ok(())
}

/// The CPU time (ms, this process and its database threads) of one call of the queries the
/// prober runs every second whatever is due: the scheduler's list of every target, and
/// the round keeper's read of the results received in the last few seconds.
async fn fixed_costs(db: &Pool, ticks_per_sec: f64) -> anyhow::Result<(f64, f64)> {
    const CALLS: u32 = 50;
    let me = std::process::id();
    let before = CpuSample::take(me)?;
    for _ in 0..CALLS {
        rookery::probe::db::targets(db).await?;
    }
    let middle = CpuSample::take(me)?;
    let since = unix_now() as i64 - 6;
    for _ in 0..CALLS {
        rookery::probe::db::received_since(db, since).await?;
    }
    let after = CpuSample::take(me)?;
    let ms = |a: &CpuSample, b: &CpuSample| {
        (b.ticks - a.ticks) as f64 / ticks_per_sec * 1000.0 / f64::from(CALLS)
    };
    Ok((ms(&before, &middle), ms(&middle, &after)))
}

/// What the benchmark ran against, for the summary.
struct Scale<'a> {
    domains: usize,
    nodes: &'a [&'a str],
    interval: u64,
    ticks_per_sec: f64,
}

/// One measurement window's figures.
struct Window {
    secs: u64,
    results: WindowResults,
    /// Rounds stored in the window, and how many of them up.
    rounds: (i64, i64),
    /// Rows the node poller added to `usage_samples` in the window.
    usage_rows: i64,
    panel_pid: u32,
    panel_cpu: f64,
    node_cpu: Vec<f64>,
    machine_busy: f64,
    peak_rss_kib: u64,
}

/// Measures for `secs` seconds, from the next whole second (probe start times, `at`, are
/// whole seconds), and waits until the probes started in the window are stored.
async fn measure(
    db: &Pool,
    panel_pid: u32,
    node_pids: &[u32],
    secs: u64,
    scale: &Scale<'_>,
) -> anyhow::Result<Window> {
    let now = unix_now();
    let next_second = now.ceil();
    tokio::time::sleep(Duration::from_secs_f64(next_second - now)).await;
    let t0 = next_second as i64;
    let rounds_before = rounds(db).await?;
    let usage_before = count(db, USAGE_ROWS_SQL).await?;
    let panel_before = CpuSample::take(panel_pid)?;
    let machine_before = MachineSample::take()?;
    let nodes_before: Vec<CpuSample> = node_pids
        .iter()
        .map(|&p| CpuSample::take(p))
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let ticks = scale.ticks_per_sec;
    let panel_cpu = CpuSample::take(panel_pid)?.percent_since(&panel_before, ticks);
    let node_cpu: Vec<f64> = node_pids
        .iter()
        .zip(&nodes_before)
        .map(|(&p, before)| Ok(CpuSample::take(p)?.percent_since(before, ticks)))
        .collect::<anyhow::Result<_>>()?;
    let machine_busy = MachineSample::take()?.busy_since(&machine_before);
    let rounds_after = rounds(db).await?;
    let usage_rows = count(db, USAGE_ROWS_SQL).await? - usage_before;
    let peak_rss_kib = peak_rss_kib(panel_pid)?;
    // Probes started before the end are stored by the end of their timeout.
    tokio::time::sleep(Duration::from_secs(PROBE_TIMEOUT_SECS + 3)).await;
    let results = window_results(db, t0, t0 + i64::try_from(secs)?).await?;
    Ok(Window {
        secs,
        results,
        rounds: (
            rounds_after.0 - rounds_before.0,
            rounds_after.1 - rounds_before.1,
        ),
        usage_rows,
        panel_pid,
        panel_cpu,
        node_cpu,
        machine_busy,
        peak_rss_kib,
    })
}

impl Window {
    fn print(&self, title: &str, scale: &Scale<'_>) {
        let minutes = self.secs as f64 / 60.0;
        let expected = scale.domains as f64 * 60.0 / scale.interval as f64;
        let r = &self.results;
        let probes = r.ok + r.failed;
        let probes_per_min = probes as f64 / minutes;
        let ok_pct = if probes == 0 {
            0.0
        } else {
            100.0 * r.ok as f64 / probes as f64
        };
        let failures = if r.by_stage.is_empty() {
            "none".to_string()
        } else {
            r.by_stage
                .iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let nodes_cpu = scale
            .nodes
            .iter()
            .zip(&self.node_cpu)
            .map(|(n, c)| format!("{n} {c:.1} %"))
            .collect::<Vec<_>>()
            .join(", ");
        let ours = (self.panel_cpu + self.node_cpu.iter().sum::<f64>()) / cores() as f64;
        let verdict = if probes_per_min >= 5000.0 && self.panel_cpu < 100.0 {
            "met"
        } else {
            "missed"
        };
        let rows = [
            (
                "domains",
                format!("{} on {} nodes", scale.domains, scale.nodes.len()),
            ),
            (
                "interval",
                format!(
                    "{} s (expected {expected:.0} probes/min); window {} s",
                    scale.interval, self.secs
                ),
            ),
            (
                "probes/min",
                format!("{probes_per_min:.0} ({probes} probes started in the window)"),
            ),
            (
                "ok",
                format!("{ok_pct:.2} % ({} ok, {} failed)", r.ok, r.failed),
            ),
            ("failures by stage", failures),
            (
                "domains probed",
                format!(
                    "{} of {}; seconds with no probe started: {}",
                    r.domains,
                    scale.domains,
                    idle_seconds(&r.idle_seconds, scale.interval)
                ),
            ),
            (
                "probe time (ok)",
                format!(
                    "median {} ms, p95 {} ms, max {} ms",
                    r.median_ms, r.p95_ms, r.max_ms
                ),
            ),
            (
                "rounds/min",
                format!(
                    "{:.0} ({} rounds decided, {} up)",
                    self.rounds.0 as f64 / minutes,
                    self.rounds.0,
                    self.rounds.1
                ),
            ),
            (
                "panel CPU",
                format!(
                    "{:.1} % of one core (pid {})",
                    self.panel_cpu, self.panel_pid
                ),
            ),
            ("node CPU", nodes_cpu),
            (
                "usage rows/s",
                format!(
                    "{:.0} (`usage_samples` rows the node poller wrote, for comparison with {:.1} probe results/s)",
                    self.usage_rows as f64 / self.secs as f64,
                    probes as f64 / self.secs as f64
                ),
            ),
            (
                "machine busy",
                format!(
                    "{:.1} % of {} cores, of which the panel and the nodes {ours:.1} % (more means other work interfered)",
                    self.machine_busy,
                    cores()
                ),
            ),
            (
                "peak panel RSS",
                format!("{:.1} MiB (VmHWM)", self.peak_rss_kib as f64 / 1024.0),
            ),
            (
                "target",
                format!("≥ 5000 probes/min with panel CPU < 100 % of one core: {verdict}"),
            ),
        ];
        println!();
        println!("prober benchmark, {title}:");
        for (name, value) in rows {
            println!("  {name:<18} {value}");
        }
        for (error, n) in &r.top_errors {
            println!("  failed {n:>5} × {error}");
        }
        println!();
    }
}

/// A certificate authority for the benchmark's domains.
struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl TestCa {
    fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Rookery probe benchmark CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            issuer: Issuer::new(params, key),
            cert_pem,
        })
    }

    /// Issues a certificate (leaf, then the CA) and key for each domain and writes them to
    /// `<dir>/<domain>.crt|.key` in every one of `dirs`; returns how many domains.
    fn issue_all(&self, domains: &[String], dirs: &[PathBuf]) -> anyhow::Result<usize> {
        for dir in dirs {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        for domain in domains {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(vec![domain.clone()])?;
            params.distinguished_name.push(DnType::CommonName, domain);
            let leaf = params.signed_by(&key, &self.issuer)?;
            let chain = format!("{}{}", leaf.pem(), self.cert_pem);
            let key_pem = key.serialize_pem();
            for dir in dirs {
                write(&dir.join(format!("{domain}.key")), &key_pem)?;
                write(&dir.join(format!("{domain}.crt")), &chain)?;
            }
        }
        Ok(domains.len())
    }
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Submits the domain form for every domain, a few at a time.
async fn add_domains(customer: &TestClient, org: &str, domains: &[String]) -> anyhow::Result<()> {
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..FORM_WORKERS {
        let (customer, path) = (customer.clone(), format!("{org}/domains"));
        let mine: Vec<String> = domains
            .iter()
            .skip(w)
            .step_by(FORM_WORKERS)
            .cloned()
            .collect();
        workers.spawn(async move {
            for domain in mine {
                let r = customer
                    .post_form(&path, &[("domain", domain.as_str())])
                    .await;
                ensure!(r.status() == 303, "adding {domain} failed: {}", r.status());
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done??;
    }
    Ok(())
}

/// Waits until `sql` (a `COUNT(*) AS n`) reaches `total`, printing progress every 15 s.
/// Returns how long it waited.
async fn wait_for(
    db: &Pool,
    what: &str,
    sql: &str,
    total: i64,
    deadline: Instant,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut told = Instant::now();
    loop {
        let n = count(db, sql).await?;
        if n >= total {
            return Ok(started.elapsed());
        }
        if Instant::now() >= deadline {
            bail!("only {n} of {total} domains {what} when the set-up time ran out");
        }
        if told.elapsed() >= Duration::from_secs(15) {
            println!(
                "  … {n} of {total} domains {what} ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
            told = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn count(db: &Pool, sql: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query(sql).fetch_one(db).await?.try_get("n")?)
}

/// Rounds stored so far, and how many of them up.
async fn rounds(db: &Pool) -> anyhow::Result<(i64, i64)> {
    let r = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(up), 0) AS BIGINT) AS up FROM probe_rounds",
    )
    .fetch_one(db)
    .await?;
    Ok((r.try_get("n")?, r.try_get("up")?))
}

/// The panel's own probes that started in `[from, to)`.
struct WindowResults {
    ok: i64,
    failed: i64,
    by_stage: Vec<(String, i64)>,
    top_errors: Vec<(String, i64)>,
    median_ms: i64,
    p95_ms: i64,
    max_ms: i64,
    /// Distinct domains probed in the window.
    domains: i64,
    /// Seconds of the window in which no probe started: with thousands of domains spread
    /// over the interval, each is a second whose domains the scheduler skipped.
    idle_seconds: Vec<i64>,
}

async fn window_results(db: &Pool, from: i64, to: i64) -> anyhow::Result<WindowResults> {
    let rows = sqlx::query(
        "SELECT domain_id, at, ok, stage, error, total_ms FROM probe_results WHERE location = $1 AND at >= $2 AND at < $3",
    )
    .bind(LOCATION)
    .bind(from)
    .bind(to)
    .fetch_all(db)
    .await?;
    let (mut ok, mut failed) = (0, 0);
    let mut by_stage: BTreeMap<String, i64> = BTreeMap::new();
    let mut errors: BTreeMap<String, i64> = BTreeMap::new();
    let mut times = Vec::new();
    let mut domains = std::collections::HashSet::new();
    let mut seconds = std::collections::HashSet::new();
    for r in &rows {
        domains.insert(r.try_get::<String, _>("domain_id")?);
        seconds.insert(r.try_get::<i64, _>("at")?);
        if r.try_get::<i64, _>("ok")? != 0 {
            ok += 1;
            times.push(r.try_get::<i64, _>("total_ms")?);
        } else {
            failed += 1;
            let stage: Option<String> = r.try_get("stage")?;
            *by_stage.entry(stage.unwrap_or_default()).or_default() += 1;
            let error: Option<String> = r.try_get("error")?;
            *errors.entry(error.unwrap_or_default()).or_default() += 1;
        }
    }
    times.sort_unstable();
    let at = |q: f64| {
        times
            .get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    let mut top_errors: Vec<(String, i64)> = errors.into_iter().collect();
    top_errors.sort_by_key(|e| std::cmp::Reverse(e.1));
    top_errors.truncate(5);
    Ok(WindowResults {
        ok,
        failed,
        by_stage: by_stage.into_iter().collect(),
        top_errors,
        median_ms: at(0.5),
        p95_ms: at(0.95),
        max_ms: times.last().copied().unwrap_or(0),
        domains: i64::try_from(domains.len())?,
        idle_seconds: (from..to).filter(|t| !seconds.contains(t)).collect(),
    })
}

/// "none", or how many and which (as offsets in the interval, `:07` for 7 s past).
fn idle_seconds(idle: &[i64], interval: u64) -> String {
    if idle.is_empty() {
        return "none".into();
    }
    let interval = i64::try_from(interval).unwrap_or(60).max(1);
    let shown: Vec<String> = idle
        .iter()
        .take(12)
        .map(|t| format!(":{:02}", t.rem_euclid(interval)))
        .collect();
    let more = if idle.len() > shown.len() {
        ", …"
    } else {
        ""
    };
    format!("{} ({}{more})", idle.len(), shown.join(", "))
}

/// A process's CPU time (user + system, in clock ticks) at a moment.
struct CpuSample {
    ticks: u64,
    at: std::time::Instant,
}

impl CpuSample {
    fn take(pid: u32) -> anyhow::Result<Self> {
        let fields = stat_fields(pid)?;
        // After the command name: state is field 3 of proc(5), utime 14 and stime 15.
        let tick = |i: usize| -> anyhow::Result<u64> {
            fields
                .get(i)
                .context("a short /proc stat line")?
                .parse()
                .context("a CPU time in /proc stat")
        };
        Ok(Self {
            ticks: tick(11)? + tick(12)?,
            at: std::time::Instant::now(),
        })
    }

    /// CPU time since `before` over the wall time since then, in % of one core.
    fn percent_since(&self, before: &CpuSample, ticks_per_sec: f64) -> f64 {
        let cpu = (self.ticks - before.ticks) as f64 / ticks_per_sec;
        let wall = (self.at - before.at).as_secs_f64();
        100.0 * cpu / wall.max(1e-9)
    }
}

/// The whole machine's busy and total CPU time (the `cpu` line of `/proc/stat`).
struct MachineSample {
    busy: u64,
    total: u64,
}

impl MachineSample {
    fn take() -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let times: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("cpu "))
            .context("no cpu line in /proc/stat")?
            .split_whitespace()
            .map(|v| v.parse().context("a CPU time in /proc/stat"))
            .collect::<anyhow::Result<_>>()?;
        // user nice system idle iowait irq softirq steal …: idle and iowait are not busy.
        let total: u64 = times.iter().take(8).sum();
        let idle = times.get(3).copied().unwrap_or(0) + times.get(4).copied().unwrap_or(0);
        Ok(Self {
            busy: total - idle,
            total,
        })
    }

    /// The share of all cores busy since `before`, in %.
    fn busy_since(&self, before: &MachineSample) -> f64 {
        100.0 * (self.busy - before.busy) as f64 / (self.total - before.total).max(1) as f64
    }
}

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces).
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let rest = stat
        .rsplit_once(')')
        .context("no command name in /proc stat")?
        .1;
    Ok(rest.split_whitespace().map(str::to_string).collect())
}

/// The ids of this process's children running `name` (the nodes, which the harness starts
/// without telling their ids).
fn child_pids(name: &str) -> anyhow::Result<Vec<u32>> {
    let me = std::process::id().to_string();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(pid) = entry?.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let comm = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(c, _)| c);
        let parent = stat_fields(pid)
            .ok()
            .and_then(|f| f.get(1).cloned())
            .unwrap_or_default();
        if comm == Some(name) && parent == me {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// The most resident memory the process ever used (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .context("no VmHWM in /proc status")?
        .parse()
        .context("VmHWM is no number")
}

/// `getconf CLK_TCK`: the unit of the CPU times in `/proc` (100 on Linux).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

async fn join_token(admin: &TestClient) -> anyhow::Result<String> {
    let html = admin
        .post_form("/admin/nodes/tokens", &[("note", "probe bench")])
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
