//! Round robin over a precomputed weighted sequence: `blocks` visits each
//! backend `weight` times in a row (classic weighted round robin);
//! `smooth` interleaves them the way nginx's smooth WRR does. A pick is
//! one atomic increment.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::{scan_from, Eligible, Policy};
use crate::{BackendState, PickContext};

/// Longest sequence kept: weights are scaled down (keeping proportions to
/// within 1/65536) so 1000 backends of weight 10000 cost 256 KiB, not 40 MB.
const MAX_SEQUENCE: u64 = 65_536;

#[derive(Debug)]
pub(crate) struct Sequence {
    order: Vec<u32>,
    cursor: AtomicUsize,
}

fn scaled(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u32, |a, &w| gcd(a, w)).max(1);
    let reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w / g).max(1)).collect();
    let total: u64 = reduced.iter().sum();
    if total <= MAX_SEQUENCE {
        return reduced;
    }
    reduced
        .iter()
        .map(|&w| (w * MAX_SEQUENCE / total).max(1))
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Sequence {
    pub(crate) fn blocks(weights: &[u32]) -> Self {
        let order = scaled(weights)
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| std::iter::repeat_n(i as u32, w as usize))
            .collect();
        Self {
            order,
            cursor: AtomicUsize::new(0),
        }
    }

    pub(crate) fn smooth(weights: &[u32]) -> Self {
        let w = scaled(weights);
        let total: i64 = w.iter().map(|&x| x as i64).sum();
        let mut current = vec![0i64; w.len()];
        let mut order = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, &wi) in w.iter().enumerate() {
                current[i] += wi as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            order.push(best as u32);
        }
        Self {
            order,
            cursor: AtomicUsize::new(0),
        }
    }
}

impl Policy for Sequence {
    fn pick(
        &self,
        backends: &[Arc<BackendState>],
        _ctx: &PickContext<'_>,
        eligible: Eligible<'_>,
    ) -> Option<usize> {
        let len = self.order.len();
        if len == 0 {
            return None;
        }
        // A few steps along the sequence keep proportions among the
        // eligible; past that, any eligible backend will do.
        for _ in 0..backends.len().min(8) {
            let at = self.cursor.fetch_add(1, Ordering::Relaxed) % len;
            let i = *self.order.get(at)? as usize;
            if backends.get(i).is_some_and(|b| eligible(b)) {
                return Some(i);
            }
        }
        scan_from(backends, self.cursor.load(Ordering::Relaxed), eligible)
    }
}
