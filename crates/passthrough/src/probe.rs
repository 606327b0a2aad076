//! Active health of a Mode A backend without its keys: a long header of a
//! reserved version (RFC 9000 §15: `0x?a?a?a?a` is never supported) in a
//! full-size datagram, which every QUIC server must answer with Version
//! Negotiation echoing our connection IDs (RFC 8999 §6). A backend that
//! answers is a QUIC server listening at that address.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use eg_balancer::health::active::Probe;
use eg_balancer::BackendState;
use tokio::net::UdpSocket;

use crate::header::{self, Packet, MIN_INITIAL_DATAGRAM};

/// A reserved version, chosen from the `0x?a?a?a?a` pattern.
pub const PROBE_VERSION: u32 = 0x5a6a_7a8a;

pub struct VersionProbe;

impl Probe for VersionProbe {
    fn check<'a>(
        &'a self,
        backend: &'a BackendState,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            // Not std's `to_socket_addrs`: a host name would block this
            // async worker in getaddrinfo.
            let Ok(mut addrs) = tokio::net::lookup_host(&backend.address).await else {
                return false;
            };
            let Some(addr) = addrs.next() else {
                return false;
            };
            probe(addr).await.unwrap_or(false)
        })
    }
}

/// The probe datagram: reserved version, 8-byte CIDs, zero padding.
pub fn probe_datagram(dcid: &[u8; 8], scid: &[u8; 8]) -> Vec<u8> {
    let mut p = vec![0xc0];
    p.extend_from_slice(&PROBE_VERSION.to_be_bytes());
    p.push(8);
    p.extend_from_slice(dcid);
    p.push(8);
    p.extend_from_slice(scid);
    p.resize(MIN_INITIAL_DATAGRAM, 0);
    p
}

/// Whether `datagram` is the Version Negotiation answering our probe.
pub fn answers(datagram: &[u8], dcid: &[u8; 8], scid: &[u8; 8]) -> bool {
    matches!(
        header::parse(datagram),
        Ok(Packet::VersionNegotiation { dcid: d, scid: s, .. }) if d == scid && s == dcid
    )
}

/// One exchange; the caller's `timeout_ms` bounds it.
async fn probe(addr: SocketAddr) -> std::io::Result<bool> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().map_err(std::io::Error::other)?
    } else {
        "[::]:0".parse().map_err(std::io::Error::other)?
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(addr).await?;
    let dcid: [u8; 8] = rand::random();
    let scid: [u8; 8] = rand::random();
    socket.send(&probe_datagram(&dcid, &scid)).await?;
    let mut buf = vec![0u8; 2048];
    loop {
        let n = socket.recv(&mut buf).await?;
        if buf.get(..n).is_some_and(|d| answers(d, &dcid, &scid)) {
            return Ok(true);
        }
    }
}
