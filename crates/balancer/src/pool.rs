use std::sync::Arc;
use std::time::{Duration, Instant};

use eg_config::{Backend, BackendProtocol, HashKey, HealthCheck, LbPolicy, PoolSpec};
use eg_runtime::Carry;

use crate::backend::BackendLive;
use crate::health::passive::Outlier;
use crate::policy::{self, Policy};
use crate::retry::{RetryBudget, RetryCounters};
use crate::{BackendState, InFlight, PickContext};

/// A named set of backends and the policy that chooses among them.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub policy_name: LbPolicy,
    /// What hash policies hash; callers compute `PickContext::hash` from it.
    pub hash_key: Option<HashKey>,
    pub health_check: Option<HealthCheck>,
    /// Cookie name when the policy is `session_affinity`.
    pub affinity_cookie: Option<(String, u64)>,
    /// Retry settings and budget (the defaults when not configured).
    pub retry: RetryBudget,
    backends: Vec<Arc<BackendState>>,
    policy: Box<dyn Policy>,
    outlier: Option<Arc<Outlier>>,
    slow_start: Option<Duration>,
    /// A newer generation replaced this pool: its health checks stop (the
    /// new pool's run against the same shared backend state), though
    /// connections opened before the reload may still hold it.
    retired: std::sync::atomic::AtomicBool,
}

impl Pool {
    /// Build from config; `default_protocol` applies to backends that do
    /// not name one (tcp on L4 listeners, h1 on HTTP listeners). Passive
    /// health is on with the default thresholds unless configured.
    pub fn new(spec: &PoolSpec, default_protocol: BackendProtocol) -> Self {
        Self::carrying(spec, default_protocol, &Carry::default())
    }

    /// As `new`, taking each backend's live state (and the retry budget's
    /// accounting) from the generation `carry` remembers, when it is the
    /// same backend of the same pool.
    pub fn carrying(spec: &PoolSpec, default_protocol: BackendProtocol, carry: &Carry) -> Self {
        let epoch = Instant::now();
        let backends: Vec<Arc<BackendState>> = spec
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let protocol = b.protocol.unwrap_or(default_protocol);
                let live = carry.get_or_make(backend_key(&spec.name, b, protocol), || {
                    BackendLive::new(epoch)
                });
                Arc::new(BackendState::new(
                    i,
                    b.address.clone(),
                    protocol,
                    b.weight,
                    live,
                ))
            })
            .collect();
        let retry = spec.retry.clone().unwrap_or_default();
        let counters =
            carry.get_or_make(format!("{}\0{retry:?}", spec.name), RetryCounters::default);
        let affinity = (spec.lb_policy == LbPolicy::SessionAffinity)
            .then(|| spec.session_affinity.clone().unwrap_or_default());
        let effective = affinity.as_ref().map_or(spec.lb_policy, |a| a.fallback);
        let policy = policy::build(effective, &backends, spec.maglev_table_size);
        let outlier = Outlier::new(
            spec.name.clone(),
            spec.outlier_detection.clone().unwrap_or_default(),
            backends.clone(),
        );
        Self {
            name: spec.name.clone(),
            policy_name: spec.lb_policy,
            hash_key: spec.hash_key.clone(),
            health_check: spec.health_check.clone(),
            affinity_cookie: affinity.map(|a| (a.cookie_name, a.cookie_ttl_seconds)),
            retry: RetryBudget::with_counters(retry, counters),
            policy,
            outlier: Some(Arc::new(outlier)),
            slow_start: spec
                .slow_start
                .as_ref()
                .map(|s| Duration::from_millis(s.window_ms)),
            backends,
            retired: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Stop this generation's health checks (a reload replaced it).
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The slow-start window, when configured.
    pub fn slow_start(&self) -> Option<Duration> {
        self.slow_start
    }

    pub fn backends(&self) -> &[Arc<BackendState>] {
        &self.backends
    }

    /// The table the Maglev policy built (slot -> index in `backends()`),
    /// so another plane (XDP) can repeat its pick exactly: for a key
    /// (`hash::ip_key` of the client IP), slot `key % len`; while that
    /// backend is not eligible, `mix(key + p) % len` for p in 1..=16; then
    /// the first eligible backend from `key % backends().len()` on. `None`
    /// unless the policy (or session affinity's fallback) is maglev. With
    /// slow start configured the pool's own picks are randomised while a
    /// backend ramps, which no table can mirror.
    pub fn maglev_table(&self) -> Option<&[u32]> {
        self.policy.maglev_table()
    }

    /// Find a backend by its configured address.
    pub fn backend(&self, address: &str) -> Option<&Arc<BackendState>> {
        self.backends.iter().find(|b| b.address == address)
    }

    /// Choose an available backend not in `ctx.exclude`; it counts as in
    /// flight until the returned guard drops.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<InFlight> {
        self.pick_at(ctx, Instant::now())
    }

    pub fn pick_at(&self, ctx: &PickContext<'_>, now: Instant) -> Option<InFlight> {
        let base = |b: &BackendState| b.is_available(now) && !ctx.exclude.contains(&b.index);
        if let (Some(_), Some(id)) = (&self.affinity_cookie, ctx.affinity) {
            if let Some(b) = self.backends.iter().find(|b| b.id == id && base(b)) {
                return Some(self.guard(b, now));
            }
        }
        let i = match self.slow_start {
            // A ramping backend is considered with probability equal to
            // its ramp, so its share grows smoothly over the window; if
            // that leaves nothing, any available backend will do.
            Some(window) => {
                let ramped = |b: &BackendState| {
                    base(b) && crate::rng::next_f64() < b.ramp(now, window).max(MIN_RAMP)
                };
                self.policy
                    .pick(&self.backends, ctx, &ramped)
                    .or_else(|| self.policy.pick(&self.backends, ctx, &base))
            }
            None => self.policy.pick(&self.backends, ctx, &base),
        }?;
        self.backends.get(i).map(|b| self.guard(b, now))
    }

    /// Count a flow on the backend at `index`, chosen by the caller rather
    /// than the policy (a QUIC-LB server ID names it), whatever its health:
    /// the connection already lives there.
    pub fn hold(&self, index: usize) -> Option<InFlight> {
        self.backends
            .get(index)
            .map(|b| self.guard(b, Instant::now()))
    }

    /// Connection-level failover shared by the raw datapaths: pick a
    /// backend, `dial` it, and on failure move to another (each at most
    /// once). Every failed attempt feeds passive health; `dial`'s error is
    /// the outcome label it counted. A connect is not yet a success: the
    /// caller `settle`s the backend's outcome when the connection ends, so
    /// a backend that fails after the dial (resets every relay) is ejected.
    pub async fn dial_first<T, F, Fut>(
        &self,
        client_ip: Option<std::net::IpAddr>,
        mut dial: F,
    ) -> Option<(InFlight, T)>
    where
        F: FnMut(Arc<BackendState>) -> Fut,
        Fut: std::future::Future<Output = Result<T, &'static str>>,
    {
        let mut tried = Vec::with_capacity(self.backends.len());
        while tried.len() < self.backends.len() {
            let ctx = PickContext {
                client_ip,
                exclude: &tried,
                ..Default::default()
            };
            let picked = self.pick(&ctx)?;
            let backend = Arc::clone(picked.backend());
            match dial(Arc::clone(&backend)).await {
                Ok(value) => {
                    picked.head_arrived();
                    return Some((picked, value));
                }
                Err(_) => {
                    picked.report(crate::Outcome::Failure);
                    tried.push(backend.index);
                }
            }
        }
        None
    }

    /// `now` is the pick's own clock reading: one `Instant::now()` per pick.
    fn guard(&self, b: &Arc<BackendState>, now: Instant) -> InFlight {
        InFlight::new(Arc::clone(b), self.outlier.clone(), now)
    }
}

/// What makes a backend the same one across a reload: its pool, address,
/// protocol and TLS settings (not its weight, which a reload may change).
pub fn backend_key(pool: &str, b: &Backend, protocol: BackendProtocol) -> String {
    format!(
        "{pool}\0{}\0{}\0{}\0{:?}\0{:?}\0{}\0{:?}",
        b.address,
        protocol.as_str(),
        b.tls,
        b.tls_ca_path,
        b.tls_verify_hostname,
        b.tls_verify_peer,
        b.sni
    )
}

/// Share a backend gets at the very start of slow start: enough to learn
/// it is healthy, small enough not to flood a cold cache.
const MIN_RAMP: f64 = 0.05;

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
