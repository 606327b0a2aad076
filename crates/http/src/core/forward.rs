//! One exchange with the backend pool: pick, dial (moving on when a dial
//! fails: nothing was sent), send, and retry idempotent bodiless requests
//! on a reset or a configured status, within the pool's retry budget.
//! Every outcome feeds passive health.

use std::sync::Arc;
use std::time::Duration;

use eg_balancer::{InFlight, Outcome, PickContext, RetryPermit};
use eg_runtime::metrics::metrics;
use http::request::Parts;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::BodyExt;
use tokio::time::Instant;

use super::affinity::Keys;
use super::ConnInfo;
use crate::body::{empty, BodyEvents, BodyFault, BodyLimit, ProxyBody};
use crate::connector::breaker::RequestSlot;
use crate::connector::{AcquireError, SendError, Sender, Upstream};
use crate::error_map::ProxyError;
use crate::series::BackendOutcome;
use crate::settings::PoolHandle;

pub struct Exchange<'a> {
    pub pool: &'a PoolHandle,
    pub conn: &'a ConnInfo,
    pub keys: &'a Keys,
    pub authority: Option<&'a str>,
    /// `head_timeout_ms`; `None` for a gRPC call, which its deadline alone
    /// bounds (a server stream may send its head with its first message).
    pub head_deadline: Option<Duration>,
    pub deadline: Instant,
    /// The client's request body as the connector streams it.
    pub body_events: &'a BodyEvents,
}

pub struct Forwarded {
    pub response: Response<ProxyBody>,
    /// The chosen backend, in flight until the response body ends.
    pub in_flight: InFlight,
    /// The backend's circuit-breaker slot, held as long.
    pub slot: RequestSlot,
    /// Passive health already has the outcome (a 5xx or a bodiless
    /// answer); otherwise the body's end tells it.
    pub outcome_told: bool,
    /// Attempts before this answer that went to another backend.
    pub retries: u32,
}

/// What ended the wait for a response head.
enum HeadWait {
    /// `head_timeout_ms` passed after the request body ended.
    HeadTimeout,
    /// `total_timeout_ms` passed with the request body still streaming.
    Deadline,
}

/// A request head kept to send again: only for requests with no body.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: http::HeaderMap,
}

impl Replay {
    fn parts(&self) -> Parts {
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = self.method.clone();
        parts.uri = self.uri.clone();
        parts.version = self.version;
        parts.headers = self.headers.clone();
        parts
    }
}

/// Stale pooled connections a request may run into before failing: each
/// attempt discards one, so a handful covers a pool the backend closed.
const MAX_STALE_RETRIES: u32 = 4;

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl Exchange<'_> {
    /// Send the request, retrying as the pool allows. When a retried
    /// answer (say a 503) cannot be bettered (no other backend, the budget
    /// spent, the retry failed), the client gets that backend's own answer,
    /// never a synthetic error.
    pub async fn run<B>(&self, parts: Parts, body: B) -> Result<Forwarded, ProxyError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let mut answered = None;
        match self.attempts(parts, body, &mut answered).await {
            Err(e) => answered.map(|(forwarded, _permit)| forwarded).ok_or(e),
            done => done,
        }
    }

    async fn attempts<B>(
        &self,
        parts: Parts,
        body: B,
        answered: &mut Option<(Forwarded, RetryPermit)>,
    ) -> Result<Forwarded, ProxyError>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + 'static,
        B::Error: Into<crate::body::BoxError>,
    {
        let pool = &self.pool.pool;
        let retry = &pool.retry;
        let _active = retry.enter();
        let attempts = retry.config.attempts;
        // A bodiless request can be sent again as it was. A backend that
        // says it did not process it (REFUSED_STREAM, left out of a GOAWAY)
        // gets it again whatever the method; any other retry needs the
        // method to be idempotent too.
        let safe_to_repeat = idempotent(&parts.method);
        let replay = body.is_end_stream().then(|| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        });
        let mut first = Some((parts, body.map_err(Into::into).boxed()));
        let mut tried: Vec<usize> = Vec::new();
        let mut retries = 0u32;
        let mut stale = 0u32;
        loop {
            let (in_flight, upstream, sender, slot) = self.acquire(&mut tried).await?;
            let reused = sender.reused();
            let (parts, body) = match (first.take(), &replay) {
                (Some(pair), _) => pair,
                (None, Some(r)) => (r.parts(), empty()),
                (None, None) => return Err(ProxyError::UpstreamFailed),
            };
            let req = upstream
                .request(parts, self.authority, body)
                .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?;
            let may_retry = |tried: &Vec<usize>| {
                replay.is_some()
                    && safe_to_repeat
                    && retries < attempts
                    && tried.len() + 1 < self.pool.upstreams.len()
            };
            let sent = tokio::select! {
                sent = sender.send(req) => Ok(sent),
                why = self.head_wait() => Err(why),
            };
            match sent {
                Err(why) => {
                    // The backend had the whole request and said nothing:
                    // its fault. Still uploading at the deadline: nobody's
                    // provably (a slow client, or a backend not reading).
                    if let Some(fault) = self.body_events.client_fault() {
                        return Err(client_error(fault));
                    }
                    self.pool
                        .count(in_flight.backend().index, BackendOutcome::Timeout);
                    if matches!(why, HeadWait::HeadTimeout) {
                        in_flight.report(Outcome::Failure);
                    }
                    return Err(ProxyError::UpstreamTimeout);
                }
                Ok(Err(SendError::Unsent(req, e))) if stale < MAX_STALE_RETRIES => {
                    // Nothing reached the backend: safe to send again, any
                    // method. On a pooled H1 connection (closed while idle)
                    // or a shared H2 one (closing after a GOAWAY) the
                    // backend did nothing wrong; a fresh H1 connection it
                    // dropped at once is its failure, and another backend
                    // gets the request.
                    tracing::debug!(backend = %upstream.address, error = %e, "request not sent; resending");
                    stale += 1;
                    first = Some(req.into_parts());
                    let fresh_h1 = !reused && !upstream.multiplexed();
                    if fresh_h1 {
                        in_flight.report(Outcome::Failure);
                        self.pool
                            .count(in_flight.backend().index, BackendOutcome::Error);
                        tried.push(in_flight.backend().index);
                        if tried.len() >= self.pool.upstreams.len() {
                            return Err(ProxyError::UpstreamFailed);
                        }
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    // The client's own body failing (an abort, a stall, a
                    // cap) is not the backend's fault: answer for it and
                    // leave health alone.
                    if let Some(fault) = self.body_events.client_fault() {
                        return Err(client_error(fault));
                    }
                    tracing::debug!(backend = %upstream.address, error = %e, "upstream exchange failed");
                    // A pooled connection the backend closed while idle, or
                    // a stream the backend refused or left out of its
                    // GOAWAY (H2, H3): try a fresh one, without blaming the
                    // backend.
                    let unprocessed = e.unprocessed();
                    let resend = unprocessed || (reused && safe_to_repeat);
                    if resend && replay.is_some() && stale < MAX_STALE_RETRIES {
                        stale += 1;
                        continue;
                    }
                    if unprocessed {
                        // The backend said it did not process it, but the
                        // body went to the stream it refused and cannot be
                        // sent again: the client gets the error, the backend
                        // no mark (it declined work, it did not fail).
                        return Err(ProxyError::UpstreamFailed);
                    }
                    in_flight.report(Outcome::Failure);
                    self.pool
                        .count(in_flight.backend().index, BackendOutcome::Error);
                    // No answer came: an idempotent bodiless request is safe
                    // to send again. Bounded by `attempts` and the pool size,
                    // not by the budget, which guards answered (status) retries.
                    if !may_retry(&tried) {
                        return Err(ProxyError::UpstreamFailed);
                    }
                }
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    let outcome_told =
                        status >= 500 || hyper::body::Body::is_end_stream(response.body());
                    if status >= 500 {
                        in_flight.report(Outcome::ServerError);
                    } else if outcome_told {
                        in_flight.report(Outcome::Success);
                    } else {
                        // Success is told when the body ends cleanly: a
                        // backend may still fail mid-body (BackendBody).
                        in_flight.head_arrived();
                    }
                    self.pool
                        .count(in_flight.backend().index, BackendOutcome::Response);
                    let retryable = retry.config.on_status.contains(&status);
                    let permit = if retryable && may_retry(&tried) {
                        retry.try_retry()
                    } else {
                        None
                    };
                    let index = in_flight.backend().index;
                    let forwarded = Forwarded {
                        response,
                        in_flight,
                        slot,
                        outcome_told,
                        retries,
                    };
                    let Some(permit) = permit else {
                        return Ok(forwarded);
                    };
                    // Kept for the client should the retry not do better;
                    // the permit (held with it) counts the retry in flight
                    // against the budget until the exchange ends.
                    *answered = Some((forwarded, permit));
                    tried.push(index);
                    retries += 1;
                    metrics()
                        .retries_total
                        .with_label_values(&[&pool.name])
                        .inc();
                    continue;
                }
            }
            tried.push(in_flight.backend().index);
            retries += 1;
            metrics()
                .retries_total
                .with_label_values(&[&pool.name])
                .inc();
        }
    }

    /// Resolves when the backend is late: `head_timeout_ms` counts from
    /// the end of the request body (a slow upload is not the backend's
    /// delay), and `total_timeout_ms` bounds the whole wait.
    async fn head_wait(&self) -> HeadWait {
        let Some(head_deadline) = self.head_deadline else {
            tokio::time::sleep_until(self.deadline).await;
            return HeadWait::Deadline;
        };
        tokio::select! {
            () = self.body_events.ended() => {}
            () = tokio::time::sleep_until(self.deadline) => return HeadWait::Deadline,
        }
        let head_by = (Instant::now() + head_deadline).min(self.deadline);
        tokio::time::sleep_until(head_by).await;
        HeadWait::HeadTimeout
    }

    async fn acquire(
        &self,
        tried: &mut Vec<usize>,
    ) -> Result<(InFlight, Arc<Upstream>, Sender, RequestSlot), ProxyError> {
        // Each dial and queue wait is bounded by connect_timeout_ms; the
        // whole search (retries, several backends) by the request's own
        // deadline.
        tokio::time::timeout_at(
            self.deadline,
            acquire(self.pool, self.conn, self.keys, tried),
        )
        .await
        .map_err(|_| ProxyError::UpstreamTimeout)?
    }
}

/// Pick a backend and get a connection to it; a failed dial moves on
/// to another backend, at most once per backend.
pub(crate) async fn acquire(
    handle: &PoolHandle,
    conn: &ConnInfo,
    keys: &Keys,
    tried: &mut Vec<usize>,
) -> Result<(InFlight, Arc<Upstream>, Sender, RequestSlot), ProxyError> {
    let pool = &handle.pool;
    let total = handle.upstreams.len();
    let mut dial_failures = 0usize;
    // A place in the pool's queue, kept across backends once taken.
    let mut waiting = None;
    loop {
        let ctx = PickContext {
            client_ip: Some(conn.peer.ip()),
            hash: keys.hash,
            affinity: keys.affinity,
            exclude: tried,
        };
        let Some(picked) = pool.pick(&ctx) else {
            return Err(if dial_failures == 0 && tried.is_empty() {
                ProxyError::NoHealthyBackend
            } else if dial_failures > 0 {
                ProxyError::ConnectFailed
            } else {
                ProxyError::UpstreamFailed
            });
        };
        let index = picked.backend().index;
        let Some(upstream) = handle.upstreams.get(index) else {
            return Err(ProxyError::NoHealthyBackend);
        };
        match upstream.acquire(&handle.queue, &mut waiting).await {
            Ok((sender, slot)) => return Ok((picked, Arc::clone(upstream), sender, slot)),
            Err(AcquireError::Overflow(o)) => {
                o.count();
                return Err(ProxyError::Overloaded);
            }
            Err(AcquireError::Dial(e)) if e.is_local() => {
                // Out of descriptors or ports: ours to fix, not the
                // backend's, and every other backend would fail alike.
                eg_runtime::warn_limited!(error = %e, "no local resources to dial a backend");
                metrics()
                    .defence_trips_total
                    .with_label_values(&["local_resources"])
                    .inc();
                return Err(ProxyError::Overloaded);
            }
            Err(AcquireError::Dial(e)) => {
                eg_runtime::warn_limited!(backend = %upstream.address, error = %e, "backend dial failed");
                picked.report(Outcome::Failure);
                handle.count(index, BackendOutcome::ConnectFailed);
                tried.push(index);
                dial_failures += 1;
                if tried.len() >= total {
                    return Err(ProxyError::ConnectFailed);
                }
                metrics()
                    .retries_total
                    .with_label_values(&[&pool.name])
                    .inc();
            }
        }
    }
}

fn client_error(fault: BodyFault) -> ProxyError {
    match fault {
        BodyFault::Aborted => ProxyError::ClientAborted,
        BodyFault::Limit(BodyLimit::TooLarge) => ProxyError::TooLarge,
        BodyFault::Limit(BodyLimit::Stalled | BodyLimit::TotalTimeout) => ProxyError::ClientTimeout,
    }
}
