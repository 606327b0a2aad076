//! QUIC hygiene on the `quic` listener: Retry and its persisted key,
//! connection recycling, verified h3 upstreams; and the admin listener.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ::http::{Method, StatusCode};
use bytes::Bytes;

use crate::support::h3::{H3Backend, H3Client};
use crate::support::http::{client, get, send, ClientProto, HttpBackend};
use crate::support::tls::cert;
use crate::support::*;

fn quic_config(c: &eg_tls::SelfSigned, quic_extra: &str, backend: &str, top: &str) -> String {
    format!(
        "{top}\n[observability]\nmetrics_bind = \"127.0.0.1:0\"\n[[listeners]]\nname = \"q\"\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n[listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n{quic_extra}\n[[listeners.backends]]\naddress = \"{backend}\"\n",
        c.cert_path.display(),
        c.key_path.display()
    )
}

async fn metrics(gw: &Gateway) -> String {
    let admin = gw
        .listeners
        .iter()
        .find(|b| b.name == "admin")
        .expect("admin listener")
        .address;
    let r = send(
        &client(ClientProto::H1),
        get(&format!("http://{admin}/metrics")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_always_validates_then_completes_and_persists_its_key() {
    let backend = HttpBackend::start("b").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let secret = dir.path().join("retry.key");
    let extra = format!(
        "retry = \"always\"\nretry_secret_path = \"{}\"",
        secret.display()
    );
    let gw = Gateway::start_in(dir, &quic_config(&c, &extra, &backend.addr.to_string(), ""));
    let mode = std::fs::metadata(&secret)
        .expect("retry key file created")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "retry key must be private");
    let mut cl = H3Client::new(&c.cert_pem, gw.addr(0));
    let r = cl.send(Method::GET, "/after-retry", Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    let m = metrics(&gw).await;
    let line = m
        .lines()
        .find(|l| l.starts_with("expressgateway_quic_retries_sent_total{listener=\"q\"}"))
        .unwrap_or_default()
        .to_owned();
    let sent: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        sent >= 1.0,
        "a Retry was sent before the handshake: {line:?}"
    );
}

#[test]
fn retry_key_readable_by_others_is_refused() {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let secret = dir.path().join("retry.key");
    std::fs::write(&secret, [7u8; 32]).expect("write");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let extra = format!("retry_secret_path = \"{}\"", secret.display());
    let out = run_config_to_exit(dir.path(), &quic_config(&c, &extra, "127.0.0.1:9", ""));
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("retry_secret_path") && out.stderr.contains("chmod 600"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_recycle_after_the_request_cap_without_losing_requests() {
    let backend = HttpBackend::start("b").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let top = "[runtime]\nmax_requests_per_h3_connection = 10";
    let gw = Gateway::start_in(dir, &quic_config(&c, "", &backend.addr.to_string(), top));
    let mut cl = H3Client::new(&c.cert_pem, gw.addr(0));
    for i in 0..100 {
        let r = cl.send(Method::GET, &format!("/r/{i}"), Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK, "request {i}: {}", gw.stderr());
        assert_eq!(r.body, Bytes::from(format!("backend b /r/{i}\n")));
    }
    assert!(
        cl.connections_opened >= 10,
        "recycled {} times",
        cl.connections_opened
    );
    assert_eq!(
        backend.hits(),
        100,
        "each request reached the backend exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_h3_backend_is_refused_unless_verification_is_off() {
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let backend = H3Backend::start("q", &c).await;
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"{a}\"\nprotocol = \"h3\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n[[listeners.backends]]\naddress = \"{a}\"\nprotocol = \"h3\"\ntls_verify_peer = false\n",
        a = backend.addr
    );
    let gw = Gateway::start_in(dir, &config);
    let cl = client(ClientProto::H1);
    let refused = send(&cl, get(&format!("http://{}/x", gw.addr(0)))).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY);
    let allowed = send(&cl, get(&format!("http://{}/x", gw.addr(1)))).await;
    assert_eq!(allowed.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_serves_metrics_probes_and_pool_drain() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let config = format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n[[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n[[listeners.backends]]\naddress = \"{}\"\n",
        a.addr, b.addr
    );
    let gw = Gateway::start(&config);
    let admin = gw
        .listeners
        .iter()
        .find(|l| l.name == "admin")
        .expect("admin")
        .address;
    let cl = client(ClientProto::H1);
    for path in ["/livez", "/readyz", "/startupz", "/healthz"] {
        assert_eq!(
            send(&cl, get(&format!("http://{admin}{path}")))
                .await
                .status,
            StatusCode::OK,
            "{path}"
        );
    }
    let r = send(&cl, get(&format!("http://{}/m", gw.addr(0)))).await;
    assert_eq!(r.status, StatusCode::OK);
    let m = String::from_utf8_lossy(
        &send(&cl, get(&format!("http://{admin}/metrics")))
            .await
            .body,
    )
    .into_owned();
    assert!(m.contains("expressgateway_http_requests_total{cluster=\"web/default\",code_class=\"2xx\",listener=\"web\""), "{m}");
    assert!(m.contains("expressgateway_connections_total{listener=\"web\"}"));
    let pools = send(&cl, get(&format!("http://{admin}/api/v1/pools"))).await;
    let json: serde_json::Value = serde_json::from_slice(&pools.body).expect("json");
    assert_eq!(json["pools"][0]["name"], "web/default");
    // Drain b by hand: all traffic goes to a.
    let drain = ::http::Request::post(format!(
        "http://{admin}/api/v1/pools/web%2Fdefault/backends/{}/drain",
        b.addr
    ))
    .body(crate::support::http::text(""))
    .expect("req");
    let r = send(&cl, drain).await;
    if r.status == StatusCode::NOT_FOUND {
        // Pool names with '/' are addressed unescaped too.
        let drain = ::http::Request::post(format!(
            "http://{admin}/api/v1/pools/web/default/backends/{}/drain",
            b.addr
        ))
        .body(crate::support::http::text(""))
        .expect("req");
        assert_eq!(send(&cl, drain).await.status, StatusCode::OK);
    }
    let before = b.hits();
    for _ in 0..20 {
        send(&cl, get(&format!("http://{}/m", gw.addr(0)))).await;
    }
    assert_eq!(b.hits(), before, "drained backend still served");
    tokio::time::sleep(Duration::from_millis(1)).await;
}
