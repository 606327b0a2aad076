//! The swappable part of an L4 listener, built from config.

use std::sync::Arc;
use std::time::Duration;

use eg_balancer::Pool;
use eg_config::{BackendProtocol, Config, Listener, ListenerProtocol};
use eg_tls::{BackendTls, TlsError};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{path}: {source}")]
    Tls { path: String, source: TlsError },
}

/// Everything a connection needs, snapshotted when it is accepted.
pub struct L4Settings {
    pub label: String,
    pub pool: Arc<Pool>,
    pub(crate) acceptor: Option<TlsAcceptor>,
    /// Indexed like the pool's backends; `None` for cleartext backends.
    pub(crate) upstream_tls: Vec<Option<BackendTls>>,
    pub connect_timeout: Duration,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl L4Settings {
    /// TLS towards each backend, for health probes.
    pub fn backend_tls(&self) -> Vec<Option<BackendTls>> {
        self.upstream_tls.clone()
    }

    /// Build for `listener`, the `index`-th entry of `config.listeners`.
    /// `carry`: what the generation being replaced knew of its backends.
    pub fn new(
        config: &Config,
        listener: &Listener,
        index: usize,
        carry: &eg_runtime::Carry,
    ) -> Result<Self, SettingsError> {
        let path = format!("listeners[{index}]");
        let acceptor = match (&listener.tls, listener.protocol) {
            (Some(tls), ListenerProtocol::Tls) => {
                let tls13_only = config.runtime.tls.tls13_only;
                let server =
                    eg_tls::listener_server_config(carry, &path, tls, tls13_only, Vec::new())
                        .map_err(|source| SettingsError::Tls {
                            path: format!("{path}.tls"),
                            source,
                        })?;
                Some(TlsAcceptor::from(server))
            }
            _ => None,
        };
        let spec = listener.default_pool(index);
        let pool = Arc::new(Pool::carrying(&spec, BackendProtocol::Tcp, carry));
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

fn upstream_tls(listener: &Listener, path: &str) -> Result<Vec<Option<BackendTls>>, SettingsError> {
    listener
        .backends
        .iter()
        .enumerate()
        .map(|(j, b)| {
            eg_tls::backend_tls(b, BackendProtocol::Tcp).map_err(|source| SettingsError::Tls {
                path: format!("{path}.backends[{j}]"),
                source,
            })
        })
        .collect()
}
