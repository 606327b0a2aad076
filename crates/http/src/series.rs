//! The metric series a request touches, resolved once per settings
//! generation instead of per request: a label lookup hashes every label
//! and takes the vector's lock. Each series is still looked up the first
//! time it counts, so only series that counted are exported, as before.

use std::sync::OnceLock;

use eg_runtime::metrics::metrics;
use http::Version;
use prometheus::{Histogram, IntCounter};

/// The `protocol` label of a request, by its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    H1,
    H2,
    H3,
}

impl Protocol {
    const ALL: [Self; 3] = [Self::H1, Self::H2, Self::H3];

    pub fn of(version: Version) -> Self {
        match version {
            Version::HTTP_2 => Self::H2,
            Version::HTTP_3 => Self::H3,
            _ => Self::H1,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }
}

/// The `code_class` label of a response status.
fn code_class(status: u16) -> (usize, &'static str) {
    match status {
        100..=199 => (0, "1xx"),
        200..=299 => (1, "2xx"),
        300..=399 => (2, "3xx"),
        400..=499 => (3, "4xx"),
        _ => (4, "5xx"),
    }
}

const CODE_CLASSES: usize = 5;

/// `http_requests_total` of one (listener, route, cluster).
pub struct RouteSeries {
    listener: String,
    route: String,
    cluster: String,
    /// By protocol, then code class.
    requests: [[OnceLock<IntCounter>; CODE_CLASSES]; Protocol::ALL.len()],
}

impl RouteSeries {
    pub fn new(listener: &str, route: &str, cluster: &str) -> Self {
        Self {
            listener: listener.to_owned(),
            route: route.to_owned(),
            cluster: cluster.to_owned(),
            requests: Default::default(),
        }
    }

    pub fn route(&self) -> &str {
        &self.route
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn count(&self, protocol: Protocol, status: u16) {
        let (class, class_label) = code_class(status);
        let Some(cell) = self
            .requests
            .get(protocol as usize)
            .and_then(|by_class| by_class.get(class))
        else {
            return;
        };
        cell.get_or_init(|| {
            metrics().http_requests_total.with_label_values(&[
                &self.listener,
                &self.route,
                &self.cluster,
                protocol.label(),
                class_label,
            ])
        })
        .inc();
    }
}

/// A listener's per-request series outside any route.
pub struct ListenerSeries {
    listener: String,
    /// `http_request_duration_seconds` by protocol.
    duration: [OnceLock<Histogram>; Protocol::ALL.len()],
    /// Answered before routing (a malformed request, the in-flight cap).
    pub unrouted: RouteSeries,
    /// No route matched: the listener's default pool.
    pub default_route: RouteSeries,
}

impl ListenerSeries {
    pub fn new(listener: &str, default_cluster: Option<&str>) -> Self {
        Self {
            listener: listener.to_owned(),
            duration: Default::default(),
            unrouted: RouteSeries::new(listener, "none", "none"),
            default_route: RouteSeries::new(listener, "none", default_cluster.unwrap_or("none")),
        }
    }

    pub fn observe_duration(&self, protocol: Protocol, seconds: f64) {
        let Some(cell) = self.duration.get(protocol as usize) else {
            return;
        };
        cell.get_or_init(|| {
            metrics()
                .http_request_duration_seconds
                .with_label_values(&[&self.listener, protocol.label()])
        })
        .observe(seconds);
    }
}

/// What came of one attempt on a backend (`backend_requests_total`'s
/// `outcome`).
#[derive(Debug, Clone, Copy)]
pub enum BackendOutcome {
    Response,
    Error,
    Timeout,
    ConnectFailed,
}

impl BackendOutcome {
    const COUNT: usize = 4;

    fn label(self) -> &'static str {
        match self {
            Self::Response => "response",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::ConnectFailed => "connect_failed",
        }
    }
}

/// `backend_requests_total` of one backend of one pool.
pub struct BackendSeries {
    cluster: String,
    backend: String,
    outcomes: [OnceLock<IntCounter>; BackendOutcome::COUNT],
}

impl BackendSeries {
    pub fn new(cluster: &str, backend: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            backend: backend.to_owned(),
            outcomes: Default::default(),
        }
    }

    pub fn count(&self, outcome: BackendOutcome) {
        let Some(cell) = self.outcomes.get(outcome as usize) else {
            return;
        };
        cell.get_or_init(|| {
            metrics().backend_requests_total.with_label_values(&[
                &self.cluster,
                &self.backend,
                outcome.label(),
            ])
        })
        .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_counts_under_its_labels_and_only_once_used() {
        let series = RouteSeries::new("series-test", "route-7", "pool-x");
        let family = || {
            metrics()
                .registry
                .gather()
                .into_iter()
                .find(|f| f.get_name() == "expressgateway_http_requests_total")
        };
        let mine = |class: &str| {
            family().map_or(0, |f| {
                f.get_metric()
                    .iter()
                    .filter(|m| {
                        let labels: Vec<_> = m
                            .get_label()
                            .iter()
                            .map(|l| (l.get_name(), l.get_value()))
                            .collect();
                        labels.contains(&("listener", "series-test"))
                            && labels.contains(&("route", "route-7"))
                            && labels.contains(&("cluster", "pool-x"))
                            && labels.contains(&("protocol", "h2"))
                            && labels.contains(&("code_class", class))
                    })
                    .map(|m| m.get_counter().get_value() as u64)
                    .sum::<u64>()
            })
        };
        series.count(Protocol::H2, 204);
        series.count(Protocol::H2, 200);
        series.count(Protocol::H2, 503);
        assert_eq!(mine("2xx"), 2);
        assert_eq!(mine("5xx"), 1);
        assert_eq!(mine("4xx"), 0);
    }
}
