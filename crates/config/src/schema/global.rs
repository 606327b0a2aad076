//! Process-wide tables: `[security]`, `[runtime]`, `[observability]`,
//! `[admin]` and the top-level `[passthrough]` datapath.

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Security {
    /// Refuse any Transfer-Encoding other than a lone `chunked`.
    pub strict_te: bool,
}

impl Default for Security {
    fn default() -> Self {
        Self { strict_te: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnderscorePolicy {
    /// 400 for a request with `_` in a header name (no ambiguity with `-`).
    #[default]
    Reject,
    /// Remove such headers and forward the rest.
    Drop,
    Allow,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    pub connect_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub max_inflight_connections: u32,
    pub per_ip_connection_cap: u32,
    /// Requests per HTTP/1.1 connection, then `Connection: close`; 0 means
    /// unlimited. HTTP/2 and HTTP/3 have their own caps.
    pub max_keepalive_requests: u32,
    pub max_requests_per_h3_connection: u32,
    pub header_underscore_policy: UnderscorePolicy,
    pub drain_timeout_ms: u64,
    pub readiness_settle_ms: u64,
    /// Tokio worker threads; 0 means one per core.
    pub worker_threads: u32,
    /// An L4 relay with no byte either way for this long is closed.
    pub tcp_idle_timeout_ms: u64,
    /// Backend host names are re-resolved within their DNS TTL, clamped
    /// to these bounds.
    pub dns_min_ttl_ms: u64,
    pub dns_max_ttl_ms: u64,
    /// DNS servers to ask; empty: those of `/etc/resolv.conf`.
    pub dns_servers: Vec<SocketAddr>,
    pub tls: RuntimeTls,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5000,
            handshake_timeout_ms: 5000,
            max_inflight_connections: 65_536,
            per_ip_connection_cap: 1024,
            max_keepalive_requests: 100,
            max_requests_per_h3_connection: 1000,
            header_underscore_policy: UnderscorePolicy::Reject,
            drain_timeout_ms: 10_000,
            readiness_settle_ms: 11_000,
            worker_threads: 0,
            // One hour, as HAProxy's common `timeout tunnel`: long enough for
            // database and SSH sessions, short enough to reap dead peers.
            tcp_idle_timeout_ms: 3_600_000,
            // A record changing is followed within a second at best (no
            // query storm on TTL 0) and 30 s at worst (a TTL of hours
            // must not pin a dead address).
            dns_min_ttl_ms: 1000,
            dns_max_ttl_ms: 30_000,
            dns_servers: Vec::new(),
            tls: RuntimeTls::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeTls {
    pub tls13_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Observability {
    /// Admin and metrics listener; absent means none.
    pub metrics_bind: Option<SocketAddr>,
    /// `off`, `stdout`, or a file path.
    pub access_log: String,
    pub log_format: LogFormat,
}

impl Default for Observability {
    fn default() -> Self {
        Self {
            metrics_bind: None,
            access_log: "off".to_owned(),
            log_format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Admin {
    /// Hex SHA-256 of the bearer token required off loopback.
    pub api_token_hash: Option<String>,
    pub allow_non_loopback: bool,
}

/// A Mode A backend: a plain address, or a table with a weight.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PassthroughBackend {
    Address(String),
    Weighted(WeightedAddress),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedAddress {
    pub address: String,
    #[serde(default = "one")]
    pub weight: u32,
    /// QUIC-LB server ID (hex) this backend puts in its connection IDs;
    /// needs `[passthrough.quic_lb]`.
    pub server_id: Option<String>,
}

fn one() -> u32 {
    1
}

impl PassthroughBackend {
    pub fn address(&self) -> &str {
        match self {
            Self::Address(a) => a,
            Self::Weighted(w) => &w.address,
        }
    }
    pub fn weight(&self) -> u32 {
        match self {
            Self::Address(_) => 1,
            Self::Weighted(w) => w.weight,
        }
    }
    pub fn server_id(&self) -> Option<&str> {
        match self {
            Self::Address(_) => None,
            Self::Weighted(w) => w.server_id.as_deref(),
        }
    }
}

/// `[passthrough]`: QUIC Mode A, routed by connection ID without decrypting.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passthrough {
    pub bind_addr: SocketAddr,
    #[serde(default)]
    pub backends: Vec<PassthroughBackend>,
    pub cluster: Option<String>,
    #[serde(default = "d_max_conns")]
    pub max_quic_connections: u32,
    #[serde(default = "d_min_dcid")]
    pub min_client_dcid_len: u8,
    #[serde(default = "d_backlog")]
    pub per_flow_backlog: u32,
    #[serde(default)]
    pub strict_source_binding: bool,
    #[serde(default = "d_flow_idle")]
    pub flow_idle_timeout_ms: u64,
    #[serde(default = "d_max_dcid")]
    pub max_dcid_len_routed: u8,
    /// Route established flows by the QUIC-LB server ID in their CIDs.
    pub quic_lb: Option<crate::QuicLbRoute>,
}

fn d_max_conns() -> u32 {
    100_000
}
fn d_min_dcid() -> u8 {
    8
}
fn d_backlog() -> u32 {
    32
}
fn d_flow_idle() -> u64 {
    60_000
}
fn d_max_dcid() -> u8 {
    20
}
