//! The TOML schema as typed structs. Every table rejects unknown keys.

pub mod global;
pub mod listener;
pub mod pool;
pub mod quic_lb;
pub mod xdp;
