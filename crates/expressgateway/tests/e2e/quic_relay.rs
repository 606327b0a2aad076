//! The raw QUIC relay (Mode B, `[listeners.quic.raw_proxy]`): a quinn
//! client through the real binary to a quinn echo backend.

use std::time::Duration;

use bytes::Bytes;
use quinn::{ConnectionError, ReadError, VarInt};

use crate::support::quic::*;
use crate::support::tls::cert;
use crate::support::*;

const ALPN: &str = "eg-test";

/// A gateway relaying to `backend`, plus what a client needs to reach it.
struct Setup {
    gw: Gateway,
    front_pem: String,
}

impl Setup {
    fn start(
        backend: &QuicEchoBackend,
        backend_ca: &std::path::Path,
        dir: tempfile::TempDir,
        alpn: &str,
    ) -> Self {
        let front = cert(dir.path(), "front");
        let config =
            mode_b_listener(&front, backend.addr, backend_ca) + &format!("alpn = {alpn}\n");
        let gw = Gateway::start_in(dir, &config);
        Self {
            gw,
            front_pem: front.cert_pem,
        }
    }

    async fn connect(&self) -> quinn::Connection {
        quic_connect(self.gw.addr(0), &self.front_pem, ALPN).await
    }
}

/// A backend speaking `ALPN` and a gateway in front of it.
async fn setup() -> (QuicEchoBackend, Setup) {
    let dir = scratch();
    let backend_cert = cert(dir.path(), "backend");
    let backend = QuicEchoBackend::start(&backend_cert, &[ALPN]).await;
    let setup = Setup::start(&backend, &backend_cert.cert_path, dir, "[\"eg-test\"]");
    (backend, setup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_50_mib_over_10_concurrent_bidi_streams_intact() {
    let (_backend, s) = setup().await;
    let conn = s.connect().await;
    let mut streams = Vec::new();
    for i in 0..10u64 {
        let conn = conn.clone();
        streams.push(tokio::spawn(async move {
            let mut data = pattern(5 << 20, 0x5eed + i);
            // Not a backend command: the backend echoes it.
            data[..5].copy_from_slice(b"data:");
            let (mut send, mut recv) = conn.open_bi().await.expect("open");
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                for chunk in sent.chunks(256 * 1024) {
                    send.write_all(chunk).await.expect("write");
                }
                send.finish().expect("finish");
            });
            let echo = recv.read_to_end(6 << 20).await.expect("echo");
            writer.await.expect("writer");
            assert_eq!(echo.len(), data.len(), "stream {i} length");
            assert_eq!(
                sha256(&echo),
                sha256(&data),
                "stream {i} changed in transit"
            );
        }));
    }
    for stream in streams {
        tokio::time::timeout(Duration::from_secs(120), stream)
            .await
            .expect("50 MiB within 2 minutes")
            .expect("stream task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_unidirectional_streams_both_ways() {
    let (_backend, s) = setup().await;
    let conn = s.connect().await;
    let mut sent = Vec::new();
    for i in 0..8u64 {
        let data = pattern(50_000 + 1000 * i as usize, 0xabc + i);
        let mut send = conn.open_uni().await.expect("open uni");
        send.write_all(&data).await.expect("write");
        send.finish().expect("finish");
        sent.push(data);
    }
    // The backend answers each on a uni stream of its own, mirrored to us.
    let mut got = Vec::new();
    for _ in 0..sent.len() {
        let mut recv = tokio::time::timeout(QUIC_WAIT, conn.accept_uni())
            .await
            .expect("uni stream in time")
            .expect("uni stream from the backend");
        got.push(recv.read_to_end(1 << 20).await.expect("read uni"));
    }
    sent.sort();
    got.sort();
    assert!(got == sent, "uni stream contents changed in transit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relays_1000_datagrams_without_duplicates_or_corruption() {
    let (_backend, s) = setup().await;
    let conn = s.connect().await;
    const N: u32 = 1000;
    const BODY: usize = 300;
    let body = |i: u32| pattern(BODY, 0xd00d + u64::from(i));
    let sender = conn.clone();
    tokio::spawn(async move {
        for i in 0..N {
            let mut d = i.to_be_bytes().to_vec();
            d.extend_from_slice(&body(i));
            let _ = sender.send_datagram_wait(Bytes::from(d)).await;
            // Gentle pacing: loss is allowed, but this test is about
            // integrity, not about overrunning socket buffers.
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut seen = vec![false; N as usize];
    let mut arrived = 0u32;
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(2), conn.read_datagram()).await {
        assert_eq!(d.len(), 4 + BODY, "datagram length changed");
        let i = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        assert!(i < N, "datagram number {i} was never sent");
        assert!(d[4..] == body(i)[..], "datagram {i} corrupted");
        assert!(!seen[i as usize], "datagram {i} duplicated");
        seen[i as usize] = true;
        arrived += 1;
    }
    eprintln!("{arrived} of {N} datagrams came back through the relay");
    assert!(
        arrived >= N * 9 / 10,
        "only {arrived} of {N} datagrams came back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_reset_and_stop_codes_arrive_unchanged() {
    let (_backend, s) = setup().await;
    let conn = s.connect().await;
    match quic_ask(&conn, b"RESET").await {
        Err(quinn::ReadToEndError::Read(ReadError::Reset(code))) => {
            assert_eq!(
                code,
                VarInt::from_u32(BACKEND_RESET_CODE),
                "reset code changed"
            );
        }
        other => panic!("expected a reset with 0x42, got {other:?}"),
    }
    let (mut send, _recv) = conn.open_bi().await.expect("open");
    send.write_all(b"STOP!").await.expect("write");
    let stopped = tokio::time::timeout(QUIC_WAIT, send.stopped())
        .await
        .expect("STOP_SENDING in time")
        .expect("stopped");
    assert_eq!(
        stopped,
        Some(VarInt::from_u32(BACKEND_STOP_CODE)),
        "stop code changed"
    );
    // The connection is still fine for other streams.
    assert_eq!(
        quic_ask(&conn, b"still here").await.expect("echo"),
        b"still here"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_close_closes_the_client_with_its_code() {
    let (_backend, s) = setup().await;
    let conn = s.connect().await;
    let _ = quic_ask(&conn, b"CLOSE").await;
    match tokio::time::timeout(QUIC_WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code, VarInt::from_u32(BACKEND_CLOSE_CODE));
            assert_eq!(&close.reason[..], BACKEND_CLOSE_REASON);
        }
        other => panic!("expected the backend's application close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_close_reaches_the_backend_with_its_code() {
    let (mut backend, s) = setup().await;
    let conn = s.connect().await;
    assert_eq!(quic_ask(&conn, b"ping!").await.expect("echo"), b"ping!");
    conn.close(VarInt::from_u32(0x99), b"client bye");
    let seen = tokio::time::timeout(QUIC_WAIT, backend.closes.recv())
        .await
        .expect("close in time");
    assert_eq!(seen, Some((0x99, b"client bye".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backend_is_offered_exactly_the_alpn_the_client_negotiated() {
    // Backend and gateway both prefer h3; the client offers only eg-test.
    let dir = scratch();
    let backend_cert = cert(dir.path(), "backend");
    let backend = QuicEchoBackend::start(&backend_cert, &["h3", ALPN]).await;
    let s = Setup::start(
        &backend,
        &backend_cert.cert_path,
        dir,
        "[\"h3\", \"eg-test\"]",
    );
    let conn = s.connect().await;
    assert_eq!(
        quic_ask(&conn, b"ALPN?").await.expect("answer"),
        ALPN.as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn real_h3_client_reaches_real_h3_server_through_the_relay() {
    use crate::support::h3::{H3Backend, H3Client};
    let dir = scratch();
    let backend_cert = cert(dir.path(), "backend");
    let front = cert(dir.path(), "front");
    let backend = H3Backend::start("origin", &backend_cert).await;
    // `alpn` left at its default, ["h3"].
    let config = mode_b_listener(&front, backend.addr, &backend_cert.cert_path);
    let gw = Gateway::start_in(dir, &config);
    let mut client = H3Client::new(&front.cert_pem, gw.addr(0));
    // Only requests whose body the backend reads: a backend that answers
    // without reading the request's FIN stops the stream (STOP_SENDING),
    // and this client sends its FIN late (with a grease frame), so such
    // requests race with or without a relay in between.
    for round in 0..3u64 {
        let body = Bytes::from(pattern(1 << 20, 0x4833 + round));
        let r = client
            .send(::http::Method::POST, "/echo", body.clone())
            .await;
        assert_eq!(r.status, ::http::StatusCode::OK);
        assert_eq!(
            r.headers.get("x-backend").map(|v| v.as_bytes()),
            Some(&b"origin"[..])
        );
        assert!(r.body == body, "H3 body changed in transit (round {round})");
    }
    assert_eq!(
        client.connections_opened, 1,
        "every request on one QUIC connection"
    );
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A UDP forwarder to `target` that passes QUIC long-header packets (the
/// handshake) and drops every short-header (1-RTT) one: a backend that
/// completes the handshake, then is never heard from again.
async fn silent_after_handshake(target: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::sync::Arc;
    let front = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    let addr = front.local_addr().expect("addr");
    let up = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind"),
    );
    up.connect(target).await.expect("connect");
    let long_header = |packet: &[u8]| packet.first().is_some_and(|b| b & 0x80 != 0);
    let client = Arc::new(tokio::sync::Mutex::new(None));
    let (back, towards, last) = (Arc::clone(&up), Arc::clone(&front), Arc::clone(&client));
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok(n) = back.recv(&mut buf).await {
            let to = *last.lock().await;
            if let (Some(to), true) = (to, long_header(&buf[..n])) {
                let _ = towards.send_to(&buf[..n], to).await;
            }
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = front.recv_from(&mut buf).await {
            *client.lock().await = Some(from);
            if long_header(&buf[..n]) {
                let _ = up.send(&buf[..n]).await;
            }
        }
    });
    addr
}

/// A `[[clusters.backends]]` entry for a relay backend verified with `ca`.
fn cluster_backend(a: std::net::SocketAddr, ca: &eg_tls::SelfSigned) -> String {
    format!(
        "[[clusters.backends]]\naddress = \"{a}\"\nprotocol = \"h3\"\nsni = \"localhost\"\n\
         tls_ca_path = \"{}\"\n",
        ca.cert_path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_after_the_dial_is_ejected() {
    let dir = scratch();
    let backend_cert = cert(dir.path(), "backend");
    let good = QuicEchoBackend::start(&backend_cert, &[ALPN]).await;
    let doomed = QuicEchoBackend::start(&backend_cert, &[ALPN]).await;
    let bad = silent_after_handshake(doomed.addr).await;
    let front = cert(dir.path(), "front");
    let backend = |a| cluster_backend(a, &backend_cert);
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\nmax_idle_timeout_ms = 1000\n\
         [listeners.quic.raw_proxy]\ncluster = \"q\"\nalpn = [\"{ALPN}\"]\n\
         [[clusters]]\nname = \"q\"\n[clusters.outlier_detection]\nconsecutive_failures = 1\n{}{}",
        front.cert_path.display(),
        front.key_path.display(),
        backend(bad),
        backend(good.addr),
    );
    let gw = Gateway::start_in(dir, &config);
    let mut failed = 0;
    // A client that keeps its connection alive (as H3 clients ping): its
    // leg never idles out, so the relay sees the backend's go silent.
    let mut client = quinn::ClientConfig::new(quic_client_crypto(&front.cert_pem, ALPN));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(200)));
    client.transport_config(std::sync::Arc::new(transport));
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    for i in 0..8 {
        let connecting = endpoint
            .connect_with(client.clone(), gw.addr(0), "localhost")
            .expect("connect");
        let conn = connecting.await.expect("handshake");
        let asked = tokio::time::timeout(Duration::from_secs(3), quic_ask(&conn, b"hello")).await;
        match asked {
            Ok(Ok(echo)) => assert_eq!(echo, b"hello", "connection {i}"),
            _ => failed += 1,
        }
        conn.close(0u32.into(), b"done");
    }
    assert!(
        failed <= 1,
        "a backend whose relays all die was not ejected: {failed} of 8 failed\n{}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_b_checks_its_backends_with_a_quic_handshake() {
    let dir = scratch();
    let backend_cert = cert(dir.path(), "backend");
    let good = QuicEchoBackend::start(&backend_cert, &[ALPN]).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let dead = silent.local_addr().expect("addr");
    let front = cert(dir.path(), "front");
    let backend = |a| cluster_backend(a, &backend_cert);
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
             [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
             [listeners.quic.raw_proxy]\ncluster = \"q\"\nalpn = [\"{ALPN}\"]\n\
             [[clusters]]\nname = \"q\"\n[clusters.health_check]\nkind = \"tcp\"\n\
             interval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 1\n{}{}",
            front.cert_path.display(),
            front.key_path.display(),
            backend(good.addr),
            backend(dead),
        ),
    );
    let up = |m: &str, b: std::net::SocketAddr| {
        m.lines()
            .find(|l| {
                l.starts_with("expressgateway_backend_up{") && l.contains(&format!("\"{b}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
    };
    let mut seen = (None, None);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let m = crate::support::probe::metrics_text(&gw).await;
        seen = (up(&m, good.addr), up(&m, dead));
        if seen == (Some(1), Some(0)) {
            break;
        }
    }
    assert_eq!(
        seen,
        (Some(1), Some(0)),
        "the live backend passes, the silent one fails"
    );
    // Every relayed connection goes to the backend that passes.
    for _ in 0..4 {
        let conn = quic_connect(gw.addr(0), &front.cert_pem, ALPN).await;
        assert_eq!(quic_ask(&conn, b"hi").await.expect("echo"), b"hi");
    }
    drop(silent);
}
