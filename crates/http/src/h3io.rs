//! Moving bodies between `ProxyBody` and HTTP/3 streams (h3 0.0.8), for
//! the H3 front and the H3 connector alike: a received stream is polled
//! directly as a body (back-pressure is QUIC flow control), and a body is
//! sent by one task.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use eg_runtime::metrics::metrics;
use h3::quic::{RecvStream, SendStream};
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Frame;
use tokio::time::Instant;

use crate::body::{BoxError, ProxyBody};

/// H3 error code for an aborted stream (RFC 9114 §8.1 H3_REQUEST_CANCELLED).
pub const H3_REQUEST_CANCELLED: u64 = 0x010c;
/// H3_NO_ERROR (RFC 9114 §8.1): what a server that answered without
/// reading the whole request asks the client to stop sending with (§4.1).
pub const H3_NO_ERROR: u64 = 0x0100;

/// How long a body dropped in the middle of a read waits for that read
/// to end before it can send its STOP_SENDING code (see `H3Body`'s drop).
const PENDING_READ_GRACE: Duration = Duration::from_secs(1);

/// The receiving half of a request or response stream, polled directly.
pub trait H3Recv: Send + Unpin + 'static {
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>>;
    fn poll_trailers(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<HeaderMap>, BoxError>>;
    /// STOP_SENDING with `code`, unless a read is in flight (h3-quinn's
    /// receive stream sits inside its read future then, and stopping it
    /// would panic): whether it stopped.
    fn try_stop(&mut self, code: u64) -> bool;
}

/// The sending half.
pub trait H3Send: Send + 'static {
    fn data(
        &mut self,
        bytes: Bytes,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
    fn trailers(
        &mut self,
        trailers: HeaderMap,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
    fn finish(&mut self) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
    /// Abort the stream so the peer sees an error, not a clean end.
    fn abort(&mut self);
}

macro_rules! recv_impl {
    ($ty:ty) => {
        impl<S> H3Recv for $ty
        where
            S: RecvStream + Send + 'static,
        {
            fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, BoxError>> {
                match self.poll_recv_data(cx) {
                    Poll::Ready(Ok(Some(mut buf))) => {
                        Poll::Ready(Ok(Some(buf.copy_to_bytes(buf.remaining()))))
                    }
                    Poll::Ready(Ok(None)) => Poll::Ready(Ok(None)),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
                    Poll::Pending => Poll::Pending,
                }
            }
            fn poll_trailers(
                &mut self,
                cx: &mut Context<'_>,
            ) -> Poll<Result<Option<HeaderMap>, BoxError>> {
                self.poll_recv_trailers(cx).map_err(Into::into)
            }
            fn try_stop(&mut self, code: u64) -> bool {
                self.try_stop_sending(h3::error::Code::from(code))
            }
        }
    };
}

macro_rules! send_impl {
    ($ty:ty) => {
        impl<S> H3Send for $ty
        where
            S: SendStream<Bytes> + Send + 'static,
        {
            async fn data(&mut self, bytes: Bytes) -> Result<(), BoxError> {
                Ok(self.send_data(bytes).await?)
            }
            async fn trailers(&mut self, trailers: HeaderMap) -> Result<(), BoxError> {
                Ok(self.send_trailers(trailers).await?)
            }
            async fn finish(&mut self) -> Result<(), BoxError> {
                Ok(self.finish().await?)
            }
            fn abort(&mut self) {
                self.stop_stream(h3::error::Code::from(H3_REQUEST_CANCELLED));
            }
        }
    };
}

recv_impl!(h3::server::RequestStream<S, Bytes>);
recv_impl!(h3::client::RequestStream<S, Bytes>);
send_impl!(h3::server::RequestStream<S, Bytes>);
send_impl!(h3::client::RequestStream<S, Bytes>);

/// Largest frame a received H3 body hands on: QUIC delivers packet-sized
/// pieces (~1.2 KB); gluing what is already there into up to 64 KiB cuts
/// per-frame work on the other leg by ~50x without waiting for more.
const COALESCE_BYTES: usize = 64 * 1024;

/// A request or response body read straight from an H3 stream; a stream
/// error is a body error (never a clean end). Data (or the end) already
/// received is taken at once, so a request whose FIN came with its HEADERS
/// is bodiless from the start (`is_end_stream`), as on H1 and H2: no
/// connector then leaves it unread, which would make quinn send
/// STOP_SENDING(0) on drop, seen by curl as a reset of a complete exchange.
///
/// A body dropped before its end asks the peer to stop sending with
/// `unread`: H3_NO_ERROR for a request the gateway answered without
/// reading it all (RFC 9114 §4.1), H3_REQUEST_CANCELLED for a response
/// nobody wants any more. (quinn's own drop would send code 0.)
pub fn recv_body<R: H3Recv>(recv: R, unread: u64) -> ProxyBody {
    let mut body = H3Body {
        recv: Some(std::sync::Mutex::new(recv)),
        ready: None,
        data_done: false,
        done: false,
        unread,
    };
    body.peek();
    body.boxed()
}

struct H3Body<R: H3Recv> {
    /// Behind a mutex only so the body is `Sync`; it is never contended.
    /// `None` only once dropped.
    recv: Option<std::sync::Mutex<R>>,
    /// What the first look found, handed out by the first poll.
    ready: Option<Result<Frame<Bytes>, BoxError>>,
    data_done: bool,
    done: bool,
    /// STOP_SENDING code when dropped before the end.
    unread: u64,
}

impl<R: H3Recv> Drop for H3Body<R> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(recv) = self.recv.take() else { return };
        let mut recv = recv.into_inner().unwrap_or_else(|p| p.into_inner());
        let code = self.unread;
        if recv.try_stop(code) {
            return;
        }
        // A read is in flight: let it end (data, the end, a reset) in a
        // task of its own, then stop the stream; past the grace quinn's
        // drop sends its code 0 after all.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let settle = async {
                loop {
                    match std::future::poll_fn(|cx| recv.poll_data(cx)).await {
                        Ok(Some(_)) if recv.try_stop(code) => return,
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            let trailers = std::future::poll_fn(|cx| recv.poll_trailers(cx)).await;
                            if let Ok(Some(_)) = trailers {
                                recv.try_stop(code);
                            }
                            return;
                        }
                        // Reset by the peer, or the connection is gone.
                        Err(_) => return,
                    }
                }
            };
            let _ = tokio::time::timeout(PENDING_READ_GRACE, settle).await;
        });
    }
}

impl<R: H3Recv> H3Body<R> {
    /// Take what has already arrived, without waiting: the end of a
    /// bodiless request, or the first data.
    fn peek(&mut self) {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let Some(recv) = self.recv.as_mut() else {
            return;
        };
        let recv = recv.get_mut().unwrap_or_else(|p| p.into_inner());
        match recv.poll_data(&mut cx) {
            Poll::Ready(Ok(Some(bytes))) => self.ready = Some(Ok(Frame::data(bytes))),
            Poll::Ready(Ok(None)) => {
                self.data_done = true;
                match recv.poll_trailers(&mut cx) {
                    Poll::Ready(Ok(None)) => self.done = true,
                    Poll::Ready(Ok(Some(t))) => self.ready = Some(Ok(Frame::trailers(t))),
                    Poll::Ready(Err(e)) => self.ready = Some(Err(e)),
                    Poll::Pending => {}
                }
            }
            Poll::Ready(Err(e)) => self.ready = Some(Err(e)),
            Poll::Pending => {}
        }
    }
}

impl<R: H3Recv> hyper::body::Body for H3Body<R> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(first) = this.ready.take() {
            let last = match &first {
                Ok(f) => f.is_trailers(),
                Err(_) => true,
            };
            this.done = last;
            return Poll::Ready(Some(first));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let Some(recv) = this.recv.as_ref() else {
            return Poll::Ready(None);
        };
        let mut recv = recv.lock().unwrap_or_else(|p| p.into_inner());
        if !this.data_done {
            // A lone chunk is handed on as it came (no copy); only a run of
            // chunks already there is glued into one.
            let mut chunk = Coalesced::None;
            loop {
                match recv.poll_data(cx) {
                    Poll::Ready(Ok(Some(bytes))) => {
                        if chunk.push(bytes) >= COALESCE_BYTES {
                            break;
                        }
                    }
                    Poll::Ready(Ok(None)) => {
                        this.data_done = true;
                        break;
                    }
                    Poll::Ready(Err(e)) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    Poll::Pending if chunk.is_empty() => return Poll::Pending,
                    Poll::Pending => break,
                }
            }
            if let Some(bytes) = chunk.into_bytes() {
                return Poll::Ready(Some(Ok(Frame::data(bytes))));
            }
        }
        match recv.poll_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                this.done = true;
                match result {
                    Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
                    Ok(None) => Poll::Ready(None),
                    Err(e) => Poll::Ready(Some(Err(e))),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.ready.is_none()
    }
}

/// The data chunks one poll of an H3 body found.
enum Coalesced {
    None,
    One(Bytes),
    Many(BytesMut),
}

impl Coalesced {
    /// Add `bytes`; the length so far.
    fn push(&mut self, bytes: Bytes) -> usize {
        let next = match std::mem::replace(self, Coalesced::None) {
            Coalesced::None => Coalesced::One(bytes),
            Coalesced::One(first) => {
                let mut glued = BytesMut::with_capacity(first.len() + bytes.len());
                glued.extend_from_slice(&first);
                glued.extend_from_slice(&bytes);
                Coalesced::Many(glued)
            }
            Coalesced::Many(mut glued) => {
                glued.extend_from_slice(&bytes);
                Coalesced::Many(glued)
            }
        };
        *self = next;
        match self {
            Coalesced::None => 0,
            Coalesced::One(b) => b.len(),
            Coalesced::Many(b) => b.len(),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Coalesced::None => true,
            Coalesced::One(b) => b.is_empty(),
            Coalesced::Many(b) => b.is_empty(),
        }
    }

    /// The chunk to hand on; `None` when nothing (or only empty data) came.
    fn into_bytes(self) -> Option<Bytes> {
        let bytes = match self {
            Coalesced::None => return None,
            Coalesced::One(b) => b,
            Coalesced::Many(b) => b.freeze(),
        };
        (!bytes.is_empty()).then_some(bytes)
    }
}

/// Deadlines for writes towards a peer that must grant stream credit: a
/// peer that stops reading holds each write until it does.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Each write completes within this long (`body_timeout_ms`).
    pub progress: Duration,
    /// And every write by this instant (`total_timeout_ms` from the
    /// request's start).
    pub deadline: Instant,
}

/// A write did not complete within its `Pace`: the peer gave no credit.
#[derive(Debug, thiserror::Error)]
#[error("the peer granted no stream credit within body_timeout_ms (or total_timeout_ms)")]
pub struct SlowReader;

impl Pace {
    /// Run one write within this pace. Past it: `SlowReader`, counted as
    /// the `slow_reader` defence; the caller must abort the stream.
    pub async fn write<F>(&self, write: F) -> Result<(), BoxError>
    where
        F: std::future::Future<Output = Result<(), BoxError>>,
    {
        let mut write = std::pin::pin!(write);
        // Almost every write finishes on its first poll (the credit is
        // there): no clock read and no timer for those.
        if let Some(done) = now_or_pending(write.as_mut()).await {
            return done;
        }
        let by = (Instant::now() + self.progress).min(self.deadline);
        match tokio::time::timeout_at(by, write).await {
            Ok(done) => done,
            Err(_) => {
                metrics()
                    .defence_trips_total
                    .with_label_values(&["slow_reader"])
                    .inc();
                Err(SlowReader.into())
            }
        }
    }
}

/// `fut`'s output, or `None` once `by` has passed. A future ready on its
/// first poll (an H3 request's HEADERS usually come with its stream) costs
/// no timer.
pub async fn by_deadline<F: std::future::Future>(by: Instant, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Some(out) = now_or_pending(fut.as_mut()).await {
        return Some(out);
    }
    tokio::time::timeout_at(by, fut).await.ok()
}

/// Poll `fut` once: its output if ready, `None` if pending (the waker of
/// this task is registered, so polling it again later is enough).
async fn now_or_pending<F: std::future::Future>(mut fut: Pin<&mut F>) -> Option<F::Output> {
    std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => Poll::Ready(None),
    })
    .await
}

/// Send `body` on `send`, then finish; a body error aborts the stream.
/// With `pace`, every write (data, trailers, finish) has a deadline; past
/// it the stream is aborted (H3_REQUEST_CANCELLED) and `body` is dropped,
/// which releases whatever produces it (a backend connection, the
/// balancer's in-flight slot).
pub async fn send_body<S: H3Send>(
    mut body: ProxyBody,
    send: &mut S,
    pace: Option<Pace>,
) -> Result<(), BoxError> {
    let sent = send_frames(&mut body, send, pace).await;
    if sent.is_err() {
        send.abort();
    }
    sent
}

async fn send_frames<S: H3Send>(
    body: &mut ProxyBody,
    send: &mut S,
    pace: Option<Pace>,
) -> Result<(), BoxError> {
    loop {
        match body.frame().await {
            None => return paced(pace, send.finish()).await,
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(bytes) => {
                    if !bytes.is_empty() {
                        paced(pace, send.data(bytes)).await?;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        paced(pace, send.trailers(trailers)).await?;
                        // h3 0.0.8 still needs the explicit finish.
                        return paced(pace, send.finish()).await;
                    }
                }
            },
        }
    }
}

async fn paced<F>(pace: Option<Pace>, write: F) -> Result<(), BoxError>
where
    F: std::future::Future<Output = Result<(), BoxError>>,
{
    match pace {
        Some(p) => p.write(write).await,
        None => write.await,
    }
}

/// Bytes a tunnel over an HTTP/3 stream buffers per direction between the
/// stream and its byte-stream end: one QUIC stream window's worth would
/// double what flow control already bounds; 64 KiB keeps copies large.
const TUNNEL_BUFFER: usize = 64 * 1024;

/// An HTTP/3 request stream (after a 2xx to an extended CONNECT) as a
/// byte stream, for the WebSocket relay. The returned pump moves bytes
/// both ways through a bounded in-memory pipe; it ends when both
/// directions have (the far end dropped, or the peer finished or reset
/// the stream). The caller runs it (the H3 front inside the request's
/// task, so the connection counts the tunnel as an open request).
pub fn tunnel<S, R>(
    mut send: S,
    mut recv: R,
) -> (
    tokio::io::DuplexStream,
    impl std::future::Future<Output = ()> + Send,
)
where
    S: H3Send,
    R: H3Recv,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (near, far) = tokio::io::duplex(TUNNEL_BUFFER);
    let (mut far_rx, mut far_tx) = tokio::io::split(far);
    let pump = async move {
        let outbound = async {
            let mut buf = vec![0u8; TUNNEL_BUFFER];
            loop {
                match far_rx.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = send.finish().await;
                        return;
                    }
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                        if send.data(chunk).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let inbound = async {
            loop {
                let data = std::future::poll_fn(|cx| recv.poll_data(cx)).await;
                match data {
                    Ok(Some(bytes)) => {
                        if far_tx.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) | Err(_) => {
                        let _ = far_tx.shutdown().await;
                        return;
                    }
                }
            }
        };
        tokio::join!(outbound, inbound);
    };
    (near, pump)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_chunk_is_handed_on_as_it_came() {
        let chunk = Bytes::from(vec![7u8; 100]);
        let ptr = chunk.as_ptr();
        let mut c = Coalesced::None;
        assert_eq!(c.push(chunk), 100);
        let out = c.into_bytes().unwrap();
        assert_eq!(out.as_ptr(), ptr, "no copy for a single chunk");
    }

    #[test]
    fn chunks_already_there_are_glued_in_order() {
        let mut c = Coalesced::None;
        c.push(Bytes::from_static(b"ab"));
        c.push(Bytes::from_static(b""));
        assert_eq!(c.push(Bytes::from_static(b"cd")), 4);
        assert_eq!(c.into_bytes().unwrap(), Bytes::from_static(b"abcd"));
    }

    #[test]
    fn nothing_or_empty_data_is_no_chunk() {
        assert!(Coalesced::None.into_bytes().is_none());
        let mut c = Coalesced::None;
        c.push(Bytes::new());
        assert!(c.is_empty());
        assert!(c.into_bytes().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn by_deadline_takes_a_ready_future_and_bounds_a_pending_one() {
        let by = Instant::now() + Duration::from_secs(1);
        assert_eq!(by_deadline(by, async { 5 }).await, Some(5));
        assert_eq!(by_deadline(by, std::future::pending::<u8>()).await, None);
        // A future that becomes ready later, before the deadline.
        let later = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            6
        };
        let by = Instant::now() + Duration::from_secs(1);
        assert_eq!(by_deadline(by, later).await, Some(6));
    }
}
