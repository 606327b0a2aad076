//! 0-RTT on the HTTP/3 front (`[listeners.quic] allow_0rtt`, RFC 8470).
//!
//! With 0-RTT on, a resumed client's requests can arrive in early data,
//! before its handshake completes. Early data can be replayed by anyone who
//! recorded it; a replayed connection can never complete its handshake,
//! though (it lacks the client's keys). So what decides is whether a request
//! is forwarded before the handshake completes:
//! - safe methods (GET, HEAD, OPTIONS) are, at once, with `Early-Data: 1`
//!   so the backend can answer 425 Too Early where even that is too much;
//! - every other request waits for the handshake, and is dropped unanswered
//!   if it never completes.
//!
//! Replays of the safe ones are refused too: rustls accepts early data
//! only from a single-use session (`eg_tls::EarlyDataSessions`).

use std::future::Future;
use std::time::Duration;

use eg_runtime::metrics::metrics;
use http::{HeaderValue, Method, Request};
use tokio::sync::watch;

/// Where a connection's handshake stands, as its requests see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Pending,
    Complete,
    Failed,
}

/// A connection's handshake as its requests see it: `None` once it is
/// known complete (every connection without 0-RTT), else its watch.
#[derive(Debug, Clone)]
pub struct Handshake(Option<watch::Receiver<State>>);

impl Handshake {
    /// A connection whose handshake completed before any request: what
    /// every connection without 0-RTT is.
    pub fn complete() -> Self {
        Self(None)
    }

    /// A connection accepted at 0.5-RTT: its handshake is `accepted`, and
    /// is given `within` to complete. The returned future watches it (run
    /// it beside the connection): it closes the connection on the deadline
    /// and resolves when the handshake is decided, with `true` if it
    /// completed.
    pub fn watch(
        accepted: quinn::ZeroRttAccepted,
        conn: quinn::Connection,
        within: Duration,
    ) -> (Self, impl Future<Output = bool>) {
        let (tx, rx) = watch::channel(State::Pending);
        let watcher = async move {
            let state = match tokio::time::timeout(within, accepted).await {
                // It resolves when the handshake completes or the connection
                // is lost first, and on a server says nothing else (quinn
                // 0.11 reports `false` there even for accepted early data):
                // a connection still open has completed its handshake.
                Ok(_) if conn.close_reason().is_none() => State::Complete,
                Ok(_) => State::Failed,
                Err(_) => {
                    eg_runtime::handshake::count_timeout();
                    conn.close(quinn::VarInt::from_u32(0), b"handshake timeout");
                    State::Failed
                }
            };
            // No request may be waiting any more: nobody listening is fine.
            let _ = tx.send(state);
            state == State::Complete
        };
        (Self(Some(rx)), watcher)
    }

    /// Admit a request whose head just arrived: `true` to forward it now.
    /// A safe request in early data is marked `Early-Data: 1`; any other
    /// waits here for the handshake, `false` if it never completes.
    pub async fn admit<B>(&mut self, req: &mut Request<B>, listener: &str) -> bool {
        let Some(rx) = &mut self.0 else {
            return true;
        };
        let now = *rx.borrow();
        if now != State::Pending {
            return now == State::Complete;
        }
        let outcome = |what: &str| {
            metrics()
                .zero_rtt_requests_total
                .with_label_values(&[listener, what])
                .inc();
        };
        if is_safe(req.method()) {
            req.headers_mut()
                .insert("early-data", HeaderValue::from_static("1"));
            outcome("served");
            return true;
        }
        outcome("deferred");
        // The watcher always sends a final state, so this ends by the
        // handshake deadline.
        let complete = matches!(
            rx.wait_for(|s| *s != State::Pending).await.as_deref(),
            Ok(State::Complete)
        );
        if !complete {
            outcome("refused");
        }
        complete
    }
}

/// RFC 9110 §9.2.1's safe methods a client sends in early data (TRACE is
/// refused by the core anyway). A safe method may still be answered 425 by
/// a backend that sees `Early-Data: 1` and wants no risk at all.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_complete_handshake_admits_everything_unmarked() {
        let mut h = Handshake::complete();
        let mut req = Request::post("/").body(()).expect("request");
        assert!(h.admit(&mut req, "t").await);
        assert!(req.headers().get("early-data").is_none());
    }

    #[tokio::test]
    async fn early_safe_requests_are_marked_and_unsafe_ones_wait() {
        let (tx, rx) = watch::channel(State::Pending);
        let mut h = Handshake(Some(rx));
        let mut get = Request::get("/").body(()).expect("request");
        assert!(h.admit(&mut get, "t").await);
        assert_eq!(get.headers()["early-data"], "1");

        let mut post = Request::post("/").body(()).expect("request");
        let mut waiting = h.clone();
        let mut held = tokio::spawn(async move {
            let admitted = waiting.admit(&mut post, "t").await;
            (admitted, post)
        });
        let early = tokio::time::timeout(Duration::from_millis(50), &mut held).await;
        assert!(early.is_err(), "a POST in early data must wait");
        tx.send(State::Complete).expect("send");
        let (admitted, post) = held.await.expect("join");
        assert!(admitted);
        assert!(post.headers().get("early-data").is_none());
    }

    #[tokio::test]
    async fn a_failed_handshake_refuses_the_held_request() {
        let (tx, rx) = watch::channel(State::Pending);
        let mut h = Handshake(Some(rx));
        tx.send(State::Failed).expect("send");
        let mut post = Request::post("/").body(()).expect("request");
        assert!(!h.admit(&mut post, "t").await);
    }
}
