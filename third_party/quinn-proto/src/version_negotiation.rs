//! Compatible version negotiation (RFC 9368) between QUIC v1 and v2 (RFC 9369)
//!
//! ExpressGateway patch (see `PATCHES.md`): the version_information transport parameter,
//! and the server's choice of the negotiated version from the client's first flight.

use bytes::{Buf, BufMut, Bytes};

use crate::{
    VERSION_1, VERSION_2,
    coding::BufMutExt,
    frame::{self, Frame},
    transport_parameters::Error,
};

/// Transport parameter id of version_information (RFC 9368 §5)
pub(crate) const VERSION_INFORMATION_ID: u64 = 0x11;

/// How many of a peer's Available Versions are kept
///
/// `TransportParameters` is `Copy`, so the list lives in a fixed array. A peer listing more
/// versions than this is still validated over its whole list; only the first ones are kept,
/// which is plenty to find v1 and v2 (real stacks list two to five).
const MAX_AVAILABLE_VERSIONS: usize = 16;

/// The version_information transport parameter (RFC 9368 §5)
#[derive(Debug, Copy, Clone, Eq, PartialEq)]
pub(crate) struct VersionInformation {
    /// The version the sender has chosen for this connection
    pub(crate) chosen: u32,
    available: [u32; MAX_AVAILABLE_VERSIONS],
    available_len: u8,
}

impl VersionInformation {
    /// `available` beyond `MAX_AVAILABLE_VERSIONS` is dropped
    pub(crate) fn new(chosen: u32, available: &[u32]) -> Self {
        let mut this = Self {
            chosen,
            available: [0; MAX_AVAILABLE_VERSIONS],
            available_len: 0,
        };
        for &v in available.iter().take(MAX_AVAILABLE_VERSIONS) {
            this.available[usize::from(this.available_len)] = v;
            this.available_len += 1;
        }
        this
    }

    /// The sender's Available Versions, in its order of preference
    pub(crate) fn available(&self) -> &[u32] {
        &self.available[..usize::from(self.available_len)]
    }

    pub(crate) fn write<W: BufMut>(&self, w: &mut W) {
        w.write_var(VERSION_INFORMATION_ID);
        w.write_var(4 * (1 + self.available().len() as u64));
        w.write(self.chosen);
        for &v in self.available() {
            w.write(v);
        }
    }

    /// Decode the `len` bytes of a version_information value
    ///
    /// A zero version, or a length that is not a whole number of versions, is a parsing failure
    /// (RFC 9368 §5); so is a client whose Chosen Version is missing from its Available Versions.
    pub(crate) fn read<R: Buf>(r: &mut R, len: usize, from_client: bool) -> Result<Self, Error> {
        if len < 4 || len % 4 != 0 || r.remaining() < len {
            return Err(Error::Malformed);
        }
        let chosen = r.get_u32();
        let mut this = Self::new(chosen, &[]);
        let mut chosen_listed = false;
        for _ in 1..len / 4 {
            let v = r.get_u32();
            if v == 0 {
                return Err(Error::IllegalValue);
            }
            chosen_listed |= v == chosen;
            if usize::from(this.available_len) < MAX_AVAILABLE_VERSIONS {
                this.available[usize::from(this.available_len)] = v;
                this.available_len += 1;
            }
        }
        if chosen == 0 || (from_client && !chosen_listed) {
            return Err(Error::IllegalValue);
        }
        Ok(this)
    }
}

/// Versions a first flight of `original` can be converted to, best first (RFC 9369 §4)
fn compatible_with(original: u32) -> &'static [u32] {
    match original {
        VERSION_1 => &[VERSION_2, VERSION_1],
        VERSION_2 => &[VERSION_2, VERSION_1],
        _ => &[],
    }
}

/// The other version a client starting in `original` offers the server (RFC 9368 §2.3)
pub(crate) fn client_offer(original: u32, supported: &[u32]) -> Option<u32> {
    compatible_with(original)
        .iter()
        .copied()
        .find(|v| *v != original && supported.contains(v))
}

/// The version a server answers a first flight of `original` with
///
/// We prefer v2 to v1: with both on offer, v2 exercises the version-agnostic paths middleboxes
/// must not ossify on (RFC 9369 §1). No version_information, or one whose Chosen Version is
/// not `original` (refused later with VERSION_NEGOTIATION_ERROR), keeps `original`.
pub(crate) fn server_choice(
    original: u32,
    client: Option<&VersionInformation>,
    supported: &[u32],
) -> u32 {
    let Some(client) = client.filter(|c| c.chosen == original) else {
        return original;
    };
    compatible_with(original)
        .iter()
        .copied()
        .find(|v| supported.contains(v) && client.available().contains(v))
        .unwrap_or(original)
}

/// The version_information of the ClientHello in a decrypted first Initial payload, if the
/// server may act on it
///
/// `None` when the ClientHello is not whole in this packet (a large ClientHello spans several
/// Initials), or when it asks for early data: the server then stays on the client's version,
/// which RFC 9368 §2.3 allows. Early data is the client's 0-RTT packets, sent in its version
/// and keyed for it; switching would throw them away.
pub(crate) fn client_version_information(payload: Bytes) -> Option<VersionInformation> {
    let mut chunks = Vec::new();
    for frame in frame::Iter::new(payload).ok()? {
        if let Frame::Crypto(c) = frame.ok()? {
            chunks.push((c.offset, c.data));
        }
    }
    chunks.sort_by_key(|(offset, _)| *offset);
    let mut hello = Vec::new();
    for (offset, data) in chunks {
        let start = usize::try_from(offset).ok()?;
        if start > hello.len() {
            break;
        }
        let skip = hello.len() - start;
        if skip < data.len() {
            hello.extend_from_slice(&data[skip..]);
        }
    }
    client_hello_version_information(&hello)
}

/// TLS extension carrying QUIC transport parameters (RFC 9001 §8.2)
const QUIC_TRANSPORT_PARAMETERS_EXT: u16 = 0x39;
/// TLS early_data extension (RFC 8446 §4.2.10)
const EARLY_DATA_EXT: u16 = 0x2a;

fn client_hello_version_information(mut b: &[u8]) -> Option<VersionInformation> {
    // Handshake { msg_type = client_hello (1), length (24) } (RFC 8446 §4)
    if b.first() != Some(&1) {
        return None;
    }
    let len =
        usize::from(*b.get(1)?) << 16 | usize::from(*b.get(2)?) << 8 | usize::from(*b.get(3)?);
    b = b.get(4..4 + len)?;
    // legacy_version (2), random (32)
    b = b.get(34..)?;
    let session_id = usize::from(*b.first()?);
    b = b.get(1 + session_id..)?;
    let suites = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    b = b.get(2 + suites..)?;
    let compression = usize::from(*b.first()?);
    b = b.get(1 + compression..)?;
    let ext_len = usize::from(u16::from_be_bytes([*b.first()?, *b.get(1)?]));
    let mut exts = b.get(2..2 + ext_len)?;
    let mut found = None;
    while exts.len() >= 4 {
        let ty = u16::from_be_bytes([exts[0], exts[1]]);
        let len = usize::from(u16::from_be_bytes([exts[2], exts[3]]));
        let data = exts.get(4..4 + len)?;
        match ty {
            EARLY_DATA_EXT => return None,
            QUIC_TRANSPORT_PARAMETERS_EXT => found = params_version_information(data),
            _ => {}
        }
        exts = &exts[4 + len..];
    }
    found
}

fn params_version_information(mut r: &[u8]) -> Option<VersionInformation> {
    use crate::coding::BufExt;
    while r.has_remaining() {
        let id = r.get_var().ok()?;
        let len = usize::try_from(r.get_var().ok()?).ok()?;
        if r.remaining() < len {
            return None;
        }
        if id == VERSION_INFORMATION_ID {
            return VersionInformation::read(&mut r, len, true).ok();
        }
        r.advance(len);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(vi: &VersionInformation) -> Vec<u8> {
        let mut buf = Vec::new();
        vi.write(&mut buf);
        // strip the id and length varints (one byte each here)
        buf.split_off(2)
    }

    #[test]
    fn version_information_round_trip() {
        let vi = VersionInformation::new(VERSION_1, &[VERSION_1, VERSION_2]);
        let mut buf = Vec::new();
        vi.write(&mut buf);
        assert_eq!(
            buf,
            [0x11, 12, 0, 0, 0, 1, 0, 0, 0, 1, 0x6b, 0x33, 0x43, 0xcf]
        );
        let body = encode(&vi);
        let back = VersionInformation::read(&mut &body[..], body.len(), true).unwrap();
        assert_eq!(back, vi);
        assert_eq!(back.available(), &[VERSION_1, VERSION_2]);
    }

    #[test]
    fn version_information_refuses_malformed() {
        // not a whole number of versions
        assert!(VersionInformation::read(&mut &[0, 0, 0, 1, 0][..], 5, true).is_err());
        // empty
        assert!(VersionInformation::read(&mut &[][..], 0, true).is_err());
        // zero chosen version
        assert!(VersionInformation::read(&mut &[0, 0, 0, 0, 0, 0, 0, 1][..], 8, true).is_err());
        // zero available version
        assert!(VersionInformation::read(&mut &[0, 0, 0, 1, 0, 0, 0, 0][..], 8, true).is_err());
        // client whose chosen version is not in its available versions
        let body = encode(&VersionInformation::new(VERSION_1, &[VERSION_2]));
        assert!(VersionInformation::read(&mut &body[..], body.len(), true).is_err());
        // a server may list versions without its chosen one (RFC 9368 §5 asks it of clients)
        assert!(VersionInformation::read(&mut &body[..], body.len(), false).is_ok());
        // shorter than its stated length
        assert!(VersionInformation::read(&mut &[0, 0, 0, 1][..], 8, true).is_err());
    }

    #[test]
    fn long_lists_are_validated_whole_and_kept_bounded() {
        let mut list: Vec<u32> = (0x1a2a_3a01..0x1a2a_3a01 + 30).collect();
        list.push(VERSION_1);
        // `new` truncates to the bound, so build the wire form by hand
        assert_eq!(
            VersionInformation::new(VERSION_1, &list).available().len(),
            MAX_AVAILABLE_VERSIONS
        );
        let mut wire = VERSION_1.to_be_bytes().to_vec();
        for v in &list {
            wire.extend_from_slice(&v.to_be_bytes());
        }
        let vi = VersionInformation::read(&mut &wire[..], wire.len(), true).unwrap();
        assert_eq!(vi.available().len(), MAX_AVAILABLE_VERSIONS);
        // a zero anywhere in the list is refused, even past the kept part
        let mut zero = wire.clone();
        zero.extend_from_slice(&[0, 0, 0, 0]);
        assert!(VersionInformation::read(&mut &zero[..], zero.len(), true).is_err());
    }

    #[test]
    fn server_moves_v1_client_offering_v2() {
        let supported = crate::DEFAULT_SUPPORTED_VERSIONS;
        let offers_v2 = VersionInformation::new(VERSION_1, &[VERSION_1, VERSION_2]);
        assert_eq!(
            server_choice(VERSION_1, Some(&offers_v2), supported),
            VERSION_2
        );
        let v1_only = VersionInformation::new(VERSION_1, &[VERSION_1]);
        assert_eq!(
            server_choice(VERSION_1, Some(&v1_only), supported),
            VERSION_1
        );
        assert_eq!(server_choice(VERSION_1, None, supported), VERSION_1);
        // a server without v2 stays on v1
        assert_eq!(
            server_choice(VERSION_1, Some(&offers_v2), &[VERSION_1]),
            VERSION_1
        );
        // a chosen version other than the packet's is not acted on
        let lying = VersionInformation::new(VERSION_2, &[VERSION_2]);
        assert_eq!(server_choice(VERSION_1, Some(&lying), supported), VERSION_1);
        // a v2 client stays on v2
        let v2 = VersionInformation::new(VERSION_2, &[VERSION_2, VERSION_1]);
        assert_eq!(server_choice(VERSION_2, Some(&v2), supported), VERSION_2);
        // drafts are not compatible with v2
        let draft = VersionInformation::new(0xff00_001d, &[0xff00_001d, VERSION_2]);
        assert_eq!(
            server_choice(0xff00_001d, Some(&draft), supported),
            0xff00_001d
        );
    }

    /// A ClientHello carrying `params` as its quic_transport_parameters, in CRYPTO frames
    /// split at `split` and delivered out of order
    fn first_flight(params: &[u8], split: usize) -> Bytes {
        first_flight_with(params, split, false)
    }

    fn first_flight_with(params: &[u8], split: usize, early_data: bool) -> Bytes {
        let mut exts = Vec::new();
        if early_data {
            exts.extend_from_slice(&EARLY_DATA_EXT.to_be_bytes());
            exts.extend_from_slice(&0u16.to_be_bytes());
        }
        exts.extend_from_slice(&0x002bu16.to_be_bytes()); // supported_versions
        exts.extend_from_slice(&3u16.to_be_bytes());
        exts.extend_from_slice(&[2, 3, 4]);
        exts.extend_from_slice(&QUIC_TRANSPORT_PARAMETERS_EXT.to_be_bytes());
        exts.extend_from_slice(&(params.len() as u16).to_be_bytes());
        exts.extend_from_slice(params);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0]); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hello = vec![1];
        hello.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hello.extend_from_slice(&body);

        let mut payload = Vec::new();
        let (a, b) = hello.split_at(split);
        frame::Crypto {
            offset: split as u64,
            data: Bytes::copy_from_slice(b),
        }
        .encode(&mut payload);
        frame::Crypto {
            offset: 0,
            data: Bytes::copy_from_slice(a),
        }
        .encode(&mut payload);
        payload.extend_from_slice(&[0; 20]); // PADDING
        payload.into()
    }

    #[test]
    fn finds_version_information_in_client_hello() {
        let vi = VersionInformation::new(VERSION_1, &[VERSION_1, VERSION_2]);
        let mut params = vec![0x01, 0x02, 0x40, 0x64]; // max_idle_timeout 100
        vi.write(&mut params);
        let got = client_version_information(first_flight(&params, 30)).unwrap();
        assert_eq!(got, vi);
        // without version_information
        assert!(client_version_information(first_flight(&[0x01, 0x01, 0x05], 30)).is_none());
        // asking for 0-RTT, which is bound to the client's version
        assert!(client_version_information(first_flight_with(&params, 30, true)).is_none());
    }

    #[test]
    fn partial_client_hello_is_not_guessed_at() {
        let vi = VersionInformation::new(VERSION_1, &[VERSION_1, VERSION_2]);
        let mut params = Vec::new();
        vi.write(&mut params);
        let whole = first_flight(&params, 30);
        // drop the first CRYPTO frame (the tail of the hello) by truncating the payload
        let mut only_tail = Vec::new();
        for f in frame::Iter::new(whole).unwrap() {
            if let Ok(Frame::Crypto(c)) = f {
                if c.offset != 0 {
                    c.encode(&mut only_tail);
                }
            }
        }
        assert!(client_version_information(only_tail.into()).is_none());
        // garbage is not a ClientHello
        assert!(client_version_information(Bytes::from_static(&[0x06, 0, 3, 1, 2, 3])).is_none());
    }
}
