//! Active health probes that speak HTTP: `http`/`https` (a request with an
//! expected status) and `grpc` (`grpc.health.v1.Health/Check`, SERVING),
//! each in the backend's own protocol (HTTP/1.1, h2c or h2, HTTP/3).
//! The runner, rise/fall and the TCP probe live in the balancer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use eg_balancer::health::active::{self, Probe, TcpProbe};
use eg_balancer::{BackendState, Pool};
use eg_config::{HealthCheckKind, StatusRanges};
use eg_tls::BackendTls;
use http::{Method, Request};
use http_body_util::BodyExt;

use crate::body::ProxyBody;
use crate::connector::probe::{probe_exchange, ProbeTarget};
use crate::grpc::health;

/// Start the active checks `pool` is configured with. `tls[i]` is how to
/// reach backend `i` over TLS (required for `https`; used by `grpc` when
/// the backend is TLS).
pub fn spawn(pool: &Arc<Pool>, tls: Vec<Option<BackendTls>>, connect_timeout: Duration) {
    let Some(spec) = pool.health_check.clone() else {
        return;
    };
    let probe: Arc<dyn Probe> = match spec.kind {
        HealthCheckKind::Tcp => Arc::new(ConnectProbe {
            tls,
            connect_timeout,
        }),
        HealthCheckKind::Http | HealthCheckKind::Https | HealthCheckKind::Grpc => {
            Arc::new(HttpProbe {
                grpc: spec.kind == HealthCheckKind::Grpc,
                require_tls: spec.kind == HealthCheckKind::Https,
                method: Method::from_bytes(spec.method.as_bytes()).unwrap_or(Method::GET),
                path: spec.path.clone(),
                host: spec.host.clone(),
                expected: StatusRanges::parse(&spec.expected_status)
                    .unwrap_or_else(StatusRanges::success),
                service: spec.grpc_service.clone(),
                tls,
                connect_timeout,
            })
        }
    };
    active::spawn(pool, probe);
}

/// `kind = "tcp"`: a connect in the backend's own transport, a TCP connect,
/// or for an h3 backend a verified QUIC handshake (ALPN h3).
struct ConnectProbe {
    tls: Vec<Option<BackendTls>>,
    connect_timeout: Duration,
}

impl Probe for ConnectProbe {
    fn check<'a>(
        &'a self,
        backend: &'a BackendState,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            if backend.protocol != eg_config::BackendProtocol::H3 {
                return TcpProbe.check(backend).await;
            }
            let tls = self.tls.get(backend.index).and_then(Option::as_ref);
            crate::connector::probe::quic_handshake(&backend.address, tls, self.connect_timeout)
                .await
                .map_err(|e| tracing::debug!(backend = %backend.address, error = %e, "QUIC connect check failed"))
                .is_ok()
        })
    }
}

struct HttpProbe {
    grpc: bool,
    require_tls: bool,
    method: Method,
    path: String,
    host: Option<String>,
    expected: StatusRanges,
    service: String,
    tls: Vec<Option<BackendTls>>,
    connect_timeout: Duration,
}

impl Probe for HttpProbe {
    fn check<'a>(
        &'a self,
        backend: &'a BackendState,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let result = if self.grpc {
                self.grpc_check(backend).await
            } else {
                self.http_check(backend).await
            };
            result.unwrap_or_else(|e| {
                tracing::debug!(backend = %backend.address, error = %e, "health probe failed");
                false
            })
        })
    }
}

type ProbeError = Box<dyn std::error::Error + Send + Sync>;

impl HttpProbe {
    fn tls_for(&self, backend: &BackendState) -> Result<Option<&BackendTls>, ProbeError> {
        let tls = self.tls.get(backend.index).and_then(Option::as_ref);
        if self.require_tls && tls.is_none() {
            return Err("https check on a backend without TLS settings (set tls = true)".into());
        }
        Ok(tls)
    }

    fn authority<'b>(&'b self, backend: &'b BackendState) -> &'b str {
        self.host.as_deref().unwrap_or(&backend.address)
    }

    /// One request to `backend` in its own protocol (see `connector::probe`).
    async fn exchange(
        &self,
        backend: &BackendState,
        req: Request<ProxyBody>,
    ) -> Result<http::Response<ProxyBody>, ProbeError> {
        let target = ProbeTarget {
            address: &backend.address,
            protocol: backend.protocol,
            tls: self.tls_for(backend)?,
            authority: self.authority(backend),
            connect_timeout: self.connect_timeout,
        };
        let (parts, body) = req.into_parts();
        probe_exchange(&target, parts, body).await
    }

    async fn http_check(&self, backend: &BackendState) -> Result<bool, ProbeError> {
        let req = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header(http::header::USER_AGENT, "expressgateway-health-check")
            .body(crate::body::empty())?;
        let resp = self.exchange(backend, req).await?;
        Ok(self.expected.contains(resp.status().as_u16()))
    }

    async fn grpc_check(&self, backend: &BackendState) -> Result<bool, ProbeError> {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/grpc.health.v1.Health/Check")
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header(http::header::TE, "trailers")
            .body(crate::body::full(health::request_frame(&self.service)))?;
        let resp = self.exchange(backend, req).await?;
        if resp.status() != http::StatusCode::OK {
            return Ok(false);
        }
        let collected = resp.into_body().collect().await?;
        let trailers_ok = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .is_some_and(|v| v.as_bytes() == b"0");
        Ok(trailers_ok && health::says_serving(collected.to_bytes()))
    }
}
