//! `rookery-node`: the node's command line. Its subcommands (`serve`, `vhost`, `user`,
//! `join`) arrive with the node issues; today it answers `--version` and `--help`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "rookery-node", version = rookery_node::VERSION, about = "Rookery node: the XMPP server of a Rookery cluster")]
struct Cli {}

fn main() {
    let _ = Cli::parse();
    println!(
        "rookery-node {}: no subcommands yet; see --help",
        rookery_node::VERSION
    );
}
