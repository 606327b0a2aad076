//! Keys a pool's policy uses: the configured hash key (header, cookie or
//! client IP) and the session-affinity cookie.

use eg_balancer::{BackendState, Pool};
use eg_config::HashSource;
use http::header::{HeaderValue, COOKIE, SET_COOKIE};
use http::HeaderMap;

/// What the request offers the balancer.
#[derive(Debug, Default, Clone, Copy)]
pub struct Keys {
    pub hash: Option<u64>,
    /// Backend id named by a valid affinity cookie.
    pub affinity: Option<u64>,
}

pub fn keys(pool: &Pool, headers: &HeaderMap) -> Keys {
    let hash = pool.hash_key.as_ref().and_then(|k| {
        let name = k.name.as_deref()?;
        match k.source {
            HashSource::Header => headers
                .get(name)
                .map(|v| eg_balancer::hash::hash_bytes(v.as_bytes())),
            HashSource::Cookie => {
                cookie(headers, name).map(|v| eg_balancer::hash::hash_bytes(v.as_bytes()))
            }
            // The client IP is the balancer's own fallback; no CID on HTTP.
            HashSource::Ip | HashSource::Cid => None,
        }
    });
    let affinity = pool
        .affinity_cookie
        .as_ref()
        .and_then(|(name, _)| cookie(headers, name))
        .and_then(|v| u64::from_str_radix(v, 16).ok());
    Keys { hash, affinity }
}

/// The value of cookie `name`, from any `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Pin the client to `backend` when the pool uses session affinity and
/// the request did not already carry the right cookie.
pub fn set_cookie(pool: &Pool, keys: &Keys, backend: &BackendState, headers: &mut HeaderMap) {
    let Some((name, ttl)) = &pool.affinity_cookie else {
        return;
    };
    if keys.affinity == Some(backend.id) {
        return;
    }
    let value = format!(
        "{name}={:016x}; Path=/; Max-Age={ttl}; HttpOnly",
        backend.id
    );
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.append(SET_COOKIE, v);
    }
}
