//! HTTP/2 upstream: a small set of multiplexed connections per backend,
//! grown when the backend's stream limit is reached, each opened again
//! when it dies.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use eg_tls::BackendTls;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::h2_settings::{PeerSettings, SettingsSniffer};
use super::shared_dial::SharedDial;
use super::stream::{dial, DialError};
use crate::body::ProxyBody;

/// Upstream flow-control windows: 1 MiB per stream and 4 MiB per
/// connection keep a loopback or LAN backend streaming at full speed
/// while bounding what one slow client can make us buffer.
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// Ping an idle upstream connection so a dead backend is noticed before a
/// request is sent on it.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

type H2Sender = SendRequest<ProxyBody>;

/// One live connection and what is known of its load.
#[derive(Clone)]
pub struct H2Conn {
    sender: H2Sender,
    peer: Arc<PeerSettings>,
    /// Streams we have open on it (requests whose response has not ended).
    open: Arc<AtomicU32>,
}

impl H2Conn {
    /// Take a stream slot if the backend's limit leaves one.
    fn try_ticket(&self) -> Option<(H2Sender, StreamTicket)> {
        if self.sender.is_closed() {
            return None;
        }
        let limit = self.peer.max_concurrent_streams();
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(self.issue())
    }

    /// A stream on this connection whatever its load (h2 queues it until
    /// one of the backend's slots frees).
    fn ticket(&self) -> (H2Sender, StreamTicket) {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.issue()
    }

    fn issue(&self) -> (H2Sender, StreamTicket) {
        let ticket = StreamTicket {
            open: Arc::clone(&self.open),
            peer: Arc::clone(&self.peer),
        };
        (self.sender.clone(), ticket)
    }
}

/// One open stream on a connection; held by the response body.
pub struct StreamTicket {
    open: Arc<AtomicU32>,
    peer: Arc<PeerSettings>,
}

impl StreamTicket {
    /// Whether the backend takes extended CONNECT (RFC 8441) on this
    /// connection.
    pub fn extended_connect(&self) -> bool {
        self.peer.enable_connect_protocol()
    }
}

impl Drop for StreamTicket {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A backend's HTTP/2 connections: the first one with a free stream slot
/// carries the request; when every one is at the backend's
/// SETTINGS_MAX_CONCURRENT_STREAMS another is dialed (one dial at a time,
/// shared by the waiters, see `shared_dial`), up to
/// `connection_pool.max_h2_connections_per_backend`. At that cap the least
/// loaded one takes it and h2 queues the stream until one ends.
pub struct H2Conns {
    max: usize,
    live: Arc<ArcSwap<Vec<H2Conn>>>,
    dial: Arc<SharedDial<H2Conn>>,
}

impl H2Conns {
    pub fn new(max_connections: u32) -> Self {
        Self {
            max: (max_connections as usize).max(1),
            live: Arc::new(ArcSwap::from_pointee(Vec::new())),
            dial: Arc::default(),
        }
    }

    pub async fn sender(
        &self,
        address: &str,
        tls: Option<&BackendTls>,
        connect_timeout: Duration,
    ) -> Result<(H2Sender, StreamTicket), DialError> {
        // Each round either finds a slot, settles for the least loaded
        // connection at the cap, or adds a connection: at most `max` dials.
        for _ in 0..=self.max {
            let live = self.live.load();
            if let Some(taken) = live.iter().find_map(H2Conn::try_ticket) {
                return Ok(taken);
            }
            let open: Vec<&H2Conn> = live.iter().filter(|c| !c.sender.is_closed()).collect();
            if open.len() >= self.max {
                if let Some(least) = open.iter().min_by_key(|c| c.open.load(Ordering::Acquire)) {
                    return Ok(least.ticket());
                }
            }
            drop(live);
            // Boxed, as the H1 dial: rare, and large inline.
            let conn = Box::pin(self.dial_one(address, tls, connect_timeout)).await?;
            if let Some(taken) = conn.try_ticket() {
                return Ok(taken);
            }
        }
        // Every connection filled up while we dialed: queue on the least
        // loaded one rather than fail.
        let live = self.live.load();
        live.iter()
            .filter(|c| !c.sender.is_closed())
            .min_by_key(|c| c.open.load(Ordering::Acquire))
            .map(H2Conn::ticket)
            .ok_or_else(|| {
                DialError::Refused(
                    address.to_owned(),
                    std::io::Error::other("every new h2 connection closed at once"),
                )
            })
    }

    /// Join the dial in progress or start one; the new connection joins the
    /// set (closed ones leave it) before any waiter sees it.
    async fn dial_one(
        &self,
        address: &str,
        tls: Option<&BackendTls>,
        connect_timeout: Duration,
    ) -> Result<H2Conn, DialError> {
        let (owned, tls, live) = (address.to_owned(), tls.cloned(), Arc::clone(&self.live));
        self.dial
            .get_or_dial(address, move || async move {
                let conn = connect(&owned, tls.as_ref(), connect_timeout).await?;
                live.rcu(|cur| {
                    let mut next: Vec<H2Conn> = cur
                        .iter()
                        .filter(|c| !c.sender.is_closed())
                        .cloned()
                        .collect();
                    next.push(conn.clone());
                    next
                });
                Ok(conn)
            })
            .await
    }
}

async fn connect(
    address: &str,
    tls: Option<&BackendTls>,
    connect_timeout: Duration,
) -> Result<H2Conn, DialError> {
    let stream = dial(address, tls, connect_timeout).await?;
    let peer = Arc::new(PeerSettings::default());
    let stream = SettingsSniffer::new(stream, Arc::clone(&peer));
    let handshake = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .handshake(TokioIo::new(stream));
    let (sender, conn) = tokio::time::timeout(connect_timeout, handshake)
        .await
        .map_err(|_| DialError::Timeout(address.to_owned()))?
        .map_err(|e| DialError::Refused(address.to_owned(), std::io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection ended");
        }
    });
    // A backend that never sends SETTINGS is broken; one that is slow to
    // costs one round trip on a new connection, and then its stream limit
    // is known before a burst of requests is spread over connections.
    if !peer.first_settings(connect_timeout).await {
        return Err(DialError::Timeout(address.to_owned()));
    }
    Ok(H2Conn {
        sender,
        peer,
        open: Arc::default(),
    })
}
