//! QUIC endpoints: server configs from `[listeners.quic]` (certificates,
//! ALPN, idle timeout, UDP payload size, the Retry token key) and UDP
//! binding, plus the admission of incoming connections (Retry policy,
//! per-IP cap) shared by the H3 front and the raw relay (Mode B).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eg_config::{ListenerQuic, ListenerTls, RetryMode};
use eg_runtime::metrics::metrics;
use eg_runtime::{Admission, Admitted};
use quinn::crypto::rustls::QuicServerConfig;
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes of secret behind the Retry token key (HKDF-SHA256 input).
const RETRY_SECRET_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    #[error("{path}: {source}")]
    Tls {
        path: String,
        source: eg_tls::TlsError,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
}

/// A quinn server config for `[listeners.quic]` at `path`.
/// `carry` keeps the session-ticket keys and a random Retry key from the
/// generation a reload replaces: clients keep resuming, and Retry tokens
/// handed out just before the reload stay valid.
pub fn server_config(
    quic: &ListenerQuic,
    path: &str,
    alpn: Vec<Vec<u8>>,
    carry: &eg_runtime::Carry,
) -> Result<quinn::ServerConfig, QuicError> {
    let tls = ListenerTls::single(quic.cert_path.clone(), quic.key_path.clone());
    let early_data = quic
        .allow_0rtt
        .then(|| eg_tls::carried_early_data_sessions(carry, path));
    // QUIC is TLS 1.3 only: tls13_only is implied.
    let rustls_config = eg_tls::listener_server_config_with(
        carry, path, &tls, true, alpn, early_data,
    )
    .map_err(|source| QuicError::Tls {
        path: format!("{path}.quic"),
        source,
    })?;
    let crypto = QuicServerConfig::try_from(rustls_config).map_err(|e| QuicError::Invalid {
        path: format!("{path}.quic"),
        reason: format!("TLS config unusable for QUIC: {e}"),
    })?;
    let secret = match quic.retry_secret_path.as_deref() {
        // The file persists it.
        Some(file) => retry_secret(Some(file), path)?,
        None => carry
            .try_get_or_make(format!("{path}.quic.retry"), || {
                retry_secret(None, path).map(RetrySecret)
            })?
            .0
            .clone(),
    };
    let key =
        ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"expressgateway retry").extract(&secret);
    let mut server = quinn::ServerConfig::new(Arc::new(crypto), Arc::new(key));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_millis(quic.max_idle_timeout_ms))
        .map_err(|e| QuicError::Invalid {
            path: format!("{path}.quic.max_idle_timeout_ms"),
            reason: e.to_string(),
        })?;
    transport.max_idle_timeout(Some(idle));
    transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_CONCURRENT_STREAMS));
    apply_windows(&mut transport, quic, path)?;
    // HTTP/3 here carries no datagrams (no RFC 9297 support): do not
    // advertise them, so quinn buffers none (its default keeps 1.25 MB).
    transport.datagram_receive_buffer_size(None);
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// Concurrent request streams per client connection, as HTTP/2's default
/// `max_concurrent_streams` (256): bounds per-connection work the same way.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// The flow-control windows of `[listeners.quic]` on a connection we
/// accept: `receive_window_bytes` bounds what one client connection makes
/// us buffer (quinn's default is unlimited), `stream_receive_window_bytes`
/// what one stream does. The send window, the bytes quinn keeps from our
/// writes until acknowledged, gets the receive window's value: the same
/// bandwidth-delay target each way, and memory per connection stays a
/// function of one key (quinn's default is 10 MB).
pub fn apply_windows(
    transport: &mut quinn::TransportConfig,
    quic: &ListenerQuic,
    path: &str,
) -> Result<(), QuicError> {
    let varint = |value: u64, key: &str| {
        quinn::VarInt::from_u64(value).map_err(|e| QuicError::Invalid {
            path: format!("{path}.quic.{key}"),
            reason: e.to_string(),
        })
    };
    transport
        .receive_window(varint(quic.receive_window_bytes, "receive_window_bytes")?)
        .stream_receive_window(varint(
            quic.stream_receive_window_bytes,
            "stream_receive_window_bytes",
        )?)
        .send_window(quic.receive_window_bytes);
    Ok(())
}

/// A per-process random Retry key, as carried across reloads.
struct RetrySecret(Vec<u8>);

/// The Retry token key: read from `retry_secret_path` (created 0600 with a
/// random secret when absent; refused when others can read it), or a
/// random key for this process when unset.
fn retry_secret(file: Option<&Path>, path: &str) -> Result<Vec<u8>, QuicError> {
    let key_path = format!("{path}.quic.retry_secret_path");
    let io_err = |source| QuicError::Io {
        path: key_path.clone(),
        source,
    };
    let rng = SystemRandom::new();
    let fresh = || -> Result<Vec<u8>, QuicError> {
        let mut secret = vec![0u8; RETRY_SECRET_BYTES];
        rng.fill(&mut secret).map_err(|_| QuicError::Invalid {
            path: key_path.clone(),
            reason: "no system randomness".into(),
        })?;
        Ok(secret)
    };
    let Some(file) = file else { return fresh() };
    match std::fs::metadata(file) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(QuicError::Invalid {
                    path: key_path,
                    reason: format!(
                        "{} is accessible by group or others (mode {mode:o}); run chmod 600",
                        file.display()
                    ),
                });
            }
            let secret = std::fs::read(file).map_err(io_err)?;
            if secret.len() < RETRY_SECRET_BYTES {
                return Err(QuicError::Invalid {
                    path: key_path,
                    reason: format!(
                        "{} holds {} bytes; at least {RETRY_SECRET_BYTES} are needed",
                        file.display(),
                        secret.len()
                    ),
                });
            }
            Ok(secret)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let secret = fresh()?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(file)
                .map_err(io_err)?;
            io::Write::write_all(&mut f, &secret).map_err(io_err)?;
            Ok(secret)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// Bind `addr` (UDP) and start a quinn endpoint on it.
pub fn bind(
    addr: SocketAddr,
    server: quinn::ServerConfig,
    quic: &ListenerQuic,
    path: &str,
) -> Result<quinn::Endpoint, QuicError> {
    let io_err = |source| QuicError::Io {
        path: format!("{path}.address"),
        source,
    };
    let socket = UdpSocket::bind(addr).map_err(io_err)?;
    eg_runtime::tune_udp_socket(&socket);
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(quic.max_recv_udp_payload_size)
        .map_err(|e| QuicError::Invalid {
            path: format!("{path}.quic.max_recv_udp_payload_size"),
            reason: e.to_string(),
        })?;
    if let Some(lb) = &quic.quic_lb {
        crate::quic_lb::install(&mut endpoint_config, lb, path)?;
    }
    let runtime = quinn::default_runtime().ok_or_else(|| QuicError::Invalid {
        path: path.to_owned(),
        reason: "no async runtime for QUIC".into(),
    })?;
    quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime).map_err(io_err)
}

/// Decides, for each incoming connection, Retry / refuse / accept.
pub struct Gate {
    /// `retry` as `retry_code` encodes it; with the threshold, re-set by a
    /// reload (`update`).
    retry: std::sync::atomic::AtomicU8,
    threshold: AtomicU32,
    /// Handshakes from unvalidated addresses in progress now.
    unvalidated: Arc<AtomicU32>,
    per_ip: Arc<Admission>,
    global: Arc<Admission>,
}

const RETRY_ALWAYS: u8 = 0;
const RETRY_UNDER_LOAD: u8 = 1;
const RETRY_NEVER: u8 = 2;

fn retry_code(mode: RetryMode) -> u8 {
    match mode {
        RetryMode::Always => RETRY_ALWAYS,
        RetryMode::UnderLoad => RETRY_UNDER_LOAD,
        RetryMode::Never => RETRY_NEVER,
    }
}

/// What the gate let through; hold it for the connection's lifetime.
pub struct Pass {
    _global: Admitted,
    _per_ip: Admitted,
    unvalidated: Option<Arc<AtomicU32>>,
}

impl Pass {
    /// The handshake finished (or failed): it no longer counts as load.
    pub fn handshake_done(&mut self) {
        if let Some(counter) = self.unvalidated.take() {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.handshake_done();
    }
}

impl Gate {
    pub fn new(quic: &ListenerQuic, global: Arc<Admission>) -> Self {
        Self {
            retry: std::sync::atomic::AtomicU8::new(retry_code(quic.retry)),
            threshold: AtomicU32::new(quic.retry_under_load_threshold),
            unvalidated: Arc::new(AtomicU32::new(0)),
            per_ip: Admission::new(u32::MAX, quic.max_connections_per_ip),
            global,
        }
    }

    /// Apply a reloaded `[listeners.quic]`: the Retry policy and the
    /// per-IP cap for connections from now on.
    pub fn update(&self, quic: &ListenerQuic) {
        self.retry.store(retry_code(quic.retry), Ordering::Relaxed);
        self.threshold
            .store(quic.retry_under_load_threshold, Ordering::Relaxed);
        self.per_ip.set_caps(u32::MAX, quic.max_connections_per_ip);
    }

    /// `Some` to accept; `None` when the gate sent a Retry or refused.
    pub fn admit(&self, incoming: quinn::Incoming, label: &str) -> Option<(quinn::Incoming, Pass)> {
        let validated = incoming.remote_address_validated();
        let loaded =
            self.unvalidated.load(Ordering::Relaxed) >= self.threshold.load(Ordering::Relaxed);
        let must_retry = !validated
            && incoming.may_retry()
            && match self.retry.load(Ordering::Relaxed) {
                RETRY_ALWAYS => true,
                RETRY_UNDER_LOAD => loaded,
                _ => false,
            };
        if must_retry {
            if incoming.retry().is_ok() {
                metrics()
                    .quic_retries_sent_total
                    .with_label_values(&[label])
                    .inc();
            }
            return None;
        }
        let ip: IpAddr = incoming.remote_address().ip();
        let global = match self.global.try_admit(ip) {
            Ok(a) => a,
            Err(why) => {
                metrics()
                    .defence_trips_total
                    .with_label_values(&[why.as_str()])
                    .inc();
                incoming.refuse();
                return None;
            }
        };
        let per_ip = match self.per_ip.try_admit(ip) {
            Ok(a) => a,
            Err(_) => {
                metrics()
                    .defence_trips_total
                    .with_label_values(&["quic_per_ip_cap"])
                    .inc();
                incoming.refuse();
                return None;
            }
        };
        let unvalidated = (!validated).then(|| {
            self.unvalidated.fetch_add(1, Ordering::Relaxed);
            Arc::clone(&self.unvalidated)
        });
        Some((
            incoming,
            Pass {
                _global: global,
                _per_ip: per_ip,
                unvalidated,
            },
        ))
    }
}

/// The accept loop of every QUIC listener: until `shutdown`, admit each
/// incoming connection through `gate` (Retry, caps), count it, and run
/// `handle` on `tracker` with the settings current when it arrived.
pub async fn accept_loop<S, F, Fut>(
    endpoint: &quinn::Endpoint,
    settings: &arc_swap::ArcSwap<S>,
    gate: &Gate,
    shutdown: &eg_runtime::CancellationToken,
    tracker: &eg_runtime::TaskTracker,
    handle: F,
) where
    S: eg_runtime::Labelled + Send + Sync + 'static,
    F: Fn(quinn::Incoming, Pass, Arc<S>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => return,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { return };
        let snapshot = settings.load_full();
        let Some((incoming, pass)) = gate.admit(incoming, snapshot.label()) else {
            continue;
        };
        metrics()
            .connections_total
            .with_label_values(&[snapshot.label()])
            .inc();
        tracker.spawn(handle(incoming, pass, snapshot));
    }
}
