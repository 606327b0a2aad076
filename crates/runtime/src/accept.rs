//! The accept loop every TCP listener runs: admission caps, connection
//! metrics, a settings snapshot per connection, drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::metrics;
use crate::{Admission, Admitted};

/// Pause after an accept error such as EMFILE, so a full fd table does
/// not turn the loop into a busy spin while connections drain.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// A listener's live settings carry its metric label.
pub trait Labelled {
    fn label(&self) -> &str;
}

/// Accept until `shutdown` fires. Each admitted connection runs `handle`
/// on `tracker` with the settings current when it was accepted.
pub async fn accept_loop<S, F, Fut>(
    listener: TcpListener,
    settings: Arc<ArcSwap<S>>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    handle: F,
) where
    S: Labelled + Send + Sync + 'static,
    F: Fn(TcpStream, SocketAddr, Arc<S>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                crate::warn_limited!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let snapshot = settings.load_full();
        let label = snapshot.label().to_owned();
        let admitted: Admitted = match admission.try_admit(peer.ip()) {
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
        // Counted once admitted: refused connections count as defence trips.
        metrics()
            .connections_total
            .with_label_values(&[&label])
            .inc();
        let _ = stream.set_nodelay(true);
        let work = handle(stream, peer, snapshot);
        tracker.spawn(async move {
            let active = metrics().connections_active.with_label_values(&[&label]);
            active.inc();
            work.await;
            active.dec();
            drop(admitted);
        });
    }
}
