//! QUIC Mode A: `[passthrough]` routes client QUIC datagrams to backends
//! that terminate QUIC themselves, by the connection ID in the public
//! header, without ever decrypting: the client verifies the backend's own
//! certificate. New flows are placed by the one balancer (Maglev over the
//! connection ID: every instance with the same config agrees), the flow
//! table learns the backend's connection IDs from its handshake replies,
//! and every bound is counted (`metrics`).
#![forbid(unsafe_code)]

mod batch;
pub mod datapath;
pub mod fastpath;
pub mod flows;
pub mod header;
pub mod metrics;
pub mod probe;
pub mod settings;

pub use datapath::serve;
pub use fastpath::{FastPath, KernelFlow};
pub use settings::{Settings, SettingsError};

#[cfg(test)]
#[path = "instances_tests.rs"]
mod instances_tests;
