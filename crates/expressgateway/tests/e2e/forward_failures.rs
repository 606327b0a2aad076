//! Forwarding when backends fail: the retry budget really bounds the extra
//! load a brownout causes, and a backend's own error answer reaches the
//! client when no retry can do better.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use crate::support::probe::ProbeBackend;
use crate::support::raw_h1::*;
use crate::support::*;

fn config(backends: &[SocketAddr], pool: &str) -> String {
    let backends: String = backends
        .iter()
        .map(|b| format!("[[listeners.backends]]\naddress = \"{b}\"\n"))
        .collect();
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.outlier_detection]\nconsecutive_failures = 1000\n{pool}\n{backends}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_extra_load_of_a_brownout() {
    let (a, b) = (ProbeBackend::start().await, ProbeBackend::start().await);
    let gw = Gateway::start(&config(
        &[a.addr, b.addr],
        "[listeners.retry]\nattempts = 2\non_status = [503]\nbudget_percent = 20\nmin_retries_per_second = 3",
    ));
    let addr = gw.addr(0);
    let mut tasks = Vec::new();
    // 400 requests, 20 at a time: the budget allows 20 % of those in flight.
    for _ in 0..20 {
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for _ in 0..20 {
                let r = exchange(addr, b"GET /status/503 HTTP/1.1\r\nHost: x\r\n\r\n").await;
                seen.push(
                    r.map(|r| (r.status, r.text()))
                        .unwrap_or((0, String::new())),
                );
            }
            seen
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.expect("join"));
    }
    assert_eq!(answers.len(), 400);
    for (status, body) in &answers {
        assert_eq!(
            (*status, body.as_str()),
            (503, "probe says 503"),
            "the backend's own answer"
        );
    }
    let hits = a.seen.requests.load(Ordering::SeqCst) + b.seen.requests.load(Ordering::SeqCst);
    // 400 first attempts + at most ~20 % retries (+ the per-second floor).
    eprintln!("budget test: {hits} backend requests");
    assert!(
        hits <= 520,
        "{hits} backend requests for 400 client requests"
    );
    assert!(hits > 400, "no request was retried at all ({hits})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_503_reaches_the_client_when_the_retry_finds_no_backend() {
    let a = ProbeBackend::start().await;
    let gw = Gateway::start(&config(&[a.addr, closed_port()], ""));
    for _ in 0..10 {
        let r = exchange(gw.addr(0), b"GET /status/503 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("answer");
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(
            r.text(),
            "probe says 503",
            "a synthetic answer replaced the backend's"
        );
        assert_eq!(r.header("x-probe"), Some("yes"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failing_mid_body_is_ejected() {
    let (bad, good) = (ProbeBackend::start().await, ProbeBackend::start().await);
    bad.seen.cut_bodies.store(true, Ordering::SeqCst);
    let gw = Gateway::start(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.outlier_detection]\nconsecutive_failures = 3\n\
         [[listeners.backends]]\naddress = \"{}\"\n[[listeners.backends]]\naddress = \"{}\"\n",
        bad.addr, good.addr
    ));
    let mut cut = 0;
    for _ in 0..30 {
        match exchange(gw.addr(0), b"GET /big/200000 HTTP/1.1\r\nHost: x\r\n\r\n").await {
            Ok(r) if r.status == 200 && r.body.len() == 200_000 => {}
            _ => cut += 1,
        }
    }
    let to_bad = bad.seen.requests.load(Ordering::SeqCst);
    assert!(
        to_bad <= 4,
        "the mid-body failing backend kept getting traffic: {to_bad} of 30"
    );
    assert_eq!(
        cut, to_bad,
        "every cut response came from the failing backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_closing_idle_connections_never_costs_a_502() {
    use crate::support::http::{client, send, text, ClientProto};
    let probe = ProbeBackend::start().await;
    probe.seen.idle_close_ms.store(1000, Ordering::SeqCst);
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    // Listener 0: h1 (H1 and H2c clients); listener 1: quic (HTTP/3).
    let quic = crate::h3_matrix::quic_listener(&c, &probe.addr.to_string(), "h1", "");
    let gw = Gateway::start_in(dir, &format!("{}{quic}", config(&[probe.addr], "")));
    for proto in [ClientProto::H1, ClientProto::H2c] {
        let c = client(proto);
        for round in 0..3 {
            for method in ["GET", "POST"] {
                let req = ::http::Request::builder()
                    .method(method)
                    .uri(format!("http://{}/r{round}", gw.addr(0)))
                    .body(text(if method == "POST" { "payload" } else { "" }))
                    .expect("request");
                let r = send(&c, req).await;
                assert_eq!(r.status, 200, "{proto:?} {method} round {round}");
            }
            // Past the backend's silent 1 s idle close.
            tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
        }
    }
    // HTTP/3 through curl (ngtcp2): a GET and a POST with a body per round.
    for round in 0..3 {
        let requests = [format!("GET:/r{round}"), format!("POST:/r{round}:7")];
        let report =
            crate::h3_curl::curl_h3(Some(&c.cert_path), gw.addr(1).port(), &requests).await;
        for r in report["responses"].as_array().expect("responses") {
            assert_eq!(r["status"].as_u64(), Some(200), "H3 round {round}: {r}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    }
    assert!(
        probe.seen.accepted.load(Ordering::SeqCst) >= 9,
        "the backend did close idle connections"
    );
}

/// A request that lands on a pooled connection the backend closes as it
/// arrives (its idle close crossing the request) is sent again on a fresh
/// connection: the client never sees it. The probe closes every connection
/// at its second request, unanswered, so each request after the first one
/// through a pool runs into it. Only idempotent requests: bytes of the
/// request reached the backend, so a POST could have been processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_on_a_connection_the_backend_just_closed_is_resent() {
    use crate::support::http::{client, get, send, ClientProto};
    let probe = ProbeBackend::start().await;
    probe.seen.close_reused.store(true, Ordering::SeqCst);
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    let quic = crate::h3_matrix::quic_listener(&c, &probe.addr.to_string(), "h1", "");
    let gw = Gateway::start_in(dir, &format!("{}{quic}", config(&[probe.addr], "")));
    for proto in [ClientProto::H1, ClientProto::H2c] {
        let cl = client(proto);
        for i in 0..5 {
            let r = send(&cl, get(&format!("http://{}/s{i}", gw.addr(0)))).await;
            assert_eq!(r.status, 200, "{proto:?} request {i}");
        }
    }
    for i in 0..3 {
        let requests = [format!("GET:/s{i}")];
        let report =
            crate::h3_curl::curl_h3(Some(&c.cert_path), gw.addr(1).port(), &requests).await;
        for r in report["responses"].as_array().expect("responses") {
            assert_eq!(r["status"].as_u64(), Some(200), "H3 request {i}: {r}");
        }
    }
    // Each listener's pool: every request but its first met a closed one.
    let dropped = probe.seen.dropped.load(Ordering::SeqCst);
    eprintln!("requests on just-closed connections: {dropped}");
    assert!(
        dropped >= 9 + 2,
        "only {dropped} requests met a closed connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_h2_backend_costs_one_connect_timeout_not_a_convoy() {
    use crate::support::http::HttpBackend;
    let good = HttpBackend::start("good").await;
    let (hole, _fillers) = blackhole_backend();
    let gw = Gateway::start(&format!(
        "[runtime]\nconnect_timeout_ms = 1000\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{hole}\"\nprotocol = \"h2\"\n\
         [[listeners.backends]]\naddress = \"{}\"\nprotocol = \"h2\"\n",
        good.addr
    ));
    // One shared dial times out after 1 s; every waiter then moves on.
    twenty_gets_within(&gw, std::time::Duration::from_millis(3000)).await;
}

/// 20 concurrent GETs all answer 200, within `bound` in all (a dial
/// convoy behind a dead backend would cost one connect timeout each).
async fn twenty_gets_within(gw: &Gateway, bound: std::time::Duration) {
    let started = std::time::Instant::now();
    let statuses = crate::edge_http::concurrent_gets(gw.addr(0), "/c", 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let took = started.elapsed();
    assert!(took < bound, "20 requests took {took:?}");
}

/// An h2c backend that sends a graceful GOAWAY after every 50 streams of a
/// connection (as a backend recycling connections does).
async fn goaway_every_50_backend() -> SocketAddr {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let served = Arc::new(AtomicUsize::new(0));
                let recycle = Arc::new(tokio::sync::Notify::new());
                let (s, r) = (Arc::clone(&served), Arc::clone(&recycle));
                let service = hyper::service::service_fn(move |_req| {
                    if s.fetch_add(1, Ordering::SeqCst) + 1 == 50 {
                        r.notify_one();
                    }
                    async {
                        Ok::<_, std::convert::Infallible>(::http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                        ))
                    }
                });
                let conn =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => return,
                    () = recycle.notified() => conn.as_mut().graceful_shutdown(),
                }
                let _ = conn.await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_backend_goaway_every_50_streams_costs_no_request() {
    let backend = goaway_every_50_backend().await;
    let gw = Gateway::start(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{backend}\"\nprotocol = \"h2\"\n"
    ));
    let failed = goaway_load(gw.addr(0)).await;
    assert!(
        failed.is_empty(),
        "{} of 600 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
}

/// 600 requests from 10 clients through `addr`, GETs and bodiless POSTs in
/// turn ("not processed" holds for any method, so both are resent); the
/// verdicts of those that did not get a 200.
async fn goaway_load(addr: SocketAddr) -> Vec<String> {
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                let mut failed = Vec::new();
                for i in 0..60 {
                    let head = if i % 2 == 0 {
                        format!("GET /g{i} HTTP/1.1\r\nHost: x\r\n\r\n")
                    } else {
                        format!("POST /p{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                    };
                    match exchange(addr, head.as_bytes()).await {
                        Ok(r) if r.status == 200 => {}
                        other => failed.push(verdict(&other)),
                    }
                }
                failed
            })
        })
        .collect();
    let mut failed = Vec::new();
    for t in tasks {
        failed.extend(t.await.expect("join"));
    }
    failed
}

/// A TCP backend that accepts, then resets every connection at once.
async fn resetting_backend() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_zero_linger();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            drop(s);
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_backend_resetting_after_the_dial_is_ejected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (bad, resets) = resetting_backend().await;
    let good = echo_server().await;
    let gw = Gateway::start(&format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\
         [listeners.outlier_detection]\nconsecutive_failures = 3\n\
         [[listeners.backends]]\naddress = \"{bad}\"\n[[listeners.backends]]\naddress = \"{good}\"\n"
    ));
    let mut echoed = 0;
    for _ in 0..30 {
        let mut s = tokio::net::TcpStream::connect(gw.addr(0))
            .await
            .expect("connect");
        let _ = s.write_all(b"ping").await;
        let mut buf = [0u8; 4];
        let got =
            tokio::time::timeout(std::time::Duration::from_secs(2), s.read_exact(&mut buf)).await;
        if matches!(got, Ok(Ok(_))) && &buf == b"ping" {
            echoed += 1;
        }
    }
    let reset = resets.load(Ordering::SeqCst);
    assert!(
        reset <= 4,
        "the resetting backend kept getting connections: {reset} of 30"
    );
    assert_eq!(
        echoed + reset,
        30,
        "every other connection was relayed to the good backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_h3_backend_costs_one_connect_timeout_not_a_convoy() {
    use crate::support::h3::H3Backend;
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    let good = H3Backend::start("good", &c).await;
    // A UDP port that answers nothing: a QUIC dial there only times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let hole = silent.local_addr().expect("addr");
    let ca = c.cert_path.display();
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[runtime]\nconnect_timeout_ms = 1000\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{hole}\"\nprotocol = \"h3\"\ntls = true\ntls_ca_path = \"{ca}\"\n\
             [[listeners.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\ntls = true\ntls_ca_path = \"{ca}\"\n",
            good.addr
        ),
    );
    twenty_gets_within(&gw, std::time::Duration::from_millis(3500)).await;
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finding_a_backend_is_bounded_by_the_request_deadline() {
    // Dials may take 10 s each, but the whole request has 1 s.
    let (hole, _fillers) = blackhole_backend();
    let gw = Gateway::start(&format!(
        "[runtime]\nconnect_timeout_ms = 10000\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.http]\ntotal_timeout_ms = 1000\n\
         [[listeners.backends]]\naddress = \"{hole}\"\n"
    ));
    let started = std::time::Instant::now();
    let r = exchange(gw.addr(0), b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let took = started.elapsed();
    assert!(matches!(&r, Ok(r) if r.status == 504), "{}", verdict(&r));
    assert!(
        took < std::time::Duration::from_secs(5),
        "the request waited {took:?} for a 10 s dial under a 1 s deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_backend_goaway_every_50_streams_costs_no_request() {
    use crate::support::h3::H3Backend;
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    let backend = H3Backend::start_goaway_every("recycler", &c, 50).await;
    let ca = c.cert_path.display();
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\ntls = true\ntls_ca_path = \"{ca}\"\n",
            backend.addr
        ),
    );
    let failed = goaway_load(gw.addr(0)).await;
    let hits = backend.hits.load(Ordering::SeqCst);
    eprintln!(
        "h3 goaway: {} of 600 failed, {hits} backend requests, {} connections",
        failed.len(),
        backend.connections.load(Ordering::SeqCst)
    );
    assert!(
        failed.is_empty(),
        "{} of 600 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(hits >= 600, "the backend served {hits}");
    let conns = backend.connections.load(Ordering::SeqCst);
    assert!(conns >= 10, "the backend recycled only {conns} connections");
}
