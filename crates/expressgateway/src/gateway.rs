//! Turning a validated config into bound, serving listeners, and swapping
//! their live settings on reload.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use eg_config::{Config, ListenerProtocol};
use eg_l4::L4Settings;
use eg_runtime::metrics::metrics;
use eg_runtime::{report, Admission, CancellationToken, TaskTracker};
use tokio::net::TcpListener;

/// Every listener's settings built (certificates loaded) but nothing bound:
/// what `check` verifies and what a reload swaps in.
pub struct Prepared {
    l4: Vec<(usize, L4Settings)>,
}

impl Prepared {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let mut l4 = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            match l.protocol {
                ListenerProtocol::Tcp | ListenerProtocol::Tls => {
                    let settings = L4Settings::new(config, l, i)?;
                    l4.push((i, settings));
                }
                other => bail!(
                    "listeners[{i}].protocol = {}: this build does not serve that protocol yet",
                    other.as_str()
                ),
            }
        }
        if config.passthrough.is_some() {
            bail!("passthrough: QUIC passthrough is not served by this build yet");
        }
        Ok(Self { l4 })
    }
}

/// A running gateway: its listeners, their live settings and the drain
/// machinery.
pub struct Gateway {
    shutdown: CancellationToken,
    tracker: TaskTracker,
    l4: Vec<L4Slot>,
    drain_timeout_ms: u64,
}

struct L4Slot {
    index: usize,
    address: std::net::SocketAddr,
    protocol: ListenerProtocol,
    settings: Arc<ArcSwap<L4Settings>>,
}

impl Gateway {
    /// Bind every listener (all or nothing), report each, and serve.
    pub async fn start(prepared: Prepared, config: &Config) -> anyhow::Result<Self> {
        let mut bound = Vec::new();
        for (index, settings) in prepared.l4 {
            let Some(listener) = config.listeners.get(index) else {
                continue;
            };
            let socket = TcpListener::bind(listener.address)
                .await
                .with_context(|| format!("listeners[{index}]: cannot bind {}", listener.address))?;
            bound.push((index, listener, socket, settings));
        }
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let admission = Admission::new(
            config.runtime.max_inflight_connections,
            config.runtime.per_ip_connection_cap,
        );
        let mut l4 = Vec::new();
        for (index, listener, socket, settings) in bound {
            let local = socket.local_addr()?;
            report::listening(&settings.label, listener.protocol.as_str(), "tcp", local);
            tracing::info!(listener = %settings.label, address = %local, protocol = listener.protocol.as_str(), "listening");
            let settings = Arc::new(ArcSwap::from_pointee(settings));
            tokio::spawn(eg_l4::serve(
                socket,
                Arc::clone(&settings),
                Arc::clone(&admission),
                shutdown.clone(),
                tracker.clone(),
            ));
            l4.push(L4Slot {
                index,
                address: listener.address,
                protocol: listener.protocol,
                settings,
            });
        }
        Ok(Self {
            shutdown,
            tracker,
            l4,
            drain_timeout_ms: config.runtime.drain_timeout_ms,
        })
    }

    pub fn drain_timeout_ms(&self) -> u64 {
        self.drain_timeout_ms
    }

    /// SIGHUP: re-read and validate the file; swap what can change live.
    /// An invalid file changes nothing.
    pub fn reload(&self, path: &Path) {
        let outcome = Config::load(path)
            .map_err(anyhow::Error::from)
            .and_then(|config| Prepared::new(&config).map(|p| (config, p)));
        let (config, prepared) = match outcome {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "reload rejected; keeping the running configuration");
                metrics()
                    .config_reloads_total
                    .with_label_values(&["rejected"])
                    .inc();
                return;
            }
        };
        let mut restart_needed = config.listeners.len() != self.l4.len();
        for (index, settings) in prepared.l4 {
            let listener = config.listeners.get(index);
            match self.l4.iter().find(|s| s.index == index) {
                Some(slot)
                    if listener.is_some_and(|l| {
                        l.address == slot.address && l.protocol == slot.protocol
                    }) =>
                {
                    slot.settings.store(Arc::new(settings));
                }
                _ => restart_needed = true,
            }
        }
        if restart_needed {
            tracing::warn!("reload applied to existing listeners; added, removed or re-addressed listeners need a restart");
            metrics()
                .config_reloads_total
                .with_label_values(&["partial"])
                .inc();
        } else {
            tracing::info!("configuration reloaded");
            metrics()
                .config_reloads_total
                .with_label_values(&["ok"])
                .inc();
        }
    }

    /// Stop accepting, then wait up to `budget` for open work to finish.
    pub async fn drain(self, budget: Duration) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(budget, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tracker.len(),
                "drain budget spent; closing remaining connections"
            );
        }
    }
}
