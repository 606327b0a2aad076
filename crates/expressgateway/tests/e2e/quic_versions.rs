//! QUIC versions (issue 15 item 2) on `quic` listeners and on the gateway's
//! own QUIC legs to backends (the HTTP/3 connector, Mode B), and the close a
//! gateway-abandoned handshake carries (item 3), with real peers: aioquic
//! (`py/quic_version.py`), which speaks QUIC v2 (RFC 9369) and compatible
//! version negotiation (RFC 9368) as client and as server, and ngtcp2's
//! `gtlsclient` (Debian `ngtcp2-client` 0.12.1), which sends and checks the
//! version_information transport parameter but knows only the pre-RFC v2
//! draft (0x709a50c4), so it is the v1 client here.

use std::process::Command;
use std::time::Duration;

use crate::h3_thirdparty::{py_dir, python, require_python_modules, run_bounded, run_json, Killed};
use crate::support::http::HttpBackend;
use crate::support::quic::mode_b_listener;
use crate::support::tls::cert;
use crate::support::*;
use crate::websocket_h2h3::{port_line, py_serve, spawn_origin};

const V1: &str = "0x1";
const V2: &str = "0x6b3343cf";

/// An HTTP backend named `name` behind a `quic` (HTTP/3) listener, with
/// `quic` (more `[listeners.quic]` keys); the scratch folder (its `ca.pem`
/// trusts the listener) lives as long as the gateway.
async fn h3_gateway(name: &'static str, quic: &str) -> (HttpBackend, Gateway, std::path::PathBuf) {
    let backend = HttpBackend::start(name).await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    std::fs::write(dir.path().join("ca.pem"), &c.cert_pem).expect("write ca");
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n{quic}\
         [[listeners.backends]]\naddress = \"{}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
        backend.addr
    );
    let path = dir.path().to_path_buf();
    (backend, Gateway::start_in(dir, &config), path)
}

/// The gateway's certificate, trusted by the `ca.pem` next to it.
fn front_cert(dir: &std::path::Path) -> eg_tls::SelfSigned {
    let front = cert(dir, "front");
    std::fs::write(dir.join("ca.pem"), &front.cert_pem).expect("write ca");
    front
}

/// `py/quic_version.py MODE` as a client of `port` trusting `dir/ca.pem`,
/// offering `versions` (best first), waiting up to 8 s.
fn quic_version_client(mode: &str, dir: &std::path::Path, port: u16, versions: &str) -> Command {
    let mut cmd = python();
    cmd.arg(py_dir().join("quic_version.py"))
        .arg(mode)
        .arg("--ca")
        .arg(dir.join("ca.pem"))
        .args(["--port", &port.to_string(), "--versions", versions])
        .args(["--wait", "8"]);
    cmd
}

/// aioquic GETs `/` on `port` offering `versions` from a first Initial in
/// `original`; returns its report.
async fn aioquic_get(
    dir: &std::path::Path,
    port: u16,
    versions: &str,
    original: &str,
) -> serde_json::Value {
    let mut cmd = quic_version_client("get", dir, port, versions);
    cmd.args(["--original", original]);
    run_json(cmd, "aioquic QUIC version client", Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_only_client_is_served_in_v2() {
    require_python_modules(&["aioquic"]);
    // With a stateless Retry first too: v2's Retry type bits and integrity
    // key (RFC 9369 §3.2, §3.3.3), which aioquic checks.
    for retry in ["never", "always"] {
        let (backend, gw, path) = h3_gateway("v2", &format!("retry = \"{retry}\"\n")).await;
        let report = aioquic_get(&path, gw.addr(0).port(), V2, V2).await;
        assert_eq!(report["version"], V2, "retry {retry}: {report}");
        assert_eq!(report["status"], 200, "retry {retry}: {report}");
        // and a v1 client offering v2, moved after its Retry
        let report = aioquic_get(&path, gw.addr(0).port(), &format!("{V2},{V1}"), V1).await;
        assert_eq!(report["version"], V2, "retry {retry}: {report}");
        assert_eq!(backend.hits(), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_client_offering_v2_is_moved_to_v2() {
    require_python_modules(&["aioquic"]);
    let (_backend, gw, path) = h3_gateway("compat", "").await;
    // Its first Initial is v1; its version_information offers v1 and v2.
    // The gateway answers in v2 and the connection runs in v2, without the
    // round trip a Version Negotiation packet would cost.
    for offer in [format!("{V1},{V2}"), format!("{V2},{V1}")] {
        let report = aioquic_get(&path, gw.addr(0).port(), &offer, V1).await;
        assert_eq!(report["original"], V1, "{report}");
        assert_eq!(report["version"], V2, "offer {offer}: {report}");
        assert_eq!(report["status"], 200, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_only_clients_stay_on_v1() {
    require_python_modules(&["aioquic"]);
    let (backend, gw, path) = h3_gateway("v1", "").await;
    let port = gw.addr(0).port();
    let report = aioquic_get(&path, port, V1, V1).await;
    assert_eq!(report["version"], V1, "{report}");
    assert_eq!(report["status"], 200, "{report}");

    // gtlsclient sends version_information and refuses a server whose own
    // is wrong (ngtcp2 checks the server's Chosen Version); an offer of
    // the v2 draft, which is not compatible with v1 here, keeps v1.
    for extra in [&[][..], &["--other-versions=v1,v2draft"][..]] {
        let mut cmd = Command::new("gtlsclient");
        cmd.args(extra)
            .args(["--exit-on-all-streams-close", "--timeout=5s"])
            .args(["127.0.0.1", &port.to_string(), "https://localhost/"]);
        let (ok, out, err) =
            tokio::task::spawn_blocking(move || run_bounded(cmd, Duration::from_secs(10)))
                .await
                .expect("join");
        assert!(ok, "gtlsclient {extra:?} failed:\n{err}\n{out}");
        let all = format!("{out}{err}");
        assert!(
            all.contains("the negotiated version is 0x00000001"),
            "gtlsclient {extra:?} did not run v1:\n{all}"
        );
        assert!(all.contains("[:status: 200]"), "no 200:\n{all}");
    }
    assert_eq!(backend.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_b_relays_a_v2_client() {
    use crate::support::h3::H3Backend;
    require_python_modules(&["aioquic"]);
    let dir = scratch();
    let backend_cert = cert(dir.path(), "backend");
    let front = front_cert(dir.path());
    let backend = H3Backend::start("origin", &backend_cert).await;
    let config = mode_b_listener(&front, backend.addr, &backend_cert.cert_path);
    let path = dir.path().to_path_buf();
    let gw = Gateway::start_in(dir, &config);
    let port = gw.addr(0).port();
    // v2 from the first packet, and v2 reached by compatible negotiation
    // (the backend leg, to our quinn H3 backend, is moved to v2 as well).
    for (versions, original) in [(V2.to_owned(), V2), (format!("{V1},{V2}"), V1)] {
        let report = aioquic_get(&path, port, &versions, original).await;
        assert_eq!(report["version"], V2, "{report}");
        assert_eq!(report["status"], 200, "{report}");
    }
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A short handshake deadline; the QUIC idle timeout (30 s by default)
/// stays longer, so it is the gateway's deadline that ends the handshake.
const SHORT_HANDSHAKE: &str = "handshake_timeout_ms = 1000\n";

/// aioquic starts a handshake on `port` that never completes; returns the
/// first CONNECTION_CLOSE it received.
async fn stalled_handshake_close(
    dir: &std::path::Path,
    port: u16,
    versions: &str,
) -> serde_json::Value {
    let cmd = quic_version_client("stall", dir, port, versions);
    let report = run_json(cmd, "aioquic stalled handshake", Duration::from_secs(10)).await;
    report["closes"][0].clone()
}

/// A transport close (CONNECTION_CLOSE 0x1c) with CONNECTION_REFUSED, not
/// APPLICATION_ERROR (0xc), in a handshake packet (the client has no 1-RTT
/// keys).
fn assert_refused(close: &serde_json::Value, what: &str) {
    assert_eq!(close["error_space"], "transport", "{what}: {close}");
    assert_eq!(close["error_code"], 2, "{what}: {close}");
    let space = close["packet_type"].as_str().unwrap_or_default();
    assert!(["initial", "handshake"].contains(&space), "{what}: {close}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_handshake_is_closed_with_connection_refused() {
    require_python_modules(&["aioquic"]);
    // The HTTP/3 front drops the `Connecting` at its deadline; with 0-RTT
    // on it closes the connection it already has.
    for quic in [
        SHORT_HANDSHAKE.to_owned(),
        format!("{SHORT_HANDSHAKE}allow_0rtt = true\n"),
    ] {
        let (backend, gw, path) = h3_gateway("never", &quic).await;
        // Offering v1 only, then v2 too (the close then travels in v2).
        for versions in [V1.to_owned(), format!("{V1},{V2}")] {
            let close = stalled_handshake_close(&path, gw.addr(0).port(), &versions).await;
            assert_refused(&close, &format!("{quic} offering {versions}"));
        }
        assert_eq!(backend.hits(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_b_abandoned_handshake_is_closed_with_connection_refused() {
    require_python_modules(&["aioquic"]);
    let dir = scratch();
    let front = front_cert(dir.path());
    // The relay never dials its backend: the client's handshake is cut first.
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n{SHORT_HANDSHAKE}\
         [listeners.quic.raw_proxy]\nbackend_addr = \"127.0.0.1:9\"\nsni = \"localhost\"\n\
         backend_ca_path = \"{}\"\n",
        front.cert_path.display(),
        front.key_path.display(),
        front.cert_path.display(),
    );
    let path = dir.path().to_path_buf();
    let gw = Gateway::start_in(dir, &config);
    let close = stalled_handshake_close(&path, gw.addr(0).port(), &format!("{V1},{V2}")).await;
    assert_refused(&close, "Mode B");
}

/// An aioquic HTTP/3 backend offering `versions` (its preference order)
/// that answers every request with "version=0x..", the version of the
/// gateway's connection to it.
struct VersionBackend {
    _child: Killed,
    addr: std::net::SocketAddr,
}

impl VersionBackend {
    fn start(c: &eg_tls::SelfSigned, versions: &str) -> Self {
        let mut cmd = py_serve("quic_version.py", c);
        cmd.args(["--versions", versions]);
        let (child, port) = spawn_origin(cmd, port_line);
        Self {
            _child: child,
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }
}

/// A v2-capable backend (preferring v2) and a v1-only one.
fn version_backends(dir: &std::path::Path) -> (eg_tls::SelfSigned, VersionBackend, VersionBackend) {
    let c = cert(dir, "backend");
    let v2 = VersionBackend::start(&c, &format!("{V2},{V1}"));
    let v1 = VersionBackend::start(&c, V1);
    (c, v2, v1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h3_connector_offers_v2_and_still_reaches_v1_only_backends() {
    use crate::support::http::{client, get, send, ClientProto};
    require_python_modules(&["aioquic"]);
    let dir = scratch();
    let (c, v2, v1) = version_backends(dir.path());
    let mut config = String::new();
    for backend in [&v2, &v1] {
        config.push_str(&format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{}\"\nprotocol = \"h3\"\ntls_ca_path = \"{}\"\n",
            backend.addr,
            c.cert_path.display()
        ));
    }
    let gw = Gateway::start_in(dir, &config);
    let cl = client(ClientProto::H1);
    // The connector's first flight is v1 and offers v2: the v2 backend
    // moves it to v2, the v1-only one answers in v1.
    for (listener, expected) in [(0, V2), (1, V1)] {
        let r = send(&cl, get(&format!("http://{}/", gw.addr(listener)))).await;
        assert_eq!(r.status, ::http::StatusCode::OK);
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            format!("version={expected}"),
            "backend leg of listener {listener}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_b_backend_leg_offers_v2_and_still_reaches_v1_only_backends() {
    require_python_modules(&["aioquic"]);
    let dir = scratch();
    let (c, v2, v1) = version_backends(dir.path());
    let front = front_cert(dir.path());
    let mut config = String::new();
    for backend in [&v2, &v1] {
        config.push_str(&mode_b_listener(&front, backend.addr, &c.cert_path));
    }
    let path = dir.path().to_path_buf();
    let gw = Gateway::start_in(dir, &config);
    // A v1-only client: the client leg stays v1; the backend leg is what
    // the backend makes of the relay's v1 first flight offering v2.
    for (listener, expected) in [(0, V2), (1, V1)] {
        let report = aioquic_get(&path, gw.addr(listener).port(), V1, V1).await;
        assert_eq!(report["version"], V1, "{report}");
        assert_eq!(report["status"], 200, "{report}");
        assert_eq!(report["body"], format!("version={expected}"), "{report}");
    }
}
