//! HTTP/2 upstream: one multiplexed connection per backend, opened again
//! when it dies.

use std::time::Duration;

use eg_tls::BackendTls;
use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

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

#[derive(Default)]
pub struct H2Conn {
    current: tokio::sync::Mutex<Option<SendRequest<ProxyBody>>>,
}

impl H2Conn {
    pub async fn sender(
        &self,
        address: &str,
        tls: Option<&BackendTls>,
        connect_timeout: Duration,
    ) -> Result<SendRequest<ProxyBody>, DialError> {
        // Held across the dial so concurrent requests share one new
        // connection instead of racing to open several.
        let mut current = self.current.lock().await;
        if let Some(sender) = current.as_ref() {
            if !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let stream = dial(address, tls, connect_timeout).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .keep_alive_interval(KEEP_ALIVE_INTERVAL)
            .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| DialError::Refused(address.to_owned(), std::io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream h2 connection ended");
            }
        });
        *current = Some(sender.clone());
        Ok(sender)
    }
}
