//! HTTP/2 upstream: one multiplexed connection per backend (shared, see
//! `shared_dial`), opened again when it dies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use eg_tls::BackendTls;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

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

/// How often, and how many times, a fresh connection looks whether the
/// backend's SETTINGS enabled extended CONNECT: every 2 ms for 1 s covers
/// the first round trip to any backend worth waiting for.
const SETTINGS_LOOK_EVERY: Duration = Duration::from_millis(2);
const SETTINGS_LOOKS: u32 = 500;

/// A request sender on the backend's connection, and what the backend's
/// SETTINGS said about extended CONNECT (hyper reports it only on the
/// connection future, which its task owns).
#[derive(Clone)]
pub struct H2Sender {
    pub send: SendRequest<ProxyBody>,
    extended_connect: Arc<AtomicBool>,
}

impl H2Sender {
    pub fn is_closed(&self) -> bool {
        self.send.is_closed()
    }

    /// SETTINGS_ENABLE_CONNECT_PROTOCOL as last received (RFC 8441 §3).
    pub fn extended_connect(&self) -> bool {
        self.extended_connect.load(Ordering::Relaxed)
    }
}

#[derive(Default, Clone)]
pub struct H2Conn {
    shared: Arc<SharedDial<H2Sender>>,
}

impl H2Conn {
    pub async fn sender(
        &self,
        address: &str,
        tls: Option<&BackendTls>,
        connect_timeout: Duration,
    ) -> Result<H2Sender, DialError> {
        if let Some(sender) = self.shared.current(|s| !s.is_closed()) {
            return Ok(sender);
        }
        let (owned, tls) = (address.to_owned(), tls.cloned());
        self.shared
            .get_or_dial(address, move || async move {
                connect(&owned, tls.as_ref(), connect_timeout).await
            })
            .await
    }
}

async fn connect(
    address: &str,
    tls: Option<&BackendTls>,
    connect_timeout: Duration,
) -> Result<H2Sender, DialError> {
    let stream = dial(address, tls, connect_timeout).await?;
    let handshake = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .handshake(TokioIo::new(stream));
    let (send, mut conn) = tokio::time::timeout(connect_timeout, handshake)
        .await
        .map_err(|_| DialError::Timeout(address.to_owned()))?
        .map_err(|e| DialError::Refused(address.to_owned(), std::io::Error::other(e)))?;
    let extended_connect = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&extended_connect);
    tokio::spawn(async move {
        // hyper runs the h2 connection in a task of its own and offers the
        // backend's SETTINGS only here: look while they are due.
        let looks = SETTINGS_LOOKS;
        let mut looked = 0u32;
        let ended = loop {
            tokio::select! {
                ended = &mut conn => break ended,
                () = tokio::time::sleep(SETTINGS_LOOK_EVERY), if looked < looks => {
                    looked += 1;
                    let on = conn.is_extended_connect_protocol_enabled();
                    flag.store(on, Ordering::Relaxed);
                    if on {
                        looked = looks;
                    }
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream h2 connection ended");
        }
    });
    Ok(H2Sender {
        send,
        extended_connect,
    })
}
