//! How fast the message archive (XEP-0313) stores rows: the archive writer's transactions
//! (`ArchiveConnection::insert` on the writer's own connection) as a busy node makes them,
//! timed on their own.
//!
//!   cargo bench -p rookery-node --bench archive_writes                 # SQLite in a temp dir
//!   ROOKERY_BENCH_DATABASE_URL=postgres://… cargo bench -p rookery-node --bench archive_writes
//!   cargo bench -p rookery-node --bench archive_writes -- --accounts 10000 --messages 200000
//!   cargo bench -p rookery-node --bench archive_writes -- --batch 1000 --cache-mib 2
//!
//! ROOKERY_BENCH_SQL runs `;`-separated statements first, to try a schema change (e.g.
//! `DROP INDEX archive_messages_with`) before making it a migration.
//!
//! Accounts chat in pairs, each message archived twice (the sender's copy and the
//! recipient's), in batches of `--batch` rows like the writer takes them from its queue
//! (default: the most it takes, as when it is behind; a quiet node's batches are small), on
//! a connection whose SQLite page cache holds `--cache-mib` (default: the writer's).
//! Prints rows per second and the process's CPU time per row (user + system, the SQLite
//! worker thread included; a PostgreSQL server's CPU is outside and printed apart when it
//! runs on this machine). Everything is deleted at the end.

use std::{sync::Arc, time::Instant};

use rookery_node::store::{
    Store,
    archive::{self, ArchiveRow, Direction},
};

struct Args {
    accounts: usize,
    messages: usize,
    batch: usize,
    cache_mib: usize,
}

fn args() -> Args {
    let mut a = Args {
        accounts: 10_000,
        messages: 200_000,
        batch: archive::MAX_BATCH,
        cache_mib: archive::WRITER_CACHE_KIB as usize / 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--accounts" => a.accounts = value(),
            "--messages" => a.messages = value(),
            "--batch" => a.batch = value(),
            "--cache-mib" => a.cache_mib = value(),
            // `cargo bench` passes --bench.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(
        a.accounts >= 2 && a.batch >= 1,
        "need 2 accounts and batches of 1 row"
    );
    a
}

/// User and system CPU time of this process so far, in seconds (from /proc).
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

/// Bytes this process wrote and read through system calls so far (from /proc).
fn process_io() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("wchar:"), field("rchar:"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let dir = tempfile::tempdir()?;
    let url = std::env::var("ROOKERY_BENCH_DATABASE_URL").unwrap_or_else(|_| {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        )
    });
    let store = Store::open(&url).await?;
    let vhost = "bench.test";
    if let Ok(sql) = std::env::var("ROOKERY_BENCH_SQL") {
        for stmt in sql.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(stmt).execute(&store.db).await?;
        }
    }
    store.add_vhost(vhost, None).await?;
    let t = Instant::now();
    let mut tx = store.db.begin().await?;
    for i in 0..args.accounts {
        sqlx::query(
            "INSERT INTO accounts (vhost, username, scram_salt, scram_iterations, sha1_stored_key, sha1_server_key, sha256_stored_key, sha256_server_key, created_at) VALUES ($1, $2, '', 4096, '', '', '', '', 0)",
        )
        .bind(vhost)
        .bind(format!("u{i}"))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    println!(
        "database: {}",
        if url.starts_with("sqlite") {
            "SQLite (temp dir)"
        } else {
            "PostgreSQL"
        }
    );
    println!(
        "{} accounts made in {:.1} s; {} messages ({} rows) in batches of {}, writer's page cache {} MiB",
        args.accounts,
        t.elapsed().as_secs_f64(),
        args.messages,
        args.messages * 2,
        args.batch,
        args.cache_mib
    );
    let mut conn = store
        .archive_connection(u32::try_from(args.cache_mib * 1024)?, 0)
        .await?;

    let ids = rookery_node::xep::mam::IdGen::new();
    let pairs = args.accounts / 2;
    let mut rows = Vec::with_capacity(args.batch + 1);
    let mut written = 0usize;
    let (cpu0, t0, io0) = (process_cpu(), Instant::now(), process_io());
    let mut report = (cpu0, t0, 0usize);
    for m in 0..args.messages {
        let p = m % pairs;
        let (a, b) = if m % 2 == 0 {
            (2 * p, 2 * p + 1)
        } else {
            (2 * p + 1, 2 * p)
        };
        let (from, to) = (format!("u{a}"), format!("u{b}"));
        let stanza: Arc<str> = format!(
            "<message xmlns='jabber:client' from='{from}@{vhost}/load' to='{to}@{vhost}' type='chat'><body>message {m} from {from}: a line of chat of a usual length</body></message>"
        )
        .into();
        for (owner, with, direction) in [
            (&from, &to, Direction::Sent),
            (&to, &from, Direction::Received),
        ] {
            let (id, created_us) = ids.next();
            rows.push(ArchiveRow {
                vhost: vhost.into(),
                username: owner.clone(),
                id,
                created_us,
                with_jid: format!("{with}@{vhost}"),
                with_resource: if direction == Direction::Received {
                    "load".into()
                } else {
                    String::new()
                },
                direction,
                stanza: stanza.clone(),
            });
        }
        if rows.len() >= args.batch || m + 1 == args.messages {
            conn.insert(&rows).await?;
            written += rows.len();
            rows.clear();
            if report.1.elapsed().as_secs_f64() >= 5.0 {
                let (cpu, now) = (process_cpu(), Instant::now());
                println!(
                    "  {written} rows: {:.0} rows/s, {:.1} µs CPU per row lately",
                    (written - report.2) as f64 / (now - report.1).as_secs_f64(),
                    (cpu - report.0) * 1e6 / (written - report.2) as f64
                );
                report = (cpu, now, written);
            }
        }
    }
    let (cpu, secs) = (process_cpu() - cpu0, t0.elapsed().as_secs_f64());
    println!(
        "archive rows/s: {:.0} ({written} rows in {secs:.2} s)",
        written as f64 / secs
    );
    println!(
        "CPU per row: {:.1} µs ({:.2} s of this process's CPU)",
        cpu * 1e6 / written as f64,
        cpu
    );
    let io = process_io();
    println!(
        "file I/O per row: {:.0} bytes written, {:.0} bytes read",
        (io.0 - io0.0) as f64 / written as f64,
        (io.1 - io0.1) as f64 / written as f64
    );
    if let Some(path) = rookery_common::db::sqlite_path(&url) {
        let size = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        println!(
            "database file: {:.1} MiB ({:.0} bytes per row), WAL {:.1} MiB",
            size(&path) as f64 / 1048576.0,
            size(&path) as f64 / written as f64,
            size(&format!("{path}-wal")) as f64 / 1048576.0
        );
    }
    store.remove_vhost(vhost).await?;
    Ok(())
}
