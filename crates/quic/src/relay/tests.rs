//! The relay in-process: a quinn client, the relay on 127.0.0.1:0, and a
//! quinn echo backend (streams both kinds, datagrams, resets on request).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use eg_runtime::metrics::metrics;
use eg_runtime::{Admission, CancellationToken, TaskTracker};
use quinn::{ConnectionError, ReadError, VarInt};
use tokio::sync::mpsc;

use super::{serve, server_config_for, RelaySettings};
use crate::endpoint::{self, Gate};

const WAIT: Duration = Duration::from_secs(10);

/// A scratch directory removed on drop (no tempfile dependency here).
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("eg-quic-relay-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(super) fn cert(dir: &Path, stem: &str) -> eg_tls::SelfSigned {
    eg_tls::self_signed(&["localhost", "127.0.0.1"], dir, stem).expect("cert")
}

/// What the test backend saw.
struct Backend {
    addr: SocketAddr,
    cert: eg_tls::SelfSigned,
    /// Close code and reason of each connection the backend saw end.
    closes: mpsc::UnboundedReceiver<(u64, Vec<u8>)>,
    _endpoint: quinn::Endpoint,
}

/// Start the echo backend. Bidi streams echo, except those starting with
/// `RESET` (reset 0x42), `STOP!` (stop 0x43), `CLOSE` (connection closed
/// 0x77 "backend bye"), `ALPN?` (answers the negotiated ALPN), `WATCH`
/// (reports the client's reset code on a new uni stream), `BURST` (1 MiB,
/// then closes 0x78 once the relay acknowledged it), `OPENB` (opens
/// a bidi stream of its own and echoes back what the client answers).
/// Uni streams are answered on a new uni stream; datagrams echo.
async fn backend(dir: &Path, alpn: &[&str], dgram_recv: Option<usize>) -> Backend {
    let cert = cert(dir, "backend");
    let quic = listener_quic(&cert);
    let alpn = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut server = endpoint::server_config(&quic, "backend", alpn, &eg_runtime::Carry::default())
        .expect("backend config");
    let mut t = quinn::TransportConfig::default();
    t.datagram_receive_buffer_size(dgram_recv);
    server.transport_config(Arc::new(t));
    let ep = endpoint::bind(
        "127.0.0.1:0".parse().expect("addr"),
        server,
        &quic,
        "backend",
    )
    .expect("bind");
    let addr = ep.local_addr().expect("addr");
    let (tx, closes) = mpsc::unbounded_channel();
    let accept = ep.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accept.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                backend_conn(conn, tx).await;
            });
        }
    });
    Backend {
        addr,
        cert,
        closes,
        _endpoint: ep,
    }
}

pub(super) fn listener_quic(cert: &eg_tls::SelfSigned) -> eg_config::ListenerQuic {
    eg_config::ListenerQuic {
        cert_path: cert.cert_path.clone(),
        key_path: cert.key_path.clone(),
        retry_secret_path: None,
        retry: eg_config::RetryMode::Never,
        retry_under_load_threshold: 128,
        max_idle_timeout_ms: 30_000,
        handshake_timeout_ms: eg_config::DEFAULT_QUIC_HANDSHAKE_TIMEOUT_MS,
        allow_0rtt: false,
        max_recv_udp_payload_size: 1350,
        max_connections_per_ip: 64,
        receive_window_bytes: eg_config::DEFAULT_QUIC_RECEIVE_WINDOW,
        stream_receive_window_bytes: eg_config::DEFAULT_QUIC_STREAM_RECEIVE_WINDOW,
        raw_proxy: None,
        quic_lb: None,
    }
}

async fn backend_conn(conn: quinn::Connection, closes: mpsc::UnboundedSender<(u64, Vec<u8>)>) {
    let c = conn.clone();
    let bi = async move {
        while let Ok((send, recv)) = c.accept_bi().await {
            tokio::spawn(backend_bi(c.clone(), send, recv));
        }
    };
    let c = conn.clone();
    let uni = async move {
        while let Ok(mut recv) = c.accept_uni().await {
            let c = c.clone();
            tokio::spawn(async move {
                let Ok(data) = recv.read_to_end(64 << 20).await else {
                    return;
                };
                let Ok(mut send) = c.open_uni().await else {
                    return;
                };
                let _ = send.write_all(&data).await;
                let _ = send.finish();
            });
        }
    };
    let c = conn.clone();
    let dgram = async move {
        while let Ok(d) = c.read_datagram().await {
            let _ = c.send_datagram(d);
        }
    };
    let c = conn.clone();
    let closed = async move {
        if let ConnectionError::ApplicationClosed(close) = c.closed().await {
            let _ = closes.send((close.error_code.into_inner(), close.reason.to_vec()));
        }
    };
    tokio::join!(bi, uni, dgram, closed);
}

async fn backend_bi(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut head = [0u8; 5];
    let mut got = 0;
    while got < head.len() {
        match recv.read(&mut head[got..]).await {
            Ok(Some(n)) => got += n,
            Ok(None) => break,
            Err(_) => return,
        }
    }
    match &head[..got] {
        b"RESET" => {
            let _ = send.reset(VarInt::from_u32(0x42));
        }
        b"STOP!" => {
            let _ = recv.stop(VarInt::from_u32(0x43));
        }
        b"CLOSE" => conn.close(VarInt::from_u32(0x77), b"backend bye"),
        b"BURST" => {
            // 1 MiB, acknowledged by the relay, then an immediate close.
            let _ = send.write_all(&pattern(1 << 20, 0xb0)).await;
            let _ = send.finish();
            let _ = send.stopped().await;
            conn.close(VarInt::from_u32(0x78), b"done");
        }
        b"ALPN?" => {
            let alpn = super::negotiated_alpn(&conn).unwrap_or_default();
            let _ = send.write_all(&alpn).await;
            let _ = send.finish();
        }
        b"WATCH" => {
            let mut sink = vec![0u8; 4096];
            let code = loop {
                match recv.read(&mut sink).await {
                    Ok(Some(_)) => {}
                    Err(ReadError::Reset(code)) => break code.into_inner(),
                    _ => return,
                }
            };
            let Ok(mut uni) = conn.open_uni().await else {
                return;
            };
            let _ = uni.write_all(format!("reset {code}").as_bytes()).await;
            let _ = uni.finish();
        }
        b"OPENB" => {
            let Ok((mut s, mut r)) = conn.open_bi().await else {
                return;
            };
            let _ = s.write_all(b"hello from backend").await;
            let _ = s.finish();
            let Ok(answer) = r.read_to_end(1 << 20).await else {
                return;
            };
            let _ = send.write_all(&answer).await;
            let _ = send.finish();
        }
        other => {
            let _ = send.write_all(other).await;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match recv.read(&mut buf).await {
                    Ok(Some(n)) => {
                        if send.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
            let _ = send.finish();
        }
    }
}

/// A running relay in front of `backend_addr`.
pub(super) struct Relay {
    addr: SocketAddr,
    front: eg_tls::SelfSigned,
    shutdown: CancellationToken,
    _dir: Scratch,
}

pub(super) async fn relay(dir: Scratch, raw_proxy_extra: &str, runtime: &str) -> Relay {
    eg_tls::install_crypto_provider();
    let front = cert(&dir.0, "front");
    let text = format!(
        "[runtime]\n{runtime}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\nretry = \"never\"\n\
         [listeners.quic.raw_proxy]\n{raw_proxy_extra}\n",
        front.cert_path.display(),
        front.key_path.display(),
    );
    let config =
        eg_config::Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"));
    let listener = config.listeners.first().expect("listener");
    let settings =
        RelaySettings::new(&config, listener, 0, &eg_runtime::Carry::default()).expect("settings");
    let server =
        server_config_for(listener, 0, &eg_runtime::Carry::default()).expect("server config");
    let quic = listener.quic.as_ref().expect("quic");
    let ep = endpoint::bind(listener.address, server, quic, "listeners[0]").expect("bind");
    let addr = ep.local_addr().expect("addr");
    let gate = Arc::new(Gate::new(quic, Admission::new(1000, 1000)));
    let shutdown = CancellationToken::new();
    let settings = Arc::new(ArcSwap::from_pointee(settings));
    tokio::spawn(serve(
        ep,
        settings,
        gate,
        shutdown.clone(),
        TaskTracker::new(),
    ));
    Relay {
        addr,
        front,
        shutdown,
        _dir: dir,
    }
}

fn backend_toml(b: &Backend, alpn: &str) -> String {
    format!(
        "backend_addr = \"{}\"\nsni = \"localhost\"\nbackend_ca_path = \"{}\"\nalpn = {alpn}\n",
        b.addr,
        b.cert.cert_path.display()
    )
}

/// A client connection to the relay offering `alpn`.
pub(super) async fn client(relay: &Relay, alpn: &str) -> quinn::Connection {
    client_with(relay, alpn, quinn::TransportConfig::default()).await
}

async fn client_with(
    relay: &Relay,
    alpn: &str,
    transport: quinn::TransportConfig,
) -> quinn::Connection {
    let roots = eg_tls::load_ca(&relay.front.cert_path).expect("roots");
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let mut ep =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("client endpoint");
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    ep.set_default_client_config(config);
    let connecting = ep.connect(relay.addr, "localhost").expect("connect");
    tokio::time::timeout(WAIT, connecting)
        .await
        .expect("handshake in time")
        .expect("handshake")
}

/// Send `msg` on a new bidi stream, finish, and read the whole answer.
async fn ask(conn: &quinn::Connection, msg: &[u8]) -> Result<Vec<u8>, quinn::ReadToEndError> {
    let (mut s, mut r) = conn.open_bi().await.expect("open");
    s.write_all(msg).await.expect("write");
    let _ = s.finish();
    tokio::time::timeout(WAIT, r.read_to_end(64 << 20))
        .await
        .expect("answer in time")
}

pub(super) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

async fn setup(alpn_relay: &str, alpn_backend: &[&str]) -> (Backend, Relay) {
    let dir = Scratch::new();
    let b = backend(&dir.0, alpn_backend, Some(1 << 20)).await;
    let r = relay(dir, &backend_toml(&b, alpn_relay), "").await;
    (b, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_bidi_streams_intact() {
    let (_b, r) = setup("[\"eg-test\"]", &["eg-test"]).await;
    let conn = client(&r, "eg-test").await;
    let mut tasks = Vec::new();
    for i in 0..10u64 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            // Starts with non-command bytes, so the backend echoes.
            let mut data = pattern(2 << 20, 0x5eed + i);
            data[..5].copy_from_slice(b"data:");
            let (mut s, mut r) = conn.open_bi().await.expect("open");
            let sent = data.clone();
            let writer = tokio::spawn(async move {
                s.write_all(&sent).await.expect("write");
                s.finish().expect("finish");
            });
            let echo = r.read_to_end(4 << 20).await.expect("echo");
            writer.await.expect("writer");
            assert_eq!(
                sha256(&echo),
                sha256(&data),
                "stream {i} changed in transit"
            );
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("in time")
            .expect("stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_uni_streams_both_ways() {
    let (_b, r) = setup("[\"eg-test\"]", &["eg-test"]).await;
    let conn = client(&r, "eg-test").await;
    let mut sent = Vec::new();
    for i in 0..5u64 {
        let data = pattern(100_000 + i as usize, i);
        let mut s = conn.open_uni().await.expect("open uni");
        s.write_all(&data).await.expect("write");
        s.finish().expect("finish");
        sent.push(data);
    }
    let mut got = Vec::new();
    for _ in 0..5 {
        let mut r = tokio::time::timeout(WAIT, conn.accept_uni())
            .await
            .expect("in time")
            .expect("uni from backend");
        got.push(r.read_to_end(1 << 20).await.expect("read"));
    }
    sent.sort();
    got.sort();
    assert_eq!(got, sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_backend_opened_bidi_stream() {
    let (_b, r) = setup("[\"eg-test\"]", &["eg-test"]).await;
    let conn = client(&r, "eg-test").await;
    let asking = tokio::spawn({
        let conn = conn.clone();
        async move { ask(&conn, b"OPENB").await }
    });
    let (mut s, mut rcv) = tokio::time::timeout(WAIT, conn.accept_bi())
        .await
        .expect("in time")
        .expect("bi from backend");
    assert_eq!(
        rcv.read_to_end(1024).await.expect("read"),
        b"hello from backend"
    );
    s.write_all(b"hello back").await.expect("write");
    s.finish().expect("finish");
    assert_eq!(asking.await.expect("task").expect("answer"), b"hello back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_datagrams_numbered_no_dup_no_corruption() {
    let (_b, r) = setup("[\"eg-test\"]", &["eg-test"]).await;
    let conn = client(&r, "eg-test").await;
    const N: u32 = 1000;
    let sender = conn.clone();
    tokio::spawn(async move {
        for i in 0..N {
            let mut d = i.to_be_bytes().to_vec();
            d.extend_from_slice(&pattern(200, u64::from(i)));
            let _ = sender.send_datagram_wait(Bytes::from(d)).await;
            if i % 50 == 49 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let mut seen = vec![false; N as usize];
    let mut count = 0;
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_secs(2), conn.read_datagram()).await {
        let i = u32::from_be_bytes(d[..4].try_into().expect("number"));
        assert_eq!(
            &d[4..],
            &pattern(200, u64::from(i))[..],
            "datagram {i} corrupted"
        );
        assert!(!seen[i as usize], "datagram {i} duplicated");
        seen[i as usize] = true;
        count += 1;
    }
    assert!(count >= 900, "only {count} of {N} datagrams came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_reset_and_stop_codes_travel() {
    let (b, r) = setup("[\"eg-test\"]", &["eg-test"]).await;
    let conn = client(&r, "eg-test").await;
    // Backend resets its side with 0x42: the client reads 0x42.
    match ask(&conn, b"RESET").await {
        Err(quinn::ReadToEndError::Read(ReadError::Reset(code))) => {
            assert_eq!(code.into_inner(), 0x42)
        }
        other => panic!("expected reset 0x42, got {other:?}"),
    }
    // Backend sends STOP_SENDING 0x43: the client's stream is stopped with it.
    let (mut s, _r) = conn.open_bi().await.expect("open");
    s.write_all(b"STOP!").await.expect("write");
    let stopped = tokio::time::timeout(WAIT, s.stopped())
        .await
        .expect("in time");
    assert_eq!(stopped.expect("stopped"), Some(VarInt::from_u32(0x43)));
    // The client resets with 0x55: the backend reads 0x55.
    let (mut s, _r) = conn.open_bi().await.expect("open");
    s.write_all(b"WATCH some data").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.reset(VarInt::from_u32(0x55)).expect("reset");
    let mut report = tokio::time::timeout(WAIT, conn.accept_uni())
        .await
        .expect("in time")
        .expect("report");
    assert_eq!(report.read_to_end(100).await.expect("read"), b"reset 85");
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_offers_backend_exactly_the_negotiated_alpn() {
    // Both sides prefer h3; the client offers only eg-test, so must the relay.
    let (_b, r) = setup("[\"h3\", \"eg-test\"]", &["h3", "eg-test"]).await;
    let conn = client(&r, "eg-test").await;
    assert_eq!(ask(&conn, b"ALPN?").await.expect("answer"), b"eg-test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_close_codes_travel_both_ways() {
    let (mut b, r) = setup("[\"eg-test\"]", &["eg-test"]).await;
    // Backend closes: the client sees its code and reason.
    let conn = client(&r, "eg-test").await;
    let _ = ask(&conn, b"CLOSE").await;
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code.into_inner(), 0x77);
            assert_eq!(&c.reason[..], b"backend bye");
        }
        other => panic!("expected application close, got {other:?}"),
    }
    // Client closes: the backend sees its code and reason.
    let conn = client(&r, "eg-test").await;
    assert_eq!(ask(&conn, b"ping").await.expect("echo"), b"ping");
    conn.close(VarInt::from_u32(0x99), b"client bye");
    let seen = tokio::time::timeout(WAIT, b.closes.recv())
        .await
        .expect("in time");
    assert_eq!(seen, Some((0x99, b"client bye".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_fails_over_and_closes_client_when_no_backend() {
    let dir = Scratch::new();
    let b = backend(&dir.0, &["eg-test"], Some(1 << 20)).await;
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let ca = b.cert.cert_path.display().to_string();
    // A cluster of one dead and one live backend: every connection lands
    // on the live one, whichever the balancer offers first.
    let text = format!(
        "cluster = \"q\"\nbackend_ca_path = \"{ca}\"\nsni = \"localhost\"\nalpn = [\"eg-test\"]\n\
         [[clusters]]\nname = \"q\"\n\
         [[clusters.backends]]\naddress = \"{dead_addr}\"\n\
         [[clusters.backends]]\naddress = \"{}\"\n",
        b.addr
    );
    let r = relay(dir, &text, "connect_timeout_ms = 300").await;
    for _ in 0..4 {
        let conn = client(&r, "eg-test").await;
        assert_eq!(ask(&conn, b"ping").await.expect("echo"), b"ping");
    }
    // Only the dead backend: the client is closed with an application error.
    let dir = Scratch::new();
    let text = format!("backend_addr = \"{dead_addr}\"\nsni = \"localhost\"\nbackend_ca_path = \"{ca}\"\nalpn = [\"eg-test\"]\n");
    let r = relay(dir, &text, "connect_timeout_ms = 300").await;
    let conn = client(&r, "eg-test").await;
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, super::pipe::PEER_LOST);
            assert_eq!(&c.reason[..], b"no backend reachable");
        }
        other => panic!("expected application close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_refuses_streams_beyond_max_relay_streams() {
    let dir = Scratch::new();
    let b = backend(&dir.0, &["eg-test"], Some(1 << 20)).await;
    let text = format!(
        "{}max_relay_streams = 2\n",
        backend_toml(&b, "[\"eg-test\"]")
    );
    let r = relay(dir, &text, "").await;
    let conn = client(&r, "eg-test").await;
    let before = metrics()
        .defence_trips_total
        .with_label_values(&["quic_relay_streams_cap"])
        .get();
    // Two open bidi streams take both slots (their echo proves it) ...
    let mut held = Vec::new();
    for _ in 0..2 {
        let (mut s, mut rcv) = conn.open_bi().await.expect("open");
        s.write_all(b"hold!").await.expect("write");
        let mut echo = [0u8; 5];
        tokio::time::timeout(WAIT, rcv.read_exact(&mut echo))
            .await
            .expect("in time")
            .expect("echo");
        held.push((s, rcv));
    }
    // ... so a third stream (a uni one: the bidi limit is 2) is refused.
    let mut s = conn.open_uni().await.expect("open uni");
    s.write_all(b"one too many").await.expect("write");
    let stopped = tokio::time::timeout(WAIT, s.stopped())
        .await
        .expect("in time");
    assert_eq!(stopped.expect("stopped"), Some(super::pipe::STREAM_REFUSED));
    let after = metrics()
        .defence_trips_total
        .with_label_values(&["quic_relay_streams_cap"])
        .get();
    assert!(after > before, "refusal not counted");
    // Finishing one frees its slot.
    let (mut s, mut rcv) = held.pop().expect("held");
    s.finish().expect("finish");
    assert_eq!(rcv.read_to_end(100).await.expect("rest"), b"");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ask(&conn, b"again").await.expect("echo"), b"again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_drops_datagrams_too_large_for_the_backend() {
    let dir = Scratch::new();
    // The backend accepts datagrams of at most 300 bytes.
    let b = backend(&dir.0, &["eg-test"], Some(300)).await;
    let r = relay(dir, &backend_toml(&b, "[\"eg-test\"]"), "").await;
    let conn = client(&r, "eg-test").await;
    let label = ["quic_dgram_too_large"];
    let before = metrics()
        .defence_trips_total
        .with_label_values(&label)
        .get();
    conn.send_datagram(Bytes::from(vec![7u8; 1000]))
        .expect("send big");
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics()
        .defence_trips_total
        .with_label_values(&label)
        .get()
        == before
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "too-large datagram not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The relay lives on: a small one still comes back.
    let mut echoed = None;
    for _ in 0..20 {
        conn.send_datagram(Bytes::from_static(b"small"))
            .expect("send small");
        if let Ok(Ok(d)) =
            tokio::time::timeout(Duration::from_millis(250), conn.read_datagram()).await
        {
            echoed = Some(d);
            break;
        }
    }
    assert_eq!(echoed.as_deref(), Some(&b"small"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_drains_then_closes_connections_on_shutdown() {
    let dir = Scratch::new();
    let b = backend(&dir.0, &["eg-test"], Some(1 << 20)).await;
    // 2 s of drain (less the 1 s the close frames get to leave).
    let r = relay(
        dir,
        &backend_toml(&b, "[\"eg-test\"]"),
        "drain_timeout_ms = 2000",
    )
    .await;
    let conn = client(&r, "eg-test").await;
    assert_eq!(ask(&conn, b"ping").await.expect("echo"), b"ping");
    r.shutdown.cancel();
    // Still relaying while it drains.
    assert_eq!(
        ask(&conn, b"pong").await.expect("echo while draining"),
        b"pong"
    );
    let started = std::time::Instant::now();
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.error_code, super::pipe::SHUTTING_DOWN)
        }
        other => panic!("expected application close, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "closed at the end of the drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_delivers_what_the_backend_sent_before_closing() {
    let (_b, r) = setup("[\"eg-test\"]", &["eg-test"]).await;
    // A small window and a late reader: the relay still holds most of the
    // response when the backend closes.
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(VarInt::from_u32(64 * 1024));
    let conn = client_with(&r, "eg-test", t).await;
    let (mut s, mut rcv) = conn.open_bi().await.expect("open");
    s.write_all(b"BURST").await.expect("write");
    s.finish().expect("finish");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rcv
        .read_to_end(2 << 20)
        .await
        .expect("whole response before the close");
    assert_eq!(sha256(&got), sha256(&pattern(1 << 20, 0xb0)));
    match tokio::time::timeout(WAIT, conn.closed())
        .await
        .expect("closed in time")
    {
        ConnectionError::ApplicationClosed(c) => assert_eq!(c.error_code.into_inner(), 0x78),
        other => panic!("expected application close, got {other:?}"),
    }
}
