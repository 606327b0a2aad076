//! The demo's built-in backends: a TCP echo, HTTP/1.1 + HTTP/2 hello/echo
//! servers and an HTTP/3 one.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
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

/// An HTTP/3 origin on a loopback UDP port with `cert`: `GET` answers the
/// greeting, other methods echo the body. What the QUIC listeners and the
/// raw QUIC relay reach.
pub fn h3_hello(name: &'static str, cert: &eg_tls::SelfSigned) -> anyhow::Result<SocketAddr> {
    let tls = eg_config::ListenerTls::single(cert.cert_path.clone(), cert.key_path.clone());
    let opts = eg_tls::ServerTlsOptions {
        tls13_only: true,
        alpn: vec![b"h3".to_vec()],
        ticketer: None,
        early_data: None,
    };
    let rustls_config = eg_tls::server_config(&tls, &opts)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_config)?;
    let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(server, SocketAddr::from(([127, 0, 0, 1], 0)))?;
    let addr = endpoint.local_addr()?;
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok(mut h3) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    tokio::spawn(async move {
                        if let Ok((req, stream)) = resolver.resolve_request().await {
                            let _ = answer_h3(name, req, stream).await;
                        }
                    });
                }
            });
        }
    });
    Ok(addr)
}

async fn answer_h3<S: h3::quic::BidiStream<Bytes>>(
    name: &'static str,
    req: Request<()>,
    mut stream: h3::server::RequestStream<S, Bytes>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    stream.send_response(Response::new(())).await?;
    if req.method() == http::Method::GET || req.method() == http::Method::HEAD {
        // Read the request to its end (FIN) before finishing: a receive
        // side dropped unread sends STOP_SENDING(0), which curl reports as
        // a reset of the whole exchange.
        while stream.recv_data().await?.is_some() {}
        let text = format!(
            "hello from the ExpressGateway demo backend {name}: {} {} over HTTP/3\n",
            req.method(),
            req.uri().path()
        );
        if req.method() == http::Method::GET {
            stream.send_data(Bytes::from(text)).await?;
        }
    } else {
        while let Some(mut chunk) = stream.recv_data().await? {
            let len = chunk.remaining();
            let bytes = chunk.copy_to_bytes(len);
            stream.send_data(bytes).await?;
        }
    }
    stream.finish().await?;
    Ok(())
}
