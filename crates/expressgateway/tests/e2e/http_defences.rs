//! HTTP defences of `h1`/`h1s` listeners, exercised with raw bytes where
//! the case is about framing (no client library may tidy the request):
//! smuggling shapes, header-name policy, body caps, error statuses,
//! host/SNI agreement, slow headers and the keep-alive request cap.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::support::http::{client, get, ClientProto, HttpBackend};
use crate::support::raw_h1::*;
use crate::support::raw_h2::*;
use crate::support::tls::{cert, client as tls_client, connect as tls_connect};
use crate::support::*;

// ---------------------------------------------------------------------------
// Setup.

/// One `h1` listener whose default pool is `backend`. `global` goes before
/// the listener (`[runtime]`, `[security]`), `listener` inside it
/// (`[listeners.http]`).
fn config(global: &str, listener: &str, backend: SocketAddr) -> String {
    format!(
        "{global}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n{listener}\n\
         [[listeners.backends]]\naddress = \"{backend}\"\n"
    )
}

async fn start(global: &str, listener: &str) -> (Gateway, HttpBackend) {
    let backend = HttpBackend::start("defended").await;
    let gw = Gateway::start(&config(global, listener, backend.addr));
    (gw, backend)
}

/// A clean request on its own connection reaches the backend: the control
/// that makes "the backend was not hit" meaningful.
async fn assert_control_reaches_backend(gw: &Gateway, backend: &HttpBackend) {
    let before = backend.hits();
    let r = exchange(gw.addr(0), b"GET /control HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let resp = r.unwrap_or_else(|c| panic!("control request cut: {c:?}"));
    assert_eq!(resp.status, 200, "control request: {}", resp.text());
    assert_eq!(resp.text(), "backend defended /control\n");
    assert_eq!(
        backend.hits(),
        before + 1,
        "control request not seen by the backend"
    );
}

/// Send each `(label, raw)` on its own connection; every one must get a
/// 400 and none may reach the backend. Collects all failures first, with
/// what the backend saw and whether the connection stayed open, as
/// evidence.
async fn assert_all_refused_400(gw: &Gateway, backend: &HttpBackend, cases: &[(&str, &[u8])]) {
    let mut failures = Vec::new();
    for (label, raw) in cases {
        let before = backend.hits();
        let mut conn = RawConn::tcp(gw.addr(0)).await;
        let _ = conn.send(raw).await;
        let r = conn.response().await;
        let status = r.as_ref().ok().map(|resp| resp.status);
        let hits = backend.hits() - before;
        if status != Some(400) || hits != 0 {
            let framing = if hits > 0 {
                let seen = backend
                    .seen
                    .last_headers
                    .lock()
                    .expect("lock")
                    .clone()
                    .unwrap_or_default();
                let show = |n: &str| {
                    seen.get_all(n)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect::<Vec<_>>()
                };
                format!(
                    "; backend saw content-length {:?}, transfer-encoding {:?}",
                    show("content-length"),
                    show("transfer-encoding")
                )
            } else {
                String::new()
            };
            let (closed, _) = conn.closes_within(Duration::from_millis(500)).await;
            failures.push(format!(
                "{label}: got {}, backend hits {hits}{framing}; connection closed after: {closed}",
                verdict(&r)
            ));
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Request smuggling shapes (HTTP/1.1).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_te_request_gets_400_and_never_reaches_backend() {
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(
        &gw,
        &backend,
        &[(
            "CL.TE",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        )],
    )
    .await;
    assert_control_reaches_backend(&gw, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_cl_request_gets_400_and_never_reaches_backend() {
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(
        &gw,
        &backend,
        &[(
            "TE.CL",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
        )],
    )
    .await;
    assert_control_reaches_backend(&gw, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_content_length_gets_400() {
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(
        &gw,
        &backend,
        &[
            (
                "duplicate CL, same value",
                b"POST /dup HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
                  Content-Length: 3\r\n\r\nabc",
            ),
            (
                "duplicate CL, different values",
                b"POST /dup HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
                  Content-Length: 5\r\n\r\nabcde",
            ),
        ],
    )
    .await;
    assert_control_reaches_backend(&gw, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_transfer_encoding_gets_400() {
    // strict_te is on by default.
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(
        &gw,
        &backend,
        &[
            (
                "TE: xchunked",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE: chunked, identity",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE: identity, chunked",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "two TE headers (chunked, chunked)",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                  Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "two TE headers (chunked, identity)",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                  Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
            ),
        ],
    )
    .await;
    // A lone, plain `chunked` is fine and reaches the backend intact.
    let before = backend.hits();
    let r = exchange(
        gw.addr(0),
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let resp = r.unwrap_or_else(|c| panic!("plain chunked cut: {c:?}"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
    assert_eq!(backend.hits(), before + 1);
}

// Raw HTTP/2 (helpers in support/raw_h2.rs).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_request_with_connection_specific_headers_is_refused() {
    let (gw, backend) = start("", "").await;
    // Control: the hand-made client works, and a clean request is served.
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    assert_eq!(
        h2.get(1, "/clean", &[]).await,
        H2Answer::Response(Some(200))
    );
    assert_eq!(backend.hits(), 1, "clean h2 request not forwarded");

    let cases: [(&str, &[(&str, &str)]); 3] = [
        ("connection: keep-alive", &[("connection", "keep-alive")]),
        (
            "transfer-encoding: chunked",
            &[("transfer-encoding", "chunked")],
        ),
        ("keep-alive: timeout=5", &[("keep-alive", "timeout=5")]),
    ];
    let mut failures = Vec::new();
    for (label, extra) in cases {
        // Each on its own connection: a refusal may end the connection.
        let mut h2 = H2Raw::connect(gw.addr(0)).await;
        let before = backend.hits();
        let answer = h2.get(1, "/bad", extra).await;
        // RFC 9113 §8.2.2: malformed, a stream error (RST_STREAM
        // PROTOCOL_ERROR = 1); a 400 response is an acceptable refusal too.
        let refused = matches!(answer, H2Answer::Reset(1) | H2Answer::Response(Some(400)));
        let hits = backend.hits() - before;
        if !refused || hits != 0 {
            failures.push(format!("{label}: {answer:?}, backend hits {hits}"));
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Header names with underscores.

const UNDERSCORE_REQUEST: &[u8] = b"GET /u HTTP/1.1\r\nHost: x\r\nx_user: 1\r\nx-ok: 2\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_header_is_rejected_by_default() {
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(&gw, &backend, &[("x_user: 1", UNDERSCORE_REQUEST)]).await;
    assert_control_reaches_backend(&gw, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_header_is_dropped_with_drop_policy() {
    let (gw, backend) = start("[runtime]\nheader_underscore_policy = \"drop\"", "").await;
    let resp = exchange(gw.addr(0), UNDERSCORE_REQUEST)
        .await
        .unwrap_or_else(|c| panic!("cut: {c:?}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(backend.hits(), 1);
    let seen = backend
        .seen
        .last_headers
        .lock()
        .expect("lock")
        .clone()
        .expect("headers recorded");
    assert!(seen.get("x_user").is_none(), "x_user forwarded: {seen:?}");
    assert_eq!(
        seen.get("x-ok").map(|v| v.as_bytes()),
        Some(&b"2"[..]),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_header_is_forwarded_with_allow_policy() {
    let (gw, backend) = start("[runtime]\nheader_underscore_policy = \"allow\"", "").await;
    let resp = exchange(gw.addr(0), UNDERSCORE_REQUEST)
        .await
        .unwrap_or_else(|c| panic!("cut: {c:?}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(backend.hits(), 1);
    let seen = backend
        .seen
        .last_headers
        .lock()
        .expect("lock")
        .clone()
        .expect("headers recorded");
    assert_eq!(
        seen.get("x_user").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("x-ok").map(|v| v.as_bytes()),
        Some(&b"2"[..]),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------
// Request body cap.

const BODY_CAP: &str = "[listeners.http]\nmax_request_body_bytes = 1000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_cap_gets_413_without_reaching_backend() {
    let (gw, backend) = start("", BODY_CAP).await;
    // Head only: the refusal must come from the declared length alone.
    let r = exchange(
        gw.addr(0),
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert_eq!(
        r.as_ref().ok().map(|resp| resp.status),
        Some(413),
        "{}",
        verdict(&r)
    );
    assert_eq!(backend.hits(), 0, "over-cap request reached the backend");

    // Exactly at the cap is fine and echoes intact.
    let body = pattern(1000, 7);
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".to_vec();
    raw.extend_from_slice(&body);
    let resp = exchange(gw.addr(0), &raw)
        .await
        .unwrap_or_else(|c| panic!("at-cap upload cut: {c:?}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, body, "at-cap body changed");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_streaming_past_cap_is_not_delivered_whole() {
    let (gw, _backend) = start("", BODY_CAP).await;
    let chunk = pattern(1000, 3);

    // Control: a chunked upload under the cap echoes back whole.
    let mut small =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    small.extend_from_slice(format!("{:x}\r\n", 600).as_bytes());
    small.extend_from_slice(&chunk[..600]);
    small.extend_from_slice(b"\r\n0\r\n\r\n");
    let resp = exchange(gw.addr(0), &small)
        .await
        .unwrap_or_else(|c| panic!("under-cap chunked upload cut: {c:?}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, chunk[..600].to_vec(), "under-cap echo changed");

    // 8 chunks of 1000 bytes: no Content-Length, so only streaming can
    // notice the cap.
    let total = 8 * chunk.len();
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(gw.addr(0), &raw).await;
    match &r {
        // A complete answer must be a refusal, never a clean echo (of the
        // whole body, or of a silently truncated one).
        Ok(resp) => assert!(
            resp.status == 413 || resp.status >= 500,
            "over-cap chunked upload answered completely: {} with {} of {total} bytes",
            resp.status,
            resp.body.len()
        ),
        // A cut answer must not have carried the whole body back.
        Err(cut) => assert!(
            cut.body_len < total,
            "whole over-cap body echoed before the cut: {cut:?}"
        ),
    }
}

// ---------------------------------------------------------------------------
// Backend failures.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_gets_502() {
    let dead = closed_port();
    let gw = Gateway::start(&config("[runtime]\nconnect_timeout_ms = 1000", "", dead));
    let started = std::time::Instant::now();
    let r = exchange(gw.addr(0), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        r.as_ref().ok().map(|resp| resp.status),
        Some(502),
        "{}",
        verdict(&r)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused dial took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_backend_gets_504_at_head_timeout() {
    let (gw, backend) = start("", "[listeners.http]\nhead_timeout_ms = 300").await;
    let started = std::time::Instant::now();
    let r = exchange(gw.addr(0), b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let elapsed = started.elapsed();
    assert_eq!(
        r.as_ref().ok().map(|resp| resp.status),
        Some(504),
        "{}",
        verdict(&r)
    );
    assert_eq!(
        backend.hits(),
        1,
        "the request should have reached the backend"
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "504 after {elapsed:?}, expected ~300 ms"
    );
}

// ---------------------------------------------------------------------------
// Host must agree with the TLS server name on h1s.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1s_host_not_matching_sni_gets_421() {
    let backend = HttpBackend::start("defended").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1s\"\n\
         [listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
        backend.addr
    );
    let gw = Gateway::start_in(dir, &text);
    let connector = tls_client(&c.cert_pem, &[&rustls::version::TLS13]);

    let mut other = RawConn::new(
        tls_connect(&connector, gw.addr(0))
            .await
            .expect("handshake"),
    );
    other
        .send(b"GET /m HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .await
        .expect("write");
    let r = other.response().await;
    assert_eq!(
        r.as_ref().ok().map(|resp| resp.status),
        Some(421),
        "{}",
        verdict(&r)
    );
    assert_eq!(backend.hits(), 0, "misdirected request reached the backend");

    let mut same = RawConn::new(
        tls_connect(&connector, gw.addr(0))
            .await
            .expect("handshake"),
    );
    same.send(b"GET /m HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let resp = same
        .response()
        .await
        .unwrap_or_else(|c| panic!("cut: {c:?}"));
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "backend defended /m\n")
    );
    assert_eq!(backend.hits(), 1);
}

// ---------------------------------------------------------------------------
// Slow header sender.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_sender_is_cut_at_header_timeout() {
    let (gw, backend) = start("", "[listeners.http]\nheader_timeout_ms = 300").await;
    let mut c = RawConn::tcp(gw.addr(0)).await;
    let started = std::time::Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (closed, got) = c.closes_within(Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert!(
        closed,
        "connection with unfinished headers kept open for 3 s"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "cut after {elapsed:?}, before the 300 ms header timeout"
    );
    // Whatever was said on the way out (nothing, or a 408) is not a 2xx.
    let said = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || said.starts_with("HTTP/1.1 408") || said.starts_with("HTTP/1.1 4"),
        "unexpected answer to a slow header sender: {said:?}"
    );
    assert_eq!(backend.hits(), 0);
}

// ---------------------------------------------------------------------------
// Keep-alive request cap.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_cap_closes_h1_connection_after_third_request() {
    let (gw, backend) = start("[runtime]\nmax_keepalive_requests = 3", "").await;
    let mut conn = RawConn::tcp(gw.addr(0)).await;
    let mut ok = 0;
    for i in 1..=3 {
        let req = format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        conn.send(req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write request {i} on the first connection: {e}"));
        let resp = conn
            .response()
            .await
            .unwrap_or_else(|c| panic!("request {i} on the first connection cut: {c:?}"));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert_eq!(resp.text(), format!("backend defended /k{i}\n"));
        let close = resp
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        assert_eq!(
            close,
            i == 3,
            "request {i}: connection header {:?}",
            resp.header("connection")
        );
        ok += 1;
    }
    let (closed, extra) = conn.closes_within(Duration::from_secs(2)).await;
    assert!(closed, "connection still open after the capped response");
    assert!(extra.is_empty(), "bytes after the last response: {extra:?}");

    let mut conn = RawConn::tcp(gw.addr(0)).await;
    for i in 4..=5 {
        let req = format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        conn.send(req.as_bytes()).await.expect("write");
        let resp = conn
            .response()
            .await
            .unwrap_or_else(|c| panic!("request {i} on the second connection cut: {c:?}"));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert!(resp
            .header("connection")
            .is_none_or(|v| !v.contains("close")));
        ok += 1;
    }
    assert_eq!(ok, 5);
    assert_eq!(backend.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_cap_sends_h2_goaway_after_third_stream() {
    let (gw, backend) = start(
        "",
        "[listeners.h2_security]\nmax_requests_per_connection = 3",
    )
    .await;
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    for (i, stream) in [1u32, 3, 5].into_iter().enumerate() {
        assert!(
            !h2.goaway_seen,
            "GOAWAY before request {} (cap is 3)",
            i + 1
        );
        let answer = h2.get(stream, "/g", &[]).await;
        assert_eq!(answer, H2Answer::Response(Some(200)), "request {}", i + 1);
    }
    // The GOAWAY may have come with the third response; else it follows.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !h2.goaway_seen {
        if let Err(why) = h2.frame(deadline).await {
            panic!("no GOAWAY after the capped stream: {why}");
        }
    }
    // Then the connection ends (we answer its PING, so a graceful close
    // can complete).
    let deadline = Instant::now() + Duration::from_secs(3);
    let ended = loop {
        match h2.frame(deadline).await {
            Ok(_) => {}
            Err(why) => break why,
        }
    };
    assert_ne!(ended, "timed out", "connection not closed after GOAWAY");
    assert_eq!(backend.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_cap_h2c_client_reconnects_after_goaway() {
    let (gw, backend) = start(
        "",
        "[listeners.h2_security]\nmax_requests_per_connection = 3",
    )
    .await;
    let c = client(ClientProto::H2c);
    let mut failures = Vec::new();
    for i in 1..=10 {
        let url = format!("http://{}/r{i}", gw.addr(0));
        match tokio::time::timeout(READ_BOUND, c.request(get(&url))).await {
            Err(_) => failures.push(format!("request {i}: no response in 5 s")),
            Ok(Err(e)) => failures.push(format!("request {i}: {e:?}")),
            Ok(Ok(resp)) => {
                let status = resp.status();
                let version = resp.version();
                let body = tokio::time::timeout(
                    READ_BOUND,
                    http_body_util::BodyExt::collect(resp.into_body()),
                )
                .await;
                match body {
                    Ok(Ok(b)) if status == 200 && version == ::http::Version::HTTP_2 => {
                        let text = String::from_utf8_lossy(&b.to_bytes()).into_owned();
                        if text != format!("backend defended /r{i}\n") {
                            failures.push(format!("request {i}: body {text:?}"));
                        }
                    }
                    other => failures.push(format!(
                        "request {i}: {status} {version:?} body {:?}",
                        other.map(|r| r.map(|b| b.to_bytes()))
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "h2c requests failed under the cap:\n{}",
        failures.join("\n")
    );
    assert_eq!(backend.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_cap_zero_means_unlimited_on_http1() {
    let (gw, backend) = start("[runtime]\nmax_keepalive_requests = 0", "").await;
    let mut conn = RawConn::tcp(gw.addr(0)).await;
    for i in 0..150 {
        conn.send(format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let resp = conn
            .response()
            .await
            .expect("response on the same connection");
        assert_eq!(resp.status, 200, "request {i}");
        assert!(
            resp.header("connection")
                .is_none_or(|v| !v.contains("close")),
            "request {i} closed the connection under an unlimited cap"
        );
    }
    assert_eq!(backend.hits(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_are_capped_by_their_own_key_not_the_http1_one() {
    // The HTTP/1.1 default (100) must not GOAWAY HTTP/2 clients.
    let (gw, backend) = start("", "").await;
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    for i in 0..300u32 {
        let answer = h2.get(1 + 2 * i, "/s", &[]).await;
        assert_eq!(answer, H2Answer::Response(Some(200)), "stream {}", i + 1);
        assert!(!h2.goaway_seen, "GOAWAY after {} streams", i + 1);
    }
    assert_eq!(backend.hits(), 300);
}
