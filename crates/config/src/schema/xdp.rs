//! `[xdp]`: the optional kernel fast path for L4 flows (SPEC §10).

use serde::Deserialize;

/// How the program is attached to the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native when the driver supports it, generic otherwise (the
    /// kernel's own choice).
    #[default]
    Auto,
    /// In the driver; attaching fails when it has no XDP support.
    Native,
    /// Generic XDP in the kernel's stack: any interface, slower.
    Skb,
}

impl XdpMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Native => "native",
            Self::Skb => "skb",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Xdp {
    pub enabled: bool,
    /// Network interface the program is attached to; required when enabled.
    pub interface: String,
    pub mode: XdpMode,
    /// New flows each CPU may start in the kernel per second; beyond it
    /// they go to userspace (0: every new flow does).
    pub new_flows_per_cpu_per_second: u32,
    /// Entries of the kernel's connection-tracking LRU (a NATed flow takes
    /// two).
    pub conntrack_entries: u32,
    /// A kernel flow with no packet for this long is forgotten.
    pub flow_idle_timeout_seconds: u32,
}

impl Default for Xdp {
    fn default() -> Self {
        Self {
            enabled: false,
            interface: String::new(),
            mode: XdpMode::Auto,
            // A SYN flood beyond this per core is userspace's (its
            // admission caps and defences), not the kernel table's.
            new_flows_per_cpu_per_second: 100_000,
            // 131 072 NATed flows, ~40 MiB of kernel memory.
            conntrack_entries: 262_144,
            // As `runtime.tcp_idle_timeout_ms`: the kernel forgetting a
            // flow ends it (its next packet meets no socket).
            flow_idle_timeout_seconds: 3600,
        }
    }
}
