//! Selection policies. Each sees the pool's backends and an eligibility
//! test (healthy, not excluded) and never blocks.

mod round_robin;

pub(crate) use round_robin::RoundRobin;

use crate::{BackendState, PickContext};
use std::sync::Arc;

pub(crate) trait Policy: Send + Sync + std::fmt::Debug {
    /// Index of the chosen backend among `backends`, or `None` when no
    /// backend is eligible.
    fn pick(
        &self,
        backends: &[Arc<BackendState>],
        ctx: &PickContext<'_>,
        eligible: &dyn Fn(&BackendState) -> bool,
    ) -> Option<usize>;
}
