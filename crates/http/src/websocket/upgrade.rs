//! The backend's side of the handshake, in the backend's own protocol:
//! HTTP/1.1 `Upgrade: websocket` (checking its `Sec-WebSocket-Accept`),
//! HTTP/2 extended CONNECT (only where the backend advertised
//! SETTINGS_ENABLE_CONNECT_PROTOCOL) or HTTP/3 extended CONNECT.

use std::time::Duration;

use eg_config::BackendProtocol;
use http::header::{CONNECTION, HOST, UPGRADE};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

use super::handshake::{
    ClientHello, SEC_ACCEPT, SEC_EXTENSIONS, SEC_KEY, SEC_PROTOCOL, SEC_VERSION,
};
use super::{has_token, BoxIo};
use crate::body::{boxed_incoming, empty, ProxyBody};
use crate::connector::{Sender, Upstream};
use crate::error_map::ProxyError;

/// How long a fresh HTTP/2 backend connection may take to deliver its
/// SETTINGS before we conclude it does not offer extended CONNECT: its
/// first frame, one round trip after the handshake.
const SETTINGS_WAIT: Duration = Duration::from_secs(1);

/// The backend accepted: its tunnel, and the subprotocol it chose.
pub(super) struct Answer {
    pub io: BoxIo,
    pub protocol: Option<HeaderValue>,
}

pub(super) enum Failed {
    /// The backend answered with something else (a 403, a 404...): the
    /// client gets that answer.
    Refused(Box<Response<ProxyBody>>),
    /// The backend could not, or broke the protocol.
    Backend(ProxyError),
}

impl From<ProxyError> for Failed {
    fn from(e: ProxyError) -> Self {
        Self::Backend(e)
    }
}

/// One WebSocket request as the chosen backend will get it.
pub(super) struct Asked<'a> {
    upstream: &'a Upstream,
    authority: Option<&'a str>,
    offered: &'a [String],
    /// Our own `Sec-WebSocket-Key` for an HTTP/1.1 backend.
    key: String,
    /// The backend answers within this (`head_timeout_ms`).
    head_timeout: Duration,
}

impl<'a> Asked<'a> {
    pub(super) fn new(
        upstream: &'a Upstream,
        authority: Option<&'a str>,
        client: &'a ClientHello,
        head_timeout: Duration,
    ) -> Self {
        Self {
            upstream,
            authority,
            offered: &client.protocols,
            key: generate_key(),
            head_timeout,
        }
    }

    pub(super) async fn send(&self, sender: Sender, parts: Parts) -> Result<Answer, Failed> {
        match self.upstream.protocol {
            BackendProtocol::H3 => {
                self.require_extended_connect(&sender).await?;
                let req = self.request(parts, Version::HTTP_3)?;
                let (resp, io) = self.bounded(sender.h3_tunnel(req)).await?;
                let protocol = self.check(&resp)?;
                match io {
                    Some(io) => Ok(Answer {
                        io: Box::new(io),
                        protocol,
                    }),
                    None => Err(Failed::Refused(Box::new(resp))),
                }
            }
            BackendProtocol::H2 => {
                self.require_extended_connect(&sender).await?;
                let req = self.request(parts, Version::HTTP_2)?;
                self.hyper_upgrade(sender, req).await
            }
            _ => {
                let req = self.request(parts, Version::HTTP_11)?;
                self.hyper_upgrade(sender, req).await
            }
        }
    }

    /// An H2 or H3 backend must have advertised extended CONNECT.
    async fn require_extended_connect(&self, sender: &Sender) -> Result<(), Failed> {
        if sender.extended_connect(SETTINGS_WAIT).await {
            return Ok(());
        }
        tracing::warn!(
            backend = %self.upstream.address,
            "WebSocket refused: the backend does not advertise \
             SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441 / RFC 9220)"
        );
        Err(ProxyError::WebSocketBackend(
            "the backend does not accept WebSocket over HTTP/2 or HTTP/3 (no \
             SETTINGS_ENABLE_CONNECT_PROTOCOL)",
        )
        .into())
    }

    async fn bounded<T, E: std::fmt::Display>(
        &self,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, Failed> {
        match tokio::time::timeout(self.head_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                tracing::debug!(backend = %self.upstream.address, error = %e, "WebSocket handshake with the backend failed");
                Err(ProxyError::UpstreamFailed.into())
            }
            Err(_) => Err(ProxyError::UpstreamTimeout.into()),
        }
    }

    async fn hyper_upgrade(
        &self,
        sender: Sender,
        req: Request<ProxyBody>,
    ) -> Result<Answer, Failed> {
        let resp = self.bounded(sender.send_upgrade(req)).await?;
        let protocol = self.check(&resp)?;
        let accepted = match self.upstream.protocol {
            BackendProtocol::H2 => resp.status().is_success(),
            _ => resp.status() == StatusCode::SWITCHING_PROTOCOLS,
        };
        if !accepted {
            return Err(Failed::Refused(Box::new(resp.map(boxed_incoming))));
        }
        let up = self.bounded(hyper::upgrade::on(resp)).await?;
        Ok(Answer {
            io: Box::new(hyper_util::rt::TokioIo::new(up)),
            protocol,
        })
    }

    /// The request head in the backend's protocol.
    fn request(&self, parts: Parts, version: Version) -> Result<Request<ProxyBody>, Failed> {
        // The target and authority in the backend's wire form (the
        // connector's rules), then the upgrade itself.
        let (mut parts, _) = self
            .upstream
            .request(parts, self.authority, empty())
            .map_err(|_| ProxyError::BadRequest("request target cannot be forwarded"))?
            .into_parts();
        parts.headers.remove(http::header::TE);
        parts.version = version;
        let h = &mut parts.headers;
        h.insert(SEC_VERSION.clone(), HeaderValue::from_static("13"));
        parts.extensions = http::Extensions::new();
        if version == Version::HTTP_11 {
            parts.method = Method::GET;
            if let Some(a) = self.authority.and_then(|a| HeaderValue::from_str(a).ok()) {
                h.insert(HOST, a);
            }
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            if let Ok(k) = HeaderValue::from_str(&self.key) {
                h.insert(SEC_KEY.clone(), k);
            }
        } else {
            parts.method = Method::CONNECT;
            h.remove(HOST);
            if version == Version::HTTP_2 {
                parts
                    .extensions
                    .insert(hyper::ext::Protocol::from_static("websocket"));
            } else {
                parts.extensions.insert(h3::ext::Protocol::WEBSOCKET);
            }
        }
        Ok(Request::from_parts(parts, empty()))
    }

    /// Check an accepting answer: the accept key (HTTP/1.1), a subprotocol
    /// the client offered, no extensions (none were offered). Returns the
    /// chosen subprotocol. Other answers pass unchecked.
    fn check<B>(&self, resp: &Response<B>) -> Result<Option<HeaderValue>, Failed> {
        let h = resp.headers();
        let accepted = match self.upstream.protocol {
            BackendProtocol::H2 | BackendProtocol::H3 => resp.status().is_success(),
            _ => resp.status() == StatusCode::SWITCHING_PROTOCOLS,
        };
        if !accepted {
            return Ok(None);
        }
        let bad = |why: &'static str| {
            tracing::warn!(backend = %self.upstream.address, "{why}");
            Failed::Backend(ProxyError::WebSocketBackend(why))
        };
        if !matches!(
            self.upstream.protocol,
            BackendProtocol::H2 | BackendProtocol::H3
        ) {
            let expected = derive_accept_key(self.key.as_bytes());
            if h.get(&SEC_ACCEPT).map(HeaderValue::as_bytes) != Some(expected.as_bytes())
                || !has_token(h, "upgrade", "websocket")
            {
                return Err(bad(
                    "the backend's WebSocket answer has a wrong Sec-WebSocket-Accept or Upgrade",
                ));
            }
        }
        if h.contains_key(&SEC_EXTENSIONS) {
            return Err(bad(
                "the backend chose a WebSocket extension none was offered",
            ));
        }
        let chosen = h.get(&SEC_PROTOCOL).cloned();
        if let Some(p) = &chosen {
            let name = p.to_str().unwrap_or_default().trim();
            if !self.offered.iter().any(|o| o == name) {
                return Err(bad(
                    "the backend chose a WebSocket subprotocol the client did not offer",
                ));
            }
        }
        Ok(chosen)
    }
}
