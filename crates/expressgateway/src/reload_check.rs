//! Which changed keys a reload cannot apply to the running process: they
//! are fixed when something is bound or spawned at start (the runtime's
//! threads, sockets, the process log, HTTP/3 connection limits). A reload
//! that meets one applies everything else, logs each such key and counts
//! itself `restart_required`, never `ok`.

use eg_config::{Config, ListenerProtocol};

/// Paths of the keys whose new value waits for a restart.
pub fn not_applied_live(old: &Config, new: &Config) -> Vec<String> {
    let mut keys = Vec::new();
    let mut differs = |path: &str, changed: bool| {
        if changed {
            keys.push(path.to_owned());
        }
    };
    let (o, n) = (&old.runtime, &new.runtime);
    differs(
        "runtime.worker_threads",
        o.worker_threads != n.worker_threads,
    );
    differs(
        "runtime.dns_servers / dns_min_ttl_ms / dns_max_ttl_ms",
        o.dns_servers != n.dns_servers
            || o.dns_min_ttl_ms != n.dns_min_ttl_ms
            || o.dns_max_ttl_ms != n.dns_max_ttl_ms,
    );
    let serves_h3 = new.listeners.iter().any(|l| {
        l.protocol == ListenerProtocol::Quic
            && l.quic.as_ref().is_some_and(|q| q.raw_proxy.is_none())
    });
    differs(
        "runtime.max_requests_per_h3_connection",
        serves_h3 && o.max_requests_per_h3_connection != n.max_requests_per_h3_connection,
    );
    differs(
        "observability.metrics_bind",
        old.observability.metrics_bind != new.observability.metrics_bind,
    );
    differs(
        "observability.log_format (the process log; the access log follows at once)",
        old.observability.log_format != new.observability.log_format,
    );
    for (i, l) in new.listeners.iter().enumerate().skip(old.listeners.len()) {
        differs(
            &format!("listeners[{i}] (added, {}: opened by a restart)", l.address),
            true,
        );
    }
    for (i, l) in old.listeners.iter().enumerate().skip(new.listeners.len()) {
        differs(
            &format!(
                "listeners[{i}] (removed, {}: still serving until a restart)",
                l.address
            ),
            true,
        );
    }
    let (ox, nx) = (&old.xdp, &new.xdp);
    differs(
        "xdp.enabled / interface / mode / conntrack_entries (the program is attached at start)",
        ox.enabled != nx.enabled
            || ox.interface != nx.interface
            || ox.mode != nx.mode
            || ox.conntrack_entries != nx.conntrack_entries,
    );
    let bind = |c: &Config| c.passthrough.as_ref().map(|p| p.bind_addr);
    differs(
        "passthrough.bind_addr (or [passthrough] added or removed)",
        bind(old) != bind(new),
    );
    for (i, (a, b)) in old.listeners.iter().zip(&new.listeners).enumerate() {
        differs(&format!("listeners[{i}].address"), a.address != b.address);
        differs(
            &format!("listeners[{i}].protocol"),
            a.protocol != b.protocol,
        );
        let payload =
            |l: &eg_config::Listener| l.quic.as_ref().map(|q| q.max_recv_udp_payload_size);
        differs(
            &format!("listeners[{i}].quic.max_recv_udp_payload_size"),
            payload(a) != payload(b),
        );
        let lb = |l: &eg_config::Listener| l.quic.as_ref().and_then(|q| q.quic_lb.clone());
        differs(
            &format!(
                "listeners[{i}].quic.quic_lb (connection IDs are issued by the bound endpoint)"
            ),
            lb(a) != lb(b),
        );
        let mode_b =
            |l: &eg_config::Listener| l.quic.as_ref().is_some_and(|q| q.raw_proxy.is_some());
        differs(
            &format!("listeners[{i}].quic.raw_proxy (HTTP/3 <-> Mode B)"),
            mode_b(a) != mode_b(b),
        );
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_toml(text).expect("config")
    }

    #[test]
    fn names_each_key_a_reload_cannot_apply() {
        let base = "[[listeners]]\naddress = \"127.0.0.1:1\"\nprotocol = \"h1\"\n\
                    [[listeners.backends]]\naddress = \"127.0.0.1:2\"\n";
        let old = parse(base);
        assert!(not_applied_live(&old, &parse(base)).is_empty());
        let moved = parse(&base.replace("127.0.0.1:1", "127.0.0.1:3"));
        assert_eq!(not_applied_live(&old, &moved), ["listeners[0].address"]);
        let threads = parse(&format!("[runtime]\nworker_threads = 3\n{base}"));
        assert_eq!(not_applied_live(&old, &threads), ["runtime.worker_threads"]);
        // Live keys are not listed.
        let caps = parse(&format!("[runtime]\nmax_inflight_connections = 7\n{base}"));
        assert!(not_applied_live(&old, &caps).is_empty());
        // The XDP attach keys wait for a restart; its rate cap is live.
        let xdp = parse(&format!("[xdp]\ninterface = \"eth0\"\n{base}"));
        let keys = not_applied_live(&old, &xdp);
        assert!(
            keys.len() == 1 && keys[0].starts_with("xdp.enabled"),
            "{keys:?}"
        );
        let cap = parse(&format!("[xdp]\nnew_flows_per_cpu_per_second = 5\n{base}"));
        assert!(not_applied_live(&old, &cap).is_empty());
        // An added listener is named by index and address.
        let second = base
            .replace("127.0.0.1:1", "127.0.0.1:5")
            .replace("127.0.0.1:2", "127.0.0.1:6");
        let added = parse(&format!("{base}{second}"));
        let keys = not_applied_live(&old, &added);
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(
            keys[0].starts_with("listeners[1] (added, 127.0.0.1:5"),
            "{keys:?}"
        );
    }
}
