//! `[[listeners]]` and the tables nested in it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::pool::{
    Backend, CircuitBreaker, ConnectionPool, HashKey, HealthCheck, LbPolicy, OutlierDetection,
    PoolSpec, Retry, SessionAffinity, SlowStart, DEFAULT_MAGLEV_TABLE_SIZE,
};

/// What a listener speaks on its socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// Raw TCP relay (L4).
    Tcp,
    /// TLS terminated, then a cleartext relay (L4).
    Tls,
    /// HTTP/1.1 and HTTP/2 with prior knowledge (h2c), cleartext.
    H1,
    /// HTTP/1.1 and HTTP/2 over TLS, chosen by ALPN.
    H1s,
    /// HTTP/3 over QUIC, or the raw QUIC relay (Mode B).
    Quic,
}

impl ListenerProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::H1 => "h1",
            Self::H1s => "h1s",
            Self::Quic => "quic",
        }
    }

    /// L4 listeners relay bytes; the others run the HTTP core.
    pub fn is_l4(self) -> bool {
        matches!(self, Self::Tcp | Self::Tls)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Label used in logs and metrics; defaults to `<protocol>-<index>`.
    pub name: Option<String>,
    pub address: SocketAddr,
    pub protocol: ListenerProtocol,
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
    #[serde(default)]
    pub routes: Vec<Route>,
    pub tls: Option<ListenerTls>,
    pub quic: Option<ListenerQuic>,
    pub alt_svc: Option<AltSvc>,
    #[serde(default)]
    pub http: HttpLimits,
    #[serde(default)]
    pub h2_security: H2Security,
    #[serde(default)]
    pub websocket: WebSocket,
    #[serde(default)]
    pub grpc: Grpc,
    /// Caps on the default pool's upstream connections and requests.
    pub circuit_breaker: Option<CircuitBreaker>,
    /// How the default pool keeps its upstream connections.
    pub connection_pool: Option<ConnectionPool>,
}

fn default_maglev_table_size() -> u64 {
    DEFAULT_MAGLEV_TABLE_SIZE
}

impl Listener {
    /// The label for logs and metrics.
    pub fn label(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("{}-{}", self.protocol.as_str(), index))
    }

    /// The listener's own backends seen as a pool (its default pool).
    pub fn default_pool(&self, index: usize) -> PoolSpec {
        PoolSpec {
            name: format!("{}/default", self.label(index)),
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

/// One routing rule; first match wins and every field is optional.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Exact host, or `*.suffix` wildcard.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub header: Option<HeaderMatch>,
    /// A `[[clusters]]` name; absent means the listener's default pool.
    pub cluster: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    pub value: String,
}

/// `[listeners.tls]`: server certificate(s) for `tls` and `h1s`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    #[serde(default = "one_day")]
    pub ticket_rotation_interval_seconds: u64,
    #[serde(default = "one_day")]
    pub ticket_rotation_overlap_seconds: u64,
    /// Extra certificates chosen by SNI; the default cert answers the rest.
    #[serde(default)]
    pub sni: Vec<SniCertificate>,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca_path: Option<PathBuf>,
    /// With `client_ca_path`: accept clients without a certificate too.
    #[serde(default)]
    pub client_auth_optional: bool,
}

fn one_day() -> u64 {
    86_400
}

impl ListenerTls {
    /// One certificate, no SNI extras, no client auth, default ticket
    /// rotation: what QUIC listeners and built-in test servers serve.
    pub fn single(cert_path: PathBuf, key_path: PathBuf) -> Self {
        Self {
            cert_path,
            key_path,
            ticket_rotation_interval_seconds: one_day(),
            ticket_rotation_overlap_seconds: one_day(),
            sni: Vec::new(),
            client_ca_path: None,
            client_auth_optional: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertificate {
    pub server_names: Vec<String>,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RetryMode {
    Always,
    #[default]
    UnderLoad,
    Never,
}

/// `[listeners.quic]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerQuic {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub retry_secret_path: Option<PathBuf>,
    #[serde(default)]
    pub retry: RetryMode,
    /// With `retry = "under_load"`: unvalidated handshakes in flight above
    /// which new clients must first prove their address.
    #[serde(default = "default_retry_load_threshold")]
    pub retry_under_load_threshold: u32,
    #[serde(default = "default_quic_idle")]
    pub max_idle_timeout_ms: u64,
    /// The bound on a QUIC handshake: sized for lossy paths, where the
    /// handshake's flights back off (RFC 9002 PTO doubling) well past the
    /// few seconds a TCP+TLS handshake gets.
    #[serde(default = "default_quic_handshake_timeout")]
    pub handshake_timeout_ms: u64,
    /// Serve safe requests from TLS early data (0-RTT) of resumed clients;
    /// unsafe ones wait for the handshake. HTTP/3 listeners only.
    #[serde(default)]
    pub allow_0rtt: bool,
    #[serde(default = "default_udp_payload")]
    pub max_recv_udp_payload_size: u16,
    #[serde(default = "default_quic_per_ip")]
    pub max_connections_per_ip: u32,
    /// Bytes a client may have in flight towards us per connection (all
    /// streams together): the bound on what one connection makes us buffer.
    #[serde(default = "default_receive_window")]
    pub receive_window_bytes: u64,
    /// Bytes a client may have in flight on one stream.
    #[serde(default = "default_stream_receive_window")]
    pub stream_receive_window_bytes: u64,
    pub raw_proxy: Option<RawProxy>,
    /// Issue QUIC-LB connection IDs carrying this server's ID.
    pub quic_lb: Option<crate::QuicLbIssue>,
}

/// 8 MiB per connection: ~64 Mbit/s at 1 s RTT or 6.7 Gbit/s at 10 ms on one
/// connection, while 64 connections per IP stay under 512 MiB.
pub const DEFAULT_QUIC_RECEIVE_WINDOW: u64 = 8 << 20;
/// 1 MiB per stream: one upload at line rate on a LAN, and eight streams
/// fill the connection window.
pub const DEFAULT_QUIC_STREAM_RECEIVE_WINDOW: u64 = 1 << 20;

fn default_receive_window() -> u64 {
    DEFAULT_QUIC_RECEIVE_WINDOW
}
fn default_stream_receive_window() -> u64 {
    DEFAULT_QUIC_STREAM_RECEIVE_WINDOW
}

fn default_retry_load_threshold() -> u32 {
    128
}
fn default_quic_idle() -> u64 {
    30_000
}
/// 30 s, the default QUIC idle timeout: at 30 % loss each way a handshake
/// can lose four flights in a row and back off 1 + 2 + 4 + 8 s (RFC 9002
/// PTO doubling) before it completes; 10 s cut about one in 25 of them
/// (e2e `handshakeloss`). A long bound costs little: past
/// `retry_under_load_threshold` unvalidated handshakes new clients must
/// pass a Retry first, and validated ones count against the per-IP cap.
pub const DEFAULT_QUIC_HANDSHAKE_TIMEOUT_MS: u64 = 30_000;
fn default_quic_handshake_timeout() -> u64 {
    DEFAULT_QUIC_HANDSHAKE_TIMEOUT_MS
}
fn default_udp_payload() -> u16 {
    1350
}
fn default_quic_per_ip() -> u32 {
    64
}

/// `[listeners.quic.raw_proxy]`: Mode B, relay raw QUIC streams and datagrams.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxy {
    /// One backend (the original schema); a pool of one.
    pub backend_addr: Option<String>,
    /// TLS server name for `backend_addr`.
    pub sni: Option<String>,
    /// A `[[clusters]]` name: the pool to relay to.
    pub cluster: Option<String>,
    pub backend_ca_path: Option<PathBuf>,
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
    #[serde(default = "default_dgram_cap")]
    pub dgram_queue_cap: u32,
    #[serde(default = "default_relay_streams")]
    pub max_relay_streams: u32,
}

fn default_alpn() -> Vec<String> {
    vec!["h3".to_owned()]
}
fn default_dgram_cap() -> u32 {
    1024
}
fn default_relay_streams() -> u32 {
    256
}

/// `[listeners.alt_svc]`: advertise HTTP/3 from HTTP/1.1 and HTTP/2 listeners.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AltSvc {
    pub h3_port: u16,
    #[serde(default = "default_alt_svc_age")]
    pub max_age: u64,
}

fn default_alt_svc_age() -> u64 {
    3600
}

/// `[listeners.http]`: per-exchange timeouts and body caps.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    pub header_timeout_ms: u64,
    pub body_timeout_ms: u64,
    pub total_timeout_ms: u64,
    pub head_timeout_ms: u64,
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
    /// An H1 connection between requests, or an H2/H3 connection with no
    /// open stream, is closed after this long (H2/H3 with GOAWAY).
    pub idle_timeout_ms: u64,
    /// Requests in flight on this listener at once; the excess gets 503.
    pub max_inflight_requests: u32,
}

/// Default of `max_inflight_requests`: measured at ~56 KiB per in-flight
/// HTTP/1.1 request (client connection, backend connection, tasks), 65 536
/// cost ~3.5 GiB, a bound a 24 GiB edge box survives; it equals the
/// process-wide `max_inflight_connections` default (see README, "Limits").
pub const DEFAULT_MAX_INFLIGHT_REQUESTS: u32 = 65_536;

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            total_timeout_ms: 60_000,
            head_timeout_ms: 60_000,
            max_request_body_bytes: 64 << 20,
            max_response_body_bytes: 64 << 20,
            idle_timeout_ms: 60_000,
            max_inflight_requests: DEFAULT_MAX_INFLIGHT_REQUESTS,
        }
    }
}

/// `[listeners.h2_security]`: HTTP/2 server limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct H2Security {
    pub max_concurrent_streams: u32,
    pub max_header_list_size: u32,
    pub max_pending_accept_reset_streams: u32,
    pub max_local_error_reset_streams: u32,
    pub max_send_buf_size: u32,
    pub keep_alive_interval_ms: u64,
    pub keep_alive_timeout_ms: u64,
    pub initial_stream_window_size: u32,
    pub initial_connection_window_size: u32,
    /// Streams per HTTP/2 connection, then a graceful GOAWAY (nginx's
    /// `keepalive_requests` default for HTTP/2 is 1000); 0 means unlimited.
    pub max_requests_per_connection: u32,
}

impl Default for H2Security {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_header_list_size: 65_536,
            max_pending_accept_reset_streams: 100,
            max_local_error_reset_streams: 100,
            // 1 MiB per stream: enough to keep a loopback stream busy
            // without letting one stream pin unbounded memory.
            max_send_buf_size: 1 << 20,
            keep_alive_interval_ms: 30_000,
            keep_alive_timeout_ms: 30_000,
            // 1 MiB stream / 4 MiB connection windows: a 10 Gbit/s link
            // with 1 ms RTT needs ~1.25 MB in flight per stream.
            initial_stream_window_size: 1 << 20,
            initial_connection_window_size: 4 << 20,
            max_requests_per_connection: 1000,
        }
    }
}

/// `[listeners.websocket]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocket {
    pub enabled: bool,
    pub idle_timeout_seconds: u64,
    pub max_message_size_bytes: u64,
    pub ping_rate_limit_per_window: u32,
    pub ping_rate_limit_window_seconds: u64,
    pub read_frame_timeout_seconds: u64,
    pub h2_extended_connect: bool,
    pub h3_extended_connect: bool,
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_timeout_seconds: 60,
            max_message_size_bytes: 16 << 20,
            ping_rate_limit_per_window: 50,
            ping_rate_limit_window_seconds: 10,
            read_frame_timeout_seconds: 30,
            h2_extended_connect: true,
            h3_extended_connect: true,
        }
    }
}

/// `[listeners.grpc]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Grpc {
    pub enabled: bool,
    pub max_deadline_seconds: u64,
    pub health_synthesized: bool,
}

impl Default for Grpc {
    fn default() -> Self {
        Self {
            enabled: true,
            max_deadline_seconds: 300,
            health_synthesized: true,
        }
    }
}
