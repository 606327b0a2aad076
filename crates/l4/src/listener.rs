//! One `tcp` or `tls` connection: optional TLS termination, dial, relay.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use eg_runtime::{accept_loop, Admission, CancellationToken, Labelled, TaskTracker};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;

use crate::dial::{dial, Upstream};
use eg_balancer::Outcome;

use crate::relay::{relay, relay_tcp};
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
        None => forward(Client::Plain(stream), peer, &settings).await,
        Some(acceptor) => {
            let accept = acceptor.accept(stream);
            let within = settings.handshake_timeout;
            match eg_runtime::handshake::bounded(within, accept, peer, "client TLS handshake").await
            {
                Some(tls) => forward(Client::Tls(Box::new(tls)), peer, &settings).await,
                None => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "relay ended with an error");
    }
}

/// The client side of a relay: as accepted, or after TLS termination.
enum Client {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

async fn forward(client: Client, peer: SocketAddr, settings: &L4Settings) -> std::io::Result<()> {
    let Some((in_flight, upstream)) = dial(settings, peer.ip()).await else {
        eg_runtime::warn_limited!(listener = %settings.label, %peer, "no backend reachable; closing client");
        return Ok(());
    };
    let idle = settings.idle_timeout;
    // Only two plain sockets can relay in the kernel; TLS on either side
    // needs the bytes in user space.
    let relayed = match (client, upstream) {
        (Client::Plain(c), Upstream::Plain(b)) => relay_tcp(c, b, idle).await,
        (Client::Plain(c), Upstream::Tls(b)) => relay(c, *b, idle).await,
        (Client::Tls(c), Upstream::Plain(b)) => relay(*c, b, idle).await,
        (Client::Tls(c), Upstream::Tls(b)) => relay(*c, *b, idle).await,
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
