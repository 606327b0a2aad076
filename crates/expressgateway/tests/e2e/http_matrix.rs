//! Every front x backend cell of the HTTP/1.1 and HTTP/2 matrix, over
//! cleartext and TLS upstreams: GET, a 20 MiB upload echoed back with a
//! checksum, response trailers, 100 concurrent requests.

use ::http::{Method, Request, StatusCode};

use crate::support::http::{bytes_body, client, get, send, ClientProto, HttpBackend};
use crate::support::tls::cert;
use crate::support::*;

#[derive(Clone, Copy)]
enum Up {
    H1,
    H2,
}

async fn cell(front: ClientProto, up: Up, upstream_tls: bool) {
    let dir = scratch();
    let c = cert(dir.path(), "backend");
    let backend = HttpBackend::start_with_tls("m", upstream_tls.then_some(&c)).await;
    let proto = match up {
        Up::H1 => "h1",
        Up::H2 => "h2",
    };
    let tls = if upstream_tls {
        format!("tls = true\ntls_ca_path = \"{}\"\n", c.cert_path.display())
    } else {
        String::new()
    };
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"{}\"\nprotocol = \"{proto}\"\n{tls}",
        backend.addr
    );
    let gw = Gateway::start_in(dir, &config);
    let base = format!("http://{}", gw.addr(0));
    let cl = client(front);

    // GET
    let r = send(&cl, get(&format!("{base}/hello"))).await;
    assert_eq!(r.status, StatusCode::OK, "GET status");
    assert_eq!(&r.body[..], b"backend m /hello\n");
    let want_version = match up {
        Up::H1 => ::http::Version::HTTP_11,
        Up::H2 => ::http::Version::HTTP_2,
    };
    let seen = backend.seen.last_version.lock().ok().and_then(|v| *v);
    assert_eq!(
        seen,
        Some(want_version),
        "backend spoke the configured protocol"
    );

    // 20 MiB upload echoed back, checksummed.
    let data = pattern(20 << 20, 7);
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("{base}/echo"))
        .body(bytes_body(data.clone()))
        .expect("request");
    let r = send(&cl, req).await;
    assert_eq!(r.status, StatusCode::OK, "POST status");
    assert_eq!(r.body.len(), data.len(), "echo length");
    assert_eq!(sha256(&r.body), sha256(&data), "echo checksum");

    // Trailers (gRPC-shaped) reach the client. H1 clients ask with TE.
    let req = Request::get(format!("{base}/trailers"))
        .header("te", "trailers")
        .body(crate::support::http::text(""))
        .expect("request");
    let r = send(&cl, req).await;
    assert_eq!(&r.body[..], b"body-before-trailers");
    let trailers = r.trailers.expect("trailers arrived");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );

    // 100 concurrent requests.
    let mut tasks = Vec::new();
    for i in 0..100 {
        let cl = cl.clone();
        let url = format!("{base}/c/{i}");
        tasks.push(tokio::spawn(async move { send(&cl, get(&url)).await }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.expect("task");
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body, format!("backend m /c/{i}\n").into_bytes());
    }
}

macro_rules! matrix {
    ($($name:ident: $front:expr, $up:expr, $tls:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            cell($front, $up, $tls).await;
        }
    )*};
}

matrix! {
    h1_to_h1: ClientProto::H1, Up::H1, false;
    h1_to_h2: ClientProto::H1, Up::H2, false;
    h2_to_h1: ClientProto::H2c, Up::H1, false;
    h2_to_h2: ClientProto::H2c, Up::H2, false;
    h1_to_h1_tls: ClientProto::H1, Up::H1, true;
    h1_to_h2_tls: ClientProto::H1, Up::H2, true;
    h2_to_h1_tls: ClientProto::H2c, Up::H1, true;
    h2_to_h2_tls: ClientProto::H2c, Up::H2, true;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_upstream_certificate_is_refused_unless_verification_is_off() {
    let dir = scratch();
    let c = cert(dir.path(), "backend");
    let backend = HttpBackend::start_with_tls("u", Some(&c)).await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"{a}\"\ntls = true\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"{a}\"\ntls = true\ntls_verify_peer = false\n",
        a = backend.addr
    );
    let gw = Gateway::start_in(dir, &config);
    let cl = client(ClientProto::H1);
    let verified = send(&cl, get(&format!("http://{}/x", gw.addr(0)))).await;
    assert_eq!(
        verified.status,
        StatusCode::BAD_GATEWAY,
        "self-signed backend must not be trusted by default"
    );
    assert_eq!(backend.hits(), 0);
    let unverified = send(&cl, get(&format!("http://{}/x", gw.addr(1)))).await;
    assert_eq!(
        unverified.status,
        StatusCode::OK,
        "tls_verify_peer = false is the explicit opt-out"
    );
}
