//! The swappable part of `[passthrough]`: the pool (through the one
//! balancer), the backends' resolved addresses, and the flow bounds. A
//! reload swaps it whole; flows already placed keep their backend.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use eg_balancer::quic_lb::QuicLbFormat;
use eg_balancer::Pool;
use eg_config::{
    Backend, BackendProtocol, Config, HashKey, HashSource, LbPolicy, Passthrough, PoolSpec,
    VerifyHostname, DEFAULT_MAGLEV_TABLE_SIZE,
};

use crate::flows::Limits;

/// The pool name inline `backends` get (admin API, metrics).
pub const POOL_NAME: &str = "passthrough";

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct SettingsError {
    pub path: String,
    pub reason: String,
}

pub struct Settings {
    pub pool: Arc<Pool>,
    /// Indexed like `pool.backends()`.
    pub addrs: Vec<SocketAddr>,
    pub limits: Limits,
    pub min_client_dcid_len: usize,
    pub max_dcid_len_routed: usize,
    pub per_flow_backlog: usize,
    pub strict_source_binding: bool,
    pub idle_timeout: Duration,
    /// How long a new flow's backend has to answer before the flow moves
    /// to another backend: `runtime.connect_timeout_ms`, the same budget
    /// a TCP connect gets.
    pub answer_timeout: Duration,
    /// `hash_key.source = "ip"` on the cluster: place by client IP, not
    /// by connection ID.
    pub hash_by_ip: bool,
    /// `[passthrough.quic_lb]`: the ID layout and which backend each
    /// server ID names.
    pub quic_lb: Option<QuicLbRouting>,
}

pub struct QuicLbRouting {
    pub format: QuicLbFormat,
    pub by_server_id: HashMap<Vec<u8>, usize>,
}

impl Settings {
    /// The backend index and connection ID a QUIC-LB ID at the start of
    /// `bytes` names, if it is one of ours.
    pub fn quic_lb_target<'a>(&self, bytes: &'a [u8]) -> Option<(usize, &'a [u8])> {
        let lb = self.quic_lb.as_ref()?;
        let id = lb.format.server_id(bytes)?;
        let index = *lb.by_server_id.get(id)?;
        Some((index, bytes.get(..lb.format.cid_len())?))
    }
}

impl Settings {
    /// `None` when the config has no `[passthrough]`. `carry`: the live
    /// backend state of the generation a reload replaces.
    pub fn new(config: &Config, carry: &eg_runtime::Carry) -> Result<Option<Self>, SettingsError> {
        let Some(pt) = &config.passthrough else {
            return Ok(None);
        };
        let (spec, base) = pool_spec(config, pt)?;
        let addrs = spec
            .backends
            .iter()
            .enumerate()
            .map(|(j, b)| resolve(&b.address, &format!("{base}[{j}].address")))
            .collect::<Result<Vec<_>, _>>()?;
        let pool = Arc::new(Pool::carrying(&spec, BackendProtocol::H3, carry));
        let hash_by_ip = spec
            .hash_key
            .as_ref()
            .is_some_and(|k| k.source == HashSource::Ip);
        Ok(Some(Self {
            pool,
            addrs,
            limits: Limits {
                max_flows: pt.max_quic_connections as usize,
                per_ip: config.runtime.per_ip_connection_cap as usize,
            },
            min_client_dcid_len: usize::from(pt.min_client_dcid_len),
            max_dcid_len_routed: usize::from(pt.max_dcid_len_routed),
            per_flow_backlog: pt.per_flow_backlog as usize,
            strict_source_binding: pt.strict_source_binding,
            idle_timeout: Duration::from_millis(pt.flow_idle_timeout_ms),
            answer_timeout: Duration::from_millis(config.runtime.connect_timeout_ms),
            hash_by_ip,
            quic_lb: quic_lb(pt),
        }))
    }
}

/// The named cluster's pool, or the inline backends as a Maglev pool
/// hashing the connection ID; with the key path of its backends.
fn pool_spec(config: &Config, pt: &Passthrough) -> Result<(PoolSpec, String), SettingsError> {
    if let Some(name) = &pt.cluster {
        let index = config
            .clusters
            .iter()
            .position(|c| &c.name == name)
            .ok_or_else(|| SettingsError {
                path: "passthrough.cluster".into(),
                reason: format!("no [[clusters]] entry is named {name:?}"),
            })?;
        let spec = config.clusters.get(index).map(|c| c.pool());
        let spec = spec.ok_or_else(|| SettingsError {
            path: "passthrough.cluster".into(),
            reason: "cluster vanished".into(),
        })?;
        return Ok((spec, format!("clusters[{index}].backends")));
    }
    let backends = pt
        .backends
        .iter()
        .map(|b| Backend {
            address: b.address().to_owned(),
            protocol: None,
            weight: b.weight(),
            tls: false,
            tls_ca_path: None,
            tls_verify_hostname: VerifyHostname::Enabled(false),
            tls_verify_peer: false,
            sni: None,
        })
        .collect();
    let spec = PoolSpec {
        name: POOL_NAME.to_owned(),
        lb_policy: LbPolicy::Maglev,
        hash_key: Some(HashKey {
            source: HashSource::Cid,
            name: None,
        }),
        maglev_table_size: DEFAULT_MAGLEV_TABLE_SIZE,
        backends,
        health_check: None,
        outlier_detection: None,
        slow_start: None,
        retry: None,
        session_affinity: None,
        circuit_breaker: None,
        connection_pool: None,
    };
    Ok((spec, "passthrough.backends".to_owned()))
}

fn quic_lb(pt: &Passthrough) -> Option<QuicLbRouting> {
    let lb = pt.quic_lb.as_ref()?;
    let by_server_id = pt
        .backends
        .iter()
        .enumerate()
        .filter_map(|(i, b)| Some((eg_config::parse_hex(b.server_id()?)?, i)))
        .collect();
    Some(QuicLbRouting {
        format: QuicLbFormat {
            config_rotation: lb.config_rotation,
            server_id_len: usize::from(lb.server_id_len),
            nonce_len: usize::from(lb.nonce_len),
        },
        by_server_id,
    })
}

/// The first address `host:port` resolves to.
fn resolve(address: &str, path: &str) -> Result<SocketAddr, SettingsError> {
    let err = |reason: String| SettingsError {
        path: path.to_owned(),
        reason,
    };
    address
        .to_socket_addrs()
        .map_err(|e| err(format!("cannot resolve {address:?}: {e}")))?
        .next()
        .ok_or_else(|| err(format!("{address:?} resolves to no address")))
}
