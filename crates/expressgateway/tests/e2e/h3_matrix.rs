//! HTTP/3 cells of the front x backend matrix: an H3 front to h1, h2 and
//! h3 backends, and H1/H2 fronts to an h3 backend. Each: GET, a 20 MiB
//! upload echoed with a checksum, gRPC-shaped trailers, 50 concurrent.

use ::http::{Method, Request, StatusCode};
use bytes::Bytes;

use crate::support::h3::{exchange, H3Backend, H3Client};
use crate::support::http::{bytes_body, client, get, send, ClientProto, HttpBackend};
use crate::support::tls::cert;
use crate::support::*;

pub(crate) fn quic_listener(
    c: &eg_tls::SelfSigned,
    backend: &str,
    proto: &str,
    extra: &str,
) -> String {
    format!(
        "{extra}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n[listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [[listeners.backends]]\naddress = \"{backend}\"\nprotocol = \"{proto}\"\ntls_ca_path = \"{}\"\n{}",
        c.cert_path.display(),
        c.key_path.display(),
        c.cert_path.display(),
        if proto == "h3" { "tls = true\n" } else { "" }
    )
}

/// A backend named "q" speaking `up` (h3 over QUIC with `c`, else hyper's
/// h1 + h2c): its address, and the backend to keep alive.
pub(crate) async fn backend_for(
    up: &str,
    c: &eg_tls::SelfSigned,
) -> (String, Option<HttpBackend>, Option<H3Backend>) {
    match up {
        "h3" => {
            let b = H3Backend::start("q", c).await;
            (b.addr.to_string(), None, Some(b))
        }
        _ => {
            let b = HttpBackend::start("q").await;
            (b.addr.to_string(), Some(b), None)
        }
    }
}

async fn h3_front_cell(up: &str) {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let (backend_addr, _h, _q) = backend_for(up, &c).await;
    let gw = Gateway::start_in(dir, &quic_listener(&c, &backend_addr, up, ""));
    let mut cl = H3Client::new(&c.cert_pem, gw.addr(0));

    let r = cl.send(Method::GET, "/hello", Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"backend q /hello\n");
    assert_eq!(
        r.headers.get("x-backend").map(|v| v.as_bytes()),
        Some(&b"q"[..])
    );

    let data = Bytes::from(pattern(20 << 20, 3));
    let r = cl.send(Method::POST, "/echo", data.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body.len(), data.len(), "echo length");
    assert_eq!(sha256(&r.body), sha256(&data), "echo checksum");

    let r = cl.send(Method::GET, "/trailers", Bytes::new()).await;
    assert_eq!(&r.body[..], b"body-before-trailers");
    let t = r.trailers.expect("trailers through the H3 front");
    assert_eq!(t.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));

    let sender = cl.sender().await;
    let port = gw.addr(0).port();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let mut s = sender.clone();
            tokio::spawn(async move {
                let req = Request::get(format!("https://localhost:{port}/c/{i}"))
                    .body(())
                    .expect("req");
                exchange(&mut s, req, Bytes::new()).await.expect("exchange")
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.expect("task");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, Bytes::from(format!("backend q /c/{i}\n")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_to_h1() {
    h3_front_cell("h1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_to_h2() {
    h3_front_cell("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_to_h3() {
    h3_front_cell("h3").await;
}

async fn to_h3_backend(front: ClientProto) {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let backend = H3Backend::start("q", &c).await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\ntls_ca_path = \"{}\"\n",
        backend.addr,
        c.cert_path.display()
    );
    let gw = Gateway::start_in(dir, &config);
    let base = format!("http://{}", gw.addr(0));
    let cl = client(front);
    let r = send(&cl, get(&format!("{base}/hello"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(&r.body[..], b"backend q /hello\n");
    let data = pattern(20 << 20, 9);
    let req = Request::post(format!("{base}/echo"))
        .body(bytes_body(data.clone()))
        .expect("req");
    let r = send(&cl, req).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(sha256(&r.body), sha256(&data), "echo checksum");
    let req = Request::get(format!("{base}/trailers"))
        .header("te", "trailers")
        .header("trailer", "grpc-status")
        .body(crate::support::http::text(""))
        .expect("req");
    let r = send(&cl, req).await;
    assert_eq!(&r.body[..], b"body-before-trailers");
    if let ClientProto::H2c = front {
        let t = r.trailers.expect("trailers from the h3 backend");
        assert_eq!(t.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    }
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (cl, url) = (cl.clone(), format!("{base}/c/{i}"));
            tokio::spawn(async move { send(&cl, get(&url)).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.expect("task");
        assert_eq!(r.body, format!("backend q /c/{i}\n").into_bytes());
    }
    assert!(backend.hits.load(std::sync::atomic::Ordering::SeqCst) >= 53);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_to_h3() {
    to_h3_backend(ClientProto::H1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_to_h3() {
    to_h3_backend(ClientProto::H2c).await;
}
