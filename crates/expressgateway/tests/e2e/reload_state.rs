//! Reloads keep what the gateway learned: an operator's drain, an active
//! check's DOWN verdict, a passive ejection, pooled upstream connections
//! and TLS session tickets survive SIGHUP and SIGUSR1.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::http::{client, get, send, text, ClientProto, HttpBackend};
use crate::support::probe::ProbeBackend;
use crate::support::raw_h1::*;
use crate::support::*;

/// Listener 0: `checked` with active HTTP checks; listener 1: `ejecting`
/// with passive health only; weights as given (a reload changes them);
/// active checks every `interval_ms`.
fn config(
    checked: &[SocketAddr],
    ejecting: &[SocketAddr],
    weight: u32,
    interval_ms: u64,
) -> String {
    let backends = |list: &[SocketAddr]| -> String {
        list.iter()
            .map(|b| format!("[[listeners.backends]]\naddress = \"{b}\"\nweight = {weight}\n"))
            .collect()
    };
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"checked\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = {interval_ms}\n\
         timeout_ms = 90\nrise = 1\nfall = 1\n{}\
         [[listeners]]\nname = \"ejecting\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.outlier_detection]\nconsecutive_failures = 1\nbase_ejection_ms = 600000\nmax_ejection_ms = 600000\n{}",
        backends(checked),
        backends(ejecting),
    )
}

async fn get_n(addr: SocketAddr, n: usize) {
    for i in 0..n {
        let _ = exchange(
            addr,
            format!("GET /r{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_down_verdict_and_ejection_survive_reloads_and_rotation() {
    let drained = HttpBackend::start("drained").await;
    let down = HttpBackend::start("down").await;
    let good = HttpBackend::start("good").await;
    let cutting = ProbeBackend::start().await;
    cutting.seen.cut_bodies.store(true, Ordering::SeqCst);
    let steady = ProbeBackend::start().await;
    let checked = [drained.addr, down.addr, good.addr];
    let ejecting = [cutting.addr, steady.addr];
    // Checks every 100 ms at first, so the DOWN verdict is learnt quickly.
    let gw = Gateway::start(&config(&checked, &ejecting, 1, 100));
    let admin = gw.addr(2);
    // An operator drains one; another fails its checks; one cuts a body.
    let cl = client(ClientProto::H1);
    let drain = ::http::Request::post(format!(
        "http://{admin}/api/v1/pools/checked%2Fdefault/backends/{}/drain",
        drained.addr
    ))
    .body(text(""))
    .expect("request");
    assert_eq!(send(&cl, drain).await.status, 200);
    down.seen.health_status.store(503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    get_n(gw.addr(1), 4).await;
    let cut_before = cutting.seen.requests.load(Ordering::SeqCst);
    assert_eq!(cut_before, 1, "ejected after its first cut body");

    for round in 0..6 {
        if round == 5 {
            gw.signal("USR1");
        } else {
            // The reloaded generations check once a minute: within this
            // test they never probe, so the DOWN backend is kept out only
            // by the verdict carried across the reload, not re-learnt.
            std::fs::write(
                gw.config_path(),
                config(&checked, &ejecting, 2 + round, 60_000),
            )
            .expect("rewrite");
            gw.signal("HUP");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        // (Health probes still reach the drained and DOWN backends: ask
        // who answered each request instead of counting their hits.)
        for i in 0..6 {
            let r = send(&cl, get(&format!("http://{}/r{i}", gw.addr(0)))).await;
            let who = r.headers.get("x-backend").map(|v| v.as_bytes().to_vec());
            assert_eq!(
                who.as_deref(),
                Some(&b"good"[..]),
                "round {round}: only the healthy, undrained backend serves"
            );
        }
        get_n(gw.addr(1), 6).await;
        assert_eq!(
            cutting.seen.requests.load(Ordering::SeqCst),
            cut_before,
            "round {round}: the ejected backend served again"
        );
    }
    let m = crate::support::probe::metrics_text(&gw).await;
    assert!(
        m.contains("expressgateway_config_reloads_total{result=\"ok\"} 5"),
        "every reload applied: {m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_upstream_connections_are_reused_across_a_reload() {
    let probe = ProbeBackend::start().await;
    let cfg = |weight: u32| {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [listeners.connection_pool]\nidle_timeout_ms = 60000\n\
             [[listeners.backends]]\naddress = \"{}\"\nweight = {weight}\n",
            probe.addr
        )
    };
    let gw = Gateway::start(&cfg(1));
    get_n(gw.addr(0), 3).await;
    assert_eq!(probe.seen.accepted.load(Ordering::SeqCst), 1);
    for weight in 2..5 {
        std::fs::write(gw.config_path(), cfg(weight)).expect("rewrite");
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(200)).await;
        get_n(gw.addr(0), 3).await;
    }
    assert_eq!(
        probe.seen.accepted.load(Ordering::SeqCst),
        1,
        "3 reloads and 12 requests on the one pooled connection"
    );
}

/// One TLS connection through the `tls` listener to the echo backend;
/// whether the handshake resumed an earlier session.
async fn tls_echo_resumed(connector: &tokio_rustls::TlsConnector, addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = crate::support::tls::connect(connector, addr)
        .await
        .expect("tls connect");
    let resumed = s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    // An exchange, so the client takes the TLS 1.3 tickets sent after the
    // handshake.
    s.write_all(b"ping").await.expect("write");
    let mut four = [0u8; 4];
    s.read_exact(&mut four).await.expect("echo");
    resumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sessions_resume_across_reload_and_rotation() {
    let echo = echo_server().await;
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tls\"\n[listeners.tls]\n\
         cert_path = \"{}\"\nkey_path = \"{}\"\n[[listeners.backends]]\naddress = \"{echo}\"\n",
        c.cert_path.display(),
        c.key_path.display()
    );
    let gw = Gateway::start_in(dir, &config);
    let connector = crate::support::tls::client(&c.cert_pem, &[&rustls::version::TLS13]);
    assert!(
        !tls_echo_resumed(&connector, gw.addr(0)).await,
        "first: full"
    );
    assert!(
        tls_echo_resumed(&connector, gw.addr(0)).await,
        "second: resumed"
    );
    for signal in ["USR1", "HUP"] {
        gw.signal(signal);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            tls_echo_resumed(&connector, gw.addr(0)).await,
            "a ticket issued before SIG{signal} still resumes after it"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_opened_before_a_reload_follow_the_new_pool() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let cfg = |backend: SocketAddr| {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{backend}\"\n"
        )
    };
    let gw = Gateway::start(&cfg(a.addr));
    let url = format!("http://{}/r", gw.addr(0));
    // One HTTP/2 connection and one HTTP/1.1 keep-alive connection, both
    // opened before the reload and reused after it.
    let (h2, h1) = (client(ClientProto::H2c), client(ClientProto::H1));
    let who = |r: crate::support::http::Collected| {
        r.headers
            .get("x-backend")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    for c in [&h2, &h1] {
        assert_eq!(who(send(c, get(&url)).await).as_deref(), Some("a"));
    }
    std::fs::write(gw.config_path(), cfg(b.addr)).expect("rewrite");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let a_before = a.hits();
    for c in [&h2, &h1] {
        for _ in 0..3 {
            assert_eq!(
                who(send(c, get(&url)).await).as_deref(),
                Some("b"),
                "an old connection still sent to the removed backend"
            );
        }
    }
    assert_eq!(a.hits(), a_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_checks_keep_their_pace_under_reloads_faster_than_their_interval() {
    let failing = HttpBackend::start("failing").await;
    let good = HttpBackend::start("good").await;
    failing.seen.health_status.store(503, Ordering::SeqCst);
    let cfg = |weight: u32| {
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [listeners.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 400\n\
             timeout_ms = 300\nrise = 1\nfall = 2\n\
             [[listeners.backends]]\naddress = \"{}\"\nweight = {weight}\n\
             [[listeners.backends]]\naddress = \"{}\"\nweight = {weight}\n",
            failing.addr, good.addr
        )
    };
    let gw = Gateway::start(&cfg(1));
    // A reload every 150 ms for 3 s: each generation lives less than one
    // check interval. The two failures `fall` needs must still be probed
    // (and counted across generations).
    for n in 0..20 {
        std::fs::write(gw.config_path(), cfg(2 + n % 3)).expect("rewrite");
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    // Straight after the last reload, within one interval of it.
    let cl = client(ClientProto::H1);
    for i in 0..6 {
        let r = send(&cl, get(&format!("http://{}/s{i}", gw.addr(0)))).await;
        assert_eq!(
            r.headers.get("x-backend").map(|v| v.as_bytes()),
            Some(&b"good"[..]),
            "the failing backend was never found DOWN under the reloads"
        );
    }
}
