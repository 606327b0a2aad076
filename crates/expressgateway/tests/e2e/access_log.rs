//! The access log: exactly one line per request on every HTTP protocol,
//! with the fields an operator reads, written to a file that logrotate can
//! move away (SIGUSR1 reopens it).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;

use crate::support::h3::H3Client;
use crate::support::http::{client, get, send, text, ClientProto};
use crate::support::tls::cert;
use crate::support::*;

/// Lines of `path` once it holds `n` (the writer thread is asynchronous).
async fn lines(path: &Path, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    for _ in 0..100 {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if got.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_json_line_per_request_on_h1_h2_and_h3() {
    // It reads each request body before answering, so the body's bytes
    // have all passed when the response ends.
    let backend = crate::support::probe::ProbeBackend::start().await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let log = dir.path().join("access.log");
    let extra = format!(
        "[observability]\naccess_log = \"{}\"\nlog_format = \"json\"\n\
         [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        log.display(),
        backend.addr
    );
    let config = crate::h3_matrix::quic_listener(&c, &backend.addr.to_string(), "h1", &extra);
    let gw = Gateway::start_in(dir, &config);
    let web = gw.addr(0);
    let r = send(
        &client(ClientProto::H1),
        get(&format!("http://{web}/one?x=1")),
    )
    .await;
    assert_eq!(r.status, 200);
    let post = ::http::Request::post(format!("http://{web}/two"))
        .body(text("twelve bytes"))
        .expect("request");
    assert_eq!(send(&client(ClientProto::H2c), post).await.status, 200);
    let mut h3 = H3Client::new(&c.cert_pem, gw.addr(1));
    let r = h3.send(::http::Method::GET, "/three", Bytes::new()).await;
    assert_eq!(r.status, 200);
    lines(&log, 3).await;
    // Time for a stray fourth line to show, were there one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let got = lines(&log, 3).await;
    assert_eq!(got.len(), 3, "exactly one line per request: {got:?}");
    let parsed: Vec<serde_json::Value> = got
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let by_path = |p: &str| {
        parsed
            .iter()
            .find(|v| v["path"] == p)
            .unwrap_or_else(|| panic!("no line for {p}: {got:?}"))
    };
    let one = by_path("/one?x=1");
    assert_eq!(one["protocol"], "h1");
    assert_eq!(one["method"], "GET");
    assert_eq!(one["status"], 200);
    assert_eq!(one["listener"], "web");
    assert_eq!(one["cluster"], "web/default");
    assert_eq!(one["backend"], backend.addr.to_string());
    assert_eq!(one["outcome"], "ok");
    assert_eq!(one["retries"], 0);
    assert!(
        one["response_bytes"].as_u64().is_some_and(|n| n > 0),
        "{one}"
    );
    assert!(one["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    assert!(one["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1:")));
    assert!(
        one["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{one}"
    );
    let two = by_path("/two");
    assert_eq!(two["protocol"], "h2");
    assert_eq!(two["method"], "POST");
    assert_eq!(two["request_bytes"], 12);
    let three = by_path("/three");
    assert_eq!(three["protocol"], "h3");
    assert_eq!(three["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_name_the_gateway_outcome_and_sigusr1_reopens_the_file() {
    let dir = scratch();
    let log = dir.path().join("access.log");
    let dead = closed_port();
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[observability]\naccess_log = \"{}\"\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{dead}\"\n",
            log.display()
        ),
    );
    let cl = client(ClientProto::H1);
    let url = format!("http://{}/gone", gw.addr(0));
    assert_eq!(send(&cl, get(&url)).await.status, 502);
    let got = lines(&log, 1).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let line = &got[0];
    for field in [
        "status=502",
        "outcome=upstream_connect_failed",
        "method=\"GET\"",
        "path=\"/gone\"",
        "protocol=h1",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    // logrotate: move the file, signal, and the next line starts a new one.
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    gw.signal("USR1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(&cl, get(&url)).await.status, 502);
    assert_eq!(
        lines(&log, 1).await.len(),
        1,
        "the new file has the new line"
    );
    assert_eq!(
        lines(&rotated, 1).await.len(),
        1,
        "the old file kept its one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_file_even_when_the_new_certificates_are_refused() {
    let backend = crate::support::http::HttpBackend::start("a").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let log = dir.path().join("access.log");
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[observability]\naccess_log = \"{}\"\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{b}\"\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1s\"\n\
             [listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
             [[listeners.backends]]\naddress = \"{b}\"\n",
            log.display(),
            c.cert_path.display(),
            c.key_path.display(),
            b = backend.addr,
        ),
    );
    let cl = client(ClientProto::H1);
    let url = format!("http://{}/first", gw.addr(0));
    assert_eq!(send(&cl, get(&url)).await.status, 200);
    assert_eq!(lines(&log, 1).await.len(), 1);
    // A broken certificate and a logrotate-style rename, then SIGUSR1.
    std::fs::write(&c.cert_path, "not a certificate").expect("break");
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).expect("rotate");
    gw.signal("USR1");
    let mut refused = false;
    for _ in 0..60 {
        if gw.stderr().contains("rejected") {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the rotation was not refused: {}", gw.stderr());
    let url = format!("http://{}/second", gw.addr(0));
    assert_eq!(send(&cl, get(&url)).await.status, 200);
    let fresh = lines(&log, 1).await;
    assert_eq!(fresh.len(), 1, "the new file has the new line: {fresh:?}");
    assert!(fresh[0].contains("/second"), "{fresh:?}");
    assert_eq!(
        lines(&rotated, 1).await.len(),
        1,
        "the old file kept its one"
    );
}
