//! `rookery-load`: a load generator for `rookery-node` (issue 3, "Performance").
//!
//! It starts its own node on free loopback ports with a fresh SQLite store, provisions one
//! vhost and N accounts straight into the store, then:
//!
//! 1. logs N sessions in over STARTTLS + SCRAM-SHA-256 + bind, `--parallel` at a time, and
//!    keeps them open: logins/s, the node's CPU per login, its resident memory per session;
//! 2. pairs the sessions (2k sends to 2k+1, which answers) for `--duration-secs`, with at
//!    most `--in-flight` round trips outstanding: routed messages/s, the node's CPU per
//!    routed message, and one-way latency percentiles (the body carries the send time).
//!
//! CPU and memory come from `/proc/<node pid>/`; the generator's own CPU and that of
//! everything else on the machine are printed too, because they share the cores. The node
//! is killed at the end, on error and on Ctrl-C. `scripts/bench-node.sh` builds in release
//! mode, raises the open-file limit and runs it.

mod node;

use rookery_tests::xmpp::{client, scram, xml};

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::Duration,
};

use anyhow::{Context, ensure};
use clap::Parser;
use tokio::{
    sync::Semaphore,
    task::JoinSet,
    time::{Instant, timeout, timeout_at},
};

use crate::{
    client::{Account, LoginConfig, SaltCache, Session},
    node::{NodeOptions, NodeProcess, clock_ticks_per_second, cpu_ticks, machine_ticks, rss_kib},
    xml::El,
};

#[derive(Parser, Debug)]
#[command(
    name = "rookery-load",
    about = "Load generator for rookery-node: TLS+SCRAM logins, held sessions, routed messages"
)]
struct Args {
    /// Sessions to open and hold (even; they are paired for the message phase).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Length of the message phase, seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Logins in progress at once.
    #[arg(long, default_value_t = 200)]
    parallel: usize,
    /// Message round trips outstanding at once, over all pairs.
    #[arg(long, default_value_t = 200)]
    in_flight: usize,
    /// Offer at most this many routed messages per second (each round trip is two), to
    /// measure the node below saturation; 0: as fast as the node answers.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The node binary.
    #[arg(long, default_value = "target/release/rookery-node")]
    node_bin: PathBuf,
    /// Sessions logged in before the baseline and held (not paired), so one-off start-up
    /// allocations (TLS, database connections and caches) are not counted per session. They
    /// stay open: memory they freed would otherwise be reused by the measured sessions.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Send initial presence after binding (off: the run is about logins and routing).
    #[arg(long)]
    presence: bool,
    /// Enable XEP-0198 stream management with resumption after binding; the generator
    /// answers the node's acknowledgement requests.
    #[arg(long)]
    stream_management: bool,
    /// Switch the vhost's message archive (XEP-0313) off; it is on by default, as for
    /// any vhost whose spec does not say otherwise.
    #[arg(long)]
    no_archive: bool,
    /// Derive each salted password during the login instead of ahead of it.
    #[arg(long)]
    cold_keys: bool,
    /// Keep the node's data folder (database, certificate, log) and print where it is.
    #[arg(long)]
    keep: bool,
    /// The vhost to create.
    #[arg(long, default_value = "bench.example")]
    domain: String,
    /// Worker threads of the generator (default: one per core).
    #[arg(long)]
    client_threads: Option<usize>,
    /// `RUST_LOG` for the node (its default is `info,sqlx=warn`).
    #[arg(long, default_value = "info,sqlx=warn")]
    node_log: String,
}

/// Time base for the timestamps in message bodies (sender and receiver share the process).
static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();

fn now_us() -> u64 {
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_micros() as u64
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let threads = args
        .client_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(async {
        tokio::select! {
            r = run(&args) => r,
            () = interrupted() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    // Dropping `run` killed the node (kill_on_drop) and removed its folder.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rookery-load: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn account(prefix: &str, i: usize) -> Account {
    Account {
        user: format!("{prefix}{i:06}"),
        password: format!("pw-{prefix}-{i}-bench"),
    }
}

async fn run(args: &Args) -> anyhow::Result<()> {
    let n = args.sessions;
    ensure!(
        n >= 2 && n.is_multiple_of(2),
        "--sessions must be even and at least 2"
    );
    ensure!(
        args.parallel > 0 && args.in_flight > 0,
        "--parallel and --in-flight must be positive"
    );
    ensure!(
        args.node_bin.is_file(),
        "no node binary at {} (build it: cargo build --release -p rookery-node, or pass --node-bin)",
        args.node_bin.display()
    );
    // The node runs in its data folder: a relative path would not resolve there.
    let node_bin = std::path::absolute(&args.node_bin)?;
    let needed = (n + args.warmup + 200) as u64;
    let limit = node::open_files_limit()?;
    ensure!(
        limit >= needed,
        "the open-file limit is {limit}, {needed} are needed: raise it (ulimit -n 200000) or use scripts/bench-node.sh"
    );
    EPOCH.get_or_init(std::time::Instant::now);
    let tck = clock_ticks_per_second() as f64;
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());

    println!(
        "command: {}",
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    println!(
        "machine: {cores} cores ({}), {} UTC",
        cpu_model(),
        time::OffsetDateTime::now_utc()
            .format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]"
            ))
            .unwrap_or_default()
    );
    println!(
        "sessions (N): {n} (plus {} warm-up sessions opened before the baseline and held); stream management (XEP-0198): {}",
        args.warmup,
        if args.stream_management {
            "on, resumable"
        } else {
            "off"
        }
    );

    let data = tempfile::Builder::new().prefix("rookery-load-").tempdir()?;
    let database_url = format!("sqlite://{}/node.db?mode=rwc", data.path().display());
    let accounts: Vec<Account> = (0..n).map(|i| account("u", i)).collect();
    let warmups: Vec<Account> = (0..args.warmup).map(|i| account("w", i)).collect();
    let all: Vec<Account> = accounts.iter().chain(&warmups).cloned().collect();

    let started = Instant::now();
    node::provision(
        &database_url,
        &args.domain,
        &all,
        4096,
        cores.max(1) * 2,
        !args.no_archive,
    )
    .await?;
    println!(
        "provisioned {} accounts in {:.1} s",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    let keys = Arc::new(SaltCache::default());
    if !args.cold_keys {
        let started = Instant::now();
        node::prime_salted_passwords(&database_url, &args.domain, &all, &keys).await?;
        println!(
            "client salted passwords cached in {:.1} s (as after an earlier login; --cold-keys to skip)",
            started.elapsed().as_secs_f64()
        );
    }

    let node = NodeProcess::start(&NodeOptions {
        binary: &node_bin,
        data_dir: data.path(),
        database_url: &database_url,
        domain: &args.domain,
        max_connections_per_ip: n + args.warmup + 1000,
        log_filter: &args.node_log,
    })
    .await?;
    println!("node: pid {}, c2s {}", node.pid, node.c2s);
    let result = measure(args, &node, &accounts, &warmups, keys, tck).await;
    let result =
        result.map_err(|e| e.context(format!("the node's last log lines:\n{}\n", node.log_tail())));
    node.stop().await;
    if args.keep {
        println!("data folder kept: {}", data.keep().display());
    }
    result
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// CPU of the node, of the generator and of everything else, over one phase.
struct CpuSample {
    node: u64,
    me: u64,
    machine_busy: u64,
    machine_total: u64,
}

impl CpuSample {
    fn take(pid: u32) -> anyhow::Result<Self> {
        let (machine_busy, machine_total) = machine_ticks()?;
        Ok(Self {
            node: cpu_ticks(&pid.to_string())?,
            me: cpu_ticks("self")?,
            machine_busy,
            machine_total,
        })
    }

    /// (node ticks, generator ticks, other processes' share of the machine).
    fn since(&self, before: &CpuSample) -> (u64, u64, f64) {
        let node = self.node - before.node;
        let me = self.me - before.me;
        let busy = self.machine_busy - before.machine_busy;
        let total = (self.machine_total - before.machine_total).max(1);
        let other = busy.saturating_sub(node + me);
        (node, me, other as f64 / total as f64)
    }
}

async fn measure(
    args: &Args,
    node: &NodeProcess,
    accounts: &[Account],
    warmups: &[Account],
    keys: Arc<SaltCache>,
    tck: f64,
) -> anyhow::Result<()> {
    let n = accounts.len();
    let cfg = Arc::new(LoginConfig {
        addr: node.c2s,
        domain: args.domain.clone(),
        tls: client::tls_connector(&node.cert)?,
        keys: keys.clone(),
        resource: "load".into(),
        presence: args.presence,
    });

    let held = login_all(&cfg, warmups, args.parallel, args.stream_management).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Phase 1: logins.
    let rss_before = rss_kib(node.pid)?;
    let cpu_before = CpuSample::take(node.pid)?;
    let started = Instant::now();
    let sessions = login_all(&cfg, accounts, args.parallel, args.stream_management).await?;
    let login_wall = started.elapsed();
    let cpu_after = CpuSample::take(node.pid)?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_kib(node.pid)?;
    let (node_ticks, my_ticks, other) = cpu_after.since(&cpu_before);
    let ms = |ticks: u64| ticks as f64 * 1000.0 / tck;
    println!("node resident memory: {rss_before} KiB before, {rss_after} KiB with {n} sessions");
    println!(
        "resident memory per session: {:.1} KiB",
        (rss_after as f64 - rss_before as f64) / n as f64
    );
    println!(
        "logins/s: {:.0} ({n} TLS+SCRAM-SHA-256+bind logins in {:.2} s, {} in flight)",
        n as f64 / login_wall.as_secs_f64(),
        login_wall.as_secs_f64(),
        args.parallel
    );
    println!(
        "server CPU per login: {:.3} ms ({:.0} ms of node CPU for {n} logins)",
        ms(node_ticks) / n as f64,
        ms(node_ticks)
    );
    println!(
        "  (login phase: generator CPU {:.3} ms per login; other processes used {:.0}% of the machine; {} salted passwords derived during logins)",
        ms(my_ticks) / n as f64,
        other * 100.0,
        keys.misses.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Phase 2: message round trips between pairs.
    let routed_before = node.metric("rookery_node_stanzas_routed_total").await?;
    let cpu_before = CpuSample::take(node.pid)?;
    let started = Instant::now();
    let (sessions, mut latencies, stops) = exchange(
        sessions,
        Duration::from_secs(args.duration_secs),
        args.in_flight,
        args.rate,
    )
    .await?;
    let wall = started.elapsed();
    let cpu_after = CpuSample::take(node.pid)?;
    let routed_after = node.metric("rookery_node_stanzas_routed_total").await?;
    let rss_end = rss_kib(node.pid)?;
    let (node_ticks, my_ticks, other) = cpu_after.since(&cpu_before);
    let timed = latencies.len() as u64;
    let routed = timed + stops;
    let node_counted = (routed_after - routed_before) as u64;
    ensure!(
        node_counted == routed,
        "the node counted {node_counted} routed stanzas, the generator received {routed}"
    );
    ensure!(timed > 0, "no message made it through in the message phase");
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        latencies[i.clamp(1, latencies.len()) - 1] as f64 / 1000.0
    };
    println!(
        "routed msgs/s: {:.0} ({routed} messages between {} pairs in {:.2} s, {} round trips in flight)",
        routed as f64 / wall.as_secs_f64(),
        n / 2,
        wall.as_secs_f64(),
        args.in_flight.min(n / 2)
    );
    println!(
        "server CPU per routed message: {:.1} µs ({:.0} ms of node CPU)",
        ms(node_ticks) * 1000.0 / routed as f64,
        ms(node_ticks)
    );
    println!(
        "latency (one way, generator send → generator receive): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        pct(50.0),
        pct(99.0),
        pct(100.0)
    );
    println!(
        "  (message phase: generator CPU {:.1} µs per message; other processes used {:.0}% of the machine; node RSS now {rss_end} KiB)",
        ms(my_ticks) * 1000.0 / routed as f64,
        other * 100.0
    );
    if args.rate > 0 {
        println!("  (offered: at most {} routed msgs/s)", args.rate);
    }
    // Give the archive's writer a moment to catch up, then say what it did: every routed
    // message is archived twice (the sender's copy and the recipient's).
    tokio::time::sleep(Duration::from_secs(2)).await;
    match node.metric("rookery_node_archive_written_total").await {
        Ok(written) => println!(
            "archive (XEP-0313): {written:.0} of {} rows written by the node's archive writer ({:.1} %)",
            2 * routed,
            written * 50.0 / routed as f64
        ),
        Err(_) => println!("archive (XEP-0313): the node reports no archive"),
    }
    drop((sessions, held));
    Ok(())
}

/// Logs every account in, `parallel` at a time; the sessions come back in account order.
async fn login_all(
    cfg: &Arc<LoginConfig>,
    accounts: &[Account],
    parallel: usize,
    stream_management: bool,
) -> anyhow::Result<Vec<Session>> {
    let permits = Arc::new(Semaphore::new(parallel));
    let mut slots: Vec<Option<Session>> = (0..accounts.len()).map(|_| None).collect();
    let mut set = JoinSet::new();
    let mut store = |done: Result<anyhow::Result<(usize, Session)>, tokio::task::JoinError>| {
        let (i, s) = done.context("a login task failed")??;
        slots[i] = Some(s);
        anyhow::Ok(())
    };
    for (i, a) in accounts.iter().enumerate() {
        let permit = permits.clone().acquire_owned().await?;
        let (cfg, a) = (cfg.clone(), a.clone());
        set.spawn(async move {
            let _permit = permit;
            let login = async {
                let mut session = Session::login(&cfg, &a).await?;
                if stream_management {
                    session.enable_stream_management().await?;
                }
                anyhow::Ok(session)
            };
            let session = timeout(Duration::from_secs(60), login)
                .await
                .context("no answer for 60 s")
                .and_then(|r| r)
                .with_context(|| format!("logging in as {}@{}", a.user, cfg.domain))?;
            anyhow::Ok((i, session))
        });
        while let Some(done) = set.try_join_next() {
            store(done)?;
        }
    }
    while let Some(done) = set.join_next().await {
        store(done)?;
    }
    Ok(slots.into_iter().flatten().collect())
}

/// How long a sender waits for its echo before the run fails.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn chat(to: &str, body: &str) -> String {
    format!("<message to='{to}' type='chat'><body>{body}</body></message>")
}

/// The body of a chat message from `peer`; anything else is an error.
fn body_from<'a>(e: &'a El, peer: &str) -> anyhow::Result<&'a str> {
    ensure!(
        e.name == "message" && e.attr("type") == Some("chat") && e.attr("from") == Some(peer),
        "expected a chat message from {peer}, got {e:?}"
    );
    Ok(e.child("body")
        .with_context(|| format!("a message without a body: {e:?}"))?
        .text
        .as_str())
}

fn sent_at(body: &str) -> anyhow::Result<u64> {
    body.parse()
        .with_context(|| format!("a body that is no timestamp: {body:?}"))
}

/// Pairs the sessions and runs round trips for `duration`. Returns the sessions (still
/// open), every message's one-way latency in µs, and the number of closing messages.
async fn exchange(
    sessions: Vec<Session>,
    duration: Duration,
    in_flight: usize,
    rate: u64,
) -> anyhow::Result<(Vec<Session>, Vec<u32>, u64)> {
    let permits = Arc::new(Semaphore::new(in_flight));
    let deadline = Instant::now() + duration;
    let pacer = (rate > 0).then(|| Pacer::start(rate.div_ceil(2), deadline));
    let mut set = JoinSet::new();
    let mut it = sessions.into_iter();
    let mut pairs = 0u64;
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        let (a_jid, b_jid) = (a.jid.clone(), b.jid.clone());
        set.spawn(send_loop(
            a,
            b_jid,
            permits.clone(),
            pacer.clone(),
            deadline,
        ));
        set.spawn(echo_loop(b, a_jid, duration + REPLY_TIMEOUT * 2));
        pairs += 1;
    }
    let mut sessions = Vec::new();
    let mut latencies = Vec::new();
    while let Some(done) = set.join_next().await {
        let (s, l) = done.context("a message task failed")??;
        sessions.push(s);
        latencies.extend(l);
    }
    Ok((sessions, latencies, pairs))
}

/// Hands out round trips at a steady rate: a task adds the permits of each 10 ms.
#[derive(Clone)]
struct Pacer(Arc<Semaphore>);

impl Pacer {
    fn start(round_trips_per_sec: u64, until: Instant) -> Self {
        let tokens = Arc::new(Semaphore::new(0));
        let feed = tokens.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut given = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while Instant::now() < until {
                tick.tick().await;
                let due = (start.elapsed().as_secs_f64() * round_trips_per_sec as f64) as u64;
                feed.add_permits((due - given) as usize);
                given = due;
            }
        });
        Self(tokens)
    }

    async fn take(&self, deadline: Instant) -> bool {
        match timeout_at(deadline, self.0.acquire()).await {
            Ok(Ok(p)) => {
                p.forget();
                true
            }
            _ => false,
        }
    }
}

/// Sends a timestamped message, waits for the echo, and again, until the deadline; then
/// tells the partner to stop.
async fn send_loop(
    mut s: Session,
    peer: String,
    permits: Arc<Semaphore>,
    pacer: Option<Pacer>,
    deadline: Instant,
) -> anyhow::Result<(Session, Vec<u32>)> {
    let mut latencies = Vec::new();
    loop {
        if let Some(p) = &pacer
            && !p.take(deadline).await
        {
            break;
        }
        let Ok(permit) = timeout_at(deadline, permits.acquire()).await else {
            break;
        };
        let _permit = permit?;
        if Instant::now() >= deadline {
            break;
        }
        s.send(&chat(&peer, &now_us().to_string())).await?;
        let reply = timeout(REPLY_TIMEOUT, s.next_element())
            .await
            .with_context(|| format!("{} had no echo from {peer} within 30 s", s.jid))??;
        let sent = sent_at(body_from(&reply, &peer)?)?;
        latencies.push(now_us().saturating_sub(sent) as u32);
    }
    s.send(&chat(&peer, "stop")).await?;
    Ok((s, latencies))
}

/// Answers each message with a fresh timestamp, until "stop".
async fn echo_loop(
    mut s: Session,
    peer: String,
    limit: Duration,
) -> anyhow::Result<(Session, Vec<u32>)> {
    let mut latencies = Vec::new();
    loop {
        let m = timeout(limit, s.next_element())
            .await
            .with_context(|| format!("{} heard nothing from {peer}", s.jid))??;
        let body = body_from(&m, &peer)?;
        if body == "stop" {
            return Ok((s, latencies));
        }
        let sent = sent_at(body)?;
        latencies.push(now_us().saturating_sub(sent) as u32);
        s.send(&chat(&peer, &now_us().to_string())).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_from_the_wrong_sender_or_an_error_is_refused() {
        let ok = El::parse("<message from='a@b/c' type='chat'><body>12</body></message>").unwrap();
        assert_eq!(body_from(&ok, "a@b/c").unwrap(), "12");
        assert!(body_from(&ok, "x@b/c").is_err());
        let error =
            El::parse("<message from='a@b/c' type='error'><body>12</body></message>").unwrap();
        assert!(body_from(&error, "a@b/c").is_err());
        assert!(sent_at("stop").is_err());
    }

    #[test]
    fn the_arguments_parse() {
        let args = Args::try_parse_from(["rookery-load", "--sessions", "10000", "--keep"]).unwrap();
        assert_eq!(
            (args.sessions, args.duration_secs, args.keep),
            (10000, 10, true)
        );
        assert_eq!(args.node_bin, PathBuf::from("target/release/rookery-node"));
    }
}
