//! How a pool keeps its upstream connections (`connection_pool`): the idle
//! timeout of pooled HTTP/1.1 connections, and more HTTP/2 connections
//! when a backend's SETTINGS_MAX_CONCURRENT_STREAMS is reached.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::probe::ProbeBackend;
use crate::support::raw_h1::*;
use crate::support::*;

fn listener(backend: SocketAddr, protocol: &str, pool: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n{pool}\n\
         [[listeners.backends]]\naddress = \"{backend}\"\nprotocol = \"{protocol}\"\n"
    )
}

async fn get_ok(addr: SocketAddr, path: &str) {
    let r = exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(
        matches!(&r, Ok(r) if r.status == 200),
        "{path}: {}",
        verdict(&r)
    );
}

/// Three requests 1.5 s apart; how many connections the backend accepted.
async fn accepts_across_pauses(idle_timeout_ms: u64) -> usize {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&listener(
        probe.addr,
        "h1",
        &format!("[listeners.connection_pool]\nidle_timeout_ms = {idle_timeout_ms}"),
    ));
    for i in 0..3 {
        get_ok(gw.addr(0), &format!("/p{i}")).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    probe.seen.accepted.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_idle_timeout_is_the_configured_one() {
    assert_eq!(
        accepts_across_pauses(10_000).await,
        1,
        "idle for 1.5 s under a 10 s idle timeout: the connection is reused"
    );
    assert_eq!(
        accepts_across_pauses(1_000).await,
        3,
        "idle for 1.5 s under a 1 s idle timeout: every request dials"
    );
}

/// Per connection of an h2c backend: streams open now and at most.
#[derive(Default)]
struct StreamPeaks {
    per_conn: Mutex<Vec<Arc<(AtomicUsize, AtomicUsize)>>>,
}

/// An h2c backend announcing SETTINGS_MAX_CONCURRENT_STREAMS = 2 that holds
/// every request 300 ms, recording each connection's peak of open streams.
async fn two_stream_backend() -> (SocketAddr, Arc<StreamPeaks>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let peaks = Arc::new(StreamPeaks::default());
    let seen = Arc::clone(&peaks);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let conn_peak = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
            seen.per_conn
                .lock()
                .expect("lock")
                .push(Arc::clone(&conn_peak));
            let service = hyper::service::service_fn(move |_req| {
                let peak = Arc::clone(&conn_peak);
                async move {
                    let now = peak.0.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.1.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    peak.0.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::convert::Infallible>(::http::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                    ))
                }
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .max_concurrent_streams(2)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, peaks)
}

async fn burst(addr: SocketAddr, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(async move { get_ok(addr, &format!("/b{i}")).await }))
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_backend_at_its_stream_limit_gets_another_connection() {
    let (backend, peaks) = two_stream_backend().await;
    let gw = Gateway::start(&listener(backend, "h2", ""));
    // Warm one connection, so the limit is known before the burst.
    get_ok(gw.addr(0), "/warm").await;
    burst(gw.addr(0), 8).await;
    let conns = peaks.per_conn.lock().expect("lock").clone();
    assert_eq!(
        conns.len(),
        4,
        "8 concurrent streams at 2 per connection: the default cap of 4 connections"
    );
    for c in &conns {
        assert!(
            c.1.load(Ordering::SeqCst) <= 2,
            "a connection exceeded the backend's limit"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_connections_per_backend_are_capped() {
    let (backend, peaks) = two_stream_backend().await;
    let gw = Gateway::start(&listener(
        backend,
        "h2",
        "[listeners.connection_pool]\nmax_h2_connections_per_backend = 2",
    ));
    // No warm-up: the first dial waits for the backend's SETTINGS.
    burst(gw.addr(0), 8).await;
    assert_eq!(
        peaks.per_conn.lock().expect("lock").len(),
        2,
        "at the cap, further streams queue on the open connections"
    );
}
