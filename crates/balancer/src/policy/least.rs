//! Load-aware policies: exact least in-flight (a full scan), and power of
//! two choices on in-flight load or on peak-EWMA latency x load.

use std::sync::Arc;
use std::time::Instant;

use super::random::WeightedRandom;
use super::{scan_from, Eligible, Policy};
use crate::{BackendState, PickContext};

/// `least_connections` / `least_request`: the eligible backend with the
/// lowest in-flight count per unit of weight; ties go to a random start so
/// idle pools still spread. O(n): exactness needs every count.
#[derive(Debug)]
pub(crate) struct Least;

fn load(b: &BackendState) -> f64 {
    (b.in_flight() as f64 + 1.0) / f64::from(b.weight)
}

impl Policy for Least {
    fn pick(
        &self,
        backends: &[Arc<BackendState>],
        _ctx: &PickContext<'_>,
        eligible: Eligible<'_>,
    ) -> Option<usize> {
        let n = backends.len();
        let start = crate::rng::next_u64() as usize % n.max(1);
        let mut best: Option<(usize, f64)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let Some(b) = backends.get(i) else { continue };
            if !eligible(b) {
                continue;
            }
            let l = load(b);
            if best.is_none_or(|(_, bl)| l < bl) {
                best = Some((i, l));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Cost {
    InFlight,
    /// Latency estimate x (in flight + 1) / weight (Finagle's peak EWMA).
    PeakEwma,
}

/// Two weighted random candidates; the cheaper wins. Never picks the more
/// loaded of the two.
#[derive(Debug)]
pub(crate) struct PowerOfTwo {
    draw: WeightedRandom,
    cost: Cost,
}

impl PowerOfTwo {
    pub(crate) fn new(weights: &[u32], cost: Cost) -> Self {
        Self {
            draw: WeightedRandom::new(weights),
            cost,
        }
    }

    fn cost(&self, b: &BackendState, now: Instant) -> f64 {
        match self.cost {
            Cost::InFlight => load(b),
            // An unmeasured backend costs 1 ns so it gets tried.
            Cost::PeakEwma => b.ewma_ns(now).max(1.0) * load(b),
        }
    }

    fn candidate(
        &self,
        backends: &[Arc<BackendState>],
        eligible: Eligible<'_>,
        not: Option<usize>,
    ) -> Option<usize> {
        for _ in 0..4 {
            let i = self.draw.draw()?;
            if Some(i) != not && backends.get(i).is_some_and(|b| eligible(b)) {
                return Some(i);
            }
        }
        let start = self.draw.draw()?;
        scan_from(backends, start, &|b: &BackendState| {
            Some(b.index) != not && eligible(b)
        })
    }
}

impl Policy for PowerOfTwo {
    fn pick(
        &self,
        backends: &[Arc<BackendState>],
        _ctx: &PickContext<'_>,
        eligible: Eligible<'_>,
    ) -> Option<usize> {
        let a = self.candidate(backends, eligible, None)?;
        let Some(b) = self.candidate(backends, eligible, Some(a)) else {
            return Some(a);
        };
        let now = Instant::now();
        let (ca, cb) = match (backends.get(a), backends.get(b)) {
            (Some(x), Some(y)) => (self.cost(x, now), self.cost(y, now)),
            _ => return Some(a),
        };
        Some(if cb < ca { b } else { a })
    }
}
