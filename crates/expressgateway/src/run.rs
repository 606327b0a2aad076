//! Running a configuration: load, prepare, bind, serve, reload, drain.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use eg_config::Config;
use tokio::signal::unix::{signal, SignalKind};

use crate::gateway::{Gateway, Prepared, Trigger};

/// `expressgateway check CONFIG`.
pub fn check(path: &Path) -> ExitCode {
    eg_tls::install_crypto_provider();
    let result = Config::load(path)
        .map_err(anyhow::Error::from)
        .and_then(|c| {
            crate::xdp::refuse_unsupported(&c)?;
            Prepared::new(&c, &eg_runtime::Carry::default()).map(|_| ())
        });
    match result {
        Ok(()) => {
            println!("{}: configuration is valid", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e:#}", path.display());
            ExitCode::from(2)
        }
    }
}

/// `expressgateway [CONFIG]`.
pub fn run_file(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    match run(config, Some(path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Serve `config` until SIGTERM or SIGINT, then drain. `path` enables
/// SIGHUP reload.
pub fn run(config: Config, path: Option<&Path>) -> anyhow::Result<()> {
    run_with(config, path, "info")
}

/// As `run`, logging at `default_log` when `RUST_LOG` is unset.
pub fn run_with(config: Config, path: Option<&Path>, default_log: &str) -> anyhow::Result<()> {
    let _log = crate::logging::init(config.observability.log_format, default_log);
    eg_tls::install_crypto_provider();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if config.runtime.worker_threads > 0 {
        builder.worker_threads(config.runtime.worker_threads as usize);
    }
    let runtime = builder.build()?;
    runtime.block_on(serve(config, path))
}

async fn serve(config: Config, path: Option<&Path>) -> anyhow::Result<()> {
    // Handlers first: a SIGHUP sent while we bind (a reload racing the
    // start) must not kill the process with the default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let carry = std::sync::Arc::new(eg_runtime::Carry::default());
    let discovery = std::sync::Arc::new(crate::discovery::Discovery::new(&config.runtime));
    discovery.refresh(&config).await;
    let prepared = Prepared::new(&crate::discovery::expand(&config, &discovery), &carry)?;
    let gateway = Gateway::start(prepared, &config, carry, discovery).await?;
    eg_runtime::report::ready();
    loop {
        // Far enough to mean "never" when no backend is a host name.
        let due = gateway
            .discovery_due()
            .unwrap_or(Duration::from_secs(86_400));
        tokio::select! {
            () = tokio::time::sleep(due) => gateway.rediscover().await,
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => gateway.reload(path, Trigger::Reload).await,
            _ = usr1.recv() => gateway.reload(path, Trigger::CertRotation).await,
        }
    }
    let drain = Duration::from_millis(gateway.drain_timeout_ms());
    tracing::info!(?drain, "shutting down: no new connections, draining");
    // A second SIGTERM or SIGINT means now.
    tokio::select! {
        () = gateway.drain(drain) => {}
        _ = term.recv() => tracing::warn!("second signal: exiting without waiting for the drain"),
        _ = int.recv() => tracing::warn!("second signal: exiting without waiting for the drain"),
    }
    Ok(())
}
