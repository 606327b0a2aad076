//! gRPC through the HTTP/3 (`quic`) front: grpcio cannot speak HTTP/3, so
//! aioquic (`py/grpc_h3.py`) sends the gRPC requests; the backend behind
//! it is the grpcio server over h2c.

use std::time::Duration;

use crate::grpc::GrpcServer;
use crate::h3_thirdparty::{py_dir, python, require_python_modules, run_bounded};
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
    let mut cmd = python();
    cmd.arg(py_dir().join("grpc_h3.py"))
        .arg("--ca")
        .arg(&c.cert_path)
        .args(["--port", &gw.addr(0).port().to_string()])
        .args([
            "/test.Echo/Unary:hello:20S",
            "/test.Echo/Unary:fail",
            // 6 messages 0.4 s apart: past total_timeout_ms (1.5 s).
            "/test.Echo/ServerStream:6,0.4",
            "/test.Echo/Deadline::1H",
            "/grpc.health.v1.Health/Check:",
        ]);
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_bounded(cmd, Duration::from_secs(60)))
            .await
            .expect("join");
    assert!(ok, "grpc_h3.py failed:\n{stderr}\n{stdout}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    let calls = report["calls"].as_array().expect("calls");
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
    drop(gw);
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
         [[listeners.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\ntls = true\ntls_ca_path = \"{}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
        backend.addr,
        c.cert_path.display(),
    );
    let gw = Gateway::start_in(dir, &config);
    let r = crate::grpc::grpc_client(&c.cert_path, gw.addr(0).port(), &["echo"]).await;
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
    let (value, unit) = seen.split_at(seen.len().saturating_sub(1));
    let per_ms = match unit {
        "u" => 1_000.0,
        "m" => 1.0,
        "S" => 0.001,
        _ => panic!("grpc-timeout {seen:?} reached the backend: {e}"),
    };
    let ms = value.parse::<f64>().unwrap_or(0.0) / per_ms;
    assert!(ms <= 20_000.0 && ms > 15_000.0, "{e}");
    assert_eq!(e["bidi"], serde_json::json!(["x", "y"]), "{e}");
    drop(gw);
}
