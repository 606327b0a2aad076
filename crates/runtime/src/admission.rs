//! Connection admission: `[runtime] max_inflight_connections` and
//! `per_ip_connection_cap`, process-wide across listeners.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// Why a connection was turned away (also its metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    InflightCap,
    PerIpCap,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InflightCap => "inflight_cap",
            Self::PerIpCap => "per_ip_cap",
        }
    }
}

#[derive(Debug)]
pub struct Admission {
    /// Both caps are re-set by a reload; connections already admitted stay.
    max_inflight: AtomicU32,
    per_ip_cap: AtomicU32,
    inflight: AtomicU32,
    /// Live connections per client IP. Holds only IPs with a live
    /// connection, so its size is bounded by `max_inflight`.
    per_ip: Mutex<HashMap<IpAddr, u32>>,
}

impl Admission {
    pub fn new(max_inflight: u32, per_ip_cap: u32) -> Arc<Self> {
        Arc::new(Self {
            max_inflight: AtomicU32::new(max_inflight),
            per_ip_cap: AtomicU32::new(per_ip_cap),
            inflight: AtomicU32::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Admit a connection from `ip`, or say which cap it hits. The slot is
    /// released when the returned guard drops.
    pub fn try_admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        let prev = self.inflight.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_inflight.load(Ordering::Relaxed) {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::InflightCap);
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = map.entry(ip).or_insert(0);
        if *count >= self.per_ip_cap.load(Ordering::Relaxed) {
            drop(map);
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerIpCap);
        }
        *count += 1;
        Ok(Admitted {
            admission: Arc::clone(self),
            ip,
        })
    }

    /// New caps for connections admitted from now on.
    pub fn set_caps(&self, max_inflight: u32, per_ip_cap: u32) {
        self.max_inflight.store(max_inflight, Ordering::Relaxed);
        self.per_ip_cap.store(per_ip_cap, Ordering::Relaxed);
    }

    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Acquire)
    }
}

/// An admitted connection; dropping it frees its slots.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut map = self
            .admission
            .per_ip
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = map.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                map.remove(&self.ip);
            }
        }
        drop(map);
        self.admission.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_release() {
        let a = Admission::new(3, 2);
        let ip1: IpAddr = [10, 0, 0, 1].into();
        let ip2: IpAddr = [10, 0, 0, 2].into();
        let g1 = a.try_admit(ip1).expect("1");
        let _g2 = a.try_admit(ip1).expect("2");
        assert_eq!(a.try_admit(ip1).unwrap_err(), Refusal::PerIpCap);
        let _g3 = a.try_admit(ip2).expect("3");
        assert_eq!(a.try_admit(ip2).unwrap_err(), Refusal::InflightCap);
        drop(g1);
        assert_eq!(a.inflight(), 2);
        let _g4 = a.try_admit(ip1).expect("slot freed");
        assert_eq!(a.per_ip.lock().map(|m| m.len()).unwrap_or(0), 2);
    }
}
