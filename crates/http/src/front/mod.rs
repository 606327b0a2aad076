//! Front adapters for `h1` (HTTP/1.1, and HTTP/2 with prior knowledge) and
//! `h1s` (TLS; HTTP/2 or HTTP/1.1 by ALPN). Each turns a connection into
//! `http::Request`s for the core through hyper.

mod conn;
mod framing;
mod h1_wire;
mod h2_guard;
mod tracked_io;
mod watch;

use std::sync::Arc;

use arc_swap::ArcSwap;
use eg_runtime::{accept_loop, Admission, CancellationToken, Labelled, TaskTracker};
use tokio::net::TcpListener;

use crate::settings::HttpSettings;

impl Labelled for HttpSettings {
    fn label(&self) -> &str {
        &self.label
    }
}

/// Accept until `shutdown` fires; open connections are told to finish
/// (H1 `Connection: close`, H2 GOAWAY) when it does.
pub async fn serve(
    listener: TcpListener,
    settings: Arc<ArcSwap<HttpSettings>>,
    admission: Arc<Admission>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let drain = shutdown.clone();
    let live = Arc::clone(&settings);
    accept_loop(
        listener,
        settings,
        admission,
        shutdown,
        tracker,
        move |stream, peer, settings| {
            conn::connection(stream, peer, settings, Arc::clone(&live), drain.clone())
        },
    )
    .await;
}
