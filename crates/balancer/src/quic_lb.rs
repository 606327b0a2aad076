//! The QUIC-LB plaintext connection ID layout (draft-ietf-quic-load-
//! balancers): one octet of config rotation (3 bits) and length
//! self-description (5 bits: the length less one), the server ID, then a
//! nonce. The issuing server (our `quic` listener) and the router (Mode A)
//! share this one definition.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicLbFormat {
    /// 0-6 (7 marks IDs no balancer may route by).
    pub config_rotation: u8,
    pub server_id_len: usize,
    pub nonce_len: usize,
}

impl QuicLbFormat {
    /// Whole ID length: first octet, server ID, nonce.
    pub fn cid_len(&self) -> usize {
        1 + self.server_id_len + self.nonce_len
    }

    fn first_octet(&self) -> u8 {
        let len_bits = u8::try_from(self.cid_len() - 1).unwrap_or(0x1f) & 0x1f;
        (self.config_rotation << 5) | len_bits
    }

    /// An ID carrying `server_id` (of `server_id_len` bytes) and `nonce`.
    pub fn encode(&self, server_id: &[u8], nonce: &[u8]) -> Vec<u8> {
        let mut cid = Vec::with_capacity(self.cid_len());
        cid.push(self.first_octet());
        cid.extend(server_id.iter().copied().take(self.server_id_len));
        cid.extend(nonce.iter().copied().take(self.nonce_len));
        cid.resize(self.cid_len(), 0);
        cid
    }

    /// The server ID in `bytes` (an ID, or the rest of a short header
    /// that starts with one) when its first octet says this format.
    pub fn server_id<'a>(&self, bytes: &'a [u8]) -> Option<&'a [u8]> {
        let first = *bytes.first()?;
        if first != self.first_octet() || bytes.len() < self.cid_len() {
            return None;
        }
        bytes.get(1..1 + self.server_id_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: QuicLbFormat = QuicLbFormat {
        config_rotation: 1,
        server_id_len: 2,
        nonce_len: 8,
    };

    #[test]
    fn round_trip_and_foreign_ids() {
        let cid = F.encode(&[0xab, 0xcd], &[7; 8]);
        assert_eq!(cid.len(), 11);
        assert_eq!(cid[0], 0b001_01010);
        assert_eq!(F.server_id(&cid), Some(&[0xab, 0xcd][..]));
        let mut short_header_rest = cid.clone();
        short_header_rest.extend_from_slice(&[0; 30]);
        assert_eq!(F.server_id(&short_header_rest), Some(&[0xab, 0xcd][..]));
        let other_rotation = QuicLbFormat {
            config_rotation: 2,
            ..F
        };
        assert_eq!(other_rotation.server_id(&cid), None);
        assert_eq!(F.server_id(&cid[..5]), None);
        assert_eq!(F.server_id(&[]), None);
    }
}
