//! `expressgateway demo`: every listener it reports answers (the raw QUIC
//! relay reaches the HTTP/3 backend, the admin listener lists the pools),
//! the guide names every bound address, and on a terminal the guide
//! replaces the JSON startup report.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The guide's last line, in either output mode.
const GUIDE_END: &str = "Stop with Ctrl-C.";

/// How long the demo may take to print its guide (debug build, loaded box).
const GUIDE_TIMEOUT: Duration = Duration::from_secs(30);

async fn http_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: S) -> String {
    http_get_path(s, "/demo").await
}

async fn http_get_path<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    path: &str,
) -> String {
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_answers_on_every_listener() {
    let gw = Gateway::spawn(scratch(), &["demo", "--base-port", "0"]);
    assert!(
        gw.listeners.len() >= 4,
        "demo listeners: {:?}",
        gw.listeners
    );
    // The demo's certificate is not in any trust store; trust anything
    // for this check only: the handshake and relay are what is tested.
    let insecure = {
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(crate::support::tls::AcceptAny))
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
    };
    let names: Vec<&str> = gw.listeners.iter().map(|b| b.name.as_str()).collect();
    for expected in ["demo-quic", "demo-quic-relay", "passthrough", "admin"] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    for bound in &gw.listeners {
        if bound.name.ends_with("-v6") {
            assert!(
                bound.address.ip().is_loopback() && bound.address.is_ipv6(),
                "{bound:?}"
            );
        }
        if bound.protocol == "quic" || bound.protocol == "passthrough" {
            let mut h3 = crate::support::h3::H3Client::insecure(bound.address);
            let r = h3
                .send(::http::Method::GET, "/demo", bytes::Bytes::new())
                .await;
            let answer = String::from_utf8_lossy(&r.body).into_owned();
            assert!(
                answer.contains("hello from the ExpressGateway demo backend"),
                "{}: {answer:?}",
                bound.name
            );
            if bound.name == "demo-quic-relay" || bound.name == "passthrough" {
                // Mode B relays the QUIC connection itself, Mode A its
                // datagrams: the HTTP/3 backend C answers it directly.
                assert!(
                    answer.contains("backend C: GET /demo over HTTP/3"),
                    "{answer:?}"
                );
            }
            // A second client stack, curl's (ngtcp2 + nghttp3): it fails an
            // exchange a lenient client accepts (a STOP_SENDING after the
            // answer). curl_h3.py asks for localhost: IPv4 listeners only.
            if bound.address.is_ipv4() {
                let req = ["GET:/demo".to_owned()];
                let report = crate::h3_curl::curl_h3(None, bound.address.port(), &req).await;
                assert_eq!(
                    report["responses"][0]["status"], 200,
                    "{}: {report}",
                    bound.name
                );
            }
            continue;
        }
        if bound.protocol == "admin" {
            let pools = http_get_path(
                TcpStream::connect(bound.address).await.expect("connect"),
                "/api/v1/pools",
            )
            .await;
            assert!(pools.starts_with("HTTP/1.1 200"), "{pools}");
            assert!(pools.contains("\"demo-h1/default\""), "{pools}");
            let metrics = http_get_path(
                TcpStream::connect(bound.address).await.expect("connect"),
                "/metrics",
            )
            .await;
            assert!(metrics.contains("expressgateway_"), "{metrics}");
            continue;
        }
        let tcp = TcpStream::connect(bound.address).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let answer = match (bound.protocol.as_str(), bound.name.contains("http")) {
            ("tcp", false) => {
                let mut s = tcp;
                if ping(&mut s).await {
                    "echo".to_owned()
                } else {
                    String::new()
                }
            }
            ("tcp", true) => http_get(tcp).await,
            ("tls", false) => {
                let s = insecure.connect(name, tcp).await.expect("tls");
                let d = pattern(1000, 1);
                if echo_roundtrip(s, &d).await == sha256(&d) {
                    "echo".to_owned()
                } else {
                    String::new()
                }
            }
            ("tls", true) => http_get(insecure.connect(name, tcp).await.expect("tls")).await,
            ("h1", _) => http_get(tcp).await,
            ("h1s", _) => http_get(insecure.connect(name, tcp).await.expect("tls")).await,

            (other, _) => panic!("demo listener of unexpected kind {other}"),
        };
        assert!(
            answer == "echo" || answer.contains("hello from the ExpressGateway demo backend"),
            "{}: {answer:?}",
            bound.name
        );
    }
}

/// Piped stdout: the JSON report stays there, and the guide (on stderr)
/// names every address the report lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_guide_names_every_bound_address() {
    let gw = Gateway::spawn(scratch(), &["demo", "--base-port", "0"]);
    let deadline = Instant::now() + GUIDE_TIMEOUT;
    let guide = loop {
        let err = gw.stderr();
        if err.contains(GUIDE_END) {
            break err;
        }
        assert!(Instant::now() < deadline, "no guide on stderr:\n{err}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for bound in &gw.listeners {
        assert!(
            guide.contains(&bound.address.to_string()),
            "{} at {} not in the guide:\n{guide}",
            bound.name,
            bound.address
        );
    }
    let admin = gw
        .listeners
        .iter()
        .find(|b| b.name == "admin")
        .expect("admin");
    assert!(
        guide.contains(&format!("http://{}/", admin.address)),
        "{guide}"
    );
}

/// Kills the demo started behind `script` (which would otherwise keep
/// running after the pty closes: SIGHUP means reload to the gateway).
struct KillOnDrop(Option<u32>, std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.1.kill();
        let _ = self.1.wait();
    }
}

/// On a terminal (a pty from util-linux `script`) the guide replaces the
/// JSON report, and logs default to warnings.
#[test]
fn demo_on_a_terminal_prints_the_guide_instead_of_json() {
    let inner = format!(
        "{} demo --base-port 0 & echo \"demo-pid=$!\"; wait",
        binary()
    );
    let mut child = Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script(1) from util-linux");
    let stdout = child.stdout.take().expect("stdout");
    let mut guard = KillOnDrop(None, child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + GUIDE_TIMEOUT;
    let mut seen = String::new();
    while !seen.contains(GUIDE_END) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no guide on the terminal:\n{seen}"));
        if let Some(pid) = line.trim().strip_prefix("demo-pid=") {
            guard.0 = pid.parse().ok();
        }
        seen.push_str(&line);
        seen.push('\n');
    }
    assert!(guard.0.is_some(), "{seen}");
    assert!(seen.contains("ExpressGateway demo is ready."), "{seen}");
    assert!(
        !seen.contains("\"event\""),
        "JSON report on a terminal:\n{seen}"
    );
    // Coloured on a terminal: the level sits between escape codes.
    assert!(!seen.contains("INFO"), "info logs on a terminal:\n{seen}");
}
