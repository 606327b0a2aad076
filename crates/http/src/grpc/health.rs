//! `grpc.health.v1.Health/Check`: the messages (shared with the active
//! probe in `crate::health`) and the gateway's own answer for service "".
//!
//! The messages are prost types rather than hand-rolled bytes: prost (and
//! its derive, whose syn/quote/itertools/anyhow the workspace already
//! builds) adds two small crates and decodes by protobuf's rules: unknown
//! fields, repeated fields, any field order. A byte-pattern check would
//! refuse a valid message from a newer client or server. tonic-health
//! would bring tonic and tower for two one-field messages.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use prost::Message;
use tokio::time::Instant;

use super::status::{fields, Code};
use crate::body::{BoxError, ProxyBody};
use crate::error_map::ProxyError;
use crate::settings::PoolHandle;

/// The method's path.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// A Check request is a service name: a few dozen bytes. Anything past
/// this is no health check the gateway should buffer to find out.
pub const MAX_REQUEST_BYTES: usize = 4096;

#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    ServiceUnknown = 3,
}

/// One message in gRPC's length-prefixed framing (uncompressed).
pub fn frame(msg: &impl Message) -> Bytes {
    let len = msg.encoded_len();
    let mut out = BytesMut::with_capacity(len + 5);
    out.put_u8(0);
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    msg.encode_raw(&mut out);
    out.freeze()
}

/// The one uncompressed message a unary body holds; `None` for anything
/// else (compressed, truncated, trailing bytes, not that message).
pub fn unframe<M: Message + Default>(mut body: Bytes) -> Option<M> {
    if body.remaining() < 5 || body.get_u8() != 0 {
        return None;
    }
    let len = usize::try_from(body.get_u32()).ok()?;
    if body.remaining() != len {
        return None;
    }
    M::decode(body).ok()
}

/// The request frame the active probe sends.
pub fn request_frame(service: &str) -> Bytes {
    frame(&HealthCheckRequest {
        service: service.to_owned(),
    })
}

/// Whether a response body says SERVING.
pub fn says_serving(body: Bytes) -> bool {
    unframe::<HealthCheckResponse>(body).is_some_and(|r| r.status == ServingStatus::Serving as i32)
}

/// Process-wide readiness: false from the start of a drain on, so health
/// checkers in front move traffic away while connections finish.
pub fn gateway_ready() -> bool {
    !eg_runtime::draining()
}

/// What reading a Check request found.
pub enum Read {
    /// Service "": the gateway answers.
    Local(Response<ProxyBody>),
    /// Another service, or a message only the backend can read
    /// (compressed, say): forward these bytes.
    Forward(Bytes),
}

/// Read a Check request, bounded in size and time.
pub async fn read_request(mut body: ProxyBody, by: Instant) -> Result<Bytes, ProxyError> {
    let mut got = BytesMut::new();
    loop {
        let frame = match tokio::time::timeout_at(by, body.frame()).await {
            Err(_) => return Err(ProxyError::ClientTimeout),
            Ok(None) => return Ok(got.freeze()),
            Ok(Some(Err(_))) => return Err(ProxyError::ClientAborted),
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if got.len() + data.len() > MAX_REQUEST_BYTES {
                return Err(ProxyError::TooLarge);
            }
            got.extend_from_slice(&data);
        }
    }
}

/// Answer a Check request when it asks about the server as a whole.
pub fn local_answer(request: Bytes, pool: &PoolHandle) -> Read {
    match unframe::<HealthCheckRequest>(request.clone()) {
        Some(req) if req.service.is_empty() => {
            let now = std::time::Instant::now();
            let up = pool.pool.backends().iter().any(|b| b.is_available(now));
            let status = if up && gateway_ready() {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            Read::Local(answer(status))
        }
        _ => Read::Forward(request),
    }
}

fn answer(status: ServingStatus) -> Response<ProxyBody> {
    let message = frame(&HealthCheckResponse {
        status: status as i32,
    });
    let frames: [Result<Frame<Bytes>, BoxError>; 2] = [
        Ok(Frame::data(message)),
        Ok(Frame::trailers(fields(Code::Ok, ""))),
    ];
    let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_tolerate_unknown_fields() {
        assert_eq!(&request_frame("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(
            &request_frame("svc")[..],
            &[0, 0, 0, 0, 5, 0x0a, 3, b's', b'v', b'c']
        );
        assert!(says_serving(Bytes::from_static(&[
            0, 0, 0, 0, 2, 0x08, 0x01
        ])));
        assert!(!says_serving(Bytes::from_static(&[
            0, 0, 0, 0, 2, 0x08, 0x02
        ])));
        // An unknown field 2 (varint) before the status: still SERVING.
        assert!(says_serving(Bytes::from_static(&[
            0, 0, 0, 0, 4, 0x10, 0x05, 0x08, 0x01
        ])));
        assert!(!says_serving(Bytes::from_static(&[0, 0, 0, 0, 9, 0x08])));
        assert!(!says_serving(Bytes::from_static(&[
            1, 0, 0, 0, 2, 0x08, 0x01
        ])));
        assert!(!says_serving(Bytes::new()));
    }
}
