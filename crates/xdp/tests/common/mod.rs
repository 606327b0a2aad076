//! The golden tests' lab: the program loaded from `eg_xdp::OBJECT`, its
//! maps filled through `eg_xdp::maps`, and the calling thread moved into a
//! network namespace of its own, so `bpf_fib_lookup` (which runs in the
//! caller's namespace, from its loopback device) sees routes the test
//! made, not the host's:
//!   eg0 (a veth to eg1) 10.0.0.1/8 and fd00::1/16, forwarding on, and a permanent
//!   neighbour for NEIGH_V4 / NEIGH_V6 (a FIB SUCCESS, redirect to eg0);
//!   any other 10/8 or fd00::/16 address has no neighbour (one-arm TX);
//!   everything else has no route (PASS).

#![allow(dead_code)]

pub mod pkt;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::{Array, HashMap, PerCpuArray};
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use eg_xdp::maps::{self, Backend, Config, Flow, FlowKey, Service, ServiceKey, Stat};
use eg_xdp::testrun::{self, Outcome};

pub const NEIGH_V4: &str = "10.0.9.9";
pub const NEIGH_V6: &str = "fd00::9:9";
pub const NEIGH_MAC: [u8; 6] = [0x02, 0xee, 0, 0, 0, 0x09];

/// The namespace, deleted on drop (also when a test fails).
struct Netns {
    name: String,
}

impl Netns {
    fn create() -> Result<Self, String> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "eg-golden-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        let n = ns.name.as_str();
        for cmd in [
            vec!["ip", "-n", n, "link", "set", "lo", "up"],
            vec![
                "ip", "-n", n, "link", "add", "eg0", "type", "veth", "peer", "name", "eg1",
            ],
            vec!["ip", "-n", n, "link", "set", "eg1", "up"],
            vec![
                "ip",
                "-n",
                n,
                "link",
                "set",
                "eg0",
                "address",
                "02:ee:00:00:00:01",
            ],
            vec!["ip", "-n", n, "addr", "add", "10.0.0.1/8", "dev", "eg0"],
            vec![
                "ip",
                "-n",
                n,
                "-6",
                "addr",
                "add",
                "fd00::1/16",
                "dev",
                "eg0",
                "nodad",
            ],
            vec!["ip", "-n", n, "link", "set", "eg0", "up"],
            // bpf_fib_lookup answers "forwarding disabled" otherwise.
            vec![
                "ip",
                "netns",
                "exec",
                n,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.conf.all.forwarding=1",
                "net.ipv6.conf.all.forwarding=1",
            ],
            neigh(n, "-4", NEIGH_V4),
            neigh(n, "-6", NEIGH_V6),
        ] {
            run(&cmd)?;
        }
        let file = std::fs::File::open(format!("/run/netns/{n}")).map_err(|e| e.to_string())?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&file),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| format!("setns: {e}"))?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

fn run(cmd: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

pub struct Lab {
    pub ebpf: Ebpf,
    _ns: Netns,
}

/// Root only: `None` (with a message) otherwise.
pub fn lab(test: &str) -> Option<Lab> {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping {test}: the XDP golden tests need root (BPF_PROG_TEST_RUN, netns)");
        return None;
    }
    // The rate cap is per CPU: one CPU for the whole test.
    let cpu = rustix::thread::sched_getcpu();
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).expect("pin to a CPU");
    let ns = Netns::create().expect("test network namespace");
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(maps::CONNTRACK, 1 << 16)
        .load(eg_xdp::OBJECT)
        .expect("load the object");
    let prog: &mut Xdp = ebpf
        .program_mut(eg_xdp::PROGRAM)
        .expect("program")
        .try_into()
        .expect("an XDP program");
    prog.load().expect("the verifier accepts the program");
    let mut lab = Lab { ebpf, _ns: ns };
    lab.set_config(u32::MAX, 60);
    Some(lab)
}

impl Lab {
    pub fn prog(&self) -> &Xdp {
        let p = self.ebpf.program(eg_xdp::PROGRAM).expect("program");
        p.try_into().expect("xdp")
    }

    pub fn run(&self, frame: &[u8]) -> Outcome {
        testrun::run(self.prog(), frame, 1).expect("test run")
    }

    /// An `ip` command in the lab's namespace.
    pub fn ip(&self, args: &[&str]) {
        let mut cmd = vec!["ip", "-n", self._ns.name.as_str()];
        cmd.extend_from_slice(args);
        run(&cmd).expect("ip command");
    }

    pub fn set_config(&mut self, cap: u32, idle_s: u32) {
        let mut a: Array<_, Config> =
            Array::try_from(self.ebpf.map_mut(maps::CONFIG).expect("config")).expect("array");
        a.set(
            0,
            Config {
                new_flows_per_cpu_per_sec: cap,
                flow_idle_timeout_s: idle_s,
            },
            0,
        )
        .expect("set config");
    }

    /// A service with `backends` at `base..`, and its Maglev table (the
    /// arguments are the eg_service fields, one for one).
    #[allow(clippy::too_many_arguments)]
    pub fn add_service(
        &mut self,
        listener: &str,
        proto: u8,
        flags: u32,
        id: u32,
        base: u32,
        backends: &[(SocketAddr, bool)],
        table: &[u32],
    ) {
        let l: SocketAddr = listener.parse().expect("listener");
        let mut s: HashMap<_, ServiceKey, Service> =
            HashMap::try_from(self.ebpf.map_mut(maps::SERVICES).expect("services")).expect("hash");
        s.insert(
            ServiceKey::new(l, proto),
            Service {
                id,
                backend_base: base,
                backend_count: backends.len() as u32,
                table_size: table.len() as u32,
                flags,
            },
            0,
        )
        .expect("insert service");
        self.set_backends(base, backends);
        let mut m: Array<_, u32> =
            Array::try_from(self.ebpf.map_mut(maps::MAGLEV).expect("maglev")).expect("array");
        for (slot, b) in table.iter().enumerate() {
            m.set(id * maps::MAGLEV_SLOTS + slot as u32, b, 0)
                .expect("slot");
        }
    }

    pub fn set_backends(&mut self, base: u32, backends: &[(SocketAddr, bool)]) {
        let mut b: Array<_, Backend> =
            Array::try_from(self.ebpf.map_mut(maps::BACKENDS).expect("backends")).expect("array");
        for (i, (addr, ok)) in backends.iter().enumerate() {
            b.set(base + i as u32, Backend::new(*addr, *ok), 0)
                .expect("backend");
        }
    }

    fn conntrack(&mut self) -> HashMap<&mut aya::maps::MapData, FlowKey, Flow> {
        HashMap::try_from(self.ebpf.map_mut(maps::CONNTRACK).expect("conntrack")).expect("lru")
    }

    pub fn flow(&mut self, key: &FlowKey) -> Option<Flow> {
        self.conntrack().get(key, 0).ok()
    }

    pub fn put_flow(&mut self, key: FlowKey, flow: Flow) {
        self.conntrack().insert(key, flow, 0).expect("insert flow");
    }

    pub fn remove_flow(&mut self, key: &FlowKey) {
        self.conntrack().remove(key).expect("remove flow");
    }

    pub fn flows(&mut self) -> usize {
        self.conntrack().keys().count()
    }

    pub fn stat(&self, s: Stat) -> u64 {
        let a: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(maps::STATS).expect("stats")).expect("percpu");
        a.get(&(s as u32), 0).expect("stat").iter().sum()
    }
}

/// `ip neigh add` of a permanent entry for `addr` on the lab's veth.
fn neigh<'a>(ns: &'a str, family: &'a str, addr: &'a str) -> Vec<&'a str> {
    vec![
        "ip",
        "-n",
        ns,
        family,
        "neigh",
        "add",
        addr,
        "lladdr",
        "02:ee:00:00:00:09",
        "dev",
        "eg0",
        "nud",
        "permanent",
    ]
}
