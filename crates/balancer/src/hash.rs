//! A fixed, seedless hash: every gateway instance with the same config
//! computes the same Maglev and ring tables (SPEC §11), which std's
//! randomly seeded hasher would not.

/// FNV-1a over the bytes, finished with a SplitMix64 mix so that short,
/// similar keys (IPs, connection IDs) spread over the whole range.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// SplitMix64 finaliser.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The hash policies' key for a client IP (no configured hash key): the
/// address octets in wire order. The XDP program computes the same key
/// (crates/xdp/bpf/lb.h) to mirror a Maglev pick in the kernel.
pub fn ip_key(ip: std::net::IpAddr) -> u64 {
    match ip {
        std::net::IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        std::net::IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}
