//! Ring hash (Karger consistent hashing): each backend owns points on a
//! 64-bit ring in proportion to its weight; a key goes to the first point
//! at or after its hash, skipping backends that are out.

use std::sync::Arc;

use super::{key_of, Eligible, Policy};
use crate::hash::hash_bytes;
use crate::{BackendState, PickContext};

/// Points per unit of relative weight: 500 keeps each share within ~2 %
/// of its weight (the spread shrinks as 1/sqrt(points)).
const POINTS_PER_WEIGHT: u64 = 500;
/// Ring size cap: 8 MB of points at most, built in well under a second.
const MAX_POINTS: u64 = 500_000;

#[derive(Debug)]
pub(crate) struct Ring {
    points: Vec<(u64, u32)>,
}

impl Ring {
    pub(crate) fn new(backends: &[Arc<BackendState>]) -> Self {
        // Points exactly proportional to weight (2:3 stays 2:3), the
        // lightest backend getting POINTS_PER_WEIGHT, all scaled down
        // together to fit MAX_POINTS.
        let min_w = f64::from(backends.iter().map(|b| b.weight).min().unwrap_or(1).max(1));
        let per_unit = POINTS_PER_WEIGHT as f64 / min_w;
        let wanted: f64 = backends
            .iter()
            .map(|b| f64::from(b.weight) * per_unit)
            .sum();
        let scale = if wanted > MAX_POINTS as f64 {
            MAX_POINTS as f64 / wanted
        } else {
            1.0
        };
        let mut points = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let count = (f64::from(b.weight) * per_unit * scale).round().max(1.0) as u64;
            for v in 0..count {
                let h = hash_bytes(format!("{}#{v}", b.address).as_bytes());
                points.push((h, i as u32));
            }
        }
        points.sort_unstable();
        Self { points }
    }
}

/// Distinct backends refused so far during one ring walk.
struct Refused {
    seen: Vec<bool>,
    distinct: usize,
}

impl Refused {
    fn new(backends: usize) -> Self {
        Self {
            seen: Vec::new(),
            distinct: backends,
        }
    }

    /// Note `i` refused; `true` once every backend has been.
    fn add(&mut self, i: usize) -> bool {
        if self.seen.is_empty() {
            // Allocated only on this slow path: a refusal.
            self.seen = vec![false; self.distinct];
            self.distinct = 0;
        }
        if let Some(slot) = self.seen.get_mut(i) {
            if !*slot {
                *slot = true;
                self.distinct += 1;
            }
        }
        self.distinct >= self.seen.len()
    }
}

impl Policy for Ring {
    fn pick(
        &self,
        backends: &[Arc<BackendState>],
        ctx: &PickContext<'_>,
        eligible: Eligible<'_>,
    ) -> Option<usize> {
        let len = self.points.len();
        if len == 0 {
            return None;
        }
        let key = key_of(ctx);
        let start = self.points.partition_point(|(h, _)| *h < key);
        // Walk the ring from the key; once every backend has been seen and
        // refused, stop (without this an all-excluded pool scans every point).
        let mut refused = Refused::new(backends.len());
        for k in 0..len {
            let (_, i) = *self.points.get((start + k) % len)?;
            let i = i as usize;
            if backends.get(i).is_some_and(|b| eligible(b)) {
                return Some(i);
            }
            if refused.add(i) {
                return None;
            }
        }
        None
    }
}
