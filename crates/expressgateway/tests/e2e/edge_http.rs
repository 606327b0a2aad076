//! Edge safety of `h1` listeners, attacked as a hostile client would:
//! slow readers, silent and idle connections, the circuit breaker, the
//! listener's in-flight cap, and client faults that must not be blamed on
//! a backend. Each test asserts the bound (time or count) and its counter
//! while a legitimate client keeps getting answers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::http::HttpBackend;
use crate::support::probe::{defence_trips, ProbeBackend};
use crate::support::raw_h1::*;
use crate::support::raw_h2::*;
use crate::support::*;

/// A 64 MiB response: far more than every socket buffer on the way.
const BIG: usize = 64 << 20;

/// One `h1` listener with an admin listener; `http` goes into
/// `[listeners.http]`, `extra` after the listener's backends (sub-tables).
fn config(http: &str, backends: &[SocketAddr], extra: &str) -> String {
    let backends: String = backends
        .iter()
        .map(|b| format!("[[listeners.backends]]\naddress = \"{b}\"\n"))
        .collect();
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.http]\n{http}\n{backends}{extra}"
    )
}

/// A GET on its own connection answers 200: the gateway still serves.
async fn assert_serves(gw: &Gateway, what: &str) {
    let r = exchange(gw.addr(0), b"GET /control HTTP/1.1\r\nHost: x\r\n\r\n").await;
    match r {
        Ok(resp) => assert_eq!(resp.status, 200, "{what}: control got {}", resp.text()),
        Err(cut) => panic!("{what}: control request cut: {cut:?}"),
    }
}

/// Read (and discard) until EOF or `within`; the bytes read and whether
/// the stream ended.
async fn drain_to_eof(s: &mut TcpStream, within: Duration) -> (usize, bool) {
    let deadline = Instant::now() + within;
    let mut total = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (total, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (total, true),
            Ok(Ok(n)) => total += n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_slow_reader_is_closed_at_body_timeout_and_backend_released() {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&config("body_timeout_ms = 1500", &[probe.addr], ""));
    let mut reader = TcpStream::connect(gw.addr(0)).await.expect("connect");
    let started = Instant::now();
    reader
        .write_all(format!("GET /big/{BIG} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    // The attacker reads nothing; a legitimate client is served meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_serves(&gw, "during the stall").await;
    let deadline = Instant::now() + Duration::from_secs(8);
    while probe.cuts().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cuts = probe.cuts();
    let cut = cuts
        .first()
        .copied()
        .expect("the backend connection was never released");
    let held = cut.duration_since(started.into_std());
    assert!(
        held >= Duration::from_millis(1200) && held < Duration::from_millis(4500),
        "backend released after {held:?}; body_timeout is 1.5 s"
    );
    let (read, ended) = drain_to_eof(&mut reader, Duration::from_secs(10)).await;
    assert!(ended, "client connection still open after the stall");
    assert!(read < BIG, "the whole body arrived ({read} bytes)");
    assert!(defence_trips(&gw, "slow_reader").await >= 1);
    assert_serves(&gw, "after the stall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_slow_reader_stream_is_reset_and_backend_released() {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&config("body_timeout_ms = 1500", &[probe.addr], ""));
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    let started = Instant::now();
    let block = h2_get_block(&format!("/big/{BIG}"), &[]);
    h2.send(&h2_frame(
        H2_HEADERS,
        H2_END_HEADERS | H2_END_STREAM,
        1,
        &block,
    ))
    .await;
    // Never a WINDOW_UPDATE: the stream stalls at the initial 64 KiB.
    let deadline = Instant::now() + Duration::from_secs(8);
    let reset = loop {
        match h2.frame(deadline).await {
            Ok(f) if f.kind == H2_RST_STREAM && f.stream == 1 => break Some(f.payload),
            Ok(_) => {}
            Err(why) => panic!("no RST_STREAM on the stalled stream: {why}"),
        }
    };
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed < Duration::from_millis(4500),
        "stream reset after {elapsed:?}; body_timeout is 1.5 s"
    );
    let code = reset.and_then(|p| {
        p.get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    });
    assert_eq!(code, Some(0x8), "RST_STREAM code (CANCEL expected)");
    let deadline = Instant::now() + Duration::from_secs(3);
    while probe.cuts().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!probe.cuts().is_empty(), "backend connection not released");
    assert!(defence_trips(&gw, "slow_reader").await >= 1);
    // The same connection still serves a new stream once the client
    // opens the connection window the stalled stream used up.
    h2.send(&h2_frame(0x8, 0, 0, &(1u32 << 20).to_be_bytes()))
        .await;
    assert_eq!(
        h2.get(3, "/after", &[]).await,
        H2Answer::Response(Some(200))
    );
    assert_serves(&gw, "after the stall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_partial_preface_connections_close_at_header_timeout() {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&config("header_timeout_ms = 1000", &[probe.addr], ""));
    let openers: [&[u8]; 3] = [b"", b"PRI * HTTP", b"GET / HTTP/1.1\r\nHost: x\r\n"];
    let mut conns = Vec::new();
    for opener in openers {
        let mut c = RawConn::tcp(gw.addr(0)).await;
        c.send(opener).await.expect("write");
        conns.push((opener, c));
    }
    let started = Instant::now();
    assert_serves(&gw, "with silent connections open").await;
    for (opener, mut c) in conns {
        let (closed, _) = c.closes_within(Duration::from_secs(4)).await;
        let at = started.elapsed();
        let shown = String::from_utf8_lossy(opener);
        assert!(
            closed,
            "connection that sent {shown:?} still open after {at:?}"
        );
        assert!(
            at >= Duration::from_millis(700),
            "connection that sent {shown:?} closed too early ({at:?})"
        );
    }
    assert!(
        defence_trips(&gw, "header_timeout").await >= 3,
        "each closed connection counted"
    );
    assert_eq!(
        probe.seen.requests.load(Ordering::SeqCst),
        1,
        "only the control request reaches the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_h1_and_h2_connections_close_at_idle_timeout() {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&config("idle_timeout_ms = 1500", &[probe.addr], ""));

    let mut h1 = RawConn::tcp(gw.addr(0)).await;
    h1.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let resp = h1.response().await.expect("response");
    assert_eq!(resp.status, 200);
    let answered = Instant::now();

    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    assert_eq!(h2.get(1, "/one", &[]).await, H2Answer::Response(Some(200)));
    let h2_answered = Instant::now();

    let (closed, _) = h1.closes_within(Duration::from_secs(4)).await;
    let at = answered.elapsed();
    assert!(closed, "idle H1 connection still open after {at:?}");
    assert!(
        at >= Duration::from_millis(1200),
        "H1 closed early ({at:?})"
    );

    let deadline = Instant::now() + Duration::from_secs(4);
    let ended = loop {
        match h2.frame(deadline).await {
            Ok(_) => {}
            Err(why) => break why,
        }
    };
    let at = h2_answered.elapsed();
    assert_eq!(
        ended, "connection closed",
        "idle H2 connection: {ended} after {at:?}"
    );
    assert!(h2.goaway_seen, "idle H2 connection closed without GOAWAY");
    assert!(
        at >= Duration::from_millis(1200),
        "H2 closed early ({at:?})"
    );
    assert!(defence_trips(&gw, "idle_timeout").await >= 2);
}

/// Send `n` GETs of `path` at once, each on its own connection; the
/// statuses.
pub(crate) async fn concurrent_gets(addr: SocketAddr, path: &str, n: usize) -> Vec<u16> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let raw = raw.clone();
            tokio::spawn(async move {
                exchange(addr, raw.as_bytes())
                    .await
                    .map(|r| r.status)
                    .unwrap_or(0)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap_or(0));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_caps_backend_connections_and_queues_the_rest() {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&config(
        "",
        &[probe.addr],
        "[listeners.circuit_breaker]\nmax_connections = 4\n",
    ));
    let statuses = concurrent_gets(gw.addr(0), "/hold/100", 40).await;
    assert!(
        statuses.iter().all(|s| *s == 200),
        "every queued request is served: {statuses:?}"
    );
    let max = probe.seen.max_open.load(Ordering::SeqCst);
    assert!(
        max <= 4,
        "the backend saw {max} connections at once (cap 4)"
    );
    assert!(max >= 2, "no concurrency reached the backend ({max})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_queue_is_bounded_in_size_and_time() {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&format!(
        "[runtime]\nconnect_timeout_ms = 600\n{}",
        config(
            "",
            &[probe.addr],
            "[listeners.circuit_breaker]\nmax_requests = 1\nmax_pending_requests = 2\n",
        )
    ));
    let started = Instant::now();
    let statuses = concurrent_gets(gw.addr(0), "/hold/2000", 6).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert_eq!(ok, 1, "one slot, one request served: {statuses:?}");
    assert_eq!(refused, 5, "the rest get 503: {statuses:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(defence_trips(&gw, "circuit_breaker_queue_full").await >= 1);
    assert!(defence_trips(&gw, "circuit_breaker_queue_timeout").await >= 1);
    assert_eq!(probe.seen.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_inflight_cap_answers_503_at_once() {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&config("max_inflight_requests = 2", &[probe.addr], ""));
    let addr = gw.addr(0);
    let held: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(async move {
                exchange(addr, b"GET /hold/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await
                    .map(|r| r.status)
                    .unwrap_or(0)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while probe.seen.requests.load(Ordering::SeqCst) < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let asked = Instant::now();
    let third = exchange(addr, b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(third.map(|r| r.status).ok(), Some(503));
    assert!(
        asked.elapsed() < Duration::from_millis(700),
        "503 not at once"
    );
    for h in held {
        assert_eq!(h.await.unwrap_or(0), 200);
    }
    assert!(defence_trips(&gw, "listener_inflight_cap").await >= 1);
    assert_serves(&gw, "after the cap freed").await;
}

/// Abort an upload of 1 MiB after 64 KiB: H1 by closing the connection.
async fn aborted_h1_upload(addr: SocketAddr) {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n";
    c.write_all(head.as_bytes()).await.expect("write head");
    c.write_all(&vec![b'u'; 64 * 1024])
        .await
        .expect("write body");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(c);
}

/// The same over HTTP/2: HEADERS, some DATA, then RST_STREAM(CANCEL).
async fn aborted_h2_upload(addr: SocketAddr) {
    let mut h2 = H2Raw::connect(addr).await;
    let mut block = Vec::new();
    hpack_literal(&mut block, ":method", "POST");
    hpack_literal(&mut block, ":scheme", "http");
    hpack_literal(&mut block, ":authority", "x");
    hpack_literal(&mut block, ":path", "/echo");
    hpack_literal(&mut block, "content-length", "1048576");
    h2.send(&h2_frame(H2_HEADERS, H2_END_HEADERS, 1, &block))
        .await;
    h2.send(&h2_frame(H2_DATA, 0, 1, &[b'u'; 16_000])).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    h2.send(&h2_frame(H2_RST_STREAM, 0, 1, &8u32.to_be_bytes()))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_uploads_leave_both_backends_in_rotation() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let gw = Gateway::start(&config("", &[a.addr, b.addr], ""));
    for i in 0..10 {
        if i % 2 == 0 {
            aborted_h1_upload(gw.addr(0)).await;
        } else {
            aborted_h2_upload(gw.addr(0)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (before_a, before_b) = (a.hits(), b.hits());
    for _ in 0..40 {
        let r = exchange(gw.addr(0), b"GET /spread HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(r.map(|r| r.status).ok(), Some(200));
    }
    let (got_a, got_b) = (a.hits() - before_a, b.hits() - before_b);
    assert!(
        got_a >= 10 && got_b >= 10,
        "a backend was ejected for the clients' aborts: a got {got_a}, b got {got_b} of 40"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_longer_than_head_timeout_is_not_a_backend_timeout() {
    let a = HttpBackend::start("a").await;
    let gw = Gateway::start(&config("head_timeout_ms = 1000", &[a.addr], ""));
    let mut c = RawConn::tcp(gw.addr(0)).await;
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n")
        .await
        .expect("head");
    // 12 bytes over 2.4 s: each within body_timeout, the whole past head_timeout.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.send(b"z").await.expect("body byte");
    }
    let resp = c.response().await.expect("response");
    assert_eq!(resp.status, 200, "slow upload answered {}", resp.text());
    assert_eq!(resp.text(), "zzzzzzzzzzzz");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_gets_408_at_body_timeout_and_is_counted() {
    // A backend that has not answered yet (an echo would already be
    // streaming a 200, cut short, never a clean end).
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&config("body_timeout_ms = 1000", &[probe.addr], ""));
    let mut c = RawConn::tcp(gw.addr(0)).await;
    c.send(b"POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        .await
        .expect("head");
    let started = Instant::now();
    let resp = c.response().await.expect("an answer to the stalled upload");
    let at = started.elapsed();
    assert_eq!(resp.status, 408, "{}", resp.text());
    assert!(
        at >= Duration::from_millis(800) && at < Duration::from_millis(3500),
        "{at:?}"
    );
    assert!(defence_trips(&gw, "slow_upload").await >= 1);
    assert_serves(&gw, "after the slow upload").await;
}
