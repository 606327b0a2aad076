//! Userspace mirrors of `bpf/lb.h`: every struct `#[repr(C)]`, field for
//! field, with its size checked at compile time, and constructors from
//! std addresses to the wire layout the kernel compares against (addresses
//! and ports in network byte order; an IPv4 address in `addr[0]`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Map names in [`crate::OBJECT`].
pub const SERVICES: &str = "services";
pub const BACKENDS: &str = "backends";
pub const MAGLEV: &str = "maglev";
pub const CONNTRACK: &str = "conntrack";
pub const CONFIG: &str = "config";
pub const RATE: &str = "rate";
pub const STATS: &str = "stats";

pub const MAGLEV_SLOTS: u32 = 65_537;
pub const MAX_SERVICES: u32 = 64;
pub const MAX_BACKENDS: u32 = 4096;
pub const MAGLEV_PROBES: u64 = 16;
pub const NAT_PORT_MIN: u16 = 61_000;
pub const NAT_PORT_MAX: u16 = 65_535;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `eg_flow.fib_kind` (the kernel's egress cache).
pub const FIB_NONE: u8 = 0;
pub const FIB_MACS: u8 = 1;
pub const FIB_ONEARM: u8 = 2;

/// `eg_flow.tcp_state` and the timeouts of the other states (lb.h).
pub const TCP_ESTABLISHED: u8 = 0;
pub const TCP_SYN: u8 = 1;
pub const TCP_CLOSING: u8 = 2;
pub const TCP_SYN_TIMEOUT_S: u64 = 10;
pub const TCP_CLOSE_LINGER_S: u64 = 120;

/// `eg_service.flags`
pub const SVC_TCP_NAT: u32 = 1;
pub const SVC_QUIC_MODEA: u32 = 2;

/// Indices of the per-CPU stats array (enum eg_stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stat {
    FwdPackets = 0,
    FwdBytes,
    Pass,
    Drop,
    RateCap,
    NewFlows,
    CtHit,
    CtMiss,
}

pub const STAT_MAX: u32 = 8;

impl Stat {
    pub const ALL: [Stat; STAT_MAX as usize] = [
        Stat::FwdPackets,
        Stat::FwdBytes,
        Stat::Pass,
        Stat::Drop,
        Stat::RateCap,
        Stat::NewFlows,
        Stat::CtHit,
        Stat::CtMiss,
    ];
}

/// An address as the kernel stores it, with its family.
pub fn wire_addr(ip: IpAddr) -> ([u32; 4], u8) {
    match ip {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut a = [0u32; 4];
            for (i, w) in a.iter_mut().enumerate() {
                *w = u32::from_ne_bytes([o[4 * i], o[4 * i + 1], o[4 * i + 2], o[4 * i + 3]]);
            }
            (a, FAMILY_V6)
        }
    }
}

/// The inverse of [`wire_addr`]; `None` for an unknown family.
pub fn ip_of(addr: &[u32; 4], family: u8) -> Option<IpAddr> {
    match family {
        FAMILY_V4 => Some(IpAddr::V4(Ipv4Addr::from(addr[0].to_ne_bytes()))),
        FAMILY_V6 => {
            let mut o = [0u8; 16];
            for (i, w) in addr.iter().enumerate() {
                o[4 * i..4 * i + 4].copy_from_slice(&w.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => None,
    }
}

/// A port as the kernel stores it (network byte order).
pub fn wire_port(port: u16) -> u16 {
    port.to_be()
}

fn socket_of(addr: &[u32; 4], port: u16, family: u8) -> Option<SocketAddr> {
    ip_of(addr, family).map(|ip| SocketAddr::new(ip, u16::from_be(port)))
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ServiceKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

impl ServiceKey {
    /// The listener at `addr` (an unspecified IP is the wildcard key).
    pub fn new(addr: SocketAddr, proto: u8) -> Self {
        let (a, family) = wire_addr(addr.ip());
        Self {
            addr: if addr.ip().is_unspecified() {
                [0; 4]
            } else {
                a
            },
            port: wire_port(addr.port()),
            proto,
            family,
        }
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Service {
    pub id: u32,
    pub backend_base: u32,
    pub backend_count: u32,
    pub table_size: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    pub eligible: u8,
}

impl Backend {
    pub fn new(addr: SocketAddr, eligible: bool) -> Self {
        let (a, family) = wire_addr(addr.ip());
        Self {
            addr: a,
            port: wire_port(addr.port()),
            family,
            eligible: u8::from(eligible),
        }
    }

    pub fn socket_addr(&self) -> Option<SocketAddr> {
        socket_of(&self.addr, self.port, self.family)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub pad: u16,
}

impl FlowKey {
    /// The 5-tuple of a packet from `src` to `dst` (same family; a mixed
    /// pair takes `src`'s family and never matches a packet).
    pub fn new(src: SocketAddr, dst: SocketAddr, proto: u8) -> Self {
        let (s, family) = wire_addr(src.ip());
        let (d, _) = wire_addr(dst.ip());
        Self {
            src: s,
            dst: d,
            sport: wire_port(src.port()),
            dport: wire_port(dst.port()),
            proto,
            family,
            pad: 0,
        }
    }

    pub fn src_addr(&self) -> Option<SocketAddr> {
        socket_of(&self.src, self.sport, self.family)
    }

    pub fn dst_addr(&self) -> Option<SocketAddr> {
        socket_of(&self.dst, self.dport, self.family)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub new_src: [u32; 4],
    pub new_dst: [u32; 4],
    pub new_sport: u16,
    pub new_dport: u16,
    pub backend: u32,
    pub last_seen_ns: u64,
    pub reverse: u8,
    pub from_user: u8,
    /// Kernel-owned for the flows it creates ([`TCP_ESTABLISHED`] ...);
    /// userspace writes 0.
    pub tcp_state: u8,
    pub pad: u8,
    pub pad2: u32,
    /// Kernel-owned egress cache (lb.h): zero when userspace writes.
    pub fib_at_ns: u64,
    pub fib_ifindex: u32,
    pub fib_kind: u8,
    pub fib_pad: u8,
    pub fib_dmac: [u8; 6],
    pub fib_smac: [u8; 6],
    pub fib_pad2: u16,
    pub fib_pad3: u32,
}

impl Flow {
    /// Rewrite a packet of the flow to `new_src -> new_dst`.
    /// `last_seen_ns` is on the kernel's clock ([`monotonic_ns`]).
    pub fn new(new_src: SocketAddr, new_dst: SocketAddr, backend: u32, reverse: bool) -> Self {
        let (s, _) = wire_addr(new_src.ip());
        let (d, _) = wire_addr(new_dst.ip());
        Self {
            new_src: s,
            new_dst: d,
            new_sport: wire_port(new_src.port()),
            new_dport: wire_port(new_dst.port()),
            backend,
            last_seen_ns: monotonic_ns(),
            reverse: u8::from(reverse),
            ..Self::default()
        }
    }

    /// As `new`, marked as installed by userspace (Mode A).
    pub fn from_user(
        new_src: SocketAddr,
        new_dst: SocketAddr,
        backend: u32,
        reverse: bool,
    ) -> Self {
        Self {
            from_user: 1,
            ..Self::new(new_src, new_dst, backend, reverse)
        }
    }

    pub fn new_src_addr(&self, family: u8) -> Option<SocketAddr> {
        socket_of(&self.new_src, self.new_sport, family)
    }

    pub fn new_dst_addr(&self, family: u8) -> Option<SocketAddr> {
        socket_of(&self.new_dst, self.new_dport, family)
    }
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Config {
    pub new_flows_per_cpu_per_sec: u32,
    pub flow_idle_timeout_s: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate {
    pub window_start_ns: u64,
    pub count: u32,
    pub pad: u32,
}

// SAFETY: plain #[repr(C)] integers and arrays with no implicit padding
// (the sizes below prove it), valid for every bit pattern.
unsafe impl aya::Pod for ServiceKey {}
unsafe impl aya::Pod for Service {}
unsafe impl aya::Pod for Backend {}
unsafe impl aya::Pod for FlowKey {}
unsafe impl aya::Pod for Flow {}
unsafe impl aya::Pod for Config {}
unsafe impl aya::Pod for Rate {}

// The C layout (lb.h), byte for byte: a field added on one side only
// fails the build here.
const _: () = {
    assert!(std::mem::size_of::<ServiceKey>() == 20);
    assert!(std::mem::size_of::<Service>() == 20);
    assert!(std::mem::size_of::<Backend>() == 20);
    assert!(std::mem::size_of::<FlowKey>() == 40);
    assert!(std::mem::size_of::<Flow>() == 88);
    // No implicit padding before the last field (Pod bytes are all fields).
    assert!(std::mem::offset_of!(Flow, last_seen_ns) == 40);
    assert!(std::mem::offset_of!(Flow, tcp_state) == 50);
    assert!(std::mem::offset_of!(Flow, fib_at_ns) == 56);
    assert!(std::mem::offset_of!(Flow, fib_pad3) == 84);
    assert!(std::mem::align_of::<Flow>() == 8);
    assert!(std::mem::size_of::<Config>() == 8);
    assert!(std::mem::size_of::<Rate>() == 16);
};

/// The kernel's clock for `Flow::last_seen_ns` (bpf_ktime_get_coarse_ns,
/// CLOCK_MONOTONIC_COARSE: a tick's resolution, a fraction of the cost of
/// the precise clock), for entries userspace installs.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_in_wire_order() {
        let v4: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        let k = FlowKey::new(v4, "10.0.0.1:80".parse().unwrap(), IPPROTO_TCP);
        assert_eq!(k.src[0].to_ne_bytes(), [10, 1, 2, 3]);
        assert_eq!(k.sport.to_ne_bytes(), [0x1f, 0x90]);
        assert_eq!(k.src_addr(), Some(v4));
        let v6: SocketAddr = "[fd00::1:2]:443".parse().unwrap();
        let b = Backend::new(v6, true);
        assert_eq!(b.family, FAMILY_V6);
        assert_eq!(b.addr[3].to_ne_bytes(), [0, 1, 0, 2]);
        assert_eq!(b.socket_addr(), Some(v6));
        assert_eq!(
            ServiceKey::new("0.0.0.0:80".parse().unwrap(), 6).addr,
            [0; 4]
        );
        assert!(monotonic_ns() > 0);
    }
}
