//! Choosing and connecting to a backend, moving on to the next one when a
//! dial fails (bounded by the pool size).

use std::net::IpAddr;

use eg_balancer::{InFlight, Outcome, PickContext};
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
pub(crate) async fn dial(settings: &L4Settings, client_ip: IpAddr) -> Option<(InFlight, Upstream)> {
    let pool = &settings.pool;
    let mut tried = Vec::with_capacity(pool.backends().len());
    while tried.len() < pool.backends().len() {
        let ctx = PickContext {
            client_ip: Some(client_ip),
            exclude: &tried,
            ..Default::default()
        };
        let picked = pool.pick(&ctx)?;
        let backend = picked.backend();
        let outcome = match timeout(
            settings.connect_timeout,
            TcpStream::connect(&backend.address),
        )
        .await
        {
            Ok(Ok(stream)) => match upgrade(settings, backend.index, stream).await {
                Ok(up) => {
                    count(&pool.name, &backend.address, "ok");
                    picked.report(Outcome::Success);
                    return Some((picked, up));
                }
                Err(why) => why,
            },
            Ok(Err(e)) => {
                tracing::debug!(backend = %backend.address, error = %e, "backend connect failed");
                "refused"
            }
            Err(_) => "timeout",
        };
        count(&pool.name, &backend.address, outcome);
        picked.report(Outcome::Failure);
        tried.push(backend.index);
    }
    None
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
            tracing::warn!(error = %e, "backend TLS handshake failed");
            Err("tls_error")
        }
        Err(_) => Err("tls_timeout"),
    }
}
