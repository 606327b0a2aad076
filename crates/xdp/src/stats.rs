//! The program's per-CPU counters as Prometheus metrics in the process
//! registry, read from the kernel at each scrape (no polling task: a
//! scrape costs one map lookup per counter).

use std::sync::{Arc, Mutex, OnceLock};

use aya::maps::{MapData, PerCpuArray};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, Opts};

use crate::maps::Stat;

/// Sums over CPUs of each counter of the stats map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub forwarded_packets: u64,
    pub forwarded_bytes: u64,
    pub passed: u64,
    pub dropped: u64,
    pub rate_cap_trips: u64,
    pub new_flows: u64,
    pub conntrack_hits: u64,
    pub conntrack_misses: u64,
}

/// Read every counter, summed over the CPUs.
pub fn read(map: &PerCpuArray<MapData, u64>) -> Totals {
    let sum = |stat: Stat| -> u64 {
        map.get(&(stat as u32), 0)
            .map(|per_cpu| per_cpu.iter().fold(0u64, |a, v| a.wrapping_add(*v)))
            .unwrap_or(0)
    };
    Totals {
        forwarded_packets: sum(Stat::FwdPackets),
        forwarded_bytes: sum(Stat::FwdBytes),
        passed: sum(Stat::Pass),
        dropped: sum(Stat::Drop),
        rate_cap_trips: sum(Stat::RateCap),
        new_flows: sum(Stat::NewFlows),
        conntrack_hits: sum(Stat::CtHit),
        conntrack_misses: sum(Stat::CtMiss),
    }
}

/// The exported series. Counters only grow: each scrape adds what the
/// kernel counted since the last one.
struct Series {
    packets: IntCounterVec,
    bytes: IntCounter,
    rate_cap: IntCounter,
    new_flows: IntCounter,
    lookups: IntCounterVec,
}

impl Series {
    fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            packets: IntCounterVec::new(
                Opts::new(
                    "xdp_packets_total",
                    "Packets the XDP program handled: forwarded in the kernel, passed to the stack, dropped",
                ),
                &["action"],
            )?,
            bytes: IntCounter::new(
                "xdp_forwarded_bytes_total",
                "Bytes of the packets the XDP program forwarded",
            )?,
            rate_cap: IntCounter::new(
                "xdp_rate_cap_trips_total",
                "New flows passed to userspace because a CPU was over the new-flow rate cap",
            )?,
            new_flows: IntCounter::new(
                "xdp_new_flows_total",
                "Flows the XDP program started in the kernel",
            )?,
            lookups: IntCounterVec::new(
                Opts::new(
                    "xdp_conntrack_lookups_total",
                    "Kernel flow-table lookups by result",
                ),
                &["result"],
            )?,
        })
    }

    fn advance(&self, t: &Totals) {
        let up = |c: &IntCounter, to: u64| {
            let now = c.get();
            if to > now {
                c.inc_by(to - now);
            }
        };
        up(
            &self.packets.with_label_values(&["forwarded"]),
            t.forwarded_packets,
        );
        up(&self.packets.with_label_values(&["passed"]), t.passed);
        up(&self.packets.with_label_values(&["dropped"]), t.dropped);
        up(&self.bytes, t.forwarded_bytes);
        up(&self.rate_cap, t.rate_cap_trips);
        up(&self.new_flows, t.new_flows);
        up(&self.lookups.with_label_values(&["hit"]), t.conntrack_hits);
        up(
            &self.lookups.with_label_values(&["miss"]),
            t.conntrack_misses,
        );
    }
}

/// The registered collector: the running plane's stats map, if any.
struct Xdp {
    series: Series,
    source: Mutex<Option<Arc<PerCpuArray<MapData, u64>>>>,
}

impl Collector for Xdp {
    fn desc(&self) -> Vec<&Desc> {
        let s = &self.series;
        let mut d = s.packets.desc();
        d.extend(s.bytes.desc());
        d.extend(s.rate_cap.desc());
        d.extend(s.new_flows.desc());
        d.extend(s.lookups.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Read and advance under the lock: two scrapes at once would both
        // add the same difference to a counter.
        if let Ok(source) = self.source.lock() {
            if let Some(map) = source.as_ref() {
                self.series.advance(&read(map));
            }
        }
        let s = &self.series;
        let mut out = s.packets.collect();
        out.extend(s.bytes.collect());
        out.extend(s.rate_cap.collect());
        out.extend(s.new_flows.collect());
        out.extend(s.lookups.collect());
        out
    }
}

fn collector() -> Option<&'static Xdp> {
    static XDP: OnceLock<Option<&'static Xdp>> = OnceLock::new();
    *XDP.get_or_init(|| {
        let series = Series::new().ok()?;
        let xdp: &'static Xdp = Box::leak(Box::new(Xdp {
            series,
            source: Mutex::new(None),
        }));
        let registry = &eg_runtime::metrics::metrics().registry;
        registry.register(Box::new(XdpRef(xdp))).ok()?;
        Some(xdp)
    })
}

/// The registry owns a `Box<dyn Collector>`; the collector itself lives
/// for the process (one registration, whatever the planes).
struct XdpRef(&'static Xdp);

impl Collector for XdpRef {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

/// Export `map`'s counters from now on (`None`: the plane is gone; the
/// series keep their last values).
pub fn export(map: Option<Arc<PerCpuArray<MapData, u64>>>) {
    if let Some(c) = collector() {
        if let Ok(mut source) = c.source.lock() {
            *source = map;
        }
    }
}
