//! Any datagram: the public-header parser and the short-header CID reads
//! return, never panic, and every CID they hand out lies inside the input.
#![no_main]

use eg_passthrough::header::{parse, short_dcid, Packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = parse(data) else { return };
    for cid in [p.long_dcid(), p.scid()].into_iter().flatten() {
        assert!(cid.len() <= data.len());
    }
    if let Packet::Short { rest } = p {
        for len in 0..=20 {
            let _ = short_dcid(rest, len);
        }
    }
});
