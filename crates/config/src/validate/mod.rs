//! Checks serde cannot express: ranges, cross-references, required and
//! forbidden sub-tables. Every finding names its key path.

use std::collections::HashSet;
use std::fmt::Display;
use std::path::Path;

mod listener;
mod pool;
mod quic_lb;
mod xdp;

use crate::{Config, Invalid, ListenerProtocol, MAX_WEIGHT};
use listener::check_listener;
use pool::{check_host_port, check_pool, PoolUse};

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
                f.fail(
                    format!("{p}.name"),
                    l.label(i),
                    "listener names must be unique",
                );
            }
            check_listener(&mut f, &p, l, i, &cluster_names);
            let relay_cluster = l
                .quic
                .as_ref()
                .and_then(|q| q.raw_proxy.as_ref()?.cluster.as_deref());
            if let Some(c) = relay_cluster {
                self.check_relay_cluster(&mut f, &p, c);
            }
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
                        f.fail(
                            "passthrough.cluster",
                            c,
                            "no [[clusters]] entry has this name",
                        );
                    }
                    self.check_passthrough_cluster(&mut f, c);
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
            f.range(
                "passthrough.max_quic_connections".into(),
                pt.max_quic_connections,
                1,
                10_000_000,
            );
            f.range(
                "passthrough.min_client_dcid_len".into(),
                pt.min_client_dcid_len,
                1,
                20,
            );
            f.range(
                "passthrough.max_dcid_len_routed".into(),
                pt.max_dcid_len_routed,
                pt.min_client_dcid_len.clamp(1, 20),
                20,
            );
            f.range(
                "passthrough.per_flow_backlog".into(),
                pt.per_flow_backlog,
                1,
                1024,
            );
            quic_lb::check_route(&mut f, pt);
            f.range(
                "passthrough.flow_idle_timeout_ms".into(),
                pt.flow_idle_timeout_ms,
                1000,
                MAX_TIMEOUT_MS,
            );
        }
        self.check_globals(&mut f);
        xdp::check(&mut f, &self.xdp);
        if f.0.is_empty() {
            Ok(())
        } else {
            Err(f.0)
        }
    }

    /// The `[[clusters]]` entry called `name`, with its index (for key paths).
    fn cluster_named(&self, name: &str) -> Option<(usize, &crate::Cluster)> {
        self.clusters
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == name)
    }

    /// Mode A holds no keys: it can probe a backend only below TLS (a
    /// QUIC version negotiation, `kind = "tcp"`), and hash only what the
    /// public header and the source address show.
    fn check_passthrough_cluster(&self, f: &mut Findings, name: &str) {
        let Some((i, c)) = self.cluster_named(name) else {
            return;
        };
        if let Some(h) = &c.health_check {
            if h.kind != crate::HealthCheckKind::Tcp {
                f.fail(
                    format!("clusters[{i}].health_check.kind"),
                    format!("{:?}", h.kind).to_lowercase(),
                    "a passthrough pool is probed below TLS: use \"tcp\" (a QUIC version negotiation)",
                );
            }
        }
        if let Some(k) = &c.hash_key {
            if matches!(
                k.source,
                crate::HashSource::Header | crate::HashSource::Cookie
            ) {
                f.fail(
                    format!("clusters[{i}].hash_key.source"),
                    "header/cookie",
                    "passthrough hashes the connection ID (\"cid\") or the source \"ip\"",
                );
            }
        }
    }

    /// A Mode B relay's backends speak an opaque protocol over QUIC: the
    /// only probe that fits is a verified QUIC handshake (`kind = "tcp"`).
    fn check_relay_cluster(&self, f: &mut Findings, listener: &str, name: &str) {
        let Some((i, c)) = self.cluster_named(name) else {
            return;
        };
        if let Some(h) = c
            .health_check
            .as_ref()
            .filter(|h| h.kind != crate::HealthCheckKind::Tcp)
        {
            f.fail(
                format!("clusters[{i}].health_check.kind"),
                format!("{:?}", h.kind).to_lowercase(),
                format!(
                    "{listener}.quic.raw_proxy.cluster relays opaque QUIC to this cluster: only \
                     kind = \"tcp\" fits (a verified QUIC handshake offering the first raw_proxy.alpn)"
                ),
            );
        }
    }

    fn check_clusters(&self, f: &mut Findings) -> HashSet<&str> {
        let mut names = HashSet::new();
        for (i, c) in self.clusters.iter().enumerate() {
            let p = format!("clusters[{i}]");
            if c.name.is_empty() {
                f.fail(
                    format!("{p}.name"),
                    "\"\"",
                    "a cluster needs a non-empty name",
                );
            } else if !names.insert(c.name.as_str()) {
                f.fail(format!("{p}.name"), &c.name, "cluster names must be unique");
            }
            if c.backends.is_empty() {
                f.fail(
                    format!("{p}.backends"),
                    "[]",
                    "a cluster needs at least one backend",
                );
            }
            check_pool(f, &p, &c.pool(), PoolUse::Any);
        }
        names
    }

    fn check_globals(&self, f: &mut Findings) {
        let r = &self.runtime;
        f.range(
            "runtime.connect_timeout_ms".into(),
            r.connect_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        );
        f.range(
            "runtime.handshake_timeout_ms".into(),
            r.handshake_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        );
        f.range(
            "runtime.max_inflight_connections".into(),
            r.max_inflight_connections,
            1,
            10_000_000,
        );
        f.range(
            "runtime.per_ip_connection_cap".into(),
            r.per_ip_connection_cap,
            1,
            10_000_000,
        );
        f.range(
            "runtime.max_keepalive_requests".into(),
            r.max_keepalive_requests,
            0,
            10_000_000,
        );
        f.range(
            "runtime.max_requests_per_h3_connection".into(),
            r.max_requests_per_h3_connection,
            1,
            1_000_000,
        );
        f.range(
            "runtime.drain_timeout_ms".into(),
            r.drain_timeout_ms,
            0,
            MAX_TIMEOUT_MS,
        );
        f.range(
            "runtime.readiness_settle_ms".into(),
            r.readiness_settle_ms,
            0,
            MAX_TIMEOUT_MS,
        );
        f.range("runtime.worker_threads".into(), r.worker_threads, 0, 1024);
        f.range(
            "runtime.tcp_idle_timeout_ms".into(),
            r.tcp_idle_timeout_ms,
            1,
            7 * MAX_TIMEOUT_MS,
        );
        f.range(
            "runtime.dns_min_ttl_ms".into(),
            r.dns_min_ttl_ms,
            100,
            MAX_TIMEOUT_MS,
        );
        f.range(
            "runtime.dns_max_ttl_ms".into(),
            r.dns_max_ttl_ms,
            r.dns_min_ttl_ms.max(100),
            MAX_TIMEOUT_MS,
        );
        if self.observability.access_log.trim().is_empty() {
            f.fail(
                "observability.access_log",
                "\"\"",
                "use \"off\", \"stdout\" or a file path",
            );
        }
        if let Some(hash) = &self.admin.api_token_hash {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                f.fail(
                    "admin.api_token_hash",
                    hash,
                    "must be 64 hex digits (a SHA-256)",
                );
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
