//! TLS for every datapath: one crypto provider, certificate loading with
//! operator-friendly errors, server configs (SNI, client auth, ticket
//! rotation) and verified upstream client configs.
#![forbid(unsafe_code)]

mod backend;
mod client;
mod error;
mod load;
mod selfsigned;
mod server;
mod ticket;

pub use backend::{backend_tls, BackendTls};
pub use client::{client_config, UpstreamTls};
pub use error::TlsError;
pub use load::{load_ca, load_certified_key, load_certs};
pub use selfsigned::{self_signed, SelfSigned};
pub use server::{
    carried_early_data_sessions, listener_server_config, listener_server_config_with,
    server_config, EarlyDataSessions, ServerTlsOptions,
};
pub use ticket::{carried_ticketer, SessionTicketer};

/// Install the process-wide crypto provider (ring: it builds fastest here
/// and its handshake cost is on par for our cipher suites). Idempotent.
pub fn install_crypto_provider() {
    // Err means another call already installed one: nothing to do.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests;
