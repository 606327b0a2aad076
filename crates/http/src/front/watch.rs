//! Deadlines hyper cannot keep for us on an H1/H2 client connection.
//!
//! hyper polls a response body only when the client can take more: with an
//! H1 socket that is not writable, or an H2 stream without window, nobody
//! polls the body, so no timer inside it can fire. Each response body is
//! therefore wrapped in [`Watched`], which records when the client last took
//! a frame, and a watchdog outside the body acts on it: the connection's
//! serve loop for HTTP/1 (it closes the connection), and a wrapper around
//! each spawned HTTP/2 stream task (dropping it resets the stream). The same
//! connection state tells the serve loop when the connection sat idle, or
//! never sent a first request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use eg_runtime::metrics::metrics;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Instant;

/// Milliseconds since `epoch`, for timestamps shared between tasks.
fn ms_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_millis()).unwrap_or(u64::MAX)
}

/// One response on its way to the client.
pub(super) struct Progress {
    epoch: Instant,
    stall: Duration,
    /// `total_timeout_ms` from the request's arrival.
    deadline: Instant,
    /// When the client last took a frame (ms since `epoch`).
    last_ms: AtomicU64,
    /// The head went out and the body streams.
    streaming: AtomicBool,
    /// The body is waiting for the backend, not for the client.
    waiting_on_backend: AtomicBool,
    done: AtomicBool,
    /// HTTP/1: the serve loop watches it (HTTP/2 streams watch themselves).
    pub(super) h1: bool,
}

/// Why a watched response was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// The client took nothing for `body_timeout_ms`.
    SlowReader,
    /// The exchange passed `total_timeout_ms`.
    TotalTimeout,
}

impl Cut {
    pub(super) fn count(self) {
        let label = match self {
            Self::SlowReader => "slow_reader",
            Self::TotalTimeout => "total_timeout",
        };
        metrics()
            .defence_trips_total
            .with_label_values(&[label])
            .inc();
    }
}

impl Progress {
    pub(super) fn new(stall: Duration, total: Duration, h1: bool) -> Arc<Self> {
        let epoch = Instant::now();
        Arc::new(Self {
            epoch,
            stall,
            deadline: epoch + total,
            last_ms: AtomicU64::new(0),
            streaming: AtomicBool::new(false),
            waiting_on_backend: AtomicBool::new(false),
            done: AtomicBool::new(false),
            h1,
        })
    }

    fn touch(&self) {
        self.last_ms
            .store(ms_since(self.epoch, Instant::now()), Ordering::Relaxed);
    }

    /// When to look again; `None` once the response is over.
    pub(super) fn next_check(&self, now: Instant) -> Option<Instant> {
        if self.done.load(Ordering::Relaxed) {
            return None;
        }
        let streaming = self.streaming.load(Ordering::Relaxed);
        let at = if streaming && !self.waiting_on_backend.load(Ordering::Relaxed) {
            self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + self.stall
        } else {
            // Not streaming yet (the core bounds the wait for the head),
            // or waiting on the backend (the body's own timer bounds it).
            now + self.stall
        };
        Some(at.min(self.deadline).max(now))
    }

    /// Whether the response must be cut now.
    pub(super) fn expired(&self, now: Instant) -> Option<Cut> {
        if self.done.load(Ordering::Relaxed) || !self.streaming.load(Ordering::Relaxed) {
            return None;
        }
        if now >= self.deadline {
            return Some(Cut::TotalTimeout);
        }
        let idle_since = self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let blocked_on_client = !self.waiting_on_backend.load(Ordering::Relaxed);
        (blocked_on_client && now >= idle_since + self.stall).then_some(Cut::SlowReader)
    }
}

/// A request the connection still serves; its drop ends it.
pub(super) struct OpenRequest(Arc<ConnWatch>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        let w = &self.0;
        w.idle_since_ms
            .store(ms_since(w.epoch, Instant::now()), Ordering::Relaxed);
        w.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One client connection's activity, shared by its requests, its HTTP/2
/// stream tasks and its serve loop.
pub(super) struct ConnWatch {
    epoch: Instant,
    open: AtomicU32,
    requests: AtomicU64,
    idle_since_ms: AtomicU64,
    /// The newest request's progress: the HTTP/2 executor takes it for the
    /// stream it spawns next; for HTTP/1 the serve loop watches it.
    latest: Mutex<Option<Arc<Progress>>>,
}

/// What the serve loop must do about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConnExpiry {
    /// No complete first request within `header_timeout_ms`.
    NoFirstRequest,
    /// No open request for `idle_timeout_ms`.
    Idle,
    /// The HTTP/1 response in flight is cut.
    Response(Cut),
}

impl ConnWatch {
    pub(super) fn new(epoch: Instant) -> Arc<Self> {
        Arc::new(Self {
            epoch,
            open: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            latest: Mutex::new(None),
        })
    }

    pub(super) fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Requests handed to the service so far.
    pub(super) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// A request head arrived: it is open until the guard drops.
    pub(super) fn open(self: &Arc<Self>, progress: &Arc<Progress>) -> OpenRequest {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(progress));
        OpenRequest(Arc::clone(self))
    }

    fn take_latest(&self) -> Option<Arc<Progress>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn current_h1(&self) -> Option<Arc<Progress>> {
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|p| p.h1)
            .cloned()
    }

    /// When to look again. Exact for what is known now; at most `stall` or
    /// `idle` away, since a request that arrives meanwhile may stall or end
    /// and leave the connection idle from then on (nothing wakes the serve
    /// loop when one arrives).
    pub(super) fn next_check(
        &self,
        now: Instant,
        header: Duration,
        idle: Duration,
        stall: Duration,
    ) -> Instant {
        let soonest_new = now + stall.min(idle);
        let at = if self.requests.load(Ordering::Relaxed) == 0 {
            self.epoch + header
        } else if self.open.load(Ordering::Relaxed) == 0 {
            let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
            self.epoch + since + idle
        } else {
            self.current_h1()
                .and_then(|p| p.next_check(now))
                .unwrap_or(soonest_new)
        };
        at.min(soonest_new).max(now)
    }

    pub(super) fn expired(
        &self,
        now: Instant,
        header: Duration,
        idle: Duration,
    ) -> Option<ConnExpiry> {
        if self.requests.load(Ordering::Relaxed) == 0 {
            return (now >= self.epoch + header).then_some(ConnExpiry::NoFirstRequest);
        }
        if self.open.load(Ordering::Relaxed) == 0 {
            let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed));
            return (now >= self.epoch + since + idle).then_some(ConnExpiry::Idle);
        }
        self.current_h1()
            .and_then(|p| p.expired(now))
            .map(ConnExpiry::Response)
    }
}

pin_project_lite::pin_project! {
    /// A response body that tells its [`Progress`] when the client takes a
    /// frame, and keeps its request open until it ends or is dropped.
    pub(super) struct Watched<B> {
        #[pin]
        inner: B,
        progress: Arc<Progress>,
        open: Option<OpenRequest>,
    }

    impl<B> PinnedDrop for Watched<B> {
        fn drop(this: Pin<&mut Self>) {
            this.progress.done.store(true, Ordering::Relaxed);
        }
    }
}

impl<B> Watched<B> {
    pub(super) fn new(inner: B, progress: Arc<Progress>, open: Option<OpenRequest>) -> Self {
        progress.touch();
        progress.streaming.store(true, Ordering::Relaxed);
        Self {
            inner,
            progress,
            open,
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let p = &**this.progress;
        p.waiting_on_backend.store(true, Ordering::Relaxed);
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(_))) => {
                p.touch();
                p.waiting_on_backend.store(false, Ordering::Relaxed);
                if this.inner.is_end_stream() {
                    p.done.store(true, Ordering::Relaxed);
                    this.open.take();
                }
            }
            Poll::Ready(_) => {
                p.done.store(true, Ordering::Relaxed);
                this.open.take();
            }
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

/// How long an idle HTTP/2 connection told GOAWAY may take to close by
/// itself before it is dropped: a client that never reads (or never
/// answers hyper's shutdown PING) must not hold it.
pub(super) const GOAWAY_GRACE: Duration = Duration::from_secs(1);

/// Spawns hyper's HTTP/2 stream tasks, each under a watchdog that drops the
/// task (hyper then resets the stream with CANCEL, and the response body,
/// the backend connection and the in-flight slot go with it) when its
/// client stops taking the response.
#[derive(Clone)]
pub(super) struct StreamExec {
    pub(super) watch: Arc<ConnWatch>,
}

impl<F> hyper::rt::Executor<F> for StreamExec
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, fut: F) {
        // The send half of an upgraded stream (an RFC 8441 WebSocket) is
        // spawned from its stream's task, not for a new request: it must
        // neither take a newer request's progress nor be cut by it (the
        // WebSocket relay bounds it). hyper does not name the type, so it
        // is told apart by name (the path before its generic arguments:
        // the whole name of a stream's type runs to kilobytes).
        let path = std::any::type_name::<F>()
            .split('<')
            .next()
            .unwrap_or_default();
        if path.ends_with("UpgradedSendStreamTask") {
            tokio::spawn(fut);
            return;
        }
        // hyper calls the service for a stream and spawns its task right
        // after, on the connection's task: the newest progress is this one.
        match self.watch.take_latest() {
            Some(progress) => tokio::spawn(watched_stream(fut, progress)),
            None => tokio::spawn(async move {
                fut.await;
            }),
        };
    }
}

async fn watched_stream<F: Future>(fut: F, progress: Arc<Progress>) {
    tokio::pin!(fut);
    let timer = tokio::time::sleep_until(Instant::now());
    tokio::pin!(timer);
    loop {
        let Some(at) = progress.next_check(Instant::now()) else {
            fut.await;
            return;
        };
        timer.as_mut().reset(at);
        tokio::select! {
            _ = &mut fut => return,
            () = &mut timer => {
                if let Some(cut) = progress.expired(Instant::now()) {
                    cut.count();
                    tracing::debug!(?cut, "HTTP/2 response cut");
                    return;
                }
            }
        }
    }
}
