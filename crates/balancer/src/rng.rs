//! A per-thread fast RNG for picks: selection needs spread, not secrecy,
//! and `thread_rng`'s ChaCha costs more than the rest of a pick.

use std::cell::RefCell;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

thread_local! {
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_entropy());
}

pub(crate) fn next_u64() -> u64 {
    RNG.with(|r| r.borrow_mut().gen())
}

/// Uniform in [0, 1).
pub(crate) fn next_f64() -> f64 {
    RNG.with(|r| r.borrow_mut().gen())
}
