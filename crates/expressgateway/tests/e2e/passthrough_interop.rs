//! Mode A with third-party peers: curl (ngtcp2 + nghttp3, via curl_cffi)
//! and aioquic as HTTP/3 clients verifying the backend's certificate
//! through the gateway, hypercorn as a backend, and ngtcp2's client
//! (`gtlsclient`, Debian `ngtcp2-client`) rebinding its address mid-
//! connection. The gateway has no certificate at all.

use std::process::Command;
use std::time::Duration;

use crate::h3_thirdparty::{aioquic_client, py_dir, python, require_python_modules, run_bounded};
use crate::passthrough::{one_backend, pt_addr, pt_config};
use crate::support::tls::cert;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_curl_h3_verifies_the_hypercorn_certificate() {
    require_python_modules(&["aioquic", "hypercorn", "curl_cffi"]);
    let dir = scratch();
    let c = cert(dir.path(), "hypercorn");
    let hypercorn = crate::h3_thirdparty::Hypercorn::start(&c);
    let backend = format!("127.0.0.1:{}", hypercorn.quic_port)
        .parse()
        .expect("addr");
    let gw = Gateway::start_in(scratch(), &pt_config(&[backend], ""));
    let port = pt_addr(&gw).port();
    let mut requests: Vec<String> = (0..10).map(|i| format!("GET:/curl/{i}")).collect();
    requests.push(format!("POST:/echo:{}", 1 << 20));
    let report = crate::h3_curl::curl_h3(Some(&c.cert_path), port, &requests).await;
    let responses = report["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), requests.len());
    for r in responses {
        assert_eq!(r["status"].as_u64(), Some(200), "{r}\n{}", hypercorn.log());
        assert_eq!(r["http_version"].as_u64(), Some(30), "not HTTP/3: {r}");
        let path = r["path"].as_str().unwrap_or_default();
        if r["method"] == "POST" {
            assert_eq!(r["body_len"].as_u64(), Some(1 << 20), "{r}");
            assert_eq!(r["body_sha256"], r["sent_sha256"], "echo checksum");
        } else {
            assert_eq!(
                r["body"].as_str(),
                Some(format!("hypercorn {path}").as_str())
            );
        }
    }
    // Trusting another certificate, curl refuses the backend's: what the
    // client verifies is the origin's certificate, relayed untouched.
    let other = cert(dir.path(), "other");
    let mut cmd = python();
    cmd.arg(py_dir().join("curl_h3.py"))
        .arg("--ca")
        .arg(&other.cert_path)
        .args(["--port", &port.to_string(), "GET:/untrusted"]);
    let (ok, stdout, _) =
        tokio::task::spawn_blocking(move || run_bounded(cmd, Duration::from_secs(60)))
            .await
            .expect("join");
    assert!(
        !ok,
        "curl accepted a certificate it does not trust: {stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_aioquic_client_verifies_the_quinn_backend() {
    require_python_modules(&["aioquic"]);
    let pt = one_backend("q", "").await;
    let (c, target) = (&pt.c, pt.target);
    let size = 256 << 10;
    let report = aioquic_client(
        &c.cert_path,
        target.port(),
        &["GET:/one", "GET:/two", &format!("POST:/echo:{size}")],
    )
    .await;
    assert_eq!(report["alpn"], "h3", "{report}");
    let responses = report["responses"].as_array().expect("responses");
    assert_eq!(responses.len(), 3, "{report}");
    for r in responses {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["headers"]["x-backend"], "q", "{r}");
    }
    assert_eq!(responses[0]["body"], "backend q /one\n");
    assert_eq!(responses[2]["body_len"], size, "{}", responses[2]);
    assert_eq!(responses[2]["checksum_ok"], true, "{}", responses[2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_ngtcp2_client_survives_nat_rebinding() {
    let pt = one_backend("q", "").await;
    let target = pt.target;
    let port = target.port().to_string();
    let download = scratch();
    let mut cmd = Command::new("gtlsclient");
    // The request goes out a second after the handshake, after the
    // client moved to a new local port without path validation (what a
    // NAT rebinding looks like to both ends).
    cmd.args([
        "--no-quic-dump",
        "--change-local-addr=300ms",
        "--nat-rebinding",
        "--delay-stream=1s",
        "--exit-on-all-streams-close",
        "--timeout=10s",
    ])
    .arg(format!("--download={}", download.path().display()))
    .args([
        "127.0.0.1",
        &port,
        &format!("https://localhost:{port}/rebound"),
    ]);
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let (ok, out, err) = run_bounded(cmd, Duration::from_secs(30));
        (ok, out, err)
    })
    .await
    .expect("join");
    let log = format!("{stdout}\n{stderr}");
    assert!(
        ok,
        "gtlsclient failed (install Debian package ngtcp2-client):\n{log}"
    );
    assert!(log.contains("Local address is now"), "no rebinding:\n{log}");
    assert!(
        log.contains(":status: 200"),
        "no answer after rebinding:\n{log}"
    );
    let body = std::fs::read_to_string(download.path().join("rebound")).unwrap_or_default();
    assert_eq!(body, "backend q /rebound\n");
}
