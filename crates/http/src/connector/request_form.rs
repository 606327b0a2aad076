//! The request as each backend protocol's wire wants it: the core hands
//! over a protocol-neutral request; here it takes the URI form, host field
//! and version its backend speaks.

use http::header::{HeaderValue, HOST, TE};
use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Uri, Version};

use crate::body::ProxyBody;

fn path_and_query(parts: &Parts) -> PathAndQuery {
    parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"))
}

/// HTTP/1.1: origin-form target and the authority in `Host`.
pub(super) fn h1(
    mut parts: Parts,
    authority: Option<&str>,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, http::Error> {
    parts.uri = Uri::builder()
        .path_and_query(path_and_query(&parts))
        .build()?;
    if let Some(a) = authority.and_then(|a| HeaderValue::from_str(a).ok()) {
        parts.headers.insert(HOST, a);
    }
    // An HTTP/2 or HTTP/3 client can always receive trailers; an HTTP/1.1
    // backend sends them only when asked.
    if parts.version >= Version::HTTP_2 {
        parts
            .headers
            .insert(TE, HeaderValue::from_static("trailers"));
    }
    parts.version = Version::HTTP_11;
    Ok(Request::from_parts(parts, body))
}

/// HTTP/2 and HTTP/3: scheme and authority in the target (`:scheme`,
/// `:authority`), no `Host`. The h3 client reads the same URI form.
pub(super) fn multiplexed(
    mut parts: Parts,
    authority: &str,
    tls: bool,
    body: ProxyBody,
) -> Result<Request<ProxyBody>, http::Error> {
    let scheme = if tls { Scheme::HTTPS } else { Scheme::HTTP };
    parts.uri = Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path_and_query(&parts))
        .build()?;
    parts.headers.remove(HOST);
    parts.version = Version::HTTP_2;
    Ok(Request::from_parts(parts, body))
}
