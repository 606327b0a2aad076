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
