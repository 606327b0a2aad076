//! Pools of backends: `[[clusters]]` and a listener's own default pool.

use std::path::PathBuf;

use serde::Deserialize;

/// Maglev lookup table size: a prime well above 100 x the largest pool we
/// expect, which keeps each backend's share within ~1 % of ideal.
pub const DEFAULT_MAGLEV_TABLE_SIZE: u64 = 65_537;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    Random,
    WeightedRandom,
    LeastConnections,
    LeastRequest,
    P2c,
    Maglev,
    RingHash,
    PeakEwma,
    SessionAffinity,
}

impl LbPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::WeightedRoundRobin => "weighted_round_robin",
            Self::Random => "random",
            Self::WeightedRandom => "weighted_random",
            Self::LeastConnections => "least_connections",
            Self::LeastRequest => "least_request",
            Self::P2c => "p2c",
            Self::Maglev => "maglev",
            Self::RingHash => "ring_hash",
            Self::PeakEwma => "peak_ewma",
            Self::SessionAffinity => "session_affinity",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashSource {
    Ip,
    Header,
    Cookie,
    /// QUIC destination connection ID (Mode A).
    Cid,
}

/// What a hash policy (maglev, ring_hash) hashes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashKey {
    pub source: HashSource,
    /// Header or cookie name; required for those sources.
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    Tcp,
    H1,
    H2,
    H3,
}

impl BackendProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }
}

/// `tls_verify_hostname`: `true`/`false`, or the name to verify instead of
/// the host part of `address`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum VerifyHostname {
    Enabled(bool),
    Name(String),
}

impl Default for VerifyHostname {
    fn default() -> Self {
        Self::Enabled(true)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// `host:port`; the host may be a name, re-resolved in the background.
    pub address: String,
    /// Default: `tcp` on L4 listeners, `h1` on HTTP listeners.
    pub protocol: Option<BackendProtocol>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// TLS to this backend (always on for h3).
    #[serde(default)]
    pub tls: bool,
    pub tls_ca_path: Option<PathBuf>,
    #[serde(default)]
    pub tls_verify_hostname: VerifyHostname,
    #[serde(default = "yes")]
    pub tls_verify_peer: bool,
    /// TLS server name to send; default the host part of `address`.
    pub sni: Option<String>,
}

fn default_weight() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// Largest weight: keeps smooth-WRR sums and Maglev fill far from overflow.
pub const MAX_WEIGHT: u32 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    Tcp,
    Http,
    Https,
    Grpc,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    pub kind: HealthCheckKind,
    pub path: String,
    pub method: String,
    /// Host header for http(s) checks; default the backend address.
    pub host: Option<String>,
    /// Comma-separated codes and ranges, e.g. `"200-399"` or `"200,204"`.
    pub expected_status: String,
    /// gRPC service name for `grpc.health.v1` (empty: the whole server).
    pub grpc_service: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Random spread added to each interval so checks do not align.
    pub jitter_percent: u32,
    pub rise: u32,
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            kind: HealthCheckKind::Tcp,
            path: "/healthz".to_owned(),
            method: "GET".to_owned(),
            host: None,
            expected_status: "200-399".to_owned(),
            grpc_service: String::new(),
            interval_ms: 2000,
            timeout_ms: 1000,
            jitter_percent: 10,
            rise: 2,
            fall: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    pub consecutive_failures: u32,
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    pub max_ejection_percent: u32,
    pub eject_on_5xx: bool,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
            eject_on_5xx: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowStart {
    pub window_ms: u64,
}

impl Default for SlowStart {
    fn default() -> Self {
        Self { window_ms: 30_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retry {
    /// Extra tries, each on another backend.
    pub attempts: u32,
    /// Statuses that trigger a retry of an idempotent request.
    pub on_status: Vec<u16>,
    pub budget_percent: u32,
    pub min_retries_per_second: u32,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 2,
            on_status: vec![502, 503],
            budget_percent: 20,
            min_retries_per_second: 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionAffinity {
    pub cookie_name: String,
    pub cookie_ttl_seconds: u64,
    /// Policy for requests without a valid cookie.
    pub fallback: LbPolicy,
}

impl Default for SessionAffinity {
    fn default() -> Self {
        Self {
            cookie_name: "eg_affinity".to_owned(),
            cookie_ttl_seconds: 3600,
            fallback: LbPolicy::RoundRobin,
        }
    }
}

/// `[clusters.circuit_breaker]` / `[listeners.circuit_breaker]`: upstream
/// caps of an HTTP pool. A request that finds its backend at a cap waits in
/// the pool's bounded FIFO up to `connect_timeout_ms`, then gets 503.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// Open upstream connections per backend (idle pooled ones included).
    pub max_connections: u32,
    /// Concurrent requests per backend.
    pub max_requests: u32,
    /// Requests waiting for a slot, per pool; beyond it 503 at once.
    pub max_pending_requests: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_requests: 1024,
            max_pending_requests: 1024,
        }
    }
}

/// `[clusters.connection_pool]` / `[listeners.connection_pool]`: how an
/// HTTP pool keeps its upstream connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionPool {
    /// How long an idle HTTP/1.1 connection stays pooled. Below the
    /// shortest keep-alive common in backends (Node's 5 s, Apache's 5 s) so
    /// we rarely reuse one the backend is closing; a backend that sends
    /// `Keep-Alive: timeout=N` shortens it.
    pub idle_timeout_ms: u64,
    /// Idle HTTP/1.1 connections kept per backend.
    pub max_idle_per_backend: u32,
    /// HTTP/2 connections per backend: another is opened when every one
    /// carries the backend's SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_h2_connections_per_backend: u32,
}

impl Default for ConnectionPool {
    fn default() -> Self {
        Self {
            idle_timeout_ms: 4_000,
            max_idle_per_backend: 256,
            max_h2_connections_per_backend: 4,
        }
    }
}

/// `[[clusters]]`: a named pool that routes and QUIC modes refer to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub lb_policy: LbPolicy,
    pub hash_key: Option<HashKey>,
    #[serde(default = "default_maglev_table_size")]
    pub maglev_table_size: u64,
    #[serde(default)]
    pub backends: Vec<Backend>,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: Option<OutlierDetection>,
    pub slow_start: Option<SlowStart>,
    pub retry: Option<Retry>,
    pub session_affinity: Option<SessionAffinity>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub connection_pool: Option<ConnectionPool>,
}

fn default_maglev_table_size() -> u64 {
    DEFAULT_MAGLEV_TABLE_SIZE
}

impl Cluster {
    pub fn pool(&self) -> PoolSpec {
        PoolSpec {
            name: self.name.clone(),
            lb_policy: self.lb_policy,
            hash_key: self.hash_key.clone(),
            maglev_table_size: self.maglev_table_size,
            backends: self.backends.clone(),
            health_check: self.health_check.clone(),
            outlier_detection: self.outlier_detection.clone(),
            slow_start: self.slow_start.clone(),
            retry: self.retry.clone(),
            session_affinity: self.session_affinity.clone(),
            circuit_breaker: self.circuit_breaker.clone(),
            connection_pool: self.connection_pool.clone(),
        }
    }
}

/// A pool as the balancer sees it, whichever table it was written in.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    pub name: String,
    pub lb_policy: LbPolicy,
    pub hash_key: Option<HashKey>,
    pub maglev_table_size: u64,
    pub backends: Vec<Backend>,
    pub health_check: Option<HealthCheck>,
    pub outlier_detection: Option<OutlierDetection>,
    pub slow_start: Option<SlowStart>,
    pub retry: Option<Retry>,
    pub session_affinity: Option<SessionAffinity>,
    pub circuit_breaker: Option<CircuitBreaker>,
    pub connection_pool: Option<ConnectionPool>,
}
