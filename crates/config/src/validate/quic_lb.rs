//! QUIC-LB settings: field ranges of the draft's plaintext algorithm, and
//! server IDs that fit their routing table.

use std::collections::HashSet;

use super::Findings;
use crate::{parse_hex, Passthrough, QuicLbIssue, QUIC_LB_UNROUTABLE_ROTATION};

/// Longest QUIC v1 connection ID.
const MAX_CID: usize = 20;

fn check_common(f: &mut Findings, p: &str, rotation: u8, sid_len: usize, nonce_len: u8) {
    f.range(
        format!("{p}.config_rotation"),
        rotation,
        0,
        QUIC_LB_UNROUTABLE_ROTATION - 1,
    );
    // The draft asks for at least 4 nonce bytes (IDs must not repeat).
    f.range(format!("{p}.nonce_len"), nonce_len, 4, 18);
    let total = 1 + sid_len + usize::from(nonce_len);
    if total > MAX_CID {
        f.fail(
            format!("{p}.nonce_len"),
            nonce_len,
            format!("1 + server ID ({sid_len}) + nonce must fit a 20-byte connection ID"),
        );
    }
}

/// `[listeners.quic.quic_lb]` at `p`.
pub(super) fn check_issue(f: &mut Findings, p: &str, lb: &QuicLbIssue) {
    let sid = parse_hex(&lb.server_id).filter(|s| (1..=15).contains(&s.len()));
    let Some(sid) = sid else {
        return f.fail(
            format!("{p}.server_id"),
            format!("{:?}", lb.server_id),
            "1-15 bytes in hex (2-30 hex digits)",
        );
    };
    check_common(f, p, lb.config_rotation, sid.len(), lb.nonce_len);
}

/// `[passthrough.quic_lb]` and the backends' `server_id`s.
pub(super) fn check_route(f: &mut Findings, pt: &Passthrough) {
    let with_id = pt.backends.iter().any(|b| b.server_id().is_some());
    let Some(lb) = &pt.quic_lb else {
        if with_id {
            f.fail(
                "passthrough.backends",
                "server_id",
                "a backend server_id needs a [passthrough.quic_lb] table to be read",
            );
        }
        return;
    };
    let p = "passthrough.quic_lb";
    f.range(format!("{p}.server_id_len"), lb.server_id_len, 1, 15);
    check_common(
        f,
        p,
        lb.config_rotation,
        usize::from(lb.server_id_len),
        lb.nonce_len,
    );
    let cid_len = 1 + usize::from(lb.server_id_len) + usize::from(lb.nonce_len);
    if cid_len > usize::from(pt.max_dcid_len_routed) {
        f.fail(
            "passthrough.max_dcid_len_routed",
            pt.max_dcid_len_routed,
            format!("QUIC-LB connection IDs are {cid_len} bytes long; route at least that"),
        );
    }
    if pt.cluster.is_some() {
        f.fail(
            p,
            "(present)",
            "QUIC-LB server IDs are given on inline passthrough.backends, not on a cluster",
        );
    }
    let mut seen = HashSet::new();
    for (j, b) in pt.backends.iter().enumerate() {
        let Some(hex) = b.server_id() else { continue };
        let path = format!("passthrough.backends[{j}].server_id");
        match parse_hex(hex) {
            Some(id) if id.len() == usize::from(lb.server_id_len) => {
                if !seen.insert(id) {
                    f.fail(path, hex, "server IDs must be unique");
                }
            }
            _ => f.fail(
                path,
                format!("{hex:?}"),
                format!(
                    "{} bytes in hex (passthrough.quic_lb.server_id_len)",
                    lb.server_id_len
                ),
            ),
        }
    }
}
