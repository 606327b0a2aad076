//! The access log (`[observability] access_log` = off | stdout | a file
//! path; text or JSON by `log_format`): one line per HTTP request, written
//! when its response has ended (so the byte counts and duration are the
//! real ones), by a writer thread behind a bounded queue: a slow disk
//! never blocks a worker; lines past the queue are dropped and counted.
//! SIGUSR1 reopens the file (logrotate's `postrotate`).

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use eg_config::LogFormat;
use eg_runtime::metrics::metrics;
use hyper::body::{Body, Frame, SizeHint};

use crate::body::{BodyEvents, BoxError};

/// Lines queued for the writer: a burst of this many is kept while the
/// disk catches up (~10 MB at ~150 bytes a line); past it lines are dropped
/// and counted rather than a worker made to wait.
pub const ACCESS_LOG_QUEUE_LINES: usize = 65_536;

enum Msg {
    Line(String),
    Reopen,
}

/// A running access log: its queue and format.
pub struct AccessLog {
    tx: SyncSender<Msg>,
    format: LogFormat,
}

impl AccessLog {
    /// Open `target` ("stdout" or a file path, appended to) and start its
    /// writer thread, which ends when the last `AccessLog` handle drops.
    pub fn open(target: &str, format: LogFormat) -> io::Result<Self> {
        let sink = Sink::open(target)?;
        let (tx, rx) = mpsc::sync_channel(ACCESS_LOG_QUEUE_LINES);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || sink.run(&rx))?;
        Ok(Self { tx, format })
    }

    /// Reopen the file (after logrotate moved it); stdout stays.
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }

    fn write(&self, line: String) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Msg::Line(line)) {
            metrics().access_log_lines_dropped_total.inc();
        }
    }
}

struct Sink {
    path: Option<PathBuf>,
    out: Box<dyn Write + Send>,
}

impl Sink {
    fn open(target: &str) -> io::Result<Self> {
        if target == "stdout" {
            return Ok(Self {
                path: None,
                out: Box::new(BufWriter::new(io::stdout())),
            });
        }
        let path = PathBuf::from(target);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Self {
            path: Some(path),
            out: Box::new(BufWriter::new(file)),
        })
    }

    fn run(mut self, rx: &Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            self.take(msg);
            // Write what else is queued, then flush once.
            loop {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let _ = self.out.flush();
                        return;
                    }
                }
            }
            let _ = self.out.flush();
        }
        let _ = self.out.flush();
    }

    fn take(&mut self, msg: Msg) {
        match msg {
            Msg::Line(line) => {
                let _ = self.out.write_all(line.as_bytes());
            }
            Msg::Reopen => {
                let _ = self.out.flush();
                if let Some(path) = &self.path {
                    match OpenOptions::new().create(true).append(true).open(path) {
                        Ok(file) => self.out = Box::new(BufWriter::new(file)),
                        Err(e) => {
                            tracing::error!(path = %path.display(), error = %e, "access log reopen failed; writing to the old file");
                        }
                    }
                }
            }
        }
    }
}

/// What is known of a request when its response starts.
pub struct Entry {
    pub time: SystemTime,
    pub started: Instant,
    pub listener: String,
    pub route: String,
    pub cluster: String,
    pub backend: Option<String>,
    pub protocol: &'static str,
    pub method: String,
    pub authority: String,
    pub path: String,
    pub status: u16,
    pub retries: u32,
    pub client: SocketAddr,
    /// `ok`, or why the gateway answered itself (`upstream_timeout`...).
    pub outcome: &'static str,
    /// The request body's byte count, read when the line is written.
    pub request: Option<Arc<BodyEvents>>,
}

impl Entry {
    fn line(&self, format: LogFormat, response_bytes: u64, outcome: &str) -> String {
        let time = time::OffsetDateTime::from(self.time)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let request_bytes = self.request.as_ref().map_or(0, |r| r.bytes());
        let backend = self.backend.as_deref().unwrap_or("-");
        match format {
            LogFormat::Json => {
                let mut line = serde_json::json!({
                    "time": time,
                    "listener": self.listener,
                    "route": self.route,
                    "cluster": self.cluster,
                    "backend": backend,
                    "protocol": self.protocol,
                    "method": self.method,
                    "authority": self.authority,
                    "path": self.path,
                    "status": self.status,
                    "request_bytes": request_bytes,
                    "response_bytes": response_bytes,
                    "duration_ms": (duration_ms * 1000.0).round() / 1000.0,
                    "retries": self.retries,
                    "client": self.client.to_string(),
                    "outcome": outcome,
                })
                .to_string();
                line.push('\n');
                line
            }
            // Client-supplied fields are quoted and escaped, so a line
            // always splits into the same fields.
            LogFormat::Text => format!(
                "{time} listener={} route={} cluster={} backend={backend} protocol={} \
                 method={:?} authority={:?} path={:?} status={} request_bytes={request_bytes} \
                 response_bytes={response_bytes} duration_ms={duration_ms:.3} retries={} \
                 client={} outcome={outcome}\n",
                self.listener,
                self.route,
                self.cluster,
                self.protocol,
                self.method,
                self.authority,
                self.path,
                self.status,
                self.retries,
                self.client,
            ),
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that writes its request's access-log line once it
    /// has ended, failed or been dropped.
    pub struct Logged<B> {
        #[pin]
        inner: B,
        entry: Option<Box<Entry>>,
        log: Arc<AccessLog>,
        bytes: u64,
        end: End,
    }

    impl<B> PinnedDrop for Logged<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(entry) = this.entry.take() {
                let outcome = match this.end {
                    End::Clean => entry.outcome,
                    End::Failed => "response_failed",
                    // The client went away (or was cut) before the end.
                    End::Open => "incomplete",
                };
                this.log.write(entry.line(this.log.format, *this.bytes, outcome));
            }
        }
    }
}

#[derive(Clone, Copy)]
enum End {
    Open,
    Clean,
    Failed,
}

impl<B: Body> Logged<B> {
    pub fn new(inner: B, entry: Entry, log: Arc<AccessLog>) -> Self {
        // A bodiless answer has ended before anyone polls it.
        let end = if inner.is_end_stream() {
            End::Clean
        } else {
            End::Open
        };
        Self {
            inner,
            entry: Some(Box::new(entry)),
            log,
            bytes: 0,
            end,
        }
    }
}

impl<B> Body for Logged<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                if this.inner.is_end_stream() {
                    *this.end = End::Clean;
                }
            }
            Poll::Ready(Some(Err(_))) => *this.end = End::Failed,
            Poll::Ready(None) => *this.end = End::Clean,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
