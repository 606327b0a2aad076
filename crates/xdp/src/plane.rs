//! The loaded and attached program: load `OBJECT`, attach it to the
//! interface through a BPF link, and keep its maps in step with the plan.
//!
//! The link is the program's only hold on the interface. Dropping the
//! `Plane` detaches it, and so does the kernel when the process's last
//! file descriptor for the link closes: an exit, a panic or `kill -9`
//! never leaves a stale program behind. The legacy netlink attach (which
//! outlives the process) is refused, never used.

use std::net::SocketAddr;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::links::LinkType;
use aya::programs::xdp::XdpLink;
use aya::programs::{loaded_links, Xdp, XdpMode as AyaMode};
use aya::{Ebpf, EbpfLoader};
use eg_config::XdpMode;

use crate::error::PlaneError;
use crate::maps;
use crate::maps::MAGLEV_SLOTS;
use crate::services::{Plan, Service};

/// What `[xdp]` asks of the plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub interface: String,
    pub mode: XdpMode,
    pub new_flows_per_cpu_per_second: u32,
    pub conntrack_entries: u32,
    pub flow_idle_timeout_seconds: u32,
}

impl Settings {
    pub fn from_config(x: &eg_config::Xdp) -> Self {
        Self {
            interface: x.interface.clone(),
            mode: x.mode,
            new_flows_per_cpu_per_second: x.new_flows_per_cpu_per_second,
            conntrack_entries: x.conntrack_entries,
            flow_idle_timeout_seconds: x.flow_idle_timeout_seconds,
        }
    }
}

/// A service as last written, to rewrite only what changed.
struct Written {
    table: Vec<u32>,
}

/// The program on the interface and its maps.
pub struct Plane {
    // Field order is drop order: the link (detach) goes first.
    link: Option<XdpLink>,
    interface: String,
    services: HashMap<MapData, maps::ServiceKey, maps::Service>,
    backends: Array<MapData, maps::Backend>,
    maglev: Array<MapData, u32>,
    config: Array<MapData, maps::Config>,
    /// Mode A's flows, installed by the passthrough datapath.
    udp_flows: crate::UdpFlows,
    /// Shared with the metrics collector.
    stats: std::sync::Arc<PerCpuArray<MapData, u64>>,
    written: Vec<Written>,
    /// The services map as written.
    live: Vec<(maps::ServiceKey, maps::Service)>,
    /// The backends map as last written (index = map index).
    written_backends: Vec<maps::Backend>,
    _ebpf: Ebpf,
}

fn aya_mode(mode: XdpMode) -> AyaMode {
    match mode {
        XdpMode::Auto => AyaMode::Default,
        XdpMode::Native => AyaMode::Driver,
        XdpMode::Skb => AyaMode::Skb,
    }
}

fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Result<T, PlaneError>
where
    T::Error: std::fmt::Display,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| PlaneError::Object(format!("the object has no map {name:?}")))?;
    T::try_from(map).map_err(|e| PlaneError::Object(format!("map {name:?}: {e}")))
}

/// The program's FIB lookup answers "forwarding disabled" on an interface
/// that does not forward, and such packets go to userspace untouched: the
/// plane would be attached and do nothing. Said once at start, per family.
fn warn_if_forwarding_off(interface: &str) {
    for family in ["ipv4", "ipv6"] {
        let path = format!("/proc/sys/net/{family}/conf/{interface}/forwarding");
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "0") {
            tracing::warn!(
                interface,
                "xdp: {family} forwarding is off on {interface}: the kernel path passes every \
                 {family} packet to userspace (sysctl -w net.{family}.conf.{interface}.forwarding=1)"
            );
        }
    }
}

/// The kernel NATs its flows from source ports EG_NAT_PORT_MIN..=MAX
/// (lb.h), above Linux's default ephemeral range. A host whose
/// `ip_local_port_range` reaches into them may give the gateway's own
/// upstream connections such a port to a backend, and that backend's
/// replies could then match a kernel flow. Reserving the range keeps
/// them apart; say so when it is neither reserved nor clear.
fn warn_if_nat_ports_shared() {
    let (min, max) = (u32::from(maps::NAT_PORT_MIN), u32::from(maps::NAT_PORT_MAX));
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let Some((low, high)) = range.ok().and_then(|r| {
        let mut it = r.split_whitespace().filter_map(|v| v.parse::<u32>().ok());
        Some((it.next()?, it.next()?))
    }) else {
        return;
    };
    let reserved =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports").unwrap_or_default();
    let covered = reserved.trim().split(',').any(|part| {
        let mut ends = part.split('-').filter_map(|v| v.trim().parse::<u32>().ok());
        match (ends.next(), ends.next()) {
            (Some(a), Some(b)) => a <= min && b >= max,
            _ => false,
        }
    });
    if low <= max && high >= min && !covered {
        tracing::warn!(
            "xdp: ip_local_port_range {low}-{high} overlaps the kernel flows' NAT ports \
             {min}-{max}: the gateway's own connections to a backend could collide with them \
             (sysctl -w net.ipv4.ip_local_reserved_ports={min}-{max})"
        );
    }
}

impl Plane {
    /// Load the program and attach it to `s.interface` in `s.mode`.
    pub fn attach(s: &Settings) -> Result<Self, PlaneError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(maps::CONNTRACK, s.conntrack_entries)
            .load(crate::OBJECT)
            .map_err(|e| PlaneError::create(&e, s))?;
        // Maps first: the config must be in place before the program
        // sees a packet (all zero would mean no kernel flows and every
        // entry stale at once).
        let services = take(&mut ebpf, maps::SERVICES)?;
        let backends = take(&mut ebpf, maps::BACKENDS)?;
        let maglev = take(&mut ebpf, maps::MAGLEV)?;
        let mut config = take(&mut ebpf, maps::CONFIG)?;
        let udp_flows = crate::UdpFlows::new(take(&mut ebpf, maps::CONNTRACK)?);
        let stats = std::sync::Arc::new(take(&mut ebpf, maps::STATS)?);
        write_limits(&mut config, s)?;
        let program: &mut Xdp = ebpf
            .program_mut(crate::PROGRAM)
            .ok_or_else(|| PlaneError::Object(format!("no program {:?}", crate::PROGRAM)))?
            .try_into()
            .map_err(|e| PlaneError::Object(format!("{e}")))?;
        program.load().map_err(|e| PlaneError::load(&e))?;
        let id = program
            .attach(&s.interface, aya_mode(s.mode))
            .map_err(|e| PlaneError::attach(&e, s))?;
        let link = program
            .take_link(id)
            .map_err(|e| PlaneError::attach(&e, s))?;
        let prog_id = program
            .info()
            .map_err(|e| PlaneError::Object(format!("program info: {e}")))?
            .id();
        // aya falls back to a netlink attach when the kernel refuses a
        // BPF link; that attach would survive a crash. Only a link will do.
        let is_link = loaded_links()
            .flatten()
            .any(|l| l.program_id() == prog_id && matches!(l.link_type(), Ok(LinkType::Xdp)));
        if !is_link {
            drop(link);
            return Err(PlaneError::NoLink);
        }
        warn_if_forwarding_off(&s.interface);
        warn_if_nat_ports_shared();
        Ok(Self {
            link: Some(link),
            interface: s.interface.clone(),
            services,
            backends,
            maglev,
            config,
            udp_flows,
            stats,
            written: Vec::new(),
            live: Vec::new(),
            written_backends: Vec::new(),
            _ebpf: ebpf,
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The conntrack map, for Mode A's userspace-installed flows.
    pub fn udp_flows(&self) -> crate::UdpFlows {
        self.udp_flows.clone()
    }

    /// The per-CPU counters, for the metrics collector.
    pub fn stats(&self) -> std::sync::Arc<PerCpuArray<MapData, u64>> {
        std::sync::Arc::clone(&self.stats)
    }

    /// The live keys: the rate cap and the idle timeout.
    pub fn set_limits(&mut self, s: &Settings) -> Result<(), PlaneError> {
        write_limits(&mut self.config, s)
    }

    /// Make the maps say what `plan` says: backends and tables first, then
    /// the services that point at them, then remove services no longer
    /// planned. Only what differs from the last write is written (a
    /// reload that keeps a pool keeps its 65 537-slot table untouched).
    pub fn apply(&mut self, plan: &Plan, now: std::time::Instant) -> Result<(), PlaneError> {
        let planned: Vec<(maps::ServiceKey, maps::Service)> = plan
            .services
            .iter()
            .map(|s| (service_key(s.local), service_value(s)))
            .collect();
        // A service whose slot range moves (another listener came or
        // went), or that is gone, leaves the map before any range is
        // rewritten: its SYNs meanwhile go to userspace, which picks the
        // same backend, instead of into ranges half rewritten for another
        // listener. A service that keeps its place keeps serving.
        let mut live = std::mem::take(&mut self.live);
        live.retain(|(key, value)| {
            let keep = planned.contains(&(*key, *value));
            if !keep {
                // Gone already is as good as removed.
                let _ = self.services.remove(key);
            }
            keep
        });
        let written = self.write_planned(plan, &planned, &mut live, now);
        // Kept either way: `live` is what the services map holds.
        self.live = live;
        if written.is_err() {
            // A write failed half way: the maps may hold anything in these
            // ranges. Forget what was written, so the next apply (reload)
            // rewrites every backend and slot instead of diffing against a
            // table the map no longer has.
            self.written.clear();
            self.written_backends.clear();
        }
        written?;
        self.written.truncate(plan.services.len());
        Ok(())
    }

    fn write_planned(
        &mut self,
        plan: &Plan,
        planned: &[(maps::ServiceKey, maps::Service)],
        live: &mut Vec<(maps::ServiceKey, maps::Service)>,
        now: std::time::Instant,
    ) -> Result<(), PlaneError> {
        for service in &plan.services {
            self.write_backends(service, &service.eligibility(now))?;
            self.write_table(service)?;
        }
        for (key, value) in planned {
            if !live.contains(&(*key, *value)) {
                self.services
                    .insert(*key, *value, 0)
                    .map_err(PlaneError::map("services"))?;
                live.push((*key, *value));
            }
        }
        Ok(())
    }

    /// Take every service out of the map: new flows (SYNs) go to userspace
    /// from now on, while flows the kernel already carries keep their
    /// conntrack entries (looked up before any service). For a drain.
    pub fn withdraw_services(&mut self) {
        for (key, _) in std::mem::take(&mut self.live) {
            // Gone already is as good as removed.
            let _ = self.services.remove(&key);
        }
    }

    /// Rewrite the backends whose eligibility (health, drain) changed.
    pub fn sync_eligibility(
        &mut self,
        plan: &Plan,
        now: std::time::Instant,
    ) -> Result<usize, PlaneError> {
        let mut changed = 0;
        for service in &plan.services {
            changed += self.write_backends(service, &service.eligibility(now))?;
        }
        Ok(changed)
    }

    fn write_backends(&mut self, s: &Service, eligible: &[bool]) -> Result<usize, PlaneError> {
        let mut written = 0;
        for (i, (addr, ok)) in s.backends.iter().zip(eligible).enumerate() {
            let index = s.backend_base + i as u32;
            let entry = backend_entry(*addr, *ok);
            let at = index as usize;
            if self.written_backends.get(at) == Some(&entry) {
                continue;
            }
            self.backends
                .set(index, entry, 0)
                .map_err(PlaneError::map("backends"))?;
            if self.written_backends.len() <= at {
                self.written_backends
                    .resize(at + 1, maps::Backend::default());
            }
            self.written_backends[at] = entry;
            written += 1;
        }
        Ok(written)
    }

    fn write_table(&mut self, s: &Service) -> Result<(), PlaneError> {
        let id = s.id as usize;
        let base = s.id * MAGLEV_SLOTS;
        let previous = self.written.get(id).map(|w| w.table.as_slice());
        for (slot, &backend) in s.table.iter().enumerate() {
            if previous.and_then(|p| p.get(slot)) == Some(&backend) {
                continue;
            }
            self.maglev
                .set(base + slot as u32, backend, 0)
                .map_err(PlaneError::map("maglev"))?;
        }
        let entry = Written {
            table: s.table.clone(),
        };
        match self.written.get_mut(id) {
            Some(w) => *w = entry,
            None => self.written.push(entry),
        }
        Ok(())
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if self.link.take().is_some() {
            tracing::info!(interface = %self.interface, "xdp: program detached");
        }
    }
}

fn write_limits(config: &mut Array<MapData, maps::Config>, s: &Settings) -> Result<(), PlaneError> {
    let c = maps::Config {
        new_flows_per_cpu_per_sec: s.new_flows_per_cpu_per_second,
        flow_idle_timeout_s: s.flow_idle_timeout_seconds,
    };
    config.set(0, c, 0).map_err(PlaneError::map("config"))
}

fn service_value(s: &Service) -> maps::Service {
    maps::Service {
        id: s.id,
        backend_base: s.backend_base,
        backend_count: s.backends.len() as u32,
        table_size: s.table.len() as u32,
        flags: maps::SVC_TCP_NAT,
    }
}

fn service_key(local: SocketAddr) -> maps::ServiceKey {
    maps::ServiceKey::new(local, maps::IPPROTO_TCP)
}

fn backend_entry(addr: SocketAddr, eligible: bool) -> maps::Backend {
    maps::Backend::new(addr, eligible)
}
