//! Turning a validated config into bound, serving listeners, and swapping
//! their live settings on reload.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use eg_admin::AdminState;
use eg_balancer::Pool;
use eg_config::{Config, ListenerProtocol};
use eg_http::HttpSettings;
use eg_l4::L4Settings;
use eg_quic::endpoint::Gate;
use eg_quic::front::H3Limits;
use eg_quic::relay::{server_config_for, RelaySettings};
use eg_runtime::metrics::metrics;
use eg_runtime::{report, Admission, CancellationToken, TaskTracker};
use eg_tls::BackendTls;
use tokio::net::TcpListener;

/// One listener's settings, built (certificates loaded) but not bound.
enum Built {
    L4(L4Settings),
    Http(HttpSettings),
    /// `quic` serving HTTP/3, with its QUIC server config.
    H3(HttpSettings, Box<quinn::ServerConfig>),
    /// `quic` with `raw_proxy`: the raw QUIC relay (Mode B).
    Relay(RelaySettings, Box<quinn::ServerConfig>),
}

/// Every listener's settings built but nothing bound: what `check`
/// verifies and what a reload swaps in.
pub struct Prepared {
    listeners: Vec<Built>,
    /// Every pool with its backends' TLS, for active health checks.
    pools: Vec<(Arc<Pool>, Vec<Option<BackendTls>>)>,
    /// Mode B pools: listed by the admin API (and drainable); their checks
    /// (a QUIC handshake) start with the others.
    relay_pools: Vec<Arc<Pool>>,
    /// `[passthrough]` (Mode A), if configured.
    passthrough: Option<eg_passthrough::Settings>,
    connect_timeout: Duration,
}

impl Prepared {
    /// `carry`: what the running generation knows of its backends and
    /// connections, kept where the new config names the same ones.
    pub fn new(config: &Config, carry: &eg_runtime::Carry) -> anyhow::Result<Self> {
        let clusters = eg_http::build_clusters(config, carry)?;
        // Clusters HTTP routes send to get the HTTP side's checks; a
        // cluster only Mode B uses is checked by its relay (a QUIC
        // handshake in the relay's ALPN), not by HTTP probes.
        let routed: std::collections::HashSet<&str> = config
            .listeners
            .iter()
            .filter(|l| l.quic.as_ref().is_none_or(|q| q.raw_proxy.is_none()))
            .flat_map(|l| l.routes.iter().filter_map(|r| r.cluster.as_deref()))
            .collect();
        let mut pools: Vec<_> = clusters
            .iter()
            .filter(|(name, _)| routed.contains(name.as_str()))
            .map(|(_, h)| (Arc::clone(&h.pool), h.backend_tls()))
            .collect();
        let mut listeners = Vec::with_capacity(config.listeners.len());
        let mut relay_pools = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let built = match (l.protocol, l.quic.as_ref()) {
                (ListenerProtocol::Tcp | ListenerProtocol::Tls, _) => {
                    let s = L4Settings::new(config, l, i, carry)?;
                    pools.push((Arc::clone(&s.pool), s.backend_tls()));
                    Built::L4(s)
                }
                (ListenerProtocol::Quic, Some(quic)) if quic.raw_proxy.is_none() => {
                    let s = HttpSettings::new(config, l, i, &clusters, carry)?;
                    if let Some(h) = &s.default_pool {
                        pools.push((Arc::clone(&h.pool), h.backend_tls()));
                    }
                    let server = eg_quic::endpoint::server_config(
                        quic,
                        &format!("listeners[{i}]"),
                        vec![b"h3".to_vec()],
                        carry,
                    )?;
                    Built::H3(s, Box::new(server))
                }
                (ListenerProtocol::Quic, _) => {
                    let s = RelaySettings::new(config, l, i, carry)?;
                    relay_pools.push(Arc::clone(&s.pool));
                    Built::Relay(s, Box::new(server_config_for(l, i, carry)?))
                }
                (ListenerProtocol::H1 | ListenerProtocol::H1s, _) => {
                    let s = HttpSettings::new(config, l, i, &clusters, carry)?;
                    if let Some(h) = &s.default_pool {
                        pools.push((Arc::clone(&h.pool), h.backend_tls()));
                    }
                    Built::Http(s)
                }
            };
            listeners.push(built);
        }
        let passthrough = eg_passthrough::Settings::new(config, carry)?;
        Ok(Self {
            listeners,
            pools,
            relay_pools,
            passthrough,
            connect_timeout: Duration::from_millis(config.runtime.connect_timeout_ms),
        })
    }

    /// Start the active health checks of every pool. They stop by
    /// themselves when a reload replaces the pool.
    fn spawn_health_checks(&mut self) -> Vec<Arc<Pool>> {
        let mut live = Vec::with_capacity(self.pools.len());
        for (pool, tls) in self.pools.drain(..) {
            eg_http::health::spawn(&pool, tls, self.connect_timeout);
            live.push(pool);
        }
        for built in &self.listeners {
            if let Built::Relay(s, _) = built {
                eg_quic::relay::spawn_health_checks(s);
            }
        }
        live.append(&mut self.relay_pools);
        if let Some(pt) = &self.passthrough {
            // Mode A holds no keys: its probe is a QUIC version
            // negotiation, which every QUIC server answers.
            eg_balancer::health::active::spawn(
                &pt.pool,
                Arc::new(eg_passthrough::probe::VersionProbe),
            );
            live.push(Arc::clone(&pt.pool));
        }
        live
    }
}

enum Live {
    L4(Arc<ArcSwap<L4Settings>>),
    Http(Arc<ArcSwap<HttpSettings>>),
    Relay(Arc<ArcSwap<RelaySettings>>),
}

impl Live {
    /// The pools these settings send to.
    fn pools(&self) -> Vec<Arc<Pool>> {
        match self {
            Self::L4(s) => vec![Arc::clone(&s.load().pool)],
            Self::Relay(s) => vec![Arc::clone(&s.load().pool)],
            Self::Http(s) => {
                let s = s.load();
                s.default_pool
                    .iter()
                    .chain(s.routes.iter().filter_map(|r| r.pool.as_ref()))
                    .map(|h| Arc::clone(&h.pool))
                    .collect()
            }
        }
    }
}

struct Slot {
    address: SocketAddr,
    /// The address it is bound to (the real port when `address` has 0).
    local: SocketAddr,
    protocol: ListenerProtocol,
    live: Live,
    /// QUIC listeners: the endpoint, whose server config (certificates,
    /// Retry key, transport limits) a reload swaps for new connections.
    endpoint: Option<quinn::Endpoint>,
    /// QUIC listeners: the Retry policy and per-IP cap, re-set by a reload.
    gate: Option<Arc<Gate>>,
}

/// What asked for new settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// SIGHUP: re-read the configuration file.
    Reload,
    /// SIGUSR1: keep the running configuration, re-read certificates and keys.
    CertRotation,
    /// A backend host name's DNS records changed: rebuild the pools from
    /// the running configuration.
    Discovery,
}

/// The Mode A socket: roomy buffers, as every QUIC endpoint's.
fn bind_udp(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    eg_runtime::tune_udp_socket(&socket);
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// A bound socket of either transport.
enum Socket {
    Tcp(TcpListener),
    Udp(quinn::Endpoint),
}

impl Socket {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Tcp(s) => s.local_addr(),
            Self::Udp(e) => e.local_addr(),
        }
    }
}

/// A running gateway: its listeners, their live settings and the drain
/// machinery.
pub struct Gateway {
    /// The configuration running now (SIGUSR1 rebuilds from it).
    running: ArcSwap<Config>,
    /// The configuration the process started with: what its sockets,
    /// threads and other restart-only keys still hold. Every reload is
    /// compared with it, not with the last one loaded, so a key left
    /// unapplied stays named (and the reload `restart_required`) until a
    /// restart applies it.
    bound: Config,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    slots: Vec<Slot>,
    /// `[runtime]` drain and settle times, re-set by a reload.
    drain_timeout_ms: AtomicU64,
    settle_ms: AtomicU64,
    admin: Option<Arc<AdminState>>,
    /// Process-wide connection caps, re-set by a reload.
    admission: Arc<Admission>,
    /// Backend state and upstream connections, from one generation to the
    /// next.
    carry: Arc<eg_runtime::Carry>,
    /// The running generation's pools (and those of listeners a reload
    /// could not touch, which still serve from them), retired (their
    /// checks stopped) when a reload replaces them.
    pools: ArcSwap<Vec<Arc<Pool>>>,
    /// `[passthrough]`'s live settings, swapped by a reload.
    passthrough: Option<Arc<ArcSwap<eg_passthrough::Settings>>>,
    /// Backend host names and their current records.
    discovery: Arc<crate::discovery::Discovery>,
    /// The XDP plane (`[xdp] enabled`); dropping it detaches the program.
    xdp: crate::xdp::Xdp,
}

/// The `tcp` listeners the XDP plane may take, as they serve now.
fn xdp_offers(slots: &[Slot]) -> Vec<crate::xdp::Offer> {
    slots
        .iter()
        .filter(|s| s.protocol == ListenerProtocol::Tcp)
        .filter_map(|s| match &s.live {
            Live::L4(live) => {
                let l = live.load();
                Some(crate::xdp::Offer {
                    label: l.label.clone(),
                    local: s.local,
                    pool: Arc::clone(&l.pool),
                    cleartext: l.backend_tls().iter().all(Option::is_none),
                })
            }
            _ => None,
        })
        .collect()
}

impl Gateway {
    /// Bind every listener (all or nothing), report each, and serve.
    pub async fn start(
        mut prepared: Prepared,
        config: &Config,
        carry: Arc<eg_runtime::Carry>,
        discovery: Arc<crate::discovery::Discovery>,
    ) -> anyhow::Result<Self> {
        // Before any socket is bound: a plane that cannot start (no
        // privilege, no such interface) binds nothing.
        let xdp = crate::xdp::Xdp::attach(config)?;
        let mut sockets = Vec::with_capacity(prepared.listeners.len());
        for ((index, listener), built) in config
            .listeners
            .iter()
            .enumerate()
            .zip(&mut prepared.listeners)
        {
            let socket = match built {
                Built::H3(_, server) | Built::Relay(_, server) => {
                    let quic = listener
                        .quic
                        .as_ref()
                        .context("quic listener without [listeners.quic]")?;
                    let server = (**server).clone();
                    Socket::Udp(eg_quic::endpoint::bind(
                        listener.address,
                        server,
                        quic,
                        &format!("listeners[{index}]"),
                    )?)
                }
                _ => Socket::Tcp(TcpListener::bind(listener.address).await.with_context(|| {
                    format!("listeners[{index}]: cannot bind {}", listener.address)
                })?),
            };
            sockets.push(socket);
        }
        let passthrough_socket =
            match &config.passthrough {
                Some(pt) => Some(bind_udp(pt.bind_addr).with_context(|| {
                    format!("passthrough.bind_addr: cannot bind {}", pt.bind_addr)
                })?),
                None => None,
            };
        let admin_socket = match config.observability.metrics_bind {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("observability.metrics_bind: cannot bind {addr}"))?,
            ),
            None => None,
        };
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let rt = &config.runtime;
        let admission = Admission::new(rt.max_inflight_connections, rt.per_ip_connection_cap);
        let pools = prepared.spawn_health_checks();
        let running_pools = ArcSwap::from_pointee(pools.clone());
        let mut admin_addr = None;
        let admin = match admin_socket {
            Some(socket) => {
                let state = AdminState::new(
                    config.admin.api_token_hash.as_deref(),
                    config.admin.allow_non_loopback,
                );
                state.pools.store(Arc::new(pools));
                admin_addr = Some(socket.local_addr()?);
                tokio::spawn(eg_admin::serve(
                    socket,
                    Arc::clone(&state),
                    shutdown.clone(),
                ));
                Some(state)
            }
            None => None,
        };
        let mut slots = Vec::with_capacity(sockets.len());
        let mut shown = Vec::with_capacity(sockets.len());
        let entries = config.listeners.iter().zip(sockets).zip(prepared.listeners);
        for (index, ((listener, socket), built)) in entries.enumerate() {
            let local = socket.local_addr()?;
            let label = listener.label(index);
            let transport = if matches!(socket, Socket::Udp(_)) {
                "udp"
            } else {
                "tcp"
            };
            report::listening(&label, listener.protocol.as_str(), transport, local);
            shown.push(eg_admin::ListenerInfo {
                name: label.clone(),
                protocol: listener.protocol.as_str().to_owned(),
                address: format!("{local}/{transport}"),
            });
            tracing::info!(listener = %label, address = %local, protocol = listener.protocol.as_str(), transport, "listening");
            let (admission, stop, tasks) =
                (Arc::clone(&admission), shutdown.clone(), tracker.clone());
            let endpoint = match &socket {
                Socket::Udp(e) => Some(e.clone()),
                Socket::Tcp(_) => None,
            };
            let mut gate_of_slot = None;
            let live = match (built, socket) {
                (Built::L4(s), Socket::Tcp(socket)) => {
                    let s = Arc::new(ArcSwap::from_pointee(s));
                    tokio::spawn(eg_l4::serve(socket, Arc::clone(&s), admission, stop, tasks));
                    Live::L4(s)
                }
                (Built::Http(s), Socket::Tcp(socket)) => {
                    let s = Arc::new(ArcSwap::from_pointee(s));
                    tokio::spawn(eg_http::serve(
                        socket,
                        Arc::clone(&s),
                        admission,
                        stop,
                        tasks,
                    ));
                    Live::Http(s)
                }
                (Built::H3(s, _), Socket::Udp(endpoint)) => {
                    let quic = listener
                        .quic
                        .as_ref()
                        .context("quic listener without [listeners.quic]")?;
                    let gate = Arc::new(Gate::new(quic, admission));
                    gate_of_slot = Some(Arc::clone(&gate));
                    let limits = H3Limits {
                        max_requests_per_connection: rt.max_requests_per_h3_connection,
                    };
                    let s = Arc::new(ArcSwap::from_pointee(s));
                    tokio::spawn(eg_quic::front::serve(
                        endpoint,
                        Arc::clone(&s),
                        gate,
                        limits,
                        stop,
                        tasks,
                    ));
                    Live::Http(s)
                }
                (Built::Relay(s, _), Socket::Udp(endpoint)) => {
                    let quic = listener
                        .quic
                        .as_ref()
                        .context("quic listener without [listeners.quic]")?;
                    let gate = Arc::new(Gate::new(quic, admission));
                    gate_of_slot = Some(Arc::clone(&gate));
                    let s = Arc::new(ArcSwap::from_pointee(s));
                    tokio::spawn(eg_quic::relay::serve(
                        endpoint,
                        Arc::clone(&s),
                        gate,
                        stop,
                        tasks,
                    ));
                    Live::Relay(s)
                }
                _ => bail!("listeners[{index}]: internal mismatch of socket and listener kind"),
            };
            slots.push(Slot {
                address: listener.address,
                local,
                protocol: listener.protocol,
                live,
                endpoint,
                gate: gate_of_slot,
            });
        }
        let mut passthrough = None;
        if let (Some(socket), Some(settings)) = (passthrough_socket, prepared.passthrough.take()) {
            let local = socket.local_addr()?;
            report::listening("passthrough", "passthrough", "udp", local);
            shown.push(eg_admin::ListenerInfo {
                name: "passthrough".to_owned(),
                protocol: "passthrough".to_owned(),
                address: format!("{local}/udp"),
            });
            tracing::info!(address = %local, "passthrough (QUIC Mode A) listening");
            let settings = Arc::new(ArcSwap::from_pointee(settings));
            tracker.spawn(eg_passthrough::serve(
                socket,
                Arc::clone(&settings),
                shutdown.clone(),
                xdp.fast_path(),
            ));
            passthrough = Some(settings);
        }
        // Reported after the listeners, so their indices match the config.
        if let Some(addr) = admin_addr {
            report::listening("admin", "admin", "tcp", addr);
        }
        xdp.apply(config, xdp_offers(&slots)).await;
        if let Some(a) = &admin {
            a.listeners.store(Arc::new(shown));
            a.started.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Self {
            running: ArcSwap::from_pointee(config.clone()),
            bound: config.clone(),
            shutdown,
            tracker,
            slots,
            drain_timeout_ms: AtomicU64::new(config.runtime.drain_timeout_ms),
            settle_ms: AtomicU64::new(config.runtime.readiness_settle_ms),
            admin,
            admission,
            carry,
            pools: running_pools,
            passthrough,
            discovery,
            xdp,
        })
    }

    /// How long until a backend host name is due for resolution (`None`:
    /// the running configuration names none).
    pub fn discovery_due(&self) -> Option<Duration> {
        self.discovery.next_due(&self.running.load())
    }

    /// Resolve the names that are due; rebuild the pools when a set of
    /// records changed.
    pub async fn rediscover(&self) {
        let running = Arc::clone(&self.running.load());
        if self.discovery.refresh(&running).await {
            self.reload(None, Trigger::Discovery).await;
        }
    }

    pub fn drain_timeout_ms(&self) -> u64 {
        self.drain_timeout_ms.load(Ordering::Relaxed)
    }

    /// SIGHUP (`Trigger::Reload`): re-read and validate the file; or
    /// SIGUSR1 (`Trigger::CertRotation`): re-read the certificates and keys
    /// the running configuration names. Either way everything is rebuilt
    /// first and swapped only if all of it loads: a failure changes nothing.
    pub async fn reload(&self, path: Option<&Path>, trigger: Trigger) {
        let running = Arc::clone(&self.running.load());
        let carry = Arc::clone(&self.carry);
        let discovery = Arc::clone(&self.discovery);
        let path = path.map(Path::to_path_buf);
        // Parsing certificates, loading roots and building Maglev tables is
        // blocking work: keep it off the workers serving traffic.
        let prepare = move || {
            let loaded = match (trigger, path) {
                (Trigger::Reload, Some(path)) => Config::load(&path).map_err(anyhow::Error::from),
                (Trigger::Reload, None) => Err(anyhow::anyhow!("no configuration file to re-read")),
                (Trigger::CertRotation | Trigger::Discovery, _) => Ok((*running).clone()),
            };
            loaded.and_then(|config| {
                let expanded = crate::discovery::expand(&config, &discovery);
                Prepared::new(&expanded, &carry).map(|p| (config, p))
            })
        };
        let outcome = tokio::task::spawn_blocking(prepare)
            .await
            .map_err(|e| anyhow::anyhow!("reload task failed: {e}"))
            .and_then(|r| r);
        let counter = match trigger {
            Trigger::Reload | Trigger::Discovery => &metrics().config_reloads_total,
            Trigger::CertRotation => &metrics().cert_rotations_total,
        };
        let (config, mut prepared) = match outcome {
            Ok(pair) => pair,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), ?trigger, "rejected; keeping the running configuration and certificates");
                counter.with_label_values(&["rejected"]).inc();
                // logrotate has moved the file whether or not the new
                // certificates load.
                if trigger == Trigger::CertRotation {
                    self.reopen_access_log();
                }
                return;
            }
        };
        let pools = prepared.spawn_health_checks();
        // Slots that keep their running settings (moved, re-protocolled,
        // switched kind, or removed from the file): they go on serving
        // from their old pools, whose health checks must go on too.
        let mut unapplied: Vec<&Slot> = self.slots.iter().skip(config.listeners.len()).collect();
        let waiting = crate::reload_check::not_applied_live(&self.bound, &config);
        for (index, ((listener, built), slot)) in config
            .listeners
            .iter()
            .zip(prepared.listeners)
            .zip(&self.slots)
            .enumerate()
        {
            if listener.address != slot.address || listener.protocol != slot.protocol {
                // Named in `waiting`; the other listeners still take theirs.
                tracing::warn!(
                    listener = %listener.label(index),
                    "re-addressed or re-protocolled: it keeps serving its running routes and pools until a restart"
                );
                unapplied.push(slot);
                continue;
            }
            if let (Some(gate), Some(quic)) = (&slot.gate, &listener.quic) {
                gate.update(quic);
            }
            match (built, &slot.live) {
                (Built::L4(s), Live::L4(live)) => live.store(Arc::new(s)),
                (Built::Http(mut s), Live::Http(live)) => {
                    s.carry_over(&live.load());
                    live.store(Arc::new(s));
                }
                // QUIC: new connections get the new certificates and
                // transport settings; open ones keep theirs.
                (Built::H3(mut s, server), Live::Http(live)) => {
                    if let Some(e) = &slot.endpoint {
                        e.set_server_config(Some(*server));
                    }
                    s.carry_over(&live.load());
                    live.store(Arc::new(s));
                }
                (Built::Relay(s, server), Live::Relay(live)) => {
                    if let Some(e) = &slot.endpoint {
                        e.set_server_config(Some(*server));
                    }
                    live.store(Arc::new(s));
                }
                // HTTP/3 <-> Mode B: named by `not_applied_live`.
                _ => unapplied.push(slot),
            }
        }
        let kept: Vec<Arc<Pool>> = unapplied.iter().flat_map(|s| s.live.pools()).collect();
        let mut running = pools.clone();
        running.extend(kept.iter().cloned());
        for old in self.pools.swap(Arc::new(running)).iter() {
            if !kept.iter().any(|k| Arc::ptr_eq(k, old)) {
                old.retire();
            }
        }
        if let Some(a) = &self.admin {
            a.pools.store(Arc::new(pools));
        }
        if let (Some(live), Some(settings)) = (&self.passthrough, prepared.passthrough.take()) {
            live.store(Arc::new(settings));
        }
        // The new pools (and Maglev tables) into the kernel's maps; the
        // attach keys themselves wait for a restart (`not_applied_live`).
        self.xdp.apply(&config, xdp_offers(&self.slots)).await;
        let rt = &config.runtime;
        self.admission
            .set_caps(rt.max_inflight_connections, rt.per_ip_connection_cap);
        self.drain_timeout_ms
            .store(rt.drain_timeout_ms, Ordering::Relaxed);
        self.settle_ms
            .store(rt.readiness_settle_ms, Ordering::Relaxed);
        if let Some(a) = &self.admin {
            a.set_access(
                config.admin.api_token_hash.as_deref(),
                config.admin.allow_non_loopback,
            );
        }
        if waiting.is_empty() {
            tracing::info!(?trigger, "configuration and certificates reloaded");
            counter.with_label_values(&["ok"]).inc();
        } else {
            for key in &waiting {
                tracing::warn!(key = %key, "changed, but applied only by a restart; everything else is live");
            }
            counter.with_label_values(&["restart_required"]).inc();
        }
        self.running.store(Arc::new(config));
        if trigger == Trigger::CertRotation {
            self.reopen_access_log();
        }
    }

    /// SIGUSR1 is also logrotate's signal: start a fresh access log file.
    /// Every listener shares one writer; once is enough.
    fn reopen_access_log(&self) {
        let logs = self.slots.iter().filter_map(|s| match &s.live {
            Live::Http(live) => live.load().access_log.clone(),
            _ => None,
        });
        if let Some(log) = logs.into_iter().next() {
            log.reopen();
        }
    }

    /// Stop accepting, tell open connections to finish, then wait up to
    /// `budget` for them.
    pub async fn drain(self, budget: Duration) {
        // Readiness first, so load balancers in front stop sending; then
        // stop accepting once they have had `readiness_settle_ms` to notice.
        eg_runtime::begin_draining();
        if let Some(a) = &self.admin {
            a.draining.store(true, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(
                self.settle_ms.load(Ordering::Relaxed),
            ))
            .await;
        }
        // The budget runs from here, once the listeners stop accepting.
        let by = tokio::time::Instant::now() + budget;
        self.shutdown.cancel();
        // Open WebSockets hear 1001 and finish their close handshakes
        // within the same budget.
        eg_runtime::closing().cancel();
        eg_runtime::tunnels().close();
        self.tracker.close();
        // Kernel (XDP) flows drain alongside: no new ones from here on.
        let all = async {
            tokio::join!(
                self.tracker.wait(),
                eg_runtime::tunnels().wait(),
                self.xdp.drain(by)
            )
        };
        if tokio::time::timeout_at(by, all).await.is_err() {
            tracing::warn!(
                open = self.tracker.len(),
                "drain budget spent; closing remaining connections"
            );
        }
    }
}
