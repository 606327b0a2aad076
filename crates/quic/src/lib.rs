//! QUIC datapaths: the HTTP/3 front of `quic` listeners and the raw QUIC
//! relay (Mode B), on quinn endpoints configured from `[listeners.quic]`.
#![forbid(unsafe_code)]

mod early_data;
pub mod endpoint;
pub mod front;
pub mod quic_lb;
pub mod relay;
