//! `/api/v1/pools`: every pool with its backends' state, and operator
//! drains. Path segments are percent-decoded, so pool names with `/` and
//! IPv6 backend addresses can be named (`web%2Fdefault`, `%5B::1%5D:80`).

use std::time::Instant;

use bytes::Bytes;
use eg_runtime::metrics::BackendNow;
use http::{Response, StatusCode};
use http_body_util::Full;
use percent_encoding::percent_decode_str;

use crate::{text, AdminState};

pub(crate) fn pools_json(state: &AdminState) -> serde_json::Value {
    let now = Instant::now();
    let pools: Vec<_> = state
        .pools
        .load()
        .iter()
        .map(|p| {
            let backends: Vec<_> = p
                .backends()
                .iter()
                .map(|b| {
                    serde_json::json!({
                        "address": b.address,
                        "weight": b.weight,
                        "healthy": b.is_available(now),
                        "active_check_up": b.active_up(),
                        "drained": b.is_drained(),
                        "in_flight": b.in_flight(),
                        "picked_total": b.picked(),
                        "ejected_for_ms": b.ejected_for(now).map(|d| d.as_millis() as u64),
                    })
                })
                .collect();
            serde_json::json!({ "name": p.name, "policy": p.policy_name.as_str(), "backends": backends })
        })
        .collect();
    let listeners: Vec<_> = state
        .listeners
        .load()
        .iter()
        .map(
            |l| serde_json::json!({ "name": l.name, "protocol": l.protocol, "address": l.address }),
        )
        .collect();
    serde_json::json!({ "listeners": listeners, "pools": pools })
}

/// `backend_up` for every backend of the running pools, and no series
/// for backends the configuration no longer has.
pub(crate) fn refresh_backend_metrics(state: &AdminState) {
    let now = Instant::now();
    let pools = state.pools.load();
    let current: Vec<BackendNow<'_>> = pools
        .iter()
        .flat_map(|p| {
            p.backends().iter().map(move |b| BackendNow {
                cluster: &p.name,
                backend: &b.address,
                up: b.is_available(now),
            })
        })
        .collect();
    eg_runtime::metrics::refresh_backends(&current);
}

fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// `POST /api/v1/pools/{pool}/backends/{address}/drain` or `/enable`.
/// `{pool}` may also be written unescaped when it contains `/`.
pub(crate) fn backend_action(state: &AdminState, path: &str) -> Response<Full<Bytes>> {
    let rest = path.trim_start_matches("/api/v1/pools/");
    let parsed = rest.rsplit_once("/backends/").and_then(|(pool, tail)| {
        let (address, action) = tail.rsplit_once('/')?;
        Some((decode(pool)?, decode(address)?, action))
    });
    let Some((pool, address, action)) = parsed else {
        return text(StatusCode::NOT_FOUND, "not found\n", "text/plain");
    };
    let drain = match action {
        "drain" => true,
        "enable" => false,
        _ => return text(StatusCode::NOT_FOUND, "unknown action\n", "text/plain"),
    };
    let pools = state.pools.load();
    let found: Vec<_> = pools
        .iter()
        .filter(|p| p.name == pool)
        .filter_map(|p| p.backend(&address))
        .collect();
    if found.is_empty() {
        return text(
            StatusCode::NOT_FOUND,
            "no such pool or backend\n",
            "text/plain",
        );
    }
    for b in found {
        b.set_drained(drain, Instant::now());
    }
    text(
        StatusCode::OK,
        format!("{address} {action}ed\n"),
        "text/plain",
    )
}
