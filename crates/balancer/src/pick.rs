use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::health::passive::Outlier;
use crate::BackendState;

/// What a caller knows about the request or connection being placed.
#[derive(Debug, Default, Clone)]
pub struct PickContext<'a> {
    pub client_ip: Option<IpAddr>,
    /// Hash of the pool's configured key (header, cookie, connection ID);
    /// hash policies fall back to the client IP when absent.
    pub hash: Option<u64>,
    /// Backend id from a session-affinity cookie.
    pub affinity: Option<u64>,
    /// Backends already tried for this request (retries go elsewhere).
    pub exclude: &'a [usize],
}

/// How an exchange with a backend ended, for passive health and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Connect refused or timed out, reset, or timed out mid-exchange.
    Failure,
    /// A 5xx answer: a failure only where `eject_on_5xx` says so.
    ServerError,
}

/// A picked backend, counted in flight until dropped.
#[derive(Debug)]
pub struct InFlight {
    backend: Arc<BackendState>,
    outlier: Option<Arc<Outlier>>,
    started: Instant,
}

impl InFlight {
    pub(crate) fn new(
        backend: Arc<BackendState>,
        outlier: Option<Arc<Outlier>>,
        now: Instant,
    ) -> Self {
        backend.enter();
        Self {
            backend,
            outlier,
            started: now,
        }
    }

    pub fn backend(&self) -> &Arc<BackendState> {
        &self.backend
    }

    /// Report how the exchange went: feeds outlier detection and, on
    /// success, the latency estimate (failures count as a large latency).
    pub fn report(&self, outcome: Outcome) {
        let now = Instant::now();
        let latency = match outcome {
            Outcome::Success | Outcome::ServerError => now.saturating_duration_since(self.started),
            Outcome::Failure => FAILURE_LATENCY_PENALTY,
        };
        self.backend.observe_latency(latency, now);
        self.settle(outcome);
    }

    /// A response head arrived whose body is still to come: its latency
    /// counts now; whether the exchange succeeded is told by `settle` once
    /// the body has ended (a backend may still fail mid-body).
    pub fn head_arrived(&self) {
        let now = Instant::now();
        self.backend
            .observe_latency(now.saturating_duration_since(self.started), now);
    }

    /// Feed outlier detection alone (the latency was observed earlier).
    pub fn settle(&self, outcome: Outcome) {
        if let Some(outlier) = &self.outlier {
            outlier.record(&self.backend, outcome, Instant::now());
        }
    }
}

/// Latency charged to a backend for a failed exchange: larger than any
/// healthy response, so peak-EWMA steers away at once.
const FAILURE_LATENCY_PENALTY: Duration = Duration::from_secs(5);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.leave();
    }
}
