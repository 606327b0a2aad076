//! Services every listener shares: connection admission (per-IP and
//! in-flight caps), the startup report, metrics, and the drain signal.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admission;
pub mod metrics;
pub mod report;

pub use accept::{accept_loop, Labelled};
pub use admission::{Admission, Admitted, Refusal};
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;
