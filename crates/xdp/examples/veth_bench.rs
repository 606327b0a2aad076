//! Packets per second on a veth pair (root; bench/paths/xdp.sh sets up
//! the two namespaces and runs both halves):
//!
//!   veth_bench blast IFACE DST_MAC SRC DST SECONDS THREADS
//!   veth_bench xdp IFACE CLIENT LISTENER NAT_SRC BACKEND WARMUP SECONDS
//!
//! `blast` is the load generator (pktgen is not available on this kernel):
//! THREADS threads, each with its own AF_PACKET socket bound to IFACE
//! (PACKET_QDISC_BYPASS: straight to the driver's xmit), send one
//! prebuilt UDP frame SRC -> DST (IPv4, checksums correct, payload a QUIC
//! short header whose connection ID is the QUIC-LB ID of server `0a0b`,
//! see the path's gateway config) BATCH copies per sendmmsg, for SECONDS.
//! Prints `sent PPS TOTAL`: what the sockets handed to the driver, which
//! is an upper bound for what the receiving side saw (veth drops on a full
//! ring after counting the send).
//!
//! `xdp` loads the gateway's XDP program in native (driver) mode on IFACE,
//! installs a Mode A service on LISTENER with one backend and the
//! conntrack entries of one established flow (CLIENT -> LISTENER becomes
//! NAT_SRC -> BACKEND, and the reverse), waits WARMUP seconds, then
//! prints the program's forwarded packets per second over SECONDS from
//! the per-CPU stats map: `fwd PPS pass=N drop=N miss=N total=N` (the
//! counts over the window; total: forwarded since the attach;
//! softirq_ticks: softirq time of all CPUs over the window, /proc/stat). The
//! counter counts XDP_TX verdicts, not frames the peer took: a veth peer
//! without an XDP program refuses them (xdp_tx_errors), so the bench
//! checks the peer's own count too.

#[allow(dead_code)]
#[path = "../tests/common/pkt.rs"]
mod pkt;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use aya::maps::{Array, HashMap, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use aya::EbpfLoader;
use eg_xdp::maps::{self, Backend, Config, Flow, FlowKey, Service, ServiceKey, Stat, IPPROTO_UDP};

/// Frames per sendmmsg: enough that the syscall's cost is small next to
/// the per-packet work (skb allocation, veth xmit).
const BATCH: usize = 64;

/// The payload: a QUIC short header (0x40: fixed bit, no long-header
/// bit, so the XDP program forwards it) with the 11-byte QUIC-LB
/// plaintext ID 0x0a | server id 0a0b | 8 nonce bytes, then padding to
/// 32 bytes. The frame is 74 bytes.
const PAYLOAD: [u8; 32] = [
    0x40, 0x0a, 0x0a, 0x0b, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0,
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let run = match args.first().map(String::as_str) {
        Some("blast") => blast(&args[1..]),
        Some("xdp") => xdp(&args[1..]),
        _ => Err(
            "usage: veth_bench blast IFACE DST_MAC SRC DST SECONDS THREADS | \
                  veth_bench xdp IFACE CLIENT LISTENER NAT_SRC BACKEND WARMUP SECONDS"
                .to_owned(),
        ),
    };
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("veth_bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("argument {} ({what}) missing or malformed", i + 1))
}

fn mac(text: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = text
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    bytes
        .try_into()
        .map_err(|_| format!("{text:?} is not a MAC address"))
}

/// The interface's own MAC, from sysfs.
fn own_mac(iface: &str) -> Result<[u8; 6], String> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .map_err(|e| format!("{iface}: {e}"))?;
    mac(text.trim())
}

fn blast(args: &[String]) -> Result<(), String> {
    let iface: String = arg(args, 0, "IFACE")?;
    let dst_mac = mac(args.get(1).map(String::as_str).unwrap_or(""))?;
    let src: SocketAddr = arg(args, 2, "SRC")?;
    let dst: SocketAddr = arg(args, 3, "DST")?;
    let seconds: f64 = arg(args, 4, "SECONDS")?;
    let threads: usize = arg(args, 5, "THREADS")?;
    let mut frame = pkt::Pkt::udp(&src.to_string(), &dst.to_string(), &PAYLOAD).build();
    frame[0..6].copy_from_slice(&dst_mac);
    frame[6..12].copy_from_slice(&own_mac(&iface)?);
    let ifindex = ifindex(&iface)?;
    let frame = Arc::new(frame);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (frame, stop, sent) = (frame.clone(), stop.clone(), sent.clone());
            thread::spawn(move || send_loop(ifindex, &frame, &stop, &sent))
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().map_err(|_| "a sender panicked".to_owned())??;
    }
    let total = sent.load(Ordering::Relaxed);
    let pps = total as f64 / start.elapsed().as_secs_f64();
    println!("sent {pps:.0} {total}");
    Ok(())
}

fn ifindex(iface: &str) -> Result<i32, String> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .map_err(|e| format!("{iface}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|e| format!("{iface} ifindex: {e}"))
}

/// One sender: its own socket, BATCH iovecs over the same frame.
fn send_loop(
    ifindex: i32,
    frame: &[u8],
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> Result<(), String> {
    let fd = packet_socket(ifindex)?;
    let mut iov = libc::iovec {
        iov_base: frame.as_ptr() as *mut libc::c_void,
        iov_len: frame.len(),
    };
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut errors = 0u64;
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs holds BATCH initialised headers whose iovec points
        // at `frame`, alive for the call; the kernel only reads them.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        } else {
            // ENOBUFS and the like under overload: count, keep going.
            errors += 1;
            if errors > 10_000_000 {
                break;
            }
        }
    }
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

fn packet_socket(ifindex: i32) -> Result<i32, String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // Protocol 0: this socket receives nothing, it only sends.
    // SAFETY: plain syscalls on an fd we own; every struct is initialised.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(os("socket(AF_PACKET)"));
        }
        let one: libc::c_int = 1;
        if libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        ) != 0
        {
            libc::close(fd);
            return Err(os("PACKET_QDISC_BYPASS"));
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        sll.sll_ifindex = ifindex;
        if libc::bind(
            fd,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            libc::close(fd);
            return Err(os("bind(AF_PACKET)"));
        }
        Ok(fd)
    }
}

fn xdp(args: &[String]) -> Result<(), String> {
    let iface: String = arg(args, 0, "IFACE")?;
    let client: SocketAddr = arg(args, 1, "CLIENT")?;
    let listener: SocketAddr = arg(args, 2, "LISTENER")?;
    let nat_src: SocketAddr = arg(args, 3, "NAT_SRC")?;
    let backend: SocketAddr = arg(args, 4, "BACKEND")?;
    let warmup: f64 = arg(args, 5, "WARMUP")?;
    let seconds: f64 = arg(args, 6, "SECONDS")?;
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::CONNTRACK, 65_536)
        .load(eg_xdp::OBJECT)
        .map_err(|x| ctx("load object", x))?;
    {
        let mut config: Array<_, Config> =
            Array::try_from(ebpf.map_mut(maps::CONFIG).ok_or("no config map")?)
                .map_err(|x| ctx("config", x))?;
        let c = Config {
            new_flows_per_cpu_per_sec: 0,
            flow_idle_timeout_s: 600,
        };
        config.set(0, c, 0).map_err(|x| ctx("config", x))?;
    }
    {
        let mut services: HashMap<_, ServiceKey, Service> =
            HashMap::try_from(ebpf.map_mut(maps::SERVICES).ok_or("no services map")?)
                .map_err(|x| ctx("services", x))?;
        let s = Service {
            id: 0,
            backend_base: 0,
            backend_count: 1,
            table_size: 0,
            flags: maps::SVC_QUIC_MODEA,
        };
        services
            .insert(ServiceKey::new(listener, IPPROTO_UDP), s, 0)
            .map_err(|x| ctx("service", x))?;
    }
    {
        let mut backends: Array<_, Backend> =
            Array::try_from(ebpf.map_mut(maps::BACKENDS).ok_or("no backends map")?)
                .map_err(|x| ctx("backends", x))?;
        backends
            .set(0, Backend::new(backend, true), 0)
            .map_err(|x| ctx("backend", x))?;
    }
    {
        let mut ct: HashMap<_, FlowKey, Flow> =
            HashMap::try_from(ebpf.map_mut(maps::CONNTRACK).ok_or("no conntrack map")?)
                .map_err(|x| ctx("conntrack", x))?;
        let there = Flow::from_user(nat_src, backend, 0, false);
        ct.insert(FlowKey::new(client, listener, IPPROTO_UDP), there, 0)
            .map_err(|x| ctx("flow", x))?;
        let back = Flow::from_user(listener, client, 0, true);
        ct.insert(FlowKey::new(backend, nat_src, IPPROTO_UDP), back, 0)
            .map_err(|x| ctx("flow", x))?;
    }
    let prog: &mut Xdp = ebpf
        .program_mut(eg_xdp::PROGRAM)
        .ok_or("no eg_lb program")?
        .try_into()
        .map_err(|x| ctx("program", x))?;
    prog.load().map_err(|x| ctx("verifier", x))?;
    // DRV_MODE: native XDP or an error, never a silent fall back to
    // generic (skb) mode, which would measure something else.
    prog.attach(&iface, XdpMode::Driver)
        .map_err(|x| ctx("attach in native mode", x))?;
    thread::sleep(Duration::from_secs_f64(warmup));
    let before = stats(&ebpf)?;
    let soft0 = softirq_ticks()?;
    let t0 = Instant::now();
    thread::sleep(Duration::from_secs_f64(seconds));
    let after = stats(&ebpf)?;
    let soft = softirq_ticks()? - soft0;
    let dt = t0.elapsed().as_secs_f64();
    let d = |s: Stat| after[s as usize] - before[s as usize];
    let fwd = d(Stat::FwdPackets);
    println!(
        "fwd {:.0} pass={} drop={} miss={} total={} softirq_ticks={soft}",
        fwd as f64 / dt,
        d(Stat::Pass),
        d(Stat::Drop),
        d(Stat::CtMiss),
        after[Stat::FwdPackets as usize]
    );
    // Dropping `ebpf` detaches the program.
    Ok(())
}

fn ctx(what: &str, err: impl std::fmt::Display) -> String {
    format!("{what}: {err}")
}

/// Softirq time of all CPUs so far, in USER_HZ ticks (/proc/stat): where
/// NAPI, and so the XDP program, runs.
fn softirq_ticks() -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    text.lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "/proc/stat: no softirq field".to_owned())
}

/// Every counter of the stats map, summed over CPUs.
fn stats(ebpf: &aya::Ebpf) -> Result<Vec<u64>, String> {
    let a: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map(maps::STATS).ok_or("no stats map")?)
            .map_err(|x| format!("stats: {x}"))?;
    Stat::ALL
        .iter()
        .map(|&s| {
            a.get(&(s as u32), 0)
                .map(|v| v.iter().sum())
                .map_err(|x| format!("stats: {x}"))
        })
        .collect()
}
