//! The configuration as the pools are built from it: each backend whose
//! host is a name replaced by one backend per record the name has now.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use eg_config::{Backend, Config, PassthroughBackend, VerifyHostname, WeightedAddress};

use super::Discovery;

/// `(host, port)` of `address` when the host is a name, not an IP.
fn named(address: &str) -> Option<(&str, &str)> {
    if address.parse::<SocketAddr>().is_ok() {
        return None;
    }
    let (host, port) = address.rsplit_once(':')?;
    (host.parse::<IpAddr>().is_err() && !host.is_empty()).then_some((host, port))
}

/// Every backend host name in `config` (pools of listeners, clusters and
/// `[passthrough]`).
pub(super) fn names(config: &Config) -> BTreeSet<String> {
    let pools = config
        .listeners
        .iter()
        .flat_map(|l| l.backends.iter())
        .chain(config.clusters.iter().flat_map(|c| c.backends.iter()))
        .map(|b| b.address.as_str());
    let passthrough = config
        .passthrough
        .iter()
        .flat_map(|p| p.backends.iter())
        .map(PassthroughBackend::address);
    pools
        .chain(passthrough)
        .filter_map(named)
        .map(|(h, _)| h.to_owned())
        .collect()
}

fn socket(ip: IpAddr, port: &str) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// The host name of `address` and one `ip:port` per record it has now;
/// `None` for an IP address, or a name not resolved yet (the dial then
/// resolves it, as without discovery).
fn records<'a>(address: &'a str, d: &Discovery) -> Option<(&'a str, Vec<String>)> {
    let (host, port) = named(address)?;
    let records = d.records(host).filter(|r| !r.is_empty())?;
    Some((
        host,
        records.into_iter().map(|ip| socket(ip, port)).collect(),
    ))
}

/// One backend per record; TLS still verifies (and sends) the name.
fn backends(b: &Backend, d: &Discovery) -> Vec<Backend> {
    let Some((host, addrs)) = records(&b.address, d) else {
        return vec![b.clone()];
    };
    addrs
        .into_iter()
        .map(|address| {
            let mut one = b.clone();
            one.address = address;
            one.sni = b.sni.clone().or_else(|| Some(host.to_owned()));
            if b.tls_verify_hostname == VerifyHostname::Enabled(true) {
                one.tls_verify_hostname = VerifyHostname::Name(host.to_owned());
            }
            one
        })
        .collect()
}

fn passthrough_backends(b: &PassthroughBackend, d: &Discovery) -> Vec<PassthroughBackend> {
    let Some((_, addrs)) = records(b.address(), d) else {
        return vec![b.clone()];
    };
    addrs
        .into_iter()
        .map(|address| {
            PassthroughBackend::Weighted(WeightedAddress {
                address,
                weight: b.weight(),
                server_id: b.server_id().map(str::to_owned),
            })
        })
        .collect()
}

/// `config` with every named backend expanded to its current records.
pub fn expand(config: &Config, d: &Discovery) -> Config {
    let mut out = config.clone();
    for l in &mut out.listeners {
        l.backends = l.backends.iter().flat_map(|b| backends(b, d)).collect();
    }
    for c in &mut out.clusters {
        c.backends = c.backends.iter().flat_map(|b| backends(b, d)).collect();
    }
    if let Some(p) = &mut out.passthrough {
        p.backends = p
            .backends
            .iter()
            .flat_map(|b| passthrough_backends(b, d))
            .collect();
    }
    out
}
