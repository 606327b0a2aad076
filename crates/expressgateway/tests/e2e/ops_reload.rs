//! A reload never reports `ok` while something was left out: live keys
//! (admission caps, the admin token) take effect at once, keys fixed at
//! start are named and the reload counted `restart_required`; a second
//! SIGTERM during the drain exits at once.

use std::time::Duration;

use crate::support::http::{client, get, send, ClientProto, HttpBackend};
use crate::support::probe::metrics_text;
use crate::support::*;

fn config(backend: std::net::SocketAddr, runtime: &str, admin: &str) -> String {
    format!(
        "[runtime]\n{runtime}\n[observability]\nmetrics_bind = \"127.0.0.1:0\"\n[admin]\n{admin}\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{backend}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_keys_apply_and_start_only_keys_are_named() {
    let backend = HttpBackend::start("a").await;
    let gw = Gateway::start(&config(backend.addr, "", ""));
    let admin = gw.listeners.last().expect("admin").address;
    let cl = client(ClientProto::H1);
    assert_eq!(
        send(&cl, get(&format!("http://{admin}/readyz")))
            .await
            .status,
        200
    );

    // A token and a lower connection cap: both live.
    let token = format!("api_token_hash = \"{}\"", api_token_hash("s3cret"));
    std::fs::write(
        gw.config_path(),
        config(backend.addr, "max_inflight_connections = 1", &token),
    )
    .expect("rewrite");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        send(&cl, get(&format!("http://{admin}/readyz")))
            .await
            .status,
        401,
        "the new token is asked at once"
    );
    let _held = tokio::net::TcpStream::connect(gw.addr(0))
        .await
        .expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Over the new cap of 1: the second connection is reset at once.
    let refused = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(gw.addr(0)).await?;
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let mut buf = [0u8; 64];
        s.read(&mut buf).await
    };
    let got = tokio::time::timeout(Duration::from_secs(3), refused).await;
    assert!(
        matches!(got, Ok(Ok(0) | Err(_))),
        "the second connection is over the new cap of 1: {got:?}"
    );
    drop(_held);

    // worker_threads is fixed at start: named, and not counted ok.
    std::fs::write(
        gw.config_path(),
        config(backend.addr, "worker_threads = 3", ""),
    )
    .expect("rewrite");
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("expressgateway_config_reloads_total{result=\"restart_required\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("expressgateway_config_reloads_total{result=\"ok\"} 1"),
        "the first reload applied everything: {m}"
    );
    assert!(
        gw.stderr().contains("runtime.worker_threads"),
        "the key is named: {}",
        gw.stderr()
    );
    // The next reload still runs on the threads of the start: it too is
    // restart_required (compared with what runs, not with the last file).
    let named_before = gw.stderr().matches("runtime.worker_threads").count();
    gw.signal("HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = metrics_text(&gw).await;
    assert!(
        m.contains("expressgateway_config_reloads_total{result=\"restart_required\"} 2"),
        "a second reload with the key still unapplied: {m}"
    );
    assert!(
        m.contains("expressgateway_config_reloads_total{result=\"ok\"} 1"),
        "{m}"
    );
    assert!(
        gw.stderr().matches("runtime.worker_threads").count() > named_before,
        "named again: {}",
        gw.stderr()
    );
}

/// Two h1 listeners (and the admin one); `first` is listener 0's address,
/// and its backends have active checks.
fn two_listeners(
    first: &str,
    b0: std::net::SocketAddr,
    b1: std::net::SocketAddr,
    more: &str,
) -> String {
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\naddress = \"{first}\"\nprotocol = \"h1\"\n\
         [listeners.health_check]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = 100\n\
         timeout_ms = 90\nrise = 1\nfall = 1\n\
         [[listeners.backends]]\naddress = \"{b0}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{b1}\"\n{more}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_or_added_listener_keeps_every_reload_restart_required() {
    let a = HttpBackend::start("a").await;
    let b = HttpBackend::start("b").await;
    let gw = Gateway::start(&two_listeners("127.0.0.1:0", a.addr, a.addr, ""));
    let who = |addr: std::net::SocketAddr| async move {
        let r = send(&client(ClientProto::H1), get(&format!("http://{addr}/w"))).await;
        r.headers
            .get("x-backend")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let (l0, l1) = (gw.addr(0), gw.addr(1));
    let counts = async || {
        let m = metrics_text(&gw).await;
        let n = |result: &str| {
            let series = format!("expressgateway_config_reloads_total{{result=\"{result}\"}} ");
            m.lines()
                .find_map(|l| l.strip_prefix(series.as_str())?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (n("ok"), n("restart_required"))
    };
    let reload = async |text: String| {
        std::fs::write(gw.config_path(), text).expect("rewrite");
        gw.signal("HUP");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    // Listener 0 moves (and would change pool); listener 1 changes pool.
    reload(two_listeners("127.0.0.2:0", b.addr, b.addr, "")).await;
    assert_eq!(
        who(l1).await.as_deref(),
        Some("b"),
        "listener 1 still takes its new pool"
    );
    assert_eq!(
        who(l0).await.as_deref(),
        Some("a"),
        "the moved listener keeps its running pool"
    );
    assert_eq!(counts().await, (0, 1));
    assert!(
        gw.stderr().contains("listeners[0].address"),
        "{}",
        gw.stderr()
    );
    // Its running pool is still checked: a failing backend leaves it.
    a.seen
        .health_status
        .store(503, std::sync::atomic::Ordering::SeqCst);
    let mut left = false;
    for _ in 0..40 {
        if who(l0).await.is_none() {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        left,
        "the moved listener's pool is no longer health-checked"
    );
    a.seen
        .health_status
        .store(200, std::sync::atomic::Ordering::SeqCst);

    // A later reload that changes only a live key: listener 0 is still not
    // where the file says, so this one is not ok either.
    reload(two_listeners("127.0.0.2:0", b.addr, a.addr, "")).await;
    assert_eq!(who(l1).await.as_deref(), Some("a"));
    assert_eq!(counts().await, (0, 2), "listener 0 is still unapplied");

    // Back in place, plus a third listener: the added one is named.
    let third = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        b.addr
    );
    reload(two_listeners("127.0.0.1:0", b.addr, a.addr, &third)).await;
    assert_eq!(
        who(l0).await.as_deref(),
        Some("b"),
        "back in place: live again"
    );
    assert_eq!(counts().await, (0, 3));
    assert!(
        gw.stderr().contains("listeners[2] (added"),
        "{}",
        gw.stderr()
    );

    // The file matches what runs again: ok.
    reload(two_listeners("127.0.0.1:0", a.addr, a.addr, "")).await;
    assert_eq!(who(l0).await.as_deref(), Some("a"));
    assert_eq!(counts().await, (1, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let probe = crate::support::probe::ProbeBackend::start().await;
    let mut gw = Gateway::start(&format!(
        "[runtime]\ndrain_timeout_ms = 30000\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        probe.addr
    ));
    // A request that holds the drain open for 20 s.
    let addr = gw.addr(0);
    let held = tokio::spawn(async move {
        crate::support::raw_h1::exchange(addr, b"GET /hold/20000 HTTP/1.1\r\nHost: x\r\n\r\n").await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(5)));
    assert!(
        code.is_some(),
        "still draining 5 s after the second SIGTERM"
    );
    held.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_and_mode_b_relays_in_flight_at_sigterm_keep_working_through_the_drain() {
    use crate::support::quic::{quic_ask, quic_connect, QuicEchoBackend};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let echo = echo_server().await;
    let dir = scratch();
    let backend_cert = crate::support::tls::cert(dir.path(), "backend");
    let quic_backend = QuicEchoBackend::start(&backend_cert, &["eg-test"]).await;
    let front = crate::support::tls::cert(dir.path(), "front");
    let config = format!(
        "[runtime]\ndrain_timeout_ms = 4000\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\n\
         [[listeners.backends]]\naddress = \"{echo}\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [listeners.quic.raw_proxy]\nbackend_addr = \"{}\"\nsni = \"localhost\"\n\
         backend_ca_path = \"{}\"\nalpn = [\"eg-test\"]\n",
        front.cert_path.display(),
        front.key_path.display(),
        quic_backend.addr,
        backend_cert.cert_path.display(),
    );
    let mut gw = Gateway::start_in(dir, &config);
    let mut tcp = tokio::net::TcpStream::connect(gw.addr(0))
        .await
        .expect("connect");
    let quic = quic_connect(gw.addr(1), &front.cert_pem, "eg-test").await;
    assert_eq!(quic_ask(&quic, b"before").await.expect("echo"), b"before");
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Both relays still carry traffic while the gateway drains.
    tcp.write_all(b"ping").await.expect("write");
    let mut four = [0u8; 4];
    tcp.read_exact(&mut four)
        .await
        .expect("L4 echo during the drain");
    assert_eq!(&four, b"ping");
    assert_eq!(
        quic_ask(&quic, b"during")
            .await
            .expect("Mode B echo during the drain"),
        b"during"
    );
    drop(tcp);
    // Mode B is closed at the end of the drain budget, and the process exits.
    let closed = tokio::time::timeout(Duration::from_secs(6), quic.closed()).await;
    assert!(closed.is_ok(), "the Mode B connection outlived the drain");
    let code = tokio::task::block_in_place(|| gw.wait_exit(Duration::from_secs(6)));
    assert!(code.is_some(), "the gateway did not exit after the drain");
}

/// wrk's summary: (requests, non-2xx/3xx responses, socket errors).
fn wrk_totals(out: &str) -> (u64, u64, u64) {
    let number = |line: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.trim_end_matches(',').parse().ok())
            .unwrap_or(0)
    };
    let requests = out
        .lines()
        .find(|l| l.contains("requests in"))
        .map_or(0, number);
    let non_2xx = out
        .lines()
        .find(|l| l.contains("Non-2xx or 3xx responses"))
        .map_or(0, |l| number(l.rsplit(':').next().unwrap_or("")));
    let socket_errors = out
        .lines()
        .find(|l| l.contains("Socket errors"))
        .map_or(0, |l| {
            l.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        });
    (requests, non_2xx, socket_errors)
}

#[test]
fn reloads_every_200ms_under_wrk_load_fail_no_request() {
    assert!(
        std::process::Command::new("wrk")
            .arg("--version")
            .output()
            .is_ok(),
        "wrk is needed (Debian package `wrk`; .ci/run installs it)"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (a, b, c) = rt.block_on(async {
        (
            HttpBackend::start("a").await,
            HttpBackend::start("b").await,
            HttpBackend::start("c").await,
        )
    });
    // Each generation: new weights, and every other one a new pool routed to.
    let generation = |n: u32| {
        let extra = if n % 2 == 1 {
            format!(
                "[[listeners.routes]]\npath_prefix = \"/extra/\"\ncluster = \"extra\"\n\
                 [[clusters]]\nname = \"extra\"\n[[clusters.backends]]\naddress = \"{}\"\n",
                c.addr
            )
        } else {
            String::new()
        };
        format!(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
             [[listeners.backends]]\naddress = \"{}\"\nweight = {}\n\
             [[listeners.backends]]\naddress = \"{}\"\nweight = {}\n{extra}",
            a.addr,
            1 + n % 5,
            b.addr,
            5 - n % 5,
        )
    };
    let gw = Gateway::start(&generation(0));
    let url = format!("http://{}/load", gw.addr(0));
    let mut wrk = std::process::Command::new("wrk");
    wrk.args(["-t2", "-c16", "-d6s", &url]);
    let load = std::thread::spawn(move || run_bounded_wrk(wrk));
    for n in 1..=25 {
        std::thread::sleep(Duration::from_millis(200));
        std::fs::write(gw.config_path(), generation(n)).expect("rewrite");
        gw.signal("HUP");
    }
    let out = load.join().expect("wrk thread");
    let (requests, non_2xx, socket_errors) = wrk_totals(&out);
    assert!(requests > 100, "wrk made too few requests to judge: {out}");
    assert_eq!(
        (non_2xx, socket_errors),
        (0, 0),
        "failed requests under reloads: {out}"
    );
    let m = rt.block_on(async {
        let cl = client(ClientProto::H1);
        send(&cl, get(&format!("http://{}/extra/x", gw.addr(0))))
            .await
            .status
    });
    assert_eq!(m, 200);
    drop((a, b, c));
}

fn run_bounded_wrk(cmd: std::process::Command) -> String {
    let (ok, out, err) = crate::h3_thirdparty::run_bounded(cmd, Duration::from_secs(30));
    assert!(ok, "wrk failed: {err}\n{out}");
    out
}
