//! Pools: backends, policy keys, health, outlier, retry settings.

use std::net::SocketAddr;

use super::{Findings, MAX_TIMEOUT_MS};
use crate::{
    Backend, BackendProtocol, HashSource, HealthCheck, HealthCheckKind, LbPolicy, PoolSpec,
    MAX_WEIGHT,
};

/// Which datapath a pool serves: limits its backend protocols and keys.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum PoolUse {
    L4,
    Http,
    Any,
}

pub(super) fn check_pool(f: &mut Findings, p: &str, pool: &PoolSpec, used_by: PoolUse) {
    for (j, b) in pool.backends.iter().enumerate() {
        check_backend(f, &format!("{p}.backends[{j}]"), b, used_by);
    }
    if let Some(cb) = &pool.circuit_breaker {
        let cp = format!("{p}.circuit_breaker");
        if used_by == PoolUse::L4 {
            f.fail(
                cp.clone(),
                "(present)",
                "the circuit breaker caps HTTP upstreams; L4 listeners bound relays with \
                 runtime.max_inflight_connections and per_ip_connection_cap",
            );
        }
        f.range(
            format!("{cp}.max_connections"),
            cb.max_connections,
            1,
            1_000_000,
        );
        f.range(format!("{cp}.max_requests"), cb.max_requests, 1, 1_000_000);
        f.range(
            format!("{cp}.max_pending_requests"),
            cb.max_pending_requests,
            0,
            1_000_000,
        );
    }
    if let Some(cp) = &pool.connection_pool {
        let pp = format!("{p}.connection_pool");
        if used_by == PoolUse::L4 {
            f.fail(
                pp.clone(),
                "(present)",
                "the connection pool keeps HTTP upstream connections; an L4 relay dials one \
                 backend connection per client connection",
            );
        }
        f.range(
            format!("{pp}.idle_timeout_ms"),
            cp.idle_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        );
        f.range(
            format!("{pp}.max_idle_per_backend"),
            cp.max_idle_per_backend,
            0,
            65_536,
        );
        f.range(
            format!("{pp}.max_h2_connections_per_backend"),
            cp.max_h2_connections_per_backend,
            1,
            64,
        );
    }
    let policy = pool.lb_policy;
    if used_by == PoolUse::L4 && policy == LbPolicy::SessionAffinity {
        f.fail(
            format!("{p}.lb_policy"),
            policy.as_str(),
            "session_affinity needs HTTP cookies; not available on L4 listeners",
        );
    }
    if let Some(k) = &pool.hash_key {
        match k.source {
            HashSource::Header | HashSource::Cookie => {
                if k.name.as_deref().is_none_or(str::is_empty) {
                    f.fail(
                        format!("{p}.hash_key.name"),
                        "(missing)",
                        "header and cookie hash keys need a name",
                    );
                }
                if used_by == PoolUse::L4 {
                    f.fail(
                        format!("{p}.hash_key.source"),
                        "header/cookie",
                        "L4 listeners can hash only the source ip",
                    );
                }
            }
            HashSource::Cid if used_by != PoolUse::Any => {
                f.fail(
                    format!("{p}.hash_key.source"),
                    "cid",
                    "the connection ID is a key only for QUIC passthrough pools",
                );
            }
            _ => {}
        }
    }
    if !is_prime(pool.maglev_table_size) || !(101..=16_777_259).contains(&pool.maglev_table_size) {
        f.fail(
            format!("{p}.maglev_table_size"),
            pool.maglev_table_size,
            "a prime between 101 and 16777259",
        );
    }
    if let Some(h) = &pool.health_check {
        let hp = format!("{p}.health_check");
        check_health(f, &hp, h);
        check_probe_fits(f, &hp, h, pool, used_by);
    }
    if let Some(o) = &pool.outlier_detection {
        let op = format!("{p}.outlier_detection");
        f.range(
            format!("{op}.consecutive_failures"),
            o.consecutive_failures,
            1,
            1000,
        );
        f.range(
            format!("{op}.base_ejection_ms"),
            o.base_ejection_ms,
            1,
            MAX_TIMEOUT_MS,
        );
        f.range(
            format!("{op}.max_ejection_ms"),
            o.max_ejection_ms,
            o.base_ejection_ms.max(1),
            MAX_TIMEOUT_MS,
        );
        f.range(
            format!("{op}.max_ejection_percent"),
            o.max_ejection_percent,
            0,
            100,
        );
    }
    if let Some(s) = &pool.slow_start {
        f.range(
            format!("{p}.slow_start.window_ms"),
            s.window_ms,
            0,
            MAX_TIMEOUT_MS,
        );
    }
    if let Some(r) = &pool.retry {
        f.range(format!("{p}.retry.attempts"), r.attempts, 0, 10);
        f.range(
            format!("{p}.retry.budget_percent"),
            r.budget_percent,
            0,
            100,
        );
        f.range(
            format!("{p}.retry.min_retries_per_second"),
            r.min_retries_per_second,
            0,
            100_000,
        );
        for (k, s) in r.on_status.iter().enumerate() {
            f.range(format!("{p}.retry.on_status[{k}]"), *s, 100, 599);
        }
    }
    if let Some(a) = &pool.session_affinity {
        let ap = format!("{p}.session_affinity");
        if a.cookie_name.is_empty() || !a.cookie_name.bytes().all(is_token_byte) {
            f.fail(
                format!("{ap}.cookie_name"),
                &a.cookie_name,
                "a valid cookie name",
            );
        }
        if a.fallback == LbPolicy::SessionAffinity {
            f.fail(
                format!("{ap}.fallback"),
                a.fallback.as_str(),
                "the fallback must be another policy",
            );
        }
    }
}

fn check_backend(f: &mut Findings, p: &str, b: &Backend, used_by: PoolUse) {
    check_host_port(f, format!("{p}.address"), &b.address);
    f.range(format!("{p}.weight"), b.weight, 1, MAX_WEIGHT);
    match (used_by, b.protocol) {
        (PoolUse::L4, Some(proto)) if proto != BackendProtocol::Tcp => f.fail(
            format!("{p}.protocol"),
            proto.as_str(),
            "L4 listeners relay bytes: the backend protocol must be \"tcp\"",
        ),
        _ => {}
    }
    if let Some(ca) = &b.tls_ca_path {
        f.file(format!("{p}.tls_ca_path"), ca);
    }
}

/// A probe kind must be one the pool's backends can answer: gRPC health
/// needs HTTP/2 or HTTP/3, `https` a TLS backend (h3, or `tls = true`).
/// (`tcp` is a connect check in the backend's own transport: a QUIC
/// handshake for h3 backends.)
fn check_probe_fits(f: &mut Findings, p: &str, h: &HealthCheck, pool: &PoolSpec, used_by: PoolUse) {
    let default = if used_by == PoolUse::L4 {
        BackendProtocol::Tcp
    } else {
        BackendProtocol::H1
    };
    for b in &pool.backends {
        let protocol = b.protocol.unwrap_or(default);
        let unfit = match (h.kind, protocol) {
            (HealthCheckKind::Grpc, BackendProtocol::H1 | BackendProtocol::Tcp) => {
                Some("gRPC health needs HTTP/2 or HTTP/3 backends (protocol = \"h2\" or \"h3\")")
            }
            // HTTP/3 is always TLS; every other backend only with `tls = true`.
            (HealthCheckKind::Https, proto) if proto != BackendProtocol::H3 && !b.tls => Some(
                "an https probe needs a TLS backend: set tls = true on it, or use kind = \"http\"",
            ),
            _ => None,
        };
        if let Some(why) = unfit {
            f.fail(
                format!("{p}.kind"),
                format!(
                    "{:?} for {} backend {}",
                    h.kind,
                    protocol.as_str(),
                    b.address
                ),
                why,
            );
            return;
        }
    }
}

fn check_health(f: &mut Findings, p: &str, h: &HealthCheck) {
    f.range(
        format!("{p}.interval_ms"),
        h.interval_ms,
        100,
        MAX_TIMEOUT_MS,
    );
    f.range(
        format!("{p}.timeout_ms"),
        h.timeout_ms,
        1,
        h.interval_ms.max(1),
    );
    f.range(format!("{p}.rise"), h.rise, 1, 100);
    f.range(format!("{p}.fall"), h.fall, 1, 100);
    f.range(format!("{p}.jitter_percent"), h.jitter_percent, 0, 100);
    if !h.path.starts_with('/') {
        f.fail(format!("{p}.path"), &h.path, "must start with '/'");
    }
    if h.method.is_empty() || !h.method.bytes().all(is_token_byte) {
        f.fail(
            format!("{p}.method"),
            &h.method,
            "an HTTP method token such as GET or HEAD",
        );
    }
    if crate::StatusRanges::parse(&h.expected_status).is_none() {
        f.fail(
            format!("{p}.expected_status"),
            &h.expected_status,
            "codes or ranges 100-599, e.g. \"200-399\" or \"200,204\"",
        );
    }
}

pub(super) fn check_host_port(f: &mut Findings, path: String, addr: &str) {
    if addr.parse::<SocketAddr>().is_ok() {
        return;
    }
    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if !ok {
        f.fail(
            path,
            format!("{addr:?}"),
            "an address \"ip:port\" or \"hostname:port\"",
        );
    }
}

/// RFC 9110 token characters, used for header, method and cookie names.
pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}
