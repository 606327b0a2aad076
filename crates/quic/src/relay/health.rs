//! Active checks of a raw QUIC relay's backends (`health_check` with
//! `kind = "tcp"` on a `raw_proxy` listener): the relay cannot speak its
//! backends' application protocol, so a check is what a relayed connection
//! needs first, a verified QUIC handshake offering the relay's first ALPN.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use eg_balancer::health::active::{self, Probe};
use eg_balancer::BackendState;

use super::settings::{RelaySettings, Target};

struct HandshakeProbe {
    targets: Vec<Target>,
    alpn: Option<Vec<u8>>,
    endpoint: quinn::Endpoint,
}

impl Probe for HandshakeProbe {
    fn check<'a>(
        &'a self,
        backend: &'a BackendState,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let Some(target) = self.targets.get(backend.index) else {
                return false;
            };
            let Some(config) = target.config(self.alpn.as_deref()) else {
                return false;
            };
            let Ok(mut addrs) = tokio::net::lookup_host(&backend.address).await else {
                return false;
            };
            let Some(addr) = addrs.next() else {
                return false;
            };
            let connecting =
                match self
                    .endpoint
                    .connect_with(config.clone(), addr, &target.server_name)
                {
                    Ok(c) => c,
                    Err(_) => return false,
                };
            match connecting.await {
                Ok(conn) => {
                    conn.close(quinn::VarInt::from_u32(0), b"health check");
                    true
                }
                Err(e) => {
                    tracing::debug!(backend = %backend.address, error = %e, "QUIC health check failed");
                    false
                }
            }
        })
    }
}

/// Start the relay pool's checks, if it has any. They stop when a reload
/// retires the pool.
pub fn spawn_health_checks(settings: &RelaySettings) {
    if settings.pool.health_check.is_none() {
        return;
    }
    let endpoint =
        eg_http::connector::tuned_client_endpoint(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
            .or_else(|_| {
                eg_http::connector::tuned_client_endpoint(SocketAddr::from((
                    Ipv4Addr::UNSPECIFIED,
                    0,
                )))
            });
    let endpoint = match endpoint {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(listener = %settings.label, error = %e, "no socket for the relay's health checks");
            return;
        }
    };
    let probe = HandshakeProbe {
        targets: settings.targets.clone(),
        alpn: settings.probe_alpn.clone(),
        endpoint,
    };
    active::spawn(&settings.pool, Arc::new(probe));
}
