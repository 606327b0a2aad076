//! What an HTTP/2 backend announced in its SETTINGS, read off the bytes it
//! sends. hyper's client keeps these to itself, yet the pool needs them:
//! SETTINGS_MAX_CONCURRENT_STREAMS says when a connection is full and
//! another should be opened, and SETTINGS_ENABLE_CONNECT_PROTOCOL whether
//! the backend takes extended CONNECT (RFC 8441).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::h2_frame::{ACK, FRAME_HEADER, MAX_FRAME_SIZE, SETTINGS};

const MAX_CONCURRENT_STREAMS: u16 = 0x3;
const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
/// The largest SETTINGS payload we parse: the default maximum frame size,
/// room for 2730 settings; a real backend sends a handful.
const MAX_SETTINGS_PAYLOAD: usize = MAX_FRAME_SIZE;

/// The backend's settings as last announced.
#[derive(Debug)]
pub struct PeerSettings {
    /// Unlimited until the backend says otherwise (RFC 9113 §6.5.2).
    max_concurrent_streams: AtomicU32,
    enable_connect_protocol: AtomicBool,
    /// The backend's first SETTINGS arrived (RFC 9113 §3.4: its first frame).
    seen: AtomicBool,
    arrived: Notify,
}

impl Default for PeerSettings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: AtomicU32::new(u32::MAX),
            enable_connect_protocol: AtomicBool::new(false),
            seen: AtomicBool::new(false),
            arrived: Notify::new(),
        }
    }
}

impl PeerSettings {
    pub fn max_concurrent_streams(&self) -> u32 {
        self.max_concurrent_streams.load(Ordering::Relaxed)
    }

    pub fn enable_connect_protocol(&self) -> bool {
        self.enable_connect_protocol.load(Ordering::Relaxed)
    }

    /// Wait up to `limit` for the backend's first SETTINGS, so the stream
    /// limit is known before requests are spread over connections.
    pub async fn first_settings(&self, limit: Duration) -> bool {
        let arrived = self.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        if self.seen.load(Ordering::Acquire) {
            return true;
        }
        tokio::time::timeout(limit, arrived).await.is_ok()
    }

    fn apply(&self, payload: &[u8]) {
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                MAX_CONCURRENT_STREAMS => {
                    self.max_concurrent_streams.store(value, Ordering::Relaxed);
                }
                ENABLE_CONNECT_PROTOCOL => {
                    self.enable_connect_protocol
                        .store(value == 1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        self.seen.store(true, Ordering::Release);
        self.arrived.notify_waiters();
    }
}

/// Walks the inbound byte stream frame by frame, keeping SETTINGS payloads.
#[derive(Default)]
struct FrameWalk {
    header: [u8; FRAME_HEADER],
    have: usize,
    payload_left: usize,
    /// The SETTINGS payload being gathered, if the current frame is one.
    settings: Option<Vec<u8>>,
}

impl FrameWalk {
    fn feed(&mut self, mut bytes: &[u8], peer: &PeerSettings) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                let (now, rest) = bytes.split_at(n);
                if let Some(buf) = self.settings.as_mut() {
                    buf.extend_from_slice(now);
                }
                self.payload_left -= n;
                bytes = rest;
                if self.payload_left == 0 {
                    if let Some(buf) = self.settings.take() {
                        peer.apply(&buf);
                    }
                }
                continue;
            }
            let n = (FRAME_HEADER - self.have).min(bytes.len());
            let (now, rest) = bytes.split_at(n);
            self.header[self.have..self.have + n].copy_from_slice(now);
            self.have += n;
            bytes = rest;
            if self.have < FRAME_HEADER {
                continue;
            }
            self.have = 0;
            let [l0, l1, l2, kind, flags, ..] = self.header;
            let len = usize::from(l0) << 16 | usize::from(l1) << 8 | usize::from(l2);
            let is_settings = kind == SETTINGS && flags & ACK == 0;
            self.settings =
                (is_settings && len <= MAX_SETTINGS_PAYLOAD).then(|| Vec::with_capacity(len));
            self.payload_left = len;
            if len == 0 {
                self.settings = None;
            }
        }
    }
}

/// A backend connection that records the backend's SETTINGS as they pass.
pub struct SettingsSniffer<S> {
    inner: S,
    walk: FrameWalk,
    peer: Arc<PeerSettings>,
}

impl<S> SettingsSniffer<S> {
    pub fn new(inner: S, peer: Arc<PeerSettings>) -> Self {
        Self {
            inner,
            walk: FrameWalk::default(),
            peer,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SettingsSniffer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            this.walk.feed(&buf.filled()[before..], &this.peer);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SettingsSniffer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn reads_settings_split_across_reads_and_ignores_acks_and_other_frames() {
        let peer = PeerSettings::default();
        assert_eq!(peer.max_concurrent_streams(), u32::MAX);
        let mut bytes = frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 50, 0, 8, 0, 0, 0, 1]);
        bytes.extend(frame(0x0, 0, &[0, 4, 0, 0, 0, 9, 9, 9]));
        bytes.extend(frame(SETTINGS, ACK, &[]));
        bytes.extend(frame(SETTINGS, ACK, &[0, 3, 0, 0, 0, 1]));
        let mut walk = FrameWalk::default();
        for chunk in bytes.chunks(5) {
            walk.feed(chunk, &peer);
        }
        assert_eq!(peer.max_concurrent_streams(), 50);
        assert!(peer.enable_connect_protocol());
        walk.feed(&frame(SETTINGS, 0, &[0, 3, 0, 0, 0, 7]), &peer);
        assert_eq!(peer.max_concurrent_streams(), 7);
    }
}
