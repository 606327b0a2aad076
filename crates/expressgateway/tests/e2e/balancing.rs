//! The balancer through the real binary: weights, passive ejection and
//! readmission under load, active checks, peak EWMA, slow start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::StatusCode;
use tokio::net::TcpListener;

use crate::support::http::{client, get, send, ClientProto, HttpBackend, TestClient};
use crate::support::*;

fn config(policy: &str, backends: &[(&HttpBackend, u32)], extra: &str) -> String {
    let mut text = format!("[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\nlb_policy = \"{policy}\"\n{extra}\n");
    for (b, w) in backends {
        text.push_str(&format!(
            "[[listeners.backends]]\naddress = \"{}\"\nweight = {w}\n",
            b.addr
        ));
    }
    text
}

/// Send `n` GETs, `concurrency` at a time; count answers per backend name.
async fn spread(
    cl: &TestClient,
    url: &str,
    n: usize,
    concurrency: usize,
) -> HashMap<String, usize> {
    let counts = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (cl, url, counts, next) = (
            cl.clone(),
            url.to_owned(),
            Arc::clone(&counts),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::SeqCst) < n {
                let r = send(&cl, get(&url)).await;
                assert_eq!(r.status, StatusCode::OK, "request failed: {:?}", r.body);
                let name = r
                    .headers
                    .get("x-backend")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?")
                    .to_owned();
                *counts.lock().expect("lock").entry(name).or_insert(0) += 1;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let out = counts.lock().expect("lock").clone();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_1_to_3_are_observed_over_4000_requests() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    for policy in ["weighted_round_robin", "round_robin", "weighted_random"] {
        let gw = Gateway::start(&config(policy, &[(&a, 1), (&b, 3)], ""));
        let counts = spread(
            &client(ClientProto::H1),
            &format!("http://{}/w", gw.addr(0)),
            4000,
            8,
        )
        .await;
        let share_b = *counts.get("b").unwrap_or(&0) as f64 / 4000.0;
        assert!(
            (share_b - 0.75).abs() < 0.03,
            "{policy}: b got {share_b:.3} of requests, want 0.75: {counts:?}"
        );
    }
}

/// Bind `at` again once its previous owner's task has let go of it.
pub async fn rebind(at: std::net::SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(at).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{at} still in use after 1 s");
}

/// Accepts and drops every connection, counting them: a backend that is
/// up at the TCP level but resets every exchange.
async fn resetter(at: std::net::SocketAddr) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let listener = rebind(at).await;
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(s);
        }
    });
    (count, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_is_retried_around_ejected_and_readmitted() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let extra =
        "[listeners.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_ms = 1500\n";
    let gw = Gateway::start(&config("round_robin", &[(&a, 1), (&b, 1)], extra));
    let url = format!("http://{}/k", gw.addr(0));
    let cl = client(ClientProto::H1);
    let before = spread(&cl, &url, 100, 4).await;
    assert!(
        before.get("a").is_some_and(|&n| n > 30),
        "a served before the kill: {before:?}"
    );

    // Kill a: its pooled connections die, and every new exchange resets.
    let a_addr = a.kill();
    let (attempts, task) = resetter(a_addr).await;
    // Every request still succeeds (idempotent GETs are retried on b) ...
    let during = spread(&cl, &url, 200, 4).await;
    assert_eq!(
        during.get("b").copied(),
        Some(200),
        "all answered by b: {during:?}"
    );
    // ... and a is ejected within a few failures, not probed per request.
    let probes = attempts.load(Ordering::SeqCst);
    assert!(
        probes <= 6,
        "ejection should stop traffic to a after ~3 failures; it saw {probes} connections"
    );

    // a comes back; after the ejection window it is readmitted.
    task.abort();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a2 = HttpBackend::start_on(a_addr, "a", None).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a2.hits() == 0 && Instant::now() < deadline {
        let r = send(&cl, get(&url)).await;
        assert_eq!(r.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a2.hits() > 0, "a never readmitted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_http_check_ejects_a_backend_answering_500() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let extra = "[listeners.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 100\ntimeout_ms = 100\nrise = 2\nfall = 2\n";
    let gw = Gateway::start(&config("round_robin", &[(&a, 1), (&b, 1)], extra));
    let url = format!("http://{}/h", gw.addr(0));
    let cl = client(ClientProto::H1);
    b.seen.health_status.store(500, Ordering::SeqCst);
    // Checks run every ~100 ms; two failures take b out.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let out = spread(&cl, &url, 100, 2).await;
    assert_eq!(
        out.get("a").copied(),
        Some(100),
        "b still served while failing its check: {out:?}"
    );
    b.seen.health_status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let back = spread(&cl, &url, 100, 2).await;
    assert!(
        back.get("b").is_some_and(|&n| n >= 30),
        "b not back after passing checks: {back:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_shifts_load_from_a_slower_backend() {
    let fast = HttpBackend::start("fast").await;
    let slow = HttpBackend::start("slow").await;
    slow.seen.delay_ms.store(50, Ordering::SeqCst);
    let gw = Gateway::start(&config("peak_ewma", &[(&fast, 1), (&slow, 1)], ""));
    let out = spread(
        &client(ClientProto::H1),
        &format!("http://{}/e", gw.addr(0)),
        400,
        4,
    )
    .await;
    let slow_share = *out.get("slow").unwrap_or(&0) as f64 / 400.0;
    assert!(
        slow_share < 0.15,
        "slow backend still got {slow_share:.2}: {out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_start_ramps_a_returning_backend() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let extra = "[listeners.slow_start]\nwindow_ms = 4000\n[listeners.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 1\n";
    let gw = Gateway::start(&config("round_robin", &[(&a, 1), (&b, 1)], extra));
    let url = format!("http://{}/s", gw.addr(0));
    let cl = client(ClientProto::H1);
    b.seen.health_status.store(500, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.seen.health_status.store(200, Ordering::SeqCst);
    // Wait until b is readmitted (first request reaching it).
    let base = b.hits();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.hits() == base && Instant::now() < deadline {
        let _ = send(&cl, get(&url)).await;
    }
    let early = spread(&cl, &url, 200, 2).await;
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let settled = spread(&cl, &url, 200, 2).await;
    let share = |m: &HashMap<String, usize>| *m.get("b").unwrap_or(&0) as f64 / 200.0;
    assert!(
        share(&early) < 0.35,
        "b not ramping: early share {:.2}",
        share(&early)
    );
    assert!(
        (share(&settled) - 0.5).abs() < 0.1,
        "b not at full weight after the window: {:.2}",
        share(&settled)
    );
    assert!(share(&early) < share(&settled));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_healthy_backend_answers_503() {
    let a = HttpBackend::start("a").await;
    let extra = "[listeners.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 100\ntimeout_ms = 100\nrise = 1\nfall = 1\n";
    let gw = Gateway::start(&config("round_robin", &[(&a, 1)], extra));
    a.seen.health_status.store(503, Ordering::SeqCst);
    let url = format!("http://{}/x", gw.addr(0));
    let cl = client(ClientProto::H1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut status = StatusCode::OK;
    while Instant::now() < deadline {
        status = send(&cl, get(&url)).await.status;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "every backend down must answer 503"
    );
}

/// `ring_hash` gives each backend ring points in exact proportion to its
/// weight (2:3:5 was 1:1:2 once: weights divided by the smallest, in
/// integers): over 4000 distinct keys (a header), each share is within 5
/// points of its weight's, and one key always lands on one backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_2_3_5_shares_follow_the_weights() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let c = HttpBackend::start("c").await;
    let gw = Gateway::start(&config(
        "ring_hash",
        &[(&a, 2), (&b, 3), (&c, 5)],
        "hash_key = { source = \"header\", name = \"x-user\" }",
    ));
    let cl = client(ClientProto::H1);
    let url = format!("http://{}/ring", gw.addr(0));
    const KEYS: usize = 4000;
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (next, cl, url) = (Arc::clone(&next), cl.clone(), url.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= KEYS {
                        return seen;
                    }
                    seen.push(ring_backend(&cl, &url, format!("user-{i}")).await);
                }
            })
        })
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for name in t.await.expect("task") {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    eprintln!("ring_hash 2:3:5 over {KEYS} keys: {counts:?}");
    for (name, weight) in [("a", 2.0), ("b", 3.0), ("c", 5.0)] {
        let share = *counts.get(name).unwrap_or(&0) as f64 / KEYS as f64;
        assert!(
            (share - weight / 10.0).abs() < 0.05,
            "{name} got {share:.3} of {KEYS} keys, want {:.1}: {counts:?}",
            weight / 10.0
        );
    }
    // 2:3 stays 2:3 (integer division by the smallest made it 1:1, which
    // the 5-point band alone would miss about half the time).
    let (na, nb) = (counts.get("a").copied(), counts.get("b").copied());
    let ratio = nb.unwrap_or(0) as f64 / na.unwrap_or(1).max(1) as f64;
    assert!(
        (1.25..1.8).contains(&ratio),
        "b:a = {ratio:.2}, want 1.5: {counts:?}"
    );
    // Consistent: the same key again goes where it went.
    let first = ring_backend(&cl, &url, "user-7".to_owned()).await;
    for _ in 0..5 {
        assert_eq!(ring_backend(&cl, &url, "user-7".to_owned()).await, first);
    }
}

/// The backend that answered a GET carrying `x-user: user`.
async fn ring_backend(cl: &TestClient, url: &str, user: String) -> String {
    let req = ::http::Request::get(url)
        .header("x-user", user)
        .body(crate::support::http::text(""))
        .expect("request");
    let r = send(cl, req).await;
    assert_eq!(r.status, StatusCode::OK);
    r.headers
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_owned()
}
