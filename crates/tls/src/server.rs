//! rustls server configs for `tls`, `h1s` (and later `quic`) listeners.

use std::collections::HashMap;
use std::sync::Arc;

use eg_config::ListenerTls;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::load::{load_ca, load_certified_key};
use crate::ticket::SessionTicketer;
use crate::TlsError;

/// Listener-independent knobs for a server config.
#[derive(Debug, Clone, Default)]
pub struct ServerTlsOptions {
    /// `[runtime.tls] tls13_only`.
    pub tls13_only: bool,
    /// ALPN protocols offered, most preferred first.
    pub alpn: Vec<Vec<u8>>,
    /// Session-ticket keys carried over from the config this one replaces,
    /// so clients keep resuming across a reload; new ones when `None`.
    pub ticketer: Option<Arc<SessionTicketer>>,
    /// QUIC 0-RTT: resume statefully from this cache, whose sessions are
    /// single use, and accept early data. `None`: stateless tickets, no
    /// early data.
    pub early_data: Option<Arc<EarlyDataSessions>>,
}

/// The session cache behind QUIC 0-RTT. rustls accepts early data only on
/// stateful resumption and takes each session out of the cache when it is
/// used (RFC 8446 §8.1, single-use tickets): a replayed ClientHello finds
/// its session gone and gets a full handshake, its early data discarded.
/// Carried across reloads, so the anti-replay state outlives a generation.
#[derive(Debug)]
pub struct EarlyDataSessions(Arc<rustls::server::ServerSessionMemoryCache>);

// The server config holds this very value (not the cache inside), so the
// carry finds it alive at the next reload.
impl rustls::server::StoresServerSessions for EarlyDataSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.put(key, value)
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.0.get(key)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        // Called for each resumption attempt: a miss is a session used
        // before (a replay), evicted or from another instance, and its
        // client gets a full handshake without early data.
        let session = self.0.take(key);
        eg_runtime::metrics::metrics()
            .zero_rtt_resumptions_total
            .with_label_values(&[if session.is_some() {
                "resumed"
            } else {
                "refused"
            }])
            .inc();
        session
    }
    fn can_cache(&self) -> bool {
        self.0.can_cache()
    }
}

/// Sessions remembered for 0-RTT resumption per listener. rustls issues
/// two per handshake, about 200 bytes each: 64 Ki sessions bound the cache
/// near 16 MiB and cover 32 Ki clients returning within the cache's reach;
/// older ones simply get a full 1-RTT handshake.
const EARLY_DATA_SESSIONS: usize = 64 * 1024;

/// The carried 0-RTT session cache of the listener at `listener_path`.
pub fn carried_early_data_sessions(
    carry: &eg_runtime::Carry,
    listener_path: &str,
) -> Arc<EarlyDataSessions> {
    carry.get_or_make(format!("{listener_path}\0early-data-sessions"), || {
        EarlyDataSessions(rustls::server::ServerSessionMemoryCache::new(
            EARLY_DATA_SESSIONS,
        ))
    })
}

/// No session tickets: with 0-RTT on, resumption is stateful.
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// Build a server config: default cert, SNI certs, optional client auth,
/// rotating session-ticket keys.
pub fn server_config(
    tls: &ListenerTls,
    opts: &ServerTlsOptions,
) -> Result<Arc<ServerConfig>, TlsError> {
    let default = load_certified_key(&tls.cert_path, &tls.key_path)?;
    let mut by_name = HashMap::new();
    for sni in &tls.sni {
        let key = load_certified_key(&sni.cert_path, &sni.key_path)?;
        for name in &sni.server_names {
            by_name.insert(name.to_ascii_lowercase(), Arc::clone(&key));
        }
    }
    let resolver = Arc::new(SniResolver { default, by_name });

    let versions: &[&rustls::SupportedProtocolVersion] = if opts.tls13_only {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_protocol_versions(versions);
    let builder = match &tls.client_ca_path {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = Arc::new(load_ca(ca)?);
            let verifier = WebPkiClientVerifier::builder(roots);
            let verifier = if tls.client_auth_optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| TlsError::Verifier(e.to_string()))?,
            )
        }
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = opts.alpn.clone();
    config.ticketer = match (&opts.early_data, &opts.ticketer) {
        (Some(_), _) => Arc::new(NoTickets),
        (None, Some(t)) => Arc::clone(t) as Arc<dyn rustls::server::ProducesTickets>,
        (None, None) => Arc::new(SessionTicketer::new(
            tls.ticket_rotation_interval_seconds,
            tls.ticket_rotation_overlap_seconds,
        )?),
    };
    if let Some(sessions) = &opts.early_data {
        config.session_storage = Arc::clone(sessions) as Arc<_>;
        // QUIC allows no other value (RFC 9001 §4.6.1): the amount is
        // bounded by the transport's flow control instead.
        config.max_early_data_size = u32::MAX;
    }
    Ok(Arc::new(config))
}

/// A listener's server config whose session-ticket keys carry over from
/// the generation a reload replaces (`carried_ticketer`), so clients keep
/// resuming.
pub fn listener_server_config(
    carry: &eg_runtime::Carry,
    listener_path: &str,
    tls: &ListenerTls,
    tls13_only: bool,
    alpn: Vec<Vec<u8>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    listener_server_config_with(carry, listener_path, tls, tls13_only, alpn, None)
}

/// `listener_server_config`, with QUIC 0-RTT from `early_data` when given.
pub fn listener_server_config_with(
    carry: &eg_runtime::Carry,
    listener_path: &str,
    tls: &ListenerTls,
    tls13_only: bool,
    alpn: Vec<Vec<u8>>,
    early_data: Option<Arc<EarlyDataSessions>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let ticketer = crate::ticket::carried_ticketer(
        carry,
        listener_path,
        tls.ticket_rotation_interval_seconds,
        tls.ticket_rotation_overlap_seconds,
    )?;
    let opts = ServerTlsOptions {
        tls13_only,
        alpn,
        ticketer: Some(ticketer),
        early_data,
    };
    server_config(tls, &opts)
}

/// Picks a certificate by SNI: exact name, then `*.parent` wildcard, then
/// the listener's default certificate.
#[derive(Debug)]
struct SniResolver {
    default: Arc<CertifiedKey>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(Arc::clone(&self.default));
        };
        let name = name.to_ascii_lowercase();
        let wildcard = name
            .split_once('.')
            .and_then(|(_, parent)| self.by_name.get(&format!("*.{parent}")));
        let found = self.by_name.get(&name).or(wildcard);
        Some(Arc::clone(found.unwrap_or(&self.default)))
    }
}
