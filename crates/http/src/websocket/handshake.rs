//! The client's side of the handshake: what a front's WebSocket request
//! must carry, and the answer in the client's own protocol (`101` with
//! `Sec-WebSocket-Accept` on HTTP/1.1, `200` on HTTP/2 and HTTP/3).

use std::time::Duration;

use http::header::{CONNECTION, UPGRADE};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use super::{has_token, Kind};
use crate::body::{empty, ProxyBody};
use crate::error_map::ProxyError;

pub(super) static SEC_KEY: HeaderName = HeaderName::from_static("sec-websocket-key");
pub(super) static SEC_ACCEPT: HeaderName = HeaderName::from_static("sec-websocket-accept");
pub(super) static SEC_VERSION: HeaderName = HeaderName::from_static("sec-websocket-version");
pub(super) static SEC_PROTOCOL: HeaderName = HeaderName::from_static("sec-websocket-protocol");
pub(super) static SEC_EXTENSIONS: HeaderName = HeaderName::from_static("sec-websocket-extensions");

/// How long the client's stream may take to be handed over once its
/// answer is on its way: one write of a small head, so a few seconds
/// cover any client still there.
pub(super) const UPGRADE_WAIT: Duration = Duration::from_secs(10);

/// What the client asked for.
pub(super) struct ClientHello {
    /// Its `Sec-WebSocket-Key` (required on HTTP/1.1; optional on H2/H3,
    /// where some clients send one and insist on the accept key).
    pub key: Option<HeaderValue>,
    /// The subprotocols it offered, in its order.
    pub protocols: Vec<String>,
}

/// Check the request against RFC 6455 §4.2.1 (HTTP/1.1) or RFC 8441 §5 /
/// RFC 9220 §3 (extended CONNECT).
pub(super) fn check(kind: Kind, parts: &Parts) -> Result<ClientHello, ProxyError> {
    let h = &parts.headers;
    if kind == Kind::H1Upgrade {
        if parts.method != Method::GET {
            return Err(ProxyError::BadRequest("a WebSocket upgrade must be a GET"));
        }
        if !has_token(h, "connection", "upgrade") {
            return Err(ProxyError::BadRequest(
                "a WebSocket upgrade needs `Connection: Upgrade`",
            ));
        }
    }
    let version = h.get(&SEC_VERSION).map(HeaderValue::as_bytes);
    let version_ok = match (kind, version) {
        (_, Some(v)) => v == b"13",
        // RFC 8441 asks for it, but a missing one means nothing else.
        (Kind::ExtendedConnect, None) => true,
        (Kind::H1Upgrade, None) => false,
    };
    if !version_ok {
        return Err(ProxyError::BadRequest("Sec-WebSocket-Version must be 13"));
    }
    let key = h.get(&SEC_KEY).cloned();
    // A key is 16 random bytes in base64: 24 characters.
    let key_ok = key.as_ref().map(|k| k.as_bytes().len() == 24);
    if key_ok == Some(false) || (kind == Kind::H1Upgrade && key_ok.is_none()) {
        return Err(ProxyError::BadRequest(
            "missing or malformed Sec-WebSocket-Key",
        ));
    }
    Ok(ClientHello {
        key,
        protocols: offered_protocols(h),
    })
}

/// The subprotocols listed in `Sec-WebSocket-Protocol`.
pub(super) fn offered_protocols(h: &HeaderMap) -> Vec<String> {
    h.get_all(&SEC_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Drop the fields that belong to one leg's handshake: the backend leg
/// gets its own key and version, and no extensions (the relay reads and
/// writes frames itself, so permessage-deflate cannot pass end to end).
pub(super) fn strip_websocket_fields(h: &mut HeaderMap) {
    for name in [&SEC_KEY, &SEC_ACCEPT, &SEC_VERSION, &SEC_EXTENSIONS] {
        h.remove(name);
    }
}

/// The answer to the client: the backend accepted, with `protocol` (one
/// the client offered) as the subprotocol.
pub(super) fn answer(
    kind: Kind,
    client: &ClientHello,
    protocol: Option<&HeaderValue>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    if let Some(key) = &client.key {
        if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
            h.insert(SEC_ACCEPT.clone(), accept);
        }
    }
    if let Some(p) = protocol {
        h.insert(SEC_PROTOCOL.clone(), p.clone());
    }
    match kind {
        Kind::H1Upgrade => {
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert(UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        }
        Kind::ExtendedConnect => *resp.status_mut() = StatusCode::OK,
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut req = http::Request::builder().method(method).uri("/chat");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(()).expect("request").into_parts().0
    }

    #[test]
    fn h1_handshake_needs_get_connection_version_and_key() {
        let good = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("sec-websocket-protocol", "chat, superchat"),
        ];
        let hello = check(Kind::H1Upgrade, &parts(Method::GET, &good)).expect("valid");
        assert_eq!(hello.protocols, ["chat", "superchat"]);
        assert!(check(Kind::H1Upgrade, &parts(Method::POST, &good)).is_err());
        assert!(check(Kind::H1Upgrade, &parts(Method::GET, &good[1..])).is_err());
        let mut old = good;
        old[2] = ("sec-websocket-version", "8");
        assert!(check(Kind::H1Upgrade, &parts(Method::GET, &old)).is_err());
        let mut short = good;
        short[3] = ("sec-websocket-key", "abc");
        assert!(check(Kind::H1Upgrade, &parts(Method::GET, &short)).is_err());
    }

    #[test]
    fn answers_carry_the_rfc_6455_accept_key() {
        let hello = ClientHello {
            key: Some(HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ==")),
            protocols: vec![],
        };
        let resp = answer(Kind::H1Upgrade, &hello, None);
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        // RFC 6455 §1.3's worked example.
        assert_eq!(
            resp.headers().get(&SEC_ACCEPT).map(HeaderValue::as_bytes),
            Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
        // On H2/H3 (extended CONNECT) too, for clients that send a key.
        let resp = answer(Kind::ExtendedConnect, &hello, None);
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers().get(UPGRADE).is_none());
        assert_eq!(
            resp.headers().get(&SEC_ACCEPT).map(HeaderValue::as_bytes),
            Some(&b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="[..])
        );
        // No key, no accept: there is nothing to answer.
        let keyless = ClientHello {
            key: None,
            protocols: vec![],
        };
        let resp = answer(Kind::ExtendedConnect, &keyless, None);
        assert!(resp.headers().get(&SEC_ACCEPT).is_none());
    }

    #[test]
    fn extended_connect_key_is_optional_but_checked() {
        let keyed = [
            ("sec-websocket-version", "13"),
            ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ];
        let connect = |h: &[(&str, &str)]| check(Kind::ExtendedConnect, &parts(Method::CONNECT, h));
        let hello = connect(&keyed).expect("valid");
        assert_eq!(
            hello.key.as_ref().map(HeaderValue::as_bytes),
            Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..])
        );
        assert!(connect(&keyed[..1]).is_ok_and(|h| h.key.is_none()));
        assert!(connect(&[("sec-websocket-key", "abc")]).is_err());
    }
}
