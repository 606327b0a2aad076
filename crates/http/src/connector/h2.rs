//! HTTP/2 upstream: one multiplexed connection per backend, opened again
//! when it dies. The ready connection is read without a lock; when there
//! is none, exactly one dial runs and every request waiting for the
//! backend shares its result, so a blackholed backend costs each of them
//! one connect timeout, not one each in turn.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use eg_tls::BackendTls;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::watch;

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

/// A dial's outcome as every waiter sees it (`DialError` is not `Clone`).
#[derive(Clone)]
enum Dialed {
    Ready(H2Sender),
    Failed {
        timeout: bool,
        os_error: Option<i32>,
        message: String,
    },
}

impl Dialed {
    fn from_error(e: &DialError) -> Self {
        let (timeout, os_error) = match e {
            DialError::Timeout(_) => (true, None),
            DialError::Refused(_, io) | DialError::Tls(_, io) => (false, io.raw_os_error()),
        };
        Self::Failed {
            timeout,
            os_error,
            message: e.to_string(),
        }
    }

    fn into_result(self, address: &str) -> Result<H2Sender, DialError> {
        match self {
            Self::Ready(s) => Ok(s),
            Self::Failed { timeout: true, .. } => Err(DialError::Timeout(address.to_owned())),
            Self::Failed {
                os_error, message, ..
            } => {
                let io = match os_error {
                    Some(code) => std::io::Error::from_raw_os_error(code),
                    None => std::io::Error::other(message),
                };
                Err(DialError::Refused(address.to_owned(), io))
            }
        }
    }
}

#[derive(Default)]
struct Shared {
    ready: ArcSwapOption<H2Sender>,
    /// The dial in progress, if any: waiters subscribe to its outcome.
    dialing: Mutex<Option<watch::Receiver<Option<Dialed>>>>,
}

#[derive(Default, Clone)]
pub struct H2Conn {
    shared: Arc<Shared>,
}

impl H2Conn {
    pub async fn sender(
        &self,
        address: &str,
        tls: Option<&BackendTls>,
        connect_timeout: Duration,
    ) -> Result<H2Sender, DialError> {
        if let Some(sender) = self.shared.ready.load_full() {
            if !sender.is_closed() {
                return Ok((*sender).clone());
            }
        }
        let mut outcome = self.join_or_dial(address, tls, connect_timeout);
        let waited = outcome.wait_for(Option::is_some).await;
        match waited.as_deref().ok().cloned().flatten() {
            Some(dialed) => dialed.into_result(address),
            None => Err(DialError::Refused(
                address.to_owned(),
                std::io::Error::other("the shared dial ended without an outcome"),
            )),
        }
    }

    /// Subscribe to the dial in progress, or start one.
    fn join_or_dial(
        &self,
        address: &str,
        tls: Option<&BackendTls>,
        connect_timeout: Duration,
    ) -> watch::Receiver<Option<Dialed>> {
        let mut dialing = self
            .shared
            .dialing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = dialing.as_ref() {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(None);
        *dialing = Some(rx.clone());
        let shared = Arc::clone(&self.shared);
        let (address, tls) = (address.to_owned(), tls.cloned());
        // Its own task: the dial completes for the waiters even if the
        // request that started it goes away.
        tokio::spawn(async move {
            let dialed = match connect(&address, tls.as_ref(), connect_timeout).await {
                Ok(sender) => {
                    shared.ready.store(Some(Arc::new(sender.clone())));
                    Dialed::Ready(sender)
                }
                Err(e) => Dialed::from_error(&e),
            };
            *shared
                .dialing
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
            let _ = tx.send(Some(dialed));
        });
        rx
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
    let (sender, conn) = tokio::time::timeout(connect_timeout, handshake)
        .await
        .map_err(|_| DialError::Timeout(address.to_owned()))?
        .map_err(|e| DialError::Refused(address.to_owned(), std::io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection ended");
        }
    });
    Ok(sender)
}
