//! The relay of two plain TCP sockets through kernel pipes: socket ->
//! pipe -> socket with `splice(2)`, so relayed bytes never enter user
//! space. One pipe per direction, taken from `pipes` while bytes are in
//! flight; without one (the cap, a kernel without splice for these
//! sockets) that direction copies through a buffer instead.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use rustix::pipe::{splice, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::pipes::{self, Pipe};
use crate::relay::{Activity, RELAY_BUFFER_BYTES};

/// Set once a splice between sockets is refused as unsupported: every
/// later relay copies without asking again.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Relay until both sides have closed or either errors. Bytes are
/// (client->backend, backend->client).
pub(crate) async fn relay(
    client: &TcpStream,
    backend: &TcpStream,
    activity: &Activity,
) -> io::Result<(u64, u64)> {
    let up = pump(client, backend, activity, Side::ToBackend);
    let down = pump(backend, client, activity, Side::ToClient);
    tokio::try_join!(up, down)
}

#[derive(Clone, Copy, PartialEq)]
enum Side {
    ToBackend,
    ToClient,
}

/// One direction, `src` -> `dst`, until `src`'s end of stream (then
/// `dst`'s write side is shut, so half-close travels) or an error.
async fn pump(
    src: &TcpStream,
    dst: &TcpStream,
    activity: &Activity,
    side: Side,
) -> io::Result<u64> {
    let src_is_backend = side == Side::ToClient;
    let mut way = Way::default();
    let mut moved = 0u64;
    loop {
        let n = way
            .fill(src)
            .await
            .map_err(|e| activity.blame(e, src_is_backend))?;
        if n == 0 {
            way.release();
            rustix::net::shutdown(dst, rustix::net::Shutdown::Write)
                .map_err(|e| activity.blame(e.into(), !src_is_backend))?;
            return Ok(moved);
        }
        activity.touch();
        way.drain(dst, activity)
            .await
            .map_err(|e| activity.blame(e, !src_is_backend))?;
        moved += n as u64;
    }
}

/// Where one direction's bytes wait between the two sockets: a pipe while
/// one is held, else a buffer (allocated on first use).
#[derive(Default)]
struct Way {
    pipe: Option<Pipe>,
    /// Bytes in `pipe` not yet sent on.
    piped: usize,
    buf: Option<Box<[u8]>>,
    /// `buf[sent..filled]` not yet sent on.
    sent: usize,
    filled: usize,
}

impl Way {
    /// Read one chunk from `src` (the way is empty); 0 at end of stream.
    async fn fill(&mut self, src: &TcpStream) -> io::Result<usize> {
        loop {
            match self.try_fill(src) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Nothing to read: an empty pipe goes back for others
                    // while this direction waits.
                    self.release();
                    src.readable().await?;
                }
                other => return other,
            }
        }
    }

    fn try_fill(&mut self, src: &TcpStream) -> io::Result<usize> {
        if !UNSUPPORTED.load(Ordering::Relaxed) {
            if self.pipe.is_none() {
                self.pipe = pipes::take();
            }
            if let Some(pipe) = &self.pipe {
                let spliced = src.try_io(Interest::READABLE, || {
                    splice(src, None, &pipe.write, None, Pipe::CHUNK, flags()).map_err(from_errno)
                });
                match spliced {
                    Ok(n) => {
                        self.piped = n;
                        return Ok(n);
                    }
                    Err(e) if unsupported(&e) => {
                        UNSUPPORTED.store(true, Ordering::Relaxed);
                        eg_runtime::warn_limited!(error = %e, "splice unsupported; relays copy");
                        self.release();
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let buf = self
            .buf
            .get_or_insert_with(|| vec![0; RELAY_BUFFER_BYTES].into_boxed_slice());
        let n = src.try_read(buf)?;
        self.sent = 0;
        self.filled = n;
        Ok(n)
    }

    /// Send everything `fill` read on to `dst`.
    async fn drain(&mut self, dst: &TcpStream, activity: &Activity) -> io::Result<()> {
        while self.pending() > 0 {
            match self.try_drain(dst) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => activity.touch(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => dst.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn pending(&self) -> usize {
        self.piped + (self.filled - self.sent)
    }

    fn try_drain(&mut self, dst: &TcpStream) -> io::Result<usize> {
        if self.piped > 0 {
            let Some(pipe) = &self.pipe else {
                return Err(io::Error::other("pipe lost with bytes in it"));
            };
            let len = self.piped;
            let n = dst.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, dst, None, len, flags()).map_err(from_errno)
            })?;
            self.piped -= n.min(len);
            return Ok(n);
        }
        let data = self
            .buf
            .as_deref()
            .and_then(|b| b.get(self.sent..self.filled))
            .unwrap_or_default();
        let n = dst.try_write(data)?;
        self.sent += n.min(data.len());
        Ok(n)
    }

    /// Give the pipe back if it is empty; one holding bytes is closed.
    fn release(&mut self) {
        if let Some(pipe) = self.pipe.take() {
            if self.piped == 0 {
                pipes::give(pipe);
            }
            self.piped = 0;
        }
    }
}

impl Drop for Way {
    fn drop(&mut self) {
        self.release();
    }
}

fn flags() -> SpliceFlags {
    SpliceFlags::MOVE | SpliceFlags::NONBLOCK
}

fn from_errno(e: Errno) -> io::Error {
    e.into()
}

/// The kernel cannot splice these descriptors (not an I/O failure).
fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP)
    )
}
