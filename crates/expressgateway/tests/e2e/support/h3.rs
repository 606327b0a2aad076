//! HTTP/3 peers for the e2e tests: a quinn + h3 backend (echo, trailers,
//! greeting) and a quinn + h3 client that reconnects after GOAWAY.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls_pki_types::pem::PemObject;

fn server_crypto(cert: &eg_tls::SelfSigned) -> Arc<quinn::crypto::rustls::QuicServerConfig> {
    eg_tls::install_crypto_provider();
    let certs = eg_tls::load_certs(&cert.cert_path).expect("certs");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("key");
    let mut tls = rustls::ServerConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    tls.alpn_protocols = vec![b"h3".to_vec()];
    Arc::new(quinn::crypto::rustls::QuicServerConfig::try_from(tls).expect("quic config"))
}

/// A loopback quinn endpoint with roomy socket buffers (as the gateway's).
fn endpoint_at(local: &str, server: Option<quinn::ServerConfig>) -> quinn::Endpoint {
    let socket = std::net::UdpSocket::bind(local).expect("udp bind");
    eg_runtime::tune_udp_socket(&socket);
    let runtime = quinn::default_runtime().expect("runtime");
    quinn::Endpoint::new(quinn::EndpointConfig::default(), server, socket, runtime)
        .expect("endpoint")
}

/// A real HTTP/3 origin on loopback.
pub struct H3Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// QUIC connections accepted.
    pub connections: Arc<AtomicUsize>,
    endpoint: quinn::Endpoint,
}

impl Drop for H3Backend {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"test over");
    }
}

impl H3Backend {
    pub async fn start(name: &'static str, cert: &eg_tls::SelfSigned) -> Self {
        Self::start_with(name, cert, None).await
    }

    /// As `start`, bound to `local` (e.g. an address in a network namespace).
    pub async fn start_on(name: &'static str, cert: &eg_tls::SelfSigned, local: &str) -> Self {
        Self::start_at(name, cert, None, local).await
    }

    /// A backend that recycles each connection after `every` requests, as
    /// a server shedding connections does: a graceful GOAWAY (h3's
    /// `shutdown(0)`: later streams get H3_REQUEST_REJECTED), then, once
    /// no stream has come for 300 ms, the connection closes (H3_NO_ERROR).
    pub async fn start_goaway_every(
        name: &'static str,
        cert: &eg_tls::SelfSigned,
        every: usize,
    ) -> Self {
        Self::start_with(name, cert, Some(every)).await
    }

    async fn start_with(
        name: &'static str,
        cert: &eg_tls::SelfSigned,
        goaway_every: Option<usize>,
    ) -> Self {
        Self::start_at(name, cert, goaway_every, "127.0.0.1:0").await
    }

    async fn start_at(
        name: &'static str,
        cert: &eg_tls::SelfSigned,
        goaway_every: Option<usize>,
        local: &str,
    ) -> Self {
        let config = quinn::ServerConfig::with_crypto(server_crypto(cert));
        let endpoint = endpoint_at(local, Some(config));
        let addr = endpoint.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (ep, counter) = (endpoint.clone(), Arc::clone(&hits));
        let conns = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Some(incoming) = ep.accept().await {
                let counter = Arc::clone(&counter);
                conns.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let Ok(conn) = incoming.await else { return };
                    let Ok(mut h3) =
                        h3::server::Connection::<_, Bytes>::new(h3_quinn::Connection::new(conn))
                            .await
                    else {
                        return;
                    };
                    let (mut accepted, mut closing) = (0usize, false);
                    loop {
                        let next = if closing {
                            match tokio::time::timeout(Duration::from_millis(300), h3.accept())
                                .await
                            {
                                Ok(next) => next,
                                Err(_) => break,
                            }
                        } else {
                            h3.accept().await
                        };
                        let Ok(Some(resolver)) = next else { break };
                        let counter = Arc::clone(&counter);
                        tokio::spawn(async move {
                            let Ok((req, stream)) = resolver.resolve_request().await else {
                                return;
                            };
                            counter.fetch_add(1, Ordering::SeqCst);
                            let _ = answer(name, req, stream).await;
                        });
                        accepted += 1;
                        if !closing && goaway_every == Some(accepted) {
                            closing = true;
                            if h3.shutdown(0).await.is_err() {
                                break;
                            }
                        }
                    }
                    // Dropping the connection closes it with H3_NO_ERROR, and
                    // QUIC drops what it has not sent: let the last answers
                    // (finished, not yet acknowledged) go out first.
                    if closing {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
            }
        });
        Self {
            addr,
            hits,
            connections,
            endpoint,
        }
    }
}

async fn answer<S>(
    name: &'static str,
    req: Request<()>,
    mut stream: h3::server::RequestStream<S, Bytes>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: h3::quic::BidiStream<Bytes>,
{
    let path = req.uri().path().to_owned();
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("x-backend", name)
        .body(())?;
    let grpc = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return grpc_echo(req, stream).await;
    }
    match path.as_str() {
        "/echo" => {
            stream.send_response(resp).await?;
            while let Some(mut chunk) = stream.recv_data().await? {
                let bytes = chunk.copy_to_bytes(chunk.remaining());
                stream.send_data(bytes).await?;
            }
        }
        p if p.starts_with("/files/") => {
            let Some(file) = crate::support::file_reply(p) else {
                let missing = Response::builder().status(StatusCode::NOT_FOUND).body(())?;
                stream.send_response(missing).await?;
                stream.finish().await?;
                return Ok(());
            };
            stream.send_response(resp).await?;
            for (delay, range) in file.steps() {
                tokio::time::sleep(delay).await;
                for chunk in file.body.get(range).unwrap_or_default().chunks(64 * 1024) {
                    stream.send_data(Bytes::copy_from_slice(chunk)).await?;
                }
            }
        }
        "/trailers" => {
            stream.send_response(resp).await?;
            stream
                .send_data(Bytes::from_static(b"body-before-trailers"))
                .await?;
            let mut t = HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            stream.send_trailers(t).await?;
        }
        _ => {
            stream.send_response(resp).await?;
            stream
                .send_data(Bytes::from(format!("backend {name} {path}\n")))
                .await?;
        }
    }
    stream.finish().await?;
    Ok(())
}

/// A gRPC origin by method name. `.../ServerStream` reads the request
/// (one message `N,GAP` or `N:GAP`) before it answers `m0`..`m{N-1}`, GAP seconds
/// apart; `.../ClientStream` reads the whole request before it answers one
/// message, the request messages joined by `|`; anything else echoes each
/// request chunk back as it arrives (unary and bidi). Then trailers with
/// grpc-status 0, status details and custom metadata; the `grpc-timeout`
/// it received comes back as `x-seen-grpc-timeout`.
async fn grpc_echo<S>(
    req: Request<()>,
    mut stream: h3::server::RequestStream<S, Bytes>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: h3::quic::BidiStream<Bytes>,
{
    let seen = req
        .headers()
        .get("grpc-timeout")
        .cloned()
        .unwrap_or(http::HeaderValue::from_static("none"));
    let resp = Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/grpc")
        .header("x-seen-grpc-timeout", seen)
        .body(())?;
    let method = req.uri().path().rsplit('/').next().unwrap_or_default();
    match method {
        "ServerStream" | "ClientStream" => {
            // The whole request first, then the answer.
            let mut body = BytesMut::new();
            while let Some(mut chunk) = stream.recv_data().await? {
                body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
            }
            stream.send_response(resp).await?;
            let messages = grpc_messages(&body);
            if method == "ClientStream" {
                stream.send_data(grpc_frame(&messages.join(&b'|'))).await?;
            } else {
                let spec = String::from_utf8_lossy(messages.first().map_or(&[][..], Vec::as_slice))
                    .replace(':', ",");
                let (n, gap) = spec.split_once(',').unwrap_or((&spec, "0"));
                let gap = Duration::from_secs_f64(gap.parse().unwrap_or(0.0));
                for i in 0..n.parse::<usize>().unwrap_or(0) {
                    stream
                        .send_data(grpc_frame(format!("m{i}").as_bytes()))
                        .await?;
                    tokio::time::sleep(gap).await;
                }
            }
        }
        _ => {
            stream.send_response(resp).await?;
            while let Some(mut chunk) = stream.recv_data().await? {
                let bytes = chunk.copy_to_bytes(chunk.remaining());
                stream.send_data(bytes).await?;
            }
        }
    }
    let mut t = HeaderMap::new();
    t.insert("grpc-status", http::HeaderValue::from_static("0"));
    t.insert("x-trailer", http::HeaderValue::from_static("h3-echo"));
    t.insert(
        "grpc-status-details-bin",
        http::HeaderValue::from_static("CAASBmgzLWVjaG8"),
    );
    stream.send_trailers(t).await?;
    stream.finish().await?;
    Ok(())
}

/// The messages of a gRPC body (uncompressed, length-prefixed).
fn grpc_messages(mut body: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(head) = body.get(..5) {
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let Some(msg) = body.get(5..5 + len) else {
            break;
        };
        out.push(msg.to_vec());
        body = &body[5 + len..];
    }
    out
}

fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + msg.len());
    out.extend_from_slice(&[0]);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    out.freeze()
}

/// An HTTP/3 client trusting `ca_pem`; it reconnects when the server has
/// sent GOAWAY or the connection closed.
pub struct H3Client {
    endpoint: quinn::Endpoint,
    config: quinn::ClientConfig,
    target: SocketAddr,
    conn: Option<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>>,
    pub connections_opened: usize,
}

/// A collected HTTP/3 response.
pub struct H3Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl H3Client {
    pub fn new(ca_pem: &str, target: SocketAddr) -> Self {
        eg_tls::install_crypto_provider();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("pem"))
            .expect("root");
        let tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(roots)
            .with_no_client_auth();
        Self::with_tls(tls, target)
    }

    /// Trusting any certificate (the demo's).
    pub fn insecure(target: SocketAddr) -> Self {
        eg_tls::install_crypto_provider();
        let tls = rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(crate::support::tls::AcceptAny))
            .with_no_client_auth();
        Self::with_tls(tls, target)
    }

    fn with_tls(mut tls: rustls::ClientConfig, target: SocketAddr) -> Self {
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic client");
        let config = quinn::ClientConfig::new(Arc::new(crypto));
        let local = match (target.is_ipv6(), target.ip().is_loopback()) {
            (true, true) => "[::1]:0",
            (false, true) => "127.0.0.1:0",
            // Off loopback (a network namespace's address): any local one.
            (true, false) => "[::]:0",
            (false, false) => "0.0.0.0:0",
        };
        let endpoint = endpoint_at(local, None);
        Self {
            endpoint,
            config,
            target,
            conn: None,
            connections_opened: 0,
        }
    }

    pub async fn sender(&mut self) -> h3::client::SendRequest<h3_quinn::OpenStreams, Bytes> {
        if let Some(s) = &self.conn {
            return s.clone();
        }
        let conn = self
            .endpoint
            .connect_with(self.config.clone(), self.target, "localhost")
            .expect("connect")
            .await
            .expect("QUIC handshake");
        let (mut driver, sender) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .expect("h3 client");
        tokio::spawn(async move {
            let _ = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        self.connections_opened += 1;
        self.conn = Some(sender.clone());
        sender
    }

    /// Send a request (retried once on a fresh connection if the old one
    /// refused it after GOAWAY); collect the response.
    pub async fn send(&mut self, method: http::Method, path: &str, body: Bytes) -> H3Response {
        for attempt in 0..2 {
            let mut sender = self.sender().await;
            let req = Request::builder()
                .method(method.clone())
                .uri(format!("https://localhost:{}{path}", self.target.port()))
                .body(())
                .expect("request");
            match tokio::time::timeout(
                Duration::from_secs(30),
                exchange(&mut sender, req, body.clone()),
            )
            .await
            {
                Ok(Ok(r)) => return r,
                Ok(Err(e)) if attempt == 0 && unprocessed(e.as_ref()) => {
                    // Refused by GOAWAY: reconnect and send it again.
                    self.conn = None;
                }
                Ok(Err(e)) => panic!("HTTP/3 request failed: {e}"),
                Err(_) => panic!("HTTP/3 request timed out"),
            }
        }
        unreachable!("two attempts return or panic")
    }
}

/// Whether an error says the server did not process the request (GOAWAY
/// or H3_REQUEST_REJECTED): only then may a client resend it.
fn unprocessed(e: &(dyn std::error::Error + 'static)) -> bool {
    let text = e.to_string();
    // "Remote is closing": the client saw GOAWAY and did not send it.
    text.contains("0x10b")
        || text.contains("H3_REQUEST_REJECTED")
        || text.contains("Remote is closing")
}

pub async fn exchange(
    sender: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    req: Request<()>,
    body: Bytes,
) -> Result<H3Response, Box<dyn std::error::Error + Send + Sync>> {
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
    // A server that has answered may stop reading the request (RFC 9114
    // §4.1, STOP_SENDING with H3_NO_ERROR): an upload cut short after a
    // complete response is not a failure. Bodies are checked by callers.
    let _ = upload.await;
    Ok(H3Response {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: collected.freeze(),
        trailers,
    })
}
