//! Services every listener shares: connection admission (per-IP and
//! in-flight caps), the startup report, metrics, and the drain signal.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admission;
pub mod carried;
pub mod handshake;
pub mod log_limit;
pub mod metrics;
pub mod report;

pub use accept::{accept_loop, Labelled};
pub use admission::{Admission, Admitted, Refusal};
pub use carried::Carry;
pub use tokio_util::sync::CancellationToken;
pub use tokio_util::task::TaskTracker;

/// Set once when the process starts draining; never cleared (a drain ends
/// in exit). Readiness answers read it: the admin probe and the gRPC
/// health check the gateway synthesizes.
static DRAINING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Mark the process as draining.
pub fn begin_draining() {
    DRAINING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether the process is draining.
pub fn draining() -> bool {
    DRAINING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Long-lived tunnels (WebSockets) that outlive the request that opened
/// them: the drain tells them to close (`closing`) and waits for them
/// (`tunnels`) as it does for connections.
pub fn tunnels() -> &'static TaskTracker {
    static TUNNELS: std::sync::OnceLock<TaskTracker> = std::sync::OnceLock::new();
    TUNNELS.get_or_init(TaskTracker::new)
}

/// Cancelled when the drain asks open tunnels to close.
pub fn closing() -> &'static CancellationToken {
    static CLOSING: std::sync::OnceLock<CancellationToken> = std::sync::OnceLock::new();
    CLOSING.get_or_init(CancellationToken::new)
}

/// UDP socket buffers for QUIC endpoints. The 208 KiB Linux default drops
/// bursts from a single fast peer (each drop costs a congestion back-off);
/// 4 MiB matches the common `net.core.rmem_max`, beyond which the kernel
/// clamps anyway.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Grow a UDP socket's buffers toward `UDP_SOCKET_BUFFER_BYTES`; the
/// kernel may clamp, which is fine.
pub fn tune_udp_socket(socket: &std::net::UdpSocket) {
    let sock = socket2::SockRef::from(socket);
    let _ = sock.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES);
}
