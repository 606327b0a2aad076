//! The protocol-neutral proxy core: it sees `http::Request`s from any
//! front, routes them, applies limits and header rules, picks a backend
//! through the balancer and sends through that backend's connector.

pub mod headers;
pub mod route;
pub mod validate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use eg_balancer::PickContext;
use eg_config::BackendProtocol;
use eg_runtime::metrics::metrics;
use http::header::{HeaderValue, ALT_SVC, CONTENT_LENGTH, HOST};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::time::Instant;

use crate::body::{BoxError, Guarded, ProxyBody};
use crate::connector::Upstream;
use crate::error_map::ProxyError;
use crate::settings::{HttpSettings, PoolHandle};

/// What the front knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// TLS server name the client asked for, lowercase.
    pub sni: Option<String>,
}

/// Labels for the per-request metrics.
struct Outcome<'a> {
    route: &'a str,
    cluster: &'a str,
}

/// Proxy one request. Never fails: every error becomes a response.
pub async fn handle<B>(settings: &HttpSettings, conn: &ConnInfo, req: Request<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let started = StdInstant::now();
    let protocol = match req.version() {
        Version::HTTP_2 => "h2",
        Version::HTTP_3 => "h3",
        _ => "h1",
    };
    let mut outcome = Outcome { route: "none", cluster: "none" };
    let mut resp = match proxy(settings, conn, req, &mut outcome).await {
        Ok(resp) => resp,
        Err(e) => {
            if e == ProxyError::TooLarge || matches!(e, ProxyError::BadRequest(_)) {
                metrics().defence_trips_total.with_label_values(&[defence_label(&e)]).inc();
            }
            e.into_response()
        }
    };
    if let Some(alt) = &settings.alt_svc {
        resp.headers_mut().insert(ALT_SVC, alt.clone());
    }
    let code_class = match resp.status().as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let m = metrics();
    m.http_requests_total
        .with_label_values(&[&settings.label, outcome.route, outcome.cluster, protocol, code_class])
        .inc();
    m.http_request_duration_seconds
        .with_label_values(&[&settings.label, protocol])
        .observe(started.elapsed().as_secs_f64());
    resp
}

fn defence_label(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::TooLarge => "request_body_cap",
        _ => "malformed_request",
    }
}

async fn proxy<'s, B>(
    settings: &'s HttpSettings,
    conn: &ConnInfo,
    req: Request<B>,
    outcome: &mut Outcome<'s>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let deadline = Instant::now() + settings.limits.total_timeout;
    validate::check_framing(&req, settings.strict_te)?;
    let authority = validate::authority(&req)?;
    let host = authority.as_deref().map(validate::host_only).unwrap_or_default();
    if let (Some(sni), true) = (&conn.sni, authority.is_some()) {
        if *sni != host {
            return Err(ProxyError::Misdirected);
        }
    }
    let (mut parts, body) = req.into_parts();
    validate::apply_underscore_policy(&mut parts.headers, settings.underscore)?;

    let path = parts.uri.path();
    let route = settings.routes.iter().find(|r| r.matches(&host, path, &parts.headers));
    let pool = match route {
        Some(r) => {
            outcome.route = &r.label;
            r.pool.as_ref().or(settings.default_pool.as_ref())
        }
        None => settings.default_pool.as_ref(),
    }
    .ok_or(ProxyError::NoRoute)?;
    outcome.cluster = &pool.pool.name;

    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > settings.limits.max_request_body) {
        return Err(ProxyError::TooLarge);
    }

    let client_version = parts.version;
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::add_forwarding(&mut parts.headers, conn.peer.ip(), conn.tls, authority.as_deref(), client_version);
    let body = Guarded::new(body, settings.limits.max_request_body, settings.limits.body_timeout, deadline);

    let (in_flight, upstream, sender) = acquire(pool, conn).await?;
    let uri = upstream_uri(&upstream, authority.as_deref(), parts.uri.path_and_query())?;
    match upstream.protocol {
        BackendProtocol::H2 | BackendProtocol::H3 => {
            parts.headers.remove(HOST);
            parts.version = Version::HTTP_2;
        }
        _ => {
            if let Some(a) = authority.as_deref().and_then(|a| HeaderValue::from_str(a).ok()) {
                parts.headers.insert(HOST, a);
            }
            parts.version = Version::HTTP_11;
        }
    }
    parts.uri = uri;
    let upstream_req = Request::from_parts(parts, body.boxed());

    let head_deadline = (Instant::now() + settings.limits.head_timeout).min(deadline);
    let resp = match tokio::time::timeout_at(head_deadline, sender.send(upstream_req)).await {
        Err(_) => {
            count_backend(&pool.pool.name, &upstream.address, "timeout");
            return Err(ProxyError::UpstreamTimeout);
        }
        Ok(Err(e)) => {
            tracing::debug!(backend = %upstream.address, error = %e, "upstream exchange failed");
            count_backend(&pool.pool.name, &upstream.address, "error");
            return Err(ProxyError::UpstreamFailed);
        }
        Ok(Ok(resp)) => resp,
    };
    count_backend(&pool.pool.name, &upstream.address, "response");
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::append_via(&mut parts.headers, parts.version);
    // The client hears its own protocol version, whatever the backend spoke.
    parts.version = client_version;
    if client_version < Version::HTTP_2 {
        headers::declare_grpc_trailers(&mut parts.headers);
    }
    let limits = &settings.limits;
    // The in-flight guard lives as long as the response body streams.
    let body = Guarded::new(body, limits.max_response_body, limits.body_timeout, deadline).map_frame(move |frame| {
        let _held = &in_flight;
        frame
    });
    Ok(Response::from_parts(parts, body.boxed()))
}

/// Pick a backend and get a connection to it; a failed dial (nothing sent)
/// moves on to another backend, at most once per backend.
async fn acquire(
    pool: &PoolHandle,
    conn: &ConnInfo,
) -> Result<(eg_balancer::InFlight, Arc<Upstream>, crate::connector::Sender), ProxyError> {
    let total = pool.upstreams.len();
    let mut tried = Vec::with_capacity(total);
    loop {
        let ctx = PickContext {
            client_ip: Some(conn.peer.ip()),
            exclude: &tried,
        };
        let Some(picked) = pool.pool.pick(&ctx) else {
            return Err(if tried.is_empty() {
                ProxyError::NoHealthyBackend
            } else {
                ProxyError::ConnectFailed
            });
        };
        let index = picked.backend().index;
        let Some(upstream) = pool.upstreams.get(index) else {
            return Err(ProxyError::NoHealthyBackend);
        };
        match upstream.acquire().await {
            Ok(sender) => return Ok((picked, Arc::clone(upstream), sender)),
            Err(e) => {
                tracing::warn!(backend = %upstream.address, error = %e, "backend dial failed");
                count_backend(&pool.pool.name, &upstream.address, "connect_failed");
                tried.push(index);
                if tried.len() >= total {
                    return Err(ProxyError::ConnectFailed);
                }
                metrics().retries_total.with_label_values(&[&pool.pool.name]).inc();
            }
        }
    }
}

fn count_backend(cluster: &str, backend: &str, outcome: &str) {
    metrics()
        .backend_requests_total
        .with_label_values(&[cluster, backend, outcome])
        .inc();
}

/// H1 backends get origin-form; H2 needs scheme and authority.
fn upstream_uri(up: &Upstream, authority: Option<&str>, pq: Option<&PathAndQuery>) -> Result<Uri, ProxyError> {
    let pq = pq.cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut b = Uri::builder().path_and_query(pq);
    if matches!(up.protocol, BackendProtocol::H2 | BackendProtocol::H3) {
        let scheme = if up.is_tls() { Scheme::HTTPS } else { Scheme::HTTP };
        b = b.scheme(scheme).authority(authority.unwrap_or(up.address.as_str()));
    }
    b.build().map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))
}
