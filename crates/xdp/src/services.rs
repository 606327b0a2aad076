//! Which listeners the kernel serves, and the map contents that say so:
//! one service per eligible listener, its backends as a contiguous range
//! of the backends map, and its Maglev table copied from the one balancer
//! (so a flow gets the backend userspace would have picked).
//!
//! Pure planning, no BPF: `Plane::apply` writes what this computes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use eg_balancer::Pool;
use eg_config::{HashSource, LbPolicy};

use crate::maps::{MAGLEV_SLOTS, MAX_BACKENDS, MAX_SERVICES};

/// A `tcp` listener offered to the kernel, as the gateway knows it.
pub struct Candidate {
    /// The listener's label (logs).
    pub label: String,
    /// The address it is bound to (the real port when configured as 0).
    pub local: SocketAddr,
    pub pool: Arc<Pool>,
    /// No backend of the pool is reached over TLS (the kernel relays
    /// bytes; it cannot originate TLS).
    pub cleartext: bool,
}

/// One service the kernel forwards, with what its map entries hold.
pub struct Service {
    pub label: String,
    /// The listener's bound address: the service key.
    pub local: SocketAddr,
    pub id: u32,
    pub backend_base: u32,
    /// The backends' addresses, in pool order (the table's indices).
    pub backends: Vec<SocketAddr>,
    /// Slot -> backend offset within this service.
    pub table: Vec<u32>,
    /// Read for backend eligibility (health and drain) on every sync.
    pub pool: Arc<Pool>,
}

impl Service {
    /// Whether userspace would pick each backend now (checks pass, not
    /// ejected, not drained), in pool order.
    pub fn eligibility(&self, now: Instant) -> Vec<bool> {
        self.pool
            .backends()
            .iter()
            .map(|b| b.is_available(now))
            .collect()
    }
}

/// What the kernel serves and what stays in userspace (with the reason).
#[derive(Default)]
pub struct Plan {
    pub services: Vec<Service>,
    pub userspace: Vec<(String, String)>,
}

impl Plan {
    /// Place every candidate that fits, in order, within the program's
    /// fixed map sizes.
    pub fn new(candidates: Vec<Candidate>) -> Self {
        let mut plan = Self::default();
        let mut next_backend = 0u32;
        for c in candidates {
            match plan.place(&c, next_backend) {
                Ok(service) => {
                    next_backend += service.backends.len() as u32;
                    plan.services.push(service);
                }
                Err(reason) => plan.userspace.push((c.label, reason)),
            }
        }
        plan
    }

    fn place(&self, c: &Candidate, next_backend: u32) -> Result<Service, String> {
        if !c.cleartext {
            return Err("its backends use TLS".into());
        }
        // A wildcard service would match any destination address, and the
        // plane needs forwarding on: a routed SYN for another host's port
        // would be NATed to our backend. The userspace socket only ever
        // sees the host's own addresses.
        if c.local.ip().is_unspecified() {
            return Err(
                "it listens on a wildcard address; give it the interface's address to serve it in the kernel"
                    .into(),
            );
        }
        if c.pool.policy_name != LbPolicy::Maglev {
            return Err(format!(
                "lb_policy is {} (the kernel follows maglev only)",
                c.pool.policy_name.as_str()
            ));
        }
        if c.pool.slow_start().is_some() {
            return Err("its pool has slow_start (ramping picks no table can mirror)".into());
        }
        if c.pool
            .hash_key
            .as_ref()
            .is_some_and(|k| k.source != HashSource::Ip)
        {
            return Err("its maglev hash_key is not the client ip".into());
        }
        let backends = c
            .pool
            .backends()
            .iter()
            .map(|b| b.address.parse::<SocketAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "a backend address is a host name, not an IP".to_owned())?;
        if backends.is_empty() {
            return Err("its pool has no backends".into());
        }
        if backends
            .iter()
            .any(|b| b.is_ipv4() != c.local.is_ipv4() || b.port() == 0)
        {
            return Err("a backend's address family differs from the listener's".into());
        }
        let table = c
            .pool
            .maglev_table()
            .ok_or_else(|| "its pool has no maglev table".to_owned())?
            .to_vec();
        if table.is_empty() || table.len() > MAGLEV_SLOTS as usize {
            return Err(format!(
                "maglev_table_size {} is above the kernel's {}",
                table.len(),
                MAGLEV_SLOTS
            ));
        }
        let id = self.services.len() as u32;
        if id >= MAX_SERVICES {
            return Err(format!(
                "the kernel serves at most {} listeners",
                MAX_SERVICES
            ));
        }
        let count = backends.len() as u32;
        if next_backend.saturating_add(count) > MAX_BACKENDS {
            return Err(format!(
                "the kernel holds at most {} backends over all listeners",
                MAX_BACKENDS
            ));
        }
        Ok(Service {
            label: c.label.clone(),
            local: c.local,
            id,
            backend_base: next_backend,
            backends,
            table,
            pool: Arc::clone(&c.pool),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eg_config::{BackendProtocol, Config};

    fn pool(policy: &str, addrs: &[&str]) -> Arc<Pool> {
        let mut text = format!(
            "[[listeners]]\naddress = \"10.0.0.1:80\"\nprotocol = \"tcp\"\nlb_policy = \"{policy}\"\n"
        );
        for a in addrs {
            text.push_str(&format!("[[listeners.backends]]\naddress = \"{a}\"\n"));
        }
        let config = Config::from_toml(&text).expect("config");
        let spec = config.listeners[0].default_pool(0);
        Arc::new(Pool::new(&spec, BackendProtocol::Tcp))
    }

    fn candidate(label: &str, pool: Arc<Pool>, cleartext: bool) -> Candidate {
        Candidate {
            label: label.into(),
            local: "10.0.0.1:80".parse().unwrap(),
            pool,
            cleartext,
        }
    }

    #[test]
    fn wildcard_listeners_stay_in_userspace() {
        let two = &["10.0.0.2:80", "10.0.0.3:80"];
        let mut any = candidate("any", pool("maglev", two), true);
        any.local = "0.0.0.0:80".parse().unwrap();
        let plan = Plan::new(vec![any, candidate("own", pool("maglev", two), true)]);
        let served: Vec<_> = plan.services.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(served, ["own"]);
        assert!(
            plan.userspace[0].1.contains("wildcard"),
            "{:?}",
            plan.userspace
        );
    }

    #[test]
    fn maglev_cleartext_listeners_are_services_the_rest_stay_in_userspace() {
        let two = &["10.0.0.2:80", "10.0.0.3:80"];
        let plan = Plan::new(vec![
            candidate("a", pool("maglev", two), true),
            candidate("rr", pool("round_robin", two), true),
            candidate("tls", pool("maglev", two), false),
            candidate("name", pool("maglev", &["backend:80"]), true),
            candidate("v6", pool("maglev", &["[::1]:80"]), true),
            candidate("b", pool("maglev", &["10.0.0.4:81"]), true),
        ]);
        let served: Vec<_> = plan.services.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(served, ["a", "b"]);
        let kept: Vec<_> = plan.userspace.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(kept, ["rr", "tls", "name", "v6"]);
        let (a, b) = (&plan.services[0], &plan.services[1]);
        assert_eq!((a.id, a.backend_base, b.id, b.backend_base), (0, 0, 1, 2));
        assert_eq!(a.table.len(), 65_537);
        assert!(a.table.iter().all(|&i| i < 2));
        assert!(b.table.iter().all(|&i| i == 0));
    }
}
