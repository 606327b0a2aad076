//! `expressgateway`: the command line. Everything else lives in the crates.

mod demo;
mod discovery;
mod gateway;
mod logging;
mod reload_check;
mod run;
mod xdp;

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

/// SIGHUP and SIGUSR1 terminate a process by default, and the real
/// handlers come only once the runtime is built (after the configuration
/// is read, or the demo's certificates are generated). Register them now:
/// tokio's process-wide handler stays for the life of the process, so a
/// reload or rotation signalled during start-up is ignored (the file is
/// about to be read anyway) instead of killing the gateway.
fn survive_early_reload_signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return;
    };
    let _entered = rt.enter();
    for kind in [SignalKind::hangup(), SignalKind::user_defined1()] {
        let _ = signal(kind);
    }
}

fn main() -> ExitCode {
    survive_early_reload_signals();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check { config }) => run::check(&config),
        Some(Command::Demo { base_port }) => demo::run(base_port),
        None => run::run_file(&cli.config),
    }
}
