//! HTTP/2 control-frame defences, in the client IO under hyper.
//!
//! h2 answers every SETTINGS and PING frame and lets a client reset streams
//! as fast as it opens them; a flood of them costs us a write (and for
//! HEADERS + RST_STREAM, a backend request) per frame. This layer reads
//! the frame headers of both directions as they pass: inbound to count
//! what the client sends against token buckets, outbound only to know
//! where h2's frames begin, so that when a bucket runs dry it can put a
//! GOAWAY (ENHANCE_YOUR_CALM) between two of h2's frames and end the
//! connection. It also reports how long a header block has been left open
//! (HEADERS without END_HEADERS), which `header_timeout_ms` bounds, and
//! counts the defences h2 applies itself (rapid reset, header lists over
//! the limit) from the frames h2 sends.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use eg_runtime::metrics::metrics;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::watch::ConnWatch;
use crate::h2_frame::{
    ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, FRAME_HEADER, GOAWAY, HEADERS,
    MAX_FRAME_SIZE, PING, RST_STREAM, SETTINGS,
};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const PROTOCOL_ERROR: u32 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;
const COMPRESSION_ERROR: u32 = 0x9;
#[cfg(test)]
const REFUSED_STREAM: u32 = 0x7;

/// SETTINGS a client may send: one at the start and a rare change later is
/// all a real client needs; 32 at once and one a second after that.
const SETTINGS_BUDGET: Budget = Budget {
    burst: 32,
    per_second: 1,
};
/// PINGs: keep-alives and gRPC's bandwidth probes (one per round trip of
/// data). Each HEADERS or DATA frame either way earns one back, so probes
/// that ride on real traffic never run dry; a bare flood does in 64.
const PING_BUDGET: Budget = Budget {
    burst: 64,
    per_second: 4,
};
/// Stream resets by the client: a page that cancels a few hundred image
/// loads is normal; thousands a second (rapid reset, CVE-2023-44487) is not.
const RESET_BUDGET: Budget = Budget {
    burst: 256,
    per_second: 32,
};
/// DATA frames with no payload and no END_STREAM cost work and carry
/// nothing (CVE-2019-9518).
const EMPTY_DATA_BUDGET: Budget = Budget {
    burst: 64,
    per_second: 4,
};

#[derive(Debug, Clone, Copy)]
struct Budget {
    burst: u32,
    per_second: u32,
}

/// A token bucket refilled with time (and, for PING, by useful frames).
struct Bucket {
    budget: Budget,
    tokens: u32,
    refilled: Instant,
}

impl Bucket {
    fn new(budget: Budget, now: Instant) -> Self {
        Self {
            budget,
            tokens: budget.burst,
            refilled: now,
        }
    }

    fn earn(&mut self) {
        self.tokens = (self.tokens + 1).min(self.budget.burst);
    }

    /// Spend one token; `false` when none is left.
    fn take(&mut self, now: Instant) -> bool {
        let per = Duration::from_secs(1) / self.budget.per_second.max(1);
        let elapsed = now.saturating_duration_since(self.refilled);
        let earned = u32::try_from(elapsed.as_nanos() / per.as_nanos().max(1)).unwrap_or(u32::MAX);
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.budget.burst);
            self.refilled = now;
        }
        match self.tokens.checked_sub(1) {
            Some(left) => {
                self.tokens = left;
                true
            }
            None => false,
        }
    }
}

/// Splits a byte stream into frame headers; payload bytes are skipped,
/// except the first 8 a caller asks to see (error codes).
#[derive(Default)]
struct Cursor {
    header: [u8; FRAME_HEADER],
    have: usize,
    payload_left: usize,
    /// The frame whose payload is passing, and its first bytes.
    current: Option<FrameHead>,
    peek: [u8; 8],
    peeked: usize,
}

#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

/// What a cursor hands out: a frame header as soon as it is complete, and
/// the first payload bytes of frames whose start matters (error codes, a
/// response's first header field).
enum Seen {
    Head(FrameHead),
    Peek(FrameHead, [u8; 8]),
}

impl Cursor {
    fn at_boundary(&self) -> bool {
        self.have == 0 && self.payload_left == 0
    }

    /// The next header or code in `bytes`, consuming what it passes.
    fn next(&mut self, bytes: &mut &[u8]) -> Option<Seen> {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                let mut found = None;
                if let Some(head) = self.current {
                    let wants = peek_len(head.kind).min(head.len);
                    let mut used = 0;
                    while self.peeked < wants && used < n {
                        if let (Some(slot), Some(&b)) =
                            (self.peek.get_mut(self.peeked), bytes.get(used))
                        {
                            *slot = b;
                        }
                        self.peeked += 1;
                        used += 1;
                        if self.peeked == wants {
                            found = Some(Seen::Peek(head, self.peek));
                        }
                    }
                    if found.is_some() {
                        self.payload_left -= used;
                        *bytes = bytes.get(used..).unwrap_or_default();
                        return found;
                    }
                }
                self.payload_left -= n;
                *bytes = bytes.get(n..).unwrap_or_default();
                continue;
            }
            let take = (FRAME_HEADER - self.have).min(bytes.len());
            let (head, rest) = bytes.split_at(take);
            if let Some(dst) = self.header.get_mut(self.have..self.have + take) {
                dst.copy_from_slice(head);
            }
            self.have += take;
            *bytes = rest;
            if self.have == FRAME_HEADER {
                self.have = 0;
                let h = &self.header;
                let frame = FrameHead {
                    len: usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]),
                    kind: h[3],
                    flags: h[4],
                    stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
                };
                self.payload_left = frame.len;
                self.current = Some(frame);
                self.peeked = 0;
                return Some(Seen::Head(frame));
            }
        }
        None
    }
}

/// How many payload bytes of a frame kind to look at: the error code of
/// RST_STREAM and GOAWAY, the first field of HEADERS.
fn peek_len(kind: u8) -> usize {
    match kind {
        RST_STREAM => 4,
        GOAWAY => 8,
        HEADERS => STATUS_431_HUFFMAN.len(),
        _ => 0,
    }
}

fn code_at(peek: &[u8; 8], at: usize) -> u32 {
    let b = |i: usize| peek.get(at + i).copied().unwrap_or(0);
    u32::from_be_bytes([b(0), b(1), b(2), b(3)])
}

/// How h2's HPACK encoder writes `:status: 431` the first time on a
/// connection: literal with incremental indexing of static name 8, value
/// "431" Huffman-coded (RFC 7541 appendix B). h2 sends it, on its own, for
/// a request whose header list decodes past `max_header_list_size`.
const STATUS_431_HUFFMAN: [u8; 5] = [0x48, 0x83, 0x69, 0x90, 0xff];

/// What the serve loop reads of the guard.
#[derive(Default)]
pub(super) struct GuardState {
    /// When the open header block began (ms since `epoch` + 1; 0 = none).
    header_block_since: AtomicU64,
}

impl GuardState {
    /// Since when a header block has been waiting for its CONTINUATION.
    pub(super) fn header_block_open_since(&self, epoch: Instant) -> Option<Instant> {
        match self.header_block_since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(epoch + Duration::from_millis(ms - 1)),
        }
    }
}

enum Mode {
    /// Waiting to see whether the stream starts with the HTTP/2 preface.
    Detect(usize),
    Active,
    /// Not HTTP/2: pass everything through.
    Off,
}

pub(super) struct H2Guard<I> {
    inner: I,
    mode: Mode,
    epoch: Instant,
    state: Arc<GuardState>,
    rx: Cursor,
    tx: Cursor,
    settings: Bucket,
    pings: Bucket,
    resets: Bucket,
    empty_data: Bucket,
    continuations: usize,
    max_continuations: usize,
    last_stream: u32,
    /// Request streams the client opened (header blocks for new streams).
    streams_opened: u64,
    /// How many requests reached the service (h2 refuses some first).
    watch: Arc<ConnWatch>,
    /// A defence tripped: the GOAWAY still to write, then EOF.
    goaway: Option<([u8; FRAME_HEADER + 8], usize)>,
    /// The GOAWAY is out and our side shut (FIN, or TLS close_notify).
    closed: bool,
    /// TLS chose h2 by ALPN: anything but the preface is a protocol error
    /// (on cleartext it means HTTP/1).
    h2_only: bool,
}

impl<I> H2Guard<I> {
    /// `max_header_list_size`: the listener's, for the CONTINUATION bound;
    /// `h2_only`: the connection can only be HTTP/2 (ALPN).
    pub(super) fn new(
        inner: I,
        watch: Arc<ConnWatch>,
        max_header_list_size: u32,
        h2_only: bool,
    ) -> (Self, Arc<GuardState>) {
        let epoch = watch.epoch();
        let now = Instant::now();
        let state = Arc::new(GuardState::default());
        // h2's own bound on CONTINUATION frames per block; we trip at the
        // same count, first, so the flood is counted.
        let frames = (max_header_list_size as usize / MAX_FRAME_SIZE).max(1);
        let guard = Self {
            inner,
            mode: Mode::Detect(0),
            epoch,
            state: Arc::clone(&state),
            rx: Cursor::default(),
            tx: Cursor::default(),
            settings: Bucket::new(SETTINGS_BUDGET, now),
            pings: Bucket::new(PING_BUDGET, now),
            resets: Bucket::new(RESET_BUDGET, now),
            empty_data: Bucket::new(EMPTY_DATA_BUDGET, now),
            continuations: 0,
            max_continuations: (frames + (frames >> 2)).max(5),
            last_stream: 0,
            streams_opened: 0,
            watch,
            goaway: None,
            closed: false,
            h2_only,
        };
        (guard, state)
    }

    fn trip(&mut self, defence: &'static str) {
        self.trip_with(defence, ENHANCE_YOUR_CALM);
    }

    fn trip_with(&mut self, defence: &'static str, code: u32) {
        if self.goaway.is_some() {
            return;
        }
        metrics()
            .defence_trips_total
            .with_label_values(&[defence])
            .inc();
        tracing::debug!(defence, "HTTP/2 client over a control-frame budget; GOAWAY");
        let mut frame = [0u8; FRAME_HEADER + 8];
        frame[2] = 8;
        frame[3] = GOAWAY;
        frame[9..13].copy_from_slice(&self.last_stream.to_be_bytes());
        frame[13..17].copy_from_slice(&code.to_be_bytes());
        self.goaway = Some((frame, 0));
    }

    fn inbound(&mut self, bytes: &[u8]) {
        let mut bytes = bytes;
        if let Mode::Detect(seen) = self.mode {
            let n = (PREFACE.len() - seen).min(bytes.len());
            let (head, rest) = bytes.split_at(n);
            if PREFACE.get(seen..seen + n) != Some(head) {
                if self.h2_only {
                    // RFC 9113 §3.4: an invalid preface is a connection
                    // error (PROTOCOL_ERROR); say so before closing.
                    self.mode = Mode::Active;
                    self.trip_with("h2_bad_preface", PROTOCOL_ERROR);
                } else {
                    self.mode = Mode::Off;
                }
                return;
            }
            self.mode = if seen + n == PREFACE.len() {
                Mode::Active
            } else {
                Mode::Detect(seen + n)
            };
            bytes = rest;
        }
        if !matches!(self.mode, Mode::Active) {
            return;
        }
        let now = Instant::now();
        while let Some(seen) = self.rx.next(&mut bytes) {
            if let Seen::Head(h) = seen {
                self.judge_inbound(h, now);
            }
        }
    }

    fn judge_inbound(&mut self, h: FrameHead, now: Instant) {
        match h.kind {
            HEADERS => {
                if h.stream > self.last_stream {
                    self.streams_opened += 1;
                }
                self.last_stream = self.last_stream.max(h.stream);
                self.pings.earn();
                self.continuations = 0;
                self.set_header_block(h.flags & END_HEADERS == 0, now);
            }
            CONTINUATION => {
                self.continuations += 1;
                if self.continuations > self.max_continuations {
                    self.trip("h2_continuation_flood");
                }
                if h.flags & END_HEADERS != 0 {
                    self.set_header_block(false, now);
                }
            }
            DATA => {
                self.pings.earn();
                if h.len == 0 && h.flags & END_STREAM == 0 && !self.empty_data.take(now) {
                    self.trip("h2_empty_frame_flood");
                }
            }
            SETTINGS if h.flags & ACK == 0 && !self.settings.take(now) => {
                self.trip("h2_settings_flood");
            }
            PING if h.flags & ACK == 0 && !self.pings.take(now) => {
                self.trip("h2_ping_flood");
            }
            RST_STREAM if !self.resets.take(now) => self.trip("h2_rapid_reset"),
            _ => {}
        }
    }

    fn set_header_block(&self, open: bool, now: Instant) {
        let v = if open {
            u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
                .unwrap_or(u64::MAX - 1)
                + 1
        } else {
            0
        };
        self.state.header_block_since.store(v, Ordering::Relaxed);
    }

    fn outbound(&mut self, mut bytes: &[u8]) {
        if !matches!(self.mode, Mode::Active) {
            return;
        }
        while let Some(s) = self.tx.next(&mut bytes) {
            match s {
                Seen::Head(h) if h.kind == DATA => self.pings.earn(),
                Seen::Head(_) => {}
                // h2's own defences, counted from what it sends.
                Seen::Peek(h, peek) => {
                    let label = match (h.kind, code_at(&peek, peek_len(h.kind).saturating_sub(4))) {
                        (GOAWAY, ENHANCE_YOUR_CALM) => Some("h2_rapid_reset"),
                        (GOAWAY, COMPRESSION_ERROR) => Some("h2_hpack_error"),
                        // A 431 that no request handed to the service
                        // explains: h2 refused a header list over the
                        // limit (an HPACK bomb among them).
                        (HEADERS, _)
                            if peek.starts_with(&STATUS_431_HUFFMAN)
                                && self.streams_opened > self.watch.requests() =>
                        {
                            Some("h2_header_list_too_large")
                        }
                        _ => None,
                    };
                    if let Some(label) = label {
                        metrics()
                            .defence_trips_total
                            .with_label_values(&[label])
                            .inc();
                    }
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> H2Guard<I> {
    /// Write what is left of the GOAWAY; `Ready(Ok)` once it is out.
    /// Write what is left of the GOAWAY, then shut our side, so the
    /// client reads a clean end (TLS close_notify or FIN), not a reset.
    fn poll_goaway(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((frame, written)) = self.goaway.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        if self.closed {
            return Poll::Ready(Ok(()));
        }
        while *written < frame.len() {
            let rest = frame.get(*written..).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        ready!(Pin::new(&mut self.inner).poll_shutdown(cx))?;
        self.closed = true;
        Poll::Ready(Ok(()))
    }

    fn tripped(&self) -> bool {
        self.goaway.is_some()
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for H2Guard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped() {
            // Between two of h2's frames: send the GOAWAY, then end the
            // stream for h2. Mid-frame, its writes finish the frame first.
            if this.tx.at_boundary() {
                ready!(this.poll_goaway(cx))?;
                return Poll::Ready(Ok(()));
            }
            return Poll::Pending;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.inbound(buf.filled().get(before..).unwrap_or_default());
        if this.tripped() {
            // Keep nothing of what came with the flood.
            buf.set_filled(before);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for H2Guard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut limit = buf.len();
        if this.tripped() {
            if this.tx.at_boundary() {
                ready!(this.poll_goaway(cx))?;
                return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
            }
            // Finish only the frame in progress.
            limit = limit.min(this.tx.have_left());
        }
        let chunk = buf.get(..limit).unwrap_or(buf);
        let n = ready!(Pin::new(&mut this.inner).poll_write(cx, chunk))?;
        this.outbound(chunk.get(..n).unwrap_or_default());
        Poll::Ready(Ok(n))
    }

    /// Vectored writes pass through (h2 then writes DATA payloads without
    /// copying them into its buffer); after a trip the scalar path, which
    /// can stop at a frame boundary, takes over.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.tripped() {
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return Pin::new(this).poll_write(cx, first);
        }
        let n = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let take = left.min(b.len());
            this.outbound(b.get(..take).unwrap_or_default());
            left -= take;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped() && this.tx.at_boundary() {
            // Writes the GOAWAY and shuts our side once.
            return this.poll_goaway(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl Cursor {
    /// Bytes left of the frame in progress (header and payload).
    fn have_left(&self) -> usize {
        if self.have > 0 {
            FRAME_HEADER - self.have
        } else {
            self.payload_left
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn cursor_finds_heads_and_codes_across_splits() {
        let mut bytes = frame(SETTINGS, 0, 0, &[0; 6]);
        bytes.extend(frame(RST_STREAM, 0, 3, &REFUSED_STREAM.to_be_bytes()));
        bytes.extend(frame(GOAWAY, 0, 0, &[0, 0, 0, 5, 0, 0, 0, 0xb]));
        let mut c = Cursor::default();
        let mut seen = Vec::new();
        for b in &bytes {
            let mut one = std::slice::from_ref(b);
            while let Some(s) = c.next(&mut one) {
                seen.push(match s {
                    Seen::Head(h) => (h.kind, None),
                    Seen::Peek(h, peek) => (h.kind, Some(code_at(&peek, peek_len(h.kind) - 4))),
                });
            }
        }
        assert_eq!(
            seen,
            vec![
                (SETTINGS, None),
                (RST_STREAM, None),
                (RST_STREAM, Some(REFUSED_STREAM)),
                (GOAWAY, None),
                (GOAWAY, Some(ENHANCE_YOUR_CALM)),
            ]
        );
        assert!(c.at_boundary());
    }

    #[tokio::test(start_paused = true)]
    async fn ping_flood_trips_and_traffic_earns_pings_back() {
        let (io, _peer) = tokio::io::duplex(64);
        let (mut g, _) = H2Guard::new(io, ConnWatch::new(Instant::now()), 65_536, false);
        g.inbound(PREFACE);
        for _ in 0..PING_BUDGET.burst {
            g.inbound(&frame(PING, 0, 0, &[0; 8]));
            g.inbound(&frame(DATA, 0, 1, &[1]));
        }
        assert!(!g.tripped(), "pings riding on data stay within budget");
        for _ in 0..=PING_BUDGET.burst {
            g.inbound(&frame(PING, 0, 0, &[0; 8]));
        }
        assert!(g.tripped());
    }

    #[tokio::test(start_paused = true)]
    async fn http1_bytes_turn_the_guard_off() {
        let (io, _peer) = tokio::io::duplex(64);
        let (mut g, _) = H2Guard::new(io, ConnWatch::new(Instant::now()), 65_536, false);
        g.inbound(b"GET / HTTP/1.1\r\n\r\n");
        for _ in 0..1000 {
            g.inbound(&frame(SETTINGS, 0, 0, &[]));
        }
        assert!(!g.tripped());
    }
}

#[cfg(test)]
mod refused_tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn h2s_own_431_is_counted_once_no_request_explains_it() {
        let (io, _peer) = tokio::io::duplex(64);
        let (mut g, _) = H2Guard::new(io, ConnWatch::new(Instant::now()), 65_536, false);
        g.inbound(PREFACE);
        let mut head = vec![0, 0, 1, HEADERS, END_HEADERS | END_STREAM, 0, 0, 0, 1, 0x82];
        g.inbound(&head);
        assert_eq!(g.streams_opened, 1);
        let before = metrics()
            .defence_trips_total
            .with_label_values(&["h2_header_list_too_large"])
            .get();
        head = vec![0, 0, 5, HEADERS, END_HEADERS | END_STREAM, 0, 0, 0, 1];
        head.extend_from_slice(&STATUS_431_HUFFMAN);
        g.outbound(&head);
        let after = metrics()
            .defence_trips_total
            .with_label_values(&["h2_header_list_too_large"])
            .get();
        assert_eq!(after, before + 1);
    }
}
