//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted: each
//! backend fills lookup-table slots along its own permutation, at a rate
//! proportional to its weight. Built once per backend set; a lookup is
//! one index.

use std::sync::Arc;

use super::{key_of, scan_from, Eligible, Policy};
use crate::hash::{hash_bytes, mix};
use crate::{BackendState, PickContext};

/// Deterministic re-probes when a key's backend is out, before scanning.
/// Each probe lands on a backend with probability equal to its share.
const PROBES: u64 = 16;

#[derive(Debug)]
pub(crate) struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// `size` must be prime (validated in config) and larger than the
    /// number of backends.
    pub(crate) fn new(backends: &[Arc<BackendState>], size: u64) -> Self {
        Self {
            table: build_table(backends, size),
        }
    }

    /// The backend index for a hash, ignoring health.
    pub(crate) fn lookup(&self, key: u64) -> Option<usize> {
        let len = self.table.len() as u64;
        if len == 0 {
            return None;
        }
        self.table.get((key % len) as usize).map(|&i| i as usize)
    }
}

fn build_table(backends: &[Arc<BackendState>], size: u64) -> Vec<u32> {
    let n = backends.len();
    if n == 0 || size < 2 {
        return Vec::new();
    }
    let m = size;
    let max_w = backends.iter().map(|b| b.weight).max().unwrap_or(1).max(1) as f64;
    let perms: Vec<(u64, u64)> = backends
        .iter()
        .map(|b| {
            let h = hash_bytes(b.address.as_bytes());
            let offset = h % m;
            let skip = mix(h ^ 0x9e37_79b9_7f4a_7c15) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0u64; n];
    let mut credit = vec![0f64; n];
    let mut table = vec![u32::MAX; m as usize];
    let mut filled = 0u64;
    while filled < m {
        for (i, b) in backends.iter().enumerate() {
            credit[i] += f64::from(b.weight) / max_w;
            while credit[i] >= 1.0 && filled < m {
                credit[i] -= 1.0;
                let (offset, skip) = perms[i];
                // Walk this backend's permutation to its next free slot.
                loop {
                    let slot = ((offset + next[i] * skip) % m) as usize;
                    next[i] += 1;
                    if table[slot] == u32::MAX {
                        table[slot] = i as u32;
                        filled += 1;
                        break;
                    }
                }
            }
        }
    }
    table
}

impl Policy for Maglev {
    fn pick(
        &self,
        backends: &[Arc<BackendState>],
        ctx: &PickContext<'_>,
        eligible: Eligible<'_>,
    ) -> Option<usize> {
        let key = key_of(ctx);
        for probe in 0..=PROBES {
            let h = if probe == 0 {
                key
            } else {
                mix(key.wrapping_add(probe))
            };
            let i = self.lookup(h)?;
            if backends.get(i).is_some_and(|b| eligible(b)) {
                return Some(i);
            }
        }
        scan_from(
            backends,
            (key % backends.len().max(1) as u64) as usize,
            eligible,
        )
    }

    fn maglev_table(&self) -> Option<&[u32]> {
        Some(&self.table)
    }
}
