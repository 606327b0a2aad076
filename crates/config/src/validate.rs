//! Checks serde cannot express: ranges, cross-references, required and
//! forbidden sub-tables. Every finding names its key path.

use std::collections::HashSet;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;

use crate::{
    Backend, BackendProtocol, Config, HashSource, HealthCheck, Invalid, LbPolicy, Listener,
    ListenerProtocol, PoolSpec, MAX_WEIGHT,
};

/// Longest timeout any `_ms` key accepts: one day. Longer is a typo.
const MAX_TIMEOUT_MS: u64 = 86_400_000;

#[derive(Default)]
struct Findings(Vec<Invalid>);

impl Findings {
    fn fail(&mut self, path: impl Into<String>, value: impl Display, reason: impl Into<String>) {
        self.0.push(Invalid {
            path: path.into(),
            value: value.to_string(),
            reason: reason.into(),
        });
    }

    fn range<T: PartialOrd + Display + Copy>(&mut self, path: String, value: T, lo: T, hi: T) {
        if value < lo || value > hi {
            self.fail(path, value, format!("must be between {lo} and {hi}"));
        }
    }

    fn file(&mut self, path: String, file: &Path) {
        if !file.is_file() {
            self.fail(
                path,
                format!("{:?}", file.display().to_string()),
                "file does not exist or is not a regular file",
            );
        }
    }
}

impl Config {
    /// Every rule the types alone do not enforce; all findings, not the first.
    pub fn validate(&self) -> Result<(), Vec<Invalid>> {
        let mut f = Findings::default();
        if self.listeners.is_empty() && self.passthrough.is_none() {
            f.fail(
                "listeners",
                "[]",
                "at least one [[listeners]] entry (or a [passthrough] section) is required",
            );
        }
        let cluster_names = self.check_clusters(&mut f);
        let mut tcp_addrs = HashSet::new();
        let mut udp_addrs = HashSet::new();
        let mut labels = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let p = format!("listeners[{i}]");
            let taken = if l.protocol == ListenerProtocol::Quic {
                &mut udp_addrs
            } else {
                &mut tcp_addrs
            };
            if l.address.port() != 0 && !taken.insert(l.address) {
                f.fail(
                    format!("{p}.address"),
                    l.address,
                    "another listener already uses this address",
                );
            }
            if !labels.insert(l.label(i)) {
                f.fail(format!("{p}.name"), l.label(i), "listener names must be unique");
            }
            check_listener(&mut f, &p, l, i, &cluster_names);
        }
        if let Some(pt) = &self.passthrough {
            if !udp_addrs.insert(pt.bind_addr) && pt.bind_addr.port() != 0 {
                f.fail(
                    "passthrough.bind_addr",
                    pt.bind_addr,
                    "a quic listener already uses this address",
                );
            }
            match (&pt.cluster, pt.backends.is_empty()) {
                (Some(c), true) => {
                    if !cluster_names.contains(c.as_str()) {
                        f.fail("passthrough.cluster", c, "no [[clusters]] entry has this name");
                    }
                }
                (None, false) => {
                    for (j, b) in pt.backends.iter().enumerate() {
                        let bp = format!("passthrough.backends[{j}]");
                        check_host_port(&mut f, format!("{bp}.address"), b.address());
                        f.range(format!("{bp}.weight"), b.weight(), 1, MAX_WEIGHT);
                    }
                }
                _ => f.fail(
                    "passthrough.backends",
                    format!("{} entries", pt.backends.len()),
                    "set exactly one of `backends` and `cluster`",
                ),
            }
            f.range("passthrough.max_quic_connections".into(), pt.max_quic_connections, 1, 10_000_000);
            f.range("passthrough.min_client_dcid_len".into(), pt.min_client_dcid_len, 1, 20);
            f.range(
                "passthrough.max_dcid_len_routed".into(),
                pt.max_dcid_len_routed,
                pt.min_client_dcid_len.clamp(1, 20),
                20,
            );
            f.range("passthrough.per_flow_backlog".into(), pt.per_flow_backlog, 1, 1024);
            f.range("passthrough.flow_idle_timeout_ms".into(), pt.flow_idle_timeout_ms, 1000, MAX_TIMEOUT_MS);
        }
        self.check_globals(&mut f);
        if f.0.is_empty() {
            Ok(())
        } else {
            Err(f.0)
        }
    }

    fn check_clusters(&self, f: &mut Findings) -> HashSet<&str> {
        let mut names = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let p = format!("clusters[{i}]");
            if c.name.is_empty() {
                f.fail(format!("{p}.name"), "\"\"", "a cluster needs a non-empty name");
            } else if !names.insert(c.name.as_str()) {
                f.fail(format!("{p}.name"), &c.name, "cluster names must be unique");
            }
            if c.backends.is_empty() {
                f.fail(format!("{p}.backends"), "[]", "a cluster needs at least one backend");
            }
            check_pool(f, &p, &c.pool(), PoolUse::Any);
        }
        names
    }

    fn check_globals(&self, f: &mut Findings) {
        let r = &self.runtime;
        f.range("runtime.connect_timeout_ms".into(), r.connect_timeout_ms, 1, MAX_TIMEOUT_MS);
        f.range("runtime.handshake_timeout_ms".into(), r.handshake_timeout_ms, 1, MAX_TIMEOUT_MS);
        f.range("runtime.max_inflight_connections".into(), r.max_inflight_connections, 1, 10_000_000);
        f.range("runtime.per_ip_connection_cap".into(), r.per_ip_connection_cap, 1, 10_000_000);
        f.range("runtime.max_keepalive_requests".into(), r.max_keepalive_requests, 1, 1_000_000);
        f.range("runtime.max_requests_per_h3_connection".into(), r.max_requests_per_h3_connection, 1, 1_000_000);
        f.range("runtime.drain_timeout_ms".into(), r.drain_timeout_ms, 0, MAX_TIMEOUT_MS);
        f.range("runtime.readiness_settle_ms".into(), r.readiness_settle_ms, 0, MAX_TIMEOUT_MS);
        f.range("runtime.worker_threads".into(), r.worker_threads, 0, 1024);
        f.range("runtime.tcp_idle_timeout_ms".into(), r.tcp_idle_timeout_ms, 1, 7 * MAX_TIMEOUT_MS);
        if self.observability.access_log.trim().is_empty() {
            f.fail("observability.access_log", "\"\"", "use \"off\", \"stdout\" or a file path");
        }
        if let Some(hash) = &self.admin.api_token_hash {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                f.fail("admin.api_token_hash", hash, "must be 64 hex digits (a SHA-256)");
            }
        }
        if self.admin.allow_non_loopback && self.admin.api_token_hash.is_none() {
            f.fail(
                "admin.allow_non_loopback",
                true,
                "requires admin.api_token_hash: the admin API is never open off loopback",
            );
        }
        if let Some(bind) = self.observability.metrics_bind {
            if !bind.ip().is_loopback() && !self.admin.allow_non_loopback {
                f.fail(
                    "observability.metrics_bind",
                    bind,
                    "not a loopback address; set admin.allow_non_loopback (with a token) to allow it",
                );
            }
        }
    }
}

/// Which datapath a pool serves: limits its backend protocols and keys.
#[derive(Clone, Copy, PartialEq)]
enum PoolUse {
    L4,
    Http,
    Any,
}

fn check_listener(f: &mut Findings, p: &str, l: &Listener, index: usize, clusters: &HashSet<&str>) {
    use ListenerProtocol::*;
    let proto = l.protocol.as_str();
    let needs_tls = matches!(l.protocol, Tls | H1s);
    match (&l.tls, needs_tls) {
        (None, true) => f.fail(format!("{p}.tls"), "(missing)", format!("protocol \"{proto}\" requires a [listeners.tls] table")),
        (Some(_), false) => f.fail(format!("{p}.tls"), "(present)", format!("protocol \"{proto}\" does not take a [listeners.tls] table")),
        _ => {}
    }
    match (&l.quic, l.protocol == Quic) {
        (None, true) => f.fail(format!("{p}.quic"), "(missing)", "protocol \"quic\" requires a [listeners.quic] table"),
        (Some(_), false) => f.fail(format!("{p}.quic"), "(present)", format!("protocol \"{proto}\" does not take a [listeners.quic] table")),
        _ => {}
    }
    if l.alt_svc.is_some() && !matches!(l.protocol, H1 | H1s) {
        f.fail(format!("{p}.alt_svc"), "(present)", "only h1 and h1s listeners advertise Alt-Svc");
    }
    if let Some(a) = &l.alt_svc {
        f.range(format!("{p}.alt_svc.h3_port"), a.h3_port, 1, u16::MAX);
        f.range(format!("{p}.alt_svc.max_age"), a.max_age, 0, 31_536_000);
    }
    if let Some(t) = &l.tls {
        f.file(format!("{p}.tls.cert_path"), &t.cert_path);
        f.file(format!("{p}.tls.key_path"), &t.key_path);
        f.range(format!("{p}.tls.ticket_rotation_interval_seconds"), t.ticket_rotation_interval_seconds, 60, 7 * 86_400);
        f.range(format!("{p}.tls.ticket_rotation_overlap_seconds"), t.ticket_rotation_overlap_seconds, 0, 7 * 86_400);
        for (j, s) in t.sni.iter().enumerate() {
            if s.server_names.is_empty() {
                f.fail(format!("{p}.tls.sni[{j}].server_names"), "[]", "list at least one server name");
            }
            f.file(format!("{p}.tls.sni[{j}].cert_path"), &s.cert_path);
            f.file(format!("{p}.tls.sni[{j}].key_path"), &s.key_path);
        }
        if let Some(ca) = &t.client_ca_path {
            f.file(format!("{p}.tls.client_ca_path"), ca);
        } else if t.client_auth_optional {
            f.fail(format!("{p}.tls.client_auth_optional"), true, "requires tls.client_ca_path");
        }
    }
    let raw_proxy = l.quic.as_ref().and_then(|q| q.raw_proxy.as_ref());
    if let Some(q) = &l.quic {
        f.file(format!("{p}.quic.cert_path"), &q.cert_path);
        f.file(format!("{p}.quic.key_path"), &q.key_path);
        f.range(format!("{p}.quic.max_idle_timeout_ms"), q.max_idle_timeout_ms, 1, 600_000);
        f.range(format!("{p}.quic.max_recv_udp_payload_size"), q.max_recv_udp_payload_size, 1200, 65_527);
        f.range(format!("{p}.quic.retry_under_load_threshold"), q.retry_under_load_threshold, 1, 1_000_000);
        f.range(format!("{p}.quic.max_connections_per_ip"), q.max_connections_per_ip, 1, 1_000_000);
        if let Some(rp) = raw_proxy {
            let rpp = format!("{p}.quic.raw_proxy");
            match (&rp.backend_addr, &rp.cluster) {
                (Some(addr), None) => check_host_port(f, format!("{rpp}.backend_addr"), addr),
                (None, Some(c)) => {
                    if !clusters.contains(c.as_str()) {
                        f.fail(format!("{rpp}.cluster"), c, "no [[clusters]] entry has this name");
                    }
                }
                _ => f.fail(rpp.clone(), "", "set exactly one of `backend_addr` and `cluster`"),
            }
            if let Some(ca) = &rp.backend_ca_path {
                f.file(format!("{rpp}.backend_ca_path"), ca);
            }
            if rp.alpn.is_empty() || rp.alpn.iter().any(|a| a.is_empty() || a.len() > 255) {
                f.fail(format!("{rpp}.alpn"), format!("{:?}", rp.alpn), "list 1 or more protocol names of 1 to 255 bytes");
            }
            f.range(format!("{rpp}.dgram_queue_cap"), rp.dgram_queue_cap, 1, 65_536);
            f.range(format!("{rpp}.max_relay_streams"), rp.max_relay_streams, 1, 10_000);
        }
    }
    let pool_use = if l.protocol.is_l4() { PoolUse::L4 } else { PoolUse::Http };
    if l.protocol.is_l4() && !l.routes.is_empty() {
        f.fail(format!("{p}.routes"), "(present)", "L4 listeners relay bytes and cannot route; use an h1, h1s or quic listener");
    }
    let needs_default_pool = raw_proxy.is_none() && (l.routes.is_empty() || l.routes.iter().any(|r| r.cluster.is_none()));
    if needs_default_pool && l.backends.is_empty() {
        f.fail(format!("{p}.backends"), "[]", "this listener needs at least one backend (or routes that each name a cluster)");
    }
    for (j, r) in l.routes.iter().enumerate() {
        let rp = format!("{p}.routes[{j}]");
        if let Some(c) = &r.cluster {
            if !clusters.contains(c.as_str()) {
                f.fail(format!("{rp}.cluster"), c, "no [[clusters]] entry has this name");
            }
        }
        if let Some(h) = &r.host {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if bare.is_empty() || bare.contains('*') || bare.contains('/') || bare.contains(' ') {
                f.fail(format!("{rp}.host"), h, "an exact host or a \"*.suffix\" wildcard");
            }
        }
        if let Some(pp) = &r.path_prefix {
            if !pp.starts_with('/') {
                f.fail(format!("{rp}.path_prefix"), pp, "must start with '/'");
            }
        }
        if let Some(hm) = &r.header {
            if hm.name.is_empty() || !hm.name.bytes().all(is_token_byte) {
                f.fail(format!("{rp}.header.name"), &hm.name, "a valid HTTP header name");
            }
        }
    }
    check_pool(f, p, &l.default_pool(index), pool_use);
    check_http_limits(f, p, l);
}

fn check_http_limits(f: &mut Findings, p: &str, l: &Listener) {
    let h = &l.http;
    f.range(format!("{p}.http.header_timeout_ms"), h.header_timeout_ms, 1, MAX_TIMEOUT_MS);
    f.range(format!("{p}.http.body_timeout_ms"), h.body_timeout_ms, 1, MAX_TIMEOUT_MS);
    f.range(format!("{p}.http.total_timeout_ms"), h.total_timeout_ms, 1, MAX_TIMEOUT_MS);
    f.range(format!("{p}.http.head_timeout_ms"), h.head_timeout_ms, 1, MAX_TIMEOUT_MS);
    f.range(format!("{p}.http.max_request_body_bytes"), h.max_request_body_bytes, 1, 1 << 40);
    f.range(format!("{p}.http.max_response_body_bytes"), h.max_response_body_bytes, 1, 1 << 40);
    let s = &l.h2_security;
    let hp = format!("{p}.h2_security");
    f.range(format!("{hp}.max_concurrent_streams"), s.max_concurrent_streams, 1, 100_000);
    f.range(format!("{hp}.max_header_list_size"), s.max_header_list_size, 1024, 16 << 20);
    f.range(format!("{hp}.max_pending_accept_reset_streams"), s.max_pending_accept_reset_streams, 1, 100_000);
    f.range(format!("{hp}.max_local_error_reset_streams"), s.max_local_error_reset_streams, 1, 100_000);
    f.range(format!("{hp}.max_send_buf_size"), s.max_send_buf_size, 16_384, 64 << 20);
    f.range(format!("{hp}.keep_alive_interval_ms"), s.keep_alive_interval_ms, 1, MAX_TIMEOUT_MS);
    f.range(format!("{hp}.keep_alive_timeout_ms"), s.keep_alive_timeout_ms, 1, MAX_TIMEOUT_MS);
    // RFC 9113 §6.5.2: windows are 31-bit and at least the initial 65535.
    f.range(format!("{hp}.initial_stream_window_size"), s.initial_stream_window_size, 65_535, (1 << 31) - 1);
    f.range(format!("{hp}.initial_connection_window_size"), s.initial_connection_window_size, 65_535, (1 << 31) - 1);
    let w = &l.websocket;
    let wp = format!("{p}.websocket");
    f.range(format!("{wp}.idle_timeout_seconds"), w.idle_timeout_seconds, 1, 86_400);
    f.range(format!("{wp}.max_message_size_bytes"), w.max_message_size_bytes, 1, 1 << 30);
    f.range(format!("{wp}.ping_rate_limit_per_window"), w.ping_rate_limit_per_window, 1, 1_000_000);
    f.range(format!("{wp}.ping_rate_limit_window_seconds"), w.ping_rate_limit_window_seconds, 1, 86_400);
    f.range(format!("{wp}.read_frame_timeout_seconds"), w.read_frame_timeout_seconds, 1, 86_400);
    f.range(format!("{p}.grpc.max_deadline_seconds"), l.grpc.max_deadline_seconds, 1, 86_400);
}

fn check_pool(f: &mut Findings, p: &str, pool: &PoolSpec, used_by: PoolUse) {
    for (j, b) in pool.backends.iter().enumerate() {
        check_backend(f, &format!("{p}.backends[{j}]"), b, used_by);
    }
    let policy = pool.lb_policy;
    if used_by == PoolUse::L4 && policy == LbPolicy::SessionAffinity {
        f.fail(format!("{p}.lb_policy"), policy.as_str(), "session_affinity needs HTTP cookies; not available on L4 listeners");
    }
    if let Some(k) = &pool.hash_key {
        match k.source {
            HashSource::Header | HashSource::Cookie => {
                if k.name.as_deref().is_none_or(str::is_empty) {
                    f.fail(format!("{p}.hash_key.name"), "(missing)", "header and cookie hash keys need a name");
                }
                if used_by == PoolUse::L4 {
                    f.fail(format!("{p}.hash_key.source"), "header/cookie", "L4 listeners can hash only the source ip");
                }
            }
            HashSource::Cid if used_by != PoolUse::Any => {
                f.fail(format!("{p}.hash_key.source"), "cid", "the connection ID is a key only for QUIC passthrough pools");
            }
            _ => {}
        }
    }
    if !is_prime(pool.maglev_table_size) || !(101..=16_777_259).contains(&pool.maglev_table_size) {
        f.fail(format!("{p}.maglev_table_size"), pool.maglev_table_size, "a prime between 101 and 16777259");
    }
    if let Some(h) = &pool.health_check {
        check_health(f, &format!("{p}.health_check"), h);
    }
    if let Some(o) = &pool.outlier_detection {
        let op = format!("{p}.outlier_detection");
        f.range(format!("{op}.consecutive_failures"), o.consecutive_failures, 1, 1000);
        f.range(format!("{op}.base_ejection_ms"), o.base_ejection_ms, 1, MAX_TIMEOUT_MS);
        f.range(format!("{op}.max_ejection_ms"), o.max_ejection_ms, o.base_ejection_ms.max(1), MAX_TIMEOUT_MS);
        f.range(format!("{op}.max_ejection_percent"), o.max_ejection_percent, 0, 100);
    }
    if let Some(s) = &pool.slow_start {
        f.range(format!("{p}.slow_start.window_ms"), s.window_ms, 0, MAX_TIMEOUT_MS);
    }
    if let Some(r) = &pool.retry {
        f.range(format!("{p}.retry.attempts"), r.attempts, 0, 10);
        f.range(format!("{p}.retry.budget_percent"), r.budget_percent, 0, 100);
        f.range(format!("{p}.retry.min_retries_per_second"), r.min_retries_per_second, 0, 100_000);
        for (k, s) in r.on_status.iter().enumerate() {
            f.range(format!("{p}.retry.on_status[{k}]"), *s, 100, 599);
        }
    }
    if let Some(a) = &pool.session_affinity {
        let ap = format!("{p}.session_affinity");
        if a.cookie_name.is_empty() || !a.cookie_name.bytes().all(is_token_byte) {
            f.fail(format!("{ap}.cookie_name"), &a.cookie_name, "a valid cookie name");
        }
        if a.fallback == LbPolicy::SessionAffinity {
            f.fail(format!("{ap}.fallback"), a.fallback.as_str(), "the fallback must be another policy");
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

fn check_health(f: &mut Findings, p: &str, h: &HealthCheck) {
    f.range(format!("{p}.interval_ms"), h.interval_ms, 100, MAX_TIMEOUT_MS);
    f.range(format!("{p}.timeout_ms"), h.timeout_ms, 1, h.interval_ms.max(1));
    f.range(format!("{p}.rise"), h.rise, 1, 100);
    f.range(format!("{p}.fall"), h.fall, 1, 100);
    f.range(format!("{p}.jitter_percent"), h.jitter_percent, 0, 100);
    if !h.path.starts_with('/') {
        f.fail(format!("{p}.path"), &h.path, "must start with '/'");
    }
    if h.method.is_empty() || !h.method.bytes().all(is_token_byte) {
        f.fail(format!("{p}.method"), &h.method, "an HTTP method token such as GET or HEAD");
    }
    if crate::StatusRanges::parse(&h.expected_status).is_none() {
        f.fail(format!("{p}.expected_status"), &h.expected_status, "codes or ranges 100-599, e.g. \"200-399\" or \"200,204\"");
    }
}

fn check_host_port(f: &mut Findings, path: String, addr: &str) {
    if addr.parse::<SocketAddr>().is_ok() {
        return;
    }
    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && port.parse::<u16>().is_ok_and(|p| p != 0)
    });
    if !ok {
        f.fail(path, format!("{addr:?}"), "an address \"ip:port\" or \"hostname:port\"");
    }
}

/// RFC 9110 token characters, used for header, method and cookie names.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}
