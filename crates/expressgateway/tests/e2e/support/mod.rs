//! The e2e harness: start the real binary with a generated config, read the
//! bound addresses from its startup report, start real backends, and stop
//! everything on drop.

pub mod backends;
pub mod gateway;
pub mod h3;
pub mod http;
pub mod probe;
pub mod quic;
pub mod raw_h1;
pub mod raw_h2;
pub mod tls;

pub use backends::*;
pub use gateway::*;
