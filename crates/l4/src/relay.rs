//! Bidirectional byte relay: bounded buffers, half-close propagated both
//! ways, and an idle timeout. Two plain TCP sockets on Linux relay through
//! the kernel (`splice`); anything else (TLS on either side) copies.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Per-direction relay buffer of the copy path. 64 KiB matches the socket
/// buffer scale where throughput flattens on loopback and 10G links, and
/// bounds memory at 128 KiB per relayed connection.
pub(crate) const RELAY_BUFFER_BYTES: usize = 64 * 1024;

/// How a relay ended.
pub(crate) struct Relayed {
    pub(crate) result: io::Result<(u64, u64)>,
    /// The backend's socket failed (a reset, say): its fault, not the
    /// client's, for passive health.
    pub(crate) backend_failed: bool,
}

/// What both directions of one relay share: when a byte last moved (for
/// the idle timeout) and whether the backend's socket failed.
pub(crate) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    backend_failed: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            backend_failed: AtomicBool::new(false),
        }
    }

    /// A byte moved now.
    pub(crate) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Pass `e` on, noting it against the backend when its socket said it.
    pub(crate) fn blame(&self, e: io::Error, backend: bool) -> io::Error {
        if backend {
            self.backend_failed.store(true, Ordering::Relaxed);
        }
        e
    }

    fn last(&self) -> Duration {
        Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Run `moving` until it ends or nothing has moved for `idle`.
    async fn watch<F>(&self, moving: F, idle: Duration) -> Relayed
    where
        F: Future<Output = io::Result<(u64, u64)>>,
    {
        tokio::pin!(moving);
        let result = loop {
            let deadline = self.start + self.last() + idle;
            tokio::select! {
                done = &mut moving => break done,
                () = tokio::time::sleep_until(deadline) => {
                    if self.start.elapsed().saturating_sub(self.last()) >= idle {
                        break Err(io::Error::new(io::ErrorKind::TimedOut, "relay idle timeout"));
                    }
                }
            }
        };
        Relayed {
            result,
            backend_failed: self.backend_failed.load(Ordering::Relaxed),
        }
    }
}

/// Relay two plain TCP sockets: through kernel pipes on Linux (no copy
/// into user space), by copying elsewhere.
pub(crate) async fn relay_tcp(client: TcpStream, backend: TcpStream, idle: Duration) -> Relayed {
    #[cfg(target_os = "linux")]
    {
        let activity = Activity::new();
        let moving = crate::splice::relay(&client, &backend, &activity);
        activity.watch(moving, idle).await
    }
    #[cfg(not(target_os = "linux"))]
    relay(client, backend, idle).await
}

/// Relay until both sides have closed, either side errors, or nothing has
/// moved for `idle`. Bytes are (client->backend, backend->client).
pub(crate) async fn relay<C, B>(mut client: C, backend: B, idle: Duration) -> Relayed
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity::new();
    let mut backend = Tracked {
        inner: backend,
        activity: &activity,
    };
    let copy = tokio::io::copy_bidirectional_with_sizes(
        &mut client,
        &mut backend,
        RELAY_BUFFER_BYTES,
        RELAY_BUFFER_BYTES,
    );
    activity.watch(copy, idle).await
}

/// The backend stream, stamping the time of every byte read or written
/// (every relayed byte crosses it, so one side suffices for the idle
/// timeout) and noting whether any of its operations failed.
struct Tracked<'a, S> {
    inner: S,
    activity: &'a Activity,
}

impl<S> Tracked<'_, S> {
    fn note<T>(&self, res: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match res {
            Poll::Ready(Err(e)) => Poll::Ready(Err(self.activity.blame(e, true))),
            other => other,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        self.note(res)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        self.note(res)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_flush(cx);
        self.note(res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let res = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.note(res)
    }
}
