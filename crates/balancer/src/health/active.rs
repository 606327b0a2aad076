//! Active health checks: a background task per backend probes it every
//! `interval_ms` (with jitter), and `rise` successes or `fall` failures in
//! a row flip its verdict. The probe itself (TCP connect, HTTP GET, gRPC
//! health) is supplied by the caller, so this crate stays protocol-free.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use eg_config::HealthCheck;
use tokio::net::TcpStream;

use crate::{BackendState, Pool};

/// One probe of one backend: `true` when healthy.
pub trait Probe: Send + Sync + 'static {
    fn check<'a>(
        &'a self,
        backend: &'a BackendState,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// `kind = "tcp"`: the backend accepts a connection.
pub struct TcpProbe;

impl Probe for TcpProbe {
    fn check<'a>(
        &'a self,
        backend: &'a BackendState,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move { TcpStream::connect(&backend.address).await.is_ok() })
    }
}

/// Rise/fall bookkeeping (sans-io).
#[derive(Debug, Default)]
pub struct Verdicts {
    successes: u32,
    failures: u32,
}

impl Verdicts {
    /// Resume from (passes, failures) in a row.
    pub fn resume((successes, failures): (u32, u32)) -> Self {
        Self {
            successes,
            failures,
        }
    }

    /// (passes, failures) in a row.
    pub fn progress(&self) -> (u32, u32) {
        (self.successes, self.failures)
    }

    /// Fold one result in; returns the new verdict when it changes.
    pub fn record(&mut self, ok: bool, currently_up: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (!currently_up && self.successes >= rise).then_some(true)
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            (currently_up && self.failures >= fall).then_some(false)
        }
    }
}

/// Start checking every backend of `pool`. The tasks end by themselves
/// when the pool is dropped (replaced by a reload).
pub fn spawn(pool: &Arc<Pool>, probe: Arc<dyn Probe>) {
    let Some(spec) = pool.health_check.clone() else {
        return;
    };
    for index in 0..pool.backends().len() {
        tokio::spawn(run(
            Arc::downgrade(pool),
            index,
            Arc::clone(&probe),
            spec.clone(),
        ));
    }
}

async fn run(pool: Weak<Pool>, index: usize, probe: Arc<dyn Probe>, spec: HealthCheck) {
    let interval = Duration::from_millis(spec.interval_ms);
    let timeout = Duration::from_millis(spec.timeout_ms);
    let mut first = true;
    loop {
        let jitter =
            interval.mul_f64(f64::from(spec.jitter_percent) / 100.0 * crate::rng::next_f64());
        // The first probe of a generation comes when the one before had it
        // due, so back-to-back reloads do not keep postponing it.
        let wait = {
            let Some(pool) = pool.upgrade() else { return };
            let Some(backend) = pool.backends().get(index).cloned() else {
                return;
            };
            let now = Instant::now();
            let wait = if first {
                backend.check_due_in(now, interval + jitter)
            } else {
                interval + jitter
            };
            backend.set_check_due(now, wait);
            wait
        };
        first = false;
        tokio::time::sleep(wait).await;
        let Some(pool) = pool.upgrade() else { return };
        if pool.is_retired() {
            return;
        }
        let Some(backend) = pool.backends().get(index).cloned() else {
            return;
        };
        let ok = tokio::time::timeout(timeout, probe.check(&backend))
            .await
            .unwrap_or(false);
        // Rise/fall progress lives with the backend: it survives reloads.
        let mut verdicts = Verdicts::resume(backend.check_run());
        let verdict = verdicts.record(ok, backend.active_up(), spec.rise, spec.fall);
        backend.set_check_run(verdicts.progress());
        if let Some(up) = verdict {
            backend.set_active_up(up, Instant::now());
            if up {
                tracing::info!(pool = %pool.name, backend = %backend.address, "health check: backend up");
            } else {
                tracing::warn!(pool = %pool.name, backend = %backend.address, "health check: backend down");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rise_and_fall_thresholds() {
        let mut v = Verdicts::default();
        assert_eq!(v.record(false, true, 2, 3), None);
        assert_eq!(v.record(false, true, 2, 3), None);
        assert_eq!(v.record(false, true, 2, 3), Some(false));
        assert_eq!(v.record(true, false, 2, 3), None);
        assert_eq!(
            v.record(false, false, 2, 3),
            None,
            "a failure resets the rise count"
        );
        assert_eq!(v.record(true, false, 2, 3), None);
        assert_eq!(v.record(true, false, 2, 3), Some(true));
    }
}
