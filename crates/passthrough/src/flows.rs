//! The flow table: every QUIC connection Mode A carries, found by any
//! connection ID it uses (the client's first DCID, the IDs the backend
//! chose in its long-header replies, QUIC-LB IDs), with every bound the
//! datapath needs: total flows, flows per client IP, IDs per flow, and the
//! half-open flows (backend not heard from yet) that room is taken from
//! first when the table is full. Sans-io: time is passed in as
//! milliseconds; the datapath owns the sockets.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use eg_runtime::CancellationToken;

use crate::header::MAX_CID_LEN_V1;

/// Connection IDs one flow may register. A flow learns the client's first
/// DCID, the backend's SCID from its handshake (and a Retry's), and a
/// QUIC-LB ID or two it was found by: 8 covers that with room, and stops
/// a backend (or a bug) from filling the index through one flow.
pub const MAX_CIDS_PER_FLOW: usize = 8;

/// Bytes of kept datagrams (the backlogs of flows still being placed) in
/// the whole table. `per_flow_backlog` bounds one flow; this bounds a
/// flood of spoofed Initials each filling its own: 64 MiB holds the
/// first flights of ~40 000 handshakes at once, and past it a placing
/// flow's datagrams are still forwarded, only not kept for a move.
pub const MAX_BACKLOG_BYTES: usize = 64 << 20;

/// What `keep` did with a placing flow's datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// Kept for a move; forward it.
    Yes,
    /// The table's byte budget is spent: forward it, do not keep it.
    OverBudget,
    /// The flow's backlog is full: drop it (newest dropped).
    BacklogFull,
}

/// A connection ID, stored inline (at most 20 bytes in QUIC v1/v2).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cid {
    len: u8,
    bytes: [u8; MAX_CID_LEN_V1],
}

impl Cid {
    /// `None` when longer than 20 bytes (the router never keeps those).
    pub fn new(bytes: &[u8]) -> Option<Self> {
        let mut c = Self {
            len: u8::try_from(bytes.len()).ok()?,
            bytes: [0; MAX_CID_LEN_V1],
        };
        c.bytes.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(c)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }
}

impl std::fmt::Debug for Cid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What the datapath shares between the table entry and the flow's task.
#[derive(Debug)]
pub struct FlowShared {
    /// Last datagram either way, in the table's milliseconds.
    pub last_seen_ms: AtomicU64,
    /// Where replies go: the latest client address (NAT rebinding and
    /// migration move it).
    pub client: Mutex<SocketAddr>,
    /// Ends the flow's task when the table drops the flow.
    pub stop: CancellationToken,
    /// The flow as installed in the kernel fast path, if it is.
    pub kernel: Mutex<Option<crate::fastpath::KernelFlow>>,
}

impl FlowShared {
    pub fn new(client: SocketAddr, now_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            last_seen_ms: AtomicU64::new(now_ms),
            client: Mutex::new(client),
            stop: CancellationToken::new(),
            kernel: Mutex::new(None),
        })
    }

    pub fn touch(&self, now_ms: u64) {
        self.last_seen_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn client(&self) -> SocketAddr {
        match self.client.lock() {
            Ok(c) => *c,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    /// The kernel's copy of the flow, if installed.
    pub fn kernel(&self) -> Option<crate::fastpath::KernelFlow> {
        match self.kernel.lock() {
            Ok(k) => *k,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }

    pub fn set_kernel(&self, flow: Option<crate::fastpath::KernelFlow>) {
        match self.kernel.lock() {
            Ok(mut k) => *k = flow,
            Err(poisoned) => *poisoned.into_inner() = flow,
        }
    }

    fn set_client(&self, addr: SocketAddr) {
        match self.client.lock() {
            Ok(mut c) => *c = addr,
            Err(poisoned) => *poisoned.into_inner() = addr,
        }
    }
}

/// One flow, generic over what the datapath forwards with (`U`: the
/// upstream socket), so the table is testable without sockets.
#[derive(Debug)]
pub struct Flow<U> {
    pub id: u64,
    pub upstream: U,
    /// Index of its backend in the pool.
    pub backend: usize,
    pub shared: Arc<FlowShared>,
    /// The source the flow's datagrams last came from.
    pub client: SocketAddr,
    /// Client datagrams accepted while the backend has not answered
    /// (`per_flow_backlog` of them at most), replayed if the flow moves.
    pub backlog: Vec<Vec<u8>>,
    cids: Vec<Cid>,
    client_ip: IpAddr,
    answered: bool,
}

impl<U> Flow<U> {
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Note a datagram from `from`; returns whether the source moved.
    pub fn seen_from(&mut self, from: SocketAddr, now_ms: u64) -> bool {
        self.shared.touch(now_ms);
        if from == self.client {
            return false;
        }
        self.client = from;
        self.shared.set_client(from);
        true
    }
}

/// Why a new flow was not placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_quic_connections` flows, none of them half-open.
    Full,
    /// The client IP has `per_ip` flows already.
    PerIp,
    /// The CID already names another flow.
    Taken,
    /// Longer than 20 bytes.
    BadCid,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "table_full",
            Self::PerIp => "per_ip_cap",
            Self::Taken => "cid_taken",
            Self::BadCid => "dcid_too_long",
        }
    }
}

/// The bounds, re-read from the live settings at each new flow.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_flows: usize,
    pub per_ip: usize,
}

#[derive(Debug)]
pub struct FlowTable<U> {
    flows: HashMap<u64, Flow<U>>,
    by_cid: HashMap<Cid, u64>,
    per_ip: HashMap<IpAddr, usize>,
    /// Flows whose backend has not answered, oldest (lowest id) first.
    half_open: BTreeSet<u64>,
    /// How many registered CIDs have each length: a short header's DCID
    /// length is not on the wire, so lookups try the lengths in use.
    lens: [usize; MAX_CID_LEN_V1 + 1],
    next_id: u64,
    /// Bytes in every flow's backlog together.
    backlog_bytes: usize,
}

impl<U> Default for FlowTable<U> {
    fn default() -> Self {
        Self {
            flows: HashMap::new(),
            by_cid: HashMap::new(),
            per_ip: HashMap::new(),
            half_open: BTreeSet::new(),
            lens: [0; MAX_CID_LEN_V1 + 1],
            next_id: 1,
            backlog_bytes: 0,
        }
    }
}

/// A flow `insert` placed, and the one it evicted for room, if any.
pub struct Placed<U> {
    pub id: u64,
    pub evicted: Option<Flow<U>>,
}

impl<U> FlowTable<U> {
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Flow<U>> {
        self.flows.get_mut(&id)
    }

    pub fn get(&self, id: u64) -> Option<&Flow<U>> {
        self.flows.get(&id)
    }

    /// The flow a CID names.
    pub fn by_cid(&self, cid: &[u8]) -> Option<u64> {
        self.by_cid.get(&Cid::new(cid)?).copied()
    }

    /// The flow a short header's DCID names, trying each CID length in
    /// use up to `max_len` (`max_dcid_len_routed`).
    pub fn by_short(&self, rest: &[u8], max_len: usize) -> Option<(u64, usize)> {
        (1..=max_len.min(MAX_CID_LEN_V1))
            .filter(|&len| self.lens.get(len).is_some_and(|n| *n > 0))
            .find_map(|len| {
                let cid = rest.get(..len)?;
                self.by_cid(cid).map(|id| (id, len))
            })
    }

    /// Place a new flow found by `cid` for `client`; when full, evict the
    /// oldest half-open flow (a handshake the backend never answered,
    /// such as a spoofed Initial) rather than refuse.
    pub fn insert(
        &mut self,
        cid: &[u8],
        client: SocketAddr,
        backend: usize,
        upstream: U,
        shared: Arc<FlowShared>,
        limits: Limits,
    ) -> Result<Placed<U>, Refused> {
        let cid = Cid::new(cid).ok_or(Refused::BadCid)?;
        if self.by_cid.contains_key(&cid) {
            return Err(Refused::Taken);
        }
        let ip = client.ip();
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= limits.per_ip {
            return Err(Refused::PerIp);
        }
        let mut evicted = None;
        if self.flows.len() >= limits.max_flows {
            let oldest = self.half_open.first().copied().ok_or(Refused::Full)?;
            evicted = self.remove(oldest);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.flows.insert(
            id,
            Flow {
                id,
                upstream,
                backend,
                shared,
                client,
                backlog: Vec::new(),
                cids: Vec::new(),
                client_ip: ip,
                answered: false,
            },
        );
        *self.per_ip.entry(ip).or_insert(0) += 1;
        self.half_open.insert(id);
        self.add_cid(id, cid.as_bytes());
        Ok(Placed { id, evicted })
    }

    /// Map one more CID to flow `id` (bounded per flow). A CID another
    /// flow holds stays with it.
    pub fn add_cid(&mut self, id: u64, cid: &[u8]) -> bool {
        let Some(cid) = Cid::new(cid) else {
            return false;
        };
        let Some(flow) = self.flows.get_mut(&id) else {
            return false;
        };
        if flow.cids.len() >= MAX_CIDS_PER_FLOW || self.by_cid.contains_key(&cid) {
            return false;
        }
        flow.cids.push(cid);
        self.by_cid.insert(cid, id);
        if let Some(n) = self.lens.get_mut(usize::from(cid.len)) {
            *n += 1;
        }
        true
    }

    /// Keep a datagram of flow `id` (still being placed) for a move,
    /// within `per_flow` datagrams and the table's byte budget.
    pub fn keep(&mut self, id: u64, datagram: &[u8], per_flow: usize) -> Kept {
        let Some(flow) = self.flows.get_mut(&id) else {
            return Kept::OverBudget;
        };
        if flow.backlog.len() >= per_flow {
            return Kept::BacklogFull;
        }
        if self.backlog_bytes + datagram.len() > MAX_BACKLOG_BYTES {
            return Kept::OverBudget;
        }
        self.backlog_bytes += datagram.len();
        flow.backlog.push(datagram.to_vec());
        Kept::Yes
    }

    pub fn backlog_bytes(&self) -> usize {
        self.backlog_bytes
    }

    fn release_backlog(backlog_bytes: &mut usize, flow: &mut Flow<U>) {
        let held: usize = flow.backlog.iter().map(Vec::len).sum();
        *backlog_bytes = backlog_bytes.saturating_sub(held);
        flow.backlog = Vec::new();
    }

    /// The backend has answered: the flow is no longer half-open.
    pub fn mark_answered(&mut self, id: u64) {
        if let Some(flow) = self.flows.get_mut(&id) {
            flow.answered = true;
            Self::release_backlog(&mut self.backlog_bytes, flow);
            self.half_open.remove(&id);
        }
    }

    /// Drop flow `id` and every CID it holds; its task is told to stop.
    pub fn remove(&mut self, id: u64) -> Option<Flow<U>> {
        let mut flow = self.flows.remove(&id)?;
        Self::release_backlog(&mut self.backlog_bytes, &mut flow);
        for cid in &flow.cids {
            self.by_cid.remove(cid);
            if let Some(n) = self.lens.get_mut(usize::from(cid.len)) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(n) = self.per_ip.get_mut(&flow.client_ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&flow.client_ip);
            }
        }
        self.half_open.remove(&id);
        flow.shared.stop.cancel();
        Some(flow)
    }

    /// Every flow's shared state (the reaper asks the kernel about the
    /// ones it forwards).
    pub fn shared_all(&self) -> impl Iterator<Item = &Arc<FlowShared>> {
        self.flows.values().map(|f| &f.shared)
    }

    /// Remove every flow with no datagram for `idle_ms`; how many.
    pub fn reap(&mut self, now_ms: u64, idle_ms: u64) -> usize {
        let idle: Vec<u64> = self
            .flows
            .values()
            .filter(|f| {
                now_ms.saturating_sub(f.shared.last_seen_ms.load(Ordering::Relaxed)) >= idle_ms
            })
            .map(|f| f.id)
            .collect();
        for id in &idle {
            self.remove(*id);
        }
        idle.len()
    }

    /// Flows now per backend index (for tests and the status of a pool).
    pub fn count_on(&self, backend: usize) -> usize {
        self.flows.values().filter(|f| f.backend == backend).count()
    }
}

#[cfg(test)]
#[path = "flows_tests.rs"]
mod tests;
