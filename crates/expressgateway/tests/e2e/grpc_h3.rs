//! gRPC over HTTP/3 legs: grpcio cannot speak HTTP/3, so aioquic
//! (`py/grpc_h3.py`) sends the gRPC requests to the `quic` front, to the
//! grpcio server over h2c and to the quinn + h3 origin of `support/h3.rs`;
//! grpcio through the H2 front reaches that h3 origin too. All four call
//! kinds, streams past `total_timeout_ms`.

use std::time::Duration;

use crate::grpc::GrpcServer;
use crate::h3_thirdparty::{py_dir, python, require_python_modules, run_json};
use crate::support::tls::cert;
use crate::support::*;

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_streaming_and_health_through_the_h3_front() {
    require_python_modules(&["aioquic"]);
    let server = GrpcServer::start();
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let config = crate::h3_matrix::quic_listener(&c, &server.addr(), "h2", "").replace(
        "[[listeners.backends]]",
        "[listeners.grpc]\nmax_deadline_seconds = 30\n[[listeners.backends]]",
    ) + "[listeners.http]\ntotal_timeout_ms = 1500\n";
    let gw = Gateway::start_in(dir, &config);
    let calls = grpc_h3(
        &c.cert_path,
        gw.addr(0).port(),
        &[
            "/test.Echo/Unary:hello:20S",
            "/test.Echo/Unary:fail",
            // 6 messages 0.4 s apart: past total_timeout_ms (1.5 s).
            "/test.Echo/ServerStream:6,0.4",
            "/test.Echo/Deadline::1H",
            "/grpc.health.v1.Health/Check:",
            "/test.Echo/ClientStream:a|b|c:20S",
            "/test.Echo/Bidi:>x|y:20S",
        ],
    )
    .await;
    let unary = &calls[0];
    assert_eq!(unary["status"], 200, "{unary}");
    assert_eq!(unary["headers"]["content-type"], "application/grpc");
    assert_eq!(unary["messages"], serde_json::json!([hex("hello")]));
    assert_eq!(unary["trailers"]["grpc-status"], "0", "{unary}");
    assert_eq!(unary["trailers"]["x-trailer"], "unary-done");
    // A failed unary call is trailers-only from grpcio: status, message,
    // details and custom metadata in the one header block.
    let fail = &calls[1];
    let block = if fail["trailers"]["grpc-status"].is_null() {
        &fail["headers"]
    } else {
        &fail["trailers"]
    };
    assert_eq!(block["grpc-status"], "5", "{fail}");
    assert_eq!(block["grpc-message"], "no such thing", "{fail}");
    assert_eq!(block["x-trailer"], "unary-failed", "{fail}");
    assert!(!block["grpc-status-details-bin"].is_null(), "{fail}");
    let stream = &calls[2];
    let want: Vec<String> = (0..6).map(|i| hex(&format!("m{i}"))).collect();
    assert_eq!(stream["messages"], serde_json::json!(want), "{stream}");
    assert_eq!(stream["trailers"]["grpc-status"], "0", "{stream}");
    assert_eq!(stream["trailers"]["x-trailer"], "stream-done");
    // The clamp: the backend saw at most 30 s of an hour.
    let seen = calls[3]["messages"][0].as_str().unwrap_or_default();
    let seen = (0..seen.len() / 2)
        .filter_map(|i| u8::from_str_radix(seen.get(i * 2..i * 2 + 2)?, 16).ok())
        .collect::<Vec<u8>>();
    let seen: serde_json::Value = serde_json::from_slice(&seen).expect("deadline JSON");
    let left = seen["remaining"].as_f64().unwrap_or(f64::MAX);
    assert!(left <= 30.1 && left > 20.0, "{seen}");
    // Local health for "": SERVING (the backend itself says NOT_SERVING).
    let health = &calls[4];
    assert_eq!(health["messages"], serde_json::json!(["0801"]), "{health}");
    assert_eq!(health["trailers"]["grpc-status"], "0", "{health}");
    // Client streaming: three messages, one answer.
    let cs = &calls[5];
    assert_eq!(cs["messages"], serde_json::json!([hex("a|b|c")]), "{cs}");
    assert_eq!(cs["trailers"]["grpc-status"], "0", "{cs}");
    assert_eq!(cs["trailers"]["x-trailer"], "client-stream-done", "{cs}");
    // Bidi, interleaved: each message sent only after the previous answer.
    let bidi = &calls[6];
    assert_eq!(
        bidi["messages"],
        serde_json::json!([hex("X"), hex("Y")]),
        "{bidi}"
    );
    assert_eq!(bidi["trailers"]["grpc-status"], "0", "{bidi}");
    assert_eq!(bidi["trailers"]["x-trailer"], "bidi-done", "{bidi}");
    drop(gw);
}

/// `py/grpc_h3.py` against the quic listener on `port`: its calls.
async fn grpc_h3(ca: &std::path::Path, port: u16, calls: &[&str]) -> Vec<serde_json::Value> {
    require_python_modules(&["aioquic"]);
    let mut cmd = python();
    cmd.arg(py_dir().join("grpc_h3.py"))
        .arg("--ca")
        .arg(ca)
        .args(["--port", &port.to_string()])
        .args(calls);
    let report = run_json(cmd, "grpc_h3.py", Duration::from_secs(60)).await;
    report["calls"].as_array().cloned().expect("calls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_h3_front_to_an_h3_backend_all_four_kinds() {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let backend = crate::support::h3::H3Backend::start("q", &c).await;
    let config = crate::h3_matrix::quic_listener(&c, &backend.addr.to_string(), "h3", "").replace(
        "[[listeners.backends]]",
        "[listeners.grpc]\nmax_deadline_seconds = 30\n\
             [listeners.http]\ntotal_timeout_ms = 1500\n[[listeners.backends]]",
    );
    let gw = Gateway::start_in(dir, &config);
    let calls = grpc_h3(
        &c.cert_path,
        gw.addr(0).port(),
        &[
            "/test.Echo/Unary:hello:20S",
            "/test.Echo/ClientStream:a|b|c",
            "/test.Echo/Bidi:>x|y",
            // 6 messages 0.4 s apart: past total_timeout_ms (1.5 s).
            "/test.Echo/ServerStream:6,0.4",
        ],
    )
    .await;
    let want = [
        vec![hex("hello")],
        vec![hex("a|b|c")],
        vec![hex("x"), hex("y")],
        (0..6).map(|i| hex(&format!("m{i}"))).collect(),
    ];
    for (call, want) in calls.iter().zip(want) {
        assert_eq!(call["status"], 200, "{call}");
        assert_eq!(call["messages"], serde_json::json!(want), "{call}");
        assert_eq!(call["trailers"]["grpc-status"], "0", "{call}");
        assert_eq!(call["trailers"]["x-trailer"], "h3-echo", "{call}");
        assert_eq!(
            call["trailers"]["grpc-status-details-bin"], "CAASBmgzLWVjaG8",
            "{call}"
        );
    }
    assert_eq!(calls.len(), 4);
    // The client's 20 s passed on (at most 20 s, under the 30 s clamp);
    // a call without one gets the clamp.
    let seen = |i: usize| calls[i]["headers"]["x-seen-grpc-timeout"].clone();
    let ms = |v: serde_json::Value| grpc_timeout_ms(v.as_str().unwrap_or_default());
    assert!((15_000.0..=20_000.0).contains(&ms(seen(0))), "{}", calls[0]);
    assert!((20_000.0..=30_000.0).contains(&ms(seen(1))), "{}", calls[1]);
    drop(gw);
}

/// A `grpc-timeout` value in milliseconds (panics on a unit the gateway
/// does not write).
fn grpc_timeout_ms(seen: &str) -> f64 {
    let (value, unit) = seen.split_at(seen.len().saturating_sub(1));
    let per_ms = match unit {
        "n" => 1_000_000.0,
        "u" => 1_000.0,
        "m" => 1.0,
        "S" => 0.001,
        _ => panic!("grpc-timeout {seen:?} reached the backend"),
    };
    value.parse::<f64>().unwrap_or(0.0) / per_ms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_through_the_h2_front_to_an_h3_backend() {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let backend = crate::support::h3::H3Backend::start("q", &c).await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1s\"\n\
         [listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [listeners.grpc]\nmax_deadline_seconds = 30\n\
         [listeners.http]\ntotal_timeout_ms = 1500\n\
         [[listeners.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\ntls = true\ntls_ca_path = \"{}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
        backend.addr,
        c.cert_path.display(),
    );
    let gw = Gateway::start_in(dir, &config);
    let r = crate::grpc::grpc_client(
        &c.cert_path,
        gw.addr(0).port(),
        &["echo", "client_stream", "stream:8:0.4"],
    )
    .await;
    let e = &r["echo"];
    assert_eq!(e["code"], "OK", "{e}");
    assert_eq!(e["response"], "hello", "{e}");
    assert_eq!(e["trailers"]["x-trailer"], "h3-echo", "{e}");
    assert_eq!(
        e["trailers"]["grpc-status-details-bin"], "0800120668332d6563686f",
        "{e}"
    );
    // The client asked for 20 s: under the 30 s clamp, passed on.
    let seen = e["initial"]["x-seen-grpc-timeout"]
        .as_str()
        .unwrap_or_default();
    let ms = grpc_timeout_ms(seen);
    assert!(ms <= 20_000.0 && ms > 15_000.0, "{e}");
    assert_eq!(e["bidi"], serde_json::json!(["x", "y"]), "{e}");
    let cs = &r["client_stream"];
    assert_eq!(
        (&cs["code"], &cs["response"]),
        (&"OK".into(), &"a|b|c".into()),
        "{cs}"
    );
    assert_eq!(cs["trailers"]["x-trailer"], "h3-echo", "{cs}");
    // 8 messages 0.4 s apart (~3.2 s) under a 1.5 s total_timeout_ms.
    let s = &r["stream:8:0.4"];
    assert_eq!(s["code"], "OK", "{s}");
    let want: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    assert_eq!(s["messages"], serde_json::json!(want), "{s}");
    assert_eq!(s["trailers"]["x-trailer"], "h3-echo", "{s}");
    assert!(s["seconds"].as_f64().unwrap_or(0.0) > 1.5, "{s}");
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_made_errors_are_grpc_statuses_on_the_h3_front() {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let backend = crate::support::h3::H3Backend::start("q", &c).await;
    let down = closed_port();
    // Listener 0: its backend's port is closed. Listener 1: a live h3
    // backend and a 64-byte request body cap.
    let config = crate::h3_matrix::quic_listener(&c, &down.to_string(), "h2", "")
        + &crate::h3_matrix::quic_listener(&c, &backend.addr.to_string(), "h3", "").replace(
            "[[listeners.backends]]",
            "[listeners.http]\nmax_request_body_bytes = 64\n[[listeners.backends]]",
        );
    let gw = Gateway::start_in(dir, &config);
    // Trailers-only: HTTP 200, the status in the one header block.
    let status_of = |call: &serde_json::Value| {
        assert_eq!(call["status"], 200, "{call}");
        assert_eq!(
            call["headers"]["content-type"], "application/grpc",
            "{call}"
        );
        (
            call["headers"]["grpc-status"].clone(),
            call["headers"]["grpc-message"].clone(),
        )
    };
    let calls = grpc_h3(&c.cert_path, gw.addr(0).port(), &["/test.Echo/Unary:hello"]).await;
    assert_eq!(
        status_of(&calls[0]),
        ("14".into(), "could not connect to a backend".into())
    );
    // ClientStream: the origin reads the whole request before it answers,
    // so the cap trips before any answer: trailers-only.
    let big = format!("/test.Echo/ClientStream:{}", "x".repeat(200));
    let calls = grpc_h3(
        &c.cert_path,
        gw.addr(1).port(),
        &[&big, "/test.Echo/Unary:ok"],
    )
    .await;
    assert_eq!(
        status_of(&calls[0]),
        (
            "8".into(),
            "request body exceeds the configured limit".into()
        )
    );
    assert_eq!(calls[1]["trailers"]["grpc-status"], "0", "{}", calls[1]);
    // The cap tripping after the answer began (bidi: the second, 200-byte
    // message is sent only once the first came back): the backend's stream
    // is cut, and the client hears RESOURCE_EXHAUSTED in the trailers, not
    // a stream that ends without a grpc-status.
    let late = format!("/test.Echo/Bidi:>small|{}", "x".repeat(200));
    let calls = grpc_h3(&c.cert_path, gw.addr(1).port(), &[&late]).await;
    let call = &calls[0];
    assert_eq!(
        call["messages"],
        serde_json::json!([hex("small")]),
        "{call}"
    );
    assert_eq!(call["trailers"]["grpc-status"], "8", "{call}");
    assert_eq!(
        call["trailers"]["grpc-message"], "request body exceeds the configured limit",
        "{call}"
    );
    drop(gw);
}
