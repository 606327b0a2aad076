//! `[xdp]` bounds. The interface itself (does it exist, can we attach)
//! is checked when the program is attached, with the same key path.

use super::Findings;
use crate::Xdp;

/// Linux's IFNAMSIZ, including the terminating NUL.
const IFNAMSIZ: usize = 16;

pub(super) fn check(f: &mut Findings, x: &Xdp) {
    if x.enabled || !x.interface.is_empty() {
        check_interface(f, &x.interface);
    }
    f.range(
        "xdp.new_flows_per_cpu_per_second".into(),
        x.new_flows_per_cpu_per_second,
        0,
        100_000_000,
    );
    // The LRU needs room for a few flows per CPU to be useful; 64 Mi
    // entries is ~10 GiB of kernel memory, past any sane table.
    f.range(
        "xdp.conntrack_entries".into(),
        x.conntrack_entries,
        1024,
        64 * 1024 * 1024,
    );
    f.range(
        "xdp.flow_idle_timeout_seconds".into(),
        x.flow_idle_timeout_seconds,
        1,
        7 * 86_400,
    );
}

/// The kernel's own rule for a device name (`dev_valid_name`).
fn check_interface(f: &mut Findings, name: &str) {
    let shown = format!("{name:?}");
    if name.is_empty() {
        f.fail(
            "xdp.interface",
            shown,
            "required when xdp.enabled: the network interface to attach to, e.g. \"eth0\"",
        );
    } else if name.len() >= IFNAMSIZ {
        f.fail(
            "xdp.interface",
            shown,
            format!("an interface name has at most {} bytes", IFNAMSIZ - 1),
        );
    } else if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        f.fail(
            "xdp.interface",
            shown,
            "not an interface name (no '/', ':', spaces, \".\" or \"..\")",
        );
    }
}
