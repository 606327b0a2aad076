use super::*;

fn err(text: &str) -> String {
    match Config::from_toml(text) {
        Ok(_) => panic!("config unexpectedly valid:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const TCP: &str = r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "tcp"
[[listeners.backends]]
address = "127.0.0.1:9000"
"#;

#[test]
fn minimal_tcp_listener_gets_defaults() {
    let c = Config::from_toml(TCP).expect("valid");
    let l = &c.listeners[0];
    assert_eq!(l.protocol, ListenerProtocol::Tcp);
    assert_eq!(l.lb_policy, LbPolicy::RoundRobin);
    assert_eq!(l.backends[0].weight, 1);
    assert_eq!(c.runtime.connect_timeout_ms, 5000);
    assert_eq!(c.runtime.max_inflight_connections, 65_536);
    assert_eq!(c.runtime.per_ip_connection_cap, 1024);
    assert_eq!(l.http.max_request_body_bytes, 64 << 20);
    assert_eq!(l.h2_security.max_concurrent_streams, 256);
    assert!(c.security.strict_te);
    assert_eq!(l.label(0), "tcp-0");
}

#[test]
fn unknown_key_names_its_path() {
    let e = err(&format!("{TCP}bogus = 1\n"));
    assert!(e.contains("listeners[0].backends[0]"), "{e}");
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn misspelled_table_is_refused() {
    let e = err(&format!("{TCP}[runtim]\nconnect_timeout_ms = 5\n"));
    assert!(e.contains("runtim"), "{e}");
}

#[test]
fn bad_protocol_names_the_allowed_values() {
    let e = err(&TCP.replace("\"tcp\"", "\"udp\""));
    assert!(e.contains("listeners[0].protocol"), "{e}");
    assert!(e.contains("h1s"), "{e}");
}

#[test]
fn out_of_range_weight_names_path_value_and_range() {
    let e = err(&format!("{TCP}weight = 0\n"));
    assert!(e.contains("listeners[0].backends[0].weight = 0"), "{e}");
    assert!(e.contains("between 1 and 10000"), "{e}");
}

#[test]
fn missing_tls_block_is_refused() {
    let e = err(&TCP.replace("\"tcp\"", "\"tls\""));
    assert!(e.contains("listeners[0].tls"), "{e}");
    assert!(e.contains("requires"), "{e}");
}

#[test]
fn tls_block_on_h1_is_refused() {
    let text = TCP.replace("\"tcp\"", "\"h1\"")
        + "[listeners.tls]\ncert_path = \"/nonexistent/c.pem\"\nkey_path = \"/nonexistent/k.pem\"\n";
    let e = err(&text);
    assert!(e.contains("listeners[0].tls = (present)"), "{e}");
}

#[test]
fn duplicate_addresses_are_refused_but_tcp_and_udp_may_share() {
    let dup = TCP.replace("127.0.0.1:0", "127.0.0.1:7000").repeat(2);
    let e = err(&dup);
    assert!(e.contains("listeners[1].address"), "{e}");
    // Port 0 asks the OS for distinct ports: never a clash.
    Config::from_toml(&TCP.repeat(2)).expect("port 0 twice is fine");
}

#[test]
fn route_to_unknown_cluster_is_refused() {
    let text = r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "h1"
[[listeners.routes]]
path_prefix = "/api/"
cluster = "nope"
"#;
    let e = err(text);
    assert!(e.contains("listeners[0].routes[0].cluster = nope"), "{e}");
}

#[test]
fn routes_naming_clusters_need_no_default_pool() {
    let text = r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "h1"
[[listeners.routes]]
host = "*.example.com"
cluster = "api"
[[clusters]]
name = "api"
lb_policy = "maglev"
hash_key = { source = "header", name = "x-user" }
[[clusters.backends]]
address = "backend.internal:9001"
protocol = "h2"
weight = 3
"#;
    let c = Config::from_toml(text).expect("valid");
    assert_eq!(
        c.cluster("api").map(|c| c.lb_policy),
        Some(LbPolicy::Maglev)
    );
}

#[test]
fn l4_backend_must_be_tcp() {
    let e = err(&format!("{TCP}protocol = \"h2\"\n"));
    assert!(e.contains("listeners[0].backends[0].protocol = h2"), "{e}");
}

#[test]
fn bad_backend_address_is_refused() {
    let e = err(&TCP.replace("127.0.0.1:9000", "nonsense"));
    assert!(e.contains("listeners[0].backends[0].address"), "{e}");
}

#[test]
fn bad_listener_address_names_its_path() {
    let e = err(&TCP.replace("127.0.0.1:0", "localhost"));
    assert!(e.contains("listeners[0].address"), "{e}");
}

#[test]
fn all_findings_are_reported_together() {
    let text = format!("{TCP}weight = 0\n[runtime]\nconnect_timeout_ms = 0\n");
    let e = err(&text);
    assert!(
        e.contains("weight") && e.contains("runtime.connect_timeout_ms"),
        "{e}"
    );
}

#[test]
fn health_check_expected_status_is_checked() {
    let text =
        format!("{TCP}[listeners.health_check]\nkind = \"http\"\nexpected_status = \"200-9999\"\n");
    let e = err(&text);
    assert!(
        e.contains("listeners[0].health_check.expected_status"),
        "{e}"
    );
}

#[test]
fn status_ranges_parse() {
    let r = StatusRanges::parse("200-299, 304").expect("valid");
    assert!(r.contains(204) && r.contains(304) && !r.contains(303));
    assert!(StatusRanges::parse("abc").is_none());
    assert!(StatusRanges::parse("300-200").is_none());
}

#[test]
fn verify_hostname_takes_bool_or_name() {
    let c =
        Config::from_toml(&format!("{TCP}tls_verify_hostname = \"db.internal\"\n")).expect("valid");
    assert_eq!(
        c.listeners[0].backends[0].tls_verify_hostname,
        VerifyHostname::Name("db.internal".into())
    );
}

#[test]
fn passthrough_alone_is_a_valid_config() {
    let text = r#"
[passthrough]
bind_addr = "127.0.0.1:0"
backends = ["127.0.0.1:4433", { address = "127.0.0.1:4434", weight = 2 }]
"#;
    let c = Config::from_toml(text).expect("valid");
    let pt = c.passthrough.expect("present");
    assert_eq!(pt.backends[1].weight(), 2);
    assert_eq!(pt.max_quic_connections, 100_000);
}

#[test]
fn admin_off_loopback_requires_a_token() {
    let text = format!("{TCP}[observability]\nmetrics_bind = \"0.0.0.0:9100\"\n");
    let e = err(&text);
    assert!(e.contains("observability.metrics_bind"), "{e}");
}

#[test]
fn zero_rtt_is_refused_on_a_raw_relay_and_the_quic_handshake_bound_is_checked() {
    let e = err(r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "quic"
[listeners.quic]
cert_path = "/nonexistent/c.pem"
key_path = "/nonexistent/k.pem"
allow_0rtt = true
handshake_timeout_ms = 10
[listeners.quic.raw_proxy]
backend_addr = "127.0.0.1:9000"
"#);
    assert!(e.contains("listeners[0].quic.allow_0rtt"), "{e}");
    assert!(e.contains("raw QUIC relay"), "{e}");
    assert!(e.contains("listeners[0].quic.handshake_timeout_ms"), "{e}");
}

#[test]
fn a_passthrough_cluster_is_probed_below_tls() {
    let text = r#"
[passthrough]
bind_addr = "127.0.0.1:0"
cluster = "quic"
[[clusters]]
name = "quic"
[[clusters.backends]]
address = "127.0.0.1:4433"
[clusters.health_check]
kind = "http"
"#;
    let e = err(text);
    assert!(e.contains("clusters[0].health_check.kind"), "{e}");
    let ok = text.replace("kind = \"http\"", "kind = \"tcp\"");
    Config::from_toml(&ok).expect("tcp: a version negotiation probe");
}

#[test]
fn quic_lb_ids_fit_and_server_ids_are_checked() {
    let base = r#"
[passthrough]
bind_addr = "127.0.0.1:0"
backends = [{ address = "127.0.0.1:4433", server_id = "0a0b" }, { address = "127.0.0.1:4434", server_id = "0a0c" }]
[passthrough.quic_lb]
server_id_len = 2
"#;
    Config::from_toml(base).expect("valid");
    let e = err(&base.replace("0a0c", "0a0b"));
    assert!(e.contains("passthrough.backends[1].server_id"), "{e}");
    let e = err(&base.replace("0a0c", "0a"));
    assert!(e.contains("passthrough.backends[1].server_id"), "{e}");
    let e = err(&base.replace("server_id_len = 2", "server_id_len = 2\nnonce_len = 18"));
    assert!(e.contains("passthrough.quic_lb.nonce_len"), "{e}");
    let e = err(&base.replace(
        "server_id_len = 2",
        "server_id_len = 2\nconfig_rotation = 7",
    ));
    assert!(e.contains("passthrough.quic_lb.config_rotation"), "{e}");
    let no_table = base
        .split("[passthrough.quic_lb]")
        .next()
        .unwrap_or_default();
    let e = err(no_table);
    assert!(e.contains("passthrough.backends"), "{e}");
}

#[test]
fn an_https_probe_needs_a_tls_backend() {
    let text = r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "h1"
[[listeners.backends]]
address = "127.0.0.1:9000"
[listeners.health_check]
kind = "https"
"#;
    let e = err(text);
    assert!(e.contains("listeners[0].health_check.kind"), "{e}");
    assert!(e.contains("tls = true"), "{e}");
    let with_tls = text.replace(
        "address = \"127.0.0.1:9000\"",
        "address = \"127.0.0.1:9000\"\ntls = true",
    );
    Config::from_toml(&with_tls).expect("https to a TLS backend");
    let h3 = text.replace(
        "address = \"127.0.0.1:9000\"",
        "address = \"127.0.0.1:9000\"\nprotocol = \"h3\"",
    );
    Config::from_toml(&h3).expect("https to an h3 backend (always TLS)");
    // A [[clusters]] entry is checked the same way.
    let cluster = r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "h1"
[[listeners.routes]]
path_prefix = "/"
cluster = "web"
[[clusters]]
name = "web"
[[clusters.backends]]
address = "127.0.0.1:9000"
[clusters.health_check]
kind = "https"
"#;
    let e = err(cluster);
    assert!(e.contains("clusters[0].health_check.kind"), "{e}");
}

#[test]
fn a_mode_b_cluster_takes_only_the_handshake_probe() {
    let text = r#"
[[listeners]]
address = "127.0.0.1:0"
protocol = "quic"
[listeners.quic]
cert_path = "/nonexistent/c.pem"
key_path = "/nonexistent/k.pem"
[listeners.quic.raw_proxy]
cluster = "relay"
alpn = ["eg-test"]
[[clusters]]
name = "relay"
[[clusters.backends]]
address = "127.0.0.1:4433"
[clusters.health_check]
kind = "KIND"
"#;
    for kind in ["http", "https", "grpc"] {
        let e = err(&text.replace("KIND", kind));
        assert!(e.contains("clusters[0].health_check.kind"), "{kind}: {e}");
        assert!(
            e.contains("listeners[0].quic.raw_proxy.cluster"),
            "{kind}: {e}"
        );
    }
    let e = err(&text.replace("KIND", "tcp"));
    assert!(
        !e.contains("health_check.kind"),
        "tcp (a QUIC handshake) fits: {e}"
    );
}

#[test]
fn xdp_is_off_by_default_and_checked_when_on() {
    let c = Config::from_toml(TCP).expect("valid");
    assert!(!c.xdp.enabled);
    assert_eq!(c.xdp.mode, XdpMode::Auto);
    let on = Config::from_toml(&format!(
        "{TCP}[xdp]\nenabled = true\ninterface = \"veth0\"\nmode = \"skb\"\n"
    ))
    .expect("valid");
    assert_eq!(on.xdp.mode, XdpMode::Skb);
    assert_eq!(on.xdp.interface, "veth0");
    let e = err(&format!("{TCP}[xdp]\nenabled = true\n"));
    assert!(e.contains("xdp.interface"), "{e}");
    let e = err(&format!(
        "{TCP}[xdp]\nenabled = true\ninterface = \"a-very-long-name0\"\n"
    ));
    assert!(e.contains("xdp.interface") && e.contains("15 bytes"), "{e}");
    let e = err(&format!("{TCP}[xdp]\ninterface = \"eth/0\"\n"));
    assert!(e.contains("xdp.interface"), "{e}");
    let e = err(&format!("{TCP}[xdp]\nmode = \"turbo\"\n"));
    assert!(e.contains("xdp.mode") && e.contains("skb"), "{e}");
    let e = err(&format!("{TCP}[xdp]\nconntrack_entries = 10\n"));
    assert!(
        e.contains("xdp.conntrack_entries = 10: must be between 1024"),
        "{e}"
    );
    let e = err(&format!("{TCP}[xdp]\nflow_idle_timeout_seconds = 0\n"));
    assert!(e.contains("xdp.flow_idle_timeout_seconds"), "{e}");
    let e = err(&format!("{TCP}[xdp]\nnew_flows_per_cpu = 1\n"));
    assert!(e.contains("xdp") && e.contains("new_flows_per_cpu"), "{e}");
}
