//! A kernel fast path for established Mode A flows (the XDP plane): once
//! a flow's backend has answered, its two directions are installed in the
//! kernel, which then forwards the short-header datagrams (long headers
//! always come to userspace). Userspace stays the source of truth: it
//! reinstalls a flow whose client moved, removes a flow when it ends, and
//! asks the kernel how long a flow has been idle before reaping it (its
//! datagrams no longer pass through here).

use std::net::SocketAddr;

/// A flow as the kernel rewrites it: datagrams `client -> listen` become
/// `upstream -> backend`, and `backend -> upstream` become
/// `listen -> client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelFlow {
    pub client: SocketAddr,
    pub listen: SocketAddr,
    /// The flow's own socket towards its backend.
    pub upstream: SocketAddr,
    pub backend: SocketAddr,
    /// The backend's index in the pool.
    pub backend_index: u32,
}

pub trait FastPath: Send + Sync {
    /// Install both directions; `false` when the kernel refused.
    fn install(&self, flow: &KernelFlow) -> bool;
    fn remove(&self, flow: &KernelFlow);
    /// How long ago the kernel last forwarded a datagram of the flow
    /// either way, in ms (`None`: not installed, or forgotten).
    fn idle_ms(&self, flow: &KernelFlow) -> Option<u64>;
}
