//! `expressgateway`: the command line. Everything else lives in the crates.

mod demo;
mod discovery;
mod gateway;
mod logging;
mod reload_check;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "expressgateway",
    version,
    about = "Load balancer and reverse proxy for every modern web protocol"
)]
struct Cli {
    /// Configuration file to run.
    #[arg(default_value = "config/default.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file (and load its certificates), then exit.
    Check { config: PathBuf },
    /// Run the embedded demo: built-in backends and every listener kind.
    Demo {
        /// First port of the demo listeners; 0 lets the OS choose each.
        #[arg(long, default_value_t = demo::DEFAULT_BASE_PORT)]
        base_port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => run::check(&config),
        Some(Command::Demo { base_port }) => demo::run(base_port),
        None => run::run_file(&cli.config),
    }
}
