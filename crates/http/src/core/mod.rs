//! The protocol-neutral proxy core: it sees `http::Request`s from any
//! front, routes them, applies limits and header rules, picks a backend
//! through the balancer and sends through that backend's connector.

pub(crate) mod affinity;
mod backend_body;
pub(crate) mod forward;
pub mod headers;
pub mod route;
pub mod validate;

use std::net::SocketAddr;
use std::time::Instant as StdInstant;

use bytes::Bytes;
use eg_runtime::metrics::metrics;
use http::header::{ALT_SVC, CONTENT_LENGTH};
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Body;
use tokio::time::Instant;

use self::backend_body::BackendBody;
use crate::access_log;
use crate::body::{BoxError, Guarded, ProxyBody};
use crate::error_map::ProxyError;
use crate::grpc;
use crate::series::{Protocol, RouteSeries};
use crate::settings::{HttpSettings, InflightSlot};

/// What the front knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// TLS server name the client asked for, lowercase.
    pub sni: Option<String>,
    /// `peer`'s address as `X-Forwarded-For` carries it: formatted once
    /// per connection, not per request.
    pub forwarded_for: http::HeaderValue,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool, sni: Option<String>) -> Self {
        Self {
            peer,
            tls,
            sni,
            forwarded_for: headers::forwarded_for(peer.ip()),
        }
    }
}

/// What the exchange came to: labels for the metrics, and the access
/// log's fields beyond the request head.
struct Outcome<'a> {
    /// The route (and so cluster) the request took; its series count it.
    series: &'a RouteSeries,
    backend: Option<&'a str>,
    retries: u32,
    request_body: Option<std::sync::Arc<crate::body::BodyEvents>>,
}

/// Proxy one request. Never fails: every error becomes a response.
pub async fn handle<B>(
    settings: &HttpSettings,
    conn: &ConnInfo,
    req: Request<B>,
) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    let started = StdInstant::now();
    let protocol = Protocol::of(req.version());
    let mut outcome = Outcome {
        series: &settings.series.unrouted,
        backend: None,
        retries: 0,
        request_body: None,
    };
    // The wall-clock time only the access log needs: one clock read less
    // per request without it.
    let logged = settings.access_log.as_ref().map(|log| {
        let time = std::time::SystemTime::now();
        (std::sync::Arc::clone(log), RequestHead::of(&req), time)
    });
    let grpc = settings.grpc.classify(&req);
    let slot = settings.inflight.try_enter(settings.max_inflight_requests);
    let result = match slot {
        _ if grpc.is_some() && req.version() < Version::HTTP_2 => Ok(grpc::status::http1_refusal()),
        Some(slot) => proxy(settings, conn, req, slot, grpc, started, &mut outcome).await,
        None => {
            metrics()
                .defence_trips_total
                .with_label_values(&["listener_inflight_cap"])
                .inc();
            Err(ProxyError::Overloaded)
        }
    };
    let mut error_label = "ok";
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            error_label = e.label();
            if let Some(label) = defence_label(&e) {
                metrics()
                    .defence_trips_total
                    .with_label_values(&[label])
                    .inc();
            }
            match grpc {
                Some(_) => grpc::status::error_response(&e),
                None => e.into_response(),
            }
        }
    };
    if let Some(alt) = &settings.alt_svc {
        resp.headers_mut().insert(ALT_SVC, alt.clone());
    }
    outcome.series.count(protocol, resp.status().as_u16());
    settings
        .series
        .observe_duration(protocol, started.elapsed().as_secs_f64());
    let Some((log, head, time)) = logged else {
        return resp;
    };
    let entry = access_log::Entry {
        time,
        started,
        listener: settings.label.clone(),
        route: outcome.series.route().to_owned(),
        cluster: outcome.series.cluster().to_owned(),
        backend: outcome.backend.map(str::to_owned),
        protocol: protocol.label(),
        method: head.method,
        authority: head.authority,
        path: head.path,
        status: resp.status().as_u16(),
        retries: outcome.retries,
        client: conn.peer,
        outcome: error_label,
        request: outcome.request_body,
    };
    resp.map(|body| access_log::Logged::new(body, entry, log).boxed())
}

/// The request line as the access log records it.
struct RequestHead {
    method: String,
    authority: String,
    path: String,
}

impl RequestHead {
    fn of<B>(req: &Request<B>) -> Self {
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        Self {
            method: req.method().as_str().to_owned(),
            authority,
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        }
    }
}

/// The defence behind an error answer, if one tripped (the listener cap
/// and the circuit breaker count themselves where they trip).
fn defence_label(e: &ProxyError) -> Option<&'static str> {
    match e {
        ProxyError::TooLarge => Some("request_body_cap"),
        ProxyError::BadRequest(_) => Some("malformed_request"),
        // A request body stalled past body_timeout_ms (slow POST).
        ProxyError::ClientTimeout => Some("slow_upload"),
        _ => None,
    }
}

/// A front's body as the core's one body type.
fn boxed<B>(body: B) -> ProxyBody
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

async fn proxy<'s, B>(
    settings: &'s HttpSettings,
    conn: &ConnInfo,
    req: Request<B>,
    inflight: InflightSlot,
    grpc: Option<grpc::Call>,
    started: StdInstant,
    outcome: &mut Outcome<'s>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    // A gRPC call's own (clamped) deadline governs it, not total_timeout_ms.
    // Counted from the request's start, read once for the whole request.
    let deadline =
        Instant::from_std(started) + grpc.map_or(settings.limits.total_timeout, |c| c.budget);
    // Nor body_timeout_ms: a stream may be silent, either way, for as long
    // as its deadline allows (a watch or pub/sub stream sends when there
    // is news). Still bounded: the deadline is at most
    // max_deadline_seconds. Past a shorter deadline the stall timer could
    // not fire first anyway.
    let stall = grpc.map_or(settings.limits.body_timeout, |c| {
        c.budget.max(settings.limits.body_timeout)
    });
    validate::check_framing(&req, settings.strict_te)?;
    let authority = validate::authority(&req)?;
    let host = authority
        .as_deref()
        .map(validate::host_only)
        .unwrap_or_default();
    if let (Some(sni), true) = (&conn.sni, authority.is_some()) {
        if *sni != host {
            return Err(ProxyError::Misdirected);
        }
    }
    let (mut parts, body) = req.into_parts();
    validate::apply_underscore_policy(&mut parts.headers, settings.underscore)?;

    let path = parts.uri.path();
    let route = settings
        .routes
        .iter()
        .find(|r| r.matches(&host, path, &parts.headers));
    let pool = match route {
        Some(r) => {
            outcome.series = &r.series;
            r.pool.as_ref().or(settings.default_pool.as_ref())
        }
        None => {
            outcome.series = &settings.series.default_route;
            settings.default_pool.as_ref()
        }
    }
    .ok_or(ProxyError::NoRoute)?;
    let body = match grpc {
        Some(_) if settings.grpc.health_synthesized && path == grpc::health::CHECK_PATH => {
            let by = (Instant::now() + settings.limits.body_timeout).min(deadline);
            // Boxed, as the WebSocket path below: kept out of every
            // request's future.
            let request = Box::pin(grpc::health::read_request(boxed(body), by)).await?;
            match grpc::health::local_answer(request, pool) {
                grpc::health::Read::Local(resp) => return Ok(resp),
                grpc::health::Read::Forward(bytes) => Either::Right(Full::new(bytes)),
            }
        }
        _ => Either::Left(body),
    };

    if let Some(kind) = crate::websocket::detect(&parts) {
        let keys = affinity::keys(&pool.pool, &parts.headers);
        let ws = crate::websocket::Request {
            settings: &settings.websocket,
            listener: &settings.label,
            conn,
            pool,
            keys: &keys,
            authority: authority.as_deref(),
            head_timeout: settings.limits.head_timeout,
        };
        // Boxed: the WebSocket handshake is a large future; inline it
        // would grow every request's future, which hyper moves several
        // times per request.
        return Box::pin(ws.open(kind, parts)).await;
    }

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
    if let Some(call) = grpc {
        parts.headers.insert(
            grpc::deadline::GRPC_TIMEOUT,
            grpc::deadline::encode(call.budget),
        );
    }
    headers::add_forwarding(
        &mut parts.headers,
        &conn.forwarded_for,
        conn.tls,
        authority.as_deref(),
        client_version,
    );
    let keys = affinity::keys(&pool.pool, &parts.headers);
    let (body, body_events) =
        Guarded::from_client(body, settings.limits.max_request_body, stall, deadline);
    let exchange = forward::Exchange {
        pool,
        conn,
        keys: &keys,
        authority: authority.as_deref(),
        head_deadline: grpc.is_none().then_some(settings.limits.head_timeout),
        deadline,
        body_events: &body_events,
    };
    outcome.request_body = Some(std::sync::Arc::clone(&body_events));
    let forwarded = exchange.run(parts, body).await?;
    outcome.retries = forwarded.retries;
    outcome.backend = pool
        .pool
        .backends()
        .get(forwarded.in_flight.backend().index)
        .map(|b| b.address.as_str());
    let (mut parts, body) = forwarded.response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    headers::append_via(&mut parts.headers, parts.version);
    // The client hears its own protocol version, whatever the backend spoke.
    parts.version = client_version;
    affinity::set_cookie(
        &pool.pool,
        &keys,
        forwarded.in_flight.backend(),
        &mut parts.headers,
    );
    let limits = &settings.limits;
    // The balancer's in-flight guard, the circuit-breaker slot and the
    // listener's in-flight slot live as long as the response body streams.
    let body = Guarded::new(body, limits.max_response_body, stall, deadline);
    let settled = forwarded.outcome_told;
    let request_events = grpc.map(|_| std::sync::Arc::clone(&body_events));
    let body = BackendBody::new(
        body,
        forwarded.in_flight,
        body_events,
        settled,
        (forwarded.slot, inflight),
    );
    let body = match request_events {
        Some(request) => grpc::GrpcBody::new(body, request).boxed(),
        None => body.boxed(),
    };
    Ok(Response::from_parts(parts, body))
}
