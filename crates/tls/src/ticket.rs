//! Session-ticket keys that rotate every `ticket_rotation_interval_seconds`
//! and keep decrypting the previous key for `ticket_rotation_overlap_seconds`.
//! rustls' own rotator ties the overlap to the interval and keeps its AEAD
//! ticketer private, hence this small one.

use std::sync::RwLock;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;

use crate::TlsError;

const KEY_NAME_LEN: usize = 16;

/// One ticket key: `key_name || nonce || ciphertext+tag`.
struct TicketKey {
    name: [u8; KEY_NAME_LEN],
    key: LessSafeKey,
}

impl TicketKey {
    fn generate(rng: &SystemRandom) -> Result<Self, TlsError> {
        let mut secret = [0u8; 32];
        let mut name = [0u8; KEY_NAME_LEN];
        rng.fill(&mut secret)
            .and_then(|()| rng.fill(&mut name))
            .map_err(|_| TlsError::Verifier("no system randomness for ticket keys".into()))?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &secret)
            .map_err(|_| TlsError::Verifier("ticket key setup failed".into()))?;
        Ok(Self {
            name,
            key: LessSafeKey::new(key),
        })
    }

    fn encrypt(&self, rng: &SystemRandom, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(KEY_NAME_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&self.name);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&self.name),
                &mut body,
            )
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (name, rest) = ticket.split_at_checked(KEY_NAME_LEN)?;
        if name != self.name {
            return None;
        }
        let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(name), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

struct Keys {
    current: TicketKey,
    rotate_at: u64,
    previous: Option<(TicketKey, u64)>,
}

pub struct SessionTicketer {
    rng: SystemRandom,
    interval: u64,
    overlap: u64,
    keys: RwLock<Keys>,
}

impl std::fmt::Debug for SessionTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionTicketer")
            .field("interval", &self.interval)
            .field("overlap", &self.overlap)
            .finish()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The listener's ticket keys from the generation a reload replaces (same
/// listener, same rotation settings), so clients keep resuming; new ones
/// otherwise.
pub fn carried_ticketer(
    carry: &eg_runtime::Carry,
    listener_path: &str,
    interval: u64,
    overlap: u64,
) -> Result<std::sync::Arc<SessionTicketer>, TlsError> {
    carry.try_get_or_make(format!("{listener_path}\0{interval}\0{overlap}"), || {
        SessionTicketer::new(interval, overlap)
    })
}

impl SessionTicketer {
    pub fn new(interval: u64, overlap: u64) -> Result<Self, TlsError> {
        let rng = SystemRandom::new();
        let current = TicketKey::generate(&rng)?;
        Ok(Self {
            keys: RwLock::new(Keys {
                current,
                rotate_at: now_secs().saturating_add(interval),
                previous: None,
            }),
            rng,
            interval,
            overlap,
        })
    }

    fn maybe_rotate(&self, now: u64) {
        let due = self
            .keys
            .read()
            .map(|k| now >= k.rotate_at)
            .unwrap_or(false);
        if !due {
            return;
        }
        let Ok(fresh) = TicketKey::generate(&self.rng) else {
            return;
        };
        if let Ok(mut keys) = self.keys.write() {
            if now >= keys.rotate_at {
                let old = std::mem::replace(&mut keys.current, fresh);
                keys.previous = Some((old, now.saturating_add(self.overlap)));
                keys.rotate_at = now.saturating_add(self.interval);
            }
        }
    }
}

impl ProducesTickets for SessionTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.interval.saturating_add(self.overlap)).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.maybe_rotate(now_secs());
        let keys = self.keys.read().ok()?;
        keys.current.encrypt(&self.rng, plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let now = now_secs();
        self.maybe_rotate(now);
        let keys = self.keys.read().ok()?;
        keys.current.decrypt(cipher).or_else(|| {
            keys.previous
                .as_ref()
                .filter(|(_, retire_at)| now < *retire_at)
                .and_then(|(key, _)| key.decrypt(cipher))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_overlap() {
        let t = SessionTicketer::new(60, 30).expect("ticketer");
        let sealed = t.encrypt(b"session").expect("sealed");
        assert_eq!(t.decrypt(&sealed).as_deref(), Some(&b"session"[..]));
        // Force a rotation: the old key still opens during the overlap.
        t.maybe_rotate(now_secs() + 61);
        assert_eq!(t.decrypt(&sealed).as_deref(), Some(&b"session"[..]));
        let fresh = t.encrypt(b"again").expect("sealed");
        assert_ne!(fresh[..KEY_NAME_LEN], sealed[..KEY_NAME_LEN]);
        // Tampered or truncated tickets are refused, never a panic.
        let mut bad = sealed.clone();
        if let Some(b) = bad.last_mut() {
            *b ^= 1;
        }
        assert!(t.decrypt(&bad).is_none());
        assert!(t.decrypt(&sealed[..5]).is_none());
    }
}
