//! Backends from DNS (SPEC §11): every backend `address` whose host is a
//! name is resolved in the background, each A/AAAA record becoming a
//! backend of its pool, re-resolved when the answer's TTL (clamped to
//! `[runtime] dns_min_ttl_ms`..`dns_max_ttl_ms`) runs out. A changed set
//! rebuilds the pools as a reload does, so every datapath follows and
//! backends that stay keep their state; a failing resolver keeps the last
//! good set.

pub mod dns;
mod expand;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use eg_config::{Config, Runtime};

pub use expand::expand;

/// How long one resolution may take: a DNS server that has not answered
/// within a second is not going to, and the last good set stays meanwhile.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Resolved {
    addrs: Vec<IpAddr>,
    due: Instant,
}

pub struct Discovery {
    servers: Vec<SocketAddr>,
    min_ttl: Duration,
    max_ttl: Duration,
    known: Mutex<HashMap<String, Resolved>>,
}

impl Discovery {
    pub fn new(runtime: &Runtime) -> Self {
        let servers = if runtime.dns_servers.is_empty() {
            dns::system_servers()
        } else {
            runtime.dns_servers.clone()
        };
        Self {
            servers,
            min_ttl: Duration::from_millis(runtime.dns_min_ttl_ms),
            max_ttl: Duration::from_millis(runtime.dns_max_ttl_ms),
            known: Mutex::new(HashMap::new()),
        }
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Resolved>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The records of `host`, when resolved at least once.
    pub fn records(&self, host: &str) -> Option<Vec<IpAddr>> {
        self.known().get(host).map(|r| r.addrs.clone())
    }

    /// Time until the next name is due, or `None` without names.
    pub fn next_due(&self, config: &Config) -> Option<Duration> {
        let names = expand::names(config);
        if names.is_empty() {
            return None;
        }
        let known = self.known();
        let now = Instant::now();
        let wait = names
            .iter()
            .map(|n| {
                known
                    .get(n)
                    .map_or(Duration::ZERO, |r| r.due.saturating_duration_since(now))
            })
            .min()
            .unwrap_or(self.max_ttl);
        Some(wait)
    }

    /// Resolve every name of `config` that is due; `true` when any set of
    /// records changed. Failures keep the last good set (and retry after
    /// `dns_min_ttl_ms`).
    pub async fn refresh(&self, config: &Config) -> bool {
        let names: BTreeSet<String> = expand::names(config);
        let now = Instant::now();
        let due: Vec<String> = {
            let known = self.known();
            names
                .into_iter()
                .filter(|n| known.get(n).is_none_or(|r| r.due <= now))
                .collect()
        };
        let mut changed = false;
        for name in due {
            let got = match dns::resolve(&name, &self.servers, RESOLVE_TIMEOUT).await {
                Ok(answer) => Ok(answer),
                // /etc/hosts and names the stub cannot query: the system
                // resolver, with no TTL (so the longest allowed).
                Err(e) => system(&name).await.map_err(|_| e),
            };
            let mut known = self.known();
            match got {
                Ok(answer) => {
                    let mut addrs = answer.addrs;
                    addrs.sort();
                    addrs.dedup();
                    let ttl = answer.ttl.clamp(self.min_ttl, self.max_ttl);
                    let before = known.insert(
                        name.clone(),
                        Resolved {
                            addrs: addrs.clone(),
                            due: Instant::now() + ttl,
                        },
                    );
                    if before.is_none_or(|b| b.addrs != addrs) {
                        tracing::info!(host = %name, records = ?addrs, ?ttl, "DNS: backend records");
                        changed = true;
                    }
                }
                Err(e) => {
                    eg_runtime::warn_limited!(host = %name, error = %e, "DNS resolution failed; keeping the last good records");
                    if let Some(r) = known.get_mut(&name) {
                        r.due = Instant::now() + self.min_ttl;
                    } else {
                        known.insert(
                            name,
                            Resolved {
                                addrs: Vec::new(),
                                due: Instant::now() + self.min_ttl,
                            },
                        );
                    }
                }
            }
        }
        changed
    }
}

async fn system(name: &str) -> std::io::Result<dns::Answer> {
    let addrs: Vec<IpAddr> = tokio::net::lookup_host((name, 0))
        .await?
        .map(|a| a.ip())
        .collect();
    Ok(dns::Answer {
        addrs,
        ttl: Duration::MAX,
    })
}
