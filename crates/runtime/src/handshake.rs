//! The bound every client handshake (TLS, QUIC) runs under.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use crate::metrics::metrics;

/// Run a client's `handshake` within `within`. `None` when it failed
/// (logged at debug as `what`: a client's fault, nothing to alert on) or
/// ran out of time (counted as the `handshake_timeout` defence).
pub async fn bounded<T, E: Display>(
    within: Duration,
    handshake: impl Future<Output = Result<T, E>>,
    peer: SocketAddr,
    what: &'static str,
) -> Option<T> {
    match tokio::time::timeout(within, handshake).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "{what} failed");
            None
        }
        Err(_) => {
            count_timeout();
            tracing::debug!(%peer, "{what} timed out");
            None
        }
    }
}

/// Count a handshake cut at its deadline.
pub fn count_timeout() {
    metrics()
        .defence_trips_total
        .with_label_values(&["handshake_timeout"])
        .inc();
}
