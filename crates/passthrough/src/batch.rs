//! Many datagrams per system call, through quinn-udp: `recvmmsg` with
//! GRO on receive (one buffer may hold several datagrams of one sender,
//! split by its stride), GSO on send (one buffer of equal-size datagrams,
//! the last may be shorter, leaves as that many datagrams). Without
//! kernel support quinn-udp falls back to one datagram per call, and
//! nothing here changes.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::AsFd;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

/// Receive buffers per call: 8 x 64 KiB = 512 KiB per worker thread (and
/// per listener). With GRO a buffer holds up to ~44 full-size datagrams,
/// so one call can bring more than `MAX_BATCH`; without GRO 8 datagrams
/// a call already cuts the calls eightfold.
pub const SLOTS: usize = 8;

/// One receive buffer: a GRO buffer is at most 64 KiB (the kernel's
/// limit for a coalesced packet) and a single datagram at most 65507
/// bytes, so nothing a peer sends is ever cut short.
pub const SLOT: usize = 65_536;

/// Largest GSO send: the datagrams of one transmit go out as one IP
/// packet before segmentation, whose payload cannot pass 65535 less the
/// IPv4 and UDP headers.
pub const MAX_GSO_BYTES: usize = 65_507;

/// The receive side: `SLOTS` buffers and what the kernel said of each.
pub struct RecvBatch {
    buf: Vec<u8>,
    meta: [RecvMeta; SLOTS],
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self {
            buf: vec![0; SLOTS * SLOT],
            meta: std::array::from_fn(|_| RecvMeta::default()),
        }
    }
}

/// The datagrams of one receive buffer, all from `from`.
pub struct Slot<'a> {
    pub from: SocketAddr,
    /// Every datagram but the last is this long; the last may be shorter.
    pub stride: usize,
    pub data: &'a [u8],
}

impl Slot<'_> {
    /// How many datagrams this buffer holds (an empty datagram is one).
    pub fn count(&self) -> usize {
        self.data.len().div_ceil(self.stride).max(1)
    }

    /// Each datagram in order.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        // `chunks` yields nothing for an empty buffer, but an empty
        // datagram is still one datagram.
        let empty = self.data.is_empty().then_some(self.data);
        self.data.chunks(self.stride).chain(empty)
    }
}

impl RecvBatch {
    /// One non-blocking receive call on `socket`: how many buffers it filled.
    pub fn recv(&mut self, state: &UdpSocketState, socket: &impl AsFd) -> io::Result<usize> {
        let mut chunks = self.buf.chunks_mut(SLOT);
        let mut bufs: [IoSliceMut<'_>; SLOTS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let n = state.recv(socket.into(), &mut bufs, &mut self.meta)?;
        Ok(n.min(SLOTS))
    }

    /// Buffer `i` of the last call, if it filled it.
    pub fn slot(&self, i: usize) -> Option<Slot<'_>> {
        let meta = self.meta.get(i)?;
        let start = i.checked_mul(SLOT)?;
        let data = self.buf.get(start..start + meta.len.min(SLOT))?;
        // A stride of 0 (no GRO message) or past the data: one datagram.
        let stride = match meta.stride {
            0 => data.len(),
            s => s.min(data.len()),
        };
        Some(Slot {
            from: meta.addr,
            stride: stride.max(1),
            data,
        })
    }
}

/// Consecutive datagrams to one destination, gathered into one GSO send:
/// all of one size, the last may be shorter (it closes the batch).
pub struct Gather {
    buf: Vec<u8>,
    segment: usize,
    count: usize,
    closed: bool,
}

impl Default for Gather {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(MAX_GSO_BYTES),
            segment: 0,
            count: 0,
            closed: false,
        }
    }
}

impl Gather {
    /// Add `datagram` if it can join the batch under `max_segments`;
    /// `false` (and nothing added) when the batch must be sent first.
    pub fn push(&mut self, datagram: &[u8], max_segments: usize) -> bool {
        let len = datagram.len();
        if self.count == 0 {
            self.segment = len;
            // An empty datagram cannot be a GSO segment: it goes alone.
            self.closed = len == 0;
        } else if self.closed
            || len > self.segment
            || self.count >= max_segments
            || self.buf.len() + len > MAX_GSO_BYTES
        {
            return false;
        } else if len < self.segment {
            self.closed = true;
        }
        self.buf.extend_from_slice(datagram);
        self.count += 1;
        true
    }

    /// The pending batch as (contents, segment size), if any.
    pub fn pending(&self) -> Option<(&[u8], usize)> {
        (self.count > 0).then_some((self.buf.as_slice(), self.segment))
    }

    /// Empty the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.closed = false;
    }
}

/// Send `contents`, datagrams of `segment` bytes (the last may be
/// shorter), to `to`, as few GSO sends as `state` allows. Returns how
/// many datagrams went out and how many did not.
pub fn send_segments(
    state: &UdpSocketState,
    socket: &impl AsFd,
    to: SocketAddr,
    contents: &[u8],
    segment: usize,
) -> (usize, usize) {
    let segment = segment.max(1);
    let per_send = state.max_gso_segments().min(MAX_GSO_BYTES / segment).max(1);
    let mut sent = 0;
    let mut lost = 0;
    let chunks = contents.chunks(segment.saturating_mul(per_send));
    let empty = contents.is_empty().then_some(contents);
    for chunk in chunks.chain(empty) {
        let n = chunk.len().div_ceil(segment).max(1);
        if send_one(state, socket, to, chunk, segment).is_ok() {
            sent += n;
        } else if n > 1 && state.max_gso_segments() == 1 {
            // The kernel refused GSO (quinn-udp turned it off on EIO or
            // EINVAL): the same datagrams one by one.
            for d in chunk.chunks(segment) {
                match send_one(state, socket, to, d, segment) {
                    Ok(()) => sent += 1,
                    Err(_) => lost += 1,
                }
            }
        } else {
            lost += n;
        }
    }
    (sent, lost)
}

fn send_one(
    state: &UdpSocketState,
    socket: &impl AsFd,
    to: SocketAddr,
    contents: &[u8],
    segment: usize,
) -> io::Result<()> {
    let transmit = Transmit {
        destination: to,
        ecn: None,
        contents,
        segment_size: Some(segment),
        src_ip: None,
    };
    state.try_send(socket.into(), &transmit)
}

#[cfg(test)]
#[path = "batch_tests.rs"]
mod tests;
