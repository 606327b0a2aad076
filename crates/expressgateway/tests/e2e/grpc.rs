//! gRPC through the gateway with grpcio on both sides (PyPI `grpcio`,
//! `grpcio-health-checking`; `.ci/run` installs them): the four call
//! kinds through the H2 (`h1s`) front to an h2c backend with trailers and
//! status details intact, the deadline clamp as the backend sees it, the
//! synthesized health check, gateway-made errors as gRPC statuses, long
//! streams past `total_timeout_ms`, silent ones past `body_timeout_ms`
//! (the deadline governs), and `enabled = false`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::h3_thirdparty::{py_dir, python, require_python_modules, run_bounded};
use crate::support::tls::cert;
use crate::support::*;

const MODULES: [&str; 2] = ["grpc", "grpc_health.v1.health"];

/// The grpcio server of `py/grpc_peer.py`; it exits when its stdin closes
/// (dropping this), and is killed as well in case it does not.
pub(crate) struct GrpcServer {
    child: Child,
    pub port: u16,
}

impl GrpcServer {
    pub(crate) fn start() -> Self {
        require_python_modules(&MODULES);
        let mut cmd = python();
        cmd.arg(py_dir().join("grpc_peer.py"))
            .args(["server", "--lifetime", "180"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("python3 runs grpc_peer.py");
        let stdout = child.stdout.take().expect("stdout");
        // The first line, within a bound: a thread reads it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("grpcio server reports its port within 20 s");
        let v: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("grpc_peer.py server printed {line:?} ({e})"));
        let port = v["port"].as_u64().expect("port") as u16;
        Self { child, port }
    }

    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run grpcio client scenarios against the TLS listener on `port`.
pub(crate) async fn grpc_client(
    ca: &std::path::Path,
    port: u16,
    scenarios: &[&str],
) -> serde_json::Value {
    require_python_modules(&MODULES);
    let mut cmd = python();
    cmd.arg(py_dir().join("grpc_peer.py"))
        .arg("client")
        .args(["--port", &port.to_string()])
        .arg("--ca")
        .arg(ca)
        .args(scenarios);
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_bounded(cmd, Duration::from_secs(60)))
            .await
            .expect("join");
    assert!(ok, "grpcio client failed:\n{stderr}\nstdout:\n{stdout}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("grpc client printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

/// An `h1s` listener (HTTP/2 by ALPN) in front of `backend` (h2c), with
/// `extra` appended to the listener.
fn h1s_config(c: &eg_tls::SelfSigned, backend: &str, extra: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1s\"\n\
         [listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n{extra}\n\
         [[listeners.backends]]\naddress = \"{backend}\"\nprotocol = \"h2\"\n",
        c.cert_path.display(),
        c.key_path.display(),
    )
}

fn remaining(v: &serde_json::Value) -> f64 {
    v["seen"]["remaining"]
        .as_f64()
        .unwrap_or_else(|| panic!("backend saw no deadline: {v}"))
}

/// A grpcio server behind one `h1s` listener configured with `extra`.
struct Setup {
    gw: Gateway,
    ca: std::path::PathBuf,
    _server: GrpcServer,
}

impl Setup {
    fn start(extra: &str) -> Self {
        let server = GrpcServer::start();
        let dir = scratch();
        let c = cert(dir.path(), "srv");
        let gw = Gateway::start_in(dir, &h1s_config(&c, &server.addr(), extra));
        Self {
            gw,
            ca: c.cert_path,
            _server: server,
        }
    }

    async fn client(&self, scenarios: &[&str]) -> serde_json::Value {
        grpc_client(&self.ca, self.gw.addr(0).port(), scenarios).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcio_calls_trailers_clamp_and_health_through_the_h2_front() {
    let setup = Setup::start("[listeners.grpc]\nmax_deadline_seconds = 30\n");
    let r = setup.client(&["calls", "deadline", "health"]).await;
    let calls = &r["calls"];
    assert_eq!(calls["unary"]["code"], "OK", "{calls}");
    assert_eq!(calls["unary"]["response"], "hello");
    assert_eq!(calls["unary"]["trailers"]["x-trailer"], "unary-done");
    // A failed call: code, message, custom trailer and status details.
    let fail = &calls["fail"];
    assert_eq!(fail["code"], "NOT_FOUND", "{fail}");
    assert_eq!(fail["details"], "no such thing");
    assert_eq!(fail["trailers"]["x-trailer"], "unary-failed");
    assert_eq!(
        fail["trailers"]["grpc-status-details-bin"], "0805120f7374617475732d64657461696c7321",
        "{fail}"
    );
    let ss = &calls["server_stream"];
    assert_eq!(ss["code"], "OK", "{ss}");
    assert_eq!(
        ss["messages"],
        serde_json::json!(["m0", "m1", "m2", "m3", "m4"])
    );
    assert_eq!(ss["trailers"]["x-trailer"], "stream-done");
    let cs = &calls["client_stream"];
    assert_eq!(cs["response"], "a|b|c", "{cs}");
    assert_eq!(cs["trailers"]["x-trailer"], "client-stream-done");
    let bidi = &calls["bidi"];
    assert_eq!(bidi["messages"], serde_json::json!(["X", "Y"]), "{bidi}");
    assert_eq!(bidi["trailers"]["x-trailer"], "bidi-done");

    // The clamp: no deadline and an hour both reach the backend as at most
    // 30 s; a shorter one passes through. (grpcio's time_remaining() can
    // read a few ms over the deadline it was given: 0.1 s of slack.)
    let d = &r["deadline"];
    for label in ["none", "long"] {
        let left = remaining(&d[label]);
        assert!(left <= 30.1 && left > 20.0, "{label}: {d}");
    }
    let left = remaining(&d["short"]);
    assert!(left <= 2.1 && left > 0.5, "short: {d}");

    // "" is answered by the gateway (the backend itself says NOT_SERVING
    // for ""); named services reach the backend.
    let h = &r["health"];
    assert_eq!(h[""], "SERVING", "{h}");
    assert_eq!(h["test.Echo"], "SERVING", "{h}");
    assert_eq!(h["no.such.Service"], "NOT_FOUND", "{h}");
    drop(setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_made_errors_are_grpc_statuses() {
    require_python_modules(&MODULES);
    let server = GrpcServer::start();
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    // Listener 0: its only backend's port is closed, and an active TCP
    // check marks it down. Listener 1: a live backend, a 1 s clamp and a
    // 1 KiB request body cap. Listener 2: no route for gRPC paths.
    // Listener 3: one request in flight at most. Listener 4: a 1 s clamp
    // before hyper's h2c backend, whose /slow never answers and ignores
    // grpc-timeout (so only the gateway can end the call).
    let down = closed_port();
    let mut config = h1s_config(
        &c,
        &down.to_string(),
        "[listeners.health_check]\nkind = \"tcp\"\ninterval_ms = 100\ntimeout_ms = 100\nfall = 1\nrise = 1\n",
    );
    config.push_str(&h1s_config(
        &c,
        &server.addr(),
        "[listeners.grpc]\nmax_deadline_seconds = 1\n\
         [listeners.http]\nmax_request_body_bytes = 1024\n",
    ));
    config.push_str(&format!(
        "[[clusters]]\nname = \"other\"\n[[clusters.backends]]\naddress = \"{}\"\nprotocol = \"h2\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1s\"\n\
         [listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [[listeners.routes]]\npath_prefix = \"/elsewhere/\"\ncluster = \"other\"\n",
        server.addr(),
        c.cert_path.display(),
        c.key_path.display(),
    ));
    config.push_str(&h1s_config(
        &c,
        &server.addr(),
        "[listeners.http]\nmax_inflight_requests = 1\n",
    ));
    let slow = crate::support::http::HttpBackend::start("slow").await;
    config.push_str(&h1s_config(
        &c,
        &slow.addr.to_string(),
        "[listeners.grpc]\nmax_deadline_seconds = 1\n",
    ));
    let gw = Gateway::start_in(dir, &config);
    // Let the check mark the closed backend down.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = grpc_client(&c.cert_path, gw.addr(0).port(), &["unary", "health"]).await;
    assert_eq!(r["unary"]["code"], "UNAVAILABLE", "{r}");
    assert_eq!(r["unary"]["details"], "no healthy backend available", "{r}");
    assert_eq!(r["health"][""], "NOT_SERVING", "{r}");

    // The gateway's own deadline (the client set none): the backend sleeps
    // 3 s, the clamp is 1 s.
    let r = grpc_client(&c.cert_path, gw.addr(1).port(), &["sleep:3"]).await;
    let s = &r["sleep:3"];
    assert_eq!(s["code"], "DEADLINE_EXCEEDED", "{s}");
    // The same where the backend cannot end it (grpcio's server enforces
    // the grpc-timeout it is sent; hyper's /slow does not): the gateway's
    // own trailers-only answer at the clamp, not a reset.
    let r = grpc_client(&c.cert_path, gw.addr(4).port(), &["raw:/slow"]).await;
    let s = &r["raw:/slow"];
    assert_eq!(s["code"], "DEADLINE_EXCEEDED", "{s}");
    assert_eq!(s["details"], "the backend did not answer in time", "{s}");
    let took = s["seconds"].as_f64().unwrap_or(0.0);
    assert!((0.9..1.9).contains(&took), "{s}");

    // Limits: the request body cap and the in-flight cap are
    // RESOURCE_EXHAUSTED, with the gateway's reason.
    let r = grpc_client(&c.cert_path, gw.addr(1).port(), &["big", "unary"]).await;
    assert_eq!(r["big"]["code"], "RESOURCE_EXHAUSTED", "{r}");
    assert_eq!(
        r["big"]["details"], "request body exceeds the configured limit",
        "{r}"
    );
    assert_eq!(r["unary"]["code"], "OK", "{r}");
    let r = grpc_client(&c.cert_path, gw.addr(3).port(), &["busy"]).await;
    let b = &r["busy"];
    assert_eq!(b["code"], "RESOURCE_EXHAUSTED", "{b}");
    assert_eq!(
        b["details"], "the gateway is at a configured capacity limit; retry later",
        "{b}"
    );
    // The call holding the slot was not disturbed.
    assert_eq!(b["held"]["code"], "OK", "{b}");
    assert_eq!(
        b["held"]["messages"],
        serde_json::json!(["m0", "m1", "m2"]),
        "{b}"
    );

    let r = grpc_client(&c.cert_path, gw.addr(2).port(), &["unary"]).await;
    assert_eq!(r["unary"]["code"], "UNIMPLEMENTED", "{r}");
    assert_eq!(
        r["unary"]["details"], "no route matches this request",
        "{r}"
    );

    // gRPC over HTTP/1.1 is refused: 505 with grpc-status 12.
    let out = std::process::Command::new("curl")
        .args(["-sk", "--http1.1", "-m", "10", "-o", "/dev/null", "-D", "-"])
        .args(["-H", "content-type: application/grpc", "--data-binary", ""])
        .arg(format!(
            "https://127.0.0.1:{}/test.Echo/Unary",
            gw.addr(1).port()
        ))
        .output()
        .expect("curl runs (Debian package curl)");
    let head = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 505"), "{head}");
    assert!(head.contains("grpc-status: 12"), "{head}");
    drop(gw);
    drop(slow);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_server_stream_outlives_total_timeout() {
    // 8 messages 0.4 s apart (~3.2 s) under a 1.5 s total_timeout_ms.
    let setup = Setup::start("[listeners.http]\ntotal_timeout_ms = 1500\n");
    let r = setup.client(&["stream:8:0.4"]).await;
    let s = &r["stream:8:0.4"];
    assert_eq!(s["code"], "OK", "{s}");
    assert_eq!(s["messages"].as_array().map(Vec::len), Some(8), "{s}");
    assert_eq!(s["trailers"]["x-trailer"], "stream-done", "{s}");
    assert!(s["seconds"].as_f64().unwrap_or(0.0) > 1.5, "{s}");
    drop(setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_governed_by_its_deadline_not_body_timeout() {
    // body_timeout_ms 0.5 s, clamp 3 s, no client deadline: 3 messages
    // 0.8 s apart (silent past body_timeout_ms each time, ~2.4 s in all)
    // complete; 5 of them (~4 s) are still ended at the 3 s deadline.
    let setup = Setup::start(
        "[listeners.http]\nbody_timeout_ms = 500\n[listeners.grpc]\nmax_deadline_seconds = 3\n",
    );
    let r = setup.client(&["stream:3:0.8", "stream:5:0.8"]).await;
    let s = &r["stream:3:0.8"];
    assert_eq!(s["code"], "OK", "{s}");
    assert_eq!(s["messages"], serde_json::json!(["m0", "m1", "m2"]), "{s}");
    assert_eq!(s["trailers"]["x-trailer"], "stream-done", "{s}");
    let s = &r["stream:5:0.8"];
    assert_eq!(s["code"], "DEADLINE_EXCEEDED", "{s}");
    let n = s["messages"].as_array().map_or(0, Vec::len);
    assert!((3..5).contains(&n), "{s}");
    let took = s["seconds"].as_f64().unwrap_or(0.0);
    assert!((2.8..4.5).contains(&took), "{s}");
    drop(setup);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_disabled_is_plain_http() {
    let setup = Setup::start("[listeners.grpc]\nenabled = false\n");
    let r = setup.client(&["deadline", "health", "unary"]).await;
    // No clamp: a call without a deadline reaches the backend without one;
    // the backend itself answers for "".
    // (grpcio reports "no deadline" as a remaining time of centuries.)
    assert!(remaining(&r["deadline"]["none"]) > 86_400.0, "{r}");
    assert_eq!(r["health"][""], "NOT_SERVING", "{r}");
    assert_eq!(r["unary"]["code"], "OK", "{r}");
    drop(setup);
}
