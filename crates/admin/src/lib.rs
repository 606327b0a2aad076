//! The admin listener (`[observability] metrics_bind`): Prometheus
//! metrics, liveness/readiness/startup probes, a JSON health summary and
//! the pools API. Loopback only unless `[admin] allow_non_loopback`; when
//! `api_token_hash` is set every request needs its bearer token, loopback
//! included (see `auth`).
#![forbid(unsafe_code)]

mod auth;
mod pools_api;
mod status_page;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use eg_balancer::Pool;
use eg_runtime::metrics::metrics;
use eg_runtime::CancellationToken;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// What the admin endpoints read; the gateway updates it.
pub struct AdminState {
    pub draining: AtomicBool,
    pub started: AtomicBool,
    pub pools: ArcSwap<Vec<Arc<Pool>>>,
    /// What the gateway serves on, for the status page.
    pub listeners: ArcSwap<Vec<ListenerInfo>>,
    /// SHA-256 of the bearer token, when configured, and whether
    /// non-loopback peers may ask; both re-set by a reload.
    access: ArcSwap<Access>,
}

/// One bound listener as the status page shows it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    pub name: String,
    pub protocol: String,
    pub address: String,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Access {
    pub(crate) token_hash: Option<[u8; 32]>,
    pub(crate) allow_non_loopback: bool,
}

impl AdminState {
    pub fn new(token_hash_hex: Option<&str>, allow_non_loopback: bool) -> Arc<Self> {
        Arc::new(Self {
            draining: AtomicBool::new(false),
            started: AtomicBool::new(false),
            pools: ArcSwap::from_pointee(Vec::new()),
            listeners: ArcSwap::from_pointee(Vec::new()),
            access: ArcSwap::from_pointee(Access::of(token_hash_hex, allow_non_loopback)),
        })
    }

    /// Apply a reloaded `[admin]` to requests from now on.
    pub fn set_access(&self, token_hash_hex: Option<&str>, allow_non_loopback: bool) {
        self.access
            .store(Arc::new(Access::of(token_hash_hex, allow_non_loopback)));
    }

    pub(crate) fn access(&self) -> Access {
        **self.access.load()
    }
}

impl Access {
    fn of(token_hash_hex: Option<&str>, allow_non_loopback: bool) -> Self {
        let token_hash = token_hash_hex.and_then(|h| {
            let mut out = [0u8; 32];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok()?;
            }
            Some(out)
        });
        Self {
            token_hash,
            allow_non_loopback,
        }
    }
}

/// A request head must arrive within this long, else the connection is
/// closed: probes and scrapers send theirs at once, and a slow or silent
/// peer must not keep one of the few admin connections (Prometheus'
/// default scrape timeout is 10 s; 5 s of head is far beyond any real one).
pub const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Admin connections open at once; more are closed as they arrive. The
/// admin listener serves a scraper, probes and an operator or two: 64 is
/// far above that, and bounds what a local misbehaving client can hold.
pub const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Serve the admin endpoints on `listener` until `shutdown`: HTTP/1.1
/// only (nothing to detect, so nothing to wait for before the head), at
/// most `ADMIN_MAX_CONNECTIONS` connections, each head within
/// `ADMIN_HEADER_TIMEOUT`.
pub async fn serve(listener: TcpListener, state: Arc<AdminState>, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(ADMIN_MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(ADMIN_HEADER_TIMEOUT);
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics()
                .defence_trips_total
                .with_label_values(&["admin_connection_cap"])
                .inc();
            drop(stream);
            continue;
        };
        let state = Arc::clone(&state);
        let http = http.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = Arc::clone(&state);
                async move { Ok::<_, Infallible>(route(&state, peer, &req)) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
            drop(slot);
        });
    }
}

pub(crate) fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

fn route(state: &AdminState, peer: SocketAddr, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    // The status page holds no data (its calls carry the token).
    let page = req.method() == Method::GET && req.uri().path() == "/";
    if page && auth::network_allowed(state, peer) {
        return text(
            StatusCode::OK,
            status_page::HTML,
            "text/html; charset=utf-8",
        );
    }
    if !auth::authorized(state, peer, req) {
        return text(StatusCode::UNAUTHORIZED, "unauthorized\n", "text/plain");
    }
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            pools_api::refresh_backend_metrics(state);
            text(
                StatusCode::OK,
                eg_runtime::metrics::render(),
                "text/plain; version=0.0.4",
            )
        }
        (&Method::GET, "/livez") => text(StatusCode::OK, "ok\n", "text/plain"),
        (&Method::GET, "/readyz") => {
            if state.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n", "text/plain")
            } else {
                text(StatusCode::OK, "ready\n", "text/plain")
            }
        }
        (&Method::GET, "/startupz") => {
            if state.started.load(Ordering::Relaxed) {
                text(StatusCode::OK, "started\n", "text/plain")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n", "text/plain")
            }
        }
        (&Method::GET, "/healthz") => {
            let draining = state.draining.load(Ordering::Relaxed);
            let body = serde_json::json!({ "status": if draining { "draining" } else { "ok" } });
            text(StatusCode::OK, body.to_string(), "application/json")
        }
        (&Method::GET, "/api/v1/pools") => text(
            StatusCode::OK,
            pools_api::pools_json(state).to_string(),
            "application/json",
        ),
        (&Method::POST, p) if p.starts_with("/api/v1/pools/") => {
            pools_api::backend_action(state, p)
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}
