//! Real backends on loopback, spawned on the test's runtime.

use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Echo every byte back; shut the write side when the client does.
pub async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = stream.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Reads until the client's FIN, then answers `got <n> bytes` and closes:
/// proves half-close travels client -> backend, and data plus FIN travel
/// back after it.
pub async fn half_close_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                if stream.read_to_end(&mut all).await.is_ok() {
                    let _ = stream
                        .write_all(format!("got {} bytes", all.len()).as_bytes())
                        .await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });
    addr
}

/// An address nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Deterministic pseudo-random bytes (xorshift), cheap to make in bulk.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Largest body `file_reply` makes: above any test's download.
const MAX_FILE_BYTES: usize = 64 << 20;
/// Longest pause `file_reply` makes a download take.
const MAX_FILE_PAUSE_MS: u64 = 10_000;

/// Bytes per step of a paced download.
const PACE_CHUNK: usize = 16 << 10;

/// A download of the QUIC interop cases: its first `head` bytes at once,
/// then the rest after `pause` or, `paced`, spread evenly over `pause`
/// (so the client keeps acknowledging) : a test acts in mid-transfer
/// (moves the client, blackholes the path).
pub struct FileReply {
    pub body: Vec<u8>,
    pub pause: Duration,
    pub head: usize,
    pub paced: bool,
}

impl FileReply {
    /// The body as (delay before it, byte range) steps.
    pub fn steps(&self) -> Vec<(Duration, std::ops::Range<usize>)> {
        let len = self.body.len();
        let mut steps = vec![(Duration::ZERO, 0..self.head)];
        if !self.paced {
            steps.push((self.pause, self.head..len));
            return steps;
        }
        let starts: Vec<usize> = (self.head..len).step_by(PACE_CHUNK).collect();
        let each = self.pause / u32::try_from(starts.len().max(1)).unwrap_or(u32::MAX);
        for start in starts {
            steps.push((each, start..(start + PACE_CHUNK).min(len)));
        }
        steps
    }
}

/// The download bodies of the QUIC interop cases, served by the HTTP and
/// HTTP/3 test backends: `/files/<seed>_<size>[_<ms>_<head>[_paced]]` is
/// `pattern(size, seed)`, so a test knows the digest of every download.
pub fn file_reply(path: &str) -> Option<FileReply> {
    let mut parts = path.strip_prefix("/files/")?.split('_');
    let seed = parts.next()?.parse().ok()?;
    let size: usize = parts.next()?.parse().ok()?;
    let pause_ms: u64 = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let head: usize = parts.next().map_or(Some(size), |p| p.parse().ok())?;
    let paced = parts.next() == Some("paced");
    (size <= MAX_FILE_BYTES && pause_ms <= MAX_FILE_PAUSE_MS).then(|| FileReply {
        body: pattern(size, seed),
        pause: Duration::from_millis(pause_ms),
        head: head.min(size),
        paced,
    })
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Send `data` and read the echo concurrently; returns the echo's digest.
pub async fn echo_roundtrip<S>(stream: S, data: &[u8]) -> [u8; 32]
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let owned = data.to_vec();
    let writer = tokio::spawn(async move {
        for chunk in owned.chunks(256 * 1024) {
            w.write_all(chunk).await.expect("write");
        }
        w.shutdown().await.expect("shutdown");
    });
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    loop {
        let n = r.read(&mut buf).await.expect("read");
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n;
    }
    writer.await.expect("writer");
    assert_eq!(total, data.len(), "echoed length");
    hasher.finalize().into()
}

/// True when the peer closes (EOF or reset) within `within`, having sent
/// nothing; false if the connection stays open that long.
pub async fn closed_promptly(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => false,
        Err(_) => false,
    }
}

/// Connect from a chosen loopback source address (127.0.0.0/8).
pub async fn connect_from(source: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    socket.connect(to).await
}

/// A connection from `source` that the gateway turns away: reset during
/// connect (the RST can beat the handshake's completion on loopback) or
/// closed right after, with nothing sent.
pub async fn refused_from(source: [u8; 4], to: SocketAddr, within: Duration) -> bool {
    match connect_from(source, to).await {
        Err(_) => true,
        Ok(mut s) => closed_promptly(&mut s, within).await,
    }
}

/// A round trip of a short message proves the relay is live.
pub async fn ping(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut buf)).await,
        Ok(Ok(_))
    ) && &buf == b"ping"
}

/// A loopback listener whose accept queue is full and never drained: the
/// kernel drops further SYNs, so a dial to it hangs like an unreachable
/// host. Keep the returned sockets alive for as long as it is needed.
pub fn blackhole_backend() -> (SocketAddr, Vec<std::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    let listener = socket.listen(1).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            fillers.push(s);
        }
    }
    // The listener must outlive the test too: leak it into the fillers' owner.
    std::mem::forget(listener);
    (addr, fillers)
}
