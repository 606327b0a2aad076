//! A real HTTP/3 client (h3 + quinn) through the relay to a real HTTP/3
//! server: the relay is transparent to H3 (control and QPACK streams,
//! request streams, trailers, a server that does not read a GET's FIN).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};

use super::tests::{cert, client, listener_quic, pattern, relay, Scratch};
use crate::endpoint;

async fn h3_backend(
    dir: &std::path::Path,
) -> (std::net::SocketAddr, eg_tls::SelfSigned, quinn::Endpoint) {
    let cert = cert(dir, "backend");
    let quic = listener_quic(&cert);
    let server = endpoint::server_config(
        &quic,
        "backend",
        vec![b"h3".to_vec()],
        &eg_runtime::Carry::default(),
    )
    .expect("config");
    let ep = endpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        server,
        &quic,
        "backend",
    )
    .expect("bind");
    let addr = ep.local_addr().expect("addr");
    let accept = ep.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok(mut h3) =
                    h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn)).await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    tokio::spawn(async move {
                        let Ok((req, stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        let _ = answer(req, stream).await;
                    });
                }
            });
        }
    });
    (addr, cert, ep)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn answer<S: h3::quic::BidiStream<Bytes>>(
    req: Request<()>,
    mut stream: h3::server::RequestStream<S, Bytes>,
) -> Result<(), BoxError> {
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("x-backend", "origin")
        .body(())?;
    stream.send_response(resp).await?;
    if req.uri().path() == "/echo" {
        while let Some(mut chunk) = stream.recv_data().await? {
            let bytes = chunk.copy_to_bytes(chunk.remaining());
            stream.send_data(bytes).await?;
        }
    } else {
        // The request body is never read, as many servers do for a GET.
        stream
            .send_data(Bytes::from_static(b"body-before-trailers"))
            .await?;
        let mut t = HeaderMap::new();
        t.insert("grpc-status", http::HeaderValue::from_static("0"));
        stream.send_trailers(t).await?;
    }
    stream.finish().await?;
    Ok(())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

async fn exchange(
    sender: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> Result<Answer, BoxError> {
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .body(())?;
    let stream = sender.send_request(req).await?;
    let (mut send, mut recv) = stream.split();
    let upload = tokio::spawn(async move {
        for chunk in body.chunks(64 * 1024) {
            send.send_data(Bytes::copy_from_slice(chunk)).await?;
        }
        send.finish().await?;
        Ok::<_, h3::error::StreamError>(())
    });
    let resp = recv.recv_response().await?;
    let mut collected = BytesMut::new();
    while let Some(mut chunk) = recv.recv_data().await? {
        collected.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let trailers = recv.recv_trailers().await?;
    upload.await??;
    Ok(Answer {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: collected.freeze(),
        trailers,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h3_client_reaches_h3_server_unchanged() {
    let dir = Scratch::new();
    let (addr, backend_cert, _ep) = h3_backend(&dir.0).await;
    let text = format!(
        "backend_addr = \"{addr}\"\nsni = \"localhost\"\nbackend_ca_path = \"{}\"\n",
        backend_cert.cert_path.display()
    );
    let r = relay(dir, &text, "").await;
    let conn = client(&r, "h3").await;
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .expect("h3 client");
    tokio::spawn(async move {
        let _ = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    let body = Bytes::from(pattern(1 << 20, 0x4833));
    for round in 0..3 {
        let a = tokio::time::timeout(
            Duration::from_secs(10),
            exchange(&mut sender, http::Method::POST, "/echo", body.clone()),
        )
        .await
        .expect("in time")
        .unwrap_or_else(|e| panic!("round {round}: echo failed: {e:?}"));
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(
            a.headers.get("x-backend").map(|v| v.as_bytes()),
            Some(&b"origin"[..])
        );
        assert!(a.body == body, "H3 body changed in transit");
        let a = tokio::time::timeout(
            Duration::from_secs(10),
            exchange(&mut sender, http::Method::GET, "/trailers", Bytes::new()),
        )
        .await
        .expect("in time")
        .unwrap_or_else(|e| panic!("round {round}: trailers failed: {e:?}"));
        assert_eq!(&a.body[..], b"body-before-trailers");
        let status = a.trailers.as_ref().and_then(|t| t.get("grpc-status"));
        assert_eq!(
            status.map(|v| v.as_bytes()),
            Some(&b"0"[..]),
            "trailers lost"
        );
    }
    let _ = Arc::new(());
}
