//! HTTP/2 frame layout (RFC 9113 §4.1, §6), for the two places that read
//! frames as they pass under hyper: the client-side frame guard and the
//! upstream SETTINGS reader.

pub(crate) const FRAME_HEADER: usize = 9;

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;

/// The frame size h2 accepts unless told more (SETTINGS_MAX_FRAME_SIZE's
/// initial value, RFC 9113 §6.5.2).
pub(crate) const MAX_FRAME_SIZE: usize = 16_384;
