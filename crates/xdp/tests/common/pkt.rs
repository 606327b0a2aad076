//! Test packets by hand: Ethernet (+ VLAN tags), IPv4 or IPv6, TCP or UDP,
//! with checksums computed from scratch, and the reverse: parse a frame
//! the program left and verify its checksums from scratch too. No packet
//! crate: the point is an independent second implementation.

use std::net::{IpAddr, SocketAddr};

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

pub const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp { flags: u8 },
    Udp,
}

#[derive(Debug, Clone)]
pub struct Pkt {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub l4: L4,
    pub payload: Vec<u8>,
    /// TPIDs of VLAN tags, outermost first.
    pub vlans: Vec<u16>,
    pub ethertype: Option<u16>,
    /// IPv4 with 4 bytes of options (ihl 6).
    pub ip_options: bool,
    /// IPv4 "more fragments" set.
    pub more_fragments: bool,
    /// IPv4 fragment offset (8-byte units).
    pub frag_offset: u16,
    /// IPv6: a hop-by-hop extension header before L4.
    pub ext_header: bool,
    /// IPv4 UDP sent without a checksum.
    pub udp_no_checksum: bool,
}

impl Pkt {
    pub fn tcp(src: &str, dst: &str, flags: u8) -> Self {
        Self::new(src, dst, L4::Tcp { flags }, b"hello".to_vec())
    }

    pub fn udp(src: &str, dst: &str, payload: &[u8]) -> Self {
        Self::new(src, dst, L4::Udp, payload.to_vec())
    }

    pub fn new(src: &str, dst: &str, l4: L4, payload: Vec<u8>) -> Self {
        Self {
            src: src.parse().expect("test address"),
            dst: dst.parse().expect("test address"),
            l4,
            payload,
            vlans: Vec::new(),
            ethertype: None,
            ip_options: false,
            more_fragments: false,
            frag_offset: 0,
            ext_header: false,
            udp_no_checksum: false,
        }
    }

    pub fn proto(&self) -> u8 {
        match self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp => 17,
        }
    }

    fn l4_bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&self.src.port().to_be_bytes());
        b.extend_from_slice(&self.dst.port().to_be_bytes());
        match self.l4 {
            L4::Tcp { flags } => {
                b.extend_from_slice(&1u32.to_be_bytes()); // seq
                b.extend_from_slice(&(if flags & ACK != 0 { 7u32 } else { 0 }).to_be_bytes());
                b.push(5 << 4);
                b.push(flags);
                b.extend_from_slice(&65535u16.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]); // check, urgent
            }
            L4::Udp => {
                let len = (8 + self.payload.len()) as u16;
                b.extend_from_slice(&len.to_be_bytes());
                b.extend_from_slice(&[0, 0]);
            }
        }
        b.extend_from_slice(&self.payload);
        let check_at = match self.l4 {
            L4::Tcp { .. } => 16,
            L4::Udp => 6,
        };
        if !(self.l4 == L4::Udp && self.udp_no_checksum && self.src.is_ipv4()) {
            let mut c = l4_checksum(self.src.ip(), self.dst.ip(), self.proto(), &b);
            if self.l4 == L4::Udp && c == 0 {
                c = 0xffff;
            }
            b[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        b
    }

    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&MAC_DST);
        f.extend_from_slice(&MAC_SRC);
        for tpid in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&0x0064u16.to_be_bytes()); // VID 100
        }
        let l4 = self.l4_bytes();
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&self.ethertype.unwrap_or(0x0800).to_be_bytes());
                let opt_len = if self.ip_options { 4 } else { 0 };
                let mut h = vec![0x45 + (opt_len / 4) as u8, 0];
                h.extend_from_slice(&((20 + opt_len + l4.len()) as u16).to_be_bytes());
                h.extend_from_slice(&0x1234u16.to_be_bytes());
                let mut frag = self.frag_offset & 0x1fff;
                if self.more_fragments {
                    frag |= 0x2000;
                } else if frag == 0 {
                    frag = 0x4000; // DF
                }
                h.extend_from_slice(&frag.to_be_bytes());
                h.extend_from_slice(&[64, self.proto(), 0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                if self.ip_options {
                    h.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
                }
                let c = checksum(&h, 0);
                h[10..12].copy_from_slice(&c.to_be_bytes());
                f.extend_from_slice(&h);
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&self.ethertype.unwrap_or(0x86dd).to_be_bytes());
                let ext = if self.ext_header { 8 } else { 0 };
                f.extend_from_slice(&0x6000_0000u32.to_be_bytes());
                f.extend_from_slice(&((ext + l4.len()) as u16).to_be_bytes());
                f.push(if self.ext_header { 0 } else { self.proto() });
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                if self.ext_header {
                    f.extend_from_slice(&[self.proto(), 0, 1, 4, 0, 0, 0, 0]); // PadN
                }
            }
            _ => panic!("mixed families"),
        }
        f.extend_from_slice(&l4);
        f
    }
}

/// One's complement sum of `b` (big-endian pairs), folded and inverted.
pub fn checksum(b: &[u8], initial: u32) -> u16 {
    let mut sum = u64::from(initial);
    for pair in b.chunks(2) {
        let hi = u64::from(pair[0]) << 8;
        let lo = pair.get(1).map_or(0, |&x| u64::from(x));
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn pseudo_sum(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut b = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
            b.extend_from_slice(&[0, proto]);
            b.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            b.extend_from_slice(&s.octets());
            b.extend_from_slice(&d.octets());
            b.extend_from_slice(&(len as u32).to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("mixed families"),
    }
    u32::from(!checksum(&b, 0))
}

/// The L4 checksum over the pseudo-header and `seg` (its check field zero).
pub fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, seg: &[u8]) -> u16 {
    checksum(seg, pseudo_sum(src, dst, proto, seg.len()))
}

/// What a frame carries, once its checksums proved right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub eth_dst: [u8; 6],
    pub eth_src: [u8; 6],
    pub vlans: usize,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub proto: u8,
    pub tcp_flags: u8,
    pub payload: Vec<u8>,
    /// IPv4 UDP without a checksum.
    pub udp_no_checksum: bool,
}

/// Parse `f` and verify its IPv4 header and L4 checksums from scratch.
pub fn check(f: &[u8]) -> Result<Seen, String> {
    let get = |a: usize, b: usize| {
        f.get(a..b)
            .ok_or_else(|| format!("short frame at {a}..{b}"))
    };
    let mut eth_dst = [0u8; 6];
    let mut eth_src = [0u8; 6];
    eth_dst.copy_from_slice(get(0, 6)?);
    eth_src.copy_from_slice(get(6, 12)?);
    let mut at = 12;
    let mut vlans = 0;
    let mut ty = u16::from_be_bytes([f[at], *f.get(at + 1).ok_or("short")?]);
    while ty == 0x8100 || ty == 0x88a8 {
        at += 4;
        vlans += 1;
        let t = get(at, at + 2)?;
        ty = u16::from_be_bytes([t[0], t[1]]);
    }
    at += 2;
    let (src_ip, dst_ip, proto, l4): (IpAddr, IpAddr, u8, &[u8]) = match ty {
        0x0800 => {
            let h = get(at, at + 20)?;
            if h[0] != 0x45 {
                return Err(format!("ip version/ihl {:#x}", h[0]));
            }
            if checksum(h, 0) != 0 {
                return Err("bad IPv4 header checksum".into());
            }
            let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let s: [u8; 4] = h[12..16].try_into().map_err(|_| "addr")?;
            let d: [u8; 4] = h[16..20].try_into().map_err(|_| "addr")?;
            (s.into(), d.into(), h[9], get(at + 20, at + len)?)
        }
        0x86dd => {
            let h = get(at, at + 40)?;
            let len = usize::from(u16::from_be_bytes([h[4], h[5]]));
            let s: [u8; 16] = h[8..24].try_into().map_err(|_| "addr")?;
            let d: [u8; 16] = h[24..40].try_into().map_err(|_| "addr")?;
            (s.into(), d.into(), h[6], get(at + 40, at + 40 + len)?)
        }
        other => return Err(format!("ethertype {other:#x}")),
    };
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let (payload_at, tcp_flags, check_at) = match proto {
        6 => (usize::from(l4[12] >> 4) * 4, l4[13], 16),
        17 => (8, 0, 6),
        p => return Err(format!("proto {p}")),
    };
    let stored = u16::from_be_bytes([l4[check_at], l4[check_at + 1]]);
    let udp_no_checksum = proto == 17 && stored == 0 && src_ip.is_ipv4();
    if !udp_no_checksum {
        let mut zeroed = l4.to_vec();
        zeroed[check_at] = 0;
        zeroed[check_at + 1] = 0;
        let mut want = l4_checksum(src_ip, dst_ip, proto, &zeroed);
        if proto == 17 && want == 0 {
            want = 0xffff;
        }
        if want != stored {
            return Err(format!("bad L4 checksum {stored:#06x}, want {want:#06x}"));
        }
    }
    Ok(Seen {
        eth_dst,
        eth_src,
        vlans,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        proto,
        tcp_flags,
        payload: l4.get(payload_at..).unwrap_or_default().to_vec(),
        udp_no_checksum,
    })
}
