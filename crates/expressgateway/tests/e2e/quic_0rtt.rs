//! 0-RTT on the HTTP/3 front (`[listeners.quic] allow_0rtt`, RFC 8470),
//! driven by aioquic (py/h3_0rtt.py): a resumed client sends a GET and a
//! POST before its handshake completes. The GET is served from early data
//! and reaches the backend with `Early-Data: 1`; the POST waits for the
//! handshake and reaches it unmarked. A ticket used once is refused early
//! data the second time (single use: the replay defence), and a reload
//! keeps the sessions. ngtcp2's client drives 0-RTT in the interop cases.
//!
//! Whether a request is early is a race between reading its head and the
//! client's Finished. The client talks through a relay that delays what
//! it hears by `PATH_DELAY`, so its Finished comes that much after its
//! first flight, and the early requests are read well before it.

use std::time::Duration;

use crate::h3_thirdparty::{py_dir, python, require_python_modules, run_json};
use crate::support::http::HttpBackend;
use crate::support::probe::metrics_text;
use crate::support::tls::cert;
use crate::support::udp_relay::UdpRelay;
use crate::support::*;

/// One-way delay towards the client: far above the time the gateway takes
/// to read a request head, even on a loaded CI machine.
const PATH_DELAY: Duration = Duration::from_millis(300);

/// A relay to the gateway's QUIC port with `PATH_DELAY` towards the client.
async fn long_path(gw: &Gateway) -> UdpRelay {
    let relay = UdpRelay::start(gw.addr(0), 1).await;
    relay.set_delay_to_client(PATH_DELAY);
    relay
}

fn config(c: &eg_tls::SelfSigned, backend: std::net::SocketAddr, allow: bool) -> String {
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"q\"\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\nallow_0rtt = {allow}\n\
         [[listeners.backends]]\naddress = \"{backend}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
    )
}

/// The early GET and POST: each answered with the `early-data` header the
/// backend saw ("-" when none).
const REQUESTS: [&str; 2] = ["GET:/header/early-data", "POST:/header/early-data:1000"];

async fn zero_rtt(path: &UdpRelay, ca: &std::path::Path, args: &[&str]) -> serde_json::Value {
    require_python_modules(&["aioquic"]);
    let mut cmd = python();
    cmd.arg(py_dir().join("h3_0rtt.py"))
        .arg("--ca")
        .arg(ca)
        .args(["--port", &path.addr.port().to_string()])
        .args(args);
    run_json(cmd, "aioquic 0-RTT client", Duration::from_secs(25)).await
}

/// Each resumed connection's (early data accepted, GET saw, POST saw).
fn outcomes(report: &serde_json::Value) -> Vec<(bool, String, String)> {
    let resumes = report["resumes"].as_array().expect("resumes");
    resumes
        .iter()
        .map(|r| {
            let responses = r["responses"].as_array().expect("responses");
            for x in responses {
                assert_eq!(x["status"].as_u64(), Some(200), "{report}");
            }
            let body = |i: usize| responses[i]["body"].as_str().unwrap_or("?").to_owned();
            (r["early_data_accepted"] == true, body(0), body(1))
        })
        .collect()
}

fn zero_rtt_count(metrics: &str, outcome: &str) -> u64 {
    let key =
        format!("expressgateway_zero_rtt_requests_total{{listener=\"q\",outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_gets_are_served_marked_posts_wait_and_a_ticket_is_single_use() {
    let backend = HttpBackend::start("b").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let gw = Gateway::start_in(dir, &config(&c, backend.addr, true));
    let path = long_path(&gw).await;
    let report = zero_rtt(&path, &c.cert_path, &REQUESTS).await;
    assert_eq!(report["ticket_allows_early_data"], true, "{report}");
    let got = outcomes(&report);
    assert_eq!(
        got[0],
        (true, "1".to_owned(), "-".to_owned()),
        "resumed: early data accepted, the GET marked Early-Data: 1, the POST held until \
         the handshake and unmarked: {report}"
    );
    assert_eq!(
        got[1],
        (false, "-".to_owned(), "-".to_owned()),
        "the same ticket again (a replay): early data refused, both served after the \
         handshake: {report}"
    );
    let m = metrics_text(&gw).await;
    assert_eq!(zero_rtt_count(&m, "served"), 1, "{m}");
    assert_eq!(zero_rtt_count(&m, "deferred"), 1, "{m}");
    let replays = "expressgateway_zero_rtt_resumptions_total{outcome=\"refused\"} 1";
    assert!(m.contains(replays), "the replayed ticket is counted: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allow_0rtt_early_data_is_refused_and_requests_still_served() {
    let backend = HttpBackend::start("b").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let gw = Gateway::start_in(dir, &config(&c, backend.addr, false));
    let path = long_path(&gw).await;
    let report = zero_rtt(
        &path,
        &c.cert_path,
        &[&["--resumes", "1"], &REQUESTS[..]].concat(),
    )
    .await;
    assert_eq!(report["ticket_allows_early_data"], false, "{report}");
    assert_eq!(
        outcomes(&report)[0],
        (false, "-".to_owned(), "-".to_owned()),
        "{report}"
    );
    let m = metrics_text(&gw).await;
    assert_eq!(zero_rtt_count(&m, "served"), 0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_the_0rtt_sessions_and_their_single_use() {
    let backend = HttpBackend::start("b").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let ticket = dir.path().join("ticket.pickle");
    let ticket_arg = ticket.to_str().expect("utf-8 path").to_owned();
    let gw = Gateway::start_in(dir, &config(&c, backend.addr, true));
    let path = long_path(&gw).await;
    zero_rtt(&path, &c.cert_path, &["--save-ticket", &ticket_arg]).await;
    gw.signal("HUP");
    let reloaded = "expressgateway_config_reloads_total{result=\"ok\"} 1";
    let mut m = String::new();
    for _ in 0..100 {
        m = metrics_text(&gw).await;
        if m.contains(reloaded) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(m.contains(reloaded), "no reload: {m}");
    let args = [&["--load-ticket", ticket_arg.as_str()], &REQUESTS[..]].concat();
    let got = outcomes(&zero_rtt(&path, &c.cert_path, &args).await);
    assert!(
        got[0].0,
        "a ticket from before the reload resumes with 0-RTT"
    );
    assert!(!got[1].0, "and is still single use after it");
}
