//! A real HTTP backend (hyper: HTTP/1.1 and HTTP/2, cleartext or TLS) and
//! hyper clients, for the HTTP e2e tests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// What the backend saw, for assertions.
#[derive(Default)]
pub struct Seen {
    pub hits: AtomicUsize,
    /// Status `/health` answers (0 means 200).
    pub health_status: std::sync::atomic::AtomicU16,
    /// Added to every answer, in ms.
    pub delay_ms: std::sync::atomic::AtomicU64,
    pub last_headers: Mutex<Option<HeaderMap>>,
    pub last_version: Mutex<Option<http::Version>>,
}

pub struct HttpBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Seen>,
    stop: tokio_util::sync::CancellationToken,
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl HttpBackend {
    /// Cleartext, HTTP/1.1 and h2c (prior knowledge) on one port.
    pub async fn start(name: &'static str) -> Self {
        Self::start_with_tls(name, None).await
    }

    /// With `tls`, serves HTTP/2 or HTTP/1.1 by ALPN.
    pub async fn start_with_tls(name: &'static str, tls: Option<&eg_tls::SelfSigned>) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), name, tls).await
    }

    /// Stop listening and drop every open connection at once, as a crash would.
    pub fn kill(self) -> SocketAddr {
        self.stop.cancel();
        self.addr
    }

    /// Serve on a given address (to bring a killed backend back).
    pub async fn start_on(
        at: SocketAddr,
        name: &'static str,
        tls: Option<&eg_tls::SelfSigned>,
    ) -> Self {
        let mut listener = TcpListener::bind(at).await;
        for _ in 0..100 {
            if listener.is_ok() {
                break;
            }
            // A killed predecessor on `at` lets go when its task notices.
            tokio::time::sleep(Duration::from_millis(10)).await;
            listener = TcpListener::bind(at).await;
        }
        let listener = listener.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let acceptor = tls.map(|c| {
            let mut cfg = server_config(c);
            cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
        });
        let state = Arc::clone(&seen);
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stopped.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, _)) = accepted else { return };
                let state = Arc::clone(&state);
                let acceptor = acceptor.clone();
                let conn_stop = stopped.clone();
                tokio::spawn(async move {
                    let _ = conn_stop
                        .run_until_cancelled(async move {
                            let service = hyper::service::service_fn(move |req| {
                                handle(req, name, Arc::clone(&state))
                            });
                            let builder =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                            match acceptor {
                                None => {
                                    let _ = builder
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                }
                                Some(a) => {
                                    if let Ok(tls) = a.accept(stream).await {
                                        let _ = builder
                                            .serve_connection(TokioIo::new(tls), service)
                                            .await;
                                    }
                                }
                            }
                        })
                        .await;
                });
            }
        });
        Self { addr, seen, stop }
    }

    pub fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }
}

fn server_config(c: &eg_tls::SelfSigned) -> rustls::ServerConfig {
    use rustls_pki_types::pem::PemObject;
    eg_tls::install_crypto_provider();
    let certs = eg_tls::load_certs(&c.cert_path).expect("certs");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key");
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config")
}

async fn handle(
    req: Request<Incoming>,
    name: &'static str,
    seen: Arc<Seen>,
) -> Result<Response<TestBody>, Infallible> {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut h) = seen.last_headers.lock() {
        *h = Some(req.headers().clone());
    }
    if let Ok(mut v) = seen.last_version.lock() {
        *v = Some(req.version());
    }
    let delay = seen.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let path = req.uri().path().to_owned();
    let mut resp = match path.as_str() {
        "/health" => {
            let mut r = Response::new(text("health"));
            let code = seen.health_status.load(Ordering::SeqCst);
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
            r
        }
        "/echo" => Response::new(req.into_body().map_err(Into::into).boxed()),
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            trailers.insert("x-trailer", http::HeaderValue::from_static("yes"));
            let frames = vec![
                Ok(Frame::data(Bytes::from_static(b"body-before-trailers"))),
                Ok(Frame::trailers(trailers)),
            ];
            let stream = futures_util::stream::iter(frames);
            let mut r = Response::new(StreamBody::new(stream).boxed());
            // HTTP/1.1 carries only the trailer fields the head declares.
            r.headers_mut().insert(
                "trailer",
                http::HeaderValue::from_static("grpc-status, x-trailer"),
            );
            r
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(text("late"))
        }
        p if p.starts_with("/files/") => match crate::support::file_reply(p) {
            Some(file) => Response::new(paused_body(file)),
            None => {
                let mut r = Response::new(text("no such file"));
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            }
        },
        "/status500" => {
            let mut r = Response::new(text("fail"));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
        // The request's `<name>` header as the body ("-" when absent).
        p if p.starts_with("/header/") => {
            let value = req
                .headers()
                .get(&p["/header/".len()..])
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            Response::new(text(value))
        }
        _ => Response::new(text(&format!("backend {name} {path}\n"))),
    };
    resp.headers_mut()
        .insert("x-backend", http::HeaderValue::from_static(name));
    Ok(resp)
}

/// A download's body, step by step (`FileReply::steps`).
fn paused_body(file: crate::support::FileReply) -> TestBody {
    let steps = file.steps();
    let body = Bytes::from(file.body);
    let stream =
        futures_util::StreamExt::then(futures_util::stream::iter(steps), move |(delay, range)| {
            let part = body.slice(range);
            async move {
                tokio::time::sleep(delay).await;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(part))
            }
        });
    StreamBody::new(stream).boxed()
}

pub fn text(s: &str) -> TestBody {
    Full::new(Bytes::from(s.to_owned()))
        .map_err(|never| match never {})
        .boxed()
}

pub fn bytes_body(b: Vec<u8>) -> TestBody {
    Full::new(Bytes::from(b))
        .map_err(|never| match never {})
        .boxed()
}

/// Which HTTP version the test client speaks to a cleartext listener.
#[derive(Clone, Copy, Debug)]
pub enum ClientProto {
    H1,
    /// HTTP/2 with prior knowledge (h2c).
    H2c,
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, TestBody>;

pub fn client(proto: ClientProto) -> TestClient {
    let mut b = Client::builder(TokioExecutor::new());
    if let ClientProto::H2c = proto {
        b.http2_only(true);
    }
    b.build_http()
}

/// A collected response: status, headers, body, trailers.
pub struct Collected {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

pub async fn send(client: &TestClient, req: Request<TestBody>) -> Collected {
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .expect("response within 30 s")
        .expect("response");
    let (parts, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    Collected {
        status: parts.status,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    }
}

pub fn get(url: &str) -> Request<TestBody> {
    Request::get(url).body(text("")).expect("request")
}
