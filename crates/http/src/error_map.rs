//! Every way a request can fail, turned into a response in one place.

use http::{header, Response, StatusCode};

use crate::body::{full, ProxyBody};

/// Marks an answer after which the client connection must end: the rest of
/// its byte stream cannot be trusted. How that is said is the front's
/// business (HTTP/1.1 `Connection: close`; HTTP/2 and HTTP/3 streams are
/// framed apart, so they need nothing).
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// Malformed or ambiguous request (smuggling attempts included).
    BadRequest(&'static str),
    /// No route matched and the listener has no default pool.
    NoRoute,
    /// Declared or streamed request body over `max_request_body_bytes`.
    TooLarge,
    /// Host/:authority does not match the TLS SNI.
    Misdirected,
    /// Every backend of the pool is down or excluded.
    NoHealthyBackend,
    /// No backend could be connected to.
    ConnectFailed,
    /// The backend did not answer within `head_timeout_ms`.
    UpstreamTimeout,
    /// The backend connection failed mid-exchange.
    UpstreamFailed,
    /// The client stalled its request body past `body_timeout_ms`.
    ClientTimeout,
    /// The client aborted its request body.
    ClientAborted,
    /// A cap of ours was reached: the circuit breaker, the listener's
    /// in-flight requests, or local descriptors and ports.
    Overloaded,
    /// A WebSocket handshake on a listener with `[listeners.websocket]
    /// enabled = false`.
    WebSocketDisabled,
    /// The backend cannot carry this WebSocket: an H2 backend that did not
    /// advertise SETTINGS_ENABLE_CONNECT_PROTOCOL, or a handshake answer
    /// that breaks RFC 6455 (wrong accept key, a subprotocol not offered).
    WebSocketBackend(&'static str),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Self::NoHealthyBackend | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::ClientAborted => StatusCode::BAD_REQUEST,
            Self::ConnectFailed | Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::WebSocketDisabled => StatusCode::NOT_IMPLEMENTED,
            Self::WebSocketBackend(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The access log's `outcome` for this error.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NoRoute => "no_route",
            Self::TooLarge => "request_too_large",
            Self::Misdirected => "misdirected",
            Self::NoHealthyBackend => "no_healthy_backend",
            Self::ConnectFailed => "upstream_connect_failed",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamFailed => "upstream_failed",
            Self::ClientTimeout => "client_timeout",
            Self::ClientAborted => "client_aborted",
            Self::Overloaded => "overloaded",
            Self::WebSocketDisabled => "websocket_disabled",
            Self::WebSocketBackend(_) => "websocket_backend_failed",
        }
    }

    pub(crate) fn detail(&self) -> &'static str {
        match self {
            Self::BadRequest(why) => why,
            Self::NoRoute => "no route matches this request",
            Self::TooLarge => "request body exceeds the configured limit",
            Self::Misdirected => "the request's host does not match the TLS server name",
            Self::NoHealthyBackend => "no healthy backend available",
            Self::ConnectFailed => "could not connect to a backend",
            Self::UpstreamTimeout => "the backend did not answer in time",
            Self::UpstreamFailed => "the backend connection failed",
            Self::ClientTimeout => "the request body stalled",
            Self::ClientAborted => "the request body was aborted",
            Self::Overloaded => "the gateway is at a configured capacity limit; retry later",
            Self::WebSocketDisabled => "WebSocket is disabled on this listener",
            Self::WebSocketBackend(why) => why,
        }
    }

    /// Whether the client connection should close after this answer:
    /// after a framing error the rest of the byte stream cannot be trusted.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_) | Self::TooLarge | Self::ClientTimeout | Self::ClientAborted
        )
    }

    pub fn into_response(self) -> Response<ProxyBody> {
        let status = self.status();
        let text = format!(
            "{} {}: {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.detail()
        );
        let mut resp = Response::new(full(text));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.closes_connection() {
            resp.extensions_mut().insert(CloseConnection);
        }
        resp
    }
}
