//! HTTP/1.1 upstream: a bounded pool of keep-alive connections per backend.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use eg_tls::BackendTls;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::breaker::{Overflow, PendingQueue, Waiting};
use super::stream::{dial, DialError};
use super::AcquireError;
use crate::body::{BoxError, ProxyBody};

type H1Sender = SendRequest<ProxyBody>;

pub struct H1Pool {
    idle: Mutex<Vec<(H1Sender, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// One permit per open connection (`circuit_breaker.max_connections`),
    /// held by the connection's task until it ends.
    connections: Arc<Semaphore>,
    /// Wakes a request waiting for a connection when one goes idle.
    returned: Notify,
}

impl H1Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration, max_connections: u32) -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            connections: Arc::new(Semaphore::new(max_connections as usize)),
            returned: Notify::new(),
        }
    }

    /// A live idle connection, evicting dead and expired ones on the way.
    /// One still finishing its last exchange stays pooled for next time.
    fn take(&self) -> Option<H1Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut busy = Vec::new();
        let mut found = None;
        let now = Instant::now();
        while let Some((mut sender, expires)) = idle.pop() {
            if sender.is_closed() || now >= expires {
                continue;
            }
            match sender.ready().now_or_never() {
                Some(Ok(())) => {
                    found = Some(sender);
                    break;
                }
                Some(Err(_)) => {}
                None => busy.push((sender, expires)),
            }
        }
        idle.extend(busy);
        found
    }

    /// Pool `sender` for at most `keep_for` (the backend's own idle limit,
    /// when it said one) and never longer than the pool's idle timeout.
    fn put(&self, sender: H1Sender, keep_for: Option<Duration>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            let keep = keep_for.map_or(self.idle_timeout, |k| k.min(self.idle_timeout));
            idle.push((sender, Instant::now() + keep));
            drop(idle);
            self.returned.notify_one();
        }
    }
}

pub struct Pooled {
    sender: H1Sender,
    pool: Arc<H1Pool>,
    reused: bool,
}

/// Where a connection comes from, and what bounds the wait for one.
pub struct Acquire<'a, 'q> {
    pub address: &'a str,
    pub tls: Option<&'a BackendTls>,
    pub connect_timeout: Duration,
    pub queue: &'q PendingQueue,
    pub waiting: &'a mut Option<Waiting<'q>>,
    pub deadline: Instant,
}

/// An idle pooled connection, a new one under the connection cap, or,
/// at the cap, the first of the two to free up before the deadline.
pub async fn acquire(pool: &Arc<H1Pool>, a: Acquire<'_, '_>) -> Result<Pooled, AcquireError> {
    loop {
        // Listen before looking, so a connection returned in between
        // still wakes us.
        let returned = pool.returned.notified();
        tokio::pin!(returned);
        returned.as_mut().enable();
        if let Some(sender) = pool.take() {
            return Ok(Pooled {
                sender,
                pool: Arc::clone(pool),
                reused: true,
            });
        }
        let permit = match Arc::clone(&pool.connections).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                if a.waiting.is_none() {
                    *a.waiting = Some(a.queue.enter()?);
                }
                tokio::select! {
                    () = &mut returned => continue,
                    permit = Arc::clone(&pool.connections).acquire_owned() => {
                        permit.map_err(|_| Overflow::QueueTimeout)?
                    }
                    () = tokio::time::sleep_until(a.deadline) => {
                        return Err(Overflow::QueueTimeout.into());
                    }
                }
            }
        };
        // Boxed: a dial (TCP, TLS) is a large future that most requests,
        // which find a pooled connection, never run; inline it would grow
        // every request's future, which is moved several times per request.
        let dial = Box::pin(connect(pool, a.address, a.tls, a.connect_timeout, permit));
        return Ok(dial.await?);
    }
}

async fn connect(
    pool: &Arc<H1Pool>,
    address: &str,
    tls: Option<&BackendTls>,
    connect_timeout: Duration,
    permit: OwnedSemaphorePermit,
) -> Result<Pooled, DialError> {
    let stream = dial(address, tls, connect_timeout).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| DialError::Refused(address.to_owned(), std::io::Error::other(e)))?;
    tokio::spawn(async move {
        let _open = permit;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream h1 connection ended");
        }
    });
    Ok(Pooled {
        sender,
        pool: Arc::clone(pool),
        reused: false,
    })
}

impl Pooled {
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Send a request that upgrades the connection (a WebSocket): the
    /// connection leaves the pool for good, whatever the answer.
    pub async fn send_upgrade(
        mut self,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, super::SendError> {
        self.sender
            .try_send_request(req)
            .await
            .map_err(super::SendError::from_try)
    }

    pub async fn send(
        mut self,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, super::SendError> {
        let resp = self
            .sender
            .try_send_request(req)
            .await
            .map_err(super::SendError::from_try)?;
        let keep = !resp
            .headers()
            .get(http::header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let keep_for = backend_keep_alive(resp.headers());
        let (parts, body) = resp.into_parts();
        let slot = keep.then_some((self.pool, self.sender, keep_for));
        if body.is_end_stream() {
            if let Some((pool, sender, keep_for)) = slot {
                pool.put(sender, keep_for);
            }
            return Ok(Response::from_parts(
                parts,
                crate::body::boxed_incoming(body),
            ));
        }
        let body = Recycle { inner: body, slot };
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ))
    }
}

/// Margin under a backend's announced keep-alive: a connection it will
/// close at N s is not reused after N - 1 s, so a request never races the
/// backend's close.
const KEEP_ALIVE_MARGIN: Duration = Duration::from_secs(1);

/// `Keep-Alive: timeout=N` of a backend response, less the margin.
fn backend_keep_alive(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("keep-alive")?.to_str().ok()?;
    let secs: u64 = v.split(',').find_map(|part| {
        let (k, val) = part.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("timeout")
            .then(|| val.trim().parse().ok())
            .flatten()
    })?;
    Some(Duration::from_secs(secs).saturating_sub(KEEP_ALIVE_MARGIN))
}

pin_project_lite::pin_project! {
    /// Returns the connection to the pool once the response body has been
    /// read to its clean end; an error or early drop discards it.
    struct Recycle {
        #[pin]
        inner: Incoming,
        slot: Option<(Arc<H1Pool>, H1Sender, Option<Duration>)>,
    }
}

impl Body for Recycle {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        // A consumer may stop polling once the last frame says the body is
        // complete (hyper's HTTP/2 server does): recycle at that point too.
        let ended = matches!(&polled, Poll::Ready(Some(Ok(_)))) && this.inner.is_end_stream();
        if ended {
            if let Some((pool, sender, keep_for)) = this.slot.take() {
                pool.put(sender, keep_for);
            }
        }
        match &polled {
            Poll::Ready(None) => {
                if let Some((pool, sender, keep_for)) = this.slot.take() {
                    pool.put(sender, keep_for);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                this.slot.take();
            }
            _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_timeout_is_read_with_a_margin() {
        let mut h = http::HeaderMap::new();
        assert_eq!(backend_keep_alive(&h), None);
        h.insert(
            "keep-alive",
            http::HeaderValue::from_static("max=100, timeout=5"),
        );
        assert_eq!(backend_keep_alive(&h), Some(Duration::from_secs(4)));
        h.insert("keep-alive", http::HeaderValue::from_static("timeout=junk"));
        assert_eq!(backend_keep_alive(&h), None);
    }
}
