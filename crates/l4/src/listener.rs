//! The accept loop of a `tcp` or `tls` listener.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use eg_runtime::metrics::metrics;
use eg_runtime::{Admission, Admitted, CancellationToken, TaskTracker};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use crate::dial::{dial, Upstream};
use crate::relay::relay;
use crate::L4Settings;

/// Pause after an accept error such as EMFILE, so a full fd table does
/// not turn the loop into a busy spin while connections drain.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accept until `shutdown` fires; each connection runs on `tracker` and
/// reads the settings current when it was accepted.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<ArcSwap<L4Settings>>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let snapshot = settings.load_full();
        metrics()
            .connections_total
            .with_label_values(&[&snapshot.label])
            .inc();
        let admitted = match admission.try_admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(why) => {
                metrics()
                    .defence_trips_total
                    .with_label_values(&[why.as_str()])
                    .inc();
                tracing::debug!(%peer, defence = why.as_str(), "connection refused");
                // Reset at once: the refused peer holds no server state.
                let _ = stream.set_zero_linger();
                drop(stream);
                continue;
            }
        };
        tracker.spawn(connection(stream, peer, snapshot, admitted));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<L4Settings>,
    admitted: Admitted,
) {
    let _ = stream.set_nodelay(true);
    let active = metrics()
        .connections_active
        .with_label_values(&[&settings.label]);
    active.inc();
    let result = match &settings.acceptor {
        None => forward(stream, peer, &settings).await,
        Some(acceptor) => {
            match timeout(settings.handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => forward(tls, peer, &settings).await,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "client TLS handshake failed");
                    Ok(())
                }
                Err(_) => {
                    metrics()
                        .defence_trips_total
                        .with_label_values(&["handshake_timeout"])
                        .inc();
                    tracing::debug!(%peer, "client TLS handshake timed out");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "relay ended with an error");
    }
    active.dec();
    drop(admitted);
}

async fn forward<C>(client: C, peer: SocketAddr, settings: &L4Settings) -> std::io::Result<()>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some((_in_flight, upstream)) = dial(settings, peer.ip()).await else {
        tracing::warn!(listener = %settings.label, %peer, "no backend reachable; closing client");
        return Ok(());
    };
    let (up, down) = match upstream {
        Upstream::Plain(b) => relay(client, b, settings.idle_timeout).await?,
        Upstream::Tls(b) => relay(client, *b, settings.idle_timeout).await?,
    };
    tracing::debug!(%peer, up, down, "relay finished");
    Ok(())
}
