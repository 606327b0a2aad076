//! Mode A flows userspace installs in the kernel's conntrack (lb.h:
//! `from_user = 1`): two entries per flow, one per direction. The kernel
//! forwards only those flows' short-header datagrams; everything else of
//! Mode A stays in userspace.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap, MapData};

use crate::maps::{self, Flow, FlowKey, IPPROTO_UDP};

type Conntrack = HashMap<MapData, FlowKey, Flow>;

/// A handle on the conntrack map, shared with the passthrough datapath.
#[derive(Clone)]
pub struct UdpFlows(Arc<Mutex<Conntrack>>);

/// One Mode A flow: `client -> listen` becomes `upstream -> backend`,
/// `backend -> upstream` becomes `listen -> client`.
#[derive(Debug, Clone, Copy)]
pub struct UdpFlow {
    pub client: SocketAddr,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    pub backend: SocketAddr,
    pub backend_index: u32,
}

impl UdpFlow {
    fn keys(&self) -> (FlowKey, FlowKey) {
        (
            FlowKey::new(self.client, self.listen, IPPROTO_UDP),
            FlowKey::new(self.backend, self.upstream, IPPROTO_UDP),
        )
    }

    /// Same family everywhere: the kernel rewrites addresses in place.
    fn fits(&self) -> bool {
        let v4 = self.client.is_ipv4();
        [self.listen, self.upstream, self.backend]
            .iter()
            .all(|a| a.is_ipv4() == v4)
    }
}

impl UdpFlows {
    pub(crate) fn new(map: Conntrack) -> Self {
        Self(Arc::new(Mutex::new(map)))
    }

    /// Install both directions; `false` when the map refused (full LRU
    /// entries are evicted, so this is rare) or the families differ.
    pub fn install(&self, f: &UdpFlow) -> bool {
        if !f.fits() {
            return false;
        }
        let (out, back) = f.keys();
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        let forward = Flow::from_user(f.upstream, f.backend, f.backend_index, false);
        let reverse = Flow::from_user(f.listen, f.client, f.backend_index, true);
        let ok = map.insert(out, forward, 0).is_ok() && map.insert(back, reverse, 0).is_ok();
        if !ok {
            let _ = map.remove(&out);
            let _ = map.remove(&back);
        }
        ok
    }

    pub fn remove(&self, f: &UdpFlow) {
        let (out, back) = f.keys();
        if let Ok(mut map) = self.0.lock() {
            // Gone already (the LRU evicted it) is as good as removed.
            let _ = map.remove(&out);
            let _ = map.remove(&back);
        }
    }

    /// Milliseconds since the kernel last forwarded a datagram of `f`
    /// either way (`None`: neither entry is there any more).
    pub fn idle_ms(&self, f: &UdpFlow) -> Option<u64> {
        let (out, back) = f.keys();
        let map = self.0.lock().ok()?;
        let seen = [out, back]
            .iter()
            .filter_map(|k| map.get(k, 0).ok())
            .map(|e| e.last_seen_ns)
            .max()?;
        Some(maps::monotonic_ns().saturating_sub(seen) / 1_000_000)
    }
}
