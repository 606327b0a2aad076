//! The HTTP/3 front: each request stream of each QUIC connection becomes
//! an `http::Request` for the same proxy core H1 and H2 use. Connections
//! are recycled (GOAWAY) after `max_requests_per_h3_connection`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use eg_http::core::{self, ConnInfo};
use eg_http::{h3io, HttpSettings};
use eg_runtime::metrics::metrics;
use eg_runtime::{CancellationToken, TaskTracker};
use http::{Request, Response, Version};

use crate::endpoint::{Gate, Pass};

/// RFC 9114 §8.1: the request was not processed; safe to retry.
const H3_REQUEST_REJECTED: u64 = 0x010b;

/// What an H3 listener needs beyond its HTTP settings.
#[derive(Debug, Clone, Copy)]
pub struct H3Limits {
    pub max_requests_per_connection: u32,
    pub handshake_timeout: Duration,
}

/// Accept QUIC connections until `shutdown`, then ask each open one to
/// finish (GOAWAY) and stop.
pub async fn serve(
    endpoint: quinn::Endpoint,
    settings: Arc<ArcSwap<HttpSettings>>,
    gate: Arc<Gate>,
    limits: H3Limits,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    crate::endpoint::accept_loop(
        &endpoint,
        &settings,
        &gate,
        &shutdown,
        &tracker,
        |incoming, pass, snapshot| connection(incoming, pass, snapshot, limits, shutdown.clone()),
    )
    .await;
}

async fn connection(
    incoming: quinn::Incoming,
    mut pass: Pass,
    settings: Arc<HttpSettings>,
    limits: H3Limits,
    shutdown: CancellationToken,
) {
    let peer = incoming.remote_address();
    let conn = match incoming.accept() {
        Ok(connecting) => match tokio::time::timeout(limits.handshake_timeout, connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                return;
            }
            Err(_) => {
                metrics()
                    .defence_trips_total
                    .with_label_values(&["handshake_timeout"])
                    .inc();
                return;
            }
        },
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC connection not accepted");
            return;
        }
    };
    pass.handshake_done();
    let active = metrics()
        .connections_active
        .with_label_values(&[&settings.label]);
    active.inc();
    serve_connection(conn, peer, settings, limits, shutdown).await;
    active.dec();
    drop(pass);
}

fn sni_of(conn: &quinn::Connection) -> Option<String> {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.server_name)
        .map(|s| s.to_ascii_lowercase())
}

async fn serve_connection(
    conn: quinn::Connection,
    peer: SocketAddr,
    settings: Arc<HttpSettings>,
    limits: H3Limits,
    shutdown: CancellationToken,
) {
    let info = Arc::new(ConnInfo {
        peer,
        tls: true,
        sni: sni_of(&conn),
    });
    let mut h3 = match h3::server::builder()
        .max_field_section_size(u64::from(settings.h2.max_header_list_size))
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await
    {
        Ok(h3) => h3,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "HTTP/3 setup failed");
            return;
        }
    };
    let mut served = 0u32;
    let mut closing = false;
    // In-flight requests of this connection: the connection is kept until
    // they finish, so a GOAWAY never cuts a request it promised to serve.
    let mut requests = tokio::task::JoinSet::new();
    loop {
        // Reap finished requests so the set stays as small as the
        // connection's concurrent streams.
        while requests.try_join_next().is_some() {}
        let next = tokio::select! {
            next = h3.accept() => next,
            () = shutdown.cancelled(), if !closing => {
                closing = true;
                let _ = h3.shutdown(1).await;
                continue;
            }
        };
        match next {
            Ok(Some(resolver)) if closing => {
                // Past our GOAWAY: refuse as unprocessed, so the client can
                // safely send it again on a new connection.
                requests.spawn(async move {
                    if let Ok((_, mut stream)) = resolver.resolve_request().await {
                        let code = h3::error::Code::from(H3_REQUEST_REJECTED);
                        stream.stop_sending(code);
                        stream.stop_stream(code);
                    }
                });
            }
            Ok(Some(resolver)) => {
                served = served.saturating_add(1);
                let (settings, info) = (Arc::clone(&settings), Arc::clone(&info));
                requests.spawn(async move {
                    match resolver.resolve_request().await {
                        Ok((req, stream)) => {
                            if let Err(e) = request(req, stream, &settings, &info).await {
                                tracing::debug!(error = %e, "HTTP/3 request ended with an error");
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "HTTP/3 request head refused"),
                    }
                });
                if served >= limits.max_requests_per_connection && !closing {
                    // Recycle: GOAWAY names the stream after this one, so
                    // this request completes and the client moves later
                    // ones to a new connection. (h3's `shutdown(0)` would
                    // name this very stream as unprocessed.)
                    closing = true;
                    let _ = h3.shutdown(1).await;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection ended");
                break;
            }
        }
    }
    while requests.join_next().await.is_some() {}
    drop(h3);
}

async fn request<S>(
    req: Request<()>,
    stream: h3::server::RequestStream<S, Bytes>,
    settings: &HttpSettings,
    info: &ConnInfo,
) -> Result<(), eg_http::body::BoxError>
where
    S: h3::quic::BidiStream<Bytes> + Send + 'static,
    S::SendStream: Send + 'static,
    S::RecvStream: Send + 'static,
{
    let (mut send, recv) = stream.split();
    let body = h3io::recv_body(recv);
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    let resp = core::handle(settings, info, Request::from_parts(parts, body)).await;
    let (mut parts, body) = resp.into_parts();
    // Connection-level headers do not exist in HTTP/3.
    parts.headers.remove(http::header::CONNECTION);
    send.send_response(Response::from_parts(parts, ())).await?;
    h3io::send_body(body, &mut send).await
}
