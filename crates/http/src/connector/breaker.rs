//! The circuit breaker of an HTTP pool (`[clusters.circuit_breaker]`):
//! caps on each backend's concurrent requests and open connections, and a
//! bounded FIFO of requests waiting for a slot. Without it one client can
//! make the gateway open a backend connection per request it sends.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use eg_config::CircuitBreaker;
use eg_runtime::metrics::metrics;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why no slot could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    #[error("the pool's queue of waiting requests is full")]
    QueueFull,
    #[error("no backend slot freed up within connect_timeout_ms")]
    QueueTimeout,
}

impl Overflow {
    pub(crate) fn count(self) {
        let label = match self {
            Self::QueueFull => "circuit_breaker_queue_full",
            Self::QueueTimeout => "circuit_breaker_queue_timeout",
        };
        metrics()
            .defence_trips_total
            .with_label_values(&[label])
            .inc();
    }
}

/// Requests of one pool waiting for a slot on their backend.
pub struct PendingQueue {
    waiting: AtomicU32,
    max: u32,
}

/// A place in the queue; leaving it (drop) frees the place.
pub struct Waiting<'a>(&'a PendingQueue);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PendingQueue {
    pub fn new(cb: &CircuitBreaker) -> Self {
        Self {
            waiting: AtomicU32::new(0),
            max: cb.max_pending_requests,
        }
    }

    pub fn enter(&self) -> Result<Waiting<'_>, Overflow> {
        self.waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map(|_| Waiting(self))
            .map_err(|_| Overflow::QueueFull)
    }
}

/// One backend's request slots. tokio's semaphore is fair (FIFO), so
/// waiters are served in arrival order.
pub struct RequestSlots(Arc<Semaphore>);

/// A request slot, held until the response body ends.
pub type RequestSlot = OwnedSemaphorePermit;

impl RequestSlots {
    pub fn new(cb: &CircuitBreaker) -> Self {
        Self(Arc::new(Semaphore::new(cb.max_requests as usize)))
    }

    /// A slot now, or after waiting in `queue` until `deadline`.
    pub async fn acquire<'q>(
        &self,
        queue: &'q PendingQueue,
        waiting: &mut Option<Waiting<'q>>,
        deadline: Instant,
    ) -> Result<RequestSlot, Overflow> {
        if let Ok(slot) = Arc::clone(&self.0).try_acquire_owned() {
            return Ok(slot);
        }
        if waiting.is_none() {
            *waiting = Some(queue.enter()?);
        }
        match tokio::time::timeout_at(deadline, Arc::clone(&self.0).acquire_owned()).await {
            Ok(Ok(slot)) => Ok(slot),
            _ => Err(Overflow::QueueTimeout),
        }
    }
}
