use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use eg_config::BackendProtocol;

use crate::hash::hash_bytes;

/// Health as selection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Skipped by every policy (failed checks, ejected, or drained by hand).
    Down,
}

/// One backend of a pool: what the config says of it, and its live state.
/// The live state is shared with the same backend in the generation a
/// reload replaces (see `Carry`), so health verdicts, ejections, drains,
/// latency and in-flight counts survive the reload.
#[derive(Debug)]
pub struct BackendState {
    /// `host:port` as configured.
    pub address: String,
    pub protocol: BackendProtocol,
    pub weight: u32,
    /// Index within the pool, stable for the pool's lifetime.
    pub index: usize,
    /// Stable identity (hash of the address): the session cookie value.
    pub id: u64,
    live: Arc<BackendLive>,
}

impl std::ops::Deref for BackendState {
    type Target = BackendLive;

    fn deref(&self) -> &BackendLive {
        &self.live
    }
}

/// A backend's live state. Every field is an atomic so selection never
/// takes a lock.
#[derive(Debug)]
pub struct BackendLive {
    /// Time origin for the millisecond stamps below.
    epoch: Instant,
    /// Active health checks' verdict.
    active_up: AtomicBool,
    /// Taken out by an operator (admin API).
    drained: AtomicBool,
    /// Passive health: ejected until this many ms after `epoch` (0: not).
    ejected_until_ms: AtomicU64,
    pub(crate) consecutive_failures: AtomicU32,
    pub(crate) consecutive_successes: AtomicU32,
    pub(crate) ejections: AtomicU32,
    /// When it last became eligible, in ms after `epoch` (slow start).
    up_since_ms: AtomicU64,
    in_flight: AtomicU64,
    /// Requests or connections ever given to this backend (the status
    /// page's rate is its change over time).
    picked: AtomicU64,
    /// Peak-EWMA latency in nanoseconds (f64 bits) and its last update.
    ewma_ns: AtomicU64,
    ewma_stamp_ms: AtomicU64,
    /// Active checks: passes and failures in a row (rise/fall progress),
    /// and when the next probe is due (ms after `epoch`; 0: none yet).
    /// Carried like the rest, so a reload neither resets the progress nor
    /// pushes the next probe a whole interval away (reloads more frequent
    /// than `interval_ms` would otherwise starve the checks).
    check_passes: AtomicU32,
    check_failures: AtomicU32,
    next_check_ms: AtomicU64,
    /// The one check runner that probes this backend (its token): a pool a
    /// reload kept (its listener could not be re-bound) and its successor
    /// share this state, and two runners would probe twice per interval
    /// and race on the rise/fall progress. The newest runner wins.
    check_owner: AtomicU64,
}

impl BackendState {
    pub(crate) fn new(
        index: usize,
        address: String,
        protocol: BackendProtocol,
        weight: u32,
        live: Arc<BackendLive>,
    ) -> Self {
        Self {
            id: hash_bytes(address.as_bytes()),
            address,
            protocol,
            weight: weight.max(1),
            index,
            live,
        }
    }
}

impl BackendLive {
    pub(crate) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            active_up: AtomicBool::new(true),
            drained: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            consecutive_successes: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            // Configured backends start at full weight, not in slow start.
            up_since_ms: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            picked: AtomicU64::new(0),
            ewma_ns: AtomicU64::new(0f64.to_bits()),
            ewma_stamp_ms: AtomicU64::new(0),
            check_passes: AtomicU32::new(0),
            check_failures: AtomicU32::new(0),
            next_check_ms: AtomicU64::new(0),
            check_owner: AtomicU64::new(0),
        }
    }

    pub(crate) fn ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Eligible for selection at `now`: checks pass, not ejected, not drained.
    pub fn is_available(&self, now: Instant) -> bool {
        self.active_up.load(Ordering::Relaxed)
            && !self.drained.load(Ordering::Relaxed)
            && self.ejected_until_ms.load(Ordering::Relaxed) <= self.ms(now)
    }

    pub fn health(&self) -> Health {
        if self.is_available(Instant::now()) {
            Health::Up
        } else {
            Health::Down
        }
    }

    /// Active health verdict (from the checker).
    pub fn set_active_up(&self, up: bool, now: Instant) {
        let was = self.active_up.swap(up, Ordering::Relaxed);
        if up && !was {
            self.up_since_ms
                .store(self.ms(now).max(1), Ordering::Relaxed);
        }
    }

    pub fn active_up(&self) -> bool {
        self.active_up.load(Ordering::Relaxed)
    }

    /// Active checks' rise/fall progress: (passes, failures) in a row.
    pub(crate) fn check_run(&self) -> (u32, u32) {
        (
            self.check_passes.load(Ordering::Relaxed),
            self.check_failures.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn set_check_run(&self, (passes, failures): (u32, u32)) {
        self.check_passes.store(passes, Ordering::Relaxed);
        self.check_failures.store(failures, Ordering::Relaxed);
    }

    /// Make the runner with `token` the one that probes this backend.
    pub(crate) fn claim_checks(&self, token: u64) {
        self.check_owner.store(token, Ordering::Relaxed);
    }

    /// Whether the runner with `token` still is the one (a newer runner
    /// for the same backend took over otherwise).
    pub(crate) fn checks_owned_by(&self, token: u64) -> bool {
        self.check_owner.load(Ordering::Relaxed) == token
    }

    /// How long until the next probe: what an earlier generation scheduled
    /// (now if that time has passed), or `otherwise` when none did; never
    /// more than `otherwise`.
    pub(crate) fn check_due_in(&self, now: Instant, otherwise: Duration) -> Duration {
        match self.next_check_ms.load(Ordering::Relaxed) {
            0 => otherwise,
            due => Duration::from_millis(due.saturating_sub(self.ms(now))).min(otherwise),
        }
    }

    pub(crate) fn set_check_due(&self, now: Instant, wait: Duration) {
        let due = self
            .ms(now)
            .saturating_add(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
        self.next_check_ms.store(due.max(1), Ordering::Relaxed);
    }

    /// Operator drain (`true`) or enable (`false`).
    pub fn set_drained(&self, drained: bool, now: Instant) {
        let was = self.drained.swap(drained, Ordering::Relaxed);
        if was && !drained {
            self.up_since_ms
                .store(self.ms(now).max(1), Ordering::Relaxed);
        }
    }

    pub fn is_drained(&self) -> bool {
        self.drained.load(Ordering::Relaxed)
    }

    /// Remaining passive ejection, if any.
    pub fn ejected_for(&self, now: Instant) -> Option<Duration> {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        let now_ms = self.ms(now);
        (until > now_ms).then(|| Duration::from_millis(until - now_ms))
    }

    pub(crate) fn eject_until(&self, now: Instant, for_how_long: Duration) {
        let until = self
            .ms(now)
            .saturating_add(u64::try_from(for_how_long.as_millis()).unwrap_or(u64::MAX));
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        // Back from ejection means a fresh slow start.
        self.up_since_ms.store(until.max(1), Ordering::Relaxed);
    }

    /// Fraction of full weight during slow start (1.0 when settled).
    pub fn ramp(&self, now: Instant, window: Duration) -> f64 {
        let since = self.up_since_ms.load(Ordering::Relaxed);
        if since == 0 || window.is_zero() {
            return 1.0;
        }
        let elapsed = self.ms(now).saturating_sub(since) as f64;
        (elapsed / window.as_millis() as f64).clamp(0.0, 1.0)
    }

    /// Requests or connections currently using this backend.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests or connections given to this backend so far.
    pub fn picked(&self) -> u64 {
        self.picked.load(Ordering::Relaxed)
    }

    pub(crate) fn enter(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.picked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Peak-EWMA latency estimate at `now`, in nanoseconds.
    pub fn ewma_ns(&self, now: Instant) -> f64 {
        let last = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let age = self
            .ms(now)
            .saturating_sub(self.ewma_stamp_ms.load(Ordering::Relaxed)) as f64;
        last * decay(age)
    }

    /// Fold one observed latency in: peaks are taken at once, then decay.
    pub fn observe_latency(&self, latency: Duration, now: Instant) {
        let sample = latency.as_nanos() as f64;
        let current = self.ewma_ns(now);
        let next = if sample > current {
            sample
        } else {
            current + (sample - current) * EWMA_WEIGHT
        };
        self.ewma_ns.store(next.to_bits(), Ordering::Relaxed);
        self.ewma_stamp_ms.store(self.ms(now), Ordering::Relaxed);
    }
}

/// Weight of a new sample below the current peak.
const EWMA_WEIGHT: f64 = 0.3;
/// Half-life of an unrefreshed peak: old slowness is forgiven within
/// seconds, as Finagle's peak EWMA does (its default decay is 10 s).
const EWMA_HALF_LIFE_MS: f64 = 5_000.0;

fn decay(age_ms: f64) -> f64 {
    (-age_ms * std::f64::consts::LN_2 / EWMA_HALF_LIFE_MS).exp()
}
