//! Metric names (a contract: prefix `expressgateway_`, units in the name)
//! and the process-wide registry. Label values are bounded: listener and
//! cluster names from config, fixed enums, never client input.

use std::sync::OnceLock;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    pub connections_active: IntGaugeVec,
    pub connections_total: IntCounterVec,
    pub defence_trips_total: IntCounterVec,
    pub backend_connect_total: IntCounterVec,
    pub config_reloads_total: IntCounterVec,
    pub cert_rotations_total: IntCounterVec,
    pub http_requests_total: IntCounterVec,
    pub http_request_duration_seconds: HistogramVec,
    pub backend_requests_total: IntCounterVec,
    pub retries_total: IntCounterVec,
    /// 1 while a backend can be picked (checks pass, not ejected, not
    /// drained); set from the live pools at each scrape.
    pub backend_up: IntGaugeVec,
    pub backend_ejections_total: IntCounterVec,
    /// Access-log lines dropped because the writer's queue was full.
    pub access_log_lines_dropped_total: prometheus::IntCounter,
    pub quic_retries_sent_total: IntCounterVec,
    /// HTTP/3 requests that arrived in 0-RTT early data, by what was done
    /// with them: `served` (a safe method, forwarded at once), `deferred`
    /// (held until the handshake completed), `refused` (the handshake
    /// never completed, so the held request was never forwarded).
    pub zero_rtt_requests_total: IntCounterVec,
    /// Resumption attempts on listeners with 0-RTT on: `resumed` (a
    /// session used for the first time) or `refused` (unknown or already
    /// used: a full handshake, no early data; replays land here).
    pub zero_rtt_resumptions_total: IntCounterVec,
    /// WebSocket tunnels relaying now, per listener.
    pub websockets_open: IntGaugeVec,
    /// Ended WebSockets by the close code that ended them (bucketed: a
    /// client picks any code, labels stay bounded).
    pub websocket_closes_total: IntCounterVec,
    /// Tasks alive in the async runtime, read at each scrape: the soak's
    /// leak signal for work that never ends.
    pub runtime_tasks_alive: prometheus::IntGauge,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new_custom(Some("expressgateway".into()), None)?;
    let connections_active = IntGaugeVec::new(
        Opts::new("connections_active", "Client connections open now"),
        &["listener"],
    )?;
    let connections_total = IntCounterVec::new(
        Opts::new("connections_total", "Client connections accepted"),
        &["listener"],
    )?;
    let defence_trips_total = IntCounterVec::new(
        Opts::new(
            "defence_trips_total",
            "Connections or requests refused by a defence",
        ),
        &["defence"],
    )?;
    let backend_connect_total = IntCounterVec::new(
        Opts::new(
            "backend_connect_total",
            "Upstream connection attempts by outcome",
        ),
        &["cluster", "backend", "outcome"],
    )?;
    let config_reloads_total = IntCounterVec::new(
        Opts::new("config_reloads_total", "SIGHUP reloads by result"),
        &["result"],
    )?;
    registry.register(Box::new(config_reloads_total.clone()))?;
    let cert_rotations_total = IntCounterVec::new(
        Opts::new(
            "cert_rotations_total",
            "SIGUSR1 certificate reloads by result",
        ),
        &["result"],
    )?;
    registry.register(Box::new(cert_rotations_total.clone()))?;
    let http_requests_total = IntCounterVec::new(
        Opts::new("http_requests_total", "HTTP requests answered"),
        &["listener", "route", "cluster", "protocol", "code_class"],
    )?;
    let http_request_duration_seconds = HistogramVec::new(
        HistogramOpts::new("http_request_duration_seconds", "Time to the response head"),
        &["listener", "protocol"],
    )?;
    let backend_requests_total = IntCounterVec::new(
        Opts::new(
            "backend_requests_total",
            "Requests sent to backends by outcome",
        ),
        &["cluster", "backend", "outcome"],
    )?;
    let retries_total = IntCounterVec::new(
        Opts::new("retries_total", "Requests retried on another backend"),
        &["cluster"],
    )?;
    registry.register(Box::new(http_requests_total.clone()))?;
    registry.register(Box::new(http_request_duration_seconds.clone()))?;
    registry.register(Box::new(backend_requests_total.clone()))?;
    registry.register(Box::new(retries_total.clone()))?;
    let backend_up = IntGaugeVec::new(
        Opts::new("backend_up", "1 while the backend can be picked, else 0"),
        &["cluster", "backend"],
    )?;
    let backend_ejections_total = IntCounterVec::new(
        Opts::new(
            "backend_ejections_total",
            "Passive-health ejections of the backend",
        ),
        &["cluster", "backend"],
    )?;
    registry.register(Box::new(backend_up.clone()))?;
    let access_log_lines_dropped_total = prometheus::IntCounter::new(
        "access_log_lines_dropped_total",
        "Access-log lines dropped: the writer's queue was full",
    )?;
    registry.register(Box::new(access_log_lines_dropped_total.clone()))?;
    registry.register(Box::new(backend_ejections_total.clone()))?;
    let quic_retries_sent_total = IntCounterVec::new(
        Opts::new(
            "quic_retries_sent_total",
            "QUIC Retry packets sent for address validation",
        ),
        &["listener"],
    )?;
    registry.register(Box::new(quic_retries_sent_total.clone()))?;
    let zero_rtt_requests_total = IntCounterVec::new(
        Opts::new(
            "zero_rtt_requests_total",
            "HTTP/3 requests received in 0-RTT early data, by outcome",
        ),
        &["listener", "outcome"],
    )?;
    registry.register(Box::new(zero_rtt_requests_total.clone()))?;
    let zero_rtt_resumptions_total = IntCounterVec::new(
        Opts::new(
            "zero_rtt_resumptions_total",
            "Resumptions on 0-RTT listeners: resumed, or refused (session unknown or used)",
        ),
        &["outcome"],
    )?;
    registry.register(Box::new(zero_rtt_resumptions_total.clone()))?;
    let websockets_open = IntGaugeVec::new(
        Opts::new("websockets_open", "WebSocket tunnels relaying now"),
        &["listener"],
    )?;
    registry.register(Box::new(websockets_open.clone()))?;
    let websocket_closes_total = IntCounterVec::new(
        Opts::new(
            "websocket_closes_total",
            "WebSockets ended, by the close code that ended them",
        ),
        &["listener", "code"],
    )?;
    registry.register(Box::new(websocket_closes_total.clone()))?;
    let runtime_tasks_alive = prometheus::IntGauge::new(
        "runtime_tasks_alive",
        "Tasks alive in the async runtime (connections, streams, probes)",
    )?;
    registry.register(Box::new(runtime_tasks_alive.clone()))?;
    registry.register(Box::new(connections_active.clone()))?;
    registry.register(Box::new(connections_total.clone()))?;
    registry.register(Box::new(defence_trips_total.clone()))?;
    registry.register(Box::new(backend_connect_total.clone()))?;
    Ok(Metrics {
        registry,
        connections_active,
        connections_total,
        defence_trips_total,
        backend_connect_total,
        config_reloads_total,
        cert_rotations_total,
        http_requests_total,
        http_request_duration_seconds,
        backend_requests_total,
        retries_total,
        backend_up,
        backend_ejections_total,
        access_log_lines_dropped_total,
        quic_retries_sent_total,
        zero_rtt_requests_total,
        zero_rtt_resumptions_total,
        websockets_open,
        websocket_closes_total,
        runtime_tasks_alive,
    })
}

/// The process-wide metrics. The definitions are fixed at compile time,
/// so failing to build them is a programming error caught by any test.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| build().expect("static metric definitions are valid"))
}

/// A backend as the running configuration has it, for `refresh_backends`.
pub struct BackendNow<'a> {
    pub cluster: &'a str,
    pub backend: &'a str,
    pub up: bool,
}

/// Set `backend_up` from the running pools, and delete every per-backend
/// series of backends no longer configured, so a removed backend's
/// figures do not linger (and the label sets stay as many as the config).
pub fn refresh_backends(current: &[BackendNow<'_>]) {
    let m = metrics();
    m.backend_up.reset();
    for b in current {
        m.backend_up
            .with_label_values(&[b.cluster, b.backend])
            .set(i64::from(b.up));
    }
    let configured: std::collections::HashSet<(&str, &str)> =
        current.iter().map(|b| (b.cluster, b.backend)).collect();
    let per_backend = [
        (
            &m.backend_connect_total,
            "expressgateway_backend_connect_total",
        ),
        (
            &m.backend_requests_total,
            "expressgateway_backend_requests_total",
        ),
        (
            &m.backend_ejections_total,
            "expressgateway_backend_ejections_total",
        ),
    ];
    let families = m.registry.gather();
    for (vec, name) in per_backend {
        let Some(family) = families.iter().find(|f| f.get_name() == name) else {
            continue;
        };
        for metric in family.get_metric() {
            let labels: std::collections::HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.get_name(), l.get_value()))
                .collect();
            let key = (
                labels.get("cluster").copied().unwrap_or_default(),
                labels.get("backend").copied().unwrap_or_default(),
            );
            if !configured.contains(&key) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// Prometheus text exposition of every registered metric.
pub fn render() -> String {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        let alive = i64::try_from(rt.metrics().num_alive_tasks()).unwrap_or(i64::MAX);
        metrics().runtime_tasks_alive.set(alive);
    }
    let families = metrics().registry.gather();
    prometheus::TextEncoder::new()
        .encode_to_string(&families)
        .unwrap_or_default()
}
