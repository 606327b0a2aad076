//! Outlier detection (sans-io: `now` is passed in). Consecutive failures
//! eject a backend for a back-off window that doubles on each repeat up to
//! a maximum; never more than `max_ejection_percent` of the pool, never
//! the last available backend.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use eg_config::OutlierDetection;

use crate::{BackendState, Outcome};

#[derive(Debug)]
pub struct Outlier {
    config: OutlierDetection,
    /// The pool's name, for `backend_ejections_total`.
    pool: String,
    /// The pool's backends, to count how many are out.
    peers: Vec<Arc<BackendState>>,
}

impl Outlier {
    pub(crate) fn new(
        pool: String,
        config: OutlierDetection,
        peers: Vec<Arc<BackendState>>,
    ) -> Self {
        Self {
            config,
            pool,
            peers,
        }
    }

    pub fn record(&self, backend: &BackendState, outcome: Outcome, now: Instant) {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::ServerError if self.config.eject_on_5xx => true,
            // Not counted as a failure, and no proof of health either: a
            // backend answering 5xx must not have its back-off forgiven.
            Outcome::ServerError => return,
        };
        if !failed {
            backend.consecutive_failures.store(0, Ordering::Relaxed);
            let streak = backend
                .consecutive_successes
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            // A clean streak as long as the trip threshold forgives past
            // ejections, so the next back-off starts from the base again.
            if streak >= self.config.consecutive_failures {
                backend.ejections.store(0, Ordering::Relaxed);
            }
            return;
        }
        backend.consecutive_successes.store(0, Ordering::Relaxed);
        let failures = backend.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < self.config.consecutive_failures || backend.ejected_for(now).is_some() {
            return;
        }
        if !self.may_eject(now) {
            eg_runtime::warn_limited!(backend = %backend.address, "would eject, but the pool's ejection cap is reached");
            return;
        }
        let n = backend.ejections.fetch_add(1, Ordering::Relaxed);
        let base = Duration::from_millis(self.config.base_ejection_ms);
        let window = base
            .saturating_mul(1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX))
            .min(Duration::from_millis(self.config.max_ejection_ms));
        backend.consecutive_failures.store(0, Ordering::Relaxed);
        backend.eject_until(now, window);
        eg_runtime::metrics::metrics()
            .backend_ejections_total
            .with_label_values(&[&self.pool, &backend.address])
            .inc();
        tracing::warn!(backend = %backend.address, ?window, "backend ejected after consecutive failures");
    }

    /// One more ejection stays within the cap and leaves one backend up.
    fn may_eject(&self, now: Instant) -> bool {
        let total = self.peers.len();
        let out = self
            .peers
            .iter()
            .filter(|b| b.ejected_for(now).is_some())
            .count();
        let available = self.peers.iter().filter(|b| b.is_available(now)).count();
        let cap = total * self.config.max_ejection_percent as usize / 100;
        available > 1 && out < cap.max(1).min(total.saturating_sub(1))
    }
}
