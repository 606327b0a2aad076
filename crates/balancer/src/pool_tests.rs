//! Property tests of every policy and of passive health, on real pools
//! built from config text.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::*;
use crate::{Health, Outcome};

fn pool_with(policy: &str, weights: &[u32], extra: &str) -> Pool {
    let backends: String = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            format!(
                "[[clusters.backends]]\naddress = \"10.0.{}.{}:80\"\nweight = {w}\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let text = format!(
        "[[listeners]]\naddress=\"127.0.0.1:0\"\nprotocol=\"h1\"\n[[listeners.routes]]\ncluster=\"c\"\n\
         [[clusters]]\nname=\"c\"\nlb_policy=\"{policy}\"\n{extra}\n{backends}"
    );
    let config = eg_config::Config::from_toml(&text).expect("valid config");
    Pool::new(&config.clusters[0].pool(), BackendProtocol::H1)
}

fn ctx_key(key: u64) -> PickContext<'static> {
    PickContext {
        hash: Some(key),
        ..Default::default()
    }
}

/// Shares of `picks` picks, each released at once.
fn shares(pool: &Pool, picks: usize, keyed: bool) -> Vec<f64> {
    let mut counts = vec![0usize; pool.backends().len()];
    for k in 0..picks {
        let ctx = if keyed {
            ctx_key(crate::hash::mix(k as u64))
        } else {
            PickContext::default()
        };
        let g = pool.pick(&ctx).expect("pick");
        counts[g.backend().index] += 1;
    }
    counts.iter().map(|&c| c as f64 / picks as f64).collect()
}

fn assert_shares(got: &[f64], weights: &[u32], tolerance: f64, what: &str) {
    let total: u32 = weights.iter().sum();
    for (i, (&g, &w)) in got.iter().zip(weights).enumerate() {
        let want = f64::from(w) / f64::from(total);
        assert!(
            (g - want).abs() <= tolerance,
            "{what}: backend {i} share {g:.4}, want {want:.4} ± {tolerance}"
        );
    }
}

#[test]
fn weighted_shares_within_3_percent_for_1_2_3() {
    let weights = [1, 2, 3];
    for policy in [
        "round_robin",
        "weighted_round_robin",
        "random",
        "weighted_random",
        "session_affinity",
    ] {
        let p = pool_with(policy, &weights, "");
        assert_shares(&shares(&p, 60_000, false), &weights, 0.03, policy);
    }
    for policy in ["maglev", "ring_hash"] {
        let p = pool_with(policy, &weights, "");
        assert_shares(&shares(&p, 60_000, true), &weights, 0.03, policy);
    }
}

#[test]
fn load_policies_spread_held_connections_by_weight() {
    let weights = [1, 2, 3];
    for policy in ["least_connections", "least_request", "p2c", "peak_ewma"] {
        let p = pool_with(policy, &weights, "");
        let held: Vec<_> = (0..6_000)
            .map(|_| p.pick(&PickContext::default()).expect("pick"))
            .collect();
        let got: Vec<f64> = p
            .backends()
            .iter()
            .map(|b| b.in_flight() as f64 / held.len() as f64)
            .collect();
        assert_shares(&got, &weights, 0.03, policy);
    }
}

#[test]
fn least_prefers_the_least_loaded() {
    for policy in ["least_connections", "least_request"] {
        let p = pool_with(policy, &[1, 1, 1], "");
        let _a: Vec<_> = (0..5)
            .filter_map(|_| {
                p.pick_at(
                    &PickContext {
                        exclude: &[1, 2],
                        ..Default::default()
                    },
                    Instant::now(),
                )
            })
            .collect();
        let _b: Vec<_> = (0..3)
            .filter_map(|_| {
                p.pick_at(
                    &PickContext {
                        exclude: &[0, 2],
                        ..Default::default()
                    },
                    Instant::now(),
                )
            })
            .collect();
        for _ in 0..20 {
            assert_eq!(
                p.pick(&PickContext::default()).map(|g| g.backend().index),
                Some(2),
                "{policy}"
            );
        }
    }
}

#[test]
fn p2c_never_picks_the_more_loaded_of_two() {
    let p = pool_with("p2c", &[1, 1], "");
    let _load: Vec<_> = (0..10)
        .filter_map(|_| {
            p.pick(&PickContext {
                exclude: &[1],
                ..Default::default()
            })
        })
        .collect();
    for _ in 0..1000 {
        assert_eq!(
            p.pick(&PickContext::default()).map(|g| g.backend().index),
            Some(1)
        );
    }
}

#[test]
fn maglev_shares_within_1_percent_for_3_to_50_backends() {
    for n in [3usize, 5, 10, 20, 33, 50] {
        let p = pool_with("maglev", &vec![1; n], "");
        let table_shares = shares(&p, 200_000, true);
        let ideal = 1.0 / n as f64;
        for (i, s) in table_shares.iter().enumerate() {
            assert!(
                (s - ideal).abs() <= 0.01,
                "n={n} backend {i}: {s:.4} vs {ideal:.4}"
            );
        }
    }
}

#[test]
fn maglev_removing_one_backend_moves_few_keys() {
    for n in [5usize, 10, 20, 50] {
        let full = pool_with("maglev", &vec![1; n], "");
        let fewer = pool_with("maglev", &vec![1; n - 1], "");
        let keys = 100_000u64;
        let moved = (0..keys)
            .filter(|&k| {
                let key = crate::hash::mix(k);
                let a = full
                    .pick(&ctx_key(key))
                    .map(|g| g.backend().address.clone());
                let b = fewer
                    .pick(&ctx_key(key))
                    .map(|g| g.backend().address.clone());
                a != b
            })
            .count() as f64
            / keys as f64;
        assert!(
            moved <= 1.0 / n as f64 + 0.02,
            "n={n}: {moved:.4} of keys moved"
        );
    }
}

#[test]
fn hash_policies_are_consistent_and_skip_down_backends() {
    for policy in ["maglev", "ring_hash"] {
        let p = pool_with(policy, &[1, 1, 1, 1], "");
        let first: Vec<usize> = (0..200)
            .filter_map(|k| p.pick(&ctx_key(k)).map(|g| g.backend().index))
            .collect();
        let again: Vec<usize> = (0..200)
            .filter_map(|k| p.pick(&ctx_key(k)).map(|g| g.backend().index))
            .collect();
        assert_eq!(first, again, "{policy}: same key, same backend");
        p.backends()[0].set_active_up(false, Instant::now());
        for (k, before) in first.iter().enumerate() {
            let now = p
                .pick(&ctx_key(k as u64))
                .map(|g| g.backend().index)
                .expect("pick");
            assert_ne!(now, 0, "{policy}: down backend picked");
            if *before != 0 {
                assert_eq!(now, *before, "{policy}: key of a healthy backend moved");
            }
        }
    }
}

#[test]
fn session_cookie_sticks_and_falls_back() {
    let p = pool_with("session_affinity", &[1, 1, 1], "");
    let id = p.backends()[2].id;
    let ctx = PickContext {
        affinity: Some(id),
        ..Default::default()
    };
    for _ in 0..50 {
        assert_eq!(p.pick(&ctx).map(|g| g.backend().index), Some(2));
    }
    p.backends()[2].set_drained(true, Instant::now());
    assert_ne!(p.pick(&ctx).map(|g| g.backend().index), Some(2));
    assert_eq!(
        p.affinity_cookie.as_ref().map(|c| c.0.as_str()),
        Some("eg_affinity")
    );
}

#[test]
fn passive_ejection_backs_off_and_readmits() {
    let p = pool_with("round_robin", &[1, 1, 1, 1], "[clusters.outlier_detection]\nconsecutive_failures = 3\nbase_ejection_ms = 1000\nmax_ejection_ms = 4000\nmax_ejection_percent = 50\n");
    let b0 = || {
        p.pick(&PickContext {
            exclude: &[1, 2, 3],
            ..Default::default()
        })
    };
    for _ in 0..3 {
        b0().expect("pick").report(Outcome::Failure);
    }
    let now = Instant::now();
    let left = p.backends()[0]
        .ejected_for(now)
        .expect("ejected after 3 failures");
    assert!(left <= Duration::from_millis(1000) && left > Duration::from_millis(900));
    assert_eq!(p.backends()[0].health(), Health::Down);
    for k in 0..100 {
        assert_ne!(
            p.pick_at(&PickContext::default(), now)
                .map(|g| g.backend().index),
            Some(0),
            "pick {k}"
        );
    }
    // Readmitted after the window.
    let later = now + Duration::from_millis(1100);
    assert!(p.backends()[0].is_available(later));
    // A second ejection lasts twice as long.
    for _ in 0..3 {
        p.backends()[0]
            .consecutive_failures
            .fetch_add(0, std::sync::atomic::Ordering::Relaxed);
        if let Some(g) = p.pick_at(
            &PickContext {
                exclude: &[1, 2, 3],
                ..Default::default()
            },
            later,
        ) {
            p.outlier
                .as_ref()
                .expect("outlier")
                .record(g.backend(), Outcome::Failure, later);
        }
    }
    let second = p.backends()[0].ejected_for(later).expect("ejected again");
    assert!(
        second > Duration::from_millis(1900),
        "back-off doubled: {second:?}"
    );
}

#[test]
fn ejection_cap_keeps_half_the_pool() {
    let p = pool_with(
        "round_robin",
        &[1, 1, 1, 1],
        "[clusters.outlier_detection]\nconsecutive_failures = 1\nmax_ejection_percent = 50\n",
    );
    let now = Instant::now();
    for b in p.backends() {
        p.outlier
            .as_ref()
            .expect("outlier")
            .record(b, Outcome::Failure, now);
    }
    let out = p
        .backends()
        .iter()
        .filter(|b| b.ejected_for(now).is_some())
        .count();
    assert_eq!(out, 2, "never more than 50 % ejected");
    let single = pool_with(
        "round_robin",
        &[1],
        "[clusters.outlier_detection]\nconsecutive_failures = 1\nmax_ejection_percent = 100\n",
    );
    single
        .outlier
        .as_ref()
        .expect("outlier")
        .record(&single.backends()[0], Outcome::Failure, now);
    assert!(
        single.backends()[0].ejected_for(now).is_none(),
        "the last backend is never ejected"
    );
}

#[test]
fn slow_start_ramps_a_returning_backend() {
    let p = pool_with(
        "round_robin",
        &[1, 1],
        "[clusters.slow_start]\nwindow_ms = 10000\n",
    );
    let t0 = Instant::now();
    p.backends()[1].set_active_up(false, t0);
    p.backends()[1].set_active_up(true, t0);
    let share_at = |at: Instant| {
        let mut c: HashMap<usize, usize> = HashMap::new();
        for _ in 0..4000 {
            let g = p.pick_at(&PickContext::default(), at).expect("pick");
            *c.entry(g.backend().index).or_default() += 1;
        }
        *c.get(&1).unwrap_or(&0) as f64 / 4000.0
    };
    let early = share_at(t0 + Duration::from_millis(500));
    let mid = share_at(t0 + Duration::from_millis(5000));
    let done = share_at(t0 + Duration::from_millis(11_000));
    assert!(early < 0.15, "early share {early}");
    assert!(
        mid > early && mid < done,
        "ramping: {early} < {mid} < {done}"
    );
    assert!((done - 0.5).abs() < 0.03, "settled share {done}");
}

#[test]
fn peak_ewma_prefers_the_faster_backend() {
    let p = pool_with("peak_ewma", &[1, 1], "");
    let now = Instant::now();
    p.backends()[0].observe_latency(Duration::from_millis(50), now);
    p.backends()[1].observe_latency(Duration::from_millis(1), now);
    let fast = (0..1000)
        .filter(|_| p.pick(&PickContext::default()).map(|g| g.backend().index) == Some(1))
        .count();
    assert!(fast > 900, "fast backend picked {fast} / 1000");
}

#[test]
fn hash_policies_keep_non_divisible_weights_proportional() {
    // 2:3:5 has no common divisor with the smallest weight: integer
    // division once made it 1:1:2 (shares 25/25/50, off by 5 points).
    let weights = [2, 3, 5];
    for policy in ["maglev", "ring_hash"] {
        let p = pool_with(policy, &weights, "");
        assert_shares(&shares(&p, 60_000, true), &weights, 0.03, policy);
    }
}

#[test]
fn ring_walk_ends_when_every_backend_is_excluded() {
    use crate::policy::Policy as _;
    let p = pool_with("ring_hash", &[1, 1, 1], "");
    let exclude = [0, 1, 2];
    let ctx = PickContext {
        client_ip: None,
        hash: Some(7),
        affinity: None,
        exclude: &exclude,
    };
    assert!(p.pick(&ctx).is_none());
    // The walk stops once each of the 3 backends was seen and refused, not
    // after all 1500 points: count the points looked at, over many keys.
    let ring = crate::policy::hashing::Ring::new(p.backends());
    let steps = std::cell::Cell::new(0usize);
    let refuse = |_: &BackendState| {
        steps.set(steps.get() + 1);
        false
    };
    let mut most = 0;
    for k in 0..1000u64 {
        steps.set(0);
        let key = k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        assert!(ring.pick(p.backends(), &ctx_key(key), &refuse).is_none());
        most = most.max(steps.get());
    }
    assert!(most >= 3, "every backend is looked at ({most})");
    assert!(most < 150, "a walk looked at {most} of 1500 points");
}

#[test]
fn a_5xx_neither_fails_nor_forgives_without_eject_on_5xx() {
    let p = pool_with(
        "round_robin",
        &[1, 1],
        "[clusters.outlier_detection]\nconsecutive_failures = 2\n",
    );
    let outlier = p.outlier.as_ref().expect("outlier");
    let b = &p.backends()[0];
    let now = Instant::now();
    outlier.record(b, Outcome::Failure, now);
    for _ in 0..10 {
        outlier.record(b, Outcome::ServerError, now);
    }
    // The 5xx answers did not reset the failure streak: one more failure ejects.
    outlier.record(b, Outcome::Failure, now);
    assert!(
        b.ejected_for(now).is_some(),
        "5xx answers forgave a failing backend"
    );
}

/// The rule `Pool::maglev_table` documents, written out as the XDP
/// program runs it.
fn mirror_pick(table: &[u32], eligible: &[bool], key: u64) -> Option<usize> {
    let len = table.len() as u64;
    for probe in 0..=16u64 {
        let h = if probe == 0 {
            key
        } else {
            crate::hash::mix(key.wrapping_add(probe))
        };
        let i = *table.get((h % len) as usize)? as usize;
        if eligible.get(i).copied().unwrap_or(false) {
            return Some(i);
        }
    }
    let n = eligible.len();
    (0..n)
        .map(|i| (key % n as u64) as usize + i)
        .map(|i| i % n)
        .find(|&i| eligible[i])
}

#[test]
fn maglev_table_lets_another_plane_repeat_the_pick() {
    let p = pool_with("maglev", &[1, 2, 1, 3, 1], "maglev_table_size = 1021");
    let table = p.maglev_table().expect("maglev builds a table");
    assert_eq!(table.len(), 1021);
    assert!(pool_with("round_robin", &[1, 1], "")
        .maglev_table()
        .is_none());
    let now = Instant::now();
    for down in [vec![], vec![1], vec![0, 3, 4], vec![0, 1, 2, 3]] {
        for &i in &down {
            p.backends()[i].set_active_up(false, now);
        }
        let eligible: Vec<bool> = p.backends().iter().map(|b| b.is_available(now)).collect();
        for k in 0..2000u32 {
            let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + k * 7919));
            let ctx = PickContext {
                client_ip: Some(ip),
                ..Default::default()
            };
            let picked = p.pick(&ctx).map(|g| g.backend().index);
            let key = crate::hash::ip_key(ip);
            assert_eq!(
                picked,
                mirror_pick(table, &eligible, key),
                "down {down:?} ip {ip}"
            );
        }
        for b in p.backends() {
            b.set_active_up(true, now);
        }
    }
}
