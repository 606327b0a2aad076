//! ns/packet of the XDP program on its conntrack-hit path, through
//! BPF_PROG_TEST_RUN (root; in a network namespace of its own, as the
//! golden tests run):
//!
//!   cargo run --release -p eg-xdp --example testrun_bench [REPEAT]
//!
//! A test run repeats the program on one buffer, which the program
//! rewrites each time; so each case installs two entries that map the
//! packet's tuple to another and back (A->B becomes C->D, C->D becomes
//! A->B), and every repetition is a real hit: conntrack lookup, FIB
//! lookup, address, port and checksum rewrite, MACs, counters. The run
//! checks that the hit counter grew by exactly REPEAT. Each case runs
//! ROUNDS (5) times; on a shared machine the minimum is the program's own
//! cost and the median shows the noise. Prints one line per case:
//! `NAME MIN_NS MEDIAN_NS` (ns per packet, the kernel's mean per repetition).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;

use common::pkt::{Pkt, ACK};
use eg_xdp::maps::{Flow, FlowKey, Stat, IPPROTO_TCP, IPPROTO_UDP};

struct Case {
    name: &'static str,
    a: &'static str,
    b: &'static str,
    c: &'static str,
    d: &'static str,
    udp: bool,
}

const CASES: [Case; 4] = [
    // 10.0.9.9 has a permanent neighbour on eg0: FIB success, redirect.
    Case {
        name: "hit_v4_tcp_redirect",
        a: "10.1.0.5:40000",
        b: "10.0.9.9:80",
        c: "10.0.0.1:61000",
        d: "10.0.9.9:8080",
        udp: false,
    },
    // 10.0.2.x has none: one-arm, MACs swapped, XDP_TX.
    Case {
        name: "hit_v4_tcp_onearm",
        a: "10.1.0.5:40000",
        b: "10.0.2.1:80",
        c: "10.0.0.1:61000",
        d: "10.0.2.2:8080",
        udp: false,
    },
    Case {
        name: "hit_v6_tcp_redirect",
        a: "[fd00::1:5]:40000",
        b: "[fd00::9:9]:80",
        c: "[fd00::1]:61000",
        d: "[fd00::9:9]:8080",
        udp: false,
    },
    Case {
        name: "hit_v4_udp_modea",
        a: "10.1.0.5:40000",
        b: "10.0.9.9:4433",
        c: "10.0.0.1:62000",
        d: "10.0.9.9:4434",
        udp: true,
    },
];

fn sa(s: &str) -> SocketAddr {
    s.parse().expect("bench address")
}

fn main() -> std::process::ExitCode {
    let repeat: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let Some(mut lab) = common::lab("testrun_bench") else {
        return std::process::ExitCode::from(2);
    };
    // Returning (not exiting) drops the lab, which deletes its namespace.
    match bench(&mut lab, repeat) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench(lab: &mut common::Lab, repeat: u32) -> Result<(), String> {
    for case in &CASES {
        let proto = if case.udp { IPPROTO_UDP } else { IPPROTO_TCP };
        let (a, b, c, d) = (sa(case.a), sa(case.b), sa(case.c), sa(case.d));
        let make = |s, t, back| {
            if case.udp {
                Flow::from_user(s, t, 0, back)
            } else {
                Flow::new(s, t, 0, back)
            }
        };
        lab.put_flow(FlowKey::new(a, b, proto), make(c, d, false));
        lab.put_flow(FlowKey::new(c, d, proto), make(a, b, true));
        let frame = if case.udp {
            Pkt::udp(case.a, case.b, &[0x40; 64]).build()
        } else {
            Pkt::tcp(case.a, case.b, ACK).build()
        };
        let mut ns = Vec::new();
        for _ in 0..ROUNDS {
            let before = lab.stat(Stat::CtHit);
            let out =
                eg_xdp::testrun::run(lab.prog(), &frame, repeat).map_err(|e| e.to_string())?;
            let hits = lab.stat(Stat::CtHit) - before;
            if !out.action.is_forward() || hits != u64::from(repeat) {
                return Err(format!(
                    "{}: {:?}, {hits} hits of {repeat}: not the hit path",
                    case.name, out.action
                ));
            }
            ns.push(out.duration.as_nanos());
        }
        report(case.name, ns);
    }
    // For scale: a packet for no listener (parse, conntrack miss, two
    // service lookups, XDP_PASS).
    let frame = Pkt::tcp("10.1.0.5:40000", "10.0.0.1:81", ACK).build();
    let mut ns = Vec::new();
    for _ in 0..ROUNDS {
        let out = eg_xdp::testrun::run(lab.prog(), &frame, repeat).map_err(|e| e.to_string())?;
        ns.push(out.duration.as_nanos());
    }
    report("pass_not_a_listener", ns);
    Ok(())
}

const ROUNDS: usize = 5;

fn report(name: &str, mut ns: Vec<u128>) {
    ns.sort_unstable();
    if let (Some(min), Some(median)) = (ns.first(), ns.get(ns.len() / 2)) {
        println!("{name} {min} {median}");
    }
}
