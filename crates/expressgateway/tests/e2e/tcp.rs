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

/// Reads to the client's FIN, then answers the SHA-256 of what it read.
async fn digest_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                if s.read_to_end(&mut all).await.is_ok() {
                    let _ = s.write_all(&sha256(&all)).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Sends `pattern(len, seed)` at once, then closes.
async fn source_server(len: usize, seed: u64) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let data = std::sync::Arc::new(pattern(len, seed));
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let data = std::sync::Arc::clone(&data);
            tokio::spawn(async move {
                let _ = s.write_all(&data).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Each direction on its own (the kernel relay moves one way while the
/// other idles): 64 MiB up, checked by the backend's digest sent back over
/// the half-closed link, and 64 MiB down, checked by the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_64_mib_up_and_64_mib_down_intact() {
    let sink = digest_server().await;
    let source = source_server(64 << 20, 0xd0e).await;
    let gw = Gateway::start(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\
         [[listeners.backends]]\naddress = \"{sink}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\
         [[listeners.backends]]\naddress = \"{source}\"\n"
    ));
    let up = pattern(64 << 20, 0x0b);
    let mut s = TcpStream::connect(gw.addr(0)).await.expect("connect up");
    s.write_all(&up).await.expect("upload");
    s.shutdown().await.expect("shutdown write");
    let mut digest = Vec::new();
    s.read_to_end(&mut digest).await.expect("digest");
    assert_eq!(digest, sha256(&up), "upload changed in transit");

    let mut d = TcpStream::connect(gw.addr(1)).await.expect("connect down");
    let mut down = Vec::new();
    d.read_to_end(&mut down).await.expect("download");
    assert_eq!(down.len(), 64 << 20, "download length");
    assert_eq!(
        sha256(&down),
        sha256(&pattern(64 << 20, 0xd0e)),
        "download changed in transit"
    );
}

/// More relays busy at once than the kernel relay keeps pipes for: every
/// one still arrives intact (the excess copies, none waits or fails).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_busy_relays_at_once_stay_intact() {
    let echo = echo_server().await;
    let gw = Gateway::start(&config(&[echo.to_string()], ""));
    let addr = gw.addr(0);
    let tasks: Vec<_> = (0..160u64)
        .map(|i| {
            tokio::spawn(async move {
                let data = pattern(1 << 20, i + 1);
                let s = TcpStream::connect(addr).await.expect("connect");
                echo_roundtrip(s, &data).await == sha256(&data)
            })
        })
        .collect();
    let mut intact = 0;
    for t in tasks {
        intact += usize::from(t.await.expect("join"));
    }
    assert_eq!(intact, 160, "relays that changed bytes");
    let mut s = TcpStream::connect(addr).await.expect("connect after");
    assert!(ping(&mut s).await, "relay after the burst");
}

/// A backend that resets mid-stream ends the client's relay at once (no
/// hang), and the next connection is relayed as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_mid_stream_ends_the_client_promptly() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let resetting = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4];
                if s.read_exact(&mut buf).await.is_ok() {
                    let _ = s.write_all(&[1u8; 256 << 10]).await;
                    let _ = s.set_zero_linger();
                }
            });
        }
    });
    let gw = Gateway::start(&config(&[resetting.to_string()], ""));
    let mut s = TcpStream::connect(gw.addr(0)).await.expect("connect");
    s.write_all(b"ping").await.expect("write");
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "client left hanging after the backend's reset"
    );
    // The client keeps sending into a relay that is gone: refused, not hung.
    let late = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..100 {
            if s.write_all(&[0u8; 64 << 10]).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(late.is_ok(), "writes into the ended relay hung");
}

/// `tcp_idle_timeout_ms` still closes a relay on which nothing moves, and
/// only that one: a relay kept busy past the same span stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relay_is_closed_at_tcp_idle_timeout() {
    let echo = echo_server().await;
    let gw = Gateway::start(&config(
        &[echo.to_string()],
        "[runtime]\ntcp_idle_timeout_ms = 800",
    ));
    let mut idle = TcpStream::connect(gw.addr(0)).await.expect("connect idle");
    let mut busy = TcpStream::connect(gw.addr(0)).await.expect("connect busy");
    assert!(ping(&mut idle).await, "idle relay never worked");
    let started = std::time::Instant::now();
    // Busy: a round trip every 200 ms for 2 s, well past the idle timeout.
    while started.elapsed() < Duration::from_secs(2) {
        assert!(ping(&mut busy).await, "busy relay closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut buf = [0u8; 16];
    let got = tokio::time::timeout(Duration::from_secs(3), idle.read(&mut buf)).await;
    assert!(
        matches!(got, Ok(Ok(0) | Err(_))),
        "idle relay not closed: {got:?}"
    );
}
