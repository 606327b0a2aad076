//! Pick latency of every policy at 10 and 1000 backends, and Maglev table
//! build time. `cargo bench -p eg-balancer`.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use eg_balancer::{PickContext, Pool};
use eg_config::{BackendProtocol, Config};

const POLICIES: [&str; 11] = [
    "round_robin",
    "weighted_round_robin",
    "random",
    "weighted_random",
    "least_connections",
    "least_request",
    "p2c",
    "maglev",
    "ring_hash",
    "peak_ewma",
    "session_affinity",
];

fn spec(policy: &str, n: usize) -> eg_config::PoolSpec {
    let backends: String = (0..n)
        .map(|i| {
            format!(
                "[[clusters.backends]]\naddress = \"10.{}.{}.{}:80\"\nweight = {}\n",
                i / 65536,
                (i / 256) % 256,
                i % 256,
                i % 5 + 1
            )
        })
        .collect();
    let text = format!(
        "[[listeners]]\naddress=\"127.0.0.1:0\"\nprotocol=\"h1\"\n[[listeners.routes]]\ncluster=\"c\"\n[[clusters]]\nname=\"c\"\nlb_policy=\"{policy}\"\n{backends}"
    );
    let config = Config::from_toml(&text).expect("valid");
    config.clusters[0].pool()
}

fn pool(policy: &str, n: usize) -> Pool {
    Pool::new(&spec(policy, n), BackendProtocol::H1)
}

fn picks(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    for n in [10usize, 1000] {
        for policy in POLICIES {
            let p = pool(policy, n);
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(policy, n), &n, |b, _| {
                b.iter(|| {
                    key = key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                    let ctx = PickContext {
                        hash: Some(key),
                        ..Default::default()
                    };
                    black_box(p.pick(&ctx))
                })
            });
        }
    }
    group.finish();
}

fn maglev_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3));
    for n in [10usize, 1000] {
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| black_box(pool("maglev", n)))
        });
    }
    group.finish();
}

criterion_group!(benches, picks, maglev_build);
criterion_main!(benches);
