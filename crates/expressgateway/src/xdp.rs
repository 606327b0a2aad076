//! The XDP plane as the gateway runs it (SPEC §10): attached before any
//! listener is bound when `[xdp] enabled`, its maps written once the
//! listeners have their real addresses and again on every reload, and
//! detached when the gateway is dropped (or the process dies: the
//! program hangs on a BPF link the process owns).

use std::net::SocketAddr;
use std::sync::Arc;

use eg_config::Config;

/// A `tcp` listener the kernel may serve: its label, bound address, pool
/// and whether every backend is cleartext.
#[cfg_attr(not(feature = "xdp"), allow(dead_code))]
pub struct Offer {
    pub label: String,
    pub local: SocketAddr,
    pub pool: Arc<eg_balancer::Pool>,
    pub cleartext: bool,
}

#[cfg(feature = "xdp")]
mod on {
    use super::*;
    use anyhow::Context;

    fn settings(config: &Config) -> eg_xdp::Settings {
        eg_xdp::Settings::from_config(&config.xdp)
    }

    fn candidates(offers: Vec<Offer>) -> Vec<eg_xdp::Candidate> {
        offers
            .into_iter()
            .map(|o| eg_xdp::Candidate {
                label: o.label,
                local: o.local,
                pool: o.pool,
                cleartext: o.cleartext,
            })
            .collect()
    }

    /// The running plane, if `[xdp] enabled`.
    pub struct Xdp(Option<eg_xdp::Controller>);

    impl Xdp {
        /// Load and attach; nothing at all when disabled.
        pub fn attach(config: &Config) -> anyhow::Result<Self> {
            if !config.xdp.enabled {
                return Ok(Self(None));
            }
            let controller = eg_xdp::Controller::attach(&settings(config))
                .context("the XDP plane could not start")?;
            Ok(Self(Some(controller)))
        }

        /// Where Mode A installs its established flows, when the plane runs.
        pub fn fast_path(&self) -> Option<Arc<dyn eg_passthrough::FastPath>> {
            let flows = self.0.as_ref()?.udp_flows()?;
            Some(Arc::new(ModeA(flows)))
        }

        /// Write the maps for the listeners as they are now bound.
        pub async fn apply(&self, config: &Config, offers: Vec<Offer>) {
            if let Some(c) = &self.0 {
                c.apply(settings(config), candidates(offers)).await;
            }
        }

        /// New flows to userspace, then wait (until `by`) for the kernel's
        /// active TCP flows to finish.
        pub async fn drain(&self, by: tokio::time::Instant) {
            if let Some(c) = &self.0 {
                c.drain(by).await;
            }
        }
    }

    /// Mode A flows in the kernel's flow table (`eg_xdp::UdpFlows`).
    struct ModeA(eg_xdp::UdpFlows);

    fn udp(f: &eg_passthrough::KernelFlow) -> eg_xdp::UdpFlow {
        eg_xdp::UdpFlow {
            client: f.client,
            listen: f.listen,
            upstream: f.upstream,
            backend: f.backend,
            backend_index: f.backend_index,
        }
    }

    impl eg_passthrough::FastPath for ModeA {
        fn install(&self, flow: &eg_passthrough::KernelFlow) -> bool {
            self.0.install(&udp(flow))
        }
        fn remove(&self, flow: &eg_passthrough::KernelFlow) {
            self.0.remove(&udp(flow));
        }
        fn idle_ms(&self, flow: &eg_passthrough::KernelFlow) -> Option<u64> {
            self.0.idle_ms(&udp(flow))
        }
    }

    /// Every build with the feature can run `[xdp]`.
    pub fn refuse_unsupported(_config: &Config) -> anyhow::Result<()> {
        Ok(())
    }
}

#[cfg(not(feature = "xdp"))]
mod on {
    use super::*;

    pub struct Xdp;

    impl Xdp {
        pub fn attach(config: &Config) -> anyhow::Result<Self> {
            refuse_unsupported(config)?;
            Ok(Self)
        }

        pub async fn apply(&self, _config: &Config, _offers: Vec<Offer>) {}

        pub async fn drain(&self, _by: tokio::time::Instant) {}

        pub fn fast_path(&self) -> Option<Arc<dyn eg_passthrough::FastPath>> {
            None
        }
    }

    pub fn refuse_unsupported(config: &Config) -> anyhow::Result<()> {
        if config.xdp.enabled {
            anyhow::bail!(
                "xdp.enabled = true: this expressgateway was built without XDP support \
                 (cargo feature `xdp`); rebuild with it (the default) or set xdp.enabled = false"
            );
        }
        Ok(())
    }
}

pub use on::{refuse_unsupported, Xdp};
