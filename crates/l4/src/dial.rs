//! Choosing and connecting to a backend, moving on to the next one when a
//! dial fails (bounded by the pool size).

use std::net::IpAddr;

use eg_balancer::InFlight;
use eg_runtime::metrics::metrics;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

use crate::L4Settings;

pub(crate) enum Upstream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connect to the first backend that answers, trying each at most once.
/// The caller settles the backend's outcome when the relay ends.
pub(crate) async fn dial(settings: &L4Settings, client_ip: IpAddr) -> Option<(InFlight, Upstream)> {
    let pool = &settings.pool;
    pool.dial_first(Some(client_ip), |backend| async move {
        let outcome = match timeout(
            settings.connect_timeout,
            TcpStream::connect(&backend.address),
        )
        .await
        {
            Ok(Ok(stream)) => upgrade(settings, backend.index, stream).await,
            Ok(Err(e)) => {
                tracing::debug!(backend = %backend.address, error = %e, "backend connect failed");
                Err("refused")
            }
            Err(_) => Err("timeout"),
        };
        count(
            &pool.name,
            &backend.address,
            outcome.as_ref().map_or_else(|why| *why, |_| "ok"),
        );
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

async fn upgrade(
    settings: &L4Settings,
    index: usize,
    stream: TcpStream,
) -> Result<Upstream, &'static str> {
    let _ = stream.set_nodelay(true);
    let Some(Some(tls)) = settings.upstream_tls.get(index) else {
        return Ok(Upstream::Plain(stream));
    };
    match timeout(
        settings.handshake_timeout,
        tls.connector.connect(tls.server_name.clone(), stream),
    )
    .await
    {
        Ok(Ok(s)) => Ok(Upstream::Tls(Box::new(s))),
        Ok(Err(e)) => {
            eg_runtime::warn_limited!(error = %e, "backend TLS handshake failed");
            Err("tls_error")
        }
        Err(_) => Err("tls_timeout"),
    }
}
