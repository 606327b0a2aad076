//! The e2e harness: start the real binary with a generated config, read the
//! bound addresses from its startup report, start real backends, and stop
//! everything on drop.

pub mod backends;
pub mod gateway;
pub mod h3;
pub mod http;
pub mod interop;
pub mod netns;
pub mod probe;
pub mod quic;
pub mod raw_h1;
pub mod raw_h2;
pub mod tls;
pub mod udp_relay;

pub use backends::*;
pub use gateway::*;

/// `[admin] api_token_hash` for `token`: its SHA-256 in hex.
pub fn api_token_hash(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
