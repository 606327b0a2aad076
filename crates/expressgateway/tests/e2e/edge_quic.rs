//! Edge safety of the H3 front (`quic` listener): receive windows bound
//! what clients make the gateway buffer, a client that stops reading a
//! response is cut at `body_timeout_ms`, request heads are bounded by
//! `header_timeout_ms`, and idle connections close at `idle_timeout_ms`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::http::{Method, Request, StatusCode};
use bytes::Bytes;
use tokio::time::Instant;

use crate::support::h3::H3Client;
use crate::support::http::{client, get, send, ClientProto};
use crate::support::tls::cert;
use crate::support::*;

/// One `quic` listener named `q` whose default pool is `backend` (h1),
/// with `[listeners.http]` lines `http`, and the admin listener.
pub(crate) fn h3_config(c: &eg_tls::SelfSigned, backend: SocketAddr, http: &str) -> String {
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"q\"\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [listeners.http]\n{http}\n\
         [[listeners.backends]]\naddress = \"{backend}\"\n",
        c.cert_path.display(),
        c.key_path.display()
    )
}

/// `expressgateway_defence_trips_total{defence="<label>"}` as the admin
/// listener (the last `listening` line) reports it; 0 when absent.
pub(crate) async fn defence_trips(gw: &Gateway, label: &str) -> f64 {
    let admin = gw.listeners.last().expect("admin listener").address;
    let r = send(
        &client(ClientProto::H1),
        get(&format!("http://{admin}/metrics")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "/metrics");
    let want = format!("expressgateway_defence_trips_total{{defence=\"{label}\"}} ");
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line")
}

/// An h1 backend that accepts connections and never reads from them. The
/// accepted sockets inherit a tiny receive buffer, so the kernel absorbs
/// little: what clients push stays in the gateway unless it bounds it.
/// Returns the address and the count of accepted connections.
async fn deaf_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let listener = socket.listen(1024).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (addr, accepted)
}

/// Request streams of test (b), each pushing `UPLOAD_BYTES`.
const UPLOADS: usize = 100;
const UPLOAD_BYTES: usize = 1 << 20;
const UPLOAD_CHUNK: usize = 64 * 1024;
/// Allowed RSS growth: the default windows (8 MiB per connection) plus the
/// per-request state of 100 exchanges fit well under it; 100 MiB of
/// unbounded buffering does not.
const RSS_GROWTH_LIMIT_KIB: u64 = 64 * 1024;

/// (b) 100 streams on one connection each push 1 MiB at a backend that
/// accepts and never reads: the connection receive window
/// (`receive_window_bytes`, 8 MiB by default) stalls the client, and the
/// gateway's RSS grows by far less than the 100 MiB it would hold with
/// quinn's unlimited default. Towards an h2 backend that never reads, the
/// gateway can write only the 64 KiB initial HTTP/2 window, so everything
/// else would sit in the gateway: that cell fails without the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_towards_a_deaf_h2_backend_stay_within_the_receive_window() {
    stalled_uploads("h2").await;
}

/// (b) as above towards an h1 backend. Each upstream TCP connection's
/// kernel send buffer absorbs most of one 1 MiB body here (loopback
/// autotuning), so this cell holds the bound rather than proving it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_uploads_towards_a_deaf_h1_backend_stay_within_the_receive_window() {
    stalled_uploads("h1").await;
}

async fn stalled_uploads(proto: &str) {
    let (backend, accepted) = deaf_backend().await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let config = h3_config(&c, backend, "") + &format!("protocol = \"{proto}\"\n");
    let gw = Gateway::start_in(dir, &config);
    let mut cl = H3Client::new(&c.cert_pem, gw.addr(0));
    let sender = cl.sender().await;
    let port = gw.addr(0).port();
    // Let the fresh process settle before the baseline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(gw.pid());

    let sent = Arc::new(AtomicU64::new(0));
    let (hold_tx, hold_rx) = tokio::sync::watch::channel(());
    let tasks: Vec<_> = (0..UPLOADS)
        .map(|i| {
            let (mut s, sent, mut hold) = (sender.clone(), Arc::clone(&sent), hold_rx.clone());
            tokio::spawn(async move {
                let req = Request::post(format!("https://localhost:{port}/up/{i}"))
                    .header("content-length", UPLOAD_BYTES.to_string())
                    .body(())
                    .expect("request");
                let Ok(mut stream) = s.send_request(req).await else {
                    return;
                };
                let chunk = Bytes::from(vec![b'u'; UPLOAD_CHUNK]);
                for _ in 0..UPLOAD_BYTES / UPLOAD_CHUNK {
                    if stream.send_data(chunk.clone()).await.is_err() {
                        break;
                    }
                    sent.fetch_add(UPLOAD_CHUNK as u64, Ordering::Relaxed);
                }
                // Keep the stream open until the test has measured.
                let _ = hold.changed().await;
                drop(stream);
            })
        })
        .collect();

    // Wait until the uploads are done or have made no progress for 3 s.
    let total = (UPLOADS * UPLOAD_BYTES) as u64;
    let give_up = Instant::now() + Duration::from_secs(40);
    let (mut last, mut last_change) = (0, Instant::now());
    while Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = sent.load(Ordering::Relaxed);
        if now == total {
            break;
        }
        if now != last {
            (last, last_change) = (now, Instant::now());
        } else if last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(gw.pid());
    let pushed = sent.load(Ordering::Relaxed);
    let growth = after.saturating_sub(before);
    eprintln!(
        "quic memory ({proto} backend): {} KiB pushed by the client, {} backend connections, \
         RSS {before} -> {after} KiB (+{growth} KiB)",
        pushed / 1024,
        accepted.load(Ordering::SeqCst)
    );
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the uploads never reached the backend"
    );
    assert!(
        growth < RSS_GROWTH_LIMIT_KIB,
        "gateway RSS grew by {growth} KiB (limit {RSS_GROWTH_LIMIT_KIB} KiB) while the client pushed {} KiB",
        pushed / 1024
    );
    // Uploads still blocked on flow control end with the test.
    drop(hold_tx);
    for t in tasks {
        t.abort();
    }
}

// ---------------------------------------------------------------------------
// (a) The slow reader.

/// Bytes `GET /big` answers: far more than every window and socket buffer
/// between the backend and a client that stops reading.
const BIG_BYTES: u64 = 64 << 20;

/// How a `/big` answer ended, as the backend saw it.
#[derive(Debug)]
enum BigEnd {
    /// A write failed: the gateway let go of the connection.
    Cut {
        at: Instant,
        written: u64,
    },
    Completed,
}

/// An h1 backend on raw TCP: `GET /big` answers `BIG_BYTES` and reports
/// how the write ended; any other request gets `ok\n`.
async fn big_backend() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<BigEnd>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = crate::support::raw_h1::find(&buf, b"\r\n\r\n") else {
                        let mut more = [0u8; 4096];
                        match stream.read(&mut more).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&more[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    if path != "/big" {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BYTES}\r\n\r\n");
                    if stream.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    let chunk = vec![b'b'; 64 * 1024];
                    let mut written = 0u64;
                    while written < BIG_BYTES {
                        if stream.write_all(&chunk).await.is_err() {
                            let _ = tx.send(BigEnd::Cut {
                                at: Instant::now(),
                                written,
                            });
                            return;
                        }
                        written += chunk.len() as u64;
                    }
                    let _ = tx.send(BigEnd::Completed);
                }
            });
        }
    });
    (addr, rx)
}

/// (a) A client asks for 64 MiB and stops reading (quinn then grants no
/// credit past its initial stream window). Within `body_timeout_ms`
/// (1.5 s) plus slack the gateway resets the stream with
/// H3_REQUEST_CANCELLED, lets go of the backend connection (the backend's
/// write fails) and counts `slow_reader`; a client on another connection
/// keeps getting 200 all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_h3_reader_is_reset_at_body_timeout_and_releases_the_backend() {
    let (backend, mut ends) = big_backend().await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let gw = Gateway::start_in(dir, &h3_config(&c, backend, "body_timeout_ms = 1500"));
    let before = defence_trips(&gw, "slow_reader").await;
    let port = gw.addr(0).port();
    let mut slow = H3Client::new(&c.cert_pem, gw.addr(0));
    let mut sender = slow.sender().await;
    let started = Instant::now();
    let req = Request::get(format!("https://localhost:{port}/big"))
        .body(())
        .expect("request");
    let mut stream = sender.send_request(req).await.expect("request sent");
    stream.finish().await.expect("request finished");
    let resp = stream.recv_response().await.expect("response head");
    assert_eq!(resp.status(), StatusCode::OK);

    // From here on the slow client reads nothing.
    let mut legit = H3Client::new(&c.cert_pem, gw.addr(0));
    let (mut served, mut tripped) = (0, None);
    while started.elapsed() < Duration::from_secs(8) {
        let r = legit.send(Method::GET, "/small", Bytes::new()).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "legitimate client during the stall"
        );
        assert_eq!(&r.body[..], b"ok\n");
        served += 1;
        if defence_trips(&gw, "slow_reader").await > before {
            tripped = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tripped = tripped.expect("slow_reader counted within 8 s");
    eprintln!("slow reader: cut after {tripped:?}; {served} legitimate requests served meanwhile");
    assert!(
        tripped >= Duration::from_millis(1400) && tripped < Duration::from_secs(5),
        "slow_reader tripped after {tripped:?}, expected body_timeout (1.5 s) + slack"
    );

    // The backend connection was let go: the backend's write failed.
    let end = tokio::time::timeout(Duration::from_secs(5), ends.recv())
        .await
        .expect("the backend's write ended in time")
        .expect("backend report");
    match end {
        BigEnd::Cut { at, written } => {
            eprintln!(
                "slow reader: backend write failed after {:?}, {} KiB written",
                at - started,
                written / 1024
            );
            assert!(at - started < Duration::from_secs(6));
        }
        BigEnd::Completed => panic!("the backend wrote all 64 MiB: nothing let go of it"),
    }

    // The slow client sees a reset, never a clean end.
    let mut got = 0usize;
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.recv_data()).await {
            Ok(Ok(Some(chunk))) => got += bytes::Buf::remaining(&chunk),
            Ok(Ok(None)) => panic!("clean end after {got} bytes of a 64 MiB answer"),
            Ok(Err(e)) => break e.to_string(),
            Err(_) => panic!("stream neither reset nor finished"),
        }
    };
    assert!(
        err.contains("10c") || err.contains("REQUEST_CANCELLED"),
        "reset code: {err}"
    );
    assert!((got as u64) < BIG_BYTES);
}

// ---------------------------------------------------------------------------
// (c) Idle connections and incomplete heads.

/// A quinn client endpoint and config trusting `ca_pem`, offering `alpn`,
/// sending a PING every 200 ms (activity that must not count as use).
pub(crate) fn pinging_client(ca_pem: &str, alpn: &str) -> (quinn::Endpoint, quinn::ClientConfig) {
    let mut config =
        quinn::ClientConfig::new(crate::support::quic::quic_client_crypto(ca_pem, alpn));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_millis(200)));
    config.transport_config(Arc::new(transport));
    let endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("client endpoint");
    (endpoint, config)
}

/// (c) One request, then nothing but PINGs: at `idle_timeout_ms` (1.5 s)
/// the gateway sends GOAWAY and closes the connection (H3_NO_ERROR),
/// long before quinn's 30 s transport idle timeout; counted `idle_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h3_connection_gets_goaway_and_is_closed_at_idle_timeout() {
    let backend = crate::support::http::HttpBackend::start("idle").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let gw = Gateway::start_in(dir, &h3_config(&c, backend.addr, "idle_timeout_ms = 1500"));
    let (endpoint, config) = pinging_client(&c.cert_pem, "h3");
    let conn = endpoint
        .connect_with(config, gw.addr(0), "localhost")
        .expect("connect")
        .await
        .expect("handshake");
    let (mut driver, mut sender) = ::h3::client::new(h3_quinn::Connection::new(conn.clone()))
        .await
        .expect("h3 client");
    let driven = tokio::spawn(async move {
        let e = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
        e.to_string()
    });
    let req = Request::get(format!("https://localhost:{}/one", gw.addr(0).port()))
        .body(())
        .expect("request");
    let r = crate::support::h3::exchange(&mut sender, req, Bytes::new())
        .await
        .expect("first request");
    assert_eq!(r.status, StatusCode::OK);
    let idle_from = Instant::now();
    // Past idle_timeout, inside the close grace: the GOAWAY has arrived,
    // so the client refuses to open a request (no stream is opened).
    tokio::time::sleep_until(idle_from + Duration::from_millis(1900)).await;
    let late = Request::get(format!("https://localhost:{}/late", gw.addr(0).port()))
        .body(())
        .expect("request");
    let refused = sender.send_request(late).await.err().map(|e| e.to_string());
    assert!(
        refused
            .as_deref()
            .is_some_and(|e| e.contains("Remote is closing")),
        "no GOAWAY seen by the client 1.9 s into idleness: {refused:?}"
    );
    let why = tokio::time::timeout(Duration::from_secs(10), conn.closed())
        .await
        .expect("connection closed within 10 s");
    let after = idle_from.elapsed();
    let driver_saw = tokio::time::timeout(Duration::from_secs(2), driven)
        .await
        .map(|r| r.unwrap_or_default())
        .unwrap_or_default();
    eprintln!("idle: closed after {after:?}: {why:?}; h3 driver: {driver_saw}");
    assert!(
        after >= Duration::from_millis(1400) && after < Duration::from_secs(5),
        "closed after {after:?}, expected idle_timeout (1.5 s) + grace"
    );
    match &why {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), 0x100, "H3_NO_ERROR")
        }
        // The client may close first once it has read the GOAWAY.
        quinn::ConnectionError::LocallyClosed => {}
        other => panic!("not closed by the idle GOAWAY: {other:?}"),
    }
    assert!(defence_trips(&gw, "idle_timeout").await >= 1.0);
}

/// (c) A request stream whose HEADERS frame never completes is reset with
/// H3_REQUEST_INCOMPLETE at `header_timeout_ms` (1 s); counted
/// `header_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_h3_headers_are_reset_at_header_timeout() {
    let backend = crate::support::http::HttpBackend::start("head").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let gw = Gateway::start_in(
        dir,
        &h3_config(&c, backend.addr, "header_timeout_ms = 1000"),
    );
    let conn = crate::support::quic::quic_connect(gw.addr(0), &c.cert_pem, "h3").await;
    // Our control stream (type 0) with an empty SETTINGS frame.
    let mut control = conn.open_uni().await.expect("control stream");
    control
        .write_all(&[0x00, 0x04, 0x00])
        .await
        .expect("settings");
    let (mut send, mut recv) = conn.open_bi().await.expect("request stream");
    // A HEADERS frame announcing 32 bytes, of which 5 ever arrive.
    send.write_all(&[0x01, 0x20, 1, 2, 3, 4, 5])
        .await
        .expect("partial headers");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(8), recv.read(&mut buf))
        .await
        .expect("stream answered within 8 s");
    let after = started.elapsed();
    eprintln!("header timeout: {read:?} after {after:?}");
    assert!(
        matches!(read, Err(quinn::ReadError::Reset(code)) if code.into_inner() == 0x10d),
        "expected RESET_STREAM H3_REQUEST_INCOMPLETE, got {read:?}"
    );
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(4),
        "reset after {after:?}, expected header_timeout (1 s) + slack"
    );
    assert!(defence_trips(&gw, "header_timeout").await >= 1.0);
    drop(control);
}

/// (a) with a third-party client: aioquic (`py/h3_stalled_reader.py`)
/// asks for 64 MiB and never raises its stream window. The gateway resets
/// the stream with H3_REQUEST_CANCELLED (0x10c) within `body_timeout_ms`
/// (1.5 s) plus slack, lets go of the backend, and counts `slow_reader`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_reader_that_never_grants_credit_is_reset_at_body_timeout() {
    let (backend, mut ends) = big_backend().await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let gw = Gateway::start_in(dir, &h3_config(&c, backend, "body_timeout_ms = 1500"));
    let before = defence_trips(&gw, "slow_reader").await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/py/h3_stalled_reader.py");
    let mut cmd = std::process::Command::new("python3");
    // -B: no __pycache__ in the source tree.
    cmd.arg("-B")
        .arg(script)
        .arg("--ca")
        .arg(&c.cert_path)
        .args(["--port", &gw.addr(0).port().to_string(), "--timeout", "10"]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .unwrap_or_else(|e| panic!("python3 not runnable ({e}); install python3 and aioquic"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "aioquic stalled reader failed (needs `python3 -m pip install aioquic`, as .ci/run does):\n{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {stderr}"));
    eprintln!("aioquic stalled reader: {report}");
    assert_eq!(report["status"], 200, "{report}");
    assert_eq!(report["ended"], "reset", "{report}");
    assert_eq!(report["reset_code"], 0x10c, "{report}");
    let after = report["ended_after"].as_f64().unwrap_or(f64::MAX);
    assert!(
        (1.4..5.0).contains(&after),
        "reset after {after} s, expected body_timeout (1.5 s) + slack"
    );
    let end = tokio::time::timeout(Duration::from_secs(5), ends.recv())
        .await
        .expect("the backend's write ended in time");
    assert!(
        matches!(end, Some(BigEnd::Cut { .. })),
        "backend not released: {end:?}"
    );
    assert!(defence_trips(&gw, "slow_reader").await > before);
}
