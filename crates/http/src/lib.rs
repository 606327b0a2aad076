//! The HTTP datapath: front adapters (hyper H1/H2), the protocol-neutral
//! proxy core, upstream connectors (H1 pooled, H2 multiplexed), and the
//! WebSocket handshakes and frame relay.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod body;
pub mod connector;
pub mod core;
pub mod error_map;
pub mod front;
pub mod grpc;
mod h2_frame;
pub mod h3io;
pub mod health;
pub mod series;
pub mod settings;
pub mod websocket;

pub use front::serve;
pub use settings::{build_clusters, HttpSettings, PoolHandle, SettingsError};
