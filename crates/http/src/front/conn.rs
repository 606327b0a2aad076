//! One client connection: TLS (h1s), protocol choice, hyper's server with
//! our limits, per-connection request cap, graceful close. HTTP/1 reads
//! pass the framing tracker (`framing`), whose verdicts mark requests whose
//! framing hyper tidied away (`core::validate::AmbiguousFraming`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use eg_runtime::metrics::metrics;
use eg_runtime::CancellationToken;
use http::Response;
use http::{Method, Request, StatusCode, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::framing::{Verdict, MAX_HEAD_BYTES};
use super::h1_wire;
use super::h2_guard::{GuardState, H2Guard};
use super::tracked_io::{TrackedIo, VerdictHandle};
use super::watch::{ConnExpiry, ConnWatch, Progress, StreamExec, Watched, GOAWAY_GRACE};
use crate::core::validate::AmbiguousFraming;
use crate::core::{self, ConnInfo};
use crate::settings::HttpSettings;
use crate::websocket::Hold;

/// `settings`: the snapshot at accept, for the connection's own limits and
/// TLS; `live`: the listener's current settings, which each request reads
/// anew, so a reload's routes, pools and drains reach connections opened
/// before it.
pub(super) async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<HttpSettings>,
    live: Arc<ArcSwap<HttpSettings>>,
    drain: CancellationToken,
) {
    let accepted = Instant::now();
    // The first request (cleartext) or the handshake (TLS) is due within
    // this bound from accept, whatever the wait below took of it.
    let within = match settings.acceptor {
        Some(_) => settings.handshake_timeout,
        None => settings.limits.header_timeout,
    };
    if !first_bytes(
        &stream,
        accepted + within,
        &drain,
        settings.acceptor.is_some(),
    )
    .await
    {
        return;
    }
    let Some(acceptor) = settings.acceptor.clone() else {
        let info = ConnInfo::new(peer, false, None);
        // HTTP/1 or, after the preface, HTTP/2 with prior knowledge.
        let watch = ConnWatch::new(accepted);
        let (io, verdicts) = TrackedIo::new(stream, true);
        let max_list = settings.h2.max_header_list_size;
        let (io, guard) = H2Guard::new(io, Arc::clone(&watch), max_list, false);
        let conn = Conn {
            info,
            alpn_h2: None,
            verdicts: Some(verdicts),
            guard: Some(guard),
            watch,
            live,
        };
        Box::pin(serve(io, conn, settings, drain)).await;
        return;
    };
    let accept = acceptor.accept(stream);
    let within = within.saturating_sub(accepted.elapsed());
    let Some(tls) =
        eg_runtime::handshake::bounded(within, accept, peer, "client TLS handshake").await
    else {
        return;
    };
    let (_, session) = tls.get_ref();
    let sni = session.server_name().map(str::to_ascii_lowercase);
    let h2 = session.alpn_protocol() == Some(b"h2");
    let info = ConnInfo::new(peer, true, sni);
    let watch = ConnWatch::new(Instant::now());
    if h2 {
        let max_list = settings.h2.max_header_list_size;
        let (io, guard) = H2Guard::new(tls, Arc::clone(&watch), max_list, true);
        let conn = Conn {
            info,
            alpn_h2: Some(true),
            verdicts: None,
            guard: Some(guard),
            watch,
            live,
        };
        Box::pin(serve(io, conn, settings, drain)).await;
    } else {
        let (io, verdicts) = TrackedIo::new(tls, false);
        let conn = Conn {
            info,
            alpn_h2: Some(false),
            verdicts: Some(verdicts),
            guard: None,
            watch,
            live,
        };
        Box::pin(serve(io, conn, settings, drain)).await;
    }
}

/// Wait for the client's first bytes, until `by`; `false` when the
/// connection is to end instead (closed, silent past `by`, or draining).
/// Until then the connection holds no buffers: hyper's read and write
/// buffers (8 KiB each) and a TLS session are set up once the peer has
/// sent something, so silent connections (a flood of them, or browsers'
/// preconnects) cost only their task. (The `serve` futures are boxed for
/// the same reason: inline, every connection's task would be their size
/// from accept.)
async fn first_bytes(
    stream: &TcpStream,
    by: Instant,
    drain: &CancellationToken,
    tls: bool,
) -> bool {
    tokio::select! {
        ready = tokio::time::timeout_at(by, stream.readable()) => match ready {
            Ok(ready) => ready.is_ok(),
            Err(_) => {
                if tls {
                    eg_runtime::handshake::count_timeout();
                } else {
                    trip("header_timeout");
                }
                false
            }
        },
        () = drain.cancelled() => false,
    }
}

/// One client connection as the serve loop sees it.
struct Conn {
    info: ConnInfo,
    /// `Some` when TLS chose the protocol, `None` to detect the HTTP/2
    /// preface on cleartext.
    alpn_h2: Option<bool>,
    /// The framing tracker's verdicts, when the IO may carry HTTP/1.
    verdicts: Option<VerdictHandle>,
    /// The HTTP/2 frame guard's state, when the IO may carry HTTP/2.
    guard: Option<Arc<GuardState>>,
    /// Its activity; from its epoch on, the first request is due within
    /// `header_timeout_ms`.
    watch: Arc<ConnWatch>,
    /// The listener's current settings, read per request.
    live: Arc<ArcSwap<HttpSettings>>,
}

async fn serve<I>(io: I, conn: Conn, settings: Arc<HttpSettings>, drain: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Conn {
        info,
        alpn_h2,
        verdicts,
        guard,
        watch,
        live,
    } = conn;
    let epoch = watch.epoch();
    let mut builder = auto::Builder::new(StreamExec {
        watch: Arc::clone(&watch),
    });
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.limits.header_timeout)
        // Heads over the tracker's bound get hyper's 431 (the tracker
        // refuses any that still slip through).
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let h2 = &settings.h2;
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(h2.max_concurrent_streams)
        .max_header_list_size(h2.max_header_list_size)
        .max_pending_accept_reset_streams(Some(h2.max_pending_accept_reset_streams as usize))
        .max_local_error_reset_streams(Some(h2.max_local_error_reset_streams as usize))
        .max_send_buf_size(h2.max_send_buf_size as usize)
        .keep_alive_interval(Some(std::time::Duration::from_millis(
            h2.keep_alive_interval_ms,
        )))
        .keep_alive_timeout(std::time::Duration::from_millis(h2.keep_alive_timeout_ms))
        .initial_stream_window_size(h2.initial_stream_window_size)
        .initial_connection_window_size(h2.initial_connection_window_size);
    if settings.websocket.h2_extended_connect {
        // SETTINGS_ENABLE_CONNECT_PROTOCOL = 1: WebSocket over HTTP/2 (RFC 8441).
        builder.http2().enable_connect_protocol();
    }
    let builder = match alpn_h2 {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None => builder,
    };

    let served = Arc::new(AtomicU32::new(0));
    let cap_reached = Arc::new(Notify::new());
    // Each protocol its own cap (0 = unlimited): HTTP/1.1's keep-alive
    // requests, HTTP/2's streams per connection.
    let unlimited = |cap: u32| if cap == 0 { u32::MAX } else { cap };
    let max_h1 = unlimited(settings.max_keepalive_requests);
    let max_h2 = unlimited(settings.h2.max_requests_per_connection);
    let limits = settings.limits.clone();
    let info = Arc::new(info);
    let service = {
        let cap_reached = Arc::clone(&cap_reached);
        let watch = Arc::clone(&watch);
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let settings = live.load_full();
            let progress = Progress::new(
                settings.limits.body_timeout,
                settings
                    .grpc
                    .front_budget(&req, settings.limits.total_timeout),
                req.version() < Version::HTTP_2,
            );
            let open = watch.open(&progress);
            let info = Arc::clone(&info);
            let cap_reached = Arc::clone(&cap_reached);
            let n = served.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            // hyper calls this once per HTTP/1 request, strictly in order:
            // take this request's verdict now, not in the future.
            let tracked = verdicts
                .as_ref()
                .filter(|_| req.version() < Version::HTTP_2);
            if tracked.and_then(VerdictHandle::next_request) == Some(Verdict::Ambiguous) {
                req.extensions_mut().insert(AmbiguousFraming);
            }
            let tracked = tracked.cloned();
            // Boxed: the request's future is kilobytes, and hyper moves it
            // several times per request (into its dispatcher; for HTTP/2
            // into the stream's task, whose every state change copies it).
            Box::pin(async move {
                let version = req.version();
                let connect = req.method() == Method::CONNECT;
                let mut resp = core::handle(&settings, &info, req).await;
                if let Some(verdicts) = &tracked {
                    let status = resp.status();
                    if status == StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success())
                    {
                        verdicts.tunnel();
                    }
                }
                let max = if version < Version::HTTP_2 {
                    max_h1
                } else {
                    max_h2
                };
                if version < Version::HTTP_2 {
                    h1_wire::response(&mut resp, n >= max);
                }
                if n >= max {
                    cap_reached.notify_one();
                }
                let (parts, body) = resp.into_parts();
                // A WebSocket keeps its request open (so the connection is
                // not idle) as long as the tunnel relays.
                let open = match parts.extensions.get::<Hold>() {
                    Some(hold) => {
                        hold.keep(Box::new(open));
                        None
                    }
                    None => Some(open),
                };
                Ok::<_, Infallible>(Response::from_parts(
                    parts,
                    Watched::new(body, progress, open),
                ))
            })
        })
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    // Set once the connection was told to close for idling: from then on
    // only `hard_close` bounds it.
    let mut idle_closed = false;
    let mut hard_close: Option<Instant> = None;
    let timer = tokio::time::sleep_until(epoch);
    tokio::pin!(timer);
    loop {
        let now = Instant::now();
        let (header, idle) = (limits.header_timeout, limits.idle_timeout);
        let mut at = if idle_closed {
            now + idle
        } else {
            watch.next_check(now, header, idle, limits.body_timeout)
        };
        let block_since = guard
            .as_ref()
            .and_then(|g| g.header_block_open_since(epoch));
        if let Some(since) = block_since {
            at = at.min(since + header);
        }
        if let Some(h) = hard_close {
            at = at.min(h);
        }
        timer.as_mut().reset(at);
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    // hyper's own head timer (every H1 request after the
                    // first) is the same defence as ours: count it alike.
                    let hyper_timeout = e
                        .downcast_ref::<hyper::Error>()
                        .is_some_and(hyper::Error::is_timeout);
                    if hyper_timeout {
                        trip("header_timeout");
                    }
                    tracing::debug!(error = %e, "client connection ended with an error");
                }
                return;
            }
            () = &mut timer => {
                let now = Instant::now();
                if hard_close.is_some_and(|h| now >= h) {
                    return;
                }
                if block_since.is_some_and(|since| now >= since + header) {
                    trip("header_timeout");
                    return;
                }
                if idle_closed {
                    continue;
                }
                match watch.expired(now, header, idle) {
                    Some(ConnExpiry::NoFirstRequest) => {
                        trip("header_timeout");
                        return;
                    }
                    Some(ConnExpiry::Idle) => {
                        trip("idle_timeout");
                        idle_closed = true;
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                        hard_close = Some(now + GOAWAY_GRACE);
                    }
                    Some(ConnExpiry::Response(cut)) => {
                        // HTTP/1: the response cannot be cut but by the
                        // connection; dropping it frees the backend too.
                        cut.count();
                        return;
                    }
                    None => {}
                }
            }
            () = drain.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            () = cap_reached.notified(), if !closing => {
                // H1 closes by itself after `Connection: close`; this sends
                // H2 its GOAWAY so in-flight streams finish and no new ones start.
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

fn trip(defence: &str) {
    metrics()
        .defence_trips_total
        .with_label_values(&[defence])
        .inc();
}
