//! The swappable part of a Mode B listener: the backend pool, verified
//! QUIC client configs per backend and per ALPN, and the relay's bounds.

use std::sync::Arc;
use std::time::Duration;

use eg_balancer::Pool;
use eg_config::{
    Backend, BackendProtocol, Config, Listener, ListenerQuic, PoolSpec, RawProxy, VerifyHostname,
};
use quinn::crypto::rustls::QuicClientConfig;

use crate::endpoint::{self, QuicError};

/// Bytes of received datagrams quinn holds per connection before it
/// drops the oldest: 64 full-size datagrams, enough to ride out a
/// scheduling hiccup of the relay task without unbounded memory.
const DGRAM_RECV_BUFFER_BYTES: usize = 64 * 1500;

/// Bytes of datagrams quinn holds for sending per connection; when full,
/// the relay's own bounded queue (`dgram_queue_cap`) absorbs the burst and
/// then drops the newest. Same size as the receive side.
const DGRAM_SEND_BUFFER_BYTES: usize = 64 * 1500;

/// Upper bound of the keep-alive interval on the backend leg. The client
/// leg's idle timeout decides when an idle pair ends; the backend leg
/// must not idle out first while the client keeps its own leg alive.
const MAX_UPSTREAM_KEEP_ALIVE: Duration = Duration::from_secs(15);

/// One backend as the relay dials it.
#[derive(Clone)]
pub(crate) struct Target {
    /// TLS server name sent and verified.
    pub(crate) server_name: String,
    /// Client configs by ALPN: each offers exactly one protocol (the one
    /// the client negotiated); the `None` entry offers none.
    configs: Vec<(Option<Vec<u8>>, quinn::ClientConfig)>,
}

impl Target {
    /// The config offering exactly `alpn`.
    pub(crate) fn config(&self, alpn: Option<&[u8]>) -> Option<&quinn::ClientConfig> {
        self.configs
            .iter()
            .find(|(p, _)| p.as_deref() == alpn)
            .map(|(_, c)| c)
    }
}

/// Everything a relayed connection needs, snapshotted when it arrives.
pub struct RelaySettings {
    pub label: String,
    /// The backends; exposed so the binary can run health checks on it.
    pub pool: Arc<Pool>,
    /// Indexed like `pool.backends()`.
    pub(crate) targets: Vec<Target>,
    /// The ALPN a health check offers: the first of `raw_proxy.alpn`.
    pub(crate) probe_alpn: Option<Vec<u8>>,
    /// Dial plus QUIC handshake to one backend.
    pub connect_timeout: Duration,
    /// The client's QUIC handshake.
    pub handshake_timeout: Duration,
    /// Datagrams queued per direction before the newest are dropped.
    pub dgram_queue_cap: usize,
    /// Streams relayed at once per connection and per side that opened them.
    pub max_relay_streams: u32,
    /// How long a relayed stream write may wait for credit: the listener's
    /// `max_idle_timeout_ms`. A stream that moves nothing for as long as a
    /// whole connection may stay silent is stalled, while a receiver that
    /// pauses briefly (an application applying back-pressure) is not.
    pub write_stall: Duration,
    /// At shutdown, how long relayed connections may go on before both
    /// legs are closed: `runtime.drain_timeout_ms`, less the time the close
    /// frames need to leave before the process exits.
    pub drain: Duration,
}

impl eg_runtime::Labelled for RelaySettings {
    fn label(&self) -> &str {
        &self.label
    }
}

impl RelaySettings {
    /// Build for `listener`, the `index`-th entry of `config.listeners`,
    /// which must have `[listeners.quic.raw_proxy]`.
    /// `carry`: what the generation being replaced knew of its backends.
    pub fn new(
        config: &Config,
        listener: &Listener,
        index: usize,
        carry: &eg_runtime::Carry,
    ) -> Result<Self, QuicError> {
        let path = format!("listeners[{index}]");
        let (quic, raw) = raw_proxy(listener, &path)?;
        let rpp = format!("{path}.quic.raw_proxy");
        let spec = pool_spec(config, listener, index, raw, &rpp)?;
        let transport = Arc::new(transport(quic, raw, true, &path)?);
        let alpns: Vec<Option<Vec<u8>>> = raw
            .alpn
            .iter()
            .map(|a| Some(a.as_bytes().to_vec()))
            .chain(std::iter::once(None))
            .collect();
        let targets = spec
            .backends
            .iter()
            .enumerate()
            .map(|(j, b)| target(b, raw, &alpns, &transport, &format!("{rpp}.backends[{j}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let rt = &config.runtime;
        Ok(Self {
            label: listener.label(index),
            pool: Arc::new(Pool::carrying(&spec, BackendProtocol::H3, carry)),
            targets,
            probe_alpn: raw.alpn.first().map(|a| a.as_bytes().to_vec()),
            connect_timeout: Duration::from_millis(rt.connect_timeout_ms),
            handshake_timeout: Duration::from_millis(quic.handshake_timeout_ms),
            dgram_queue_cap: usize::try_from(raw.dgram_queue_cap).unwrap_or(usize::MAX),
            max_relay_streams: raw.max_relay_streams,
            write_stall: Duration::from_millis(quic.max_idle_timeout_ms),
            drain: Duration::from_millis(rt.drain_timeout_ms).saturating_sub(super::CLOSE_FLUSH),
        })
    }
}

/// The quinn server config of a Mode B listener: its certificate, the
/// ALPN list of `raw_proxy.alpn`, datagrams on, and stream limits of
/// `raw_proxy.max_relay_streams` per kind.
pub fn server_config_for(
    listener: &Listener,
    index: usize,
    carry: &eg_runtime::Carry,
) -> Result<quinn::ServerConfig, QuicError> {
    let path = format!("listeners[{index}]");
    let (quic, raw) = raw_proxy(listener, &path)?;
    let alpn = raw.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut server = endpoint::server_config(quic, &path, alpn, carry)?;
    server.transport_config(Arc::new(transport(quic, raw, false, &path)?));
    Ok(server)
}

fn raw_proxy<'a>(
    listener: &'a Listener,
    path: &str,
) -> Result<(&'a ListenerQuic, &'a RawProxy), QuicError> {
    let quic = listener.quic.as_ref().ok_or_else(|| QuicError::Invalid {
        path: format!("{path}.quic"),
        reason: "a quic listener needs a [listeners.quic] table".into(),
    })?;
    let raw = quic.raw_proxy.as_ref().ok_or_else(|| QuicError::Invalid {
        path: format!("{path}.quic.raw_proxy"),
        reason: "the raw QUIC relay needs a [listeners.quic.raw_proxy] table".into(),
    })?;
    Ok((quic, raw))
}

/// Transport parameters of either leg. `upstream` adds a keep-alive so the
/// backend leg lives as long as the client keeps its own leg alive.
fn transport(
    quic: &ListenerQuic,
    raw: &RawProxy,
    upstream: bool,
    path: &str,
) -> Result<quinn::TransportConfig, QuicError> {
    let idle_ms = quic.max_idle_timeout_ms;
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(idle_ms)).map_err(|e| {
        QuicError::Invalid {
            path: format!("{path}.quic.max_idle_timeout_ms"),
            reason: e.to_string(),
        }
    })?;
    let streams = quinn::VarInt::from_u32(raw.max_relay_streams);
    let mut t = quinn::TransportConfig::default();
    // Both legs get the listener's windows: the relay pairs connections
    // one to one, so what it buffers per pair stays a function of
    // `receive_window_bytes` each way, however many streams the backend
    // opens or leaves unread.
    endpoint::apply_windows(&mut t, quic, path)?;
    t.max_idle_timeout(Some(idle))
        .max_concurrent_bidi_streams(streams)
        .max_concurrent_uni_streams(streams)
        .datagram_receive_buffer_size(Some(DGRAM_RECV_BUFFER_BYTES))
        .datagram_send_buffer_size(DGRAM_SEND_BUFFER_BYTES);
    if upstream {
        let every = Duration::from_millis(idle_ms / 3)
            .clamp(Duration::from_millis(100), MAX_UPSTREAM_KEEP_ALIVE);
        t.keep_alive_interval(Some(every));
    }
    Ok(t)
}

/// `backend_addr` as a pool of one, or the named cluster's pool.
fn pool_spec(
    config: &Config,
    listener: &Listener,
    index: usize,
    raw: &RawProxy,
    rpp: &str,
) -> Result<PoolSpec, QuicError> {
    if let Some(name) = &raw.cluster {
        return config
            .cluster(name)
            .map(|c| c.pool())
            .ok_or_else(|| QuicError::Invalid {
                path: format!("{rpp}.cluster"),
                reason: format!("no [[clusters]] entry is named {name:?}"),
            });
    }
    let Some(address) = &raw.backend_addr else {
        return Err(QuicError::Invalid {
            path: rpp.to_owned(),
            reason: "set exactly one of `backend_addr` and `cluster`".into(),
        });
    };
    let mut spec = listener.default_pool(index);
    spec.backends = vec![Backend {
        address: address.clone(),
        protocol: Some(BackendProtocol::H3),
        weight: 1,
        tls: true,
        tls_ca_path: raw.backend_ca_path.clone(),
        tls_verify_hostname: VerifyHostname::Enabled(true),
        tls_verify_peer: true,
        sni: raw.sni.clone(),
    }];
    Ok(spec)
}

/// Verified client configs towards one backend: its own `tls_ca_path`, else
/// `backend_ca_path`, else the system roots; TLS 1.3 (QUIC) with ring.
fn target(
    b: &Backend,
    raw: &RawProxy,
    alpns: &[Option<Vec<u8>>],
    transport: &Arc<quinn::TransportConfig>,
    path: &str,
) -> Result<Target, QuicError> {
    let (verify_hostname, name) = match &b.tls_verify_hostname {
        VerifyHostname::Enabled(on) => (*on, None),
        VerifyHostname::Name(n) => (true, Some(n.clone())),
    };
    let server_name = b
        .sni
        .clone()
        .or(name)
        .or_else(|| raw.sni.clone())
        .unwrap_or_else(|| host_of(&b.address).to_owned());
    if rustls::pki_types::ServerName::try_from(server_name.as_str()).is_err() {
        return Err(QuicError::Invalid {
            path: format!("{path}.sni"),
            reason: format!("{server_name:?} is not a valid TLS server name"),
        });
    }
    let base = eg_tls::client_config(&eg_tls::UpstreamTls {
        ca_path: b
            .tls_ca_path
            .clone()
            .or_else(|| raw.backend_ca_path.clone()),
        verify_peer: b.tls_verify_peer,
        verify_hostname,
        alpn: Vec::new(),
    })
    .map_err(|source| QuicError::Tls {
        path: path.to_owned(),
        source,
    })?;
    let configs = alpns
        .iter()
        .map(|alpn| {
            let mut tls = (*base).clone();
            tls.alpn_protocols = alpn.iter().cloned().collect();
            let crypto = QuicClientConfig::try_from(tls).map_err(|e| QuicError::Invalid {
                path: path.to_owned(),
                reason: format!("TLS config unusable for QUIC: {e}"),
            })?;
            let mut client = quinn::ClientConfig::new(Arc::new(crypto));
            client.transport_config(Arc::clone(transport));
            Ok((alpn.clone(), client))
        })
        .collect::<Result<Vec<_>, QuicError>>()?;
    Ok(Target {
        server_name,
        configs,
    })
}

/// `host` of `host:port` (brackets of an IPv6 literal removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}
