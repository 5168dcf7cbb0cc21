//! `rookery-uptime-bench`: how fast the pages that show uptime render on a big platform
//! (issue 6: "The dashboard and admin overview render in under 20 ms median with 10,000
//! domains and 90 days of results in the database").
//!
//! It starts a real panel process (fresh database, the prober off, no local node), makes a
//! platform admin with `rookery admin create` and two customers through the sign-up form (a
//! small organisation and a reseller-sized one), then seeds the panel's database directly,
//! in batched transactions, with what a running system leaves behind:
//!
//! - `--domains` domains on three fake node rows, mostly active, every 20th suspended,
//!   spread over the two customers' organisations and 8 more tenants;
//! - per domain: `probe_daily` for 90 days, `probe_hourly` for the last `--hourly-days`,
//!   its `probe_status` row, three closed incidents (every `--open-every`th domain has one
//!   open too), and the last `--raw-minutes` of `probe_rounds` and raw `probe_results` (one
//!   location, a round a minute). The daily rows of days the hourly roll-up covers are its
//!   sums, and the 24-hour counts of `probe_status` are the sums of the last 24 hours, as
//!   the round keeper computes them.
//!
//! Then it GETs each page `--requests` times (after `--warmup` untimed GETs) with a logged-in
//! browser-like client, one request at a time, and prints the median, p90 and max; and it
//! times the SQL of those pages alone (the panel's own `db` functions, called from this
//! process on the same database) so a slow page can be told apart from a slow query.
//!
//! The fake nodes cannot be reached (their secret does not unseal), so the domain page's
//! account list fails fast instead of asking a node. Run it through
//! `scripts/bench-uptime-pages.sh`, which builds everything in release mode.

use std::time::Duration;

use anyhow::{Context, ensure};
use clap::Parser;
use rookery::{domains::db as domains, probe::db as probes};
use rookery_tests::{
    app::{PASSWORD, TestClient, location, unique_email},
    process::PanelProcess,
};
use sqlx::{Connection, Executor, Row, pool::PoolConnection};
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Times the uptime pages over a database seeded like a big platform's")]
struct Args {
    /// Domains on the platform.
    #[arg(long, default_value_t = 10_000)]
    domains: i64,
    /// Domains of the small customer whose pages are timed.
    #[arg(long, default_value_t = 50)]
    customer_domains: i64,
    /// Domains of the reseller-sized organisation (its domain list is timed too).
    #[arg(long, default_value_t = 1_000)]
    reseller_domains: i64,
    /// Days of daily roll-ups per domain.
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// Days of hourly roll-ups per domain (the panel keeps 35; the pages read at most 8).
    #[arg(long, default_value_t = 35)]
    hourly_days: i64,
    /// Minutes of raw results and rounds per domain (the panel keeps 30 days of them).
    #[arg(long, default_value_t = 60)]
    raw_minutes: i64,
    /// Every n-th domain has an open incident.
    #[arg(long, default_value_t = 100)]
    open_every: i64,
    /// Timed GETs per page.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Untimed GETs per page before the timed ones.
    #[arg(long, default_value_t = 20)]
    warmup: usize,
    /// Run ANALYZE after seeding (the panel itself never does).
    #[arg(long)]
    analyze: bool,
    /// Have the panel log every SQL statement (sqlx at debug level) and print, for one GET
    /// of each page, its statements and their time beside the whole request's. The logging
    /// slows the panel: take the timings from a run without it.
    #[arg(long)]
    sql_log: bool,
    /// Keep the panel and its database this many seconds after measuring, to look around.
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
}

/// Domains seeded per transaction.
const CHUNK: i64 = 500;
/// Other tenants the remaining domains are spread over.
const TENANTS: i64 = 8;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.customer_domains >= 2
            && args.customer_domains + args.reseller_domains <= args.domains
            && args.days >= 1
            && args.hourly_days >= 1
            && args.raw_minutes >= 1
            && args.open_every >= 1
            && args.requests >= 1,
        "the customer needs 2 domains or more, the two customers fit in --domains, and every count is at least 1"
    );
    println!(
        "command: rookery-uptime-bench --domains {} --customer-domains {} --reseller-domains {} --days {} --hourly-days {} --raw-minutes {} --open-every {} --requests {} --warmup {}{}",
        args.domains,
        args.customer_domains,
        args.reseller_domains,
        args.days,
        args.hourly_days,
        args.raw_minutes,
        args.open_every,
        args.requests,
        args.warmup,
        if args.analyze { " --analyze" } else { "" }
    );
    let mut env = vec![("ROOKERY_PROBE__ENABLED", "false")];
    if args.sql_log {
        env.push(("RUST_LOG", "info,sqlx::query=debug"));
    }
    let panel = PanelProcess::start_with_env(&env).await?;
    let engine = if panel.database.is_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    println!("panel: {} on {engine}, prober off", panel.base_url);

    let admin = panel.admin_client().await?;
    let (customer, customer_org) = sign_up(&panel, "Bench customer").await?;
    let (reseller, reseller_org) = sign_up(&panel, "Bench reseller").await?;

    let db = rookery_common::db::connect(&panel.database.url, 2).await?;
    let mut conn = db.acquire().await?;
    let started = Instant::now();
    let plan = Plan::new(&args, now());
    seed(&mut conn, &args, &plan, &customer_org, &reseller_org).await?;
    // The rows went straight into the tables: their overview rank (which the round keeper
    // and the incidents keep) is computed once, as migration 0012 does for old data.
    let t = Instant::now();
    probes::rerank_all(&db).await?;
    println!(
        "  {:<50} {:>10}      {:.1} s",
        "probe_status overview rank",
        "",
        t.elapsed().as_secs_f64()
    );
    let seeded = started.elapsed();
    println!("seeding took {:.1} s in all", seeded.as_secs_f64());
    if args.analyze {
        let t = Instant::now();
        (&mut *conn).execute("ANALYZE").await?;
        println!("ANALYZE took {:.1} s", t.elapsed().as_secs_f64());
    }
    print_sizes(&mut conn, &panel).await?;
    drop(conn);

    // The pages: the small customer's first domain with closed incidents only, its public
    // status page switched on through the domain page's form.
    let domain_id: String =
        sqlx::query("SELECT id FROM domains WHERE org_id = $1 ORDER BY domain LIMIT 1 OFFSET 1")
            .bind(&customer_org)
            .fetch_one(&db)
            .await?
            .try_get("id")?;
    let domain_name: String = sqlx::query("SELECT domain FROM domains WHERE id = $1")
        .bind(&domain_id)
        .fetch_one(&db)
        .await?
        .try_get("domain")?;
    let r = customer
        .post_form(
            &format!("/o/{customer_org}/domains/{domain_id}/status-page"),
            &[("public", "on")],
        )
        .await;
    ensure!(
        r.status() == 303,
        "switching the status page on failed: {}",
        r.status()
    );
    let anonymous = TestClient::new(&panel.base_url);
    let pages_total = (args.domains + 99) / 100;
    let pages: Vec<(String, &TestClient, String, Check)> = vec![
        (
            format!("admin overview, page 1 of {pages_total}"),
            &admin,
            "/admin/uptime".into(),
            Check::Contains(format!("Page 1 of {pages_total}")),
        ),
        (
            format!("admin overview, page 50 of {pages_total}"),
            &admin,
            "/admin/uptime?page=50".into(),
            Check::Contains(format!("Page {} of {pages_total}", 50.min(pages_total))),
        ),
        (
            format!("admin overview, page {pages_total} of {pages_total} (last)"),
            &admin,
            format!("/admin/uptime?page={pages_total}"),
            Check::Contains(format!("Page {pages_total} of {pages_total}")),
        ),
        (
            "customer dashboard".into(),
            &customer,
            format!("/o/{customer_org}"),
            Check::Contains("Bench customer".into()),
        ),
        (
            format!("customer domain list ({})", args.customer_domains),
            &customer,
            format!("/o/{customer_org}/domains"),
            Check::Rows(args.customer_domains),
        ),
        (
            format!("domain page with uptime card ({domain_name})"),
            &customer,
            format!("/o/{customer_org}/domains/{domain_id}"),
            Check::Contains("id=\"uptime\"".into()),
        ),
        (
            "public status page".into(),
            &anonymous,
            format!("/status/{domain_name}"),
            Check::Contains("data-probe-status".into()),
        ),
        (
            "reseller dashboard".into(),
            &reseller,
            format!("/o/{reseller_org}"),
            Check::Contains("Bench reseller".into()),
        ),
        (
            format!("reseller domain list ({})", args.reseller_domains),
            &reseller,
            format!("/o/{reseller_org}/domains"),
            Check::Rows(args.reseller_domains),
        ),
    ];

    let pid = panel_pid(&panel)?;
    let ticks_per_ms = clock_ticks_per_second() as f64 / 1000.0;
    println!(
        "\nHTTP: {} timed GETs a page after {} untimed, one at a time, logged in, keep-alive; ms from sending to the last body byte;",
        args.requests, args.warmup
    );
    println!(
        "cpu: the panel process's CPU time (user + system) per timed GET, which other load on the machine does not inflate"
    );
    println!("machine load average before: {}", load_average());
    println!(
        "{:<52} {:>8} {:>8} {:>8} {:>8} {:>9}  target",
        "page", "median", "p90", "max", "cpu", "body"
    );
    let mut missed = Vec::new();
    for (label, client, path, check) in &pages {
        for _ in 0..args.warmup {
            get(client, path).await?;
        }
        let (_, body) = get(client, path).await?;
        check.verify(&body, path)?;
        let mut times = Vec::with_capacity(args.requests);
        let cpu_before = cpu_ticks(&pid)?;
        for _ in 0..args.requests {
            times.push(get(client, path).await?.0);
        }
        let cpu = (cpu_ticks(&pid)? - cpu_before) as f64 / ticks_per_ms / args.requests as f64;
        let s = Stats::of(times);
        let ok = s.median < 20.0;
        if !ok {
            missed.push(label.clone());
        }
        println!(
            "{label:<52} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>6} kB  {}",
            s.median,
            s.p90,
            s.max,
            cpu,
            body.len() / 1024,
            if ok {
                "ok"
            } else {
                "MISSED (median ≥ 20 ms)"
            }
        );
    }

    println!("machine load average after: {}", load_average());

    sql_timings(&db, &customer_org, &reseller_org, &domain_id, args.domains).await?;

    if args.sql_log {
        println!(
            "\nSQL inside the panel: one GET a page, the statements sqlx logged for it (their time runs until the last row is read)"
        );
        let log = panel.data_dir().join("panel-output.log");
        for (label, client, path, _) in &pages {
            let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let (took, _) = get(client, path).await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let text = std::fs::read(&log).context("reading the panel's log")?;
            // Only the statements run in this request's span: the poller and the reconciler
            // run theirs meanwhile.
            let mut statements = statements_in(
                &String::from_utf8_lossy(
                    &text[usize::try_from(from).unwrap_or(0).min(text.len())..],
                ),
                path.split('?').next().unwrap_or(path),
            );
            let in_sql: f64 = statements.iter().map(|s| s.ms).sum();
            println!(
                "{label}: {:.2} ms in all, {} statements {:.2} ms (summed: some run side by side), the rest (session, rendering, HTTP) {:.2} ms",
                took.as_secs_f64() * 1000.0,
                statements.len(),
                in_sql,
                took.as_secs_f64() * 1000.0 - in_sql
            );
            statements.sort_by(|a, b| b.ms.total_cmp(&a.ms));
            for st in statements.iter().take(4) {
                println!("    {:>7.2} ms  {:>6} rows  {}", st.ms, st.rows, st.summary);
            }
        }
    }

    println!(
        "\ntarget (issue 6): every median under 20 ms with {} domains and {} days of results: {}",
        args.domains,
        args.days,
        if missed.is_empty() {
            "met".to_string()
        } else {
            format!("MISSED by {}", missed.join(", "))
        }
    );
    if args.hold_secs > 0 {
        println!(
            "holding for {} s: panel {} (admin and customers' password {PASSWORD}), database {}",
            args.hold_secs, panel.base_url, panel.database.url
        );
        tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    }
    db.close().await;
    panel.stop().await;
    Ok(())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// The panel's process id: the process whose working folder is the panel's data folder.
fn panel_pid(panel: &PanelProcess) -> anyhow::Result<String> {
    let dir = panel.data_dir().canonicalize()?;
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.chars().all(|c| c.is_ascii_digit())
            && std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd == dir)
        {
            return Ok(name);
        }
    }
    anyhow::bail!("no process runs in {}", dir.display())
}

/// User and system CPU ticks a process has used (`/proc/<pid>/stat`).
fn cpu_ticks(pid: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // utime and stime are the 12th and 13th fields after the command name's ")".
    let rest = &stat[stat.rfind(')').context("odd /proc/<pid>/stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("odd /proc/<pid>/stat")
    };
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second of `/proc` CPU times (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks_per_second() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The machine's 1-, 5- and 15-minute load averages and its CPU count: other work on the
/// machine (builds) stretches wall-clock times.
fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!(
        "{} on {cpus} CPUs",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// A new customer through the sign-up form: the logged-in client and the organisation id.
async fn sign_up(panel: &PanelProcess, org_name: &str) -> anyhow::Result<(TestClient, String)> {
    let client = TestClient::new(&panel.base_url);
    let r = client
        .post_form(
            "/signup",
            &[
                ("email", unique_email("bench").as_str()),
                ("password", PASSWORD),
                ("org_name", org_name),
            ],
        )
        .await;
    ensure!(r.status() == 303, "signing up {org_name} failed");
    let org = location(&r)
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches("/o/")
        .to_string();
    ensure!(!org.is_empty(), "no organisation after signing up");
    Ok((client, org))
}

/// One GET: the time from sending to the last body byte, and the body.
async fn get(client: &TestClient, path: &str) -> anyhow::Result<(Duration, String)> {
    let started = Instant::now();
    let r = client.get(path).await;
    let status = r.status();
    let body = r.text().await.context("reading a page")?;
    let took = started.elapsed();
    ensure!(status == 200, "GET {path}: {status}");
    Ok((took, body))
}

/// One statement sqlx logged: its summary (the start of its SQL), rows and time.
struct Statement {
    summary: String,
    rows: String,
    ms: f64,
}

/// The statements of requests for `path` in a stretch of the panel's log (which may hold
/// terminal colours).
fn statements_in(log: &str, path: &str) -> Vec<Statement> {
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // A colour: ESC [ … m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let field = |line: &str, key: &str| -> Option<String> {
        let at = line.find(&format!(" {key}="))? + key.len() + 2;
        let rest = &line[at..];
        let value = if let Some(quoted) = rest.strip_prefix('"') {
            &quoted[..quoted.find('"').unwrap_or(quoted.len())]
        } else {
            rest.split_whitespace().next().unwrap_or_default()
        };
        Some(value.to_string())
    };
    plain
        .lines()
        .filter(|l| l.contains("elapsed_secs=") && l.contains(&format!("path={path} ")))
        .filter_map(|l| {
            let secs: f64 = field(l, "elapsed_secs")?.parse().ok()?;
            Some(Statement {
                summary: field(l, "summary")
                    .unwrap_or_default()
                    .chars()
                    .take(90)
                    .collect(),
                rows: field(l, "rows_returned").unwrap_or_default(),
                ms: secs * 1000.0,
            })
        })
        .collect()
}

/// What a page must show, so that a fast error page is not taken for a fast page.
enum Check {
    Contains(String),
    /// Exactly this many domain rows.
    Rows(i64),
}

impl Check {
    fn verify(&self, body: &str, path: &str) -> anyhow::Result<()> {
        match self {
            Check::Contains(s) => ensure!(body.contains(s.as_str()), "GET {path} lacks {s:?}"),
            Check::Rows(n) => {
                let rows = body.matches("<tr data-domain=").count() as i64;
                ensure!(rows == *n, "GET {path} lists {rows} domains, not {n}");
            }
        }
        Ok(())
    }
}

/// Median, 90th percentile and maximum of a sample, in milliseconds.
struct Stats {
    median: f64,
    p90: f64,
    max: f64,
}

impl Stats {
    fn of(mut times: Vec<Duration>) -> Stats {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let n = times.len();
        let median = if n.is_multiple_of(2) {
            (ms(times[n / 2 - 1]) + ms(times[n / 2])) / 2.0
        } else {
            ms(times[n / 2])
        };
        Stats {
            median,
            p90: ms(times[(n * 9).div_ceil(10) - 1]),
            max: ms(times[n - 1]),
        }
    }
}

/// The clock and the windows the seed covers.
struct Plan {
    /// The start of the current round (rounds are a minute apart).
    round: i64,
    /// The current UTC hour and day numbers.
    hour: i64,
    today: i64,
    /// Rounds in the current hour so far.
    rounds_this_hour: i64,
    /// Hourly rows per domain, the current hour included.
    hours: i64,
    /// The first day the hourly roll-up covers whole: days from it on are its sums.
    first_full_day: i64,
}

impl Plan {
    fn new(args: &Args, now: i64) -> Plan {
        let hour = now.div_euclid(3600);
        let hours = args.hourly_days * 24;
        let first_hour = hour - (hours - 1);
        Plan {
            round: now - now.rem_euclid(60),
            hour,
            today: now.div_euclid(86_400),
            rounds_this_hour: now.rem_euclid(3600) / 60 + 1,
            hours,
            first_full_day: (first_hour + 23).div_euclid(24),
        }
    }
}

type Conn = PoolConnection<sqlx::Any>;

/// Runs `sql` once per chunk of domains in a transaction each (`$1`/`$2` bound to the
/// chunk's first and past-the-end index, then `binds`); prints rows and time.
async fn per_chunk(
    conn: &mut Conn,
    what: &str,
    domains: i64,
    sql: &str,
    binds: &[i64],
) -> anyhow::Result<u64> {
    let started = Instant::now();
    let mut rows = 0;
    let mut lo = 0;
    while lo < domains {
        let hi = (lo + CHUNK).min(domains);
        let mut tx = Connection::begin(&mut **conn).await?;
        let mut q = sqlx::query(sql).bind(lo).bind(hi);
        for b in binds {
            q = q.bind(*b);
        }
        rows += q
            .execute(&mut *tx)
            .await
            .with_context(|| format!("seeding {what}"))?
            .rows_affected();
        tx.commit().await?;
        lo = hi;
    }
    println!(
        "  {what:<46} {rows:>11} rows  {:>7.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(rows)
}

/// Seeds nodes, tenants, domains and their uptime data (see the module header).
async fn seed(
    conn: &mut Conn,
    args: &Args,
    plan: &Plan,
    customer_org: &str,
    reseller_org: &str,
) -> anyhow::Result<()> {
    let t0 = now();
    println!("seeding (chunks of {CHUNK} domains, one transaction each):");
    let started = Instant::now();
    let mut tx = Connection::begin(&mut **conn).await?;
    let mut nodes = Vec::new();
    for i in 0..3 {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query(
            "INSERT INTO nodes (id, name, public_host, c2s_port, c2s_tls_port, control_url, control_cert_sha256, secret_sealed,
                capacity_vhosts, capacity_sessions, labels, version, state, health, last_heartbeat_at, created_at)
             VALUES ($1, $2, $3, 5222, 5223, $4, $5, 'bench-unsealable', 5000, 100000, '{}', 'bench', 'active', 'up', $6, $7)",
        )
        .bind(&id)
        .bind(format!("bench-node-{i}"))
        .bind(format!("node{i}.bench.example"))
        .bind(format!("https://127.0.0.1:{}", 9 + i))
        .bind("0".repeat(64))
        .bind(t0 - 5)
        .bind(t0 - 200 * 86_400)
        .execute(&mut *tx)
        .await
        .context("seeding nodes")?;
        nodes.push(id);
    }
    sqlx::query("UPDATE organisations SET is_reseller = 1 WHERE id = $1")
        .bind(reseller_org)
        .execute(&mut *tx)
        .await?;
    let mut tenants = Vec::new();
    for k in 0..TENANTS {
        let id = uuid::Uuid::now_v7().to_string();
        sqlx::query("INSERT INTO organisations (id, name, is_reseller, parent_id, created_at) VALUES ($1, $2, 0, $3, $4)")
            .bind(&id)
            .bind(format!("Bench tenant {k}"))
            .bind((k % 2 == 0).then_some(reseller_org))
            .bind(t0 - 200 * 86_400)
            .execute(&mut *tx)
            .await
            .context("seeding organisations")?;
        tenants.push(id);
    }
    let plan_id: Option<String> = sqlx::query("SELECT id FROM plans ORDER BY price_cents LIMIT 1")
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.try_get("id"))
        .transpose()?;
    tx.commit().await?;

    // The domains, and a scratch table numbering them for the set-based inserts below.
    (&mut **conn)
        .execute(
            "CREATE TEMPORARY TABLE seed_domains (i BIGINT PRIMARY KEY, id TEXT NOT NULL, open_incident BIGINT NOT NULL)",
        )
        .await?;
    (&mut **conn)
        .execute("CREATE TEMPORARY TABLE seed_n (n BIGINT PRIMARY KEY)")
        .await?;
    let mut i = 0;
    while i < args.domains {
        let hi = (i + 250).min(args.domains);
        let mut tx = Connection::begin(&mut **conn).await?;
        let mut values = Vec::new();
        let mut scratch = Vec::new();
        for j in i..hi {
            // The node is the desired, applied and probe account's node: settled.
            let b = (j - i) * 8;
            values.push(format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, 1, ${}, 1, ${}, ${}, ${}, 'rookery-probe', 'bench-unsealable', ${})",
                b + 1, b + 2, b + 3, b + 4, b + 5, b + 6, b + 6, b + 7, b + 8, b + 8, b + 6
            ));
            let s = (j - i) * 3;
            scratch.push(format!("(${}, ${}, ${})", s + 1, s + 2, s + 3));
        }
        let insert_sql = format!(
            "INSERT INTO domains (id, org_id, domain, state, plan_id, node_id, generation, applied_node_id, applied_generation,
                created_at, active_at, updated_at, probe_username, probe_password_sealed, probe_node_id) VALUES {}",
            values.join(", ")
        );
        let mut insert = sqlx::query(&insert_sql);
        let mut ids = Vec::new();
        for j in i..hi {
            let id = uuid::Uuid::now_v7().to_string();
            let (org, name) = if j < args.customer_domains {
                (customer_org, format!("d{j:05}.customer-bench.example"))
            } else if j < args.customer_domains + args.reseller_domains {
                (reseller_org, format!("d{j:05}.reseller-bench.example"))
            } else {
                let k = j % TENANTS;
                (
                    tenants[k as usize].as_str(),
                    format!("d{j:05}.tenant{k}-bench.example"),
                )
            };
            let created = t0 - 120 * 86_400 + j;
            insert = insert
                .bind(id.clone())
                .bind(org.to_string())
                .bind(name)
                .bind(if j % 20 == 19 { "suspended" } else { "active" })
                .bind(plan_id.clone())
                .bind(nodes[(j % 3) as usize].clone())
                .bind(created)
                .bind(created + 30);
            ids.push(id);
        }
        insert.execute(&mut *tx).await.context("seeding domains")?;
        let scratch_sql = format!(
            "INSERT INTO seed_domains (i, id, open_incident) VALUES {}",
            scratch.join(", ")
        );
        let mut scratch_insert = sqlx::query(&scratch_sql);
        for (j, id) in (i..hi).zip(ids) {
            scratch_insert = scratch_insert
                .bind(j)
                .bind(id)
                .bind(i64::from(j % args.open_every == 0));
        }
        scratch_insert.execute(&mut *tx).await?;
        tx.commit().await?;
        i = hi;
    }
    let needed = plan.hours.max(args.days).max(args.raw_minutes).max(3);
    let mut n = 0;
    let mut tx = Connection::begin(&mut **conn).await?;
    while n < needed {
        let hi = (n + 500).min(needed);
        let values: Vec<String> = (n..hi).map(|v| format!("({v})")).collect();
        sqlx::query(&format!(
            "INSERT INTO seed_n (n) VALUES {}",
            values.join(", ")
        ))
        .execute(&mut *tx)
        .await?;
        n = hi;
    }
    tx.commit().await?;
    println!(
        "  {:<46} {:>11} rows  {:>7.1} s",
        "nodes (3), tenants, domains",
        args.domains,
        started.elapsed().as_secs_f64()
    );

    let chunk = "s.i >= $1 AND s.i < $2";
    // An open incident's domain failed every round of the current and the previous hour;
    // other hours lose a few rounds now and then.
    let rounds = "(CASE WHEN n.n = 0 THEN $4 ELSE 60 END)";
    let down = format!(
        "(CASE WHEN s.open_incident = 1 AND n.n < 2 THEN {rounds} WHEN n.n = 0 THEN 0
               WHEN (s.i * 7919 + n.n * 104729) % 211 = 0 THEN (s.i + n.n) % 20 + 1 ELSE 0 END)"
    );
    per_chunk(
        conn,
        &format!("probe_hourly ({} days × 24)", args.hourly_days),
        args.domains,
        &format!(
            "INSERT INTO probe_hourly (domain_id, hour, up, down)
             SELECT s.id, $3 - n.n, {rounds} - {down}, {down}
             FROM seed_domains s CROSS JOIN seed_n n WHERE {chunk} AND n.n < $5 ORDER BY s.i, n.n DESC"
        ),
        &[plan.hour, plan.rounds_this_hour, plan.hours],
    )
    .await?;
    per_chunk(
        conn,
        "probe_daily, days the hourly rows cover (sums)",
        args.domains,
        &format!(
            "INSERT INTO probe_daily (domain_id, day, up, down)
             SELECT h.domain_id, h.hour / 24, CAST(SUM(h.up) AS BIGINT), CAST(SUM(h.down) AS BIGINT)
             FROM seed_domains s JOIN probe_hourly h ON h.domain_id = s.id
             WHERE {chunk} AND h.hour >= $3 AND h.hour / 24 > $4
             GROUP BY h.domain_id, h.hour / 24"
        ),
        &[plan.first_full_day * 24, plan.today - args.days],
    )
    .await?;
    let day_down =
        "(CASE WHEN (s.i * 7919 + n.n * 104729) % 37 = 0 THEN (s.i + n.n) % 45 + 1 ELSE 0 END)";
    per_chunk(
        conn,
        "probe_daily, older days (1,440 rounds each)",
        args.domains,
        &format!(
            "INSERT INTO probe_daily (domain_id, day, up, down)
             SELECT s.id, $3 - n.n, 1440 - {day_down}, {day_down}
             FROM seed_domains s CROSS JOIN seed_n n
             WHERE {chunk} AND n.n < $4 AND $3 - n.n < $5 ORDER BY s.i, n.n DESC"
        ),
        &[plan.today, args.days, plan.first_full_day],
    )
    .await?;
    per_chunk(
        conn,
        "probe_status (24-hour sums of the hourly rows)",
        args.domains,
        &format!(
            "INSERT INTO probe_status (domain_id, round_start, checked_at, up, stage, error, total_ms, reporting, failing, up_24h, down_24h)
             SELECT s.id, $3, $3 + 3 + s.i % 40,
                CASE WHEN s.open_incident = 1 THEN 0 ELSE 1 END,
                CASE WHEN s.open_incident = 1 THEN 'connect' ELSE NULL END,
                CASE WHEN s.open_incident = 1 THEN 'connection refused' ELSE NULL END,
                CASE WHEN s.open_incident = 1 THEN NULL ELSE 40 + s.i % 60 END,
                1, CASE WHEN s.open_incident = 1 THEN 1 ELSE 0 END,
                (SELECT CAST(COALESCE(SUM(h.up), 0) AS BIGINT) FROM probe_hourly h WHERE h.domain_id = s.id AND h.hour > $4),
                (SELECT CAST(COALESCE(SUM(h.down), 0) AS BIGINT) FROM probe_hourly h WHERE h.domain_id = s.id AND h.hour > $4)
             FROM seed_domains s WHERE {chunk}"
        ),
        &[plan.round, plan.hour - 24],
    )
    .await?;
    per_chunk(
        conn,
        "incidents, 3 closed a domain over 90 days",
        args.domains,
        &format!(
            "INSERT INTO incidents (id, domain_id, started_at, ended_at, stage, error)
             SELECT s.id || '-closed-' || CAST(n.n AS TEXT), s.id, $3 - (n.n + 1) * 25 * 86400 + s.i % 86400,
                $3 - (n.n + 1) * 25 * 86400 + s.i % 86400 + 180 + (s.i % 20) * 60,
                CASE (s.i + n.n) % 4 WHEN 0 THEN 'connect' WHEN 1 THEN 'tls' WHEN 2 THEN 'auth' ELSE 'timeout' END,
                'bench: a simulated failure'
             FROM seed_domains s CROSS JOIN seed_n n WHERE {chunk} AND n.n < 3"
        ),
        &[t0],
    )
    .await?;
    per_chunk(
        conn,
        &format!("incidents, open (every {}th domain)", args.open_every),
        args.domains,
        &format!(
            "INSERT INTO incidents (id, domain_id, started_at, ended_at, stage, error)
             SELECT s.id || '-open', s.id, $3, NULL, 'connect', 'connection refused'
             FROM seed_domains s WHERE {chunk} AND s.open_incident = 1"
        ),
        &[(plan.hour - 1) * 3600],
    )
    .await?;
    per_chunk(
        conn,
        &format!("probe_rounds (last {} minutes)", args.raw_minutes),
        args.domains,
        &format!(
            "INSERT INTO probe_rounds (domain_id, round_start, up, stage, reporting, failing)
             SELECT s.id, $3 - n.n * 60, 1 - s.open_incident,
                CASE WHEN s.open_incident = 1 THEN 'connect' ELSE NULL END, 1, s.open_incident
             FROM seed_domains s CROSS JOIN seed_n n WHERE {chunk} AND n.n < $4 ORDER BY s.i, n.n DESC"
        ),
        &[plan.round, args.raw_minutes],
    )
    .await?;
    per_chunk(
        conn,
        &format!("probe_results (last {} minutes, 1 location)", args.raw_minutes),
        args.domains,
        &format!(
            "INSERT INTO probe_results (id, domain_id, location, at, ok, stage, error, total_ms, stages, received_at)
             SELECT s.id || '-' || CAST(n.n AS TEXT), s.id, 'panel', $3 - n.n * 60 + s.i % 50, 1 - s.open_incident,
                CASE WHEN s.open_incident = 1 THEN 'connect' ELSE NULL END,
                CASE WHEN s.open_incident = 1 THEN 'connection refused' ELSE NULL END,
                CASE WHEN s.open_incident = 1 THEN 3 ELSE 40 + s.i % 60 END,
                CASE WHEN s.open_incident = 1 THEN '{{\"connect\":3.0}}'
                     ELSE '{{\"connect\":1.2,\"tls\":6.4,\"auth\":21.5,\"bind\":3.1,\"ping\":1.4,\"message\":2.2}}' END,
                $3 - n.n * 60 + s.i % 50 + 1
             FROM seed_domains s CROSS JOIN seed_n n WHERE {chunk} AND n.n < $4 ORDER BY s.i, n.n DESC"
        ),
        &[plan.round, args.raw_minutes],
    )
    .await?;
    (&mut **conn).execute("DROP TABLE seed_domains").await?;
    (&mut **conn).execute("DROP TABLE seed_n").await?;
    Ok(())
}

/// Row counts of the uptime tables and the database's size on disk.
async fn print_sizes(conn: &mut Conn, panel: &PanelProcess) -> anyhow::Result<()> {
    let mut counts = Vec::new();
    for table in [
        "domains",
        "probe_daily",
        "probe_hourly",
        "probe_status",
        "incidents",
        "probe_rounds",
        "probe_results",
    ] {
        let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&mut **conn)
            .await?
            .try_get("n")?;
        counts.push(format!("{table} {n}"));
    }
    println!("rows: {}", counts.join(", "));
    if panel.database.is_postgres() {
        let bytes: i64 = sqlx::query("SELECT pg_database_size(current_database()) AS n")
            .fetch_one(&mut **conn)
            .await?
            .try_get("n")?;
        println!("database size: {:.0} MB", bytes as f64 / 1e6);
    } else {
        (&mut **conn)
            .execute("PRAGMA wal_checkpoint(TRUNCATE)")
            .await?;
        let path = rookery_common::db::sqlite_path(&panel.database.url)
            .context("no SQLite file in the database URL")?;
        let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        println!(
            "database size: {:.0} MB (SQLite file, WAL checkpointed; WAL now {} kB)",
            size(&path) as f64 / 1e6,
            size(&format!("{path}-wal")) / 1024
        );
    }
    Ok(())
}

/// The SQL of the pages alone: the panel's own `db` functions, from this process.
async fn sql_timings(
    db: &rookery_common::db::Pool,
    customer_org: &str,
    reseller_org: &str,
    domain_id: &str,
    domains: i64,
) -> anyhow::Result<()> {
    const N: usize = 50;
    println!(
        "\nSQL alone: the panel's db functions called from this process on the same database (sqlx Any driver, as the panel), {N} runs each"
    );
    println!("{:<52} {:>8} {:>8} {:>8}", "query", "median", "p90", "max");
    async fn time<F, Fut, T>(label: &str, mut f: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        f().await?;
        let mut times = Vec::with_capacity(N);
        for _ in 0..N {
            let started = Instant::now();
            f().await?;
            times.push(started.elapsed());
        }
        let s = Stats::of(times);
        println!(
            "{label:<52} {:>8.2} {:>8.2} {:>8.2}",
            s.median, s.p90, s.max
        );
        Ok(())
    }
    time("probe::db::overview (every domain)", || async move {
        Ok(probes::overview(db).await?)
    })
    .await?;
    time("probe::db::overview + worst_first", || async move {
        let mut rows = probes::overview(db).await?;
        probes::worst_first(&mut rows);
        Ok(rows)
    })
    .await?;
    time("domains::db::for_org (customer)", || async move {
        Ok(domains::for_org(db, customer_org).await?)
    })
    .await?;
    time("domains::db::for_org (reseller)", || async move {
        Ok(domains::for_org(db, reseller_org).await?)
    })
    .await?;
    time("probe::db::org_summary (reseller)", || async move {
        Ok(probes::org_summary(db, reseller_org).await?)
    })
    .await?;
    // What the dashboard reads: the number of the organisation's domains, and its ten
    // worst ranked in SQL (`domains::health`).
    time("domains::db::count_for_org (reseller)", || async move {
        Ok(domains::count_for_org(db, reseller_org).await?)
    })
    .await?;
    time("probe::db::org_worst (reseller, 10)", || async move {
        Ok(probes::org_worst(db, reseller_org, 10).await?)
    })
    .await?;
    time(
        "driver baseline: SELECT id FROM domains (1 column)",
        || async move {
            Ok(sqlx::query("SELECT id FROM domains")
                .fetch_all(db)
                .await?
                .len())
        },
    )
    .await?;
    time(
        "probe::db::overview_counts + overview_page (page 1)",
        || async move {
            probes::overview_counts(db).await?;
            Ok(probes::overview_page(db, 0, 100).await?)
        },
    )
    .await?;
    time(
        "probe::db::overview_counts + overview_page (page 50)",
        || async move {
            probes::overview_counts(db).await?;
            Ok(probes::overview_page(db, 4900, 100).await?)
        },
    )
    .await?;
    let last = (domains - 1).max(0) / 100 * 100;
    time(
        "probe::db::overview_counts + overview_page (last)",
        || async move {
            probes::overview_counts(db).await?;
            Ok(probes::overview_page(db, last, 100).await?)
        },
    )
    .await?;
    let now = now();
    let today = now.div_euclid(86_400);
    time(
        "uptime card: latest, daily, counts_since ×2, incidents",
        || async move {
            probes::latest(db, domain_id).await?;
            probes::daily(db, domain_id, today - 90, today).await?;
            probes::counts_since(db, domain_id, now - 86_400).await?;
            probes::counts_since(db, domain_id, now - 7 * 86_400).await?;
            probes::incidents(db, domain_id, 20).await?;
            Ok(())
        },
    )
    .await?;
    time(
        "probe::db::daily ×10 (a dashboard's 10 health rows)",
        || async move {
            for _ in 0..10 {
                probes::daily(db, domain_id, today - 90, today).await?;
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}
