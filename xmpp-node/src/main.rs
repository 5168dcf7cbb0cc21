//! `rookery-node`: run the XMPP server (`serve`), enroll it in a panel's pool (`join`),
//! and manage its virtual hosts and accounts by hand (`vhost`, `user`). The management
//! commands work whether or not `serve` is running; a running server picks up vhost
//! changes, and the credentials `join` stores, within a second.

use std::{io::BufRead, io::IsTerminal, path::PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use rookery_node::{
    config::NodeSettings,
    control::join::{JoinArgs, parse_label},
    server::Server,
    store::Store,
};

#[derive(Parser)]
#[command(name = "rookery-node", version = rookery_node::VERSION, about = "Rookery node: the XMPP server of a Rookery cluster")]
struct Cli {
    /// TOML configuration; `ROOKERY_NODE_*` environment variables override it.
    #[arg(long, global = true, env = "ROOKERY_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text or JSON.
    #[arg(long, global = true, default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the XMPP server.
    Serve,
    /// Enroll this node in a panel's pool with a join token (stores `<data_dir>/control.json`).
    Join {
        /// The panel's URL, e.g. https://panel.example.com
        panel_url: String,
        /// The one-time join token an admin created in the panel.
        #[arg(long, env = "ROOKERY_NODE_JOIN_TOKEN", hide_env_values = true)]
        token: String,
        /// The node's name in the pool (default: its public host).
        #[arg(long)]
        name: Option<String>,
        /// The host name clients reach this node at (default: the `public_host` setting).
        #[arg(long)]
        public_host: Option<String>,
        /// Where the panel reaches the control API (default: https://<control_listen>).
        #[arg(long)]
        control_url: Option<String>,
        /// A label placement can require, key=value (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
        /// How many domains this node may carry (default: the `capacity` setting).
        #[arg(long)]
        max_vhosts: Option<i64>,
        /// How many sessions this node may carry (default: the `capacity` setting).
        #[arg(long)]
        max_sessions: Option<i64>,
        /// PEM file of the CA (or certificate) to trust for the panel; default: public CAs.
        #[arg(long)]
        panel_ca: Option<PathBuf>,
    },
    /// Manage the domains this node hosts.
    Vhost {
        #[command(subcommand)]
        command: VhostCommand,
    },
    /// Manage the accounts of a domain.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
}

#[derive(Subcommand)]
enum VhostCommand {
    /// Host a domain (a self-signed certificate is generated unless --cert/--key are given).
    Add {
        domain: String,
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// Stop hosting a domain and delete its accounts.
    Del { domain: String },
    /// Log a domain's stanzas (credentials redacted) while the node runs: on or off.
    Debug {
        domain: String,
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// List the hosted domains.
    List,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; the password is asked for, or read from standard input.
    Add { jid: String },
    /// Delete an account.
    Del { jid: String },
    /// Set an account's password (asked for, or read from standard input).
    Passwd { jid: String },
    /// List the accounts of a domain.
    List { domain: String },
}

fn init_logging(format: &str) {
    use tracing_subscriber::{EnvFilter, fmt, prelude::*};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    // Logs go to stderr: stdout carries command output (`vhost list`, `user list`).
    if format == "json" {
        registry
            .with(fmt::layer().json().flatten_event(true))
            .init();
    } else {
        registry
            .with(
                fmt::layer()
                    .with_target(false)
                    .with_writer(std::io::stderr)
                    // Colours only for people: a log file or journal gets plain text.
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init();
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = NodeSettings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve => {
            let server = Server::start(settings).await?;
            if server.node.store.vhosts().await?.is_empty() {
                tracing::info!(
                    "no domains hosted yet: add one with `rookery-node vhost add example.com`"
                );
            }
            server.run(shutdown_signal()).await
        }
        Command::Join {
            panel_url,
            token,
            name,
            public_host,
            control_url,
            labels,
            max_vhosts,
            max_sessions,
            panel_ca,
        } => {
            let args = JoinArgs {
                panel_url,
                token,
                name,
                public_host,
                control_url,
                labels,
                max_vhosts,
                max_sessions,
                panel_ca,
            };
            let joined = rookery_node::control::join::join(&settings, &args).await?;
            println!(
                "Joined the pool of {} as node {}.",
                joined.panel_url, joined.node_id
            );
            println!(
                "Credentials are in {}; `rookery-node serve` starts the control API with them.",
                rookery_node::control::Credentials::path(&settings.data_dir).display()
            );
            Ok(())
        }
        Command::Vhost { command } => {
            let store = Store::open(&settings.effective_database_url()).await?;
            match command {
                VhostCommand::Add { domain, cert, key } => {
                    let paths = match (&cert, &key) {
                        (Some(c), Some(k)) => Some((path_str(c)?, path_str(k)?)),
                        _ => None,
                    };
                    if let Some((c, k)) = &paths {
                        anyhow::ensure!(std::path::Path::new(c).exists(), "{c} does not exist");
                        anyhow::ensure!(std::path::Path::new(k).exists(), "{k} does not exist");
                    }
                    let v = store
                        .add_vhost(
                            &domain,
                            paths.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
                        )
                        .await?;
                    println!("Added {}", v.domain);
                }
                VhostCommand::Del { domain } => {
                    store.remove_vhost(&domain).await?;
                    println!("Removed {domain} and its accounts");
                }
                VhostCommand::Debug { domain, state } => {
                    store.set_vhost_debug(&domain, state == "on").await?;
                    println!("Stanza log of {domain}: {state}");
                }
                VhostCommand::List => {
                    for v in store.vhosts().await? {
                        match v.cert_path {
                            Some(c) => println!("{}\t{c}", v.domain),
                            None => println!("{}\t(self-signed)", v.domain),
                        }
                    }
                }
            }
            store.db.close().await;
            Ok(())
        }
        Command::User { command } => {
            let store = Store::open(&settings.effective_database_url()).await?;
            let iterations = settings.scram_iterations;
            match command {
                UserCommand::Add { jid } => {
                    let (user, domain) = split_jid(&jid)?;
                    let password = read_password()?;
                    store
                        .add_account(&domain, &user, &password, iterations)
                        .await?;
                    println!("Created {jid}");
                }
                UserCommand::Del { jid } => {
                    let (user, domain) = split_jid(&jid)?;
                    store.remove_account(&domain, &user).await?;
                    println!("Deleted {jid}");
                }
                UserCommand::Passwd { jid } => {
                    let (user, domain) = split_jid(&jid)?;
                    let password = read_password()?;
                    store
                        .set_password(&domain, &user, &password, iterations)
                        .await?;
                    println!("Changed the password of {jid}");
                }
                UserCommand::List { domain } => {
                    for u in store.accounts(&domain).await? {
                        println!("{u}@{domain}");
                    }
                }
            }
            store.db.close().await;
            Ok(())
        }
    }
}

fn path_str(p: &std::path::Path) -> anyhow::Result<String> {
    let abs = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
    abs.to_str()
        .map(str::to_owned)
        .context("certificate paths must be UTF-8")
}

fn split_jid(jid: &str) -> anyhow::Result<(String, String)> {
    let (user, domain) = jid
        .split_once('@')
        .with_context(|| format!("{jid} is not user@domain"))?;
    anyhow::ensure!(
        !user.is_empty() && !domain.is_empty() && !domain.contains('/'),
        "{jid} is not user@domain"
    );
    Ok((user.to_string(), domain.to_string()))
}

fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == second, "the two passwords differ");
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    };
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    anyhow::ensure!(
        password.len() <= 1024,
        "the password is longer than 1024 bytes"
    );
    Ok(password)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
