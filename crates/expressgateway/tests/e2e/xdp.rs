//! The XDP plane end to end (root only; skipped with a message otherwise):
//! the real binary in a network namespace with its program attached in
//! generic (skb) mode to a veth, a client and a real TCP backend in the
//! namespace across the veth. The kernel's counters, read from the admin
//! metrics, prove the transfer's packets took the fast path.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::support::h3::{H3Backend, H3Client};
use crate::support::netns::{root_or_skip, sh, NetPair, BACKEND_IP, GW_IP};
use crate::support::tls::cert;
use crate::support::*;

/// Bytes each way: a few MiB, thousands of packets at MTU size.
const TRANSFER: usize = 4 << 20;
/// How often the gateway copies backend eligibility to the kernel
/// (`eg_xdp::ELIGIBILITY_SYNC`).
const ELIGIBILITY_SYNC: Duration = Duration::from_millis(250);

fn config(pair: &NetPair, backend: SocketAddr) -> String {
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n[runtime]\nreadiness_settle_ms = 0\n\
         [xdp]\nenabled = true\ninterface = \"{}\"\nmode = \"skb\"\n\
         [[listeners]]\naddress = \"{GW_IP}:0\"\nprotocol = \"tcp\"\nlb_policy = \"maglev\"\n\
         [[listeners.backends]]\naddress = \"{backend}\"\n",
        pair.gw_if
    )
}

/// curl inside the gateway's namespace on its admin listener: `args`
/// then `http://<admin><path>`.
fn admin_curl(pair: &NetPair, gw: &Gateway, args: &[&str], path: &str) -> String {
    let admin = gw
        .listeners
        .iter()
        .find(|b| b.name == "admin")
        .map(|b| b.address)
        .expect("admin listener");
    let url = format!("http://{admin}{path}");
    let mut cmd = vec![
        "ip",
        "netns",
        "exec",
        &pair.gw,
        "curl",
        "-sf",
        "--max-time",
        "5",
    ];
    cmd.extend_from_slice(args);
    cmd.push(&url);
    sh(&cmd)
}

/// The gateway's `/metrics`, fetched inside its namespace.
fn scrape(pair: &NetPair, gw: &Gateway) -> String {
    admin_curl(pair, gw, &[], "/metrics")
}

/// A metric summed over every series whose line starts with `key`.
fn value(text: &str, key: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(key))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// An echo backend for one connection that also hashes what it got.
fn echo_backend(listener: TcpListener) -> std::thread::JoinHandle<[u8; 32]> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut got = Vec::with_capacity(TRANSFER);
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = s.read(&mut buf).expect("backend read");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            s.write_all(&buf[..n]).expect("backend write");
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        sha256(&got)
    })
}

/// Send `data` and read the echo at once (both ways in flight); the
/// digest of what came back.
fn transfer(stream: TcpStream, data: Vec<u8>) -> [u8; 32] {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let sending = std::thread::spawn(move || {
        writer.write_all(&data).expect("client write");
        writer
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
    });
    let mut back = Vec::with_capacity(TRANSFER);
    let mut reader = stream;
    reader.read_to_end(&mut back).expect("client read");
    sending.join().expect("sender");
    sha256(&back)
}

/// Wait (bounded) until the veth has no XDP program.
fn detached(pair: &NetPair) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if !pair.gw_link().contains("xdp") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn xdp_tcp_transfer_takes_the_kernel_path_and_detaches_on_exit_and_kill() {
    if !root_or_skip("xdp_tcp_transfer") {
        return;
    }
    let pair = NetPair::new("x");
    let listener = pair.in_peer(|| TcpListener::bind(format!("{BACKEND_IP}:0")).expect("bind"));
    let backend_addr = listener.local_addr().expect("addr");
    let backend = echo_backend(listener);
    let wrapper = ["ip", "netns", "exec", pair.gw.as_str()];
    let mut gw = Gateway::start_via(scratch(), &wrapper, &config(&pair, backend_addr));
    let link = pair.gw_link();
    assert!(link.contains("prog/xdp"), "no XDP program: {link}");
    let before = scrape(&pair, &gw);
    let target = gw.addr(0);
    let data = pattern(TRANSFER, 0x0d9);
    let digest = sha256(&data);
    let back = pair.in_peer(move || {
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect");
        transfer(stream, data)
    });
    assert_eq!(back, digest, "bytes changed on the way back");
    assert_eq!(
        backend.join().expect("backend"),
        digest,
        "bytes changed on the way in"
    );
    let after = scrape(&pair, &gw);
    let delta = |key: &str| value(&after, key).saturating_sub(value(&before, key));
    let forwarded = delta("expressgateway_xdp_packets_total{action=\"forwarded\"}");
    let bytes = delta("expressgateway_xdp_forwarded_bytes_total");
    let new_flows = delta("expressgateway_xdp_new_flows_total");
    eprintln!(
        "xdp: forwarded {forwarded} packets, {bytes} bytes, {new_flows} new flows for {} MiB each way",
        TRANSFER >> 20
    );
    // Every data segment (at most 1448 payload bytes at MTU 1500) of
    // both directions went through the kernel, and all their bytes.
    let segments = (2 * TRANSFER / 1448) as u64;
    assert!(
        forwarded >= segments,
        "{forwarded} forwarded < {segments} data segments; metrics:\n{after}"
    );
    assert!(bytes >= 2 * TRANSFER as u64, "{bytes} bytes forwarded");
    assert_eq!(new_flows, 1, "one connection, one kernel flow");
    // The userspace relay never saw the connection.
    assert_eq!(
        value(
            &after,
            "expressgateway_connections_total{listener=\"tcp-0\"}"
        ),
        0,
        "the connection went through userspace"
    );
    // A clean exit detaches the program ...
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some(), "no exit");
    assert!(
        detached(&pair),
        "program left after exit: {}",
        pair.gw_link()
    );
    // ... and so does a kill -9: the BPF link dies with the process.
    let gw = Gateway::start_via(scratch(), &wrapper, &config(&pair, backend_addr));
    assert!(pair.gw_link().contains("prog/xdp"), "not attached again");
    gw.signal("KILL");
    assert!(
        detached(&pair),
        "program left after kill -9: {}",
        pair.gw_link()
    );
}

/// An echo backend for any number of connections; counts those accepted.
fn counting_echo(listener: TcpListener) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 << 10];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    accepted
}

#[test]
fn xdp_drain_refuses_new_kernel_flows_and_waits_for_active_ones() {
    if !root_or_skip("xdp_drain") {
        return;
    }
    let pair = NetPair::new("d");
    let listener = pair.in_peer(|| TcpListener::bind(format!("{BACKEND_IP}:0")).expect("bind"));
    let backend = listener.local_addr().expect("addr");
    let accepted = counting_echo(listener);
    let wrapper = ["ip", "netns", "exec", pair.gw.as_str()];
    let config =
        config(&pair, backend).replace("[runtime]\n", "[runtime]\ndrain_timeout_ms = 15000\n");
    let mut gw = Gateway::start_via(scratch(), &wrapper, &config);
    let target = gw.addr(0);
    // A slow upload, echoed: ~3 s of traffic through a kernel flow.
    let data = pattern(48 << 14, 0x5a);
    let digest = sha256(&data);
    let slow = pair.in_peer(move || {
        std::thread::spawn(move || {
            let stream =
                TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect");
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            let mut writer = stream.try_clone().expect("clone");
            let sending = std::thread::spawn(move || {
                for chunk in data.chunks(16 << 10) {
                    writer.write_all(chunk).expect("client write");
                    std::thread::sleep(Duration::from_millis(60));
                }
                writer
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutdown");
            });
            let mut back = Vec::new();
            let mut reader = stream;
            reader.read_to_end(&mut back).expect("client read");
            sending.join().expect("sender");
            sha256(&back)
        })
    });
    std::thread::sleep(Duration::from_millis(600));
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(600));
    // Draining: a new connection is not taken by the kernel (the
    // listener's socket is closed, so it is refused or goes unanswered).
    let late = pair.in_peer(move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(2))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"late")?;
                let mut b = [0u8; 4];
                s.read_exact(&mut b)
            })
            .is_ok()
    });
    assert!(!late, "a connection made during the drain was served");
    // The active kernel flow finishes intact: the drain waited for it.
    assert_eq!(
        slow.join().expect("slow client"),
        digest,
        "cut by the drain"
    );
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the backend saw a connection made during the drain"
    );
    assert!(gw.wait_exit(Duration::from_secs(20)).is_some(), "no exit");
    assert!(detached(&pair), "program left: {}", pair.gw_link());
}

/// A backend that answers each connection with its name, then closes.
fn named_backend(listener: TcpListener, name: &'static str) {
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let _ = s.write_all(name.as_bytes());
        }
    });
}

/// Which backend a new connection from the peer namespace reaches.
fn reached(pair: &NetPair, target: SocketAddr) -> String {
    pair.in_peer(move || {
        let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut name = String::new();
        s.read_to_string(&mut name).expect("read name");
        name
    })
}

fn listener_config(pair: &NetPair, backends: &[SocketAddr]) -> String {
    let mut text = format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n[runtime]\nreadiness_settle_ms = 0\n\
         [xdp]\nenabled = true\ninterface = \"{}\"\nmode = \"skb\"\n\
         [[listeners]]\naddress = \"{GW_IP}:0\"\nprotocol = \"tcp\"\nlb_policy = \"maglev\"\n",
        pair.gw_if
    );
    for b in backends {
        text.push_str(&format!("[[listeners.backends]]\naddress = \"{b}\"\n"));
    }
    text
}

#[test]
fn xdp_follows_reloads_and_drains() {
    if !root_or_skip("xdp_follows_reloads_and_drains") {
        return;
    }
    let pair = NetPair::new("r");
    let bind = || pair.in_peer(|| TcpListener::bind(format!("{BACKEND_IP}:0")).expect("bind"));
    let (one, two) = (bind(), bind());
    let (a, b) = (
        one.local_addr().expect("addr"),
        two.local_addr().expect("addr"),
    );
    named_backend(one, "one");
    named_backend(two, "two");
    let wrapper = ["ip", "netns", "exec", pair.gw.as_str()];
    let gw = Gateway::start_via(scratch(), &wrapper, &listener_config(&pair, &[a]));
    let target = gw.addr(0);
    let flows = |gw: &Gateway| value(&scrape(&pair, gw), "expressgateway_xdp_new_flows_total");
    assert_eq!(reached(&pair, target), "one");
    assert_eq!(flows(&gw), 1, "the first connection was not a kernel flow");
    // A reload that replaces the backend rewrites the kernel's tables.
    std::fs::write(gw.config_path(), listener_config(&pair, &[b])).expect("rewrite");
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(
        &scrape(&pair, &gw),
        "expressgateway_config_reloads_total{result=\"ok\"}",
    ) == 0
    {
        assert!(Instant::now() < deadline, "no reload: {}", gw.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(reached(&pair, target), "two", "reload not in the kernel");
    assert_eq!(flows(&gw), 2);
    // Both backends; then drain the one this client maps to: within the
    // eligibility sync period new kernel flows go to the other.
    std::fs::write(gw.config_path(), listener_config(&pair, &[a, b])).expect("rewrite");
    gw.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while value(
        &scrape(&pair, &gw),
        "expressgateway_config_reloads_total{result=\"ok\"}",
    ) < 2
    {
        assert!(Instant::now() < deadline, "no reload: {}", gw.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let first = reached(&pair, target);
    assert_eq!(reached(&pair, target), first, "maglev must be stable");
    let (drain, other) = if first == "one" {
        (a, "two")
    } else {
        (b, "one")
    };
    admin_curl(
        &pair,
        &gw,
        &["-X", "POST"],
        &format!("/api/v1/pools/tcp-0%2Fdefault/backends/{drain}/drain"),
    );
    std::thread::sleep(ELIGIBILITY_SYNC + Duration::from_millis(250));
    assert_eq!(
        reached(&pair, target),
        other,
        "the drain did not reach the kernel"
    );
    assert_eq!(flows(&gw), 5, "every connection was a kernel flow");
}

/// Requests of the Mode A test, spaced so that the connection outlives
/// the flow idle timeout several times over while busy.
const UDP_REQUESTS: usize = 12;
const UDP_SPACING: Duration = Duration::from_millis(250);

/// UDP through the gateway: Mode A (passthrough) with the program
/// attached. A real QUIC client (quinn, HTTP/3) in the peer namespace
/// reaches a real QUIC backend there; once the backend has answered,
/// userspace installs the flow's two directions in the kernel, which
/// forwards its short-header datagrams; halfway the client changes port
/// and the kernel's entries follow it. The reaper asks the kernel before
/// reaping: a flow busy only in the kernel is kept past its idle timeout,
/// and reaped (and removed from the kernel) once really idle.
#[test]
fn xdp_forwards_mode_a_flows_userspace_installed() {
    if !root_or_skip("xdp_forwards_mode_a_flows_userspace_installed") {
        return;
    }
    let pair = NetPair::new("u");
    let dir = scratch();
    let c = cert(dir.path(), "origin");
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (target_tx, target_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let ns = format!("/var/run/netns/{}", pair.peer);
    let client = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("netns");
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let backend = H3Backend::start_on("udp-origin", &c, &format!("{BACKEND_IP}:0")).await;
            addr_tx.send(backend.addr).expect("send addr");
            let target = target_rx.await.expect("target");
            // The client behind a NAT that changes its port halfway (the
            // connection ID stays, as after a NAT rebinding).
            let mut nat = crate::passthrough::Nat::start(target).await;
            let mut cl = H3Client::new(&c.cert_pem, nat.inside);
            let mut answers = Vec::new();
            for i in 0..UDP_REQUESTS {
                if i == UDP_REQUESTS / 2 {
                    // The backend's replies must follow the client to its
                    // new port: userspace reinstalls the kernel's entries.
                    nat.rebind().await;
                }
                let r = cl.send(::http::Method::GET, "/", bytes::Bytes::new()).await;
                let name = r
                    .headers
                    .get("x-backend")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                answers.push((r.status, name));
                tokio::time::sleep(UDP_SPACING).await;
            }
            (answers, cl.connections_opened)
        })
    });
    let backend = addr_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("backend address");
    let config = format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n[runtime]\nreadiness_settle_ms = 0\n\
         [xdp]\nenabled = true\ninterface = \"{}\"\nmode = \"skb\"\n\
         [passthrough]\nbind_addr = \"{GW_IP}:0\"\nbackends = [\"{backend}\"]\n\
         flow_idle_timeout_ms = 1000\n",
        pair.gw_if
    );
    let wrapper = ["ip", "netns", "exec", pair.gw.as_str()];
    let gw = Gateway::start_via(scratch(), &wrapper, &config);
    let before = scrape(&pair, &gw);
    let target = gw
        .listeners
        .iter()
        .find(|l| l.name == "passthrough")
        .map(|l| l.address)
        .expect("passthrough listener");
    target_tx.send(target).expect("send target");
    let (answers, connections) = client.join().expect("client thread");
    for (status, name) in &answers {
        assert_eq!(*status, ::http::StatusCode::OK);
        assert_eq!(name.as_deref(), Some("udp-origin"));
    }
    assert_eq!(connections, 1, "one QUIC connection for every request");
    let after = scrape(&pair, &gw);
    let delta = |text: &str, key: &str| value(text, key).saturating_sub(value(&before, key));
    let forwarded = delta(
        &after,
        "expressgateway_xdp_packets_total{action=\"forwarded\"}",
    );
    let relayed = delta(&after, "expressgateway_passthrough_datagrams_total");
    eprintln!(
        "xdp: Mode A: {forwarded} datagrams forwarded in the kernel, {relayed} relayed by userspace"
    );
    // Each request and response is at least one short-header datagram
    // each way, all in the kernel; the handshake stayed in userspace.
    assert!(
        forwarded >= 2 * UDP_REQUESTS as u64,
        "{forwarded} forwarded; metrics:\n{after}"
    );
    assert!(relayed >= 2, "the handshake went through userspace");
    // Busy for 3 s with a 1 s idle timeout: not reaped while the kernel
    // carried it ...
    let reaped = "expressgateway_passthrough_flows_total{event=\"reaped\"}";
    assert_eq!(delta(&after, reaped), 0, "a busy kernel flow was reaped");
    // ... and reaped once idle (then its kernel entries are gone).
    let deadline = Instant::now() + Duration::from_secs(10);
    while delta(&scrape(&pair, &gw), reaped) == 0 {
        assert!(Instant::now() < deadline, "an idle flow was never reaped");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A plane that cannot start stops the gateway before anything is bound,
/// with an error naming the key: no such interface, and no privilege.
#[test]
fn xdp_errors_name_the_key_and_bind_nothing() {
    if !root_or_skip("xdp_errors_name_the_key_and_bind_nothing") {
        return;
    }
    let missing = format!("egno{}", std::process::id());
    let config = |interface: &str| {
        format!(
            "[xdp]\nenabled = true\ninterface = \"{interface}\"\n\
             [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"tcp\"\nlb_policy = \"maglev\"\n\
             [[listeners.backends]]\naddress = \"127.0.0.1:9\"\n"
        )
    };
    let dir = scratch();
    let exit = run_config_to_exit(dir.path(), &config(&missing));
    assert_eq!(exit.code, Some(1), "{exit:?}");
    assert!(
        exit.stderr.contains(&format!(
            "xdp.interface: \"{missing}\": no such network interface"
        )),
        "{}",
        exit.stderr
    );
    assert!(!exit.stdout.contains("listening"), "bound: {}", exit.stdout);
    // As an unprivileged user (setpriv to nobody), on an interface that
    // exists: the kernel refuses the maps.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join("nobody.toml");
    std::fs::write(&path, config("lo")).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", binary()])
        .arg(&path)
        .output()
        .expect("setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("failed to execute") {
        // The build directory is closed to other users (e.g. under /root).
        eprintln!(
            "xdp_errors: unprivileged half skipped: nobody cannot run {}",
            binary()
        );
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("xdp.enabled = true: loading the XDP program needs root"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening"));
}
