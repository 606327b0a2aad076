use eg_config::LogFormat;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines buffered for the writer thread: a burst this long is kept,
/// past it lines are dropped (counted by tracing-appender) rather than
/// making a worker wait on a slow or blocked stderr.
const LOG_BUFFER_LINES: usize = 16_384;

/// Logs go to stderr (stdout carries the startup report) through a writer
/// thread, so a slow terminal or a full pipe never stalls the datapath;
/// `RUST_LOG` filters, else `default` (`info` when serving a file). Keep
/// the guard: dropping it flushes.
pub fn init(format: LogFormat, default: &str) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let (writer, guard) = NonBlockingBuilder::default()
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .lossy(true)
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    // A second init (tests, demo) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}
