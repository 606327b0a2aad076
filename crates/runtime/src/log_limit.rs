//! Rate-limited warnings for failure modes a client can repeat at will
//! (dial failures, caps reached): one line per call site per interval,
//! carrying how many were suppressed since the last, so an attack costs
//! the log a line a second instead of a line a request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// At most one line per call site this often.
pub const LOG_INTERVAL_MS: u64 = 1000;

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One call site's budget.
pub struct Limiter {
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl Limiter {
    pub const fn new() -> Self {
        Self {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` when this one may go out.
    pub fn allow(&self) -> Option<u64> {
        let now = now_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + LOG_INTERVAL_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

/// `tracing::warn!`, at most once per [`LOG_INTERVAL_MS`] for this call
/// site, with a `suppressed` field counting the lines left out.
#[macro_export]
macro_rules! warn_limited {
    ($($arg:tt)+) => {{
        static LIMITER: $crate::log_limit::Limiter = $crate::log_limit::Limiter::new();
        if let Some(suppressed) = LIMITER.allow() {
            ::tracing::warn!(suppressed, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counts_the_rest() {
        let l = Limiter::new();
        assert_eq!(l.allow(), Some(0));
        for _ in 0..99 {
            assert_eq!(l.allow(), None);
        }
        l.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(l.allow(), Some(99));
    }
}
