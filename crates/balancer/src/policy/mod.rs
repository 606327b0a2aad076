//! Selection policies, one file each, behind one trait. Each sees the
//! pool's backends and an eligibility test (available, not excluded) and
//! never blocks. Tables (sequences, Maglev, ring) are built with the pool,
//! never on the request path.

pub(crate) mod hashing;
mod least;
mod maglev;
mod random;
mod sequence;

use std::sync::Arc;

use eg_config::LbPolicy;

use crate::{BackendState, PickContext};

pub(crate) use maglev::Maglev;

/// Is the backend at this index a candidate for this pick?
pub(crate) type Eligible<'a> = &'a dyn Fn(&BackendState) -> bool;

pub(crate) trait Policy: Send + Sync + std::fmt::Debug {
    /// Index of the chosen backend, or `None` when none is eligible.
    fn pick(
        &self,
        backends: &[Arc<BackendState>],
        ctx: &PickContext<'_>,
        eligible: Eligible<'_>,
    ) -> Option<usize>;

    /// The Maglev lookup table (slot -> backend index), for planes that
    /// mirror the pick elsewhere (XDP); `None` for other policies.
    fn maglev_table(&self) -> Option<&[u32]> {
        None
    }
}

/// Build the policy for a pool. `maglev_table_size` is validated prime.
pub(crate) fn build(
    policy: LbPolicy,
    backends: &[Arc<BackendState>],
    maglev_table_size: u64,
) -> Box<dyn Policy> {
    let weights: Vec<u32> = backends.iter().map(|b| b.weight).collect();
    match policy {
        LbPolicy::RoundRobin => Box::new(sequence::Sequence::blocks(&weights)),
        LbPolicy::WeightedRoundRobin => Box::new(sequence::Sequence::smooth(&weights)),
        LbPolicy::Random | LbPolicy::WeightedRandom => {
            Box::new(random::WeightedRandom::new(&weights))
        }
        LbPolicy::LeastConnections | LbPolicy::LeastRequest => Box::new(least::Least),
        LbPolicy::P2c => Box::new(least::PowerOfTwo::new(&weights, least::Cost::InFlight)),
        LbPolicy::PeakEwma => Box::new(least::PowerOfTwo::new(&weights, least::Cost::PeakEwma)),
        LbPolicy::Maglev => Box::new(Maglev::new(backends, maglev_table_size)),
        LbPolicy::RingHash => Box::new(hashing::Ring::new(backends)),
        // The affinity cookie is honoured by the pool before the policy
        // runs; this is the fallback, chosen by the pool.
        LbPolicy::SessionAffinity => Box::new(sequence::Sequence::smooth(&weights)),
    }
}

/// Scan from `start` for the first eligible index: the bounded fallback
/// every policy uses when its first choice is not eligible.
pub(crate) fn scan_from(
    backends: &[Arc<BackendState>],
    start: usize,
    eligible: Eligible<'_>,
) -> Option<usize> {
    let n = backends.len();
    (0..n)
        .map(|i| start.wrapping_add(i) % n.max(1))
        .find(|i| backends.get(*i).is_some_and(|b| eligible(b)))
}

/// Hash key for hash policies: the configured key, else the client IP,
/// else a random value (no affinity possible).
pub(crate) fn key_of(ctx: &PickContext<'_>) -> u64 {
    match (ctx.hash, ctx.client_ip) {
        (Some(h), _) => h,
        (None, Some(ip)) => crate::hash::ip_key(ip),
        (None, None) => crate::rng::next_u64(),
    }
}
