//! Two network namespaces joined by a veth pair, for the XDP tests: the
//! gateway runs in one (`ip netns exec`), clients and backends in the
//! other (threads that `setns` into it; a socket stays in the namespace
//! it was made in, whichever thread uses it later). Names carry the pid;
//! the guard deletes both namespaces (and with them the veth) on drop,
//! also when the test fails.

use std::process::Command;

/// Whether the tests can build namespaces (root). Prints why not.
pub fn root_or_skip(test: &str) -> bool {
    let uid = Command::new("id").arg("-u").output();
    let root = uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("{test}: skipped: needs root (network namespaces, XDP)");
    }
    root
}

/// Run `ip` (or another command); panics with its stderr on failure.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub struct NetPair {
    /// The gateway's namespace and its veth end.
    pub gw: String,
    pub gw_if: String,
    /// The clients' and backends' namespace and its veth end.
    pub peer: String,
    pub peer_if: String,
}

/// The gateway's address on its veth.
pub const GW_IP: &str = "10.77.0.1";
/// The client's (primary) and the backend's addresses on the peer end.
pub const CLIENT_IP: &str = "10.77.0.2";
pub const BACKEND_IP: &str = "10.77.0.3";

impl NetPair {
    /// `tag` keeps the names of tests running at once apart (at most 3
    /// characters: interface names have 15 bytes).
    pub fn new(tag: &str) -> Self {
        let pid = std::process::id();
        let pair = Self {
            gw: format!("eg{tag}gw{pid}"),
            gw_if: format!("eg{tag}g{pid}"),
            peer: format!("eg{tag}pr{pid}"),
            peer_if: format!("eg{tag}p{pid}"),
        };
        // Built in full before any check, so Drop cleans whatever exists.
        sh(&["ip", "netns", "add", &pair.gw]);
        sh(&["ip", "netns", "add", &pair.peer]);
        sh(&[
            "ip",
            "link",
            "add",
            &pair.gw_if,
            "type",
            "veth",
            "peer",
            "name",
            &pair.peer_if,
        ]);
        sh(&["ip", "link", "set", &pair.gw_if, "netns", &pair.gw]);
        sh(&["ip", "link", "set", &pair.peer_if, "netns", &pair.peer]);
        let (g, p) = (pair.gw.as_str(), pair.peer.as_str());
        sh(&[
            "ip",
            "-n",
            g,
            "addr",
            "add",
            &format!("{GW_IP}/24"),
            "dev",
            &pair.gw_if,
        ]);
        sh(&[
            "ip",
            "-n",
            p,
            "addr",
            "add",
            &format!("{CLIENT_IP}/24"),
            "dev",
            &pair.peer_if,
        ]);
        sh(&[
            "ip",
            "-n",
            p,
            "addr",
            "add",
            &format!("{BACKEND_IP}/24"),
            "dev",
            &pair.peer_if,
        ]);
        for (ns, dev) in [(g, pair.gw_if.as_str()), (p, pair.peer_if.as_str())] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            // Full checksums on the wire: a TCP stack's packets on a veth
            // otherwise carry CHECKSUM_PARTIAL, which the program's
            // incremental rewrite would leave for no one to finish; this
            // also makes the stack send MTU-sized segments, not GSO ones.
            sh(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"]);
        }
        // The program forwards only where the kernel would route
        // (bpf_fib_lookup honours the forwarding switch).
        sh(&[
            "ip",
            "netns",
            "exec",
            g,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.forwarding=1",
        ]);
        pair
    }

    /// `ip link show` of the gateway's veth end.
    pub fn gw_link(&self) -> String {
        sh(&["ip", "-n", &self.gw, "link", "show", &self.gw_if])
    }

    /// Run `f` on a thread inside the peer namespace.
    pub fn in_peer<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.peer);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns into the peer namespace");
            f()
        })
        .join()
        .expect("peer-namespace thread")
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        for ns in [&self.gw, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
