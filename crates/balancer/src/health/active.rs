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
    /// Runner tokens, unique for the life of the process (0: none yet).
    static RUNNERS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let token = RUNNERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
            if first {
                backend.claim_checks(token);
            } else if !backend.checks_owned_by(token) {
                return;
            }
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
        if !backend.checks_owned_by(token) {
            return;
        }
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting(AtomicUsize);

    impl Probe for Counting {
        fn check<'a>(
            &'a self,
            _backend: &'a BackendState,
        ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { false })
        }
    }

    /// A pool a reload kept and its successor share their backends'
    /// state (one `Carry`): only the newer runner may probe.
    #[tokio::test]
    async fn pools_sharing_a_backend_probe_it_once_per_interval() {
        let text = "[[listeners]]\naddress=\"127.0.0.1:0\"\nprotocol=\"h1\"\n\
            [[listeners.routes]]\ncluster=\"c\"\n[[clusters]]\nname=\"c\"\n\
            [clusters.health_check]\nkind=\"tcp\"\ninterval_ms=100\ntimeout_ms=50\nfall=100\n\
            [[clusters.backends]]\naddress=\"10.0.0.1:80\"\n";
        let config = eg_config::Config::from_toml(text).expect("valid config");
        let spec = config.clusters[0].pool();
        let carry = eg_runtime::Carry::default();
        let old = Arc::new(Pool::carrying(
            &spec,
            eg_config::BackendProtocol::H1,
            &carry,
        ));
        let probe = Arc::new(Counting(AtomicUsize::new(0)));
        spawn(&old, Arc::clone(&probe) as Arc<dyn Probe>);
        tokio::time::sleep(Duration::from_millis(10)).await;
        let new = Arc::new(Pool::carrying(
            &spec,
            eg_config::BackendProtocol::H1,
            &carry,
        ));
        spawn(&new, Arc::clone(&probe) as Arc<dyn Probe>);
        // Ten intervals: one runner probes at most once per 100-110 ms
        // (jitter), so at most 10 times; two would make about 20. A slow
        // machine only makes fewer.
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        let probes = probe.0.load(Ordering::SeqCst);
        assert!(
            (1..=11).contains(&probes),
            "{probes} probes in 10.5 intervals"
        );
        drop((old, new));
    }

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
