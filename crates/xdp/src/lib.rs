//! The optional XDP plane (SPEC §10): a BPF program in C (`bpf/lb.c`,
//! its contract with userspace in `bpf/lb.h`) that forwards established
//! L4 flows in the kernel, and its controller.
//!
//! [`OBJECT`] is the clang-built object; load it with aya
//! (`aya::EbpfLoader::new().map_max_entries(maps::CONNTRACK, n).load(OBJECT)`),
//! take the program [`PROGRAM`] as `aya::programs::Xdp`, and fill the maps
//! named in [`maps`] with the `#[repr(C)]` mirrors there.
//!
//! The controller: [`Plane`] (load, attach through a BPF link, write the
//! maps), [`services`] (which listeners the kernel serves), [`Controller`]
//! (start, reload, follow backend health) and the metrics ([`stats`]).

mod controller;
mod error;
pub mod maps;
mod plane;
pub mod services;
pub mod stats;
pub mod testrun;
mod udp_flows;

pub use controller::{Controller, ELIGIBILITY_SYNC};
pub use error::PlaneError;
pub use plane::{Plane, Settings};
pub use services::{Candidate, Plan};
pub use udp_flows::{UdpFlow, UdpFlows};

/// The XDP object (ELF, BPF target) built from `bpf/lb.c`, 8-byte aligned
/// as aya's parser wants it.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb.o"));

/// Name of the XDP program (its function) in [`OBJECT`].
pub const PROGRAM: &str = "eg_lb";

#[cfg(test)]
mod prebuilt_tests {
    /// bpf/prebuilt/lb.o is what a machine without clang builds with: it
    /// must come from the sources in the tree.
    #[test]
    fn prebuilt_object_is_built_from_these_sources() {
        let recorded = include_str!("../bpf/prebuilt/lb.digest").trim();
        assert_eq!(
            recorded,
            env!("EG_XDP_SOURCE_DIGEST"),
            "bpf/prebuilt is stale: refresh it with `EG_XDP_REFRESH_PREBUILT=1 cargo build -p eg-xdp` \
             (needs clang) and commit bpf/prebuilt/lb.o and lb.digest"
        );
    }
}
