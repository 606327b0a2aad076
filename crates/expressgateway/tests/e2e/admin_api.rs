//! The admin API as an operator uses it: the bearer token, per-backend
//! metrics that follow the pools, percent-encoded names.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::http::{client, get, send, text, ClientProto, HttpBackend};
use crate::support::probe::metrics_text;
use crate::support::raw_h1::*;
use crate::support::*;

fn admin_addr(gw: &Gateway) -> SocketAddr {
    gw.listeners
        .iter()
        .find(|l| l.name == "admin")
        .expect("admin listener")
        .address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_asked_of_loopback_clients_too() {
    let backend = HttpBackend::start("a").await;
    let gw = Gateway::start(&format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [admin]\napi_token_hash = \"{}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        api_token_hash("s3cret"),
        backend.addr
    ));
    let admin = admin_addr(&gw);
    let cl = client(ClientProto::H1);
    for path in ["/metrics", "/api/v1/pools", "/readyz"] {
        let url = format!("http://{admin}{path}");
        assert_eq!(
            send(&cl, get(&url)).await.status,
            401,
            "{path} without a token"
        );
        let wrong = ::http::Request::get(&url)
            .header("authorization", "Bearer guess")
            .body(text(""))
            .expect("request");
        assert_eq!(
            send(&cl, wrong).await.status,
            401,
            "{path} with a wrong token"
        );
        let right = ::http::Request::get(&url)
            .header("authorization", "Bearer s3cret")
            .body(text(""))
            .expect("request");
        assert_eq!(send(&cl, right).await.status, 200, "{path} with the token");
    }
}

fn series(metrics: &str, name: &str, backend: SocketAddr) -> Option<u64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("backend=\"{backend}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .reduce(|a, b| a + b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_metrics_follow_the_pools() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let cfg = |backends: &[SocketAddr]| {
        let list: String = backends
            .iter()
            .map(|x| format!("[[listeners.backends]]\naddress = \"{x}\"\n"))
            .collect();
        format!(
            "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [listeners.outlier_detection]\nconsecutive_failures = 1\n{list}"
        )
    };
    let gw = Gateway::start(&cfg(&[a.addr, b.addr]));
    for i in 0..10 {
        let r = exchange(
            gw.addr(0),
            format!("GET /m{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(matches!(&r, Ok(r) if r.status == 200), "{}", verdict(&r));
    }
    let m = metrics_text(&gw).await;
    assert_eq!(
        series(&m, "expressgateway_backend_up{", a.addr),
        Some(1),
        "{m}"
    );
    let to_a = series(&m, "expressgateway_backend_requests_total{", a.addr).unwrap_or(0);
    let to_b = series(&m, "expressgateway_backend_requests_total{", b.addr).unwrap_or(0);
    assert_eq!(to_a + to_b, 10, "exactly the requests made: {m}");

    // `a` dies: its next request fails over, ejecting it.
    let dead = a.kill();
    for i in 0..4 {
        let _ = exchange(
            gw.addr(0),
            format!("GET /d{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
    }
    let m = metrics_text(&gw).await;
    assert_eq!(
        series(&m, "expressgateway_backend_up{", dead),
        Some(0),
        "{m}"
    );
    assert_eq!(
        series(&m, "expressgateway_backend_ejections_total{", dead),
        Some(1),
        "{m}"
    );

    // Removed from the config: no series of it remain.
    std::fs::write(gw.config_path(), cfg(&[b.addr])).expect("rewrite");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = metrics_text(&gw).await;
    assert!(
        !m.contains(&format!("backend=\"{dead}\"")),
        "a removed backend's series linger: {m}"
    );
    assert_eq!(series(&m, "expressgateway_backend_up{", b.addr), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_checks_of_an_h3_pool_are_sent_over_http3() {
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    let good = crate::support::h3::H3Backend::start("q", &c).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let dead = silent.local_addr().expect("addr");
    let backend = |a: SocketAddr| {
        format!(
            "[[listeners.backends]]\naddress = \"{a}\"\nprotocol = \"h3\"\ntls = true\n\
             tls_ca_path = \"{}\"\n",
            c.cert_path.display()
        )
    };
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[runtime]\nconnect_timeout_ms = 300\n[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
             [[listeners]]\nname = \"web\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [listeners.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 100\n\
             timeout_ms = 100\nrise = 1\nfall = 1\n{}{}",
            backend(good.addr),
            backend(dead)
        ),
    );
    let m = async || metrics_text(&gw).await;
    let mut verdicts = (None, None);
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = m().await;
        verdicts = (
            series(&text, "expressgateway_backend_up{", good.addr),
            series(&text, "expressgateway_backend_up{", dead),
        );
        if verdicts == (Some(1), Some(0)) {
            break;
        }
    }
    assert_eq!(
        verdicts,
        (Some(1), Some(0)),
        "the HTTP/3 backend passes its check, the silent one fails it"
    );
    let cl = client(ClientProto::H1);
    for _ in 0..5 {
        let r = send(&cl, get(&format!("http://{}/x", gw.addr(0)))).await;
        assert_eq!(r.status, 200);
    }
    drop(silent);
}
