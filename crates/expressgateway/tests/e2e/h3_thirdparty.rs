//! Third-party HTTP/3 peers: aioquic's HTTP/3 client drives the `quic`
//! listener, and hypercorn (HTTP/3 over aioquic) serves as an `h3` backend.
//! The Python side lives in `tests/e2e/py/`; `.ci/run` installs it
//! (`python3 -m pip install aioquic 'hypercorn[h3]'`). A missing tool fails
//! the test with its name, never skips it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ::http::{Request, StatusCode};

use crate::support::http::{bytes_body, client, get, send, ClientProto, HttpBackend};
use crate::support::tls::cert;
use crate::support::*;

const PYTHON: &str = "python3";
const INSTALL: &str = "python3 -m pip install aioquic 'hypercorn[h3]' (.ci/run does this)";

pub(crate) fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/py")
}

/// A `python3` command that leaves no `__pycache__` in the source tree.
pub(crate) fn python() -> Command {
    let mut cmd = Command::new(PYTHON);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null());
    cmd
}

/// Fail (not skip) with the missing tool's name unless `python3` can
/// import every one of `modules`.
pub(crate) fn require_python_modules(modules: &[&str]) {
    for module in modules {
        let out = python()
            .args(["-c", &format!("import {module}")])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{PYTHON} is required for the third-party HTTP/3 tests but could not be \
                     run ({e}); install Debian package `python3` (and `python3-pip`), then {INSTALL}"
                )
            });
        assert!(
            out.status.success(),
            "Python package `{module}` is missing for {PYTHON}: install it with {INSTALL}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Pipe `from` into a shared string on a thread; the thread ends at EOF.
fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let into = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&into);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = sink.lock() {
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    });
    into
}

fn text_of(m: &Arc<Mutex<String>>) -> String {
    m.lock().map(|s| s.clone()).unwrap_or_default()
}

/// A child process killed (and reaped) on drop.
pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `cmd` to completion within `limit`; returns (success, stdout,
/// stderr). Killed on timeout (the test then fails with its stderr).
pub(crate) fn run_bounded(mut cmd: Command, limit: Duration) -> (bool, String, String) {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{PYTHON} could not be run ({e}); {INSTALL}"));
    let mut child = Killed(child);
    let out = collect(child.0.stdout.take().expect("stdout"));
    let err = collect(child.0.stderr.take().expect("stderr"));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{cmd:?} did not finish within {limit:?}; stderr:\n{}",
            text_of(&err)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The pipes are closed; give the reader threads a moment to drain.
    let drained = Instant::now() + Duration::from_secs(2);
    while Instant::now() < drained && (Arc::strong_count(&out) > 1 || Arc::strong_count(&err) > 1) {
        std::thread::sleep(Duration::from_millis(5));
    }
    (status.success(), text_of(&out), text_of(&err))
}

/// Run `py/h3_client.py` (aioquic) against `port` trusting `ca`; returns
/// its JSON report.
pub(crate) async fn aioquic_client(ca: &Path, port: u16, requests: &[&str]) -> serde_json::Value {
    let mut cmd = python();
    cmd.arg(py_dir().join("h3_client.py"))
        .arg("--ca")
        .arg(ca)
        .args(["--port", &port.to_string(), "--timeout", "8"])
        .args(requests);
    run_json(cmd, "aioquic HTTP/3 client", Duration::from_secs(10)).await
}

/// Run a peer that prints one JSON report, within `limit`; fails with its
/// output unless it succeeds.
pub(crate) async fn run_json(cmd: Command, what: &str, limit: Duration) -> serde_json::Value {
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || run_bounded(cmd, limit))
        .await
        .expect("join");
    assert!(ok, "{what} failed:\n{stderr}\nstdout:\n{stdout}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what} printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_client_drives_the_quic_listener() {
    require_python_modules(&["aioquic"]);
    let backend = HttpBackend::start("pyq").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &c.cert_pem).expect("write ca");
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n[listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
        backend.addr
    );
    let gw = Gateway::start_in(dir, &config);
    let port = gw.addr(0).port();
    // One QUIC connection, four concurrent requests: two GETs, a 1 MiB
    // upload echoed back, and a small one.
    let size = 1 << 20;
    let report = aioquic_client(
        &ca,
        port,
        &[
            "GET:/hello",
            "GET:/deeper/path",
            &format!("POST:/echo:{size}"),
            "POST:/echo:5",
        ],
    )
    .await;
    assert_eq!(report["alpn"], "h3", "negotiated ALPN: {report}");
    let responses = report["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 4, "{report}");
    for r in responses {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["headers"]["x-backend"], "pyq", "{r}");
    }
    assert_eq!(responses[0]["body"], "backend pyq /hello\n");
    assert_eq!(responses[1]["body"], "backend pyq /deeper/path\n");
    for (r, len) in [(&responses[2], size), (&responses[3], 5)] {
        assert_eq!(r["sent_len"], len, "{r}");
        assert_eq!(r["body_len"], len, "echo length: {r}");
        assert_eq!(r["body_sha256"], r["sent_sha256"], "echo checksum: {r}");
        assert_eq!(r["checksum_ok"], true, "{r}");
    }
    assert!(
        backend.hits() >= 4,
        "backend saw {} requests",
        backend.hits()
    );
    drop(gw);
}

/// hypercorn serving `py/hypercorn_app.py` over HTTP/3 (and, as hypercorn
/// insists on one, HTTPS on a TCP port nobody uses).
pub(crate) struct Hypercorn {
    _child: Killed,
    pub(crate) quic_port: u16,
    log: Arc<Mutex<String>>,
}

/// How long hypercorn may take to report its QUIC socket.
const HYPERCORN_READY: Duration = Duration::from_secs(10);

impl Hypercorn {
    pub(crate) fn start(c: &eg_tls::SelfSigned) -> Self {
        // Port 0 on both binds: hypercorn reports the ports it got, so
        // there is no window for another process to take them.
        let mut cmd =
            hypercorn_command(c, &["--bind", "127.0.0.1:0", "--quic-bind", "127.0.0.1:0"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = Killed(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("{PYTHON} could not be run ({e}); {INSTALL}")),
        );
        let stderr = child.0.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        // Drain stderr for hypercorn's whole life (a full pipe would stall
        // it), keeping the text for failure messages.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + HYPERCORN_READY;
        // hypercorn logs "Running on https://127.0.0.1:PORT (QUIC) ..." once
        // its UDP socket is serving.
        let quic_port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(port) = quic_port_of(&line) {
                        break port;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.0.wait().ok();
                    panic!(
                        "hypercorn exited ({status:?}) before serving QUIC; {INSTALL}\n{}",
                        text_of(&log)
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "hypercorn did not serve QUIC within {HYPERCORN_READY:?}:\n{}",
                    text_of(&log)
                ),
            }
        };
        Self {
            _child: child,
            quic_port,
            log,
        }
    }

    pub(crate) fn log(&self) -> String {
        text_of(&self.log)
    }
}

/// hypercorn serving `py/hypercorn_app.py` over TLS on `binds`.
/// `--workers 0` serves in this very process, so killing it ends
/// everything.
pub(crate) fn hypercorn_command(c: &eg_tls::SelfSigned, binds: &[&str]) -> Command {
    let app = format!("{}:app", py_dir().join("hypercorn_app").display());
    let mut cmd = python();
    cmd.args(["-m", "hypercorn", "--workers", "0", "--log-level", "info"])
        .arg("--certfile")
        .arg(&c.cert_path)
        .arg("--keyfile")
        .arg(&c.key_path)
        .args(binds)
        .arg(&app);
    cmd
}

fn quic_port_of(line: &str) -> Option<u16> {
    if !line.contains("(QUIC)") {
        return None;
    }
    let url = line.split("https://").nth(1)?;
    let authority = url.split_whitespace().next()?;
    authority.rsplit_once(':')?.1.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hypercorn_is_an_h3_backend_behind_h1_and_h2c() {
    require_python_modules(&["aioquic", "hypercorn"]);
    let dir = scratch();
    let c = cert(dir.path(), "hypercorn");
    let hypercorn = Hypercorn::start(&c);
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"127.0.0.1:{}\"\nprotocol = \"h3\"\ntls_ca_path = \"{}\"\n",
        hypercorn.quic_port,
        c.cert_path.display()
    );
    let gw = Gateway::start_in(dir, &config);
    let base = format!("http://{}", gw.addr(0));
    for (i, proto) in [ClientProto::H1, ClientProto::H2c].into_iter().enumerate() {
        let cl = client(proto);
        let r = send(&cl, get(&format!("{base}/hello/{proto:?}"))).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{proto:?}: {:?}\nhypercorn log:\n{}",
            r.body,
            hypercorn.log()
        );
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("hypercorn /hello/{proto:?}")
        );
        let header = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("x-backend").as_deref(), Some("hypercorn"));
        // hypercorn says which HTTP version it served: the hop is HTTP/3.
        assert_eq!(header("x-http-version").as_deref(), Some("3"));

        let data = pattern(256 << 10, 40 + i as u64);
        let req = Request::post(format!("{base}/upload"))
            .body(bytes_body(data.clone()))
            .expect("request");
        let r = send(&cl, req).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{proto:?} POST: {:?}\nhypercorn log:\n{}",
            String::from_utf8_lossy(&r.body),
            hypercorn.log()
        );
        assert_eq!(r.body.len(), data.len(), "{proto:?} echo length");
        assert_eq!(sha256(&r.body), sha256(&data), "{proto:?} echo checksum");
    }
    drop(gw);
    drop(hypercorn);
}

#[test]
fn quic_port_is_read_from_hypercorns_log() {
    let line = "[2026-01-01 00:00:00 +0000] [1] [INFO] Running on https://127.0.0.1:54919 (QUIC) (CTRL + C to quit)";
    assert_eq!(quic_port_of(line), Some(54919));
    let tcp = "[2026-01-01 00:00:00 +0000] [1] [INFO] Running on https://127.0.0.1:35371 (CTRL + C to quit)";
    assert_eq!(quic_port_of(tcp), None);
}

/// An upload the gateway answers before reading it (no route: 404; a
/// declared length over the cap: 413) is stopped with H3_NO_ERROR (RFC 9114
/// §4.1), not quinn's code 0, which curl reports as a reset of the exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answer_stops_the_upload_with_h3_no_error() {
    require_python_modules(&["aioquic"]);
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let api = HttpBackend::start("api").await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [listeners.http]\nmax_request_body_bytes = 1000\n\
         [[listeners.routes]]\npath_prefix = \"/api/\"\ncluster = \"api\"\n\
         [[clusters]]\nname = \"api\"\n[[clusters.backends]]\naddress = \"{}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
        api.addr
    );
    let gw = Gateway::start_in(dir, &config);
    let mut cmd = python();
    cmd.arg(py_dir().join("h3_stop_sending.py"))
        .arg("--ca")
        .arg(&c.cert_path)
        .args(["--port", &gw.addr(0).port().to_string()])
        .args(["POST:/api/big:100000:500", "POST:/elsewhere:900:100"]);
    let report = run_json(cmd, "aioquic STOP_SENDING probe", Duration::from_secs(15)).await;
    let responses = report["responses"].as_array().expect("responses");
    let got: Vec<_> = responses
        .iter()
        .map(|r| (r["status"].as_u64(), r["stop_sending"].as_u64()))
        .collect();
    assert_eq!(
        got,
        [(Some(413), Some(0x100)), (Some(404), Some(0x100))],
        "(status, STOP_SENDING code) per upload: {report}\n{}",
        gw.stderr()
    );
    for r in responses {
        assert!(r["reset"].is_null(), "the response was reset: {r}");
    }
}

/// aioquic (a stack independent of ours and of curl's) through the `quic`
/// listener to each backend protocol, on one connection: a GET, a 1 MiB
/// upload echoed back, a response with trailers, 50 streams at once.
async fn aioquic_cell(up: &str) {
    require_python_modules(&["aioquic"]);
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let (addr, _h, _q) = crate::h3_matrix::backend_for(up, &c).await;
    let gw = Gateway::start_in(dir, &crate::h3_matrix::quic_listener(&c, &addr, up, ""));
    let mut requests = vec![
        "GET:/hello".to_owned(),
        format!("POST:/echo:{}", 1 << 20),
        "GET:/trailers".to_owned(),
    ];
    requests.extend((0..50).map(|i| format!("GET:/c/{i}")));
    let refs: Vec<&str> = requests.iter().map(String::as_str).collect();
    let report = aioquic_client(&c.cert_path, gw.addr(0).port(), &refs).await;
    assert_eq!(report["alpn"], "h3", "{up}");
    let responses = report["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), requests.len(), "{up}");
    for r in responses {
        let path = r["path"].as_str().unwrap_or_default();
        assert_eq!(r["status"].as_u64(), Some(200), "{up}: {r}");
        match path {
            "/echo" => {
                assert_eq!(r["body_len"].as_u64(), Some(1 << 20), "{up}: echo length");
                assert_eq!(r["checksum_ok"], true, "{up}: echo checksum");
            }
            "/trailers" => {
                assert_eq!(r["body"], "body-before-trailers", "{up}: {r}");
                assert_eq!(r["trailers"]["grpc-status"], "0", "{up}: trailers: {r}");
            }
            _ => assert_eq!(
                r["body"].as_str(),
                Some(format!("backend q {path}\n").as_str()),
                "{up}"
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_to_h1_backend() {
    aioquic_cell("h1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_to_h2_backend() {
    aioquic_cell("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_to_h3_backend() {
    aioquic_cell("h3").await;
}
