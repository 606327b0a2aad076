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
        let min_w = backends.iter().map(|b| b.weight).min().unwrap_or(1).max(1);
        let wanted: u64 = backends
            .iter()
            .map(|b| u64::from(b.weight / min_w) * POINTS_PER_WEIGHT)
            .sum();
        let scale = if wanted > MAX_POINTS {
            MAX_POINTS as f64 / wanted as f64
        } else {
            1.0
        };
        let mut points = Vec::new();
        for (i, b) in backends.iter().enumerate() {
            let count =
                ((u64::from(b.weight / min_w) * POINTS_PER_WEIGHT) as f64 * scale).max(1.0) as u64;
            for v in 0..count {
                let h = hash_bytes(format!("{}#{v}", b.address).as_bytes());
                points.push((h, i as u32));
            }
        }
        points.sort_unstable();
        Self { points }
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
        (0..len).find_map(|k| {
            let (_, i) = *self.points.get((start + k) % len)?;
            let i = i as usize;
            backends.get(i).is_some_and(|b| eligible(b)).then_some(i)
        })
    }
}
