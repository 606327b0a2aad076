//! The plane as the gateway drives it: attach at start, rewrite on
//! reload, follow backend health and drains in between, detach on drop.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::error::PlaneError;
use crate::plane::{Plane, Settings};
use crate::services::{Candidate, Plan};

/// How often backend eligibility (active and passive health, admin
/// drains) is copied to the kernel's backends map: the longest a new
/// kernel flow may still go to a backend userspace stopped picking. Each
/// tick compares in memory and writes only backends that changed.
pub const ELIGIBILITY_SYNC: Duration = Duration::from_millis(250);

struct State {
    plane: Plane,
    plan: Plan,
}

/// The running plane. Dropping the last handle detaches the program.
pub struct Controller {
    state: Arc<Mutex<State>>,
}

fn log_plan(plan: &Plan, interface: &str) {
    for s in &plan.services {
        tracing::info!(
            listener = %s.label,
            address = %s.local,
            backends = s.backends.len(),
            interface,
            "xdp: listener served in the kernel (new flows NATed to the maglev backend)"
        );
    }
    for (label, reason) in &plan.userspace {
        tracing::info!(listener = %label, reason = %reason, "xdp: listener stays in userspace");
    }
}

impl Controller {
    /// Load and attach the program, with no service yet (every packet
    /// passes), export its counters and start following backend health.
    /// Call from within a tokio runtime.
    pub fn attach(settings: &Settings) -> Result<Self, PlaneError> {
        let plane = Plane::attach(settings)?;
        tracing::info!(
            interface = %settings.interface,
            mode = settings.mode.as_str(),
            conntrack_entries = settings.conntrack_entries,
            "xdp: program attached (through a BPF link: it leaves with the process)"
        );
        crate::stats::export(Some(plane.stats()));
        let state = Arc::new(Mutex::new(State {
            plane,
            plan: Plan::default(),
        }));
        tokio::spawn(follow_health(Arc::downgrade(&state)));
        Ok(Self { state })
    }

    /// The kernel's flow table, for Mode A flows userspace installs.
    pub fn udp_flows(&self) -> Option<crate::UdpFlows> {
        self.state.lock().ok().map(|s| s.plane.udp_flows())
    }

    /// Serve `candidates` (at start once the listeners are bound, then
    /// the new generation's on every reload) with the live keys of
    /// `settings` (rate cap, idle timeout). Blocking work (a changed
    /// Maglev table is up to 65 537 map writes) runs off the async workers.
    pub async fn apply(&self, settings: Settings, candidates: Vec<Candidate>) {
        let state = Arc::clone(&self.state);
        let done = tokio::task::spawn_blocking(move || {
            let plan = Plan::new(candidates);
            let mut guard = state
                .lock()
                .map_err(|_| PlaneError::Object("state lock poisoned".into()))?;
            guard.plane.set_limits(&settings)?;
            if let Err(e) = guard.plane.apply(&plan, Instant::now()) {
                // The maps may mix two plans now: serve nothing in the
                // kernel (every SYN to userspace, which is right) until the
                // next apply rewrites everything, and stop the health sync
                // from writing the old plan's ranges over them.
                guard.plane.withdraw_services();
                guard.plan = Plan::default();
                return Err(e);
            }
            log_plan(&plan, guard.plane.interface());
            guard.plan = plan;
            Ok::<(), PlaneError>(())
        })
        .await;
        match done {
            Ok(Ok(())) => tracing::debug!("xdp: maps written"),
            Ok(Err(e)) => tracing::error!(error = %e, "xdp: rewriting the maps failed"),
            Err(e) => tracing::error!(error = %e, "xdp: rewriting the maps failed"),
        }
    }
}

/// How long the kernel must have forwarded nothing before a drain counts
/// its flows as done: a transfer in progress keeps packets moving; an idle
/// keep-alive connection would hold a drain for its whole budget otherwise.
pub const DRAIN_QUIET: Duration = Duration::from_secs(2);
/// How often a drain reads the kernel's forwarded-packet counter (one
/// per-CPU array read: no walk of the flow table, no lock Mode A needs).
const DRAIN_POLL: Duration = Duration::from_millis(250);

impl Controller {
    /// For a drain: new flows to userspace (whose listeners are closing),
    /// then wait until the kernel has forwarded no packet for
    /// `DRAIN_QUIET`, or until `by`. Kernel flows still open when the
    /// process exits are cut (the program leaves with it).
    pub async fn drain(&self, by: tokio::time::Instant) {
        let state = Arc::clone(&self.state);
        let stats = tokio::task::spawn_blocking(move || {
            let mut guard = state.lock().ok()?;
            guard.plane.withdraw_services();
            Some(guard.plane.stats())
        })
        .await
        .ok()
        .flatten();
        let Some(stats) = stats else {
            return;
        };
        let forwarded = || crate::stats::read(&stats).forwarded_packets;
        let (mut last, mut quiet_since) = (forwarded(), tokio::time::Instant::now());
        loop {
            let now = tokio::time::Instant::now();
            if now.duration_since(quiet_since) >= DRAIN_QUIET {
                return;
            }
            if now + DRAIN_POLL > by {
                tracing::warn!(
                    "xdp: drain budget spent; kernel flows still forwarding are cut at exit"
                );
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
            let seen = forwarded();
            if seen != last {
                (last, quiet_since) = (seen, tokio::time::Instant::now());
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        crate::stats::export(None);
    }
}

/// Copy eligibility to the kernel every `ELIGIBILITY_SYNC` until the
/// plane is gone.
async fn follow_health(state: Weak<Mutex<State>>) {
    let mut tick = tokio::time::interval(ELIGIBILITY_SYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        // Never block a runtime worker: while a reload writes the maps
        // (up to 65 537 slots per changed table, off the workers) this
        // tick is skipped; the next one catches up.
        let mut guard = match state.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => continue,
            Err(std::sync::TryLockError::Poisoned(_)) => return,
        };
        let State { plane, plan } = &mut *guard;
        match plane.sync_eligibility(plan, Instant::now()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(backends = n, "xdp: backend eligibility written"),
            Err(e) => tracing::warn!(error = %e, "xdp: writing backend eligibility failed"),
        }
    }
}
