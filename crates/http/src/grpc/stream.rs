//! A gRPC response body that ends in trailers when one of the gateway's
//! own limits stops it: the deadline passing mid-stream is a
//! DEADLINE_EXCEEDED the client can read, not a reset stream that it
//! would report as INTERNAL or CANCELLED. A backend's own reset stays a
//! reset: relaying it is not the gateway's call to rewrite.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use std::sync::Arc;

use super::status::{fields, Code};
use crate::body::{limit_in, BodyEvents, BodyFault, BodyLimit, BoxError};
use crate::error_map::ProxyError;

pin_project_lite::pin_project! {
    pub struct GrpcBody<B> {
        #[pin]
        inner: B,
        ended: bool,
        // The request body's fate: a cap of ours tripping on it after the
        // backend's answer began ends the backend's stream (reset, or
        // finished without trailers); the client hears our status instead.
        request: Arc<BodyEvents>,
    }
}

impl<B> GrpcBody<B> {
    pub fn new(inner: B, request: Arc<BodyEvents>) -> Self {
        Self {
            inner,
            ended: false,
            request,
        }
    }
}

/// The status for a request body one of our limits stopped; `None` when
/// the client itself aborted (nobody is left to tell).
fn request_status(request: &BodyEvents) -> Option<(Code, &'static str)> {
    let e = match request.client_fault()? {
        BodyFault::Aborted => return None,
        BodyFault::Limit(BodyLimit::TooLarge) => ProxyError::TooLarge,
        BodyFault::Limit(BodyLimit::Stalled | BodyLimit::TotalTimeout) => ProxyError::ClientTimeout,
    };
    Some((Code::for_error(&e), e.detail()))
}

fn status_for(limit: BodyLimit) -> (Code, &'static str) {
    match limit {
        BodyLimit::TotalTimeout => (Code::DeadlineExceeded, "deadline exceeded at the gateway"),
        BodyLimit::TooLarge => (
            Code::ResourceExhausted,
            "response larger than the gateway's max_response_body_bytes",
        ),
        // Not reached through the core, which sets a call's stall bound to
        // at least its deadline (counted from earlier): the deadline ends
        // a silent stream first.
        BodyLimit::Stalled => (
            Code::Unavailable,
            "the backend sent nothing for body_timeout_ms",
        ),
    }
}

impl<B> Body for GrpcBody<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let status = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => match limit_in(e.as_ref()) {
                Some(limit) => status_for(limit),
                None => match request_status(this.request) {
                    Some(status) => status,
                    None => return Poll::Ready(Some(Err(e))),
                },
            },
            // Ended without trailers: a stream our request cap cut short.
            Poll::Ready(None) => match request_status(this.request) {
                Some(status) => status,
                None => return Poll::Ready(None),
            },
            other => {
                if let Poll::Ready(Some(Ok(frame))) = &other {
                    // Trailers are the end: nothing may follow them.
                    *this.ended = frame.is_trailers();
                }
                return other;
            }
        };
        *this.ended = true;
        let (code, message) = status;
        Poll::Ready(Some(Ok(Frame::trailers(fields(code, message)))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::Guarded;
    use http_body_util::BodyExt;
    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn deadline_mid_stream_ends_in_deadline_exceeded_trailers() {
        let (_tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let silent = http_body_util::StreamBody::new(futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        }));
        let deadline = Instant::now() + Duration::from_secs(2);
        let guarded = Guarded::new(silent, 1 << 20, Duration::from_secs(60), deadline);
        let collected = GrpcBody::new(guarded, Arc::default())
            .collect()
            .await
            .expect("trailers, not an error");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(trailers["grpc-status"], "4");
    }

    /// A backend stream that ends (cleanly, or with an error) after our
    /// request body cap tripped ends in RESOURCE_EXHAUSTED trailers.
    #[tokio::test]
    async fn request_cap_after_the_answer_began_ends_in_resource_exhausted() {
        for backend_end in [None, Some("reset by the backend")] {
            let request = Arc::new(BodyEvents::default());
            request.fail(BodyFault::Limit(BodyLimit::TooLarge));
            let mut frames: Vec<Result<Frame<Bytes>, BoxError>> =
                vec![Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01x")))];
            if let Some(why) = backend_end {
                frames.push(Err(why.into()));
            }
            let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
            let collected = GrpcBody::new(inner, request)
                .collect()
                .await
                .expect("trailers, not an error");
            let trailers = collected.trailers().cloned().unwrap_or_default();
            assert_eq!(trailers["grpc-status"], "8", "{backend_end:?}");
            assert_eq!(
                trailers["grpc-message"], "request body exceeds the configured limit",
                "{backend_end:?}"
            );
        }
        // No fault of ours: a clean end stays clean, an error stays one.
        let inner = http_body_util::Full::new(Bytes::from_static(b"x"))
            .map_err(|never| -> BoxError { match never {} });
        let collected = GrpcBody::new(inner, Arc::default()).collect().await;
        assert!(collected.is_ok_and(|c| c.trailers().is_none()));
    }
}
