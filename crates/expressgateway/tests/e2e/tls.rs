//! The `tls` listener: rustls and openssl clients, tls13_only, handshake cut.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::tls::{cert, client, connect};
use crate::support::*;

fn start(extra: &str, backend: std::net::SocketAddr) -> (Gateway, String) {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let text = format!(
        "{extra}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tls\"\n[listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n[[listeners.backends]]\naddress = \"{backend}\"\n",
        c.cert_path.display(),
        c.key_path.display()
    );
    (Gateway::start_in(dir, &text), c.cert_pem)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rustls_client_relays_through_tls_listener() {
    let echo = echo_server().await;
    let (gw, pem) = start("", echo);
    for versions in [
        &[&rustls::version::TLS13][..],
        &[&rustls::version::TLS12][..],
    ] {
        let connector = client(&pem, versions);
        let stream = connect(&connector, gw.addr(0)).await.expect("handshake");
        let data = pattern(4 << 20, 42);
        assert_eq!(echo_roundtrip(stream, &data).await, sha256(&data));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_handshakes_and_relays() {
    let echo = echo_server().await;
    let (gw, _) = start("", echo);
    let addr = gw.addr(0).to_string();
    let result = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr,
                "-quiet",
                "-servername",
                "localhost",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl is required for this test (Debian package `openssl`)");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello through openssl\n").expect("write");
        stdin.flush().expect("flush");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        line
    })
    .await
    .expect("join");
    assert_eq!(
        result.as_deref().map(str::trim),
        Ok("hello through openssl")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_only_refuses_a_tls12_client() {
    let echo = echo_server().await;
    let (gw, pem) = start("[runtime.tls]\ntls13_only = true", echo);
    let tls12 = client(&pem, &[&rustls::version::TLS12]);
    assert!(
        connect(&tls12, gw.addr(0)).await.is_err(),
        "TLS 1.2 handshake must fail"
    );
    let tls13 = client(&pem, &[&rustls::version::TLS13]);
    let mut ok = connect(&tls13, gw.addr(0))
        .await
        .expect("TLS 1.3 handshake");
    ok.write_all(b"x").await.expect("write");
    let mut b = [0u8; 1];
    ok.read_exact(&mut b).await.expect("echo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_is_cut_at_handshake_timeout() {
    let echo = echo_server().await;
    let (gw, _) = start("[runtime]\nhandshake_timeout_ms = 300", echo);
    // Send half a ClientHello record header, then nothing.
    let mut s = TcpStream::connect(gw.addr(0)).await.expect("connect");
    s.write_all(&[0x16, 0x03, 0x01]).await.expect("write");
    let started = std::time::Instant::now();
    assert!(
        closed_promptly(&mut s, Duration::from_secs(3)).await,
        "stalled handshake kept open"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "cut before the timeout"
    );
}
