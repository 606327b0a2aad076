//! QUIC-LB plaintext connection IDs (draft-ietf-quic-load-balancers,
//! plaintext algorithm): a first octet (3 bits of config rotation, 5 of
//! length), the server ID, then a random nonce. A `quic` listener issues
//! them (`[listeners.quic.quic_lb]`); Mode A reads the server ID back
//! (`[passthrough.quic_lb]`) and routes established flows without state.

use serde::Deserialize;

/// `[listeners.quic.quic_lb]`: the IDs this listener's connections issue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicLbIssue {
    /// Hex, 1-15 bytes; unique per server behind the same balancer.
    pub server_id: String,
    #[serde(default)]
    pub config_rotation: u8,
    #[serde(default = "default_nonce_len")]
    pub nonce_len: u8,
}

/// `[passthrough.quic_lb]`: how to read the IDs backends issue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuicLbRoute {
    pub server_id_len: u8,
    #[serde(default)]
    pub config_rotation: u8,
    #[serde(default = "default_nonce_len")]
    pub nonce_len: u8,
}

/// Eight random bytes: 2^64 IDs per server before a repeat is likely to
/// matter, and the whole ID stays within 20 bytes for any server ID.
fn default_nonce_len() -> u8 {
    8
}

/// The reserved code point: an ID a load balancer must not route by.
pub const QUIC_LB_UNROUTABLE_ROTATION: u8 = 0b111;

/// `server_id` as bytes: `None` unless an even number of hex digits.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.as_bytes();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}
