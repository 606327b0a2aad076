//! Golden packets through the real XDP program (BPF_PROG_TEST_RUN), root
//! only: every parse branch, conntrack hit and miss, NAT both ways with
//! checksums recomputed from scratch, the Maglev choice against a real
//! eg_balancer pool, the rate cap, the FIB egress rules, and truncated or
//! malformed packets, which must never be forwarded.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use common::pkt::{self, Pkt, Seen, ACK, FIN, L4, RST, SYN};
use common::{lab, Lab, NEIGH_MAC, NEIGH_V4, NEIGH_V6};
use eg_xdp::maps::{self, Flow, FlowKey, Stat, IPPROTO_TCP, IPPROTO_UDP};
use eg_xdp::testrun::Action;

const V4_LISTENER: &str = "10.0.0.1:80";
const V6_LISTENER: &str = "[fd00::1]:80";
const V4_BACKENDS: [&str; 3] = ["10.0.2.1:8080", "10.0.2.2:8080", "10.0.2.3:8080"];
const V6_BACKENDS: [&str; 3] = ["[fd00::2:1]:8080", "[fd00::2:2]:8080", "[fd00::2:3]:8080"];
/// A small prime table over three backends.
const TABLE: [u32; 7] = [0, 1, 2, 0, 1, 2, 1];

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn eligible(list: &[&str]) -> Vec<(SocketAddr, bool)> {
    list.iter().map(|a| (sa(a), true)).collect()
}

/// TCP NAT services on 10.0.0.1:80 (id 0) and [fd00::1]:80 (id 1).
fn tcp_services(lab: &mut Lab) {
    lab.add_service(
        V4_LISTENER,
        IPPROTO_TCP,
        maps::SVC_TCP_NAT,
        0,
        0,
        &eligible(&V4_BACKENDS),
        &TABLE,
    );
    lab.add_service(
        V6_LISTENER,
        IPPROTO_TCP,
        maps::SVC_TCP_NAT,
        1,
        8,
        &eligible(&V6_BACKENDS),
        &TABLE,
    );
}

/// Run `p`, expect a forward, verify the checksums and return what left.
fn forward(lab: &Lab, p: &Pkt) -> (Action, Seen) {
    let out = lab.run(&p.build());
    assert!(
        out.action.is_forward(),
        "{p:?}: {:?}, want a forward",
        out.action
    );
    let seen = pkt::check(&out.data).unwrap_or_else(|e| panic!("{p:?}: rewritten packet: {e}"));
    (out.action, seen)
}

/// Run `frame`, expect XDP_PASS with the frame untouched.
fn passes(lab: &Lab, frame: &[u8], what: &str) {
    let out = lab.run(frame);
    assert_eq!(out.action, Action::Pass, "{what}");
    assert_eq!(out.data, frame, "{what}: a passed packet is untouched");
}

fn nat_port(s: &Seen) -> u16 {
    let port = s.src.port();
    assert!(
        (maps::NAT_PORT_MIN..=maps::NAT_PORT_MAX).contains(&port),
        "nat port {port}"
    );
    port
}

fn nat_both_ways(client: &str, listener: &str, backends: &[&str]) {
    let Some(mut lab) = lab("nat_both_ways") else {
        return;
    };
    tcp_services(&mut lab);
    let (action, syn) = forward(&lab, &Pkt::tcp(client, listener, SYN));
    // No neighbour for the backend in the lab: one-arm, addresses swapped.
    assert_eq!(action, Action::Tx);
    assert_eq!((syn.eth_dst, syn.eth_src), (pkt::MAC_SRC, pkt::MAC_DST));
    assert_eq!(
        syn.src.ip(),
        sa(listener).ip(),
        "NAT source is the listener address"
    );
    let port = nat_port(&syn);
    assert!(
        backends.iter().any(|b| sa(b) == syn.dst),
        "{} not a backend",
        syn.dst
    );
    assert_eq!(
        (syn.tcp_flags, syn.payload.as_slice()),
        (SYN, &b"hello"[..])
    );
    assert_eq!(lab.flows(), 2, "forward and reverse entries");

    // The backend answers the NAT address; the client sees the listener.
    let nat = SocketAddr::new(sa(listener).ip(), port);
    let (_, back) = forward(
        &lab,
        &Pkt::tcp(&syn.dst.to_string(), &nat.to_string(), SYN | ACK),
    );
    assert_eq!((back.src, back.dst), (sa(listener), sa(client)));
    assert_eq!(back.tcp_flags, SYN | ACK);

    // Established: a hit, to the same backend through the same port.
    let (_, ack) = forward(&lab, &Pkt::tcp(client, listener, ACK));
    assert_eq!((ack.src, ack.dst), (syn.src, syn.dst));
    let (_, fin) = forward(&lab, &Pkt::tcp(client, listener, FIN | ACK));
    assert_eq!(fin.dst, syn.dst);
    assert_eq!(lab.stat(Stat::NewFlows), 1);
    assert_eq!(lab.stat(Stat::CtHit), 3);
    assert_eq!(lab.stat(Stat::CtMiss), 1);
    assert_eq!(lab.stat(Stat::FwdPackets), 4);
    assert!(lab.stat(Stat::FwdBytes) >= 4 * 54);
    assert_eq!(lab.stat(Stat::Pass), 0);
}

#[test]
fn tcp_nat_both_ways_v4() {
    nat_both_ways("10.1.0.5:40000", V4_LISTENER, &V4_BACKENDS);
}

#[test]
fn tcp_nat_both_ways_v6() {
    nat_both_ways("[fd00::1:5]:40000", V6_LISTENER, &V6_BACKENDS);
}

#[test]
fn vlan_tags_one_and_two_are_parsed_three_pass() {
    let Some(mut lab) = lab("vlan_tags") else {
        return;
    };
    tcp_services(&mut lab);
    for (i, tags) in [vec![0x8100], vec![0x88a8, 0x8100]].into_iter().enumerate() {
        let mut p = Pkt::tcp(&format!("10.1.0.{}:40000", i + 1), V4_LISTENER, SYN);
        p.vlans = tags.clone();
        let (_, seen) = forward(&lab, &p);
        assert_eq!(seen.vlans, tags.len(), "tags stay on the frame");
        let mut p6 = Pkt::tcp(&format!("[fd00::1:{}]:40000", i + 1), V6_LISTENER, SYN);
        p6.vlans = tags;
        forward(&lab, &p6);
    }
    let mut p = Pkt::tcp("10.1.0.9:40000", V4_LISTENER, SYN);
    p.vlans = vec![0x88a8, 0x8100, 0x8100];
    passes(&lab, &p.build(), "three tags");
}

#[test]
fn what_is_not_ours_passes_untouched() {
    let Some(mut lab) = lab("not_ours") else {
        return;
    };
    tcp_services(&mut lab);
    let c = "10.1.0.5:40000";
    let mut cases: Vec<(&str, Pkt)> = Vec::new();
    let mut arp = Pkt::tcp(c, V4_LISTENER, SYN);
    arp.ethertype = Some(0x0806);
    cases.push(("non-IP ethertype", arp));
    let mut opts = Pkt::tcp(c, V4_LISTENER, SYN);
    opts.ip_options = true;
    cases.push(("IPv4 options", opts));
    let mut mf = Pkt::tcp(c, V4_LISTENER, SYN);
    mf.more_fragments = true;
    cases.push(("first fragment", mf));
    let mut off = Pkt::tcp(c, V4_LISTENER, SYN);
    off.frag_offset = 8;
    cases.push(("later fragment", off));
    let mut ext = Pkt::tcp("[fd00::1:5]:40000", V6_LISTENER, SYN);
    ext.ext_header = true;
    cases.push(("IPv6 extension header", ext));
    cases.push(("non-listener port", Pkt::tcp(c, "10.0.0.1:81", SYN)));
    cases.push(("non-listener address", Pkt::tcp(c, "10.0.0.7:80", SYN)));
    cases.push(("UDP to a TCP listener", Pkt::udp(c, V4_LISTENER, b"x")));
    cases.push(("ACK without a flow", Pkt::tcp(c, V4_LISTENER, ACK)));
    cases.push((
        "SYN-ACK without a flow",
        Pkt::tcp(c, V4_LISTENER, SYN | ACK),
    ));
    cases.push(("RST without a flow", Pkt::tcp(c, V4_LISTENER, RST)));
    cases.push(("SYN-FIN", Pkt::tcp(c, V4_LISTENER, SYN | FIN)));
    for (what, p) in &cases {
        passes(&lab, &p.build(), what);
    }
    assert_eq!(lab.flows(), 0, "nothing passed creates a flow");
    assert_eq!(lab.stat(Stat::Pass), cases.len() as u64);
    // The flag cases reached the service: conntrack misses.
    assert_eq!(lab.stat(Stat::CtMiss), 4);
}

#[test]
fn wildcard_listener_nats_from_the_address_the_client_used() {
    let Some(mut lab) = lab("wildcard") else {
        return;
    };
    lab.add_service(
        "0.0.0.0:443",
        IPPROTO_TCP,
        maps::SVC_TCP_NAT,
        3,
        0,
        &eligible(&V4_BACKENDS),
        &TABLE,
    );
    let (_, seen) = forward(&lab, &Pkt::tcp("10.1.0.5:40000", "10.0.0.2:443", SYN));
    assert_eq!(seen.src.ip(), sa("10.0.0.2:0").ip());
    // An exact listener wins over the wildcard.
    lab.add_service(
        "10.0.0.3:443",
        IPPROTO_TCP,
        maps::SVC_TCP_NAT,
        4,
        4,
        &[(sa(NEIGH_V4_BACKEND), true)],
        &[0],
    );
    let (action, seen) = forward(&lab, &Pkt::tcp("10.1.0.5:40000", "10.0.0.3:443", SYN));
    assert_eq!((action, seen.dst), (Action::Redirect, sa(NEIGH_V4_BACKEND)));
}

const NEIGH_V4_BACKEND: &str = "10.0.9.9:8080";
const NEIGH_V6_BACKEND: &str = "[fd00::9:9]:8080";

/// The IPv4 TCP listener with one backend, the lab's resolved neighbour.
fn v4_service_to_the_neighbour(lab: &mut Lab) {
    lab.add_service(
        V4_LISTENER,
        IPPROTO_TCP,
        maps::SVC_TCP_NAT,
        0,
        0,
        &[(sa(NEIGH_V4_BACKEND), true)],
        &[0],
    );
}

#[test]
fn fib_success_redirects_no_route_passes() {
    let Some(mut lab) = lab("fib") else { return };
    assert!(NEIGH_V4_BACKEND.starts_with(NEIGH_V4) && NEIGH_V6_BACKEND.contains(NEIGH_V6));
    v4_service_to_the_neighbour(&mut lab);
    lab.add_service(
        V6_LISTENER,
        IPPROTO_TCP,
        maps::SVC_TCP_NAT,
        1,
        1,
        &[(sa(NEIGH_V6_BACKEND), true)],
        &[0],
    );
    for (client, listener, backend) in [
        ("10.1.0.5:40000", V4_LISTENER, NEIGH_V4_BACKEND),
        ("[fd00::1:5]:40000", V6_LISTENER, NEIGH_V6_BACKEND),
    ] {
        let (action, seen) = forward(&lab, &Pkt::tcp(client, listener, SYN));
        // A known neighbour on eg0, not the ingress (lo): redirect there
        // with the FIB's addresses.
        assert_eq!(action, Action::Redirect);
        assert_eq!(seen.dst, sa(backend));
        assert_eq!(seen.eth_dst, NEIGH_MAC);
        assert_eq!(seen.eth_src, [0x02, 0xee, 0, 0, 0, 0x01]);
        // Tagged frames leave only the way they came.
        let mut tagged = Pkt::tcp(&client.replace("40000", "40001"), listener, SYN);
        tagged.vlans = vec![0x8100];
        passes(&lab, &tagged.build(), "tagged frame to another interface");
    }
    // No route at all: pass, and no flow is left behind.
    lab.add_service(
        "10.0.0.1:81",
        IPPROTO_TCP,
        maps::SVC_TCP_NAT,
        2,
        2,
        &[(sa("192.0.2.10:8080"), true)],
        &[0],
    );
    let before = lab.flows();
    passes(
        &lab,
        &Pkt::tcp("10.1.0.6:40000", "10.0.0.1:81", SYN).build(),
        "no route to backend",
    );
    assert_eq!(lab.flows(), before);
}

#[test]
fn fib_answers_are_kept_in_the_flow_for_a_second() {
    let Some(mut lab) = lab("fib_cache") else {
        return;
    };
    v4_service_to_the_neighbour(&mut lab);
    let client = "10.1.0.5:40000";
    forward(&lab, &Pkt::tcp(client, V4_LISTENER, SYN));
    let key = FlowKey::new(sa(client), sa(V4_LISTENER), IPPROTO_TCP);
    let flow = lab.flow(&key).expect("forward entry");
    assert_eq!((flow.fib_kind, flow.fib_dmac), (maps::FIB_MACS, NEIGH_MAC));
    // The neighbour moves: the cached answer holds until it is a second old.
    lab.ip(&[
        "neigh",
        "replace",
        NEIGH_V4,
        "lladdr",
        "02:ee:00:00:00:0a",
        "dev",
        "eg0",
        "nud",
        "permanent",
    ]);
    let (_, seen) = forward(&lab, &Pkt::tcp(client, V4_LISTENER, ACK));
    assert_eq!(seen.eth_dst, NEIGH_MAC, "cached");
    let mut old = lab.flow(&key).expect("entry");
    old.fib_at_ns = old.fib_at_ns.saturating_sub(2_000_000_000);
    lab.put_flow(key, old);
    let (_, seen) = forward(&lab, &Pkt::tcp(client, V4_LISTENER, ACK));
    assert_eq!(seen.eth_dst, [0x02, 0xee, 0, 0, 0, 0x0a], "asked again");
    // The route goes away: the next lookup has no answer and the packet passes.
    lab.ip(&["neigh", "del", NEIGH_V4, "dev", "eg0"]);
    lab.ip(&["route", "add", "unreachable", "10.0.9.0/24"]);
    let mut old = lab.flow(&key).expect("entry");
    old.fib_at_ns = old.fib_at_ns.saturating_sub(2_000_000_000);
    lab.put_flow(key, old);
    passes(
        &lab,
        &Pkt::tcp(client, V4_LISTENER, ACK).build(),
        "unreachable backend",
    );
}

#[test]
fn mode_a_forwards_installed_short_headers_only() {
    let Some(mut lab) = lab("mode_a") else { return };
    for (client, listener, gw, backend, id) in [
        (
            "10.1.0.5:50000",
            "10.0.0.1:4433",
            "10.0.0.1:62000",
            "10.0.2.1:4433",
            0,
        ),
        (
            "[fd00::1:5]:50000",
            "[fd00::1]:4433",
            "[fd00::1]:62000",
            "[fd00::2:1]:4433",
            1,
        ),
    ] {
        lab.add_service(
            listener,
            IPPROTO_UDP,
            maps::SVC_QUIC_MODEA,
            id,
            id,
            &[(sa(backend), true)],
            &[0],
        );
        let short = [0x40, 1, 2, 3, 4, 5, 6, 7, 8, 0xaa];
        let long = [0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0];
        for (payload, why) in [
            (&short[..], "short header, no flow"),
            (&long[..], "long header, no flow"),
        ] {
            passes(&lab, &Pkt::udp(client, listener, payload).build(), why);
        }
        assert_eq!(
            lab.flows(),
            2 * id as usize,
            "the kernel never creates Mode A flows"
        );
        lab.put_flow(
            FlowKey::new(sa(client), sa(listener), IPPROTO_UDP),
            Flow::from_user(sa(gw), sa(backend), id, false),
        );
        lab.put_flow(
            FlowKey::new(sa(backend), sa(gw), IPPROTO_UDP),
            Flow::from_user(sa(listener), sa(client), id, true),
        );
        for (from, to, payload, why) in [
            (client, listener, &long[..], "long header on a flow"),
            (backend, gw, &long[..], "long header back"),
            (client, listener, &[][..], "empty datagram"),
        ] {
            passes(&lab, &Pkt::udp(from, to, payload).build(), why);
        }
        let (_, out) = forward(&lab, &Pkt::udp(client, listener, &short));
        assert_eq!(
            (out.src, out.dst, out.payload.as_slice()),
            (sa(gw), sa(backend), &short[..])
        );
        let (_, back) = forward(&lab, &Pkt::udp(backend, gw, &short));
        assert_eq!((back.src, back.dst), (sa(listener), sa(client)));
        if sa(client).is_ipv4() {
            // IPv4 UDP without a checksum stays without one.
            let mut p = Pkt::udp(client, listener, &short);
            p.udp_no_checksum = true;
            let (_, out) = forward(&lab, &p);
            assert!(out.udp_no_checksum);
        }
    }
}

#[test]
fn idle_entries_are_misses() {
    let Some(mut lab) = lab("idle") else { return };
    tcp_services(&mut lab);
    lab.set_config(u32::MAX, 1);
    let client = sa("10.1.0.5:40000");
    let mut flow = Flow::new(sa("10.0.0.1:61001"), sa(V4_BACKENDS[0]), 0, false);
    let key = FlowKey::new(client, sa(V4_LISTENER), IPPROTO_TCP);
    flow.last_seen_ns = maps::monotonic_ns().saturating_sub(5_000_000_000);
    lab.put_flow(key, flow);
    passes(
        &lab,
        &Pkt::tcp("10.1.0.5:40000", V4_LISTENER, ACK).build(),
        "idle flow",
    );
    assert_eq!(lab.stat(Stat::CtMiss), 1);
    flow.last_seen_ns = maps::monotonic_ns();
    lab.put_flow(key, flow);
    let (_, out) = forward(&lab, &Pkt::tcp("10.1.0.5:40000", V4_LISTENER, ACK));
    assert_eq!(out.dst, sa(V4_BACKENDS[0]));
    let seen = lab.flow(&key).expect("entry").last_seen_ns;
    assert!(seen >= flow.last_seen_ns, "a hit refreshes last_seen_ns");
}

#[test]
fn rate_cap_passes_the_syn_over_it() {
    let Some(mut lab) = lab("rate_cap") else {
        return;
    };
    tcp_services(&mut lab);
    lab.set_config(3, 60);
    let started = Instant::now();
    for i in 1..=3 {
        forward(
            &lab,
            &Pkt::tcp(&format!("10.1.0.{i}:40000"), V4_LISTENER, SYN),
        );
    }
    passes(
        &lab,
        &Pkt::tcp("10.1.0.4:40000", V4_LISTENER, SYN).build(),
        "fourth SYN",
    );
    assert!(
        started.elapsed().as_millis() < 900,
        "all four in one window"
    );
    assert_eq!(lab.stat(Stat::RateCap), 1);
    assert_eq!(lab.stat(Stat::NewFlows), 3);
    // Established flows are not capped.
    forward(&lab, &Pkt::tcp("10.1.0.1:40000", V4_LISTENER, ACK));
    lab.set_config(0, 60);
    passes(
        &lab,
        &Pkt::tcp("10.1.0.5:40000", V4_LISTENER, SYN).build(),
        "cap 0",
    );
    assert_eq!(lab.stat(Stat::RateCap), 2);
}

fn pool(backends: &[String], weights: &[u32]) -> eg_balancer::Pool {
    let list: String = backends
        .iter()
        .zip(weights)
        .map(|(a, w)| format!("[[clusters.backends]]\naddress = \"{a}\"\nweight = {w}\n"))
        .collect();
    let text = format!(
        "[[listeners]]\naddress=\"127.0.0.1:0\"\nprotocol=\"h1\"\n[[listeners.routes]]\ncluster=\"c\"\n\
         [[clusters]]\nname=\"c\"\nlb_policy=\"maglev\"\n{list}"
    );
    let config = eg_config::Config::from_toml(&text).expect("valid config");
    eg_balancer::Pool::new(&config.clusters[0].pool(), eg_config::BackendProtocol::Tcp)
}

/// Client IP number `k` of a family.
fn client_ip(k: u32, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(std::net::Ipv6Addr::from(
            (0xfd00_u128 << 112) | (1 << 64) | (u128::from(k) * 2_654_435_761),
        ))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::from(
            0x0b00_0000 + k.wrapping_mul(2_654_435_761) % 0x00ff_ffff,
        ))
    }
}

fn maglev_agrees(v6: bool, keys: u32) {
    let Some(mut lab) = lab("maglev") else { return };
    let addrs: Vec<String> = (1..=7)
        .map(|i| {
            if v6 {
                format!("[fd00::3:{i}]:8080")
            } else {
                format!("10.0.3.{i}:8080")
            }
        })
        .collect();
    let p = pool(&addrs, &[1, 2, 1, 3, 1, 1, 2]);
    let table = p.maglev_table().expect("maglev table").to_vec();
    assert_eq!(table.len(), maps::MAGLEV_SLOTS as usize);
    let listener = if v6 { "[fd00::1]:80" } else { V4_LISTENER };
    let now = Instant::now();
    for (round, down) in [
        vec![],
        vec![1, 4],
        // Few eligible: keys reach the last probes and the scan.
        vec![0, 1, 2, 3, 4],
        vec![1, 2, 3, 5, 6],
        vec![0, 1, 2, 3, 4, 5],
        (0..7).collect(),
    ]
    .into_iter()
    .enumerate()
    {
        for (i, b) in p.backends().iter().enumerate() {
            b.set_active_up(!down.contains(&i), now);
        }
        let state: Vec<(SocketAddr, bool)> = p
            .backends()
            .iter()
            .map(|b| (sa(&b.address), b.is_available(now)))
            .collect();
        lab.add_service(
            listener,
            IPPROTO_TCP,
            maps::SVC_TCP_NAT,
            5,
            200,
            &state,
            &table,
        );
        for k in 0..keys {
            let ip = client_ip(k, v6);
            let want = p
                .pick(&eg_balancer::PickContext {
                    client_ip: Some(ip),
                    ..Default::default()
                })
                .map(|g| sa(&g.backend().address));
            let client = SocketAddr::new(ip, 20_000 + round as u16);
            let frame = Pkt::tcp(&client.to_string(), listener, SYN).build();
            let out = lab.run(&frame);
            if want.is_none() {
                // Nothing eligible: userspace answers (503 / refuse).
                assert_eq!(out.action, Action::Pass, "round {round}, key {k}");
                continue;
            }
            if !out.action.is_forward() {
                let stats: Vec<u64> = Stat::ALL.iter().map(|s| lab.stat(*s)).collect();
                panic!(
                    "round {round}, key {k}: {:?}, want {want:?}; stats {stats:?}",
                    out.action
                );
            }
            let seen = pkt::check(&out.data).expect("checksums");
            assert_eq!(
                Some(seen.dst),
                want,
                "round {round} (down {down:?}), client {ip}"
            );
            // Free the NAT port: 10 000 live flows would exhaust the
            // 4536 ports a backend has per listener address.
            lab.remove_flow(&FlowKey::new(client, sa(listener), IPPROTO_TCP));
            lab.remove_flow(&FlowKey::new(seen.dst, seen.src, IPPROTO_TCP));
        }
    }
}

#[test]
fn maglev_choice_equals_userspace_for_10000_v4_keys() {
    maglev_agrees(false, 10_000);
}

#[test]
fn maglev_choice_equals_userspace_for_v6_keys() {
    maglev_agrees(true, 2_000);
}

/// The Mode A (UDP) listener the malformed-frame tests use, service 2.
fn mode_a_service(lab: &mut Lab) {
    lab.add_service(
        "10.0.0.1:4433",
        IPPROTO_UDP,
        maps::SVC_QUIC_MODEA,
        2,
        16,
        &eligible(&V4_BACKENDS),
        &TABLE,
    );
}

/// Valid frames on every path: a new flow, hits both ways, Mode A.
fn valid_frames(lab: &mut Lab) -> Vec<(String, Vec<u8>)> {
    tcp_services(lab);
    mode_a_service(lab);
    let c4 = "10.1.0.5:40000";
    let c6 = "[fd00::1:5]:40000";
    lab.put_flow(
        FlowKey::new(sa(c4), sa("10.0.0.1:4433"), IPPROTO_UDP),
        Flow::from_user(sa("10.0.0.1:62000"), sa(V4_BACKENDS[0]), 0, false),
    );
    let mut tagged = Pkt::tcp("10.1.0.7:40000", V4_LISTENER, SYN);
    tagged.vlans = vec![0x88a8, 0x8100];
    let mut out = vec![
        (
            "v4 SYN (new flow)".to_string(),
            Pkt::tcp("10.1.0.6:40000", V4_LISTENER, SYN).build(),
        ),
        (
            "v6 SYN (new flow)".to_string(),
            Pkt::tcp("[fd00::1:6]:40000", V6_LISTENER, SYN).build(),
        ),
        ("tagged SYN".to_string(), tagged.build()),
        (
            "Mode A short header".to_string(),
            Pkt::udp(c4, "10.0.0.1:4433", &[0x40; 30]).build(),
        ),
    ];
    // Established flows, made by a SYN first.
    for (c, l) in [(c4, V4_LISTENER), (c6, V6_LISTENER)] {
        let (_, syn) = forward(lab, &Pkt::tcp(c, l, SYN));
        out.push((format!("{c} ACK (hit)"), Pkt::tcp(c, l, ACK).build()));
        let nat = SocketAddr::new(sa(l).ip(), syn.src.port());
        let back = Pkt::tcp(&syn.dst.to_string(), &nat.to_string(), SYN | ACK);
        out.push((format!("{c} reverse (hit)"), back.build()));
    }
    out
}

#[test]
fn truncated_packets_are_never_forwarded() {
    let Some(mut lab) = lab("truncated") else {
        return;
    };
    let frames = valid_frames(&mut lab);
    let flows = lab.flows();
    for (what, frame) in &frames {
        for len in 0..frame.len() {
            match eg_xdp::testrun::run(lab.prog(), &frame[..len], 1) {
                // The kernel refuses frames shorter than an Ethernet header.
                Err(_) => assert!(len < 14, "{what}: test run failed at {len}"),
                Ok(out) => {
                    assert_eq!(out.action, Action::Pass, "{what} cut to {len} bytes");
                    assert_eq!(out.data, &frame[..len], "{what} cut to {len}: untouched");
                }
            }
        }
        assert_eq!(
            lab.flows(),
            flows,
            "{what}: no flow from a truncated packet"
        );
    }
    // The same frames whole, and padded after the IP length, do forward.
    for (what, frame) in &frames {
        let mut padded = frame.clone();
        padded.extend_from_slice(&[0u8; 12]);
        for f in [frame, &padded] {
            let out = lab.run(f);
            assert!(
                out.action.is_forward(),
                "{what} ({} bytes): {:?}",
                f.len(),
                out.action
            );
            pkt::check(&out.data).unwrap_or_else(|e| panic!("{what}: {e}"));
        }
    }
}

#[test]
fn malformed_headers_pass() {
    let Some(mut lab) = lab("malformed") else {
        return;
    };
    tcp_services(&mut lab);
    let base = Pkt::tcp("10.1.0.5:40000", V4_LISTENER, SYN).build();
    let ip = 14; // IPv4 header offset
    let tcp = ip + 20;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut f = base.clone();
    f[ip + 2..ip + 4].copy_from_slice(&19u16.to_be_bytes());
    cases.push(("tot_len under the header", f));
    let mut f = base.clone();
    f[ip + 2..ip + 4].copy_from_slice(&((base.len() - ip + 1) as u16).to_be_bytes());
    cases.push(("tot_len past the frame", f));
    let mut f = base.clone();
    f[ip + 2..ip + 4].copy_from_slice(&39u16.to_be_bytes());
    cases.push(("tot_len cuts the TCP header", f));
    let mut f = base.clone();
    f[ip] = 0x65;
    cases.push(("IPv4 ethertype, version 6", f));
    let mut f = base.clone();
    f[tcp + 12] = 4 << 4;
    cases.push(("TCP doff 4", f));
    let mut f = base.clone();
    f[tcp + 12] = 15 << 4;
    cases.push(("TCP doff past the segment", f));
    let mut u = Pkt::udp("10.1.0.5:40000", "10.0.0.1:4433", &[0x40; 8]);
    mode_a_service(&mut lab);
    lab.put_flow(
        FlowKey::new(sa("10.1.0.5:40000"), sa("10.0.0.1:4433"), IPPROTO_UDP),
        Flow::from_user(sa("10.0.0.1:62000"), sa(V4_BACKENDS[0]), 0, false),
    );
    u.l4 = L4::Udp;
    let good = u.build();
    assert!(
        lab.run(&good).action.is_forward(),
        "the unbroken datagram forwards"
    );
    let mut f = good.clone();
    f[tcp + 4..tcp + 6].copy_from_slice(&7u16.to_be_bytes());
    cases.push(("UDP length under its header", f));
    let mut f = good.clone();
    f[tcp + 4..tcp + 6].copy_from_slice(&100u16.to_be_bytes());
    cases.push(("UDP length past the datagram", f));
    let mut v6 = Pkt::tcp("[fd00::1:5]:40000", V6_LISTENER, SYN).build();
    v6[14] = 0x40;
    cases.push(("IPv6 ethertype, version 4", v6.clone()));
    v6[14] = 0x60;
    v6[18..20].copy_from_slice(&100u16.to_be_bytes());
    cases.push(("IPv6 payload past the frame", v6));
    for (what, f) in &cases {
        passes(&lab, f, what);
    }
    assert_eq!(lab.flows(), 1, "only the installed Mode A flow");
}
