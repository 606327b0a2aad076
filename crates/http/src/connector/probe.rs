//! One request on a fresh connection of the backend's own protocol, for
//! active health checks: HTTP/1.1, HTTP/2 (h2c, or TLS with ALPN h2) or
//! HTTP/3 over QUIC, so a check proves what traffic will use. Not pooled:
//! a check also proves a new connection can be made.

use std::time::Duration;

use eg_config::BackendProtocol;
use eg_tls::BackendTls;
use http::request::Parts;
use http::Response;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::request_form;
use super::stream::dial;
use crate::body::{boxed_incoming, BoxError, ProxyBody};

/// Where and how to probe one backend.
pub struct ProbeTarget<'a> {
    pub address: &'a str,
    pub protocol: BackendProtocol,
    pub tls: Option<&'a BackendTls>,
    /// `Host` / `:authority` to send.
    pub authority: &'a str,
    pub connect_timeout: Duration,
}

/// A fresh QUIC connection (and HTTP/3 setup) to an h3 backend, dropped
/// at once: the connect check of `kind = "tcp"` for h3.
pub async fn quic_handshake(
    address: &str,
    tls: Option<&BackendTls>,
    connect_timeout: Duration,
) -> Result<(), BoxError> {
    let conn = super::h3::H3Conn::new(tls);
    conn.sender(address, tls, connect_timeout).await?;
    Ok(())
}

/// Send `parts` + `body` and return the response (its body streams; the
/// connection lives as long as it).
pub async fn probe_exchange(
    target: &ProbeTarget<'_>,
    parts: Parts,
    body: ProxyBody,
) -> Result<Response<ProxyBody>, BoxError> {
    match target.protocol {
        BackendProtocol::H3 => {
            let req = request_form::multiplexed(parts, target.authority, true, body)?;
            let conn = super::h3::H3Conn::new(target.tls);
            let sender = conn
                .sender(target.address, target.tls, target.connect_timeout)
                .await?;
            Ok(super::h3::send(sender, req).await?)
        }
        BackendProtocol::H2 => {
            let tls = target.tls.is_some();
            let req = request_form::multiplexed(parts, target.authority, tls, body)?;
            let stream = dial(target.address, target.tls, target.connect_timeout).await?;
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await?;
            tokio::spawn(conn);
            Ok(sender.send_request(req).await?.map(boxed_incoming))
        }
        BackendProtocol::H1 | BackendProtocol::Tcp => {
            let req = request_form::h1(parts, Some(target.authority), body)?;
            let stream = dial(target.address, target.tls, target.connect_timeout).await?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            Ok(sender.send_request(req).await?.map(boxed_incoming))
        }
    }
}
