//! Who may use the admin listener. Non-loopback peers only with
//! `allow_non_loopback`; and when `api_token_hash` is set, every request
//! (loopback too: a local process is not trusted by default) must carry
//! `Authorization: Bearer <token>` whose SHA-256 is that hash.

use std::net::SocketAddr;

use http::{header, Request};
use sha2::{Digest, Sha256};

use crate::AdminState;

/// Whether `peer` may reach the admin listener at all.
pub(crate) fn network_allowed(state: &AdminState, peer: SocketAddr) -> bool {
    peer.ip().is_loopback() || state.access().allow_non_loopback
}

pub(crate) fn authorized<B>(state: &AdminState, peer: SocketAddr, req: &Request<B>) -> bool {
    let access = state.access();
    if !network_allowed(state, peer) {
        return false;
    }
    let Some(expected) = access.token_hash else {
        // Without a token only loopback gets here (validation refuses
        // allow_non_loopback without one).
        return peer.ip().is_loopback();
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(token) => same_digest(&Sha256::digest(token.as_bytes()).into(), &expected),
        None => false,
    }
}

/// Compare two digests in time independent of where they differ, so the
/// answer's timing says nothing about how much of a guess was right.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(token: Option<&str>, non_loopback: bool) -> AdminState {
        let hash = token.map(|t| {
            Sha256::digest(t.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
        std::sync::Arc::into_inner(AdminState::new(hash.as_deref(), non_loopback)).expect("sole")
    }

    fn req(token: Option<&str>) -> Request<()> {
        let mut b = Request::get("/metrics");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(()).expect("request")
    }

    #[test]
    fn a_set_token_is_asked_of_loopback_too() {
        let lo: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let far: SocketAddr = "192.0.2.1:1".parse().expect("addr");
        let s = state(Some("s3cret"), true);
        assert!(!authorized(&s, lo, &req(None)));
        assert!(!authorized(&s, lo, &req(Some("wrong"))));
        assert!(authorized(&s, lo, &req(Some("s3cret"))));
        assert!(!authorized(&s, far, &req(None)));
        assert!(authorized(&s, far, &req(Some("s3cret"))));
        let open = state(None, false);
        assert!(authorized(&open, lo, &req(None)));
        assert!(!authorized(&open, far, &req(None)));
        let local_only = state(Some("s3cret"), false);
        assert!(!authorized(&local_only, far, &req(Some("s3cret"))));
    }
}
