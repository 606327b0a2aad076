//! The one balancer every datapath calls: pools of backends, a policy that
//! picks among the eligible ones, and per-backend live state (health,
//! in-flight count) kept apart from selection so a pick never waits.
#![forbid(unsafe_code)]

mod backend;
mod pick;
mod policy;
mod pool;

pub use backend::{BackendState, Health};
pub use pick::{InFlight, PickContext};
pub use pool::Pool;
