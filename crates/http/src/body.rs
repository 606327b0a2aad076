//! The one body type of the proxy core, and the guard that bounds it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every request and response body in the core: streamed, type-erased,
/// so a front or connector of any protocol can produce or consume it.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Why a guarded body stopped early. Surfaces as a body error, so the
/// other side sees an abort (RST_STREAM, or a connection closed before the
/// final chunk), never a clean end.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    #[error("body larger than the configured cap")]
    TooLarge,
    #[error("no body progress within body_timeout_ms")]
    Stalled,
    #[error("exchange exceeded total_timeout_ms")]
    TotalTimeout,
}

/// What the forwarder learns from the client's request body while a
/// connector streams it: when it ended (the backend's time to answer starts
/// then), and whether it failed on the client's side (an abort, a stall, a
/// cap), which is never the backend's fault.
#[derive(Debug, Default)]
pub struct BodyEvents {
    ended: std::sync::atomic::AtomicBool,
    client_fault: std::sync::OnceLock<BodyFault>,
    end: tokio::sync::Notify,
    /// Body bytes read from the client so far (the access log's figure).
    bytes: std::sync::atomic::AtomicU64,
}

/// How a client's request body failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// The client aborted or cut its upload.
    Aborted,
    /// One of our limits tripped on it.
    Limit(BodyLimit),
}

impl BodyEvents {
    fn finish(&self) {
        self.ended.store(true, std::sync::atomic::Ordering::Release);
        self.end.notify_waiters();
    }

    pub(crate) fn fail(&self, fault: BodyFault) {
        let _ = self.client_fault.set(fault);
        self.finish();
    }

    /// Body bytes the client sent that were read.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why the client's body failed, if it did.
    pub fn client_fault(&self) -> Option<BodyFault> {
        self.client_fault.get().copied()
    }

    /// Resolves once the body has ended, cleanly or not.
    pub async fn ended(&self) {
        let notified = self.end.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.ended.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        notified.await;
    }
}

pin_project_lite::pin_project! {
    /// Caps a body's size and bounds its stalls and total duration.
    pub struct Guarded<B> {
        #[pin]
        inner: B,
        limit: u64,
        seen: u64,
        stall: Duration,
        deadline: Instant,
        #[pin]
        timer: Sleep,
        events: Option<std::sync::Arc<BodyEvents>>,
    }
}

impl<B> Guarded<B> {
    pub fn new(inner: B, limit: u64, stall: Duration, deadline: Instant) -> Self {
        let first = (Instant::now() + stall).min(deadline);
        Self {
            inner,
            limit,
            seen: 0,
            stall,
            deadline,
            timer: tokio::time::sleep_until(first),
            events: None,
        }
    }

    /// A client's request body: its end and its faults are reported.
    pub fn from_client(
        inner: B,
        limit: u64,
        stall: Duration,
        deadline: Instant,
    ) -> (Self, std::sync::Arc<BodyEvents>)
    where
        B: Body,
    {
        let events = std::sync::Arc::new(BodyEvents::default());
        if inner.is_end_stream() {
            events.finish();
        }
        let mut g = Self::new(inner, limit, stall, deadline);
        g.events = Some(std::sync::Arc::clone(&events));
        (g, events)
    }
}

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let events = this.events.as_deref();
        let tripped = |why: BodyLimit| {
            if let Some(ev) = events {
                ev.fail(BodyFault::Limit(why));
            }
            Poll::Ready(Some(Err(why.into())))
        };
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen = this.seen.saturating_add(data.len() as u64);
                    if let Some(ev) = events {
                        ev.bytes
                            .store(*this.seen, std::sync::atomic::Ordering::Relaxed);
                    }
                    if *this.seen > *this.limit {
                        return tripped(BodyLimit::TooLarge);
                    }
                }
                let next = (Instant::now() + *this.stall).min(*this.deadline);
                this.timer.reset(next);
                // A consumer may stop polling at the last frame (hyper's
                // clients do): that frame is the end.
                if let (Some(ev), true) = (events, this.inner.is_end_stream()) {
                    ev.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(ev) = events {
                    ev.fail(BodyFault::Aborted);
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(ev) = events {
                    ev.finish();
                }
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.poll(cx) {
                Poll::Ready(()) => {
                    let why = if Instant::now() >= *this.deadline {
                        BodyLimit::TotalTimeout
                    } else {
                        BodyLimit::Stalled
                    };
                    tripped(why)
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The body limit behind an error, searching its source chain.
pub fn limit_in(err: &(dyn std::error::Error + 'static)) -> Option<BodyLimit> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(limit) = e.downcast_ref::<BodyLimit>() {
            return Some(*limit);
        }
        cur = e.source();
    }
    None
}

/// A hyper body as a `ProxyBody`.
pub fn boxed_incoming(body: hyper::body::Incoming) -> ProxyBody {
    body.map_err(BoxError::from).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn cap_and_stall_end_in_errors_not_clean_ends() {
        let far = Instant::now() + Duration::from_secs(3600);
        let big = Guarded::new(full(vec![0u8; 10]), 5, Duration::from_secs(1), far);
        let err = big.collect().await.err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("body larger than the configured cap"));

        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let stalled = http_body_util::StreamBody::new(tokio_stream_shim(rx));
        let g = Guarded::new(stalled, 100, Duration::from_secs(1), far);
        let err = g.collect().await.err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("no body progress within body_timeout_ms")
        );
    }

    fn tokio_stream_shim(
        mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
