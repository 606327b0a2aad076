use std::sync::Arc;

use eg_config::{BackendProtocol, PoolSpec};

use crate::policy::{Policy, RoundRobin};
use crate::{BackendState, Health, InFlight, PickContext};

/// A named set of backends and the policy that chooses among them.
#[derive(Debug)]
pub struct Pool {
    pub name: String,
    backends: Vec<Arc<BackendState>>,
    policy: Box<dyn Policy>,
}

impl Pool {
    /// Build from config; `default_protocol` applies to backends that do
    /// not name one (tcp on L4 listeners, h1 on HTTP listeners).
    pub fn new(spec: &PoolSpec, default_protocol: BackendProtocol) -> Self {
        let backends = spec
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Arc::new(BackendState::new(
                    i,
                    b.address.clone(),
                    b.protocol.unwrap_or(default_protocol),
                    b.weight,
                ))
            })
            .collect();
        Self {
            name: spec.name.clone(),
            backends,
            policy: Box::new(RoundRobin::default()),
        }
    }

    pub fn backends(&self) -> &[Arc<BackendState>] {
        &self.backends
    }

    /// Choose a healthy backend not in `ctx.exclude`; it counts as in
    /// flight until the returned guard drops.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<InFlight> {
        let eligible =
            |b: &BackendState| b.health() == Health::Up && !ctx.exclude.contains(&b.index);
        let i = self.policy.pick(&self.backends, ctx, &eligible)?;
        self.backends.get(i).map(|b| InFlight::new(Arc::clone(b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Pool {
        let text = (0..n)
            .map(|i| {
                format!(
                    "[[clusters.backends]]\naddress = \"127.0.0.1:{}\"\n",
                    9000 + i
                )
            })
            .collect::<String>();
        let text = format!("[[listeners]]\naddress=\"127.0.0.1:0\"\nprotocol=\"h1\"\n[[listeners.routes]]\ncluster=\"c\"\n[[clusters]]\nname=\"c\"\n{text}");
        let config = eg_config::Config::from_toml(&text).expect("valid");
        let spec = config.clusters[0].pool();
        Pool::new(&spec, BackendProtocol::Tcp)
    }

    #[test]
    fn rotates_and_skips_down_and_excluded() {
        let p = pool(3);
        let picks: Vec<usize> = (0..6)
            .filter_map(|_| p.pick(&PickContext::default()).map(|g| g.backend().index))
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        p.backends()[1].set_health(Health::Down);
        let ctx = PickContext {
            exclude: &[2],
            ..Default::default()
        };
        for _ in 0..5 {
            assert_eq!(p.pick(&ctx).map(|g| g.backend().index), Some(0));
        }
        let none = PickContext {
            exclude: &[0, 2],
            ..Default::default()
        };
        assert!(p.pick(&none).is_none());
    }

    #[test]
    fn in_flight_is_released_on_drop() {
        let p = pool(1);
        let g = p.pick(&PickContext::default()).expect("pick");
        assert_eq!(p.backends()[0].in_flight(), 1);
        drop(g);
        assert_eq!(p.backends()[0].in_flight(), 0);
    }
}
