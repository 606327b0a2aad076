//! Retry budget: retries may use at most `budget_percent` of the requests
//! in flight, with a floor of `min_retries_per_second` so a quiet pool can
//! still retry. Caps retry storms when a whole pool degrades.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use eg_config::Retry;

#[derive(Debug)]
pub struct RetryBudget {
    pub config: Retry,
    counters: Arc<RetryCounters>,
}

/// A pool's budget accounting, carried across reloads (requests and
/// retries in flight in the old generation still count).
#[derive(Debug, Default)]
pub struct RetryCounters {
    active_requests: AtomicU64,
    active_retries: Arc<AtomicU64>,
    /// Retries started in the current second: `(second << 32) | count`.
    window: AtomicU64,
}

/// Held while a request is active in the pool.
#[derive(Debug)]
pub struct ActiveRequest<'a>(&'a AtomicU64);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held while a retry is in flight.
#[derive(Debug)]
pub struct RetryPermit(Arc<AtomicU64>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    pub fn new(config: Retry) -> Self {
        Self::with_counters(config, Arc::default())
    }

    pub fn with_counters(config: Retry, counters: Arc<RetryCounters>) -> Self {
        Self { config, counters }
    }

    pub fn enter(&self) -> ActiveRequest<'_> {
        self.counters
            .active_requests
            .fetch_add(1, Ordering::Relaxed);
        ActiveRequest(&self.counters.active_requests)
    }

    /// A permit for one more retry, or `None` when the budget is spent.
    pub fn try_retry(&self) -> Option<RetryPermit> {
        let active = self.counters.active_requests.load(Ordering::Relaxed);
        let allowed = active * u64::from(self.config.budget_percent) / 100;
        let retries = self.counters.active_retries.load(Ordering::Relaxed);
        if retries < allowed || self.take_floor() {
            self.counters.active_retries.fetch_add(1, Ordering::Relaxed);
            return Some(RetryPermit(Arc::clone(&self.counters.active_retries)));
        }
        None
    }

    fn take_floor(&self) -> bool {
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            & 0xffff_ffff;
        let floor = u64::from(self.config.min_retries_per_second);
        let mut cur = self.counters.window.load(Ordering::Relaxed);
        loop {
            let (sec, count) = (cur >> 32, cur & 0xffff_ffff);
            let next_count = if sec == second { count + 1 } else { 1 };
            if next_count > floor {
                return false;
            }
            match self.counters.window.compare_exchange_weak(
                cur,
                (second << 32) | next_count,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_then_ratio() {
        let b = RetryBudget::new(Retry {
            attempts: 2,
            on_status: vec![503],
            budget_percent: 50,
            min_retries_per_second: 2,
        });
        // Nothing active: only the floor allows retries.
        let p1 = b.try_retry().expect("floor 1");
        let p2 = b.try_retry().expect("floor 2");
        assert!(b.try_retry().is_none(), "floor spent");
        drop((p1, p2));
        let _active: Vec<_> = (0..10).map(|_| b.enter()).collect();
        let permits: Vec<_> = std::iter::from_fn(|| b.try_retry()).take(100).collect();
        assert_eq!(permits.len(), 5, "50 % of 10 active");
    }
}
