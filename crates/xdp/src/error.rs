//! Why the plane could not start, in the operator's terms: each message
//! names the `[xdp]` key to look at.

use std::fmt;

use crate::plane::Settings;

#[derive(Debug)]
pub enum PlaneError {
    /// The kernel refused to create a map or load the program.
    Load { errno: Option<i32>, detail: String },
    /// Attaching to the interface failed.
    Attach { key: String, detail: String },
    /// The kernel attached through netlink only (no BPF link for XDP):
    /// that attach would outlive a crash of the process.
    NoLink,
    /// The embedded object is not what this controller expects.
    Object(String),
    /// A map write failed.
    Map { map: &'static str, detail: String },
}

/// The errno of the first I/O error in an error's source chain.
pub(crate) fn errno(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.raw_os_error();
        }
        next = e.source();
    }
    None
}

/// The whole chain, outermost first, without aya's verifier log (which
/// `Display` of a load error includes in full).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let text = e.to_string();
    text.split(". Verifier output:")
        .next()
        .unwrap_or_default()
        .to_owned()
}

impl PlaneError {
    pub(crate) fn load(e: &(dyn std::error::Error + 'static)) -> Self {
        Self::Load {
            errno: errno(e),
            detail: chain(e),
        }
    }

    /// Loading the object creates its maps first: a flow table the
    /// kernel cannot allocate is `conntrack_entries`' doing.
    pub(crate) fn create(e: &(dyn std::error::Error + 'static), s: &Settings) -> Self {
        match errno(e) {
            Some(libc::ENOMEM) | Some(libc::E2BIG) => Self::Attach {
                key: "xdp.conntrack_entries".to_owned(),
                detail: format!(
                    "{}: the kernel could not create a flow table that large ({})",
                    s.conntrack_entries,
                    chain(e)
                ),
            },
            _ => Self::load(e),
        }
    }

    pub(crate) fn attach(e: &(dyn std::error::Error + 'static), s: &Settings) -> Self {
        let text = chain(e);
        let (key, detail) = match errno(e) {
            _ if text.starts_with("unknown network interface") => (
                "xdp.interface".to_owned(),
                format!("{:?}: no such network interface", s.interface),
            ),
            Some(libc::EPERM) | Some(libc::EACCES) => (
                "xdp.enabled".to_owned(),
                format!(
                    "attaching to {:?} needs root (CAP_NET_ADMIN and CAP_BPF): {text}",
                    s.interface
                ),
            ),
            Some(libc::EOPNOTSUPP) => (
                "xdp.mode".to_owned(),
                format!(
                    "{:?}: the driver of {:?} has no native XDP; use \"auto\" or \"skb\" ({text})",
                    s.mode.as_str(),
                    s.interface
                ),
            ),
            Some(libc::EBUSY) | Some(libc::EEXIST) => (
                "xdp.interface".to_owned(),
                format!(
                    "{:?} already has an XDP program attached (another process's; \
                     `ip link set dev {} xdp off` removes a netlink-attached one): {text}",
                    s.interface, s.interface
                ),
            ),
            _ => (
                "xdp.interface".to_owned(),
                format!("attaching to {:?} failed: {text}", s.interface),
            ),
        };
        Self::Attach { key, detail }
    }

    pub(crate) fn map(map: &'static str) -> impl Fn(aya::maps::MapError) -> Self {
        move |e| Self::Map {
            map,
            detail: e.to_string(),
        }
    }
}

impl fmt::Display for PlaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load {
                errno: Some(libc::EPERM) | Some(libc::EACCES),
                detail,
            } => write!(
                f,
                "xdp.enabled = true: loading the XDP program needs root (CAP_BPF and \
                 CAP_NET_ADMIN); run as root or set xdp.enabled = false ({detail})"
            ),
            Self::Load { detail, .. } => write!(
                f,
                "xdp.enabled = true: the kernel refused the XDP program ({detail}); it needs \
                 Linux 5.17 or later (bpf_loop) with BPF and XDP; set xdp.enabled = false to run without it"
            ),
            Self::Attach { key, detail } => write!(f, "{key}: {detail}"),
            Self::NoLink => write!(
                f,
                "xdp.enabled = true: this kernel attaches XDP only through netlink, which would \
                 leave the program on the interface after a crash; a BPF link (Linux 5.9 or \
                 later) is required"
            ),
            Self::Object(detail) => write!(f, "xdp: the embedded XDP object: {detail}"),
            Self::Map { map, detail } => write!(f, "xdp: writing map {map}: {detail}"),
        }
    }
}

impl std::error::Error for PlaneError {}
