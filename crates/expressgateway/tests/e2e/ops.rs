//! Operations: SIGHUP reload, SIGUSR1 certificate rotation, SIGTERM drain.

use std::time::{Duration, Instant};

use ::http::StatusCode;
use tokio::io::AsyncReadExt;

use crate::support::http::{client, get, send, ClientProto, HttpBackend};
use crate::support::tls::{cert, client as tls_client, connect};
use crate::support::*;

/// SHA-256 of a certificate's DER: what an operator compares.
fn fingerprint(der: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(der).to_vec()
}

fn pem_fingerprint(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
    fingerprint(&der)
}

/// The fingerprint of the leaf the server presented on `s`.
fn served(s: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    let leaf = s
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate");
    fingerprint(leaf)
}

/// One byte through an echo relay on `s`.
async fn echo_once(s: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, byte: u8) {
    tokio::io::AsyncWriteExt::write_all(s, &[byte])
        .await
        .expect("write");
    let mut one = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut one))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(one, [byte]);
}

fn h1_config(backend: std::net::SocketAddr, extra: &str) -> String {
    format!("{extra}\n[[listeners]]\naddress = \"127.0.0.1:PORT\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"{backend}\"\n")
}

/// Poll `check` until it holds or 5 s pass.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_backends_and_an_invalid_file_changes_nothing() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    // A fixed port lets the rewritten file keep the same listener address.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let gw = Gateway::start(&h1_config(a.addr, "").replace("PORT", &port.to_string()));
    let url = format!("http://{}/r", gw.addr(0));
    let cl = client(ClientProto::H1);
    let who = |r: crate::support::http::Collected| {
        r.headers.get("x-backend").map(|v| v.as_bytes().to_vec())
    };
    assert_eq!(who(send(&cl, get(&url)).await), Some(b"a".to_vec()));

    std::fs::write(
        gw.config_path(),
        h1_config(b.addr, "").replace("PORT", &port.to_string()),
    )
    .expect("rewrite");
    gw.signal("HUP");
    // Open connections keep the settings they started with: ask on new ones.
    let url2 = url.clone();
    assert!(
        eventually(
            async || who(send(&client(ClientProto::H1), get(&url2)).await) == Some(b"b".to_vec())
        )
        .await,
        "reload never moved new connections to b"
    );

    std::fs::write(gw.config_path(), "[[listeners]]\nbogus = 1\n").expect("rewrite");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..5 {
        let fresh = client(ClientProto::H1);
        assert_eq!(
            who(send(&fresh, get(&url)).await),
            Some(b"b".to_vec()),
            "an invalid file must change nothing"
        );
    }
    assert!(
        gw.stderr().contains("rejected"),
        "the rejection is logged: {}",
        gw.stderr()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_rotates_certificates_and_keeps_them_on_failure() {
    let echo = echo_server().await;
    let dir = scratch();
    let first = cert(dir.path(), "first");
    let (cert_path, key_path) = (dir.path().join("live.crt"), dir.path().join("live.key"));
    let install = |c: &eg_tls::SelfSigned| {
        std::fs::copy(&c.cert_path, &cert_path).expect("cert");
        std::fs::copy(&c.key_path, &key_path).expect("key");
    };
    install(&first);
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tls\"\n[listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n[[listeners.backends]]\naddress = \"{echo}\"\n",
        cert_path.display(),
        key_path.display()
    );
    let second = cert(dir.path(), "second");
    let second_pem = second.cert_pem.clone();
    let gw = Gateway::start_in(dir, &config);
    let trusts_second = tls_client(&second_pem, &[&rustls::version::TLS13]);
    assert!(
        connect(&trusts_second, gw.addr(0)).await.is_err(),
        "still the first certificate"
    );
    // Opened before the rotation: it must keep working after it.
    let trusts_first = tls_client(&first.cert_pem, &[&rustls::version::TLS13]);
    let mut before = connect(&trusts_first, gw.addr(0))
        .await
        .expect("first certificate served");
    assert_eq!(served(&before), pem_fingerprint(&first.cert_pem));
    echo_once(&mut before, b'a').await;

    install(&second);
    gw.signal("USR1");
    assert!(
        eventually(async || connect(&trusts_second, gw.addr(0)).await.is_ok()).await,
        "SIGUSR1 did not rotate to the second certificate"
    );
    let after = connect(&trusts_second, gw.addr(0)).await.expect("second");
    assert_eq!(
        served(&after),
        pem_fingerprint(&second_pem),
        "new handshakes get exactly the second certificate"
    );
    assert_ne!(served(&after), served(&before));
    echo_once(&mut before, b'b').await;

    // A broken key: rotation is refused and the second certificate stays.
    std::fs::write(&key_path, "not a key").expect("break");
    gw.signal("USR1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut s = connect(&trusts_second, gw.addr(0))
        .await
        .expect("old certificate still served");
    assert_eq!(served(&s), pem_fingerprint(&second_pem));
    echo_once(&mut s, b'x').await;
    // The connection from before both signals still relays.
    echo_once(&mut before, b'c').await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readyz_503_then_drains_and_exits() {
    let a = HttpBackend::start("a").await;
    let extra = "[runtime]\nreadiness_settle_ms = 800\ndrain_timeout_ms = 2000\n[observability]\nmetrics_bind = \"127.0.0.1:0\"";
    let mut gw = Gateway::start(&h1_config(a.addr, extra).replace("PORT", "0"));
    let admin = gw
        .listeners
        .iter()
        .find(|l| l.name == "admin")
        .expect("admin")
        .address;
    let cl = client(ClientProto::H1);
    assert_eq!(
        send(&cl, get(&format!("http://{admin}/readyz")))
            .await
            .status,
        StatusCode::OK
    );
    gw.signal("TERM");
    let ready = format!("http://{admin}/readyz");
    let cl2 = cl.clone();
    assert!(
        eventually(async || send(&cl2, get(&ready)).await.status == StatusCode::SERVICE_UNAVAILABLE).await,
        "/readyz never turned 503"
    );
    // Still serving traffic during the settle window.
    assert_eq!(
        send(&cl, get(&format!("http://{}/x", gw.addr(0))))
            .await
            .status,
        StatusCode::OK
    );
    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0), "clean exit after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_budget_starts_after_the_readiness_settle() {
    // Settle longer than the budget (as the defaults, 11 s and 10 s): a
    // request in flight across the settle still gets the whole budget
    // once the listeners stop accepting.
    let a = HttpBackend::start("a").await;
    a.seen
        .delay_ms
        .store(1800, std::sync::atomic::Ordering::SeqCst);
    let extra = "[runtime]\nreadiness_settle_ms = 1500\ndrain_timeout_ms = 1000\n[observability]\nmetrics_bind = \"127.0.0.1:0\"";
    let mut gw = Gateway::start(&h1_config(a.addr, extra).replace("PORT", "0"));
    let url = format!("http://{}/x", gw.addr(0));
    let cl = client(ClientProto::H1);
    let slow = tokio::spawn(async move { send(&cl, get(&url)).await.status });
    tokio::time::sleep(Duration::from_millis(100)).await;
    gw.signal("TERM");
    assert_eq!(
        slow.await.expect("request task"),
        StatusCode::OK,
        "the request in flight was cut before its budget"
    );
    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(10)));
    assert_eq!(code, Some(0), "clean exit after the drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_rereads_a_backend_ca_file_rotated_in_place() {
    let dir = scratch();
    let served = cert(dir.path(), "backend");
    let unrelated = cert(dir.path(), "unrelated");
    let ca = dir.path().join("backend-ca.pem");
    std::fs::copy(&served.cert_path, &ca).expect("ca");
    let backend = HttpBackend::start_with_tls("tls", Some(&served)).await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\ntls = true\ntls_ca_path = \"{}\"\n",
        backend.addr,
        ca.display()
    );
    let gw = Gateway::start_in(dir, &config);
    let url = format!("http://{}/ca", gw.addr(0));
    let status = async || send(&client(ClientProto::H1), get(&url)).await.status;
    assert_eq!(status().await, StatusCode::OK, "the backend is trusted");
    // The same path now holds a CA that did not sign the backend: after
    // SIGUSR1 the gateway verifies against it (no pooled connection made
    // under the old CA is reused).
    std::fs::copy(&unrelated.cert_path, &ca).expect("rotate ca");
    gw.signal("USR1");
    assert!(
        eventually(async || status().await == StatusCode::BAD_GATEWAY).await,
        "the rotated CA file was not re-read"
    );
    std::fs::copy(&served.cert_path, &ca).expect("restore ca");
    gw.signal("USR1");
    assert!(
        eventually(async || status().await == StatusCode::OK).await,
        "the restored CA file was not re-read"
    );
}
