//! The swappable part of an L4 listener, built from config.

use std::sync::Arc;
use std::time::Duration;

use eg_balancer::Pool;
use eg_config::{BackendProtocol, Config, Listener, ListenerProtocol, VerifyHostname};
use eg_tls::{ServerTlsOptions, TlsError, UpstreamTls};
use rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {source}")]
    Tls { path: String, source: TlsError },
    #[error("{path}: {value:?} is not a valid TLS server name")]
    ServerName { path: String, value: String },
}

/// TLS towards one backend.
#[derive(Clone)]
pub(crate) struct UpstreamTlsConn {
    pub connector: TlsConnector,
    pub server_name: ServerName<'static>,
}

/// Everything a connection needs, snapshotted when it is accepted.
pub struct L4Settings {
    pub label: String,
    pub pool: Arc<Pool>,
    pub(crate) acceptor: Option<TlsAcceptor>,
    /// Indexed like the pool's backends; `None` for cleartext backends.
    pub(crate) upstream_tls: Vec<Option<UpstreamTlsConn>>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl L4Settings {
    /// Build for `listener`, the `index`-th entry of `config.listeners`.
    pub fn new(config: &Config, listener: &Listener, index: usize) -> Result<Self, SettingsError> {
        let path = format!("listeners[{index}]");
        let acceptor = match (&listener.tls, listener.protocol) {
            (Some(tls), ListenerProtocol::Tls) => {
                let opts = ServerTlsOptions {
                    tls13_only: config.runtime.tls.tls13_only,
                    alpn: Vec::new(),
                };
                let server =
                    eg_tls::server_config(tls, &opts).map_err(|source| SettingsError::Tls {
                        path: format!("{path}.tls"),
                        source,
                    })?;
                Some(TlsAcceptor::from(server))
            }
            _ => None,
        };
        let spec = listener.default_pool(index);
        let pool = Arc::new(Pool::new(&spec, BackendProtocol::Tcp));
        let upstream_tls = upstream_tls(listener, &path)?;
        let rt = &config.runtime;
        Ok(Self {
            label: listener.label(index),
            pool,
            acceptor,
            upstream_tls,
            connect_timeout: Duration::from_millis(rt.connect_timeout_ms),
            handshake_timeout: Duration::from_millis(rt.handshake_timeout_ms),
            idle_timeout: Duration::from_millis(rt.tcp_idle_timeout_ms),
        })
    }
}

fn upstream_tls(
    listener: &Listener,
    path: &str,
) -> Result<Vec<Option<UpstreamTlsConn>>, SettingsError> {
    listener
        .backends
        .iter()
        .enumerate()
        .map(|(j, b)| {
            if !b.tls {
                return Ok(None);
            }
            let bpath = format!("{path}.backends[{j}]");
            let (verify_hostname, name) = match &b.tls_verify_hostname {
                VerifyHostname::Enabled(on) => (*on, None),
                VerifyHostname::Name(n) => (true, Some(n.clone())),
            };
            let host = b
                .address
                .rsplit_once(':')
                .map_or(b.address.as_str(), |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let sni = b.sni.clone().or(name).unwrap_or_else(|| host.to_owned());
            let server_name =
                ServerName::try_from(sni.clone()).map_err(|_| SettingsError::ServerName {
                    path: format!("{bpath}.sni"),
                    value: sni,
                })?;
            let client = eg_tls::client_config(&UpstreamTls {
                ca_path: b.tls_ca_path.clone(),
                verify_peer: b.tls_verify_peer,
                verify_hostname,
                alpn: Vec::new(),
            })
            .map_err(|source| SettingsError::Tls {
                path: format!("{bpath}.tls_ca_path"),
                source,
            })?;
            Ok(Some(UpstreamTlsConn {
                connector: TlsConnector::from(client),
                server_name,
            }))
        })
        .collect()
}
