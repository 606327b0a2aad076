//! The client IO of an HTTP/1 connection with the framing tracker on its
//! read side: every byte hyper reads passes the tracker first, so a
//! verdict is always pending before hyper hands the request it belongs to
//! to the service.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::{Tracker, Verdict, Verdicts};

/// The service's side of one connection's verdicts.
#[derive(Clone, Default)]
pub(super) struct VerdictHandle(Arc<Mutex<Verdicts>>);

impl VerdictHandle {
    fn with<R>(&self, f: impl FnOnce(&mut Verdicts) -> R) -> R {
        let mut v = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut v)
    }

    /// The verdict for the request hyper is handing over now (call once per
    /// HTTP/1 request, in the order hyper delivers them).
    pub(super) fn next_request(&self) -> Option<Verdict> {
        self.with(Verdicts::next_request)
    }

    /// The request was answered with 101, or 2xx to CONNECT: the rest of
    /// the stream is a tunnel.
    pub(super) fn tunnel(&self) {
        self.with(Verdicts::set_tunnel);
    }
}

pub(super) struct TrackedIo<I> {
    inner: I,
    tracker: Tracker,
    verdicts: VerdictHandle,
}

impl<I> TrackedIo<I> {
    /// `detect_h2_preface`: cleartext, where HTTP/2 with prior knowledge
    /// shares the port.
    pub(super) fn new(inner: I, detect_h2_preface: bool) -> (Self, VerdictHandle) {
        let verdicts = VerdictHandle::default();
        let io = Self {
            inner,
            tracker: Tracker::new(detect_h2_preface),
            verdicts: verdicts.clone(),
        };
        (io, verdicts)
    }

    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.tracker.is_stopped() {
            return;
        }
        let tracker = &mut self.tracker;
        self.verdicts.with(|v| {
            if v.is_tunnel() {
                tracker.stop();
            } else {
                tracker.feed(bytes, &mut |verdict| v.push(verdict));
            }
        });
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TrackedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.observe(buf.filled().get(before..).unwrap_or_default());
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TrackedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn read_through(io: &mut TrackedIo<tokio::io::DuplexStream>, n: usize) {
        let mut buf = vec![0u8; n];
        io.read_exact(&mut buf).await.expect("read");
    }

    #[tokio::test]
    async fn reads_feed_verdicts_in_order_until_a_tunnel() {
        let (mut client, server) = tokio::io::duplex(4096);
        let (mut io, verdicts) = TrackedIo::new(server, true);
        let first = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let second = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
        client.write_all(first).await.expect("write");
        client.write_all(second).await.expect("write");
        read_through(&mut io, first.len() + second.len()).await;
        assert_eq!(verdicts.next_request(), Some(Verdict::Ok));
        assert_eq!(verdicts.next_request(), Some(Verdict::Ambiguous));

        let (mut client, server) = tokio::io::duplex(4096);
        let (mut io, verdicts) = TrackedIo::new(server, true);
        client.write_all(first).await.expect("write");
        read_through(&mut io, first.len()).await;
        assert_eq!(verdicts.next_request(), Some(Verdict::Ok));
        verdicts.tunnel();
        client.write_all(first).await.expect("write");
        read_through(&mut io, first.len()).await;
        assert_eq!(verdicts.next_request(), None);
        assert!(io.tracker.is_stopped());
    }
}
