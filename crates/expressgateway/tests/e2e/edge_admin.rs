//! Edge safety of the admin listener (`[observability] metrics_bind`): a
//! request head within 5 s, HTTP/1.1 only, at most 64 connections.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::edge_quic::defence_trips;
use crate::support::*;

/// `ADMIN_HEADER_TIMEOUT` and `ADMIN_MAX_CONNECTIONS` of `eg_admin`.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 64;

fn admin_only() -> Gateway {
    let backend = closed_port();
    Gateway::start(&format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{backend}\"\n"
    ))
}

/// (d) A connection that sends half a request head is closed at the header
/// timeout (5 s), not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_closes_a_partial_request_head_at_the_header_timeout() {
    let gw = admin_only();
    let admin = gw.listeners.last().expect("admin").address;
    let mut s = TcpStream::connect(admin).await.expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial head");
    let started = Instant::now();
    let closed = closed_promptly(&mut s, HEADER_TIMEOUT + Duration::from_secs(3)).await;
    let after = started.elapsed();
    eprintln!("admin header timeout: closed={closed} after {after:?}");
    assert!(closed, "partial head kept open past {after:?}");
    assert!(
        after >= HEADER_TIMEOUT - Duration::from_millis(500),
        "closed after {after:?}, before the header timeout: something else cut it"
    );
}

/// Past 64 open admin connections, the next is closed at once and counted
/// `admin_connection_cap`; once they go, the admin listener serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_connections_past_the_cap_are_closed_at_once() {
    let gw = admin_only();
    let admin = gw.listeners.last().expect("admin").address;
    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        held.push(TcpStream::connect(admin).await.expect("connect"));
    }
    // Let the gateway accept them all before the one too many.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = TcpStream::connect(admin).await.expect("connect");
    let started = Instant::now();
    assert!(
        closed_promptly(&mut extra, Duration::from_secs(2)).await,
        "connection past the cap not closed"
    );
    assert!(started.elapsed() < HEADER_TIMEOUT);
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(defence_trips(&gw, "admin_connection_cap").await >= 1.0);
}
