//! Dialing a backend: TCP with a timeout, then TLS when configured.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use eg_tls::BackendTls;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;

/// A backend connection, cleartext or TLS.
pub enum BackendStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a dial failed. Nothing reached the backend, so any request may be
/// retried elsewhere.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connect to {0} failed: {1}")]
    Refused(String, io::Error),
    #[error("connect to {0} timed out")]
    Timeout(String),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, io::Error),
}

/// Linux errno values of failures that are ours, not the backend's: out
/// of descriptors (EMFILE, ENFILE), of ephemeral ports (EADDRNOTAVAIL), of
/// socket buffers or memory (ENOBUFS, ENOMEM).
const LOCAL_ERRNOS: [i32; 5] = [24, 23, 99, 105, 12];

impl DialError {
    /// The dial failed for a lack of local resources: the backend is not
    /// to blame, and another backend would fail the same way.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Refused(_, e) => e.raw_os_error().is_some_and(|n| LOCAL_ERRNOS.contains(&n)),
            Self::Timeout(_) | Self::Tls(..) => false,
        }
    }
}

pub async fn dial(
    address: &str,
    tls: Option<&BackendTls>,
    connect_timeout: Duration,
) -> Result<BackendStream, DialError> {
    let tcp = match timeout(connect_timeout, TcpStream::connect(address)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(DialError::Refused(address.to_owned(), e)),
        Err(_) => return Err(DialError::Timeout(address.to_owned())),
    };
    let _ = tcp.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok(BackendStream::Plain(tcp));
    };
    match timeout(
        connect_timeout,
        tls.connector.connect(tls.server_name.clone(), tcp),
    )
    .await
    {
        Ok(Ok(s)) => Ok(BackendStream::Tls(Box::new(s))),
        Ok(Err(e)) => Err(DialError::Tls(address.to_owned(), e)),
        Err(_) => Err(DialError::Timeout(address.to_owned())),
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, data),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
