//! Request checks before anything is forwarded: framing ambiguities that
//! enable smuggling, header-name policy, and host/SNI agreement.

use eg_config::UnderscorePolicy;
use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, Request, Version};

use crate::error_map::ProxyError;

/// Headers that are meaningful only on one HTTP/1 connection; an HTTP/2
/// or HTTP/3 request carrying them is malformed (RFC 9113 §8.2.2).
static CONNECTION_SPECIFIC: [HeaderName; 5] = [
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    TRANSFER_ENCODING,
    http::header::UPGRADE,
];

/// Request extension set by the HTTP/1 front when the raw head had
/// ambiguous framing that hyper normalised before we saw it: both
/// Content-Length and Transfer-Encoding, a repeated Content-Length (even
/// with equal values), or a Content-Length that is not plain digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AmbiguousFraming;

/// Framing: refuse every message whose length two parsers could read
/// differently (CL.TE, TE.CL, duplicate CL, obfuscated TE).
pub fn check_framing<B>(req: &Request<B>, strict_te: bool) -> Result<(), ProxyError> {
    if req.extensions().get::<AmbiguousFraming>().is_some() {
        return Err(ProxyError::BadRequest(
            "ambiguous message framing (Content-Length with Transfer-Encoding, \
             or repeated Content-Length)",
        ));
    }
    let headers = req.headers();
    let cls: Vec<_> = headers.get_all(CONTENT_LENGTH).iter().collect();
    if cls.len() > 1 {
        return Err(ProxyError::BadRequest("duplicate Content-Length"));
    }
    if let Some(cl) = cls.first() {
        let digits = cl.as_bytes();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(ProxyError::BadRequest("malformed Content-Length"));
        }
    }
    if req.version() >= Version::HTTP_2 {
        // One pass over the names: interned-name compares, no hashing.
        if headers.keys().any(|k| CONNECTION_SPECIFIC.contains(k)) {
            return Err(ProxyError::BadRequest(
                "connection-specific header in an HTTP/2 or HTTP/3 request",
            ));
        }
        if headers
            .get(http::header::TE)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            return Err(ProxyError::BadRequest(
                "TE other than \"trailers\" in an HTTP/2 or HTTP/3 request",
            ));
        }
        return Ok(());
    }
    let tes: Vec<_> = headers.get_all(TRANSFER_ENCODING).iter().collect();
    if tes.is_empty() {
        return Ok(());
    }
    if !cls.is_empty() {
        return Err(ProxyError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if req.version() == Version::HTTP_10 {
        return Err(ProxyError::BadRequest(
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    let lone_chunked = tes.len() == 1
        && tes
            .first()
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    if strict_te && !lone_chunked {
        return Err(ProxyError::BadRequest(
            "Transfer-Encoding must be exactly \"chunked\"",
        ));
    }
    Ok(())
}

/// Apply `header_underscore_policy` to header names with `_`.
pub fn apply_underscore_policy(
    headers: &mut HeaderMap,
    policy: UnderscorePolicy,
) -> Result<(), ProxyError> {
    if policy == UnderscorePolicy::Allow {
        return Ok(());
    }
    let offending: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    if offending.is_empty() {
        return Ok(());
    }
    if policy == UnderscorePolicy::Reject {
        return Err(ProxyError::BadRequest("underscore in a header name"));
    }
    for name in offending {
        headers.remove(name);
    }
    Ok(())
}

/// The request's authority: the URI's (absolute-form, H2 `:authority`),
/// else the Host header. HTTP/1.1 without either is malformed.
pub fn authority<B>(req: &Request<B>) -> Result<Option<String>, ProxyError> {
    if let Some(a) = req.uri().authority() {
        return Ok(Some(a.as_str().to_owned()));
    }
    let hosts: Vec<_> = req.headers().get_all(HOST).iter().collect();
    match hosts.as_slice() {
        [] if req.version() == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("missing Host header"))
        }
        [] => Ok(None),
        [one] => one
            .to_str()
            .ok()
            .filter(|h| !h.is_empty() && h.parse::<http::uri::Authority>().is_ok())
            .map(|h| Some(h.to_owned()))
            .ok_or(ProxyError::BadRequest("malformed Host header")),
        _ => Err(ProxyError::BadRequest("duplicate Host header")),
    }
}

/// Host part of an authority, lowercase, without port or brackets.
pub fn host_only(authority: &str) -> String {
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => authority,
    };
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/").version(Version::HTTP_11);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        assert!(check_framing(
            &req(&[("content-length", "5"), ("transfer-encoding", "chunked")]),
            true
        )
        .is_err());
        assert!(check_framing(
            &req(&[("content-length", "5"), ("content-length", "5")]),
            true
        )
        .is_err());
        assert!(check_framing(&req(&[("transfer-encoding", "xchunked")]), true).is_err());
        assert!(check_framing(
            &req(&[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "identity")
            ]),
            true
        )
        .is_err());
        assert!(check_framing(&req(&[("content-length", "+5")]), true).is_err());
        assert!(check_framing(&req(&[("transfer-encoding", "chunked")]), true).is_ok());
        assert!(check_framing(&req(&[("content-length", "5")]), true).is_ok());
    }

    #[test]
    fn marker_from_the_front_is_refused() {
        // What hyper leaves of `Content-Length: 3` twice: one header.
        let mut r = req(&[("content-length", "3")]);
        assert!(check_framing(&r, true).is_ok());
        r.extensions_mut().insert(AmbiguousFraming);
        assert_eq!(
            check_framing(&r, true),
            Err(ProxyError::BadRequest(
                "ambiguous message framing (Content-Length with Transfer-Encoding, \
                 or repeated Content-Length)"
            ))
        );
    }

    #[test]
    fn host_parsing() {
        assert_eq!(host_only("Example.com:8080"), "example.com");
        assert_eq!(host_only("[::1]:443"), "::1");
        assert_eq!(host_only("example.com"), "example.com");
        assert!(authority(&req(&[])).is_err());
        assert!(authority(&req(&[("host", "a"), ("host", "b")])).is_err());
    }

    #[test]
    fn underscore_policies() {
        let mut h = HeaderMap::new();
        h.insert("x_user", http::HeaderValue::from_static("1"));
        h.insert("x-ok", http::HeaderValue::from_static("1"));
        assert!(apply_underscore_policy(&mut h.clone(), UnderscorePolicy::Reject).is_err());
        apply_underscore_policy(&mut h, UnderscorePolicy::Drop).expect("drop");
        assert!(!h.contains_key("x_user") && h.contains_key("x-ok"));
    }
}
