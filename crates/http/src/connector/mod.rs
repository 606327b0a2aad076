//! Upstream connectors: the seam through which the core sends a request to
//! a chosen backend, whatever its protocol. Acquiring a connection is
//! separate from sending, so a failed dial (nothing sent) can be retried on
//! another backend with the request untouched.

pub mod breaker;
mod h1;
mod h2;
mod h2_settings;
mod h3;
pub mod probe;
mod request_form;
mod shared_dial;

pub use self::h3::tuned_client_endpoint;
pub(crate) mod stream;

use std::sync::Arc;
use std::time::Duration;

use eg_config::BackendProtocol;
use eg_tls::BackendTls;
use http::{Request, Response};
use http_body_util::BodyExt;

pub use stream::DialError;

use self::breaker::{Overflow, PendingQueue, RequestSlot, RequestSlots, Waiting};
use crate::body::ProxyBody;

/// Why no connection could be had for a request.
#[derive(Debug, thiserror::Error)]
pub enum AcquireError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Overflow(#[from] Overflow),
}

/// How often to look whether a fresh HTTP/3 backend connection has had the
/// backend's SETTINGS yet (h3 gives no signal): a loopback round trip is
/// well under this, so one or two looks usually settle it.
const SETTINGS_POLL: Duration = Duration::from_millis(2);

/// One backend's connections, shared by every worker thread.
pub struct Upstream {
    pub address: String,
    pub protocol: BackendProtocol,
    tls: Option<BackendTls>,
    connect_timeout: Duration,
    slots: RequestSlots,
    conns: Conns,
}

/// Only the connection state the backend's protocol needs.
enum Conns {
    H1(Arc<h1::H1Pool>),
    H2(h2::H2Conns),
    H3(h3::H3Conn),
}

/// A connection ready to carry one request.
pub enum Sender {
    H1(h1::Pooled),
    H2(
        hyper::client::conn::http2::SendRequest<ProxyBody>,
        h2::StreamTicket,
    ),
    H3(::h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>),
}

/// Failure after a request was handed to a connection.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("backend connection failed: {0}")]
    Hyper(#[from] hyper::Error),
    #[error("backend h3 exchange failed: {0}")]
    H3(crate::body::BoxError),
    /// The connection closed, or is closing (an HTTP/3 backend's GOAWAY),
    /// before any byte of the request went out (hyper hands the request
    /// back): safe to send again, any method.
    #[error("backend connection closed before the request was sent: {1}")]
    Unsent(Box<Request<ProxyBody>>, crate::body::BoxError),
}

/// An HTTP/3 request on a stream at or above the ID in the backend's
/// GOAWAY: the backend did not process it (RFC 9114 §5.2), whatever then
/// ended the stream (most often the connection's graceful close).
#[derive(Debug, thiserror::Error)]
#[error("left out of the backend's GOAWAY: {0}")]
pub(crate) struct LeftOutOfGoaway(pub(crate) crate::body::BoxError);

impl SendError {
    /// The underlying hyper error, whose source chain may name a body limit.
    pub fn source_error(&self) -> &(dyn std::error::Error + 'static) {
        match self {
            Self::Hyper(e) => e,
            Self::Unsent(_, e) | Self::H3(e) => e.as_ref(),
        }
    }

    /// The backend said it did not process the request: REFUSED_STREAM, or
    /// a graceful GOAWAY that leaves this stream out (RFC 9113 §8.7); for
    /// HTTP/3, H3_REQUEST_REJECTED, or a GOAWAY seen before the stream
    /// opened (RFC 9114 §4.1.1, §5.2). Safe to send again elsewhere, and no
    /// mark against the backend. A request handed back unsent is that by
    /// definition (the forwarder resends it a few times first; past those
    /// it must not turn into a mark either).
    pub fn unprocessed(&self) -> bool {
        use ::h3::error::{Code, StreamError};
        if matches!(self, Self::Unsent(..)) {
            return true;
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(self.source_error());
        while let Some(e) = cur {
            if e.is::<LeftOutOfGoaway>() {
                return true;
            }
            if let Some(h3) = e.downcast_ref::<StreamError>() {
                return match h3 {
                    StreamError::RemoteClosing => true,
                    StreamError::RemoteTerminate { code, .. }
                    | StreamError::StreamError { code, .. } => *code == Code::H3_REQUEST_REJECTED,
                    _ => false,
                };
            }
            if let Some(h2) = e.downcast_ref::<::h2::Error>() {
                let refused = h2.reason() == Some(::h2::Reason::REFUSED_STREAM);
                let graceful_goaway = h2.is_go_away()
                    && h2.is_remote()
                    && h2.reason() == Some(::h2::Reason::NO_ERROR);
                return refused || graceful_goaway;
            }
            cur = e.source();
        }
        false
    }

    fn from_try(mut e: hyper::client::conn::TrySendError<Request<ProxyBody>>) -> Self {
        match e.take_message() {
            Some(req) => Self::Unsent(Box::new(req), e.into_error().into()),
            None => Self::Hyper(e.into_error()),
        }
    }
}

impl Upstream {
    pub fn new(
        address: String,
        protocol: BackendProtocol,
        tls: Option<BackendTls>,
        connect_timeout: Duration,
        breaker: &eg_config::CircuitBreaker,
        pooling: &eg_config::ConnectionPool,
    ) -> Self {
        let conns = match protocol {
            BackendProtocol::H2 => {
                Conns::H2(h2::H2Conns::new(pooling.max_h2_connections_per_backend))
            }
            BackendProtocol::H3 => Conns::H3(h3::H3Conn::new(tls.as_ref())),
            // tcp on an HTTP listener means HTTP/1.1 (the original schema's meaning).
            BackendProtocol::H1 | BackendProtocol::Tcp => Conns::H1(Arc::new(h1::H1Pool::new(
                pooling.max_idle_per_backend as usize,
                Duration::from_millis(pooling.idle_timeout_ms),
                breaker.max_connections,
            ))),
        };
        Self {
            address,
            protocol,
            tls,
            connect_timeout,
            slots: RequestSlots::new(breaker),
            conns,
        }
    }

    pub fn tls(&self) -> Option<&BackendTls> {
        self.tls.as_ref()
    }

    /// Whether requests to this backend carry `https` semantics.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Whether requests share connections (HTTP/2, HTTP/3) rather than
    /// take one each (HTTP/1.1).
    pub fn multiplexed(&self) -> bool {
        !matches!(self.conns, Conns::H1(_))
    }

    /// `parts` in the form this backend's protocol wants on the wire;
    /// `authority` is the client's (the backend's address when it had none).
    pub fn request(
        &self,
        parts: http::request::Parts,
        authority: Option<&str>,
        body: ProxyBody,
    ) -> Result<Request<ProxyBody>, http::Error> {
        match &self.conns {
            Conns::H1(_) => request_form::h1(parts, authority, body),
            Conns::H2(_) | Conns::H3(_) => request_form::multiplexed(
                parts,
                authority.unwrap_or(&self.address),
                self.is_tls(),
                body,
            ),
        }
    }

    /// A request slot under the circuit breaker and a connection for one
    /// request (pooled, or freshly dialed). At a cap the request waits in
    /// `queue` (its place kept in `waiting`) up to `connect_timeout_ms`.
    pub async fn acquire<'q>(
        &self,
        queue: &'q PendingQueue,
        waiting: &mut Option<Waiting<'q>>,
    ) -> Result<(Sender, RequestSlot), AcquireError> {
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let slot = self.slots.acquire(queue, waiting, deadline).await?;
        let sender = match &self.conns {
            Conns::H2(h2) => h2
                .sender(&self.address, self.tls.as_ref(), self.connect_timeout)
                .await
                .map(|(sender, ticket)| Sender::H2(sender, ticket))?,
            Conns::H3(h3) => h3
                .sender(&self.address, self.tls.as_ref(), self.connect_timeout)
                .await
                .map(Sender::H3)?,
            Conns::H1(pool) => {
                let how = h1::Acquire {
                    address: &self.address,
                    tls: self.tls.as_ref(),
                    connect_timeout: self.connect_timeout,
                    queue,
                    waiting,
                    deadline,
                };
                h1::acquire(pool, how).await.map(Sender::H1)?
            }
        };
        Ok((sender, slot))
    }
}

impl Sender {
    /// Whether this connection carried an earlier request: a failure on it
    /// before any answer is most likely a backend closing an idle
    /// connection, not the backend being unhealthy.
    pub fn reused(&self) -> bool {
        match self {
            Self::H1(p) => p.reused(),
            Self::H2(..) | Self::H3(_) => false,
        }
    }

    /// Send a request that upgrades to a tunnel (HTTP/1.1 `Upgrade`, or
    /// HTTP/2 extended CONNECT); hyper's upgrade on the response then
    /// yields the tunnel. HTTP/3 tunnels go through `h3_stream`.
    pub async fn send_upgrade(
        self,
        req: Request<ProxyBody>,
    ) -> Result<Response<hyper::body::Incoming>, SendError> {
        match self {
            Self::H1(pooled) => pooled.send_upgrade(req).await,
            // The tunnel outlives this call; its stream is not counted
            // against the connection (the ticket drops here), so at worst
            // h2 queues a later stream until the backend frees one.
            Self::H2(mut sender, _ticket) => {
                if let Err(e) = sender.ready().await {
                    return Err(SendError::Unsent(Box::new(req), e.into()));
                }
                sender
                    .try_send_request(req)
                    .await
                    .map_err(SendError::from_try)
            }
            Self::H3(_) => Err(SendError::H3(
                "an HTTP/3 tunnel is not a hyper request".into(),
            )),
        }
    }

    /// Open an HTTP/3 extended CONNECT tunnel (see `h3::tunnel`).
    pub async fn h3_tunnel(
        self,
        req: Request<ProxyBody>,
    ) -> Result<(Response<ProxyBody>, Option<tokio::io::DuplexStream>), SendError> {
        match self {
            Self::H3(sender) => h3::tunnel(sender, req).await.map_err(SendError::H3),
            _ => Err(SendError::H3("not an HTTP/3 backend".into())),
        }
    }

    /// Whether an HTTP/2 or HTTP/3 backend advertised
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 §3, RFC 9220 §3); waits
    /// up to `within` for its SETTINGS on a fresh connection. HTTP/1.1:
    /// `true`.
    pub async fn extended_connect(&self, within: Duration) -> bool {
        let by = tokio::time::Instant::now() + within;
        loop {
            let known = match self {
                Self::H1(_) => Some(true),
                // A new HTTP/2 connection is handed out only once the
                // backend's first SETTINGS arrived (`h2_settings`).
                Self::H2(_, ticket) => Some(ticket.extended_connect()),
                Self::H3(sender) => h3::extended_connect(sender),
            };
            if let Some(on) = known {
                return on;
            }
            if tokio::time::Instant::now() >= by {
                return false;
            }
            tokio::time::sleep(SETTINGS_POLL).await;
        }
    }

    /// Send the request; the response body streams from the backend.
    pub async fn send(self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, SendError> {
        match self {
            Self::H1(pooled) => Ok(pooled.send(req).await?),
            Self::H2(mut sender, ticket) => {
                // Closed before this request went out (a GOAWAY, say):
                // hand it back to be sent elsewhere.
                if let Err(e) = sender.ready().await {
                    return Err(SendError::Unsent(Box::new(req), e.into()));
                }
                let resp = sender
                    .try_send_request(req)
                    .await
                    .map_err(SendError::from_try)?;
                // The stream counts against the connection until its
                // response ends.
                Ok(resp.map(|body| {
                    crate::body::boxed_incoming(body)
                        .map_frame(move |frame| {
                            let _open = &ticket;
                            frame
                        })
                        .boxed()
                }))
            }
            // Boxed: h3's request future is several times the size of the
            // others, and every request's future would carry its size.
            Self::H3(sender) => Box::pin(h3::send(sender, req)).await,
        }
    }
}
