use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Policy;
use crate::{BackendState, PickContext};

/// Plain rotation; skips ineligible backends without losing its place.
#[derive(Debug, Default)]
pub(crate) struct RoundRobin {
    next: AtomicUsize,
}

impl Policy for RoundRobin {
    fn pick(
        &self,
        backends: &[Arc<BackendState>],
        _ctx: &PickContext<'_>,
        eligible: &dyn Fn(&BackendState) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|offset| start.wrapping_add(offset) % n)
            .find(|i| backends.get(*i).is_some_and(|b| eligible(b)))
    }
}
