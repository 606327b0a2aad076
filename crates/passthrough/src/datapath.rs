//! UDP in, UDP out, never decrypting. One task reads the listener socket,
//! routes each datagram by the connection ID in its public header and
//! sends it on its flow's own connected upstream socket; one task per
//! flow reads that socket and sends the backend's datagrams to the client
//! from the listener's address. The backend sees one stable source per
//! flow, so a client's NAT rebinding or migration stays invisible to it
//! as long as the gateway knows the connection ID the client uses.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use eg_balancer::hash::hash_bytes;
use eg_balancer::{InFlight, Outcome, PickContext};
use eg_runtime::CancellationToken;
use quinn_udp::UdpSocketState;
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::batch::{self, Gather, RecvBatch, Slot};
use crate::fastpath::{FastPath, KernelFlow};

use crate::flows::{FlowShared, FlowTable, Kept, MAX_CIDS_PER_FLOW};
use crate::header::{self, LongType, Packet, MIN_INITIAL_DATAGRAM};
use crate::metrics::{self, metrics};
use crate::settings::Settings;

/// The idle reaper's period: a quarter of the idle timeout, at most a
/// second, so a flow outlives its timeout by at most that much.
const MAX_REAP_PERIOD: Duration = Duration::from_secs(1);

/// Backend datagrams one flow relays per wake-up before it lets other
/// tasks run: a backend sending flat out must not starve the worker.
/// Checked between receive calls, so one call's worth (`batch::SLOTS`
/// buffers) may pass it.
const MAX_BATCH: usize = 64;

/// A flow task's receive buffers and pending GSO send: per worker
/// thread, not per flow, and emptied before a task yields.
#[derive(Default)]
struct Scratch {
    recv: RecvBatch,
    gather: Gather,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

type Table = FlowTable<Arc<Upstream>>;

/// A flow's socket towards its backend. Sends go straight to the
/// non-blocking socket (a dup of the same file): tokio's `try_send` on a
/// socket the reactor has not yet seen writable would refuse at once, and
/// a flow's first datagram, the client's Initial, would be lost.
struct Upstream {
    recv: UdpSocket,
    send: std::net::UdpSocket,
    /// quinn-udp's view of the socket (GRO turned on, for batched receives).
    state: UdpSocketState,
}

/// State shared by the listener task and every flow task.
struct Shared {
    socket: UdpSocket,
    /// The listener socket again, for sends (see `Upstream`).
    reply: std::net::UdpSocket,
    /// quinn-udp's view of the listener socket: batched receives, GSO sends.
    state: UdpSocketState,
    table: Mutex<Table>,
    epoch: Instant,
    /// The kernel fast path, when the XDP plane runs and the listener has
    /// a specific address (the kernel rewrites to it).
    fast: Option<(Arc<dyn FastPath>, SocketAddr)>,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        // A panic while holding the lock is a bug; the table is still
        // consistent enough to keep routing.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kernel-carried flows userspace would reap now (no datagram it
    /// saw for `idle_ms`): only those need asking the kernel. Cheap, under
    /// the table lock; the asking happens after it is released.
    fn kernel_idle_candidates(
        &self,
        table: &Table,
        now: u64,
        idle_ms: u64,
    ) -> Vec<Arc<FlowShared>> {
        if self.fast.is_none() {
            return Vec::new();
        }
        table
            .shared_all()
            .filter(|f| f.kernel().is_some())
            .filter(|f| {
                now.saturating_sub(f.last_seen_ms.load(std::sync::atomic::Ordering::Relaxed))
                    >= idle_ms
            })
            .cloned()
            .collect()
    }

    /// Ask the kernel how recently it forwarded each of `flows`, so the
    /// reaper counts those datagrams too. Two map lookups a flow: called
    /// without the table lock the datagram path needs.
    fn refresh_from_kernel(&self, flows: &[Arc<FlowShared>], now: u64) {
        let Some((fast, _)) = &self.fast else {
            return;
        };
        for flow in flows {
            let Some(k) = flow.kernel() else { continue };
            if let Some(idle) = fast.idle_ms(&k) {
                let seen = now.saturating_sub(idle);
                if seen > flow.last_seen_ms.load(std::sync::atomic::Ordering::Relaxed) {
                    flow.touch(seen);
                }
            }
        }
    }

    fn gauge(&self, table: &Table) {
        metrics()
            .flows_active
            .set(i64::try_from(table.len()).unwrap_or(i64::MAX));
    }
}

/// Serve `[passthrough]` on `socket` until `shutdown`; then place no new
/// flows and return once the existing ones have ended (the caller bounds
/// the wait with `drain_timeout_ms`).
pub async fn serve(
    socket: UdpSocket,
    settings: Arc<ArcSwap<Settings>>,
    shutdown: CancellationToken,
    fast: Option<Arc<dyn FastPath>>,
) {
    // The kernel rewrites replies to come from the listener's address: a
    // wildcard one names no source, so such a listener stays in userspace.
    let listen = socket
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    if fast.is_some() && listen.is_none() {
        tracing::info!(
            "passthrough: bind_addr is a wildcard: its flows stay out of the XDP fast path"
        );
    }
    let fast = fast.zip(listen);
    let (socket, reply, state) = match split(socket) {
        Ok(parts) => parts,
        Err(e) => {
            tracing::error!(error = %e, "passthrough: cannot use the listener socket");
            return;
        }
    };
    let shared = Arc::new(Shared {
        socket,
        reply,
        state,
        table: Mutex::new(FlowTable::default()),
        epoch: Instant::now(),
        fast,
    });
    let mut draining = false;
    let mut batch = RecvBatch::default();
    let period = |s: &Settings| (s.idle_timeout / 4).min(MAX_REAP_PERIOD);
    let mut reap = tokio::time::interval(period(&settings.load()));
    reap.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled(), if !draining => draining = true,
            _ = reap.tick() => {
                let s = settings.load();
                let idle = u64::try_from(s.idle_timeout.as_millis()).unwrap_or(u64::MAX);
                let now = shared.now_ms();
                let asking = shared.kernel_idle_candidates(&shared.table(), now, idle);
                shared.refresh_from_kernel(&asking, now);
                let mut table = shared.table();
                let reaped = table.reap(shared.now_ms(), idle);
                metrics().flows_total.with_label_values(&["reaped"]).inc_by(reaped as u64);
                shared.gauge(&table);
                if draining && table.is_empty() {
                    return;
                }
            }
            ready = shared.socket.readable() => {
                let got = ready.and_then(|()| {
                    shared.socket.try_io(Interest::READABLE, || {
                        batch.recv(&shared.state, &shared.socket)
                    })
                });
                match got {
                    Ok(n) => {
                        let s = settings.load_full();
                        for slot in (0..n).filter_map(|i| batch.slot(i)) {
                            for datagram in slot.datagrams() {
                                route(&shared, &s, datagram, slot.from, draining);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        // ICMP errors from clients surface here; nothing to do.
                        tracing::debug!(error = %e, "passthrough: receive error");
                    }
                }
            }
        }
    }
}

/// The same socket twice, for tokio's receive side and for plain sends,
/// and quinn-udp's state for it.
fn split(socket: UdpSocket) -> io::Result<(UdpSocket, std::net::UdpSocket, UdpSocketState)> {
    let std = socket.into_std()?;
    let send = std.try_clone()?;
    let state = UdpSocketState::new((&std).into())?;
    Ok((UdpSocket::from_std(std)?, send, state))
}

/// Find (or place) the flow of one client datagram and forward it.
fn route(
    shared: &Arc<Shared>,
    s: &Arc<Settings>,
    datagram: &[u8],
    from: SocketAddr,
    draining: bool,
) {
    let packet = match header::parse(datagram) {
        Ok(p) => p,
        Err(m) => return metrics::drop(m.as_str()),
    };
    let now = shared.now_ms();
    let mut table = shared.table();
    let dcid = match packet {
        Packet::Short { rest } => match table.by_short(rest, s.max_dcid_len_routed) {
            Some((id, _)) => return forward(shared, &mut table, s, id, datagram, from, now),
            None => return stateless(shared, &mut table, s, rest, datagram, from, now, draining),
        },
        Packet::VersionNegotiation { .. } => return metrics::drop("version_negotiation"),
        Packet::Long { dcid, .. } | Packet::OtherVersion { dcid, .. } => dcid,
    };
    if dcid.len() > s.max_dcid_len_routed {
        return metrics::drop("dcid_too_long");
    }
    if let Some(id) = table.by_cid(dcid) {
        return forward(shared, &mut table, s, id, datagram, from, now);
    }
    // Only a client's first packet may start a flow: an Initial, or a
    // long header of a version we do not know (the backend answers it
    // with Version Negotiation).
    let starts = matches!(
        packet,
        Packet::Long {
            ty: LongType::Initial,
            ..
        } | Packet::OtherVersion { .. }
    );
    if !starts {
        return stateless(shared, &mut table, s, dcid, datagram, from, now, draining);
    }
    if datagram.len() < MIN_INITIAL_DATAGRAM {
        return metrics::drop("small_initial");
    }
    if dcid.len() < s.min_client_dcid_len {
        return metrics::drop("dcid_too_short");
    }
    if draining {
        metrics::flow_event("refused_draining");
        return metrics::drop("draining");
    }
    let Some(id) = place(shared, &mut table, s, dcid, from, now) else {
        return;
    };
    forward(shared, &mut table, s, id, datagram, from, now);
}

/// A packet of a connection the table does not know (this process
/// restarted, another instance placed it, or the client moved to an ID
/// the backend issued encrypted): if its DCID is a QUIC-LB ID naming a
/// backend, the flow is entered as established on that backend; else it
/// cannot be routed.
#[allow(clippy::too_many_arguments)]
fn stateless(
    shared: &Arc<Shared>,
    table: &mut Table,
    s: &Arc<Settings>,
    dcid_bytes: &[u8],
    datagram: &[u8],
    from: SocketAddr,
    now: u64,
    draining: bool,
) {
    let Some((index, cid)) = s.quic_lb_target(dcid_bytes) else {
        return metrics::drop("unknown_cid");
    };
    if draining {
        return metrics::drop("draining");
    }
    let Some(picked) = s.pool.hold(index) else {
        return metrics::drop("no_backend");
    };
    let Some(id) = enter(shared, table, s, picked, cid, from, now, None, true) else {
        return;
    };
    table.mark_answered(id);
    metrics::flow_event("quic_lb");
    forward(shared, table, s, id, datagram, from, now);
}

/// A new flow for `dcid`: pick a backend through the pool, open the
/// flow's upstream socket, enter it in the table and start its task.
fn place(
    shared: &Arc<Shared>,
    table: &mut Table,
    s: &Arc<Settings>,
    dcid: &[u8],
    from: SocketAddr,
    now: u64,
) -> Option<u64> {
    let key = (!s.hash_by_ip).then(|| hash_bytes(dcid));
    let ctx = PickContext {
        client_ip: Some(from.ip()),
        hash: key,
        ..Default::default()
    };
    let Some(picked) = s.pool.pick(&ctx) else {
        metrics::flow_event("failed");
        metrics::drop("no_backend");
        return None;
    };
    let id = enter(shared, table, s, picked, dcid, from, now, key, false)?;
    metrics::flow_event("placed");
    Some(id)
}

/// Open the flow's upstream socket to `picked`, enter the flow under
/// `cid` and start its task. `key`: the placement hash, for a move;
/// `established`: found by a QUIC-LB ID, the connection lives there.
#[allow(clippy::too_many_arguments)]
fn enter(
    shared: &Arc<Shared>,
    table: &mut Table,
    s: &Arc<Settings>,
    picked: InFlight,
    dcid: &[u8],
    from: SocketAddr,
    now: u64,
    key: Option<u64>,
    established: bool,
) -> Option<u64> {
    let index = picked.backend().index;
    let upstream = match s.addrs.get(index).map(|a| connect_upstream(*a)) {
        Some(Ok(u)) => u,
        _ => {
            metrics::drop("upstream_socket");
            return None;
        }
    };
    let flow_shared = FlowShared::new(from, now);
    let placed = table.insert(
        dcid,
        from,
        index,
        Arc::clone(&upstream),
        Arc::clone(&flow_shared),
        s.limits,
    );
    let placed = match placed {
        Ok(p) => p,
        Err(why) => {
            metrics::flow_event(match why {
                crate::flows::Refused::Full => "refused_full",
                crate::flows::Refused::PerIp => "refused_per_ip",
                _ => "refused_cid",
            });
            metrics::drop(why.as_str());
            return None;
        }
    };
    if placed.evicted.is_some() {
        metrics::flow_event("evicted");
    }
    eg_runtime::metrics::metrics()
        .connections_total
        .with_label_values(&[crate::settings::POOL_NAME])
        .inc();
    shared.gauge(table);
    let task = FlowTask {
        id: placed.id,
        shared: Arc::clone(shared),
        flow: flow_shared,
        settings: Arc::clone(s),
        upstream,
        picked,
        tried: vec![index],
        learned: Vec::new(),
        answered: established,
        hash: key,
    };
    tokio::spawn(task.run());
    Some(placed.id)
}

/// Send one client datagram on flow `id`'s upstream socket.
fn forward(
    shared: &Shared,
    table: &mut Table,
    s: &Settings,
    id: u64,
    datagram: &[u8],
    from: SocketAddr,
    now: u64,
) {
    let Some(flow) = table.get(id) else {
        return;
    };
    if s.strict_source_binding && from != flow.client {
        return metrics::drop("source_mismatch");
    }
    // Kept for a move to another backend if this one never answers;
    // bounded, newest dropped.
    if !flow.answered() && table.keep(id, datagram, s.per_flow_backlog) == Kept::BacklogFull {
        return metrics::drop("backlog_full");
    }
    let Some(flow) = table.get_mut(id) else {
        return;
    };
    if flow.seen_from(from, now) {
        // The client moved: the kernel's entries name its old address.
        if let (Some((fast, _)), Some(old)) = (&shared.fast, flow.shared.kernel()) {
            fast.remove(&old);
            let moved = KernelFlow {
                client: from,
                ..old
            };
            let installed = fast.install(&moved);
            flow.shared.set_kernel(installed.then_some(moved));
        }
    }
    match flow.upstream.send.send(datagram) {
        Ok(_) => metrics().to_backend.inc(),
        Err(_) => metrics::drop("send_to_backend"),
    }
}

/// A UDP socket of the backend's family, connected to it: its replies
/// are this flow's and nobody else's.
fn connect_upstream(backend: SocketAddr) -> io::Result<Arc<Upstream>> {
    let local: SocketAddr = if backend.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(backend)?;
    socket.set_nonblocking(true)?;
    let state = UdpSocketState::new((&socket).into())?;
    let send = socket.try_clone()?;
    Ok(Arc::new(Upstream {
        recv: UdpSocket::from_std(socket)?,
        send,
        state,
    }))
}

/// One flow's backend-to-client half, and its placement until the
/// backend first answers.
struct FlowTask {
    id: u64,
    shared: Arc<Shared>,
    flow: Arc<FlowShared>,
    settings: Arc<Settings>,
    upstream: Arc<Upstream>,
    /// Counts the flow on its backend; reports the outcome to health.
    picked: InFlight,
    /// Backends tried, for moving a flow no backend answered yet.
    tried: Vec<usize>,
    /// Server-chosen CIDs already entered in the table.
    learned: Vec<Vec<u8>>,
    answered: bool,
    hash: Option<u64>,
}

enum Step {
    Go,
    /// The backend refused (ICMP unreachable): its fault; try another.
    Refused,
    /// No answer by the deadline: try another, blaming nobody. A client
    /// can send Initials no server can decrypt (junk under a valid
    /// header); counting their silence would let it eject every backend.
    /// A backend that dies silently is found by the active checks.
    Unanswered,
    End,
}

impl FlowTask {
    async fn run(mut self) {
        let mut deadline = tokio::time::Instant::now() + self.settings.answer_timeout;
        loop {
            let step = tokio::select! {
                () = self.flow.stop.cancelled() => Step::End,
                () = tokio::time::sleep_until(deadline), if !self.answered => Step::Unanswered,
                ready = self.upstream.recv.readable() => match ready {
                    Ok(()) => self.drain_upstream(),
                    Err(_) => Step::Refused,
                },
            };
            match step {
                Step::Go => {}
                Step::End => break,
                // An answered flow lives on its backend: nothing to move.
                Step::Refused | Step::Unanswered if self.answered => break,
                Step::Refused | Step::Unanswered => {
                    if !self.move_on(matches!(step, Step::Refused)) {
                        break;
                    }
                    deadline = tokio::time::Instant::now() + self.settings.answer_timeout;
                }
            }
        }
        if let (Some((fast, _)), Some(k)) = (&self.shared.fast, self.flow.kernel()) {
            fast.remove(&k);
            self.flow.set_kernel(None);
        }
        let mut table = self.shared.table();
        if table.get(self.id).is_some() {
            table.remove(self.id);
            self.shared.gauge(&table);
        }
    }

    /// The backend answered: hand the flow's short-header datagrams to
    /// the kernel.
    fn install(&self) {
        let Some((fast, listen)) = &self.shared.fast else {
            return;
        };
        let index = self.picked.backend().index;
        let (Some(backend), Ok(upstream)) = (
            self.settings.addrs.get(index).copied(),
            self.upstream.send.local_addr(),
        ) else {
            return;
        };
        let flow = KernelFlow {
            client: self.flow.client(),
            listen: *listen,
            upstream,
            backend,
            backend_index: u32::try_from(index).unwrap_or(u32::MAX),
        };
        if fast.install(&flow) {
            self.flow.set_kernel(Some(flow));
        }
    }

    /// Relay every datagram the backend has sent so far, consecutive
    /// ones of one size as one GSO send.
    fn drain_upstream(&mut self) -> Step {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch { recv, gather } = &mut *scratch;
            let mut relayed = 0;
            let mut step = Step::Go;
            // Each call brings at least one datagram, so MAX_BATCH calls
            // bound the work even if a call ever brought none.
            for _ in 0..MAX_BATCH {
                if relayed >= MAX_BATCH {
                    // More may be waiting: the socket stays readable, so
                    // the next turn of the loop comes back here after
                    // other tasks ran.
                    break;
                }
                let up = &self.upstream;
                let got = up
                    .recv
                    .try_io(Interest::READABLE, || recv.recv(&up.state, &up.recv));
                match got {
                    Ok(n) => {
                        for slot in (0..n).filter_map(|i| recv.slot(i)) {
                            relayed += self.relay(&slot, gather);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // ICMP unreachable before any answer: nobody listens.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && !self.answered => {
                        step = Step::Refused;
                        break;
                    }
                    Err(_) => break,
                }
            }
            // The gather buffer is the thread's: nothing stays in it.
            self.flush(gather);
            step
        })
    }

    /// One receive buffer's datagrams: a GRO buffer is already a GSO
    /// batch and goes out as it is; single datagrams are gathered.
    fn relay(&mut self, slot: &Slot<'_>, gather: &mut Gather) -> usize {
        for datagram in slot.datagrams() {
            self.note(datagram);
        }
        let count = slot.count();
        if count > 1 {
            self.flush(gather);
            self.send(slot.data, slot.stride);
        } else {
            let max = self.shared.state.max_gso_segments();
            if !gather.push(slot.data, max) {
                self.flush(gather);
                gather.push(slot.data, max);
            }
        }
        count
    }

    /// Send what `gather` holds and empty it.
    fn flush(&self, gather: &mut Gather) {
        if let Some((contents, segment)) = gather.pending() {
            self.send(contents, segment);
        }
        gather.clear();
    }

    fn send(&self, contents: &[u8], segment: usize) {
        let shared = &self.shared;
        let to = self.flow.client();
        let (sent, lost) =
            batch::send_segments(&shared.state, &shared.reply, to, contents, segment);
        metrics().to_client.inc_by(sent as u64);
        metrics()
            .dropped_total
            .with_label_values(&["send_to_client"])
            .inc_by(lost as u64);
    }

    /// What one backend datagram tells the table: the backend answered,
    /// and the connection IDs it chose.
    fn note(&mut self, datagram: &[u8]) {
        let now = self.shared.now_ms();
        self.flow.touch(now);
        let scid = header::parse(datagram).ok().and_then(|p| p.scid());
        let learn = scid.filter(|c| {
            !c.is_empty()
                && self.learned.len() < MAX_CIDS_PER_FLOW
                && !self.learned.iter().any(|l| l == c)
        });
        if !self.answered || learn.is_some() {
            let mut table = self.shared.table();
            if !self.answered {
                self.answered = true;
                table.mark_answered(self.id);
                self.picked.report(Outcome::Success);
                self.install();
            }
            if let Some(cid) = learn {
                table.add_cid(self.id, cid);
                self.learned.push(cid.to_vec());
            }
        }
    }

    /// The backend did not answer: move the flow, with the datagrams it
    /// has kept, to a backend not tried yet, feeding passive health when
    /// the backend `refused`. `false` when none is left.
    fn move_on(&mut self, refused: bool) -> bool {
        if refused {
            self.picked.report(Outcome::Failure);
        }
        let ctx = PickContext {
            client_ip: Some(self.flow.client().ip()),
            hash: self.hash,
            exclude: &self.tried,
            ..Default::default()
        };
        let Some(picked) = self.settings.pool.pick(&ctx) else {
            metrics::flow_event("failed");
            return false;
        };
        let index = picked.backend().index;
        let Some(Ok(upstream)) = self.settings.addrs.get(index).map(|a| connect_upstream(*a))
        else {
            metrics::flow_event("failed");
            return false;
        };
        let backlog = {
            let mut table = self.shared.table();
            let Some(flow) = table.get_mut(self.id) else {
                return false;
            };
            flow.upstream = Arc::clone(&upstream);
            flow.backend = index;
            flow.backlog.clone()
        };
        for d in &backlog {
            let _ = upstream.send.send(d);
        }
        metrics::flow_event("replaced");
        self.tried.push(index);
        self.upstream = upstream;
        self.picked = picked;
        true
    }
}
