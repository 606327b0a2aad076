//! A gRPC response body that ends in trailers when one of the gateway's
//! own limits stops it: the deadline passing mid-stream is a
//! DEADLINE_EXCEEDED the client can read, not a reset stream that it
//! would report as INTERNAL or CANCELLED. A backend's own reset stays a
//! reset: relaying it is not the gateway's call to rewrite.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::status::{fields, Code};
use crate::body::{limit_in, BodyLimit, BoxError};

pin_project_lite::pin_project! {
    pub struct GrpcBody<B> {
        #[pin]
        inner: B,
        ended: bool,
    }
}

impl<B> GrpcBody<B> {
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            ended: false,
        }
    }
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
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => match limit_in(e.as_ref()) {
                Some(limit) => {
                    *this.ended = true;
                    let (code, message) = status_for(limit);
                    Poll::Ready(Some(Ok(Frame::trailers(fields(code, message)))))
                }
                None => Poll::Ready(Some(Err(e))),
            },
            other => other,
        }
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
        let collected = GrpcBody::new(guarded)
            .collect()
            .await
            .expect("trailers, not an error");
        let trailers = collected.trailers().cloned().unwrap_or_default();
        assert_eq!(trailers["grpc-status"], "4");
    }
}
