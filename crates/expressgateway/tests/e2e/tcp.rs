//! The `tcp` listener: relay integrity, half-close, failover, caps.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn config(backends: &[String], extra: &str) -> String {
    let mut text =
        format!("{extra}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n");
    for b in backends {
        text.push_str(&format!("[[listeners.backends]]\naddress = \"{b}\"\n"));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_100_mib_both_ways_intact() {
    let echo = echo_server().await;
    let gw = Gateway::start(&config(&[echo.to_string()], ""));
    let data = pattern(100 << 20, 0x5eed);
    let stream = TcpStream::connect(gw.addr(0)).await.expect("connect");
    let digest = echo_roundtrip(stream, &data).await;
    assert_eq!(digest, sha256(&data), "bytes changed in transit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_travels_both_ways() {
    let backend = half_close_server().await;
    let gw = Gateway::start(&config(&[backend.to_string()], ""));
    let mut s = TcpStream::connect(gw.addr(0)).await.expect("connect");
    s.write_all(&[7u8; 1000]).await.expect("write");
    // Our FIN must reach the backend (it answers only after EOF) ...
    s.shutdown().await.expect("shutdown write");
    // ... and its answer plus its FIN must reach us over the half-open link.
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut answer))
        .await
        .expect("answer within 5 s")
        .expect("read");
    assert_eq!(answer, "got 1000 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_is_skipped_for_the_next() {
    let echo = echo_server().await;
    let dead = closed_port();
    let gw = Gateway::start(&config(&[dead.to_string(), echo.to_string()], ""));
    // Round robin starts on each backend in turn: every connection must
    // land on the live one, whichever it was offered first.
    for _ in 0..6 {
        let mut s = TcpStream::connect(gw.addr(0)).await.expect("connect");
        assert!(
            ping(&mut s).await,
            "connection not relayed to the live backend"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_closes_the_client_promptly() {
    let gw = Gateway::start(&config(
        &[closed_port().to_string(), closed_port().to_string()],
        "",
    ));
    let mut s = TcpStream::connect(gw.addr(0)).await.expect("connect");
    assert!(
        closed_promptly(&mut s, Duration::from_secs(3)).await,
        "client left hanging"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresponsive_backend_is_cut_at_connect_timeout() {
    let (hole, _keep) = blackhole_backend();
    let gw = Gateway::start(&config(
        &[hole.to_string()],
        "[runtime]\nconnect_timeout_ms = 400",
    ));
    let mut s = TcpStream::connect(gw.addr(0)).await.expect("connect");
    let started = std::time::Instant::now();
    assert!(
        closed_promptly(&mut s, Duration::from_secs(4)).await,
        "client left hanging"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed before connect_timeout_ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_cap_refuses_the_excess_only_for_that_ip() {
    let echo = echo_server().await;
    let gw = Gateway::start(&config(
        &[echo.to_string()],
        "[runtime]\nper_ip_connection_cap = 2",
    ));
    let mut a = connect_from([127, 0, 0, 1], gw.addr(0)).await.expect("a");
    let mut b = connect_from([127, 0, 0, 1], gw.addr(0)).await.expect("b");
    assert!(ping(&mut a).await && ping(&mut b).await);
    assert!(
        refused_from([127, 0, 0, 1], gw.addr(0), Duration::from_secs(2)).await,
        "third connection from one IP kept"
    );
    let mut other_ip = connect_from([127, 0, 0, 2], gw.addr(0))
        .await
        .expect("other ip");
    assert!(ping(&mut other_ip).await, "another IP must not be affected");
    drop(a);
    // The freed slot is reusable once the gateway sees the close.
    let mut again = None;
    for _ in 0..50 {
        if let Ok(mut c) = connect_from([127, 0, 0, 1], gw.addr(0)).await {
            if ping(&mut c).await {
                again = Some(c);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "slot never freed");
    assert!(ping(&mut b).await, "existing connection disturbed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflight_cap_refuses_the_excess_from_any_ip() {
    let echo = echo_server().await;
    let gw = Gateway::start(&config(
        &[echo.to_string()],
        "[runtime]\nmax_inflight_connections = 2",
    ));
    let mut a = connect_from([127, 0, 0, 3], gw.addr(0)).await.expect("a");
    let mut b = connect_from([127, 0, 0, 4], gw.addr(0)).await.expect("b");
    assert!(ping(&mut a).await && ping(&mut b).await);
    assert!(
        refused_from([127, 0, 0, 5], gw.addr(0), Duration::from_secs(2)).await,
        "over-cap connection kept"
    );
    assert!(
        ping(&mut a).await && ping(&mut b).await,
        "admitted connections disturbed"
    );
}
