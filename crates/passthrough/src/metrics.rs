//! Mode A's metrics, registered in the process registry
//! (`eg_runtime::metrics`) so `/metrics` shows them with the rest. Label
//! values are fixed words from this crate, never peer input.

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

pub struct Metrics {
    /// Flows in the table now.
    pub flows_active: IntGauge,
    /// Flow events: placed, replaced (moved before its backend answered),
    /// quic_lb (placed statelessly from a QUIC-LB server ID), evicted,
    /// reaped (idle), failed (no backend answered), refused_* (a bound).
    pub flows_total: IntCounterVec,
    /// Datagrams dropped, by reason.
    pub dropped_total: IntCounterVec,
    /// Datagrams forwarded, by direction (the two series resolved once:
    /// a label lookup per datagram would cost more than the count).
    pub to_backend: IntCounter,
    pub to_client: IntCounter,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = &eg_runtime::metrics::metrics().registry;
    let flows_active = IntGauge::new(
        "passthrough_flows_active",
        "QUIC flows in the Mode A flow table now",
    )?;
    let flows_total = IntCounterVec::new(
        Opts::new("passthrough_flows_total", "Mode A flow events"),
        &["event"],
    )?;
    let dropped_total = IntCounterVec::new(
        Opts::new(
            "passthrough_datagrams_dropped_total",
            "Datagrams Mode A dropped, by reason",
        ),
        &["reason"],
    )?;
    let datagrams_total = IntCounterVec::new(
        Opts::new(
            "passthrough_datagrams_total",
            "Datagrams Mode A forwarded, by direction",
        ),
        &["direction"],
    )?;
    registry.register(Box::new(flows_active.clone()))?;
    registry.register(Box::new(flows_total.clone()))?;
    registry.register(Box::new(dropped_total.clone()))?;
    registry.register(Box::new(datagrams_total.clone()))?;
    Ok(Metrics {
        flows_active,
        flows_total,
        dropped_total,
        to_backend: datagrams_total.with_label_values(&["to_backend"]),
        to_client: datagrams_total.with_label_values(&["to_client"]),
    })
}

/// The metrics; fixed definitions, so building them cannot fail but by a
/// programming error any test catches.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| build().expect("static metric definitions are valid"))
}

pub fn drop(reason: &'static str) {
    metrics().dropped_total.with_label_values(&[reason]).inc();
}

pub fn flow_event(event: &'static str) {
    metrics().flows_total.with_label_values(&[event]).inc();
}
