//! What an HTTP/1.1 client needs on the wire that the protocol-neutral
//! response does not carry: `Connection: close` where the connection must
//! end, and a `Trailer` declaration for gRPC's trailer fields.

use http::header::{HeaderValue, CONNECTION, CONTENT_TYPE, TRAILER};
use http::Response;

use crate::error_map::CloseConnection;

/// Shape `resp` for an HTTP/1.1 client; `last` when this is the
/// connection's final response (its request cap reached).
pub(super) fn response<B>(resp: &mut Response<B>, last: bool) {
    // A 101 keeps its `Connection: Upgrade`: the connection ends with the
    // tunnel anyway.
    let upgrading = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    let close = !upgrading && (last || resp.extensions().get::<CloseConnection>().is_some());
    let headers = resp.headers_mut();
    if close {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    // HTTP/1.1 sends only trailer fields declared in `Trailer`, which an
    // HTTP/2 or HTTP/3 backend need not send. gRPC's are fixed by the
    // protocol, so declare them.
    let grpc = headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc && !headers.contains_key(TRAILER) {
        headers.insert(
            TRAILER,
            HeaderValue::from_static("grpc-status, grpc-message, grpc-status-details-bin"),
        );
    }
}
