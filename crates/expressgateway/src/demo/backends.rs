//! The demo's built-in backends: a TCP echo and an HTTP hello/echo server.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// Echo every byte back; close the write side when the client does.
pub async fn tcp_echo() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    Ok(addr)
}

/// `GET` answers a greeting naming the backend; any other method echoes
/// the request body back, streamed.
pub async fn http_hello(name: &'static str) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, name));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(
    req: Request<Incoming>,
    name: &'static str,
) -> Result<Response<BoxBody<Bytes, hyper::Error>>, Infallible> {
    let response = if req.method() == http::Method::GET || req.method() == http::Method::HEAD {
        let text = format!(
            "hello from the ExpressGateway demo backend {name}: {} {} over {:?}\n",
            req.method(),
            req.uri(),
            req.version()
        );
        Response::new(
            Full::new(Bytes::from(text))
                .map_err(|never| match never {})
                .boxed(),
        )
    } else {
        Response::new(req.into_body().boxed())
    };
    Ok(response)
}
