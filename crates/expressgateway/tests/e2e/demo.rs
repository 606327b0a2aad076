//! `expressgateway demo`: every listener it reports answers.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

async fn http_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) -> String {
    s.write_all(b"GET /demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_answers_on_every_listener() {
    let gw = Gateway::spawn(scratch(), &["demo", "--base-port", "0"]);
    assert!(
        gw.listeners.len() >= 4,
        "demo listeners: {:?}",
        gw.listeners
    );
    // The demo's certificate is not in any trust store; trust anything
    // for this check only: the handshake and relay are what is tested.
    let insecure = {
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(crate::support::tls::AcceptAny))
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    };
    for bound in &gw.listeners {
        if bound.protocol == "quic" {
            let mut h3 = crate::support::h3::H3Client::insecure(bound.address);
            let r = h3
                .send(::http::Method::GET, "/demo", bytes::Bytes::new())
                .await;
            let answer = String::from_utf8_lossy(&r.body).into_owned();
            assert!(
                answer.contains("hello from the ExpressGateway demo backend"),
                "{}: {answer:?}",
                bound.name
            );
            continue;
        }
        let tcp = TcpStream::connect(bound.address).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let answer = match (bound.protocol.as_str(), bound.name.contains("http")) {
            ("tcp", false) => {
                let mut s = tcp;
                if ping(&mut s).await {
                    "echo".to_owned()
                } else {
                    String::new()
                }
            }
            ("tcp", true) => http_get(tcp).await,
            ("tls", false) => {
                let s = insecure.connect(name, tcp).await.expect("tls");
                let d = pattern(1000, 1);
                if echo_roundtrip(s, &d).await == sha256(&d) {
                    "echo".to_owned()
                } else {
                    String::new()
                }
            }
            ("tls", true) => http_get(insecure.connect(name, tcp).await.expect("tls")).await,
            ("h1", _) => http_get(tcp).await,
            ("h1s", _) => http_get(insecure.connect(name, tcp).await.expect("tls")).await,

            (other, _) => panic!("demo listener of unexpected kind {other}"),
        };
        assert!(
            answer == "echo" || answer.contains("hello from the ExpressGateway demo backend"),
            "{}: {answer:?}",
            bound.name
        );
    }
}
