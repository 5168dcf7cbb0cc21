//! `rookery`: the panel's command line. `rookery` (or `rookery serve`) runs the panel;
//! `rookery admin create --email …` creates a platform admin.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use rookery::{Application, clock::Clock, config::Settings, startup::build_state, telemetry};

#[derive(Parser)]
#[command(
    name = "rookery",
    version,
    about = "Rookery: managed XMPP hosting panel"
)]
struct Cli {
    /// TOML configuration file; `ROOKERY_*` environment variables override it.
    #[arg(long, global = true, env = "ROOKERY_CONFIG")]
    config: Option<PathBuf>,
    /// Log lines as text for a terminal, or as JSON.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: telemetry::LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the panel (the default).
    Serve,
    /// Probe every monitored domain from here, as a probe location of the panel at
    /// `--panel` (an admin creates the location and its token on the panel's Uptime page).
    Probe {
        /// The panel's URL, e.g. https://panel.example.net
        #[arg(long)]
        panel: String,
        /// The location's token (`rkp_…`); also read from ROOKERY_PROBE_TOKEN.
        #[arg(long, env = "ROOKERY_PROBE_TOKEN", hide_env_values = true)]
        token: String,
        /// A PEM file with the CA of the panel's HTTPS certificate (default: the web PKI).
        #[arg(long)]
        panel_ca: Option<PathBuf>,
        /// PEM files of the CAs to trust for the nodes' TLS instead of the panel's list
        /// (repeat for several).
        #[arg(long = "trust-root")]
        trust_roots: Vec<PathBuf>,
    },
    /// Manage platform admins.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create a platform admin. The password is asked for, or read from standard input.
    Create {
        #[arg(long)]
        email: String,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let command = cli.command.unwrap_or(Command::Serve);
    // A probe location needs none of the panel's settings (nor its database).
    if let Command::Probe {
        panel,
        token,
        panel_ca,
        trust_roots,
    } = command
    {
        return rookery::probe::remote::run(rookery::probe::remote::RemoteOptions {
            panel,
            token: token.into(),
            panel_ca,
            trust_roots,
        })
        .await;
    }
    let settings = Settings::load(cli.config.as_deref())?;
    match command {
        Command::Probe { .. } => unreachable!("handled above"),
        Command::Serve => {
            let app = Application::build(settings).await?;
            if rookery::auth::db::count_admins(&app.state.db).await? == 0 {
                tracing::info!(
                    "no platform admin yet: create one with `rookery admin create --email you@example.com` \
                     (from the source tree: `cargo run --release -p rookery -- admin create --email you@example.com`)"
                );
            }
            app.run_until_stopped().await
        }
        Command::Admin {
            command: AdminCommand::Create { email },
        } => {
            let state = build_state(settings, Clock::default()).await?;
            let result = rookery::admin::create_admin(&state, &email).await;
            state.db.close().await;
            result
        }
    }
}
