//! Golden tests of the kernel's TCP flow state (lb.h EG_TCP_*), through the
//! real program (BPF_PROG_TEST_RUN), root only: embryonic pairs expire after
//! the SYN timeout, FIN and RST either way cut both entries to the linger,
//! a SYN on a dead pair is placed again, and a stale reverse entry's NAT
//! port goes to the next flow. Time passes by moving `last_seen_ns` back
//! through the map.

mod common;

use std::net::SocketAddr;

use common::pkt::{self, Pkt, Seen, ACK, FIN, RST, SYN};
use common::{lab, Lab};
use eg_xdp::maps::{self, Flow, FlowKey, Stat, IPPROTO_TCP};
use eg_xdp::testrun::Action;

const LISTENER: &str = "10.0.0.1:80";
const BACKENDS: [&str; 3] = ["10.0.2.1:8080", "10.0.2.2:8080", "10.0.2.3:8080"];
const TABLE: [u32; 7] = [0, 1, 2, 0, 1, 2, 1];
/// Long enough that only the TCP states' own timeouts matter.
const IDLE_S: u32 = 3600;

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn service(lab: &mut Lab, backends: &[&str], table: &[u32]) {
    let list: Vec<(SocketAddr, bool)> = backends.iter().map(|a| (sa(a), true)).collect();
    lab.add_service(LISTENER, IPPROTO_TCP, maps::SVC_TCP_NAT, 0, 0, &list, table);
    lab.set_config(u32::MAX, IDLE_S);
}

fn forward(lab: &Lab, p: &Pkt) -> Seen {
    let out = lab.run(&p.build());
    assert!(
        out.action.is_forward(),
        "{p:?}: {:?}, want a forward",
        out.action
    );
    pkt::check(&out.data).unwrap_or_else(|e| panic!("{p:?}: rewritten packet: {e}"))
}

fn passes(lab: &Lab, p: &Pkt, what: &str) {
    let frame = p.build();
    let out = lab.run(&frame);
    assert_eq!(out.action, Action::Pass, "{what}");
    assert_eq!(out.data, frame, "{what}: a passed packet is untouched");
}

/// A kernel flow's two keys and the addresses its packets use.
struct Pair {
    client: String,
    backend: SocketAddr,
    nat: SocketAddr,
    fwd: FlowKey,
    rev: FlowKey,
}

impl Pair {
    /// Sends the client's SYN and returns the pair the kernel made.
    fn syn(lab: &Lab, client: &str) -> Self {
        let seen = forward(lab, &Pkt::tcp(client, LISTENER, SYN));
        assert!((maps::NAT_PORT_MIN..=maps::NAT_PORT_MAX).contains(&seen.src.port()));
        Self {
            client: client.to_string(),
            backend: seen.dst,
            nat: seen.src,
            fwd: FlowKey::new(sa(client), sa(LISTENER), IPPROTO_TCP),
            rev: FlowKey::new(seen.dst, seen.src, IPPROTO_TCP),
        }
    }

    /// SYN, the backend's SYN-ACK, the client's ACK.
    fn established(lab: &Lab, client: &str) -> Self {
        let p = Self::syn(lab, client);
        let back = forward(lab, &p.backend_pkt(SYN | ACK));
        assert_eq!((back.src, back.dst), (sa(LISTENER), sa(client)));
        forward(lab, &p.client_pkt(ACK));
        p
    }

    fn client_pkt(&self, flags: u8) -> Pkt {
        Pkt::tcp(&self.client, LISTENER, flags)
    }

    fn backend_pkt(&self, flags: u8) -> Pkt {
        Pkt::tcp(&self.backend.to_string(), &self.nat.to_string(), flags)
    }

    fn states(&self, lab: &mut Lab) -> (u8, u8) {
        let f = lab.flow(&self.fwd).expect("forward entry");
        let r = lab.flow(&self.rev).expect("reverse entry");
        (f.tcp_state, r.tcp_state)
    }

    /// Both entries last saw a packet `secs` ago.
    fn age(&self, lab: &mut Lab, secs: u64) {
        for k in [self.fwd, self.rev] {
            age(lab, &k, secs);
        }
    }
}

fn age(lab: &mut Lab, key: &FlowKey, secs: u64) {
    let mut f = lab.flow(key).expect("entry to age");
    f.last_seen_ns = maps::monotonic_ns().saturating_sub(secs * 1_000_000_000);
    lab.put_flow(*key, f);
}

#[test]
fn embryonic_pairs_expire_after_the_syn_timeout_established_ones_do_not() {
    let Some(mut lab) = lab("embryonic") else {
        return;
    };
    service(&mut lab, &BACKENDS, &TABLE);
    let half = Pair::syn(&lab, "10.1.0.5:40000");
    assert_eq!(half.states(&mut lab), (maps::TCP_SYN, maps::TCP_SYN));
    // A retransmitted SYN inside the timeout is the same flow.
    half.age(&mut lab, maps::TCP_SYN_TIMEOUT_S - 2);
    let again = forward(&lab, &half.client_pkt(SYN));
    assert_eq!((again.src, again.dst), (half.nat, half.backend));
    assert_eq!(lab.stat(Stat::NewFlows), 1);
    half.age(&mut lab, maps::TCP_SYN_TIMEOUT_S + 1);
    passes(
        &lab,
        &half.client_pkt(ACK),
        "embryonic pair past the SYN timeout",
    );
    passes(&lab, &half.backend_pkt(SYN | ACK), "its reverse entry too");

    let full = Pair::established(&lab, "10.1.0.6:40000");
    assert_eq!(
        full.states(&mut lab),
        (maps::TCP_ESTABLISHED, maps::TCP_ESTABLISHED),
        "the backend's answer establishes both entries"
    );
    full.age(&mut lab, 600);
    let out = forward(&lab, &full.client_pkt(ACK));
    assert_eq!(
        out.dst, full.backend,
        "established: the idle timeout applies"
    );
    full.age(&mut lab, u64::from(IDLE_S) + 1);
    passes(
        &lab,
        &full.client_pkt(ACK),
        "established pair past the idle timeout",
    );
}

#[test]
fn fin_and_rst_either_way_cut_both_entries_to_the_linger() {
    let Some(mut lab) = lab("fin_rst") else {
        return;
    };
    service(&mut lab, &BACKENDS, &TABLE);
    let linger = maps::TCP_CLOSE_LINGER_S;
    for (i, (flags, by_backend)) in [
        (FIN | ACK, false),
        (FIN | ACK, true),
        (RST, false),
        (RST, true),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!(
            "flags {flags:#x} from the {}",
            if by_backend { "backend" } else { "client" }
        );
        let p = Pair::established(&lab, &format!("10.1.0.{}:40000", 10 + i));
        let close = if by_backend {
            p.backend_pkt(flags)
        } else {
            p.client_pkt(flags)
        };
        let out = forward(&lab, &close);
        assert_eq!(out.tcp_flags, flags, "{what}");
        assert_eq!(
            p.states(&mut lab),
            (maps::TCP_CLOSING, maps::TCP_CLOSING),
            "{what}: both entries close"
        );
        // The closing handshake and late retransmissions still pass through.
        p.age(&mut lab, linger - 2);
        forward(&lab, &p.client_pkt(ACK));
        forward(&lab, &p.backend_pkt(ACK));
        assert_eq!(
            p.states(&mut lab),
            (maps::TCP_CLOSING, maps::TCP_CLOSING),
            "{what}: stays closed"
        );
        p.age(&mut lab, linger + 1);
        passes(
            &lab,
            &p.client_pkt(ACK),
            &format!("{what}: forward past the linger"),
        );
        passes(
            &lab,
            &p.backend_pkt(ACK),
            &format!("{what}: reverse past the linger"),
        );
    }
}

#[test]
fn a_syn_on_a_dead_pair_is_placed_again() {
    let Some(mut lab) = lab("syn_again") else {
        return;
    };
    service(&mut lab, &BACKENDS, &TABLE);
    // Closed: the client reuses its port after a FIN, and the old backend
    // is no longer eligible: Maglev picks another, with a fresh pair.
    let old = Pair::established(&lab, "10.1.0.5:40000");
    forward(&lab, &old.client_pkt(FIN | ACK));
    let i = BACKENDS
        .iter()
        .position(|b| sa(b) == old.backend)
        .expect("a backend");
    let mut down: Vec<(SocketAddr, bool)> = BACKENDS.iter().map(|a| (sa(a), true)).collect();
    down[i].1 = false;
    lab.set_backends(0, &down);
    let flows = lab.flows();
    let new = Pair::syn(&lab, "10.1.0.5:40000");
    assert_ne!(
        new.backend, old.backend,
        "placed again, the drained backend skipped"
    );
    assert!(
        lab.flow(&old.rev).is_none(),
        "the old reverse entry is removed"
    );
    assert_eq!(new.states(&mut lab), (maps::TCP_SYN, maps::TCP_SYN));
    assert_eq!(lab.flows(), flows, "one pair replaced by another");
    assert_eq!(lab.stat(Stat::NewFlows), 2);
    lab.set_backends(0, &down.iter().map(|(a, _)| (*a, true)).collect::<Vec<_>>());

    // The reverse entry gone (LRU) or stale: the SYN is a new connection.
    for (n, gone) in [(6, true), (7, false)] {
        let p = Pair::established(&lab, &format!("10.1.0.{n}:40000"));
        if gone {
            lab.remove_flow(&p.rev);
        } else {
            age(&mut lab, &p.rev, u64::from(IDLE_S) + 1);
        }
        let before = lab.stat(Stat::NewFlows);
        let again = Pair::syn(&lab, &p.client);
        assert_eq!(
            lab.stat(Stat::NewFlows),
            before + 1,
            "reverse gone {gone}: a new flow"
        );
        assert_eq!(again.states(&mut lab), (maps::TCP_SYN, maps::TCP_SYN));
    }
    // A live established pair keeps a stray SYN on its backend.
    let p = Pair::established(&lab, "10.1.0.8:40000");
    let before = lab.stat(Stat::NewFlows);
    let out = forward(&lab, &p.client_pkt(SYN));
    assert_eq!((out.src, out.dst), (p.nat, p.backend));
    assert_eq!(lab.stat(Stat::NewFlows), before);
}

#[test]
fn a_stale_reverse_entrys_port_is_reused() {
    let Some(mut lab) = lab("stale_port") else {
        return;
    };
    // One backend: the client's first NAT port is a function of its
    // address and ports only, so the test knows which port it will try.
    service(&mut lab, &BACKENDS[..1], &[0]);
    let client = "10.1.0.5:40000";
    let first = Pair::syn(&lab, client);
    let port = first.nat;
    lab.remove_flow(&first.fwd);
    lab.remove_flow(&first.rev);
    // Another client's pair holds that port.
    let other = sa("10.1.0.9:41000");
    let other_fwd = FlowKey::new(other, sa(LISTENER), IPPROTO_TCP);
    for (state, stale, want_same) in [
        (maps::TCP_ESTABLISHED, maps::TCP_SYN_TIMEOUT_S + 1, false),
        (maps::TCP_SYN, maps::TCP_SYN_TIMEOUT_S + 1, true),
        (maps::TCP_CLOSING, maps::TCP_CLOSE_LINGER_S + 1, true),
    ] {
        let mut fwd = Flow::new(port, first.backend, 0, false);
        fwd.tcp_state = state;
        let mut rev = Flow::new(sa(LISTENER), other, 0, true);
        rev.tcp_state = state;
        lab.put_flow(other_fwd, fwd);
        lab.put_flow(first.rev, rev);
        age(&mut lab, &first.rev, stale);
        let p = Pair::syn(&lab, client);
        if want_same {
            assert_eq!(
                p.nat, port,
                "state {state}: the stale entry's port is taken"
            );
            assert!(
                lab.flow(&other_fwd).is_none(),
                "state {state}: and its forward entry removed"
            );
            assert_eq!(lab.flows(), 2);
            let r = lab.flow(&first.rev).expect("reverse entry");
            assert_eq!(
                r.new_dst,
                maps::wire_addr(sa(client).ip()).0,
                "now the new client's"
            );
        } else {
            assert_ne!(p.nat, port, "a live entry's port is a collision");
            assert_eq!(lab.flows(), 4, "the live pair stays");
        }
        lab.remove_flow(&p.fwd);
        lab.remove_flow(&p.rev);
        for k in [other_fwd, first.rev] {
            if lab.flow(&k).is_some() {
                lab.remove_flow(&k);
            }
        }
    }
}
