//! WebSocket over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220), on the fronts
//! and towards backends, with third-party peers: niquests, the Python `h2`
//! library and Node's http2 client on the `h1s` front; aioquic (and
//! niquests) on the `quic` front; hypercorn as an RFC 8441 origin and an
//! aioquic RFC 9220 origin behind an HTTP/1.1 front; HTTP/2 and HTTP/3
//! backends without SETTINGS_ENABLE_CONNECT_PROTOCOL answered with 502;
//! `h2_extended_connect`/`h3_extended_connect = false` not advertising it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::h3_thirdparty::{
    hypercorn_command, py_dir, python, require_python_modules, run_json, Killed,
};
use crate::support::http::HttpBackend;
use crate::support::tls::cert;
use crate::support::*;
use crate::websocket::{peer, Origin};

/// The answer to RFC 6455 §1.3's sample key `dGhlIHNhbXBsZSBub25jZQ==`,
/// which the `h2` and aioquic clients send on their extended CONNECT.
const RFC_6455_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// How long a Python origin may take to listen.
const ORIGIN_READY: Duration = Duration::from_secs(15);

fn tls_front(protocol: &str, section: &str, c: &eg_tls::SelfSigned, backend: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"{protocol}\"\n\
         [listeners.http]\ntotal_timeout_ms = 2000\n\
         [listeners.{section}]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [[listeners.backends]]\n{backend}\n",
        c.cert_path.display(),
        c.key_path.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_front_speaks_rfc_8441_to_niquests_h2_and_node() {
    require_python_modules(&["niquests", "h2"]);
    let origin = Origin::start();
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let ca = c.cert_path.display().to_string();
    let backend = format!("address = \"127.0.0.1:{}\"", origin.port);
    let gw = Gateway::start_in(dir, &tls_front("h1s", "tls", &c, &backend));
    let port = gw.addr(0).port().to_string();

    // The h2 library: the setting, then 10 MiB (160x the default stream
    // window) echoed while it grants window only as it reads.
    let r = h2_lib_echo(&port, &ca, 10 << 20).await;
    assert_eq!(r["enable_connect_protocol"], 1, "{r}");
    assert_eq!(r["accept"], RFC_6455_ACCEPT, "{r}");
    assert_eq!(
        (&r["status"], &r["echo_ok"]),
        (&200.into(), &true.into()),
        "{r}"
    );

    // niquests (urllib3-future) sends each WebSocket message as a single
    // HTTP/2 DATA frame, so its messages must fit the 16 KiB frame size.
    let url = format!("wss+rfc8441://localhost:{port}/niquests");
    let r = peer(
        vec![
            "niquests".into(),
            "--url".into(),
            url,
            "--ca".into(),
            ca.clone(),
            "--size".into(),
            "16000".into(),
            // Silent past the listener's 2 s total_timeout_ms.
            "--hold".into(),
            "3".into(),
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(r["http_version"], 20, "{r}");
    assert_eq!(
        (&r["text_ok"], &r["binary_ok"], &r["hold_ok"]),
        (&true.into(), &true.into(), &true.into()),
        "{r}"
    );

    let script = py_dir().join("ws_node_h2.js");
    let mut node = Command::new("node");
    node.arg(script).arg(&port).arg(&ca).stdin(Stdio::null());
    let r = run_json(
        node,
        "node (Debian `nodejs`, see .ci/run)",
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(r["enable_connect_protocol"], true, "{r}");
    assert_eq!(
        (&r["status"], &r["echo"]),
        (&200.into(), &"hello from node".into()),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_front_speaks_rfc_9220_to_aioquic_and_niquests() {
    require_python_modules(&["aioquic", "niquests"]);
    let origin = Origin::start();
    let dir = scratch();
    // qh3 (niquests' QUIC stack) trusts only a CA-issued chain.
    let (c, ca) = crate::support::tls::ca_issued(dir.path(), "srv");
    let ca = ca.display().to_string();
    let backend = format!("address = \"127.0.0.1:{}\"", origin.port);
    let gw = Gateway::start_in(dir, &tls_front("quic", "quic", &c, &backend));
    let port = gw.addr(0).port().to_string();
    let r = aioquic_echo(&port, &ca).await;
    assert_eq!(r["enable_connect_protocol"], 1, "{r}");
    assert_eq!(r["accept"], RFC_6455_ACCEPT, "{r}");
    assert_eq!(
        (&r["status"], &r["echo_ok"]),
        (&200.into(), &true.into()),
        "{r}"
    );
    assert_eq!(r["close_code"], 1000, "{r}");
    let closes = origin.closes(1, Duration::from_secs(5));
    assert!(
        closes.iter().any(|l| l.starts_with("CLOSED 1000")),
        "{closes:?}"
    );

    // niquests over HTTP/3 only (urllib3-future's RFC 9220 client over
    // qh3): a text and a 10 MiB message echoed, then 3 s of silence past
    // the listener's 2 s total_timeout_ms and one more echo, then a 1000
    // close answered by the origin's close.
    let url = format!("wss+rfc8441://localhost:{port}/niquests-h3");
    let r = peer(
        vec![
            "niquests".into(),
            "--h3".into(),
            "--url".into(),
            url,
            "--ca".into(),
            ca,
            "--size".into(),
            (10 << 20).to_string(),
            "--hold".into(),
            "3".into(),
            "--close".into(),
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        (&r["status"], &r["http_version"]),
        (&200.into(), &30.into()),
        "{r}"
    );
    assert_eq!(
        (&r["text_ok"], &r["binary_ok"], &r["hold_ok"]),
        (&true.into(), &true.into(), &true.into()),
        "{r}\n{}",
        gw.stderr()
    );
    assert_eq!(r["closed_by_peer"], true, "{r}");
    let closes = origin.closes(2, Duration::from_secs(5));
    assert!(
        closes.iter().any(|l| l == "CLOSED 1000 finished"),
        "{closes:?}"
    );
}

/// `py/SCRIPT serve --cert .. --key ..` with `c`'s certificate and key.
pub(crate) fn py_serve(script: &str, c: &eg_tls::SelfSigned) -> Command {
    let mut cmd = python();
    cmd.arg(py_dir().join(script))
        .arg("serve")
        .arg("--cert")
        .arg(&c.cert_path)
        .arg("--key")
        .arg(&c.key_path);
    cmd
}

/// A long-lived Python origin that prints the port it listens on.
pub(crate) fn spawn_origin(mut cmd: Command, port_of: fn(&str) -> Option<u16>) -> (Killed, u16) {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Killed(cmd.spawn().expect("python3 (see .ci/run)"));
    let (tx, rx) = mpsc::channel();
    for pipe in [
        child
            .0
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        child
            .0
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + ORIGIN_READY;
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(port) = port_of(&line) {
                    return (child, port);
                }
                seen.push_str(&line);
                seen.push('\n');
            }
            Err(_) => panic!("origin did not report its port in time:\n{seen}"),
        }
    }
}

fn hypercorn_tcp_port(line: &str) -> Option<u16> {
    if line.contains("(QUIC)") {
        return None;
    }
    let url = line.split("https://").nth(1)?;
    url.split_whitespace()
        .next()?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()
}

/// A `PORT <n>` line.
pub(crate) fn port_line(line: &str) -> Option<u16> {
    line.strip_prefix("PORT ")?.trim().parse().ok()
}

fn h1_front(backend: &str) -> String {
    format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\n{backend}\n"
    )
}

async fn websockets_echo(url: &str, scenario: &str) -> serde_json::Value {
    peer(
        vec![
            "client".into(),
            "--url".into(),
            url.into(),
            "--scenario".into(),
            scenario.into(),
            "--protocols".into(),
            "chat.v1,chat.v2".into(),
        ],
        Duration::from_secs(60),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_front_reaches_an_rfc_8441_hypercorn_origin_over_h2() {
    require_python_modules(&["websockets", "hypercorn"]);
    let dir = scratch();
    let c = cert(dir.path(), "hypercorn");
    let cmd = hypercorn_command(&c, &["--bind", "127.0.0.1:0"]);
    let (_hypercorn, port) = spawn_origin(cmd, hypercorn_tcp_port);
    let backend = format!(
        "address = \"127.0.0.1:{port}\"\nprotocol = \"h2\"\ntls = true\ntls_ca_path = \"{}\"",
        c.cert_path.display()
    );
    let gw = Gateway::start_in(dir, &h1_front(&backend));
    let url = format!("ws://{}/over-h2", gw.addr(0));
    let r = websockets_echo(&url, "echo:1,65536,1048576").await;
    assert_eq!(r["ok"], true, "{r}\n{}", gw.stderr());
    assert_eq!(r["subprotocol"], "chat.v2", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_front_reaches_an_rfc_9220_aioquic_origin_over_h3() {
    require_python_modules(&["websockets", "aioquic"]);
    let dir = scratch();
    let c = cert(dir.path(), "origin");
    let (_origin, port) = aioquic_origin(&c);
    let backend = format!(
        "address = \"127.0.0.1:{port}\"\nprotocol = \"h3\"\ntls_ca_path = \"{}\"",
        c.cert_path.display()
    );
    let gw = Gateway::start_in(dir, &h1_front(&backend));
    let url = format!("ws://{}/over-h3", gw.addr(0));
    let r = peer(
        vec![
            "client".into(),
            "--url".into(),
            url,
            "--scenario".into(),
            "echo:1,65536,1048576".into(),
        ],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_backend_without_extended_connect_gets_502() {
    require_python_modules(&["websockets"]);
    // hyper's HTTP/2 server, extended CONNECT not enabled.
    let backend = HttpBackend::start("plain-h2").await;
    let gw = Gateway::start(&h1_front(&format!(
        "address = \"{}\"\nprotocol = \"h2\"",
        backend.addr
    )));
    let url = format!("ws://{}/nope", gw.addr(0));
    let r = websockets_echo(&url, "status").await;
    assert_eq!(r["status"], 502, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h3_backend_without_extended_connect_gets_502() {
    require_python_modules(&["websockets"]);
    // quinn + h3 with the h3 builder's default: SETTINGS_ENABLE_CONNECT_PROTOCOL
    // not advertised (h3 sends it as 0).
    let dir = scratch();
    let c = cert(dir.path(), "h3");
    let backend = crate::support::h3::H3Backend::start("no-connect", &c).await;
    let gw = Gateway::start_in(
        dir,
        &h1_front(&format!(
            "address = \"{}\"\nprotocol = \"h3\"\ntls_ca_path = \"{}\"",
            backend.addr,
            c.cert_path.display()
        )),
    );
    let url = format!("ws://{}/nope", gw.addr(0));
    let r = websockets_echo(&url, "status").await;
    assert_eq!(r["status"], 502, "{r}");
    // It was not asked to carry the WebSocket as a plain request either.
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_connect_off_is_not_advertised() {
    require_python_modules(&["h2", "aioquic"]);
    let origin = Origin::start();
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let ca = c.cert_path.display().to_string();
    let backend = format!("address = \"127.0.0.1:{}\"", origin.port);
    let off = |front: String| {
        front.replace(
            "[[listeners.backends]]",
            "[listeners.websocket]\nh2_extended_connect = false\nh3_extended_connect = false\n\
             [[listeners.backends]]",
        )
    };
    let config =
        off(tls_front("h1s", "tls", &c, &backend)) + &off(tls_front("quic", "quic", &c, &backend));
    let gw = Gateway::start_in(dir, &config);
    let h2 = gw.addr(0).port().to_string();
    let args = ["h2", "--port", &h2, "--ca", &ca, "--settings-only"];
    let r = peer(args.map(String::from).to_vec(), Duration::from_secs(30)).await;
    // The h2 client reports 0 for a setting the server left out.
    assert_eq!(r["enable_connect_protocol"], 0, "{r}");
    let mut cmd = python();
    cmd.arg(py_dir().join("ws_h3.py")).args([
        "client",
        "--port",
        &gw.addr(1).port().to_string(),
        "--ca",
        &ca,
        "--settings-only",
    ]);
    let r = run_json(cmd, "ws_h3.py client", Duration::from_secs(30)).await;
    assert_eq!(r["settings_seen"], true, "{r}");
    assert!(
        r["enable_connect_protocol"].is_null() || r["enable_connect_protocol"] == 0,
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_and_h3_fronts_reach_h2_and_h3_origins() {
    require_python_modules(&["h2", "aioquic", "hypercorn"]);
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let ca = c.cert_path.display().to_string();
    let (_hypercorn, h2_port) = spawn_origin(
        hypercorn_command(&c, &["--bind", "127.0.0.1:0"]),
        hypercorn_tcp_port,
    );
    let (_aioquic, h3_port) = aioquic_origin(&c);
    let h2_backend = format!(
        "address = \"127.0.0.1:{h2_port}\"\nprotocol = \"h2\"\ntls = true\ntls_ca_path = \"{ca}\""
    );
    let h3_backend =
        format!("address = \"127.0.0.1:{h3_port}\"\nprotocol = \"h3\"\ntls_ca_path = \"{ca}\"");
    let config = format!(
        "{}{}",
        tls_front("h1s", "tls", &c, &h3_backend),
        tls_front("quic", "quic", &c, &h2_backend)
    );
    let gw = Gateway::start_in(dir, &config);
    // HTTP/2 client -> HTTP/3 origin.
    let r = h2_lib_echo(&gw.addr(0).port().to_string(), &ca, 1 << 20).await;
    assert_eq!(
        (&r["status"], &r["echo_ok"]),
        (&200.into(), &true.into()),
        "h2 -> h3: {r}"
    );
    // HTTP/3 client -> HTTP/2 origin.
    let r = aioquic_echo(&gw.addr(1).port().to_string(), &ca).await;
    assert_eq!(
        (&r["status"], &r["echo_ok"]),
        (&200.into(), &true.into()),
        "h3 -> h2: {r}"
    );
}

/// The `h2` library's RFC 8441 client (`ws_peer.py h2`): `size` bytes echoed.
async fn h2_lib_echo(port: &str, ca: &str, size: usize) -> serde_json::Value {
    let size = size.to_string();
    let args = ["h2", "--port", port, "--ca", ca, "--size", &size];
    peer(args.map(String::from).to_vec(), Duration::from_secs(60)).await
}

/// aioquic's RFC 9220 client (`ws_h3.py client`): 1 MiB echoed.
async fn aioquic_echo(port: &str, ca: &str) -> serde_json::Value {
    let mut cmd = python();
    cmd.arg(py_dir().join("ws_h3.py"))
        .args(["client", "--port", port, "--ca", ca, "--size", "1048576"]);
    run_json(cmd, "ws_h3.py client", Duration::from_secs(60)).await
}

/// aioquic's RFC 9220 echo origin (`ws_h3.py serve`) and its UDP port.
fn aioquic_origin(c: &eg_tls::SelfSigned) -> (Killed, u16) {
    spawn_origin(py_serve("ws_h3.py", c), port_line)
}
