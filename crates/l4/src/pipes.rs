//! Kernel pipes for `splice`, shared by every relay of the process.
//!
//! A pipe costs two file descriptors and, while it holds data, the pages
//! it references. A relay holds one only while bytes are in flight in that
//! direction and hands it back once its source has nothing to read, so an
//! idle connection holds none; the number open is capped, and past the cap
//! a relay copies instead (it never waits for a pipe, nor fails for lack
//! of one).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rustix::pipe::{fcntl_setpipe_size, pipe_with, PipeFlags};

/// Capacity asked of each pipe: one `splice` moves at most this much.
/// Measured on loopback (bench/l4.sh, 4 streams) in CPU seconds per GiB
/// relayed: 64 KiB (the kernel's default) ~0.32, 256 KiB ~0.30, 1 MiB
/// ~0.25, against ~0.44 for the 64 KiB copy: fewer, larger splices and
/// wakeups. 1 MiB is also `fs.pipe-max-size`'s default, the most an
/// unprivileged process may ask. It pins memory only for bytes in flight.
const PIPE_BYTES: usize = 1 << 20;

/// Pipe capacity the process may hold open at once. An unprivileged user
/// gets `fs.pipe-user-pages-soft` (16384 pages = 64 MiB by default) of
/// pipe capacity before the kernel shrinks every new pipe of that user to
/// 2 pages, this process's and every other's; staying within it keeps the
/// kernel's defaults for everyone.
const PIPE_BUDGET_BYTES: usize = 64 << 20;

/// Pipes open at once (in use or idle): 64 of 1 MiB, 128 descriptors on
/// top of the two sockets per relay that `max_inflight_connections`
/// already accounts for. A relay holds one only while bytes wait in it,
/// so 64 serve far more than 32 connections; past them, relays copy.
const MAX_PIPES: usize = PIPE_BUDGET_BYTES / PIPE_BYTES;

/// Empty pipes kept for reuse, so a relay resuming takes one without
/// `pipe2` + `fcntl` + two `close`s: all of them (at 64 they cost 128
/// descriptors and a few KiB of kernel memory, no buffer pages).
const MAX_IDLE_PIPES: usize = MAX_PIPES;

static OPEN: AtomicUsize = AtomicUsize::new(0);
static IDLE: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// Both ends of one pipe; counted in `OPEN` until dropped.
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
}

impl Pipe {
    /// Asked of one `splice` into an empty pipe; the kernel moves what fits.
    pub(crate) const CHUNK: usize = PIPE_BYTES;
}

impl Drop for Pipe {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An empty pipe, reused or new; `None` at the cap or when the kernel
/// refuses one (out of descriptors, say): the caller copies instead.
pub(crate) fn take() -> Option<Pipe> {
    if let Some(pipe) = IDLE.lock().unwrap_or_else(|p| p.into_inner()).pop() {
        return Some(pipe);
    }
    if OPEN.fetch_add(1, Ordering::Relaxed) >= MAX_PIPES {
        OPEN.fetch_sub(1, Ordering::Relaxed);
        return None;
    }
    match pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK) {
        Ok((read, write)) => {
            // Refused (the user's pipe budget is spent, say): a smaller
            // pipe still works, each splice moving less.
            let _ = fcntl_setpipe_size(&write, PIPE_BYTES);
            Some(Pipe { read, write })
        }
        Err(e) => {
            OPEN.fetch_sub(1, Ordering::Relaxed);
            eg_runtime::warn_limited!(error = %e, "no pipe for splice; copying instead");
            None
        }
    }
}

/// Hand back a pipe the caller has emptied (one still holding bytes must
/// be dropped instead: the next relay would send them).
pub(crate) fn give(pipe: Pipe) {
    let mut idle = IDLE.lock().unwrap_or_else(|p| p.into_inner());
    if idle.len() < MAX_IDLE_PIPES {
        idle.push(pipe);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_reused_and_counted() {
        let a = take().expect("pipe");
        let open = OPEN.load(Ordering::Relaxed);
        assert!(open >= 1);
        give(a);
        let b = take().expect("reused");
        // Other tests may take pipes in parallel; this one made none new.
        assert!(OPEN.load(Ordering::Relaxed) <= open + 1);
        drop(b);
    }
}
