//! A UDP relay between QUIC clients and the gateway, as the interop
//! runner's network simulator: per-direction loss from a seeded RNG, a
//! blackhole switch, and rebinding (the gateway-facing sockets move to a
//! new port or loopback address mid-connection, as a NAT rebinding does).
//! Each client address gets its own gateway-facing socket (a NAT flow), so
//! one relay serves many clients at once. Everything stops when the relay
//! is dropped.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Flows (client addresses) one relay keeps: more than any test opens at
/// once (handshakeloss runs ten clients in parallel); past it, packets of
/// new clients are dropped rather than growing the table.
const MAX_FLOWS: usize = 256;
/// Datagrams of each flow kept in its trace, from the first: enough to
/// cover a handshake (the amplification check), bounded for big transfers.
const TRACE_DATAGRAMS: usize = 256;
/// Largest UDP datagram the relay carries.
const MAX_DATAGRAM: usize = 65_535;

/// Which way a datagram went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    ToServer,
    ToClient,
}

/// One datagram the relay saw (passed or dropped).
#[derive(Clone, Debug)]
pub struct Seen {
    pub dir: Dir,
    pub len: usize,
    pub dropped: bool,
    /// Long-header packet types coalesced in it (0 Initial, 1 0-RTT,
    /// 2 Handshake, 3 Retry); empty for a short-header (1-RTT) datagram.
    pub long_types: Vec<u8>,
}

#[derive(Default)]
struct Control {
    /// Loss probability per direction, in millionths.
    loss_to_server: AtomicU32,
    loss_to_client: AtomicU32,
    blackhole: AtomicBool,
    /// Added to every datagram towards a client, in ms.
    delay_to_client_ms: AtomicU64,
    dropped: AtomicU64,
    passed: AtomicU64,
    /// Datagrams towards clients passed from sockets a rebind made.
    rebound: AtomicU64,
}

struct Flow {
    up: Arc<UdpSocket>,
    back: JoinHandle<()>,
    /// The copy from the socket the last rebind replaced: as a NAT keeps
    /// an old mapping for a while, what the gateway still sends there
    /// reaches the client (whose answers, from the new address, are how
    /// the gateway learns of the move: with the old mapping gone at once,
    /// a client with nothing to acknowledge would never be heard again).
    retired: Option<JoinHandle<()>>,
    /// Direction-to-server RNG of this flow.
    rng: SmallRng,
    /// Order of arrival: seeds the flow's RNGs.
    index: usize,
}

struct Shared {
    ctl: Control,
    seed: u64,
    gateway: SocketAddr,
    front: Arc<UdpSocket>,
    flows: tokio::sync::Mutex<HashMap<SocketAddr, Flow>>,
    traces: Mutex<HashMap<SocketAddr, Vec<Seen>>>,
}

/// The relay; clients send to `addr`.
pub struct UdpRelay {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(flows) = self.shared.flows.try_lock() {
            for flow in flows.values() {
                flow.back.abort();
                if let Some(old) = &flow.retired {
                    old.abort();
                }
            }
        }
    }
}

fn millionths(p: f64) -> u32 {
    (p.clamp(0.0, 1.0) * 1_000_000.0) as u32
}

impl UdpRelay {
    /// A relay to `gateway`; `seed` makes its losses reproducible.
    pub async fn start(gateway: SocketAddr, seed: u64) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("relay bind"));
        let addr = front.local_addr().expect("relay addr");
        let shared = Arc::new(Shared {
            ctl: Control::default(),
            seed,
            gateway,
            front,
            flows: tokio::sync::Mutex::new(HashMap::new()),
            traces: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(towards_server(Arc::clone(&shared)));
        Self { addr, shared, task }
    }

    /// Drop each datagram towards the gateway with probability `to_server`,
    /// each towards a client with `to_client`.
    pub fn set_loss(&self, to_server: f64, to_client: f64) {
        let c = &self.shared.ctl;
        c.loss_to_server
            .store(millionths(to_server), Ordering::Relaxed);
        c.loss_to_client
            .store(millionths(to_client), Ordering::Relaxed);
    }

    /// While on, every datagram either way is dropped.
    /// Hold every datagram towards a client `delay` before sending it: a
    /// long path, so the client's answers (its handshake Finished, say)
    /// reach the gateway at least that much after what they answer.
    pub fn set_delay_to_client(&self, delay: std::time::Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared
            .ctl
            .delay_to_client_ms
            .store(ms, Ordering::Relaxed);
    }

    pub fn set_blackhole(&self, on: bool) {
        self.shared.ctl.blackhole.store(on, Ordering::Relaxed);
    }

    /// (passed, dropped) datagrams so far, both directions.
    pub fn counts(&self) -> (u64, u64) {
        let c = &self.shared.ctl;
        (
            c.passed.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
        )
    }

    /// Move every flow's gateway-facing socket to a fresh port on `ip`:
    /// the gateway then hears each client from a new address (the old one
    /// still delivers to the client, as a NAT's old mapping does until it
    /// expires). Returns the new addresses.
    pub async fn rebind(&self, ip: IpAddr) -> Vec<SocketAddr> {
        let mut flows = self.shared.flows.lock().await;
        let mut moved = Vec::new();
        for (client, flow) in flows.iter_mut() {
            let up = upstream(ip, self.shared.gateway).await;
            moved.push(up.local_addr().expect("addr"));
            let back = tokio::spawn(towards_client(
                Arc::clone(&self.shared),
                Arc::clone(&up),
                *client,
                flow_rng(self.shared.seed, flow.index, Dir::ToClient),
                true,
            ));
            let old = std::mem::replace(&mut flow.back, back);
            if let Some(older) = flow.retired.replace(old) {
                older.abort();
            }
            flow.up = up;
        }
        moved
    }

    /// Datagrams the gateway sent to the addresses a rebind made (and the
    /// relay passed to clients): how much of the traffic moved.
    pub fn rebound_datagrams(&self) -> u64 {
        self.shared.ctl.rebound.load(Ordering::Relaxed)
    }

    /// The gateway-facing address each client's flow uses now.
    pub async fn upstream_addrs(&self) -> Vec<SocketAddr> {
        let flows = self.shared.flows.lock().await;
        flows
            .values()
            .filter_map(|f| f.up.local_addr().ok())
            .collect()
    }

    /// Whether any datagram of `client` has reached the gateway.
    pub fn heard_from(&self, client: SocketAddr) -> bool {
        self.shared.traces.lock().is_ok_and(|t| {
            t.get(&client)
                .is_some_and(|seen| seen.iter().any(|d| d.dir == Dir::ToServer && !d.dropped))
        })
    }

    /// The first datagrams of each flow, in order.
    pub fn traces(&self) -> Vec<Vec<Seen>> {
        self.shared
            .traces
            .lock()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default()
    }
}

async fn upstream(ip: IpAddr, gateway: SocketAddr) -> Arc<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .expect("relay upstream bind");
    socket.connect(gateway).await.expect("relay connect");
    Arc::new(socket)
}

/// Drop it? Blackhole, else a draw against the direction's loss rate.
fn lose(shared: &Shared, dir: Dir, rng: &mut SmallRng) -> bool {
    let rate = match dir {
        Dir::ToServer => &shared.ctl.loss_to_server,
        Dir::ToClient => &shared.ctl.loss_to_client,
    }
    .load(Ordering::Relaxed);
    // Draw even in a blackhole, so the sequence of draws (and so which
    // datagrams are lost) depends only on the seed and the traffic.
    let drawn = rng.gen_range(0..1_000_000) < rate;
    let dropped = shared.ctl.blackhole.load(Ordering::Relaxed) || drawn;
    let counter = if dropped {
        &shared.ctl.dropped
    } else {
        &shared.ctl.passed
    };
    counter.fetch_add(1, Ordering::Relaxed);
    dropped
}

fn record(shared: &Shared, client: SocketAddr, dir: Dir, datagram: &[u8], dropped: bool) {
    let Ok(mut traces) = shared.traces.lock() else {
        return;
    };
    if traces.len() >= MAX_FLOWS && !traces.contains_key(&client) {
        return;
    }
    let trace = traces.entry(client).or_default();
    if trace.len() < TRACE_DATAGRAMS {
        trace.push(Seen {
            dir,
            len: datagram.len(),
            dropped,
            long_types: long_header_types(datagram),
        });
    }
}

/// A per-flow, per-direction RNG derived from the relay's seed.
fn flow_rng(seed: u64, flow: usize, dir: Dir) -> SmallRng {
    let d = match dir {
        Dir::ToServer => 0,
        Dir::ToClient => 1,
    };
    SmallRng::seed_from_u64(seed ^ ((flow as u64) << 8) ^ d)
}

async fn towards_server(shared: Arc<Shared>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((n, client)) = shared.front.recv_from(&mut buf).await else {
            return;
        };
        let datagram = &buf[..n];
        let mut flows = shared.flows.lock().await;
        if !flows.contains_key(&client) {
            if flows.len() >= MAX_FLOWS {
                continue;
            }
            let up = upstream(IpAddr::from([127, 0, 0, 1]), shared.gateway).await;
            let index = flows.len();
            let back = tokio::spawn(towards_client(
                Arc::clone(&shared),
                Arc::clone(&up),
                client,
                flow_rng(shared.seed, index, Dir::ToClient),
                false,
            ));
            flows.insert(
                client,
                Flow {
                    up,
                    back,
                    rng: flow_rng(shared.seed, index, Dir::ToServer),
                    index,
                    retired: None,
                },
            );
        }
        let Some(flow) = flows.get_mut(&client) else {
            continue;
        };
        let dropped = lose(&shared, Dir::ToServer, &mut flow.rng);
        record(&shared, client, Dir::ToServer, datagram, dropped);
        if !dropped {
            let _ = flow.up.send(datagram).await;
        }
    }
}

async fn towards_client(
    shared: Arc<Shared>,
    up: Arc<UdpSocket>,
    client: SocketAddr,
    mut rng: SmallRng,
    rebound: bool,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok(n) = up.recv(&mut buf).await else {
            return;
        };
        let datagram = &buf[..n];
        let dropped = lose(&shared, Dir::ToClient, &mut rng);
        record(&shared, client, Dir::ToClient, datagram, dropped);
        if !dropped {
            if rebound {
                shared.ctl.rebound.fetch_add(1, Ordering::Relaxed);
            }
            let delay = shared.ctl.delay_to_client_ms.load(Ordering::Relaxed);
            if delay == 0 {
                let _ = shared.front.send_to(datagram, client).await;
            } else {
                // Timers of one tick may fire in any order: QUIC takes
                // the odd reordering in its stride.
                let (front, datagram) = (Arc::clone(&shared.front), datagram.to_vec());
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                    let _ = front.send_to(&datagram, client).await;
                });
            }
        }
    }
}

/// The long-header packet types coalesced in a QUIC v1 datagram (RFC 9000
/// §17.2), read as far as the headers parse; a short header ends the list.
pub fn long_header_types(mut d: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    while let Some(&first) = d.first() {
        if first & 0x80 == 0 {
            break;
        }
        let kind = (first >> 4) & 0x03;
        types.push(kind);
        let Some(len) = long_packet_len(d, kind) else {
            break;
        };
        d = d.get(len..).unwrap_or_default();
    }
    types
}

/// Length of the long-header packet at the start of `d`, or `None` when it
/// runs to the end of the datagram (Retry) or does not parse.
fn long_packet_len(d: &[u8], kind: u8) -> Option<usize> {
    // Flags (1), version (4), then the two length-prefixed connection IDs.
    let mut at = 5;
    for _ in 0..2 {
        let cid = usize::from(*d.get(at)?);
        at += 1 + cid;
    }
    if kind == 3 {
        return None;
    }
    if kind == 0 {
        let (token, n) = varint(d.get(at..)?)?;
        at += n + usize::try_from(token).ok()?;
    }
    let (payload, n) = varint(d.get(at..)?)?;
    Some(at + n + usize::try_from(payload).ok()?)
}

/// A QUIC variable-length integer and its encoded length (RFC 9000 §16).
fn varint(d: &[u8]) -> Option<(u64, usize)> {
    let first = *d.first()?;
    let len = 1usize << (first >> 6);
    let bytes = d.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in bytes.iter().skip(1) {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

#[test]
fn coalesced_long_headers_are_listed() {
    // Initial (no token, 3-byte payload) + Handshake (2-byte payload) +
    // a short-header packet.
    let mut d = vec![0xc0, 0, 0, 0, 1, 1, 0xaa, 0, 0, 3, 1, 2, 3];
    d.extend_from_slice(&[0xe0, 0, 0, 0, 1, 0, 0, 2, 9, 9]);
    d.extend_from_slice(&[0x40, 1, 2, 3]);
    assert_eq!(long_header_types(&d), vec![0, 2]);
    assert!(long_header_types(&[0x40, 1]).is_empty());
    assert_eq!(varint(&[0x7b, 0xbd]), Some((15_293, 2)));
}
