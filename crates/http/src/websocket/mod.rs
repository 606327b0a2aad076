//! WebSocket through the gateway, on every front and to every backend
//! protocol: RFC 6455 (HTTP/1.1 Upgrade), RFC 8441 (HTTP/2 extended
//! CONNECT) and RFC 9220 (HTTP/3 extended CONNECT).
//!
//! The core asks [`detect`] whether a request opens a WebSocket, whatever
//! front it came from; this module then checks the client's handshake
//! (`handshake`), picks a backend through the same balancer as any request
//! and asks it in its own protocol (`upgrade`), answers the client in its
//! protocol, and hands both upgraded streams to the frame relay (`relay`),
//! which enforces `[listeners.websocket]`.

mod handshake;
mod relay;
mod upgrade;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eg_balancer::Outcome;
use http::request::Parts;
use http::{HeaderMap, Method, Response, Version};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::body::ProxyBody;
use crate::core::forward;
use crate::core::headers;
use crate::core::ConnInfo;
use crate::error_map::ProxyError;
use crate::settings::PoolHandle;

pub use relay::Limits;

/// `[listeners.websocket]`, as durations.
#[derive(Debug, Clone)]
pub struct WsSettings {
    pub enabled: bool,
    pub limits: Limits,
    /// Advertise SETTINGS_ENABLE_CONNECT_PROTOCOL on HTTP/2.
    pub h2_extended_connect: bool,
    /// Advertise SETTINGS_ENABLE_CONNECT_PROTOCOL on HTTP/3.
    pub h3_extended_connect: bool,
}

impl WsSettings {
    pub fn from_config(c: &eg_config::WebSocket) -> Self {
        Self {
            enabled: c.enabled,
            limits: Limits {
                idle: Duration::from_secs(c.idle_timeout_seconds),
                max_message: usize::try_from(c.max_message_size_bytes).unwrap_or(usize::MAX),
                pings_per_window: c.ping_rate_limit_per_window,
                ping_window: Duration::from_secs(c.ping_rate_limit_window_seconds),
                frame_timeout: Duration::from_secs(c.read_frame_timeout_seconds),
            },
            h2_extended_connect: c.h2_extended_connect,
            h3_extended_connect: c.h3_extended_connect,
        }
    }
}

/// A byte stream that carries WebSocket frames once upgraded.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;
type BoxError = crate::body::BoxError;
type IoFuture = Pin<Box<dyn Future<Output = Result<BoxIo, BoxError>> + Send>>;

/// The client's stream, ready once its handshake answer went out. The
/// hyper fronts need not set it (the core takes hyper's own upgrade); the
/// HTTP/3 front puts one in the request's extensions.
pub struct ClientUpgrade(IoFuture);

impl ClientUpgrade {
    pub fn new<F>(ready: F) -> Self
    where
        F: Future<Output = Result<BoxIo, BoxError>> + Send + 'static,
    {
        Self(Box::pin(ready))
    }

    /// Take it from a request: the front's own, else hyper's upgrade.
    fn take(extensions: &mut http::Extensions) -> Option<Self> {
        if let Some(own) = extensions.remove::<ClientUpgradeSlot>() {
            return own.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
        let on = extensions.remove::<hyper::upgrade::OnUpgrade>()?;
        Some(Self::new(async move {
            let up = on.await?;
            Ok(Box::new(hyper_util::rt::TokioIo::new(up)) as BoxIo)
        }))
    }
}

/// How a front stores a [`ClientUpgrade`] in request extensions (which
/// must be `Clone + Sync`).
#[derive(Clone)]
pub struct ClientUpgradeSlot(Arc<Mutex<Option<ClientUpgrade>>>);

impl ClientUpgradeSlot {
    pub fn new(upgrade: ClientUpgrade) -> Self {
        Self(Arc::new(Mutex::new(Some(upgrade))))
    }
}

/// Keeps a front's per-request state (say, the HTTP/2 connection's count
/// of open requests, which decides when the connection is idle) alive for
/// as long as the tunnel relays, though the response itself is over.
#[derive(Clone, Default)]
pub struct Hold(Arc<Mutex<Option<Box<dyn Send>>>>);

impl Hold {
    /// Keep `state` until the tunnel ends (at once if it already has).
    pub fn keep(&self, state: Box<dyn Send>) {
        if Arc::strong_count(&self.0) > 1 {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(state);
        }
    }

    fn release(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
    }
}

/// How a request asks for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HTTP/1.1 `Upgrade: websocket` (RFC 6455).
    H1Upgrade,
    /// HTTP/2 or HTTP/3 `CONNECT` with `:protocol = websocket`.
    ExtendedConnect,
}

/// Whether this request opens a WebSocket, on whatever front it came.
pub fn detect(parts: &Parts) -> Option<Kind> {
    if parts.method == Method::CONNECT {
        let proto = parts.extensions.get::<hyper::ext::Protocol>()?;
        return proto
            .as_str()
            .eq_ignore_ascii_case("websocket")
            .then_some(Kind::ExtendedConnect);
    }
    (parts.version < Version::HTTP_2 && has_token(&parts.headers, "upgrade", "websocket"))
        .then_some(Kind::H1Upgrade)
}

/// Whether a comma-separated header lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &str, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What the core hands over for one WebSocket request.
pub(crate) struct Request<'a> {
    pub settings: &'a WsSettings,
    pub listener: &'a str,
    pub conn: &'a ConnInfo,
    pub pool: &'a PoolHandle,
    pub keys: &'a crate::core::affinity::Keys,
    pub authority: Option<&'a str>,
    /// The backend answers the handshake within this (`head_timeout_ms`).
    pub head_timeout: Duration,
}

impl Request<'_> {
    /// Open the WebSocket: the client's answer comes back, and the relay
    /// runs in its own task (not bound by `total_timeout_ms`).
    pub(crate) async fn open(
        &self,
        kind: Kind,
        mut parts: Parts,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if !self.settings.enabled {
            return Err(ProxyError::WebSocketDisabled);
        }
        let client = handshake::check(kind, &parts)?;
        let upgrade = ClientUpgrade::take(&mut parts.extensions)
            .ok_or(ProxyError::BadRequest("this connection cannot be upgraded"))?;
        let client_version = parts.version;
        headers::strip_hop_by_hop(&mut parts.headers);
        handshake::strip_websocket_fields(&mut parts.headers);
        headers::add_forwarding(
            &mut parts.headers,
            &self.conn.forwarded_for,
            self.conn.tls,
            self.authority,
            client_version,
        );
        let mut tried = Vec::new();
        let (in_flight, upstream, sender, slot) =
            forward::acquire(self.pool, self.conn, self.keys, &mut tried).await?;
        let asked = upgrade::Asked::new(&upstream, self.authority, &client, self.head_timeout);
        let answer = match asked.send(sender, parts).await {
            Ok(answer) => answer,
            Err(upgrade::Failed::Refused(resp)) => {
                // The backend said no (a 403, a 404...): the client hears it.
                in_flight.report(Outcome::Success);
                return Ok(*resp);
            }
            Err(upgrade::Failed::Backend(e)) => {
                in_flight.report(Outcome::Failure);
                return Err(e);
            }
        };
        in_flight.report(Outcome::Success);
        let hold = Hold::default();
        let mut resp = handshake::answer(kind, &client, answer.protocol.as_ref());
        resp.extensions_mut().insert(hold.clone());
        let limits = self.settings.limits.clone();
        let listener = self.listener.to_owned();
        // Tracked, so the drain waits for its close handshake.
        eg_runtime::tunnels().spawn(async move {
            // The balancer's in-flight count and the breaker's request slot
            // stay taken while the tunnel relays.
            let _held = (in_flight, slot);
            match tokio::time::timeout(handshake::UPGRADE_WAIT, upgrade.0).await {
                Ok(Ok(client)) => relay::run(client, answer.io, &limits, &listener).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "client WebSocket upgrade failed"),
                Err(_) => tracing::debug!("client WebSocket upgrade did not complete in time"),
            }
            hold.release();
        });
        Ok(resp)
    }
}
