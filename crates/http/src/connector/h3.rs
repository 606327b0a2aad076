//! HTTP/3 upstream: one QUIC connection per backend carrying many
//! requests, opened again when it closes; TLS verified like every other
//! upstream (ALPN h3).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use eg_tls::BackendTls;
use h3::client::SendRequest;
use http::{Request, Response};
use http_body_util::BodyExt;
use quinn::crypto::rustls::QuicClientConfig;

use super::shared_dial::SharedDial;
use super::stream::DialError;
use super::SendError;
use crate::body::{BoxError, ProxyBody};
use crate::h3io;

type H3Sender = SendRequest<h3_quinn::OpenStreams, Bytes>;

/// A shared client endpoint per address family: one UDP socket carries
/// every upstream QUIC connection of that family.
fn client_endpoint(v6: bool) -> Result<quinn::Endpoint, std::io::Error> {
    static V4: OnceLock<quinn::Endpoint> = OnceLock::new();
    static V6: OnceLock<quinn::Endpoint> = OnceLock::new();
    let (cell, bind): (_, SocketAddr) = if v6 {
        (&V6, (std::net::Ipv6Addr::UNSPECIFIED, 0).into())
    } else {
        (&V4, (std::net::Ipv4Addr::UNSPECIFIED, 0).into())
    };
    if let Some(e) = cell.get() {
        return Ok(e.clone());
    }
    let endpoint = tuned_client_endpoint(bind)?;
    Ok(cell.get_or_init(|| endpoint).clone())
}

/// A client-only quinn endpoint on `bind` with the roomy UDP buffers every
/// QUIC socket of the gateway uses (see `eg_runtime::tune_udp_socket`).
pub fn tuned_client_endpoint(bind: SocketAddr) -> Result<quinn::Endpoint, std::io::Error> {
    let socket = std::net::UdpSocket::bind(bind)?;
    eg_runtime::tune_udp_socket(&socket);
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, runtime)
}

/// Flow-control windows of an upstream H3 connection (quinn's defaults are
/// an unlimited connection window and 1.25 MB per stream): 1 MiB per
/// stream and 8 MiB per connection, the `[listeners.quic]` defaults, keep
/// a LAN backend streaming at full speed while bounding what responses
/// that clients read slowly make us buffer. The send window (our request
/// bodies not yet acknowledged) gets the connection window's size.
const UPSTREAM_STREAM_WINDOW: u32 = 1 << 20;
const UPSTREAM_CONNECTION_WINDOW: u32 = 8 << 20;

fn upstream_transport() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.stream_receive_window(quinn::VarInt::from_u32(UPSTREAM_STREAM_WINDOW))
        .receive_window(quinn::VarInt::from_u32(UPSTREAM_CONNECTION_WINDOW))
        .send_window(u64::from(UPSTREAM_CONNECTION_WINDOW))
        // HTTP/3 datagrams are not relayed: advertise none, buffer none.
        .datagram_receive_buffer_size(None);
    t
}

/// The live connection, tagged with a generation so a closed one's driver
/// never clears its successor.
type Tagged = (u64, H3Sender);

pub struct H3Conn {
    shared: Arc<SharedDial<Tagged>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    client: Option<quinn::ClientConfig>,
}

impl H3Conn {
    pub fn new(tls: Option<&BackendTls>) -> Self {
        let client = tls.and_then(|t| {
            QuicClientConfig::try_from(Arc::clone(&t.config))
                .map(|c| {
                    let mut client = quinn::ClientConfig::new(Arc::new(c));
                    client.transport_config(Arc::new(upstream_transport()));
                    client
                })
                .map_err(|e| tracing::error!(error = %e, "TLS config unusable for QUIC"))
                .ok()
        });
        Self {
            shared: Arc::default(),
            generation: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            client,
        }
    }

    /// The backend's connection: the live one, or the one shared dial
    /// every waiting request joins (see `shared_dial`).
    pub async fn sender(
        &self,
        address: &str,
        tls: Option<&BackendTls>,
        connect_timeout: Duration,
    ) -> Result<H3Sender, DialError> {
        if let Some((_, sender)) = self.shared.current(|(_, s)| !closing(s)) {
            return Ok(sender);
        }
        // A connection the backend is closing (its GOAWAY came, or it
        // failed) takes no new request; it stays up for the streams it
        // carries, and its driver's clear finds nothing to clear.
        self.shared.clear_if(|(_, s)| closing(s));
        let (owned, tls) = (address.to_owned(), tls.cloned());
        let client = self.client.clone();
        let shared = Arc::clone(&self.shared);
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Boxed, as the H1 dial: rare, and large inline.
        let (_, sender) = Box::pin(self.shared.get_or_dial(address, move || async move {
            let sender = connect(&owned, client, tls.as_ref(), connect_timeout, move || {
                // The driver saw the connection close: forget it,
                // unless a newer one already took its place.
                shared.clear_if(|(g, _)| *g == generation);
            })
            .await?;
            Ok((generation, sender))
        }))
        .await?;
        Ok(sender)
    }
}

/// Dial one QUIC connection and start its driver, which calls `closed`
/// when the connection ends.
async fn connect(
    address: &str,
    client: Option<quinn::ClientConfig>,
    tls: Option<&BackendTls>,
    connect_timeout: Duration,
    closed: impl FnOnce() + Send + 'static,
) -> Result<H3Sender, DialError> {
    let fail = |e: BoxError| DialError::Refused(address.to_owned(), std::io::Error::other(e));
    let (Some(client), Some(tls)) = (client, tls) else {
        return Err(fail("h3 backends need TLS settings".into()));
    };
    // Name resolution is part of the dial: bounded like the rest of it.
    let addr = tokio::time::timeout(connect_timeout, tokio::net::lookup_host(address))
        .await
        .map_err(|_| DialError::Timeout(address.to_owned()))?
        .map_err(|e| DialError::Refused(address.to_owned(), e))?
        .next()
        .ok_or_else(|| fail("address resolved to nothing".into()))?;
    let endpoint =
        client_endpoint(addr.is_ipv6()).map_err(|e| DialError::Refused(address.to_owned(), e))?;
    let name = server_name(tls);
    let connecting = endpoint
        .connect_with(client, addr, &name)
        .map_err(|e| fail(e.into()))?;
    let conn = match tokio::time::timeout(connect_timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Err(fail(e.into())),
        Err(_) => return Err(DialError::Timeout(address.to_owned())),
    };
    let setup = h3::client::new(h3_quinn::Connection::new(conn));
    let (mut driver, sender) = tokio::time::timeout(connect_timeout, setup)
        .await
        .map_err(|_| DialError::Timeout(address.to_owned()))?
        .map_err(|e| fail(e.into()))?;
    tokio::spawn(async move {
        let err = futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await;
        tracing::debug!(error = %err, "upstream h3 connection closed");
        closed();
    });
    Ok(sender)
}

/// Whether the backend sent GOAWAY (no new stream may go out on this
/// connection, RFC 9114 §5.2) or the connection has failed.
fn closing(sender: &H3Sender) -> bool {
    use ::h3::ConnectionState as _;
    sender.is_closing() || sender.get_conn_error().is_some()
}

fn server_name(tls: &BackendTls) -> String {
    match &tls.server_name {
        rustls::pki_types::ServerName::DnsName(d) => d.as_ref().to_owned(),
        rustls::pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

/// Send one request on an h3 connection; the response body streams.
///
/// The request body is sent by its own task, tied to the exchange: when
/// the exchange ends first (no response, or the response body dropped,
/// e.g. because the client went away), the upload stops and the backend
/// sees its request stream reset (H3_REQUEST_CANCELLED), never a clean end.
///
/// A connection the backend has sent GOAWAY on hands the request back
/// untouched (`SendError::Unsent`): it was picked before the GOAWAY came.
pub async fn send(
    mut sender: H3Sender,
    req: Request<ProxyBody>,
) -> Result<Response<ProxyBody>, SendError> {
    if closing(&sender) {
        return Err(SendError::Unsent(
            Box::new(req),
            "the backend's HTTP/3 connection is closing (GOAWAY)".into(),
        ));
    }
    let (parts, body) = req.into_parts();
    let head = Request::from_parts(parts, ());
    // Should the GOAWAY land between that look and this send, h3 refuses
    // it (RemoteClosing) before writing anything: `unprocessed` then.
    let stream = sender
        .send_request(head)
        .await
        .map_err(|e| SendError::H3(e.into()))?;
    let id = stream.id().into_inner();
    let (mut send_half, mut recv_half) = stream.split();
    // Held by the response body; dropped with it, or on any early return.
    let (exchange, ended) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            sent = h3io::send_body(body, &mut send_half, None) => {
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "h3 request body aborted");
                }
            }
            _ = ended => h3io::H3Send::abort(&mut send_half),
        }
    });
    let resp = recv_half.recv_response().await.map_err(|e| {
        // The backend's GOAWAY (come since) named this stream unprocessed.
        use ::h3::ConnectionState as _;
        if sender.peer_goaway_id().is_some_and(|last| id >= last) {
            return SendError::H3(Box::new(super::LeftOutOfGoaway(e.into())));
        }
        SendError::H3(e.into())
    })?;
    let (parts, ()) = resp.into_parts();
    let body = h3io::recv_body(recv_half, h3io::H3_REQUEST_CANCELLED)
        .map_frame(move |frame| {
            let _live = &exchange;
            frame
        })
        .boxed();
    Ok(Response::from_parts(parts, body))
}

/// Open an extended CONNECT tunnel (RFC 9220 WebSocket): on a 2xx the
/// stream becomes a byte stream; any other answer comes back with its body.
pub async fn tunnel(
    mut sender: H3Sender,
    req: Request<ProxyBody>,
) -> Result<(Response<ProxyBody>, Option<tokio::io::DuplexStream>), BoxError> {
    let (parts, _) = req.into_parts();
    let stream = sender.send_request(Request::from_parts(parts, ())).await?;
    let (send_half, mut recv_half) = stream.split();
    let resp = recv_half.recv_response().await?;
    let (parts, ()) = resp.into_parts();
    if parts.status.is_success() {
        let (io, pump) = h3io::tunnel(send_half, recv_half);
        tokio::spawn(pump);
        return Ok((Response::from_parts(parts, crate::body::empty()), Some(io)));
    }
    let mut send_half = send_half;
    let _ = send_half.finish().await;
    Ok((
        Response::from_parts(
            parts,
            h3io::recv_body(recv_half, h3io::H3_REQUEST_CANCELLED),
        ),
        None,
    ))
}

/// What the backend's SETTINGS said about extended CONNECT, once they
/// arrived (`None` before: h3 then offers its defaults, owned).
pub fn extended_connect(sender: &H3Sender) -> Option<bool> {
    use ::h3::ConnectionState as _;
    match sender.settings() {
        std::borrow::Cow::Borrowed(s) => Some(s.enable_extended_connect()),
        std::borrow::Cow::Owned(_) => None,
    }
}
