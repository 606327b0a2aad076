//! The HTTP/3 front: each request stream of each QUIC connection becomes
//! an `http::Request` for the same proxy core H1 and H2 use. Connections
//! are recycled (GOAWAY) after `max_requests_per_h3_connection`, and closed
//! (GOAWAY) after `idle_timeout_ms` without a request stream. A request's
//! HEADERS must arrive within `header_timeout_ms`; each response write
//! within `body_timeout_ms`, all of them within `total_timeout_ms`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use eg_http::core::{self, ConnInfo};
use eg_http::{h3io, HttpSettings};
use eg_runtime::metrics::metrics;
use eg_runtime::{CancellationToken, TaskTracker};
use h3::quic::SendStream as _;
use h3_quinn::BidiStream;
use http::{Request, Response, Version};
use tokio::time::Instant;

use crate::early_data::Handshake;
use crate::endpoint::{Gate, Pass};

/// RFC 9114 §8.1: the request was not processed; safe to retry.
const H3_REQUEST_REJECTED: u64 = 0x010b;
/// RFC 9114 §8.1: the stream ended (here: stalled) before a complete
/// request; used when HEADERS do not arrive within `header_timeout_ms`.
const H3_REQUEST_INCOMPLETE: u64 = 0x010d;
/// RFC 9114 §8.1: no error, the code of a graceful close.
const H3_NO_ERROR: u32 = 0x100;

/// After the idle GOAWAY, how long the client has to close the connection
/// itself before we do: one generous round trip for the GOAWAY to arrive
/// (closing at once could discard it with the connection), bounded so an
/// idle client cannot keep the connection.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;
type Stream = h3::server::RequestStream<BidiStream<Bytes>, Bytes>;
type SendHalf = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// What an H3 listener needs beyond its HTTP settings.
#[derive(Debug, Clone, Copy)]
pub struct H3Limits {
    pub max_requests_per_connection: u32,
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
        |incoming, pass, snapshot| {
            let live = Arc::clone(&settings);
            connection(incoming, pass, snapshot, live, limits, shutdown.clone())
        },
    )
    .await;
}

/// `settings`: the snapshot at accept, for the connection's own limits;
/// `live`: the listener's current settings, read anew by each request so a
/// reload's routes, pools and drains reach connections opened before it.
async fn connection(
    incoming: quinn::Incoming,
    mut pass: Pass,
    settings: Arc<HttpSettings>,
    live: Arc<ArcSwap<HttpSettings>>,
    limits: H3Limits,
    shutdown: CancellationToken,
) {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "QUIC connection not accepted");
            return;
        }
    };
    let within = settings.handshake_timeout;
    let active = metrics()
        .connections_active
        .with_label_values(&[&settings.label]);
    // With 0-RTT on, requests are served from the first flight (0.5-RTT);
    // a server-side conversion always succeeds.
    let connecting = if settings.allow_0rtt {
        match connecting.into_0rtt() {
            Ok((conn, accepted)) => {
                let (handshake, watcher) = Handshake::watch(accepted, conn.clone(), within);
                let watcher = async {
                    if watcher.await {
                        pass.handshake_done();
                    }
                };
                active.inc();
                let serve =
                    serve_connection(conn, peer, settings, live, limits, shutdown, handshake);
                tokio::join!(watcher, serve);
                active.dec();
                return;
            }
            Err(connecting) => connecting,
        }
    } else {
        connecting
    };
    let Some(conn) =
        eg_runtime::handshake::bounded(within, connecting, peer, "QUIC handshake").await
    else {
        return;
    };
    pass.handshake_done();
    active.inc();
    let handshake = Handshake::complete();
    serve_connection(conn, peer, settings, live, limits, shutdown, handshake).await;
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
    live: Arc<ArcSwap<HttpSettings>>,
    limits: H3Limits,
    shutdown: CancellationToken,
    handshake: Handshake,
) {
    let info = Arc::new(ConnInfo::new(peer, true, sni_of(&conn)));
    let quic = conn.clone();
    let mut h3 = match h3::server::builder()
        .max_field_section_size(u64::from(settings.h2.max_header_list_size))
        // SETTINGS_ENABLE_CONNECT_PROTOCOL = 1: WebSocket over HTTP/3 (RFC 9220).
        .enable_extended_connect(settings.websocket.h3_extended_connect)
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
    // Since when no request stream has been open (None while one is).
    // Only request streams count: PINGs and control-stream frames do not
    // keep a connection from being idle.
    let mut idle_since = Some(Instant::now());
    loop {
        // Reap finished requests so the set stays as small as the
        // connection's concurrent streams.
        while requests.try_join_next().is_some() {}
        if requests.is_empty() {
            idle_since.get_or_insert_with(Instant::now);
        } else {
            idle_since = None;
        }
        let idle_at = idle_since.map(|t| t + settings.limits.idle_timeout);
        let next = tokio::select! {
            next = h3.accept() => next,
            Some(_) = requests.join_next(), if !requests.is_empty() => continue,
            () = sleep_until_some(idle_at), if idle_at.is_some() => {
                count("idle_timeout");
                if !closing {
                    // GOAWAY names the next stream: a request racing it was
                    // not processed and may be sent again elsewhere.
                    let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, h3.shutdown(1)).await;
                }
                let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, quic.closed()).await;
                quic.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"idle");
                break;
            }
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
                let by = Instant::now() + settings.limits.header_timeout;
                requests.spawn(async move {
                    if let Some((_, mut stream)) = read_head(resolver, by).await {
                        let code = h3::error::Code::from(H3_REQUEST_REJECTED);
                        stream.stop_sending(code);
                        stream.stop_stream(code);
                    }
                });
            }
            Ok(Some(resolver)) => {
                served = served.saturating_add(1);
                let (settings, info) = (live.load_full(), Arc::clone(&info));
                let mut handshake = handshake.clone();
                // Boxed: the request's state machine (the core's proxy
                // future inside) is ~12 KB, and tokio moves a task's future
                // by value on spawn, into its cell and out at join; behind
                // a pointer each of those moves copies 16 bytes instead.
                requests.spawn(Box::pin(async move {
                    let started = Instant::now();
                    let by = started + settings.limits.header_timeout;
                    let Some((mut req, stream)) = read_head(resolver, by).await else {
                        return;
                    };
                    if !handshake.admit(&mut req, &settings.label).await {
                        return;
                    }
                    if let Err(e) = request(req, stream, &settings, &info, started).await {
                        tracing::debug!(error = %e, "HTTP/3 request ended with an error");
                    }
                }));
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

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn count(defence: &str) {
    metrics()
        .defence_trips_total
        .with_label_values(&[defence])
        .inc();
}

/// Read a request's HEADERS within `within`. On expiry the stream is reset
/// (H3_REQUEST_INCOMPLETE; dropping it stops the receiving side) and the
/// `header_timeout` defence counted. Other failures were answered by h3.
async fn read_head(mut resolver: Resolver, by: Instant) -> Option<(Request<()>, Stream)> {
    let first = std::future::poll_fn(|cx| resolver.frame_stream.poll_next(cx));
    let Some(frame) = h3io::by_deadline(by, first).await else {
        count("header_timeout");
        resolver.frame_stream.reset(H3_REQUEST_INCOMPLETE);
        return None;
    };
    let resolved = match resolver.accept_with_frame(frame) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 request head refused");
            return None;
        }
    };
    // Only a 431 answer is written here; bounded all the same.
    match h3io::by_deadline(by, resolved.resolve()).await {
        Some(Ok(pair)) => Some(pair),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "HTTP/3 request head refused");
            None
        }
        None => {
            count("header_timeout");
            None
        }
    }
}

async fn request(
    req: Request<()>,
    stream: Stream,
    settings: &HttpSettings,
    info: &ConnInfo,
    started: Instant,
) -> Result<(), eg_http::body::BoxError> {
    // A gRPC call runs to its deadline, not to total_timeout_ms.
    let budget = settings
        .grpc
        .front_budget(&req, settings.limits.total_timeout);
    let (mut send, recv) = stream.split();
    let (mut parts, ()) = req.into_parts();
    parts.version = Version::HTTP_3;
    let websocket = parts.method == http::Method::CONNECT
        && parts.extensions.get::<h3::ext::Protocol>() == Some(&h3::ext::Protocol::WEBSOCKET);
    if websocket {
        return tunnel_request(parts, send, recv, settings, info, started).await;
    }
    let body = h3io::recv_body(recv, h3io::H3_NO_ERROR);
    let resp = core::handle(settings, info, Request::from_parts(parts, body)).await;
    let (body, pace) = send_head(resp, &mut send, settings, started + budget).await?;
    h3io::send_body(body, &mut send, Some(pace)).await
}

/// Write the response head within its pace; the body and the pace for
/// the rest. A client that stops granting credit holds each write: bound
/// them, so it cannot hold the response, its backend connection and the
/// balancer's in-flight slot for ever.
async fn send_head(
    resp: Response<eg_http::body::ProxyBody>,
    send: &mut SendHalf,
    settings: &HttpSettings,
    deadline: Instant,
) -> Result<(eg_http::body::ProxyBody, h3io::Pace), eg_http::body::BoxError> {
    let (parts, body) = resp.into_parts();
    let pace = h3io::Pace {
        progress: settings.limits.body_timeout,
        deadline,
    };
    let head = Response::from_parts(parts, ());
    let sent = pace
        .write(async { Ok(send.send_response(head).await?) })
        .await;
    if let Err(e) = sent {
        send.stop_stream(h3::error::Code::from(h3io::H3_REQUEST_CANCELLED));
        return Err(e);
    }
    Ok((body, pace))
}

/// An extended CONNECT for a WebSocket (RFC 9220): the core answers it
/// like any request; on a 2xx the stream becomes the tunnel the core's
/// relay reads (it waits for it through the request's upgrade slot).
async fn tunnel_request(
    mut parts: http::request::Parts,
    mut send: SendHalf,
    recv: RecvHalf,
    settings: &HttpSettings,
    info: &ConnInfo,
    started: Instant,
) -> Result<(), eg_http::body::BoxError> {
    use eg_http::websocket::{BoxIo, ClientUpgrade, ClientUpgradeSlot};
    let (ready, stream) = tokio::sync::oneshot::channel::<BoxIo>();
    parts
        .extensions
        .insert(hyper::ext::Protocol::from_static("websocket"));
    parts
        .extensions
        .insert(ClientUpgradeSlot::new(ClientUpgrade::new(async move {
            stream
                .await
                .map_err(|_| "the HTTP/3 request stream went away before its answer".into())
        })));
    let req = Request::from_parts(parts, eg_http::body::empty());
    let resp = core::handle(settings, info, req).await;
    let tunnel = resp.status().is_success();
    let head_by = started + settings.limits.total_timeout;
    let (body, pace) = send_head(resp, &mut send, settings, head_by).await?;
    if tunnel {
        // The relay owns the stream from here; a reload or total_timeout_ms
        // does not end it, the WebSocket limits do.
        let (io, pump) = h3io::tunnel(send, recv);
        if ready.send(Box::new(io)).is_ok() {
            pump.await;
        }
        return Ok(());
    }
    h3io::send_body(body, &mut send, Some(pace)).await
}
