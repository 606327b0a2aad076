//! `[listeners.quic.quic_lb]`: every connection ID this endpoint issues is
//! a QUIC-LB plaintext ID carrying the configured server ID, so a
//! QUIC-LB-aware L4 balancer in front (Mode A of another gateway, Katran)
//! routes every packet of an established connection to this instance
//! without state, even after a client migrates to an ID it never saw.

use std::time::Duration;

use eg_balancer::quic_lb::QuicLbFormat;
use eg_config::{parse_hex, QuicLbIssue};
use quinn::{ConnectionId, ConnectionIdGenerator};
use ring::rand::{SecureRandom, SystemRandom};

use crate::endpoint::QuicError;

/// Issues QUIC-LB IDs: the server ID, then a nonce from the system
/// random source (IDs must not let observers link a connection's IDs).
struct Generator {
    format: QuicLbFormat,
    server_id: Vec<u8>,
    rng: SystemRandom,
}

impl ConnectionIdGenerator for Generator {
    fn generate_cid(&mut self) -> ConnectionId {
        let mut nonce = [0u8; 20];
        let nonce = nonce.get_mut(..self.format.nonce_len).unwrap_or_default();
        // No randomness means a zero nonce: unique IDs are then not
        // guaranteed, but the process goes on (ring never fails on Linux).
        let _ = self.rng.fill(nonce);
        ConnectionId::new(&self.format.encode(&self.server_id, nonce))
    }

    fn cid_len(&self) -> usize {
        self.format.cid_len()
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Make `endpoint` issue QUIC-LB IDs as `lb` (validated) says.
pub fn install(
    endpoint: &mut quinn::EndpointConfig,
    lb: &QuicLbIssue,
    path: &str,
) -> Result<(), QuicError> {
    let server_id = parse_hex(&lb.server_id).ok_or_else(|| QuicError::Invalid {
        path: format!("{path}.quic.quic_lb.server_id"),
        reason: "not hex".into(),
    })?;
    let format = QuicLbFormat {
        config_rotation: lb.config_rotation,
        server_id_len: server_id.len(),
        nonce_len: usize::from(lb.nonce_len),
    };
    endpoint.cid_generator(move || {
        Box::new(Generator {
            format,
            server_id: server_id.clone(),
            rng: SystemRandom::new(),
        })
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_ids_carry_the_server_id_and_differ() {
        let mut g = Generator {
            format: QuicLbFormat {
                config_rotation: 2,
                server_id_len: 3,
                nonce_len: 8,
            },
            server_id: vec![1, 2, 3],
            rng: SystemRandom::new(),
        };
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_eq!(a.len(), 12);
        assert_ne!(a, b);
        assert_eq!(g.format.server_id(&a), Some(&[1, 2, 3][..]));
    }
}
