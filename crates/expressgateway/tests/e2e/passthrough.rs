//! QUIC Mode A (`[passthrough]`): real QUIC clients through the gateway to
//! real QUIC servers, TLS end to end (the gateway holds no certificate:
//! clients verify the backend's). Routing by connection ID, the server's
//! own CIDs after the handshake, client address changes, a killed
//! backend, the table bound, idle reaping and garbage.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::http::{Method, StatusCode};
use bytes::Bytes;
use tokio::net::UdpSocket;

use crate::support::h3::{H3Backend, H3Client};
use crate::support::probe::metrics_text;
use crate::support::tls::cert;
use crate::support::*;

/// The `[passthrough]` address from the startup report.
pub(crate) fn pt_addr(gw: &Gateway) -> SocketAddr {
    gw.listeners
        .iter()
        .find(|b| b.name == "passthrough")
        .map(|b| b.address)
        .expect("passthrough in the startup report")
}

/// A gateway whose only datapath is `[passthrough]` over `backends`.
pub(crate) fn pt_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [passthrough]\nbind_addr = \"127.0.0.1:0\"\nbackends = [{}]\n{extra}",
        list.join(", ")
    )
}

/// A metric's value summed over every series whose line starts with `key`.
pub(crate) async fn metric(gw: &Gateway, key: &str) -> u64 {
    metrics_text(gw)
        .await
        .lines()
        .filter(|l| l.starts_with(key))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn backend_of(cl: &mut H3Client, path: &str) -> String {
    let r = cl.send(Method::GET, path, Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "{path}");
    String::from_utf8_lossy(r.headers.get("x-backend").expect("x-backend").as_bytes()).into_owned()
}

/// One quinn HTTP/3 backend named `name` behind a passthrough gateway.
pub(crate) struct OneBackend {
    pub c: eg_tls::SelfSigned,
    pub gw: Gateway,
    pub target: SocketAddr,
    _backend: H3Backend,
    _dir: tempfile::TempDir,
}

pub(crate) async fn one_backend(name: &'static str, extra: &str) -> OneBackend {
    let dir = scratch();
    let c = cert(dir.path(), "origin");
    let backend = H3Backend::start(name, &c).await;
    let gw = Gateway::start_in(scratch(), &pt_config(&[backend.addr], extra));
    let target = pt_addr(&gw);
    OneBackend {
        c,
        gw,
        target,
        _backend: backend,
        _dir: dir,
    }
}

async fn three_backends(c: &eg_tls::SelfSigned) -> Vec<H3Backend> {
    vec![
        H3Backend::start("b0", c).await,
        H3Backend::start("b1", c).await,
        H3Backend::start("b2", c).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_spreads_40_connections_and_keeps_each_on_its_backend() {
    let dir = scratch();
    let c = cert(dir.path(), "origin");
    let backends = three_backends(&c).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let gw = Gateway::start_in(scratch(), &pt_config(&addrs, ""));
    let target = pt_addr(&gw);
    let mut per_backend: HashMap<String, usize> = HashMap::new();
    let mut clients = Vec::new();
    for i in 0..40 {
        // The client trusts only the origin's certificate: the handshake
        // is the backend's, relayed untouched.
        let mut cl = H3Client::new(&c.cert_pem, target);
        let name = backend_of(&mut cl, &format!("/spread/{i}")).await;
        *per_backend.entry(name).or_default() += 1;
        clients.push(cl);
    }
    assert_eq!(
        per_backend.len(),
        3,
        "40 connections over 3 backends: {per_backend:?}"
    );
    // 50 requests on one connection: one backend, one connection, after
    // the handshake (short headers to the server-chosen CID).
    let mut one = H3Client::new(&c.cert_pem, target);
    let first = backend_of(&mut one, "/stick/0").await;
    for i in 1..50 {
        assert_eq!(backend_of(&mut one, &format!("/stick/{i}")).await, first);
    }
    assert_eq!(one.connections_opened, 1);
    // Every earlier connection still routes to where it started.
    for (i, cl) in clients.iter_mut().enumerate().take(10) {
        let again = backend_of(cl, &format!("/again/{i}")).await;
        assert!(per_backend.contains_key(&again));
        assert_eq!(cl.connections_opened, 1);
    }
    assert!(metric(&gw, "expressgateway_passthrough_flows_active").await >= 41);
    assert!(
        metric(
            &gw,
            "expressgateway_passthrough_datagrams_total{direction=\"to_client\"}"
        )
        .await
            > 100
    );
}

/// A UDP NAT between a client and the gateway: the client talks to
/// `inside`; the NAT forwards from its current outside socket, and
/// `rebind` moves that to a new port (replies to the old one are lost,
/// as behind a real NAT whose mapping changed).
pub(crate) struct Nat {
    pub(crate) inside: SocketAddr,
    outside: Arc<Mutex<Arc<UdpSocket>>>,
    client: Arc<Mutex<Option<SocketAddr>>>,
    inner: Arc<UdpSocket>,
    target: SocketAddr,
    ports: Vec<u16>,
}

impl Nat {
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let inner = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let inside = inner.local_addr().expect("addr");
        let outside = Arc::new(UdpSocket::bind(Self::outer(target)).await.expect("bind"));
        let port = outside.local_addr().expect("addr").port();
        let nat = Self {
            inside,
            outside: Arc::new(Mutex::new(Arc::clone(&outside))),
            client: Arc::new(Mutex::new(None)),
            inner: Arc::clone(&inner),
            target,
            ports: vec![port],
        };
        nat.pump_out(outside);
        let (out, client, target) = (Arc::clone(&nat.outside), Arc::clone(&nat.client), target);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, from)) = inner.recv_from(&mut buf).await {
                *client.lock().expect("lock") = Some(from);
                let sock = Arc::clone(&out.lock().expect("lock"));
                let _ = sock.send_to(&buf[..n], target).await;
            }
        });
        nat
    }

    /// Relay what the gateway sends to `outside` back to the client,
    /// while `outside` is the current mapping.
    fn pump_out(&self, outside: Arc<UdpSocket>) {
        let (inner, client, current) = (
            Arc::clone(&self.inner),
            Arc::clone(&self.client),
            Arc::clone(&self.outside),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while let Ok((n, _)) = outside.recv_from(&mut buf).await {
                if !Arc::ptr_eq(&current.lock().expect("lock"), &outside) {
                    return;
                }
                let to = *client.lock().expect("lock");
                if let Some(to) = to {
                    let _ = inner.send_to(&buf[..n], to).await;
                }
            }
        });
    }

    /// The mapping's side towards `target`: loopback, or any local
    /// address for a target off loopback (in a network namespace).
    fn outer(target: SocketAddr) -> &'static str {
        if target.ip().is_loopback() {
            "127.0.0.1:0"
        } else {
            "0.0.0.0:0"
        }
    }

    pub(crate) async fn rebind(&mut self) {
        let fresh = Arc::new(
            UdpSocket::bind(Self::outer(self.target))
                .await
                .expect("bind"),
        );
        self.ports.push(fresh.local_addr().expect("addr").port());
        *self.outside.lock().expect("lock") = Arc::clone(&fresh);
        self.pump_out(fresh);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_connection_survives_three_client_port_changes() {
    let dir = scratch();
    let c = cert(dir.path(), "origin");
    let backends = three_backends(&c).await;
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let gw = Gateway::start_in(scratch(), &pt_config(&addrs, ""));
    let mut nat = Nat::start(pt_addr(&gw)).await;
    let mut cl = H3Client::new(&c.cert_pem, nat.inside);
    let first = backend_of(&mut cl, "/before").await;
    for round in 0..3 {
        nat.rebind().await;
        for i in 0..5 {
            let name = backend_of(&mut cl, &format!("/after/{round}/{i}")).await;
            assert_eq!(name, first, "the flow stays on its backend");
        }
    }
    assert_eq!(cl.connections_opened, 1, "one QUIC connection throughout");
    assert_eq!(nat.ports.iter().collect::<HashSet<_>>().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_strict_source_binding_refuses_a_moved_client() {
    let pt = one_backend("b0", "strict_source_binding = true\n").await;
    let (c, gw, target) = (&pt.c, &pt.gw, pt.target);
    let mut nat = Nat::start(target).await;
    let mut cl = H3Client::new(&c.cert_pem, nat.inside);
    assert_eq!(backend_of(&mut cl, "/before").await, "b0");
    nat.rebind().await;
    let mut sender = cl.sender().await;
    let req = ::http::Request::get(format!("https://localhost:{}/moved", nat.inside.port()))
        .body(())
        .expect("request");
    let moved = tokio::time::timeout(
        Duration::from_secs(3),
        crate::support::h3::exchange(&mut sender, req, Bytes::new()),
    )
    .await;
    assert!(!matches!(moved, Ok(Ok(_))), "a moved source is not served");
    assert!(
        metric(
            gw,
            "expressgateway_passthrough_datagrams_dropped_total{reason=\"source_mismatch\"}"
        )
        .await
            > 0
    );
}

/// An HTTP/3 backend on a runtime of its own, so it can be killed as a
/// process would be: every task and socket gone at once, no
/// CONNECTION_CLOSE sent.
pub(crate) struct Killable {
    pub addr: SocketAddr,
    pub name: &'static str,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Killable {
    pub(crate) fn start(name: &'static str, c: &eg_tls::SelfSigned) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let c = c.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let backend = rt.block_on(async {
                let b = H3Backend::start(name, &c).await;
                let _ = addr_tx.send(b.addr);
                let _ = stopped.await;
                b
            });
            // The runtime first: its tasks (the endpoint's driver among
            // them) die without sending anything; then the socket closes.
            drop(rt);
            drop(backend);
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("backend started");
        Self {
            addr,
            name,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_killed_backend_moves_only_its_flows() {
    let dir = scratch();
    let c = cert(dir.path(), "origin");
    let mut backends: Vec<Killable> = ["b0", "b1", "b2"]
        .into_iter()
        .map(|n| Killable::start(n, &c))
        .collect();
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    // A backend that does not answer a new flow within a second loses it
    // to another; one such failure ejects it.
    let extra = "[runtime]\nconnect_timeout_ms = 1000\n";
    let gw = Gateway::start_in(scratch(), &format!("{extra}{}", pt_config(&addrs, "")));
    let target = pt_addr(&gw);
    let mut clients = Vec::new();
    for i in 0..24 {
        let mut cl = H3Client::new(&c.cert_pem, target);
        let name = backend_of(&mut cl, &format!("/first/{i}")).await;
        clients.push((cl, name));
    }
    let victim = clients[0].1.clone();
    let index = backends
        .iter()
        .position(|b| b.name == victim)
        .expect("victim");
    backends[index].kill();
    // Flows on the survivors stay where they are.
    for (i, (cl, name)) in clients.iter_mut().enumerate() {
        if *name != victim {
            assert_eq!(&backend_of(cl, &format!("/still/{i}")).await, name);
        }
    }
    // New flows all land on survivors, including those Maglev put on the
    // dead backend (moved before any byte came back from it).
    for i in 0..20 {
        let mut cl = H3Client::new(&c.cert_pem, target);
        let name = backend_of(&mut cl, &format!("/new/{i}")).await;
        assert_ne!(name, victim, "a new flow on the killed backend");
    }
    assert!(
        metric(
            &gw,
            "expressgateway_passthrough_flows_total{event=\"replaced\"}"
        )
        .await
            >= 1,
        "no new flow was moved off the killed backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_max_quic_connections_refuses_the_excess() {
    let pt = one_backend("b0", "max_quic_connections = 2\n").await;
    let (c, gw, target) = (&pt.c, &pt.gw, pt.target);
    let mut first = H3Client::new(&c.cert_pem, target);
    let mut second = H3Client::new(&c.cert_pem, target);
    assert_eq!(backend_of(&mut first, "/1").await, "b0");
    assert_eq!(backend_of(&mut second, "/2").await, "b0");
    let mut third = H3Client::new(&c.cert_pem, target);
    let refused = tokio::time::timeout(Duration::from_secs(3), third.sender()).await;
    assert!(refused.is_err(), "the third connection must not be placed");
    assert!(
        metric(
            gw,
            "expressgateway_passthrough_flows_total{event=\"refused_full\"}"
        )
        .await
            > 0
    );
    // The two placed ones keep working.
    assert_eq!(backend_of(&mut first, "/1b").await, "b0");
    assert_eq!(backend_of(&mut second, "/2b").await, "b0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_reaps_idle_flows() {
    let pt = one_backend("b0", "flow_idle_timeout_ms = 1000\n").await;
    let (c, gw, target) = (&pt.c, &pt.gw, pt.target);
    let mut cl = H3Client::new(&c.cert_pem, target);
    assert_eq!(backend_of(&mut cl, "/1").await, "b0");
    assert_eq!(
        metric(gw, "expressgateway_passthrough_flows_active").await,
        1
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(gw, "expressgateway_passthrough_flows_active").await > 0 {
        assert!(Instant::now() < deadline, "idle flow never reaped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        metric(
            gw,
            "expressgateway_passthrough_flows_total{event=\"reaped\"}"
        )
        .await
            >= 1
    );
    // A new connection is placed as usual.
    let mut fresh = H3Client::new(&c.cert_pem, target);
    assert_eq!(backend_of(&mut fresh, "/2").await, "b0");
}

/// Datagrams no QUIC client sends, and some that look almost right.
fn garbage(i: u32) -> Vec<u8> {
    let mut x = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = (next() % 1400) as usize;
    let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
    match i % 5 {
        // A v1 long header with a CID length past the end.
        0 => {
            d.splice(0..0, [0xc0, 0, 0, 0, 1, 0xff]);
        }
        // A 1200-byte Initial whose Length field lies.
        1 => {
            let mut p = vec![
                0xc3, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x7f, 0xff,
            ];
            p.resize(1200, 0);
            d = p;
        }
        // A small "Initial".
        2 => d = vec![0xc0, 0, 0, 0, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        // Short headers to CIDs nobody issued.
        3 => {
            if let Some(b) = d.first_mut() {
                *b = 0x40 | (*b & 0x3f);
            }
        }
        _ => {}
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_garbage_datagrams_are_dropped_and_counted() {
    let pt = one_backend("b0", "").await;
    let (c, gw, target) = (&pt.c, &pt.gw, pt.target);
    let mut cl = H3Client::new(&c.cert_pem, target);
    assert_eq!(backend_of(&mut cl, "/before").await, "b0");
    let junk = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for i in 0..1500 {
        let _ = junk.send_to(&garbage(i), target).await;
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Still serving: the open connection and a new one.
    assert_eq!(backend_of(&mut cl, "/after").await, "b0");
    let mut fresh = H3Client::new(&c.cert_pem, target);
    assert_eq!(backend_of(&mut fresh, "/fresh").await, "b0");
    let dropped = metric(gw, "expressgateway_passthrough_datagrams_dropped_total").await;
    // A few random datagrams pass for a first packet of an unknown
    // version (the backend answers those with Version Negotiation).
    assert!(
        dropped >= 1000,
        "{dropped} of 1500 garbage datagrams counted"
    );
}

/// A well-formed v1 Initial, 1200 bytes, whose protected payload is junk:
/// no backend can decrypt it, so none answers.
fn junk_initial(i: u32) -> Vec<u8> {
    let mut d = vec![0xc3, 0, 0, 0, 1, 8];
    d.extend_from_slice(&(u64::from(i) | 1 << 63).to_be_bytes());
    // SCID length 0, token length 0, Length 1180 as a 2-byte varint.
    d.extend_from_slice(&[0, 0, 0x44, 0x9c]);
    d.resize(1200, 0x5a);
    d
}

/// Initials nobody can answer are a client's doing: their silence must
/// not eject the backends they were sent to (which would let any client
/// empty the pool), while a backend that refuses (ICMP) still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_unanswerable_initials_eject_no_backend() {
    let dir = scratch();
    let c = cert(dir.path(), "origin");
    let b0 = H3Backend::start("b0", &c).await;
    let b1 = H3Backend::start("b1", &c).await;
    let extra = "[runtime]\nconnect_timeout_ms = 300\n";
    let gw = Gateway::start_in(scratch(), &pt_config(&[b0.addr, b1.addr], extra));
    let target = pt_addr(&gw);
    let junk = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for i in 0..100 {
        let _ = junk.send_to(&junk_initial(i), target).await;
    }
    // Every junk flow's answer deadline passes, on both backends.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ejections = metric(&gw, "expressgateway_backend_ejections_total").await;
    assert_eq!(ejections, 0, "junk Initials ejected a backend");
    let mut seen = HashSet::new();
    for i in 0..20 {
        let mut cl = H3Client::new(&c.cert_pem, target);
        seen.insert(backend_of(&mut cl, &format!("/after/{i}")).await);
    }
    assert_eq!(
        seen.len(),
        2,
        "both backends still take new flows: {seen:?}"
    );
}
