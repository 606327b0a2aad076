//! The response body as it streams from the backend: it keeps the
//! exchange's guards (balancer in-flight, circuit-breaker slot, listener
//! slot) alive until it ends, and tells passive health how the exchange
//! ended: a clean end is a success, a reset or a stall mid-body a failure
//! (the head alone would call it a success).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use eg_balancer::{InFlight, Outcome};
use hyper::body::{Body, Frame, SizeHint};

use std::sync::Arc;

use crate::body::{limit_in, BodyEvents, BodyLimit, BoxError};

pin_project_lite::pin_project! {
    pub(super) struct BackendBody<B, G> {
        #[pin]
        inner: B,
        in_flight: InFlight,
        // The client's request body: its fault (an abort cutting an echo,
        // say) is never the backend's.
        request: Arc<BodyEvents>,
        // The outcome is told (a 5xx, or a bodiless answer, was told at the head).
        reported: bool,
        _guards: G,
    }
}

impl<B, G> BackendBody<B, G> {
    /// `settled`: the outcome was already reported at the head.
    pub(super) fn new(
        inner: B,
        in_flight: InFlight,
        request: Arc<BodyEvents>,
        settled: bool,
        guards: G,
    ) -> Self {
        Self {
            inner,
            in_flight,
            request,
            reported: settled,
            _guards: guards,
        }
    }
}

/// Whether a body error is the backend's doing: our own response cap and
/// the exchange's total deadline are not.
fn backend_failed(e: &BoxError) -> bool {
    match limit_in(e.as_ref()) {
        Some(BodyLimit::TooLarge | BodyLimit::TotalTimeout) => false,
        Some(BodyLimit::Stalled) | None => true,
    }
}

impl<B, G> Body for BackendBody<B, G>
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
        if *this.reported {
            return polled;
        }
        let outcome = match &polled {
            Poll::Ready(Some(Err(e)))
                if backend_failed(e) && this.request.client_fault().is_none() =>
            {
                Some(Outcome::Failure)
            }
            // Our own cap or deadline: nobody's verdict on the backend.
            Poll::Ready(Some(Err(_))) => None,
            Poll::Ready(None) => Some(Outcome::Success),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => Some(Outcome::Success),
            _ => return polled,
        };
        *this.reported = true;
        if let Some(outcome) = outcome {
            this.in_flight.settle(outcome);
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
