//! SPEC §11 simulated: two gateway instances built from the same config,
//! sharing nothing, place the same connection IDs on the same backends
//! (Maglev over the CID), route the same QUIC-LB IDs to the same backends,
//! and agree on consistent-hash keys of an HTTP-style pool too.

use eg_balancer::hash::hash_bytes;
use eg_balancer::{PickContext, Pool};
use eg_config::{BackendProtocol, Config};

use crate::settings::Settings;

const CONFIG: &str = r#"
[passthrough]
bind_addr = "127.0.0.1:0"
backends = [
  { address = "10.0.0.1:443", server_id = "01" },
  { address = "10.0.0.2:443", server_id = "02", weight = 2 },
  { address = "10.0.0.3:443", server_id = "03" },
  { address = "10.0.0.4:443", server_id = "04", weight = 3 },
]
[passthrough.quic_lb]
server_id_len = 1
[[clusters]]
name = "web"
lb_policy = "maglev"
hash_key = { source = "header", name = "x-user" }
[[clusters.backends]]
address = "10.0.1.1:80"
[[clusters.backends]]
address = "10.0.1.2:80"
[[clusters.backends]]
address = "10.0.1.3:80"
[[listeners]]
address = "127.0.0.1:0"
protocol = "h1"
[[listeners.routes]]
path_prefix = "/"
cluster = "web"
"#;

/// One "instance": its own settings, pools and backend state.
fn instance(config: &Config) -> (Settings, Pool) {
    let carry = eg_runtime::Carry::default();
    let settings = Settings::new(config, &carry)
        .expect("settings")
        .expect("passthrough");
    let web = config.cluster("web").expect("cluster").pool();
    (settings, Pool::carrying(&web, BackendProtocol::H1, &carry))
}

fn cid(i: u32) -> Vec<u8> {
    let h = hash_bytes(&i.to_be_bytes()).to_be_bytes();
    h.iter().chain(h.iter()).copied().take(12).collect()
}

#[test]
fn two_instances_with_one_config_agree_without_talking() {
    let config = Config::from_toml(CONFIG).expect("config");
    let (a, web_a) = instance(&config);
    let (b, web_b) = instance(&config);
    let place = |s: &Settings, cid: &[u8]| {
        let ctx = PickContext {
            hash: Some(hash_bytes(cid)),
            ..Default::default()
        };
        s.pool.pick(&ctx).map(|p| p.backend().address.clone())
    };
    let mut used = std::collections::HashSet::new();
    for i in 0..5000 {
        let c = cid(i);
        let on_a = place(&a, &c);
        assert_eq!(on_a, place(&b, &c), "CID {c:02x?}");
        used.extend(on_a);
    }
    assert_eq!(used.len(), 4, "every backend takes new flows");
    // A QUIC-LB ID names its backend on any instance.
    let format = a.quic_lb.as_ref().expect("quic_lb").format;
    for sid in 1u8..=4 {
        let id = format.encode(&[sid], &[9; 8]);
        let (ia, _) = a.quic_lb_target(&id).expect("routed");
        let (ib, _) = b.quic_lb_target(&id).expect("routed");
        assert_eq!(ia, ib);
        assert_eq!(ia, usize::from(sid - 1));
    }
    // And a consistent-hash HTTP pool: the same header value, the same
    // backend.
    for i in 0..2000u32 {
        let key = hash_bytes(format!("user-{i}").as_bytes());
        let ctx = PickContext {
            hash: Some(key),
            ..Default::default()
        };
        let pa = web_a.pick(&ctx).map(|p| p.backend().address.clone());
        let pb = web_b.pick(&ctx).map(|p| p.backend().address.clone());
        assert_eq!(pa, pb);
    }
}
