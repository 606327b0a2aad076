use super::*;

/// A long-header packet: `first`, version, CIDs, then `tail` verbatim.
pub(crate) fn long(first: u8, version: u32, dcid: &[u8], scid: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut p = vec![first];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(dcid.len() as u8);
    p.extend_from_slice(dcid);
    p.push(scid.len() as u8);
    p.extend_from_slice(scid);
    p.extend_from_slice(tail);
    p
}

/// A padded client Initial of `version` (1200 bytes, as a client sends).
pub(crate) fn initial(version: u32, dcid: &[u8], scid: &[u8]) -> Vec<u8> {
    let type_bits = if version == VERSION_2 { 0x10 } else { 0x00 };
    let head = long(0xc3 | type_bits, version, dcid, scid, &[]);
    // token length 0, then a 2-byte Length covering the rest.
    let length = MIN_INITIAL_DATAGRAM - head.len() - 3;
    let mut p = head;
    p.push(0);
    p.push(0x40 | (length >> 8) as u8);
    p.push(length as u8);
    p.resize(MIN_INITIAL_DATAGRAM, 0);
    p
}

#[test]
fn v1_initial() {
    let p = initial(VERSION_1, &[1; 8], &[2; 5]);
    assert_eq!(
        parse(&p),
        Ok(Packet::Long {
            version: VERSION_1,
            ty: LongType::Initial,
            dcid: &[1; 8],
            scid: &[2; 5],
        })
    );
}

#[test]
fn v2_types_are_shifted() {
    let p = initial(VERSION_2, &[9; 20], &[]);
    assert!(matches!(
        parse(&p),
        Ok(Packet::Long {
            ty: LongType::Initial,
            version: VERSION_2,
            ..
        })
    ));
    // v2 type bits 00 are Retry; in v1 they are Initial.
    let retry = long(0xc0, VERSION_2, &[1; 8], &[3; 8], &[0; 24]);
    assert!(matches!(
        parse(&retry),
        Ok(Packet::Long {
            ty: LongType::Retry,
            ..
        })
    ));
    let hs = long(0xf0, VERSION_2, &[1; 8], &[3; 8], &[0x05, 0, 0, 0, 0, 0]);
    assert!(matches!(
        parse(&hs),
        Ok(Packet::Long {
            ty: LongType::Handshake,
            ..
        })
    ));
}

#[test]
fn v1_handshake_and_retry() {
    let hs = long(0xe0, VERSION_1, &[4; 8], &[5; 8], &[0x02, 0, 0]);
    assert!(matches!(
        parse(&hs),
        Ok(Packet::Long {
            ty: LongType::Handshake,
            ..
        })
    ));
    let retry = long(0xf0, VERSION_1, &[4; 8], &[5; 8], &[7; 16]);
    assert_eq!(
        parse(&retry).ok().and_then(|p| p.scid()),
        Some(&[5u8; 8][..])
    );
    let short_tag = long(0xf0, VERSION_1, &[4; 8], &[5; 8], &[7; 15]);
    assert_eq!(parse(&short_tag), Err(Malformed::Truncated));
}

#[test]
fn version_negotiation() {
    let vn = long(0x80, 0, &[1; 4], &[2; 8], &VERSION_1.to_be_bytes());
    assert!(matches!(
        parse(&vn),
        Ok(Packet::VersionNegotiation { versions, .. }) if versions == VERSION_1.to_be_bytes()
    ));
    let ragged = long(0x80, 0, &[1; 4], &[2; 8], &[0, 0, 1]);
    assert_eq!(parse(&ragged), Err(Malformed::BadVersionList));
}

#[test]
fn other_versions_allow_long_cids() {
    let p = long(0xc0, 0x1a2a_3a4a, &[7; 200], &[], &[]);
    assert!(matches!(parse(&p), Ok(Packet::OtherVersion { dcid, .. }) if dcid.len() == 200));
    let p = long(0xc0, VERSION_1, &[7; 21], &[], &[0; 40]);
    assert_eq!(parse(&p), Err(Malformed::CidTooLong));
}

#[test]
fn lengths_are_checked() {
    let mut p = initial(VERSION_1, &[1; 8], &[2; 8]);
    p.truncate(600);
    assert_eq!(parse(&p), Err(Malformed::LengthPastEnd));
    // A token length past the end.
    let mut p = long(0xc0, VERSION_1, &[1; 8], &[], &[0x7f, 0xff]);
    p.extend_from_slice(&[0; 10]);
    assert_eq!(parse(&p), Err(Malformed::Truncated));
    assert_eq!(parse(&[]), Err(Malformed::Empty));
    assert_eq!(parse(&[0xc0, 0, 0]), Err(Malformed::Truncated));
}

#[test]
fn short_header_dcid_by_known_length() {
    let p = [0x40, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    let Ok(Packet::Short { rest }) = parse(&p) else {
        panic!("short header");
    };
    assert_eq!(short_dcid(rest, 8), Some(&[1, 2, 3, 4, 5, 6, 7, 8][..]));
    assert_eq!(short_dcid(rest, 20), None);
}

/// Tiny deterministic generator for the fuzz-like test (xorshift64*).
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// What every parse result must satisfy: CIDs lie inside the input.
fn check_invariants(input: &[u8]) {
    let range = input.as_ptr_range();
    let inside = |s: &[u8]| s.is_empty() || (range.contains(&s.as_ptr()) && s.len() <= input.len());
    if let Ok(p) = parse(input) {
        assert!(p.long_dcid().is_none_or(inside));
        assert!(p.scid().is_none_or(inside));
        if let Packet::Short { rest } = p {
            assert_eq!(rest.len() + 1, input.len());
            for len in 0..=21 {
                let _ = short_dcid(rest, len);
            }
        }
    }
}

/// The committed fuzz corpus (`fuzz/corpus/header`), each seed cut at
/// every length and mutated, then random datagrams: a short, fixed,
/// deterministic run of what `cargo fuzz run header` does for hours.
#[test]
fn fuzz_like_corpus_and_random_bytes_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/header");
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    assert!(seeds.len() >= 8, "corpus has {} seeds", seeds.len());
    seeds.push(initial(VERSION_1, &[1; 8], &[2; 8]));
    let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
    for seed in &seeds {
        for cut in 0..=seed.len().min(64) {
            check_invariants(&seed[..cut]);
        }
        for _ in 0..500 {
            let mut m = seed.clone();
            for _ in 0..1 + noise.below(4) {
                let i = noise.below(m.len());
                if let Some(b) = m.get_mut(i) {
                    *b ^= 1 << noise.below(8);
                }
            }
            m.truncate(noise.below(m.len() + 1));
            check_invariants(&m);
        }
    }
    for _ in 0..20_000 {
        let len = noise.below(80);
        let bytes: Vec<u8> = (0..len).map(|_| noise.next() as u8).collect();
        check_invariants(&bytes);
    }
}
