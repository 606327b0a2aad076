//! L4 datapaths: `tcp` (byte relay) and `tls` (rustls termination, then a
//! cleartext relay). Backends come from the shared balancer.
#![forbid(unsafe_code)]

mod dial;
mod listener;
#[cfg(target_os = "linux")]
mod pipes;
mod relay;
mod settings;
#[cfg(target_os = "linux")]
mod splice;

pub use listener::serve;
pub use settings::{L4Settings, SettingsError};
