//! Routing: first match wins over host (exact or `*.` wildcard), path
//! prefix and header; no match falls to the listener's default pool.

use std::sync::Arc;

use eg_config::Route;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::series::RouteSeries;
use crate::settings::PoolHandle;

pub struct CompiledRoute {
    host: Option<HostMatch>,
    path_prefix: Option<String>,
    header: Option<(HeaderName, HeaderValue)>,
    /// `None`: the listener's default pool.
    pub pool: Option<Arc<PoolHandle>>,
    /// Its `http_requests_total` series.
    pub series: RouteSeries,
}

enum HostMatch {
    Exact(String),
    /// `*.example.com` stored as `.example.com`.
    Suffix(String),
}

impl CompiledRoute {
    /// `None` when the header name or value cannot be an HTTP header
    /// (validation already refuses such configs).
    /// `listener` and `default_cluster` (the listener's default pool) label
    /// the route's metric series.
    pub fn new(
        index: usize,
        route: &Route,
        pool: Option<Arc<PoolHandle>>,
        listener: &str,
        default_cluster: Option<&str>,
    ) -> Option<Self> {
        let host = route.host.as_ref().map(|h| match h.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_ascii_lowercase()),
            None => HostMatch::Exact(h.to_ascii_lowercase()),
        });
        let header = match &route.header {
            Some(m) => Some((
                HeaderName::from_bytes(m.name.as_bytes()).ok()?,
                HeaderValue::from_str(&m.value).ok()?,
            )),
            None => None,
        };
        let label = format!("route-{index}");
        let cluster = pool
            .as_ref()
            .map(|p| p.pool.name.as_str())
            .or(default_cluster)
            .unwrap_or("none");
        let series = RouteSeries::new(listener, &label, cluster);
        Some(Self {
            host,
            path_prefix: route.path_prefix.clone(),
            header,
            pool,
            series,
        })
    }

    /// `host` is lowercase without port.
    pub fn matches(&self, host: &str, path: &str, headers: &HeaderMap) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => h == host,
            Some(HostMatch::Suffix(s)) => host.len() > s.len() && host.ends_with(s.as_str()),
        };
        host_ok
            && self
                .path_prefix
                .as_ref()
                .is_none_or(|p| path.starts_with(p.as_str()))
            && self
                .header
                .as_ref()
                .is_none_or(|(name, value)| headers.get_all(name).iter().any(|v| v == value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(
        host: Option<&str>,
        prefix: Option<&str>,
        header: Option<(&str, &str)>,
    ) -> CompiledRoute {
        let r = Route {
            host: host.map(Into::into),
            path_prefix: prefix.map(Into::into),
            header: header.map(|(n, v)| eg_config::HeaderMatch {
                name: n.into(),
                value: v.into(),
            }),
            cluster: None,
        };
        CompiledRoute::new(0, &r, None, "test", None).expect("valid route")
    }

    #[test]
    fn host_wildcard_path_and_header() {
        let none = HeaderMap::new();
        let w = route(Some("*.example.com"), None, None);
        assert!(w.matches("a.example.com", "/", &none));
        assert!(w.matches("a.b.example.com", "/", &none));
        assert!(!w.matches("example.com", "/", &none));
        assert!(!w.matches("badexample.com", "/", &none));
        let p = route(None, Some("/api/"), None);
        assert!(p.matches("x", "/api/v1", &none) && !p.matches("x", "/apx", &none));
        let h = route(None, None, Some(("x-canary", "1")));
        let mut hm = HeaderMap::new();
        assert!(!h.matches("x", "/", &hm));
        hm.insert("x-canary", HeaderValue::from_static("1"));
        assert!(h.matches("x", "/", &hm));
    }
}
