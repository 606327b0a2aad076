//! One `tcp` or `tls` connection: optional TLS termination, dial, relay.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use eg_runtime::{accept_loop, Admission, CancellationToken, Labelled, TaskTracker};
use tokio::net::{TcpListener, TcpStream};

use crate::dial::{dial, Upstream};
use eg_balancer::Outcome;

use crate::relay::relay;
use crate::L4Settings;

impl Labelled for L4Settings {
    fn label(&self) -> &str {
        &self.label
    }
}

/// Accept until `shutdown` fires; each connection runs on `tracker`.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<ArcSwap<L4Settings>>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    accept_loop(listener, settings, admission, shutdown, tracker, connection).await;
}

async fn connection(stream: TcpStream, peer: SocketAddr, settings: Arc<L4Settings>) {
    let result = match &settings.acceptor {
        None => forward(stream, peer, &settings).await,
        Some(acceptor) => {
            let accept = acceptor.accept(stream);
            let within = settings.handshake_timeout;
            match eg_runtime::handshake::bounded(within, accept, peer, "client TLS handshake").await
            {
                Some(tls) => forward(tls, peer, &settings).await,
                None => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "relay ended with an error");
    }
}

async fn forward<C>(client: C, peer: SocketAddr, settings: &L4Settings) -> std::io::Result<()>
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some((in_flight, upstream)) = dial(settings, peer.ip()).await else {
        eg_runtime::warn_limited!(listener = %settings.label, %peer, "no backend reachable; closing client");
        return Ok(());
    };
    let relayed = match upstream {
        Upstream::Plain(b) => relay(client, b, settings.idle_timeout).await,
        Upstream::Tls(b) => relay(client, *b, settings.idle_timeout).await,
    };
    // The dial was not yet a success: how the relay ended says (a client's
    // reset or an idle timeout is nobody's fault but the client's).
    in_flight.settle(if relayed.backend_failed {
        Outcome::Failure
    } else {
        Outcome::Success
    });
    let (up, down) = relayed.result?;
    tracing::debug!(%peer, up, down, "relay finished");
    Ok(())
}
