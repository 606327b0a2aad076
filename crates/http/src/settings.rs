//! The swappable part of an HTTP listener, built from config: compiled
//! routes, pools with their upstream connectors, limits and policies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eg_balancer::Pool;
use eg_config::{BackendProtocol, Config, Listener, ListenerProtocol, PoolSpec, UnderscorePolicy};
use eg_runtime::Carry;
use eg_tls::TlsError;
use http::HeaderValue;
use tokio_rustls::TlsAcceptor;

use crate::connector::breaker::PendingQueue;
use crate::connector::Upstream;
use crate::core::route::CompiledRoute;
use crate::series::{BackendOutcome, BackendSeries, ListenerSeries};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {source}")]
    Tls { path: String, source: TlsError },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A pool and one upstream connector per backend (same indices).
pub struct PoolHandle {
    pub pool: Arc<Pool>,
    pub upstreams: Vec<Arc<Upstream>>,
    /// Each backend's `backend_requests_total` series (same indices).
    series: Vec<BackendSeries>,
    /// Requests waiting for a backend slot (circuit breaker).
    pub queue: PendingQueue,
}

impl PoolHandle {
    pub fn new(
        spec: &PoolSpec,
        path: &str,
        connect_timeout: Duration,
        carry: &Carry,
    ) -> Result<Self, SettingsError> {
        let pool = Arc::new(Pool::carrying(spec, BackendProtocol::H1, carry));
        let breaker = spec.circuit_breaker.clone().unwrap_or_default();
        let pooling = spec.connection_pool.clone().unwrap_or_default();
        let mut upstreams = Vec::with_capacity(spec.backends.len());
        for (j, b) in spec.backends.iter().enumerate() {
            let protocol = b.protocol.unwrap_or(BackendProtocol::H1);
            // The same backend with the same connection settings keeps its
            // pooled connections (and circuit-breaker counts) across a reload.
            // The CA file's content is part of it: a CA rotated in place
            // (same path; SIGUSR1 or SIGHUP) builds a new upstream that
            // verifies against it.
            let key = format!(
                "{}\0{connect_timeout:?}\0{breaker:?}\0{pooling:?}\0{}",
                eg_balancer::backend_key(&spec.name, b, protocol),
                ca_digest(b.tls_ca_path.as_deref()),
            );
            let upstream = carry
                .try_get_or_make(key, || {
                    let tls = eg_tls::backend_tls(b, BackendProtocol::H1)?;
                    Ok(Upstream::new(
                        b.address.clone(),
                        protocol,
                        tls,
                        connect_timeout,
                        &breaker,
                        &pooling,
                    ))
                })
                .map_err(|source| SettingsError::Tls {
                    path: format!("{path}.backends[{j}]"),
                    source,
                })?;
            upstreams.push(upstream);
        }
        let series = spec
            .backends
            .iter()
            .map(|b| BackendSeries::new(&spec.name, &b.address))
            .collect();
        Ok(Self {
            pool,
            upstreams,
            series,
            queue: PendingQueue::new(&breaker),
        })
    }

    /// Count an attempt on the backend at `index`.
    pub fn count(&self, index: usize, outcome: BackendOutcome) {
        if let Some(series) = self.series.get(index) {
            series.count(outcome);
        }
    }
}

/// A digest of a backend CA file's bytes, to tell a rotated file from the
/// running one (not a security check: the file itself is verified when
/// loaded). Empty without a CA file; an unreadable one is left to
/// `backend_tls` to report.
fn ca_digest(path: Option<&std::path::Path>) -> String {
    use std::hash::{Hash, Hasher};
    let Some(path) = path else {
        return String::new();
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            format!("{:016x}", h.finish())
        }
        Err(e) => format!("unreadable: {e}"),
    }
}

impl PoolHandle {
    /// TLS towards each backend, for health probes.
    pub fn backend_tls(&self) -> Vec<Option<eg_tls::BackendTls>> {
        self.upstreams.iter().map(|u| u.tls().cloned()).collect()
    }
}

/// Named `[[clusters]]` pools, built once per config and shared by every
/// listener that routes to them.
pub fn build_clusters(
    config: &Config,
    carry: &Carry,
) -> Result<HashMap<String, Arc<PoolHandle>>, SettingsError> {
    let timeout = Duration::from_millis(config.runtime.connect_timeout_ms);
    config
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            Ok((
                c.name.clone(),
                Arc::new(PoolHandle::new(
                    &c.pool(),
                    &format!("clusters[{i}]"),
                    timeout,
                    carry,
                )?),
            ))
        })
        .collect()
}

/// The access log the config names, shared by every listener and carried
/// across reloads while its target and format stay the same.
fn access_log(
    config: &Config,
    carry: &Carry,
) -> Result<Option<Arc<crate::access_log::AccessLog>>, SettingsError> {
    let o = &config.observability;
    let target = o.access_log.trim();
    if target == "off" {
        return Ok(None);
    }
    let format = o.log_format;
    carry
        .try_get_or_make(format!("{target}\0{format:?}"), || {
            crate::access_log::AccessLog::open(target, format)
        })
        .map(Some)
        .map_err(|e| SettingsError::Invalid {
            path: "observability.access_log".into(),
            reason: format!("cannot open {target:?}: {e}"),
        })
}

/// Timeouts and caps of `[listeners.http]`, as durations.
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub total_timeout: Duration,
    pub head_timeout: Duration,
    /// H1 between requests, H2/H3 with no open stream.
    pub idle_timeout: Duration,
    pub max_request_body: u64,
    pub max_response_body: u64,
}

/// Requests in flight on one listener, shared by every settings generation
/// of it (a reload carries it over), so the cap holds across reloads.
#[derive(Debug, Default)]
pub struct InflightRequests(AtomicU32);

/// One request's place under the listener's cap; freed on drop.
pub struct InflightSlot(Arc<InflightRequests>);

impl Drop for InflightSlot {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InflightRequests {
    pub fn try_enter(self: &Arc<Self>, max: u32) -> Option<InflightSlot> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InflightSlot(Arc::clone(self)))
    }
}

pub struct HttpSettings {
    pub label: String,
    pub protocol: ListenerProtocol,
    pub acceptor: Option<TlsAcceptor>,
    pub routes: Vec<CompiledRoute>,
    pub default_pool: Option<Arc<PoolHandle>>,
    pub limits: Limits,
    pub h2: eg_config::H2Security,
    pub underscore: UnderscorePolicy,
    pub strict_te: bool,
    pub max_keepalive_requests: u32,
    pub alt_svc: Option<HeaderValue>,
    /// The client's TLS handshake; on a `quic` listener its QUIC handshake
    /// (`[listeners.quic] handshake_timeout_ms`).
    pub handshake_timeout: Duration,
    /// `[listeners.quic] allow_0rtt`: serve safe requests from early data.
    pub allow_0rtt: bool,
    /// `[listeners.http] max_inflight_requests` and the live count.
    pub max_inflight_requests: u32,
    pub inflight: Arc<InflightRequests>,
    /// `[observability] access_log`, when not `off`.
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// `[listeners.grpc]`.
    pub grpc: crate::grpc::GrpcSettings,
    /// `[listeners.websocket]`.
    pub websocket: crate::websocket::WsSettings,
    /// Per-request metric series outside routes.
    pub series: ListenerSeries,
}

impl HttpSettings {
    pub fn new(
        config: &Config,
        listener: &Listener,
        index: usize,
        clusters: &HashMap<String, Arc<PoolHandle>>,
        carry: &Carry,
    ) -> Result<Self, SettingsError> {
        let path = format!("listeners[{index}]");
        let rt = &config.runtime;
        let acceptor = match &listener.tls {
            Some(tls) if listener.protocol == ListenerProtocol::H1s => {
                let alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                let server =
                    eg_tls::listener_server_config(carry, &path, tls, rt.tls.tls13_only, alpn)
                        .map_err(|source| SettingsError::Tls {
                            path: format!("{path}.tls"),
                            source,
                        })?;
                Some(TlsAcceptor::from(server))
            }
            _ => None,
        };
        let connect_timeout = Duration::from_millis(rt.connect_timeout_ms);
        let default_pool = if listener.backends.is_empty() {
            None
        } else {
            Some(Arc::new(PoolHandle::new(
                &listener.default_pool(index),
                &path,
                connect_timeout,
                carry,
            )?))
        };
        let label = listener.label(index);
        let default_cluster = default_pool.as_ref().map(|p| p.pool.name.as_str());
        let mut routes = Vec::with_capacity(listener.routes.len());
        for (j, r) in listener.routes.iter().enumerate() {
            let pool = match &r.cluster {
                Some(name) => Some(Arc::clone(clusters.get(name).ok_or_else(|| {
                    SettingsError::Invalid {
                        path: format!("{path}.routes[{j}].cluster"),
                        reason: format!("no cluster named {name:?}"),
                    }
                })?)),
                None => None,
            };
            routes.push(
                CompiledRoute::new(j, r, pool, &label, default_cluster).ok_or_else(|| {
                    SettingsError::Invalid {
                        path: format!("{path}.routes[{j}].header"),
                        reason: "not a valid header name and value".into(),
                    }
                })?,
            );
        }
        let h = &listener.http;
        let alt_svc = listener.alt_svc.as_ref().and_then(|a| {
            HeaderValue::from_str(&format!("h3=\":{}\"; ma={}", a.h3_port, a.max_age)).ok()
        });
        let series = ListenerSeries::new(&label, default_cluster);
        Ok(Self {
            label,
            protocol: listener.protocol,
            acceptor,
            routes,
            default_pool,
            limits: Limits {
                header_timeout: Duration::from_millis(h.header_timeout_ms),
                body_timeout: Duration::from_millis(h.body_timeout_ms),
                total_timeout: Duration::from_millis(h.total_timeout_ms),
                head_timeout: Duration::from_millis(h.head_timeout_ms),
                idle_timeout: Duration::from_millis(h.idle_timeout_ms),
                max_request_body: h.max_request_body_bytes,
                max_response_body: h.max_response_body_bytes,
            },
            h2: listener.h2_security.clone(),
            underscore: rt.header_underscore_policy,
            strict_te: config.security.strict_te,
            max_keepalive_requests: rt.max_keepalive_requests,
            alt_svc,
            handshake_timeout: Duration::from_millis(
                listener
                    .quic
                    .as_ref()
                    .map_or(rt.handshake_timeout_ms, |q| q.handshake_timeout_ms),
            ),
            allow_0rtt: listener.quic.as_ref().is_some_and(|q| q.allow_0rtt),
            max_inflight_requests: h.max_inflight_requests,
            inflight: Arc::default(),
            access_log: access_log(config, carry)?,
            grpc: (&listener.grpc).into(),
            websocket: crate::websocket::WsSettings::from_config(&listener.websocket),
            series,
        })
    }

    /// Keep the live state of the generation this one replaces.
    pub fn carry_over(&mut self, old: &HttpSettings) {
        self.inflight = Arc::clone(&old.inflight);
    }
}
