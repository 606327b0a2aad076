//! QUIC public headers, as much as an L4 router may read: the RFC 8999
//! invariants (long or short form, version, connection IDs) for every
//! version, and for versions 1 (RFC 9000) and 2 (RFC 9369) the packet type
//! and the lengths up to the packet number, so a malformed datagram is
//! told apart from a real one. Nothing here decrypts. Every read is
//! bounds-checked: any input returns `Ok` or `Err`, never panics.

/// QUIC version 1 (RFC 9000).
pub const VERSION_1: u32 = 0x0000_0001;
/// QUIC version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;
/// The version field of a Version Negotiation packet (RFC 8999 §6).
pub const VERSION_NEGOTIATION: u32 = 0;

/// Longest connection ID versions 1 and 2 allow (RFC 9000 §17.2); the
/// invariants allow 255 for other versions.
pub const MAX_CID_LEN_V1: usize = 20;

/// Smallest UDP payload carrying a client Initial (RFC 9000 §14.1): a
/// server must drop smaller ones, and so does the router before placing a
/// flow, which also caps what a spoofed source can make a backend send.
pub const MIN_INITIAL_DATAGRAM: usize = 1200;

/// Bytes of the Retry integrity tag (RFC 9001 §5.8).
const RETRY_TAG_LEN: usize = 16;

/// Long-header packet types of versions 1 and 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LongType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
}

/// What the first packet of a datagram says publicly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet<'a> {
    /// A version 1 or 2 long header.
    Long {
        version: u32,
        ty: LongType,
        dcid: &'a [u8],
        scid: &'a [u8],
    },
    /// A long header of a version this parser does not know: only the
    /// invariants are read. A client may start with one (the backend then
    /// answers Version Negotiation).
    OtherVersion {
        version: u32,
        dcid: &'a [u8],
        scid: &'a [u8],
    },
    /// Version Negotiation (version 0): the versions the sender supports.
    VersionNegotiation {
        dcid: &'a [u8],
        scid: &'a [u8],
        versions: &'a [u8],
    },
    /// A short header: the connection ID's length is not on the wire (the
    /// receiver chose it), so `rest` is everything after the first byte;
    /// `short_dcid` takes a known length from it.
    Short { rest: &'a [u8] },
}

impl<'a> Packet<'a> {
    /// The destination connection ID of a long header.
    pub fn long_dcid(&self) -> Option<&'a [u8]> {
        match *self {
            Self::Long { dcid, .. }
            | Self::OtherVersion { dcid, .. }
            | Self::VersionNegotiation { dcid, .. } => Some(dcid),
            Self::Short { .. } => None,
        }
    }

    /// The source connection ID of a long header.
    pub fn scid(&self) -> Option<&'a [u8]> {
        match *self {
            Self::Long { scid, .. }
            | Self::OtherVersion { scid, .. }
            | Self::VersionNegotiation { scid, .. } => Some(scid),
            Self::Short { .. } => None,
        }
    }
}

/// Why a datagram is not a QUIC packet this router will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    Empty,
    /// Ends before a field it announces.
    Truncated,
    /// A v1/v2 connection ID longer than 20 bytes.
    CidTooLong,
    /// A Length field larger than what follows it.
    LengthPastEnd,
    /// A Version Negotiation packet whose version list is not whole.
    BadVersionList,
}

impl Malformed {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Truncated => "truncated",
            Self::CidTooLong => "cid_too_long",
            Self::LengthPastEnd => "length_past_end",
            Self::BadVersionList => "bad_version_list",
        }
    }
}

/// A cursor that can only move forward within its slice.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, Malformed> {
        let (&b, rest) = self.bytes.split_first().ok_or(Malformed::Truncated)?;
        self.bytes = rest;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.bytes.len() {
            return Err(Malformed::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        let mut v = [0u8; 4];
        v.copy_from_slice(b);
        Ok(u32::from_be_bytes(v))
    }

    /// A variable-length integer (RFC 9000 §16).
    fn varint(&mut self) -> Result<u64, Malformed> {
        let first = self.u8()?;
        let extra = (1usize << (first >> 6)) - 1;
        let mut v = u64::from(first & 0x3f);
        for &b in self.take(extra)? {
            v = (v << 8) | u64::from(b);
        }
        Ok(v)
    }

    fn cid(&mut self, max: usize) -> Result<&'a [u8], Malformed> {
        let len = usize::from(self.u8()?);
        if len > max {
            return Err(Malformed::CidTooLong);
        }
        self.take(len)
    }
}

/// Parse the public header of the first packet of `datagram`. (Packets
/// coalesced after it share its connection IDs, RFC 9000 §12.2, so the
/// first decides where the datagram goes.)
pub fn parse(datagram: &[u8]) -> Result<Packet<'_>, Malformed> {
    let mut r = Reader { bytes: datagram };
    let first = r.u8().map_err(|_| Malformed::Empty)?;
    if first & 0x80 == 0 {
        return Ok(Packet::Short { rest: r.bytes });
    }
    let version = r.u32()?;
    let known = matches!(version, VERSION_1 | VERSION_2);
    let max = if known { MAX_CID_LEN_V1 } else { 255 };
    let dcid = r.cid(max)?;
    let scid = r.cid(max)?;
    if version == VERSION_NEGOTIATION {
        if r.bytes.is_empty() || !r.bytes.len().is_multiple_of(4) {
            return Err(Malformed::BadVersionList);
        }
        return Ok(Packet::VersionNegotiation {
            dcid,
            scid,
            versions: r.bytes,
        });
    }
    if !known {
        return Ok(Packet::OtherVersion {
            version,
            dcid,
            scid,
        });
    }
    let ty = long_type(version, (first >> 4) & 0x03);
    match ty {
        LongType::Retry => {
            if r.bytes.len() < RETRY_TAG_LEN {
                return Err(Malformed::Truncated);
            }
        }
        LongType::Initial | LongType::ZeroRtt | LongType::Handshake => {
            if ty == LongType::Initial {
                let token_len = r.varint()?;
                r.take(usize::try_from(token_len).map_err(|_| Malformed::Truncated)?)?;
            }
            let length = r.varint()?;
            // The packet number (1-4 bytes) and payload follow; a packet
            // claiming more than the datagram holds is not one.
            let pn_len = usize::from(first & 0x03) + 1;
            let length = usize::try_from(length).map_err(|_| Malformed::LengthPastEnd)?;
            if length > r.bytes.len() || length < pn_len {
                return Err(Malformed::LengthPastEnd);
            }
        }
    }
    Ok(Packet::Long {
        version,
        ty,
        dcid,
        scid,
    })
}

/// The two type bits mean different types in v2 (RFC 9369 §3.2).
fn long_type(version: u32, bits: u8) -> LongType {
    match (version == VERSION_2, bits) {
        (false, 0) | (true, 1) => LongType::Initial,
        (false, 1) | (true, 2) => LongType::ZeroRtt,
        (false, 2) | (true, 3) => LongType::Handshake,
        _ => LongType::Retry,
    }
}

/// The first `len` bytes after a short header's first byte: its
/// destination connection ID if the receiver's IDs are `len` long.
pub fn short_dcid(rest: &[u8], len: usize) -> Option<&[u8]> {
    rest.get(..len)
}

#[cfg(test)]
#[path = "header_tests.rs"]
mod tests;
