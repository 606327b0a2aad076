//! WebSocket through the gateway with third-party peers: PyPI `websockets`
//! as client and echo origin over HTTP/1.1 (RFC 6455), the limits of
//! `[listeners.websocket]` each tripping with its close code, a WebSocket
//! surviving reloads, and `enabled = false`. Peers: `py/ws_peer.py`.
//! HTTP/2 and HTTP/3 fronts and backends: `websocket_h2h3.rs`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::h3_thirdparty::{py_dir, python, require_python_modules, run_json, Killed};
use crate::support::probe::{defence_trips, metrics_text};
use crate::support::*;

/// How long the echo origin may take to listen.
const ORIGIN_READY: Duration = Duration::from_secs(10);

/// `ws_peer.py serve`: the websockets echo origin.
pub(crate) struct Origin {
    _child: Killed,
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    pub(crate) fn start() -> Self {
        require_python_modules(&["websockets"]);
        let mut cmd = python();
        cmd.arg(py_dir().join("ws_peer.py"))
            .args(["serve", "--lifetime", "300"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = Killed(cmd.spawn().expect("python3 (see .ci/run)"));
        let stdout = child.0.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + ORIGIN_READY;
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("ws_peer.py serve reports its port");
            if let Some(p) = line.strip_prefix("PORT ") {
                break p.trim().parse().expect("port");
            }
        };
        Self {
            _child: child,
            port,
            lines,
        }
    }

    /// The origin's `CLOSED <code> <reason>` lines so far, waiting up to
    /// `within` for at least `n`.
    pub(crate) fn closes(&self, n: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let closed: Vec<String> = self
                .lines
                .lock()
                .map(|l| {
                    l.iter()
                        .filter(|s| s.starts_with("CLOSED"))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if closed.len() >= n || Instant::now() >= deadline {
                return closed;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Run `ws_peer.py` with `args` (bounded); its JSON report.
pub(crate) async fn peer(args: Vec<String>, limit: Duration) -> serde_json::Value {
    let mut cmd = python();
    cmd.arg(py_dir().join("ws_peer.py")).args(&args);
    run_json(cmd, &format!("ws_peer.py {args:?}"), limit).await
}

async fn client(url: &str, scenario: &str, protocols: Option<&str>) -> serde_json::Value {
    let mut args = vec![
        "client".to_owned(),
        "--url".to_owned(),
        url.to_owned(),
        "--scenario".to_owned(),
        scenario.to_owned(),
    ];
    if let Some(p) = protocols {
        args.extend(["--protocols".to_owned(), p.to_owned()]);
    }
    peer(args, Duration::from_secs(60)).await
}

fn h1_config(origin: u16, websocket: &str) -> String {
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.http]\ntotal_timeout_ms = 2000\n\
         [listeners.websocket]\n{websocket}\n\
         [[listeners.backends]]\naddress = \"127.0.0.1:{origin}\"\n"
    )
}

fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_echo_through_h1_with_subprotocol_close_codes_and_10_mib() {
    let origin = Origin::start();
    // total_timeout_ms is 2 s: a WebSocket is governed by its own limits.
    let gw = Gateway::start(&h1_config(origin.port, ""));
    let url = format!("ws://{}/chat", gw.addr(0));
    let report = client(
        &url,
        &format!("echo:1,125,126,65535,65536,{}", 10 << 20),
        Some("chat.v1,chat.v2"),
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    // The origin's choice, relayed (it prefers chat.v2).
    assert_eq!(report["subprotocol"], "chat.v2", "{report}");
    assert_eq!(report["close_code"], 1000, "{report}");
    // The client's close code and reason reached the origin.
    let closes = origin.closes(1, Duration::from_secs(5));
    assert!(
        closes.iter().any(|l| l == "CLOSED 1000 finished"),
        "{closes:?}"
    );

    // The origin closes with 4321 "bye": the client hears exactly that.
    let closing = format!("ws://{}/close", gw.addr(0));
    let report = client(&closing, "server-close", None).await;
    assert_eq!(
        (&report["close_code"], &report["close_reason"]),
        (&serde_json::json!(4321), &serde_json::json!("bye")),
        "{report}"
    );
    let report = client(&url, "client-close", None).await;
    assert_eq!(report["close_code"], 4000, "{report}");
    let closes = origin.closes(3, Duration::from_secs(5));
    assert!(closes.iter().any(|l| l == "CLOSED 4000 done"), "{closes:?}");

    let text = metrics_text(&gw).await;
    let closed_1000 = metric(
        &text,
        "expressgateway_websocket_closes_total{code=\"1000\",listener=\"h1-0\"} ",
    );
    assert!(closed_1000 >= Some(1.0), "{text}");
    let open = metric(&text, "expressgateway_websockets_open{listener=\"h1-0\"} ");
    assert_eq!(open, Some(0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_websocket_limit_trips_with_its_close_code() {
    let origin = Origin::start();
    let gw = Gateway::start(&h1_config(
        origin.port,
        "max_message_size_bytes = 65536\nping_rate_limit_per_window = 5\n\
         ping_rate_limit_window_seconds = 10\nidle_timeout_seconds = 2\nread_frame_timeout_seconds = 1",
    ));
    let url = format!("ws://{}/limits", gw.addr(0));
    let cases = [
        ("big:65537", 1009, "websocket_message_size"),
        ("pings:20", 1008, "websocket_ping_flood"),
        ("partial", 1008, "websocket_frame_timeout"),
        ("idle", 1001, "websocket_idle_timeout"),
    ];
    for (scenario, code, defence) in cases {
        let report = client(&url, scenario, None).await;
        assert_eq!(report["close_code"], code, "{scenario}: {report}");
        assert!(
            defence_trips(&gw, defence).await >= 1,
            "{scenario}: {defence} not counted"
        );
    }
    // Under the limit all is well.
    let report = client(&url, "echo:65536", None).await;
    assert_eq!(report["ok"], true, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_survives_20_reloads() {
    let origin = Origin::start();
    let config = h1_config(origin.port, "");
    let gw = Gateway::start(&config);
    let url = format!("ws://{}/hold", gw.addr(0));
    let hold = tokio::spawn(async move { client(&url, "hold:6", None).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..20 {
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let report = hold.await.expect("join");
    assert_eq!(report["close_code"], 1000, "{report}");
    assert!(report["echoed"].as_u64() >= Some(30), "{report}");
    let text = metrics_text(&gw).await;
    let reloads = metric(&text, "expressgateway_config_reloads_total{result=\"ok\"} ");
    assert!(reloads >= Some(20.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_disabled_is_answered_with_501() {
    let origin = Origin::start();
    let gw = Gateway::start(&h1_config(origin.port, "enabled = false"));
    let url = format!("ws://{}/off", gw.addr(0));
    let report = client(&url, "status", None).await;
    assert_eq!(report["status"], 501, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_open_websockets_with_1001_within_the_drain() {
    let origin = Origin::start();
    let mut gw = Gateway::start(&format!(
        "[runtime]\nreadiness_settle_ms = 200\ndrain_timeout_ms = 8000\n{}",
        h1_config(origin.port, "")
    ));
    let url = format!("ws://{}/hold", gw.addr(0));
    let hold = tokio::spawn(async move { client(&url, "hold:20", None).await });
    // The signal must find the WebSocket open: wait for the gateway to count
    // it (the Python client's start-up time varies with the machine's load).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = metrics_text(&gw).await;
        let open = metric(&text, "expressgateway_websockets_open{listener=\"h1-0\"} ");
        if open == Some(1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the WebSocket never opened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.signal("TERM");
    let report = hold.await.expect("join");
    assert_eq!(
        report["close_code"], 1001,
        "the client hears going-away: {report}"
    );
    let closes = origin.closes(1, Duration::from_secs(5));
    assert!(
        closes.iter().any(|c| c.starts_with("CLOSED 1001")),
        "the origin hears going-away too: {closes:?}"
    );
    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert_eq!(
        code,
        Some(0),
        "a clean exit once the close handshakes are done"
    );
}
