//! Mode B, the raw QUIC relay (`[listeners.quic.raw_proxy]`): terminate the
//! client's QUIC, open a fresh verified QUIC connection to a backend the
//! balancer picks, offering it exactly the ALPN the client negotiated, and
//! relay streams (both kinds, opened by either side) and RFC 9221
//! datagrams both ways until either side closes.

mod health;
mod pipe;
mod settings;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use eg_balancer::InFlight;
use eg_runtime::metrics::metrics;
use eg_runtime::{CancellationToken, TaskTracker};

use crate::endpoint::{Gate, Pass};
pub use health::spawn_health_checks;
pub use settings::{server_config_for, RelaySettings};

/// After shutdown, how long the endpoints may take to deliver the close
/// frames of the connections they just closed (bounded: drain must end).
pub(crate) const CLOSE_FLUSH: Duration = Duration::from_secs(1);

/// Accept QUIC connections on `endpoint` until `shutdown`; each admitted
/// one is relayed on `tracker` with the settings current when it arrived.
/// On shutdown, open connections are closed (both legs).
pub async fn serve(
    endpoint: quinn::Endpoint,
    settings: Arc<ArcSwap<RelaySettings>>,
    gate: Arc<Gate>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let upstream = match upstream_endpoint() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot open a UDP socket towards QUIC backends; relay not serving");
            endpoint.close(pipe::PEER_LOST, b"relay unavailable");
            return;
        }
    };
    crate::endpoint::accept_loop(
        &endpoint,
        &settings,
        &gate,
        &shutdown,
        &tracker,
        |incoming, pass, snapshot| {
            connection(incoming, pass, snapshot, upstream.clone(), shutdown.clone())
        },
    )
    .await;
    // Refuse late arrivals and let the close frames of the connections
    // closing now reach their peers before the process exits.
    endpoint.set_server_config(None);
    tracker.spawn(async move {
        let idle = async { tokio::join!(endpoint.wait_idle(), upstream.wait_idle()) };
        let _ = tokio::time::timeout(CLOSE_FLUSH, idle).await;
    });
}

/// One client socket for every backend leg of this listener: dual-stack
/// when the host allows it, else IPv4 only.
fn upstream_endpoint() -> std::io::Result<quinn::Endpoint> {
    use eg_http::connector::tuned_client_endpoint;
    tuned_client_endpoint(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
        .or_else(|_| tuned_client_endpoint(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))))
}

async fn connection(
    incoming: quinn::Incoming,
    mut pass: Pass,
    settings: Arc<RelaySettings>,
    upstream: quinn::Endpoint,
    shutdown: CancellationToken,
) {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC connection not accepted");
            return;
        }
    };
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        h = tokio::time::timeout(settings.handshake_timeout, connecting) => h,
    };
    pass.handshake_done();
    let client = match handshake {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "QUIC handshake timed out");
            return;
        }
    };
    let alpn = negotiated_alpn(&client);
    let dialed = tokio::select! {
        () = shutdown.cancelled() => {
            client.close(pipe::SHUTTING_DOWN, b"gateway shutting down");
            return;
        }
        d = dial(&settings, &upstream, peer, alpn.as_deref()) => d,
    };
    let Some((in_flight, backend)) = dialed else {
        client.close(pipe::PEER_LOST, b"no backend reachable");
        return;
    };
    let active = metrics()
        .connections_active
        .with_label_values(&[&settings.label]);
    active.inc();
    let bounds = pipe::Bounds {
        dgram_queue_cap: settings.dgram_queue_cap,
        max_relay_streams: settings.max_relay_streams,
        write_stall: settings.write_stall,
        drain: settings.drain,
    };
    // The snapshot is not needed while relaying; the pool guard is.
    drop(settings);
    let ended = pipe::relay(client, backend, bounds, shutdown).await;
    active.dec();
    // The connect was not yet a success: how the relay ended says (the
    // client going away or idle is nobody's fault but the client's).
    in_flight.settle(if ended.backend_failed {
        eg_balancer::Outcome::Failure
    } else {
        eg_balancer::Outcome::Success
    });
    drop(pass);
}

/// The protocol the client and the relay agreed on in the handshake.
fn negotiated_alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

/// Connect to the first backend that completes a verified QUIC handshake
/// offering `alpn`, trying each at most once.
async fn dial(
    settings: &RelaySettings,
    upstream: &quinn::Endpoint,
    peer: SocketAddr,
    alpn: Option<&[u8]>,
) -> Option<(InFlight, quinn::Connection)> {
    let pool = &settings.pool;
    pool.dial_first(Some(peer.ip()), |backend| async move {
        let attempt = tokio::time::timeout(
            settings.connect_timeout,
            connect(settings, upstream, backend.index, &backend.address, alpn),
        )
        .await;
        let outcome = match attempt {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(why)) => {
                tracing::debug!(backend = %backend.address, error = %why, "QUIC backend connect failed");
                Err("refused")
            }
            Err(_) => Err("timeout"),
        };
        count(&pool.name, &backend.address, outcome.as_ref().map_or_else(|why| *why, |_| "ok"));
        outcome
    })
    .await
}

fn count(pool: &str, backend: &str, outcome: &str) {
    metrics()
        .backend_connect_total
        .with_label_values(&[pool, backend, outcome])
        .inc();
}

async fn connect(
    settings: &RelaySettings,
    upstream: &quinn::Endpoint,
    index: usize,
    address: &str,
    alpn: Option<&[u8]>,
) -> Result<quinn::Connection, String> {
    let target = settings
        .targets
        .get(index)
        .ok_or("backend without TLS settings")?;
    let config = target
        .config(alpn)
        .ok_or("negotiated ALPN not in raw_proxy.alpn")?;
    let addrs = tokio::net::lookup_host(address)
        .await
        .map_err(|e| e.to_string())?;
    let mut last = format!("{address} resolved to no address");
    for addr in addrs {
        let connecting = match upstream.connect_with(config.clone(), addr, &target.server_name) {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        match connecting.await {
            Ok(conn) => return Ok(conn),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_h3;
