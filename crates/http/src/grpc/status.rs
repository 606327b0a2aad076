//! gRPC status codes and the trailers-only responses the gateway makes for
//! a gRPC call it cannot forward (gRPC over HTTP/2, "Responses": HTTP 200,
//! `content-type: application/grpc`, `grpc-status` and `grpc-message` in
//! the one header block, no body).

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::body::{empty, ProxyBody};
use crate::error_map::ProxyError;

/// The codes of `grpc/status.h` the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

impl Code {
    fn value(self) -> HeaderValue {
        HeaderValue::from(self as u16)
    }

    /// The gRPC doc "HTTP to gRPC Status Code Mapping", for an HTTP status
    /// that carries no `grpc-status`.
    fn from_http(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::Internal,
            401 => Self::Unauthenticated,
            403 => Self::PermissionDenied,
            404 => Self::Unimplemented,
            429 | 502..=504 => Self::Unavailable,
            _ => Self::Unknown,
        }
    }

    /// A gateway error as a status. The HTTP mapping's answer where it
    /// fits; finer where the cause is known: a timeout is the call's
    /// deadline passing, a limit of ours is RESOURCE_EXHAUSTED (the code
    /// gRPC itself uses for "server out of resources" and "message larger
    /// than max").
    pub fn for_error(e: &ProxyError) -> Self {
        match e {
            ProxyError::TooLarge | ProxyError::Overloaded => Self::ResourceExhausted,
            ProxyError::UpstreamTimeout | ProxyError::ClientTimeout => Self::DeadlineExceeded,
            ProxyError::ClientAborted => Self::Cancelled,
            // Succeeds on a new connection: a status clients retry.
            ProxyError::Misdirected => Self::Unavailable,
            // 404 (no route) UNIMPLEMENTED, 502/503 (no backend, connect
            // or exchange failed) UNAVAILABLE, 400 INTERNAL.
            _ => Self::from_http(e.status()),
        }
    }
}

/// `grpc-message` is percent-encoded: every byte outside `%x20-%x7E`, and
/// `%` itself.
fn encode_message(msg: &str) -> HeaderValue {
    let mut out = String::with_capacity(msg.len());
    for b in msg.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static("gateway error"))
}

/// `grpc-status` and `grpc-message` for `code`.
pub fn fields(code: Code, message: &str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(2);
    h.insert("grpc-status", code.value());
    if !message.is_empty() {
        h.insert("grpc-message", encode_message(message));
    }
    h
}

/// A trailers-only response ending the call with `code`.
pub fn trailers_only(code: Code, message: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(empty());
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.extend(fields(code, message));
    resp
}

/// The gateway's answer to a gRPC call it could not complete.
pub fn error_response(e: &ProxyError) -> Response<ProxyBody> {
    trailers_only(Code::for_error(e), e.detail())
}

/// gRPC needs HTTP/2 (or HTTP/3): its framing relies on trailers and
/// full-duplex streams. Stock gRPC clients never send it over HTTP/1.1, so
/// whoever does is a person or a non-gRPC tool: 505 says why in HTTP, and
/// `grpc-status: 12` (UNIMPLEMENTED) says it to a gRPC-aware reader.
pub fn http1_refusal() -> Response<ProxyBody> {
    let mut resp = Response::new(crate::body::full(
        "505 HTTP Version Not Supported: gRPC needs HTTP/2 or HTTP/3\n",
    ));
    *resp.status_mut() = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.extend(fields(Code::Unimplemented, "gRPC needs HTTP/2 or HTTP/3"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_only_shape() {
        let r = error_response(&ProxyError::NoHealthyBackend);
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["content-type"], "application/grpc");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "no healthy backend available");
        assert!(hyper::body::Body::is_end_stream(r.body()));
    }

    #[test]
    fn message_percent_encoded() {
        assert_eq!(encode_message("50% off\né"), "50%25 off%0A%C3%A9");
    }

    #[test]
    fn http_mapping() {
        assert_eq!(Code::from_http(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(Code::from_http(StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(Code::from_http(StatusCode::IM_A_TEAPOT), Code::Unknown);
    }
}
