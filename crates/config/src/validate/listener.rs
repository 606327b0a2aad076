//! `[[listeners]]` entries: sub-tables by protocol, routes, HTTP limits.

use std::collections::HashSet;

use super::pool::{check_host_port, check_pool, is_token_byte, PoolUse};
use super::{Findings, MAX_TIMEOUT_MS};
use crate::{HealthCheckKind, Listener, ListenerProtocol};

pub(super) fn check_listener(
    f: &mut Findings,
    p: &str,
    l: &Listener,
    index: usize,
    clusters: &HashSet<&str>,
) {
    use ListenerProtocol::*;
    let proto = l.protocol.as_str();
    let needs_tls = matches!(l.protocol, Tls | H1s);
    match (&l.tls, needs_tls) {
        (None, true) => f.fail(
            format!("{p}.tls"),
            "(missing)",
            format!("protocol \"{proto}\" requires a [listeners.tls] table"),
        ),
        (Some(_), false) => f.fail(
            format!("{p}.tls"),
            "(present)",
            format!("protocol \"{proto}\" does not take a [listeners.tls] table"),
        ),
        _ => {}
    }
    match (&l.quic, l.protocol == Quic) {
        (None, true) => f.fail(
            format!("{p}.quic"),
            "(missing)",
            "protocol \"quic\" requires a [listeners.quic] table",
        ),
        (Some(_), false) => f.fail(
            format!("{p}.quic"),
            "(present)",
            format!("protocol \"{proto}\" does not take a [listeners.quic] table"),
        ),
        _ => {}
    }
    if l.alt_svc.is_some() && !matches!(l.protocol, H1 | H1s) {
        f.fail(
            format!("{p}.alt_svc"),
            "(present)",
            "only h1 and h1s listeners advertise Alt-Svc",
        );
    }
    if let Some(a) = &l.alt_svc {
        f.range(format!("{p}.alt_svc.h3_port"), a.h3_port, 1, u16::MAX);
        f.range(format!("{p}.alt_svc.max_age"), a.max_age, 0, 31_536_000);
    }
    if let Some(t) = &l.tls {
        f.file(format!("{p}.tls.cert_path"), &t.cert_path);
        f.file(format!("{p}.tls.key_path"), &t.key_path);
        f.range(
            format!("{p}.tls.ticket_rotation_interval_seconds"),
            t.ticket_rotation_interval_seconds,
            60,
            7 * 86_400,
        );
        f.range(
            format!("{p}.tls.ticket_rotation_overlap_seconds"),
            t.ticket_rotation_overlap_seconds,
            0,
            7 * 86_400,
        );
        for (j, s) in t.sni.iter().enumerate() {
            if s.server_names.is_empty() {
                f.fail(
                    format!("{p}.tls.sni[{j}].server_names"),
                    "[]",
                    "list at least one server name",
                );
            }
            f.file(format!("{p}.tls.sni[{j}].cert_path"), &s.cert_path);
            f.file(format!("{p}.tls.sni[{j}].key_path"), &s.key_path);
        }
        if let Some(ca) = &t.client_ca_path {
            f.file(format!("{p}.tls.client_ca_path"), ca);
        } else if t.client_auth_optional {
            f.fail(
                format!("{p}.tls.client_auth_optional"),
                true,
                "requires tls.client_ca_path",
            );
        }
    }
    let raw_proxy = l.quic.as_ref().and_then(|q| q.raw_proxy.as_ref());
    if let Some(q) = &l.quic {
        if let Some(lb) = &q.quic_lb {
            super::quic_lb::check_issue(f, &format!("{p}.quic.quic_lb"), lb);
        }
        f.file(format!("{p}.quic.cert_path"), &q.cert_path);
        f.file(format!("{p}.quic.key_path"), &q.key_path);
        f.range(
            format!("{p}.quic.max_idle_timeout_ms"),
            q.max_idle_timeout_ms,
            1,
            600_000,
        );
        f.range(
            format!("{p}.quic.handshake_timeout_ms"),
            q.handshake_timeout_ms,
            100,
            600_000,
        );
        f.range(
            format!("{p}.quic.max_recv_udp_payload_size"),
            q.max_recv_udp_payload_size,
            1200,
            65_527,
        );
        f.range(
            format!("{p}.quic.retry_under_load_threshold"),
            q.retry_under_load_threshold,
            1,
            1_000_000,
        );
        f.range(
            format!("{p}.quic.max_connections_per_ip"),
            q.max_connections_per_ip,
            1,
            1_000_000,
        );
        // quinn's windows are QUIC varints; a stream window above the
        // connection's could never be used.
        f.range(
            format!("{p}.quic.receive_window_bytes"),
            q.receive_window_bytes,
            16 * 1024,
            1 << 30,
        );
        f.range(
            format!("{p}.quic.stream_receive_window_bytes"),
            q.stream_receive_window_bytes,
            16 * 1024,
            q.receive_window_bytes.max(16 * 1024),
        );
        if let Some(rp) = raw_proxy {
            let rpp = format!("{p}.quic.raw_proxy");
            if q.allow_0rtt {
                f.fail(
                    format!("{p}.quic.allow_0rtt"),
                    true,
                    "a raw QUIC relay cannot tell a safe request from an unsafe one in early \
                     data, so it never accepts 0-RTT; allow_0rtt is for HTTP/3 listeners",
                );
            }
            match (&rp.backend_addr, &rp.cluster) {
                (Some(addr), None) => check_host_port(f, format!("{rpp}.backend_addr"), addr),
                (None, Some(c)) => {
                    if !clusters.contains(c.as_str()) {
                        f.fail(
                            format!("{rpp}.cluster"),
                            c,
                            "no [[clusters]] entry has this name",
                        );
                    }
                }
                _ => f.fail(
                    rpp.clone(),
                    "",
                    "set exactly one of `backend_addr` and `cluster`",
                ),
            }
            if let Some(ca) = &rp.backend_ca_path {
                f.file(format!("{rpp}.backend_ca_path"), ca);
            }
            if l.circuit_breaker.is_some() {
                f.fail(
                    format!("{p}.circuit_breaker"),
                    "(present)",
                    "the circuit breaker caps HTTP upstreams; the raw QUIC relay is bounded by \
                     max_relay_streams and max_connections_per_ip",
                );
            }
            if let Some(h) = l
                .health_check
                .as_ref()
                .filter(|h| h.kind != HealthCheckKind::Tcp)
            {
                f.fail(
                    format!("{p}.health_check.kind"),
                    format!("{:?}", h.kind),
                    "a raw QUIC relay's backends speak an opaque protocol: only kind = \"tcp\" \
                     (for them, a verified QUIC handshake offering the first raw_proxy.alpn)",
                );
            }
            if l.connection_pool.is_some() {
                f.fail(
                    format!("{p}.connection_pool"),
                    "(present)",
                    "the connection pool keeps HTTP upstream connections; the raw QUIC relay \
                     opens one upstream connection per client connection",
                );
            }
            if rp.alpn.is_empty() || rp.alpn.iter().any(|a| a.is_empty() || a.len() > 255) {
                f.fail(
                    format!("{rpp}.alpn"),
                    format!("{:?}", rp.alpn),
                    "list 1 or more protocol names of 1 to 255 bytes",
                );
            }
            f.range(
                format!("{rpp}.dgram_queue_cap"),
                rp.dgram_queue_cap,
                1,
                65_536,
            );
            f.range(
                format!("{rpp}.max_relay_streams"),
                rp.max_relay_streams,
                1,
                10_000,
            );
        }
    }
    let pool_use = if l.protocol.is_l4() {
        PoolUse::L4
    } else {
        PoolUse::Http
    };
    if l.protocol.is_l4() && !l.routes.is_empty() {
        f.fail(
            format!("{p}.routes"),
            "(present)",
            "L4 listeners relay bytes and cannot route; use an h1, h1s or quic listener",
        );
    }
    let needs_default_pool = raw_proxy.is_none()
        && (l.routes.is_empty() || l.routes.iter().any(|r| r.cluster.is_none()));
    if needs_default_pool && l.backends.is_empty() {
        f.fail(
            format!("{p}.backends"),
            "[]",
            "this listener needs at least one backend (or routes that each name a cluster)",
        );
    }
    for (j, r) in l.routes.iter().enumerate() {
        let rp = format!("{p}.routes[{j}]");
        if let Some(c) = &r.cluster {
            if !clusters.contains(c.as_str()) {
                f.fail(
                    format!("{rp}.cluster"),
                    c,
                    "no [[clusters]] entry has this name",
                );
            }
        }
        if let Some(h) = &r.host {
            let bare = h.strip_prefix("*.").unwrap_or(h);
            if bare.is_empty() || bare.contains('*') || bare.contains('/') || bare.contains(' ') {
                f.fail(
                    format!("{rp}.host"),
                    h,
                    "an exact host or a \"*.suffix\" wildcard",
                );
            }
        }
        if let Some(pp) = &r.path_prefix {
            if !pp.starts_with('/') {
                f.fail(format!("{rp}.path_prefix"), pp, "must start with '/'");
            }
        }
        if let Some(hm) = &r.header {
            if hm.name.is_empty() || !hm.name.bytes().all(is_token_byte) {
                f.fail(
                    format!("{rp}.header.name"),
                    &hm.name,
                    "a valid HTTP header name",
                );
            }
        }
    }
    check_pool(f, p, &l.default_pool(index), pool_use);
    check_http_limits(f, p, l);
}

fn check_http_limits(f: &mut Findings, p: &str, l: &Listener) {
    let h = &l.http;
    f.range(
        format!("{p}.http.header_timeout_ms"),
        h.header_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    f.range(
        format!("{p}.http.body_timeout_ms"),
        h.body_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    f.range(
        format!("{p}.http.total_timeout_ms"),
        h.total_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    f.range(
        format!("{p}.http.head_timeout_ms"),
        h.head_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    f.range(
        format!("{p}.http.max_request_body_bytes"),
        h.max_request_body_bytes,
        1,
        1 << 40,
    );
    f.range(
        format!("{p}.http.max_response_body_bytes"),
        h.max_response_body_bytes,
        1,
        1 << 40,
    );
    f.range(
        format!("{p}.http.idle_timeout_ms"),
        h.idle_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    f.range(
        format!("{p}.http.max_inflight_requests"),
        h.max_inflight_requests,
        1,
        10_000_000,
    );
    let s = &l.h2_security;
    let hp = format!("{p}.h2_security");
    f.range(
        format!("{hp}.max_concurrent_streams"),
        s.max_concurrent_streams,
        1,
        100_000,
    );
    f.range(
        format!("{hp}.max_header_list_size"),
        s.max_header_list_size,
        1024,
        16 << 20,
    );
    f.range(
        format!("{hp}.max_pending_accept_reset_streams"),
        s.max_pending_accept_reset_streams,
        1,
        100_000,
    );
    f.range(
        format!("{hp}.max_local_error_reset_streams"),
        s.max_local_error_reset_streams,
        1,
        100_000,
    );
    f.range(
        format!("{hp}.max_send_buf_size"),
        s.max_send_buf_size,
        16_384,
        64 << 20,
    );
    f.range(
        format!("{hp}.keep_alive_interval_ms"),
        s.keep_alive_interval_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    f.range(
        format!("{hp}.keep_alive_timeout_ms"),
        s.keep_alive_timeout_ms,
        1,
        MAX_TIMEOUT_MS,
    );
    // RFC 9113 §6.5.2: windows are 31-bit and at least the initial 65535.
    f.range(
        format!("{hp}.initial_stream_window_size"),
        s.initial_stream_window_size,
        65_535,
        (1 << 31) - 1,
    );
    f.range(
        format!("{hp}.initial_connection_window_size"),
        s.initial_connection_window_size,
        65_535,
        (1 << 31) - 1,
    );
    f.range(
        format!("{hp}.max_requests_per_connection"),
        s.max_requests_per_connection,
        0,
        10_000_000,
    );
    let w = &l.websocket;
    let wp = format!("{p}.websocket");
    f.range(
        format!("{wp}.idle_timeout_seconds"),
        w.idle_timeout_seconds,
        1,
        86_400,
    );
    f.range(
        format!("{wp}.max_message_size_bytes"),
        w.max_message_size_bytes,
        1,
        1 << 30,
    );
    f.range(
        format!("{wp}.ping_rate_limit_per_window"),
        w.ping_rate_limit_per_window,
        1,
        1_000_000,
    );
    f.range(
        format!("{wp}.ping_rate_limit_window_seconds"),
        w.ping_rate_limit_window_seconds,
        1,
        86_400,
    );
    f.range(
        format!("{wp}.read_frame_timeout_seconds"),
        w.read_frame_timeout_seconds,
        1,
        86_400,
    );
    f.range(
        format!("{p}.grpc.max_deadline_seconds"),
        l.grpc.max_deadline_seconds,
        1,
        86_400,
    );
}
