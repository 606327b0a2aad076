//! The one balancer every datapath calls: pools of backends, a policy that
//! picks among the eligible ones, per-backend live state (health, in-flight
//! count, latency) kept apart from selection so a pick never waits, and
//! passive plus active health that flip that state.
#![forbid(unsafe_code)]

mod backend;
pub mod hash;
pub mod health;
mod pick;
mod policy;
mod pool;
pub mod quic_lb;
mod retry;
mod rng;

pub use backend::{BackendLive, BackendState, Health};
pub use pick::{InFlight, Outcome, PickContext};
pub use pool::{backend_key, Pool};
pub use retry::{ActiveRequest, RetryBudget, RetryCounters, RetryPermit};
