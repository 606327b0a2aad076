//! gRPC over the proxy core (SPEC §6): which requests are gRPC calls, the
//! deadline that governs them (`grpc-timeout`, clamped), the synthesized
//! health check, and gateway-made errors as gRPC statuses.
//!
//! With `[listeners.grpc] enabled = false` none of this applies: a gRPC
//! request is forwarded as plain HTTP (`total_timeout_ms`, HTTP error
//! statuses, no clamp, no local health).

pub mod deadline;
pub mod health;
pub mod status;
mod stream;

use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Request};

pub use stream::GrpcBody;

/// `[listeners.grpc]`, as the core uses it.
#[derive(Debug, Clone)]
pub struct GrpcSettings {
    pub enabled: bool,
    /// `max_deadline_seconds`: the longest deadline a call may have, and
    /// the deadline of a call that set none.
    pub max_deadline: Duration,
    pub health_synthesized: bool,
}

impl From<&eg_config::Grpc> for GrpcSettings {
    fn from(g: &eg_config::Grpc) -> Self {
        Self {
            enabled: g.enabled,
            max_deadline: Duration::from_secs(g.max_deadline_seconds),
            health_synthesized: g.health_synthesized,
        }
    }
}

/// What the core knows of one gRPC call.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The call's deadline from its arrival: the client's `grpc-timeout`
    /// clamped to `max_deadline_seconds` (or the clamp when it set none).
    pub budget: Duration,
}

/// The front's watchdog outlives the core's deadline by this much, so at
/// the deadline the core ends the call with DEADLINE_EXCEEDED trailers
/// (which a client can read) before the front would reset the stream; a
/// second covers timer skew on a loaded host.
const FRONT_GRACE: Duration = Duration::from_secs(1);

/// `application/grpc`, `application/grpc+proto`, `application/grpc;...`;
/// not `application/grpc-web*`, which is HTTP/1.1-friendly and carries
/// its trailers in the body: that is plain HTTP to the gateway.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let ct = ct.as_bytes();
    ct.get(..16)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"application/grpc"))
        && matches!(ct.get(16), None | Some(b'+' | b';'))
}

impl GrpcSettings {
    /// The call `req` is, when gRPC handling is on and it is one.
    pub fn classify<B>(&self, req: &Request<B>) -> Option<Call> {
        if !self.enabled || !is_grpc(req.headers()) {
            return None;
        }
        let asked = req
            .headers()
            .get(deadline::GRPC_TIMEOUT)
            .and_then(|v| deadline::parse(v.as_bytes()));
        Some(Call {
            budget: asked.map_or(self.max_deadline, |d| d.min(self.max_deadline)),
        })
    }

    /// How long a front lets this request's response run: the gRPC
    /// deadline (plus a grace, see `FRONT_GRACE`) for a gRPC call, else
    /// `total` (`total_timeout_ms`).
    pub fn front_budget<B>(&self, req: &Request<B>, total: Duration) -> Duration {
        self.classify(req)
            .map_or(total, |call| call.budget + FRONT_GRACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ct(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, ct.parse().expect("value"));
        h
    }

    #[test]
    fn grpc_content_types() {
        for yes in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=1",
        ] {
            assert!(is_grpc(&with_ct(yes)), "{yes}");
        }
        for no in [
            "application/grpc-web",
            "application/grpc-web-text",
            "application/json",
            "appl",
        ] {
            assert!(!is_grpc(&with_ct(no)), "{no}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn deadline_clamped_or_given() {
        let s = GrpcSettings {
            enabled: true,
            max_deadline: Duration::from_secs(10),
            health_synthesized: true,
        };
        let req = |t: Option<&str>| {
            let mut b = Request::builder().header(CONTENT_TYPE, "application/grpc");
            if let Some(t) = t {
                b = b.header("grpc-timeout", t);
            }
            b.body(()).expect("request")
        };
        let budget = |t| s.classify(&req(t)).map(|c| c.budget);
        assert_eq!(budget(None), Some(Duration::from_secs(10)));
        assert_eq!(budget(Some("1H")), Some(Duration::from_secs(10)));
        assert_eq!(budget(Some("250m")), Some(Duration::from_millis(250)));
        assert_eq!(budget(Some("bogus")), Some(Duration::from_secs(10)));
        let off = GrpcSettings {
            enabled: false,
            ..s
        };
        assert!(off.classify(&req(None)).is_none());
    }
}
