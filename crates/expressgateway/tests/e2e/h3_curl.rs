//! HTTP/3 through a second independent client stack: curl (libcurl with
//! ngtcp2 + nghttp3, via PyPI `curl_cffi`; `.ci/run` installs it), against
//! the `quic` listener in front of h1, h2 and h3 backends. aioquic alone
//! tolerated a STOP_SENDING(0) on every request to an H1 backend that curl
//! reports as a reset: this is the test that catches it.

use std::time::Duration;

use crate::h3_thirdparty::{py_dir, python, require_python_modules, run_bounded};
use crate::support::tls::cert;
use crate::support::*;

/// `ca`: the CA to verify the server with; `None` verifies nothing.
pub(crate) async fn curl_h3(
    ca: Option<&std::path::Path>,
    port: u16,
    requests: &[String],
) -> serde_json::Value {
    require_python_modules(&["curl_cffi"]);
    let mut cmd = python();
    cmd.arg(py_dir().join("curl_h3.py"));
    if let Some(ca) = ca {
        cmd.arg("--ca").arg(ca);
    }
    cmd.args(["--port", &port.to_string()]).args(requests);
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_bounded(cmd, Duration::from_secs(60)))
            .await
            .expect("join");
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("curl_h3.py printed no JSON ({e}):\n{stdout}\n{stderr}"));
    assert!(ok, "curl HTTP/3 requests failed: {report}\n{stderr}");
    report
}

/// The echoed upload: 8x the 1 MiB stream window on every leg, so flow
/// control is exercised both ways, yet small enough for four userspace
/// QUIC legs on a loaded 2-core CI box.
const ECHO_BYTES: usize = 8 << 20;

async fn curl_cell(up: &str) {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let (addr, _h1, _h3) = crate::h3_matrix::backend_for(up, &c).await;
    let config = crate::h3_matrix::quic_listener(&c, &addr, up, "");
    let gw = Gateway::start_in(dir, &config);
    let mut requests = vec!["GET:/hello".to_owned(), format!("POST:/echo:{ECHO_BYTES}")];
    requests.extend((0..50).map(|i| format!("GET:/c/{i}")));
    let report = curl_h3(Some(&c.cert_path), gw.addr(0).port(), &requests).await;
    let responses = report["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), requests.len());
    for r in responses {
        let path = r["path"].as_str().unwrap_or_default();
        assert_eq!(r["status"].as_u64(), Some(200), "{up}: {r}");
        assert_eq!(
            r["http_version"].as_u64(),
            Some(30),
            "{up}: not HTTP/3: {r}"
        );
        if r["method"] == "POST" {
            assert_eq!(
                r["body_len"].as_u64(),
                Some(ECHO_BYTES as u64),
                "{up}: echo length"
            );
            assert_eq!(r["body_sha256"], r["sent_sha256"], "{up}: echo checksum");
        } else {
            assert_eq!(
                r["body"].as_str(),
                Some(format!("backend q {path}\n").as_str())
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h3_to_h1_backend() {
    curl_cell("h1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h3_to_h2_backend() {
    curl_cell("h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_h3_to_h3_backend() {
    curl_cell("h3").await;
}
