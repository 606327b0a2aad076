//! Header rewriting between client and backend: hop-by-hop removal and the
//! forwarding headers.

use std::net::IpAddr;

use http::header::{
    CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRANSFER_ENCODING, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Version};

/// RFC 9110 §7.6.1 hop-by-hop fields, plus the legacy ones proxies drop.
/// Names, not strings: a lookup by `&str` parses and classifies the name
/// every time, on every request.
const HOP_BY_HOP_COUNT: usize = 8;
static HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    PROXY_AUTHENTICATE,
    PROXY_AUTHORIZATION,
    TE,
    TRANSFER_ENCODING,
    UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static VIA: HeaderName = HeaderName::from_static("via");

/// Remove hop-by-hop headers, including every name listed in `Connection`.
/// `TE: trailers` survives: it is how gRPC asks for trailers end to end.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none, or only `Connection: keep-alive`: one pass
    // over the names, comparing interned names, notes which are present,
    // so only those cost a hashed removal.
    // One bit per HOP_BY_HOP entry (8 of them: a u8).
    const _: () = assert!(HOP_BY_HOP_COUNT <= u8::BITS as usize);
    let mut present = 0u8;
    for key in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == key) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        // `keep-alive`, the usual entry, goes with the fixed set below.
        .filter(|name| !name.eq_ignore_ascii_case("keep-alive"))
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect();
    let wants_trailers = headers
        .get_all(TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    for name in listed {
        headers.remove(name);
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if wants_trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

/// Add `X-Forwarded-For/-Proto/-Host` and `Via` to a request going upstream.
/// `client` is the peer address as a header value, formatted once per
/// connection (`ConnInfo::forwarded_for`).
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    tls: bool,
    host: Option<&str>,
    version: Version,
) {
    let xff = match headers.get(&X_FORWARDED_FOR) {
        Some(prior) => {
            let mut joined = Vec::with_capacity(prior.len() + 2 + client.len());
            joined.extend_from_slice(prior.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client.as_bytes());
            HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    let proto = if tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
    // The client's own Host field, when it is the authority, is shared
    // rather than copied.
    let same_host = headers
        .get(HOST)
        .filter(|v| Some(v.as_bytes()) == host.map(str::as_bytes))
        .cloned();
    if let Some(v) = same_host.or_else(|| host.and_then(|h| HeaderValue::from_str(h).ok())) {
        headers.insert(X_FORWARDED_HOST.clone(), v);
    }
    append_via(headers, version);
}

/// The peer address as `X-Forwarded-For` carries it.
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    // An IP address is always a valid header value; the fallback is
    // never taken but keeps this free of panics.
    HeaderValue::from_str(&client.to_string()).unwrap_or(HeaderValue::from_static("unknown"))
}

/// `Via: <version> expressgateway`, appended to any prior hops.
pub fn append_via(headers: &mut HeaderMap, version: Version) {
    let hop = match version {
        Version::HTTP_10 => "1.0 expressgateway",
        Version::HTTP_2 => "2 expressgateway",
        Version::HTTP_3 => "3 expressgateway",
        _ => "1.1 expressgateway",
    };
    headers.append(VIA.clone(), HeaderValue::from_static(hop));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_listed_names_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        h.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        strip_hop_by_hop(&mut h);
        assert!(
            !h.contains_key("x-secret")
                && !h.contains_key("keep-alive")
                && !h.contains_key("connection")
        );
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(h.contains_key("traceparent"));
    }

    #[test]
    fn each_fixed_hop_by_hop_name_goes_alone_or_with_the_others() {
        for only in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.append(only.clone(), HeaderValue::from_static("1"));
            h.append(only.clone(), HeaderValue::from_static("2"));
            h.insert("x-kept", HeaderValue::from_static("1"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(only), "{only} kept");
            assert!(h.contains_key("x-kept"));
        }
        let mut h = HeaderMap::new();
        for name in &HOP_BY_HOP {
            h.insert(name.clone(), HeaderValue::from_static("x"));
        }
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "left: {h:?}");
    }

    #[test]
    fn forwarding_headers_append() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        add_forwarding(
            &mut h,
            &forwarded_for("127.0.0.1".parse().expect("ip")),
            true,
            Some("example.com"),
            Version::HTTP_2,
        );
        assert_eq!(
            h.get("x-forwarded-for").map(|v| v.as_bytes()),
            Some(&b"192.0.2.1, 127.0.0.1"[..])
        );
        assert_eq!(
            h.get("x-forwarded-proto").map(|v| v.as_bytes()),
            Some(&b"https"[..])
        );
        assert_eq!(
            h.get("via").map(|v| v.as_bytes()),
            Some(&b"2 expressgateway"[..])
        );
    }
}
