//! Moving bodies between `ProxyBody` and HTTP/3 streams (h3 0.0.8), for
//! the H3 front and the H3 connector alike. Each direction is one task
//! with a small bounded channel, so an H3 body is a `ProxyBody` like any
//! other and back-pressure crosses the bridge.

use bytes::{Buf, Bytes};
use h3::quic::{BidiStream, RecvStream, SendStream};
use http::HeaderMap;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::sync::mpsc;

use crate::body::{BoxError, ProxyBody};

/// Frames buffered between an H3 stream and the body it feeds: a few
/// frames keep the pipe busy; more would only hide back-pressure.
const BODY_CHANNEL_FRAMES: usize = 4;

/// H3 error code for an aborted stream (RFC 9114 §8.1 H3_REQUEST_CANCELLED).
const H3_REQUEST_CANCELLED: u64 = 0x010c;

/// The receiving half of a request or response stream.
pub trait H3Recv: Send + 'static {
    fn data(&mut self)
        -> impl std::future::Future<Output = Result<Option<Bytes>, BoxError>> + Send;
    fn trailers(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<HeaderMap>, BoxError>> + Send;
}

/// The sending half.
pub trait H3Send: Send + 'static {
    fn data(
        &mut self,
        bytes: Bytes,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
    fn trailers(
        &mut self,
        trailers: HeaderMap,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
    fn finish(&mut self) -> impl std::future::Future<Output = Result<(), BoxError>> + Send;
    /// Abort the stream so the peer sees an error, not a clean end.
    fn abort(&mut self);
}

macro_rules! recv_impl {
    ($ty:ty) => {
        impl<S> H3Recv for $ty
        where
            S: RecvStream + Send + 'static,
        {
            async fn data(&mut self) -> Result<Option<Bytes>, BoxError> {
                match self.recv_data().await? {
                    Some(mut buf) => Ok(Some(buf.copy_to_bytes(buf.remaining()))),
                    None => Ok(None),
                }
            }
            async fn trailers(&mut self) -> Result<Option<HeaderMap>, BoxError> {
                Ok(self.recv_trailers().await?)
            }
        }
    };
}

macro_rules! send_impl {
    ($ty:ty) => {
        impl<S> H3Send for $ty
        where
            S: SendStream<Bytes> + Send + 'static,
        {
            async fn data(&mut self, bytes: Bytes) -> Result<(), BoxError> {
                Ok(self.send_data(bytes).await?)
            }
            async fn trailers(&mut self, trailers: HeaderMap) -> Result<(), BoxError> {
                Ok(self.send_trailers(trailers).await?)
            }
            async fn finish(&mut self) -> Result<(), BoxError> {
                Ok(self.finish().await?)
            }
            fn abort(&mut self) {
                self.stop_stream(h3::error::Code::from(H3_REQUEST_CANCELLED));
            }
        }
    };
}

recv_impl!(h3::server::RequestStream<S, Bytes>);
recv_impl!(h3::client::RequestStream<S, Bytes>);
send_impl!(h3::server::RequestStream<S, Bytes>);
send_impl!(h3::client::RequestStream<S, Bytes>);

/// A body fed by a task reading `recv`; a stream error becomes a body
/// error (never a clean end).
pub fn recv_body<R: H3Recv>(mut recv: R) -> ProxyBody {
    let (tx, mut rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(BODY_CHANNEL_FRAMES);
    tokio::spawn(async move {
        loop {
            match recv.data().await {
                Ok(Some(bytes)) => {
                    if tx.send(Ok(Frame::data(bytes))).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
        match recv.trailers().await {
            Ok(Some(t)) => {
                let _ = tx.send(Ok(Frame::trailers(t))).await;
            }
            Ok(None) => {}
            Err(e) => {
                let _ = tx.send(Err(e)).await;
            }
        }
    });
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    StreamBody::new(stream).boxed()
}

/// Send `body` on `send`, then finish; a body error aborts the stream.
pub async fn send_body<S: H3Send>(mut body: ProxyBody, send: &mut S) -> Result<(), BoxError> {
    loop {
        match body.frame().await {
            None => return send.finish().await,
            Some(Err(e)) => {
                send.abort();
                return Err(e);
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(bytes) => {
                    if !bytes.is_empty() {
                        send.data(bytes).await?;
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        send.trailers(trailers).await?;
                        // h3 0.0.8 still needs the explicit finish.
                        return send.finish().await;
                    }
                }
            },
        }
    }
}

/// Split a bidirectional request stream into its halves.
pub fn split_server<S>(
    stream: h3::server::RequestStream<S, Bytes>,
) -> (
    h3::server::RequestStream<S::SendStream, Bytes>,
    h3::server::RequestStream<S::RecvStream, Bytes>,
)
where
    S: BidiStream<Bytes>,
{
    stream.split()
}
