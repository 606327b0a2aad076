//! An instrumented HTTP/1.1 backend for the attack tests: it counts open
//! connections (and the most at once), can serve a large body, hold a
//! request, or accept a body it never reads, and records when a response
//! write failed (the gateway let go of the connection). Plus reading the
//! gateway's defence counters from its admin listener.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::gateway::Gateway;
use super::raw_h1::find;

/// What the probe backend saw.
#[derive(Default)]
pub struct ProbeSeen {
    pub open: AtomicUsize,
    pub max_open: AtomicUsize,
    pub accepted: AtomicUsize,
    pub requests: AtomicUsize,
    /// When a response write failed because the peer let go.
    pub cut_at: Mutex<Vec<Instant>>,
    /// Send every body only half-way, then close: a backend failing
    /// after its head.
    pub cut_bodies: std::sync::atomic::AtomicBool,
    /// Close a keep-alive connection idle this long (0: never), without
    /// announcing it (no `Keep-Alive: timeout`), as Node and others do.
    pub idle_close_ms: std::sync::atomic::AtomicU64,
    /// Close a connection, unanswered, when its second request arrives:
    /// a backend's close crossing a request on a reused connection.
    pub close_reused: std::sync::atomic::AtomicBool,
    /// Requests closed unanswered that way.
    pub dropped: AtomicUsize,
}

pub struct ProbeBackend {
    pub addr: SocketAddr,
    pub seen: Arc<ProbeSeen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProbeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Paths the probe serves: `/big/<bytes>` a body of that size, `/hold/<ms>`
/// a small answer after a delay, `/status/<code>` that status with the body
/// `probe says <code>` and header `x-probe: yes`, `/sink` reads the head and
/// never the body (nor answers); anything else a small answer at once.
impl ProbeBackend {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(ProbeSeen::default());
        let state = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&state);
                state.accepted.fetch_add(1, Ordering::SeqCst);
                let now = state.open.fetch_add(1, Ordering::SeqCst) + 1;
                state.max_open.fetch_max(now, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = serve(stream, &state).await;
                    state.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn cuts(&self) -> Vec<Instant> {
        self.seen
            .cut_at
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

async fn serve(mut s: TcpStream, seen: &ProbeSeen) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut served = 0usize;
    loop {
        // One request head; bodies (other than /sink's) are not expected.
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 4096];
            let idle = seen.idle_close_ms.load(Ordering::SeqCst);
            let n = if idle > 0 && buf.is_empty() {
                match tokio::time::timeout(Duration::from_millis(idle), s.read(&mut tmp)).await {
                    Ok(n) => n?,
                    Err(_) => return Ok(()),
                }
            } else {
                s.read(&mut tmp).await?
            };
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        seen.requests.fetch_add(1, Ordering::SeqCst);
        served += 1;
        if served > 1 && seen.close_reused.load(Ordering::SeqCst) {
            seen.dropped.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let declared: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if path != "/sink" {
            // Read (and drop) a declared request body.
            while buf.len() < declared {
                let mut tmp = [0u8; 16384];
                let n = s.read(&mut tmp).await?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            buf.drain(..declared);
        }
        if path == "/sink" {
            // Never read the body, never answer: the gateway's problem.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return Ok(());
        }
        if let Some(code) = path.strip_prefix("/status/") {
            let body = format!("probe says {code}");
            let head = format!(
                "HTTP/1.1 {code} Probe\r\nx-probe: yes\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(head.as_bytes()).await?;
            continue;
        }
        if let Some(ms) = path.strip_prefix("/hold/") {
            let ms = ms.parse().unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let size: usize = path
            .strip_prefix("/big/")
            .and_then(|n| n.parse().ok())
            .unwrap_or(3);
        let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n");
        s.write_all(head.as_bytes()).await?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = size;
        if seen.cut_bodies.load(Ordering::SeqCst) {
            let half = vec![b'x'; size / 2];
            s.write_all(&half).await?;
            return Ok(());
        }
        while left > 0 {
            let n = left.min(chunk.len());
            if let Err(e) = s.write_all(&chunk[..n]).await {
                if let Ok(mut cuts) = seen.cut_at.lock() {
                    cuts.push(Instant::now());
                }
                return Err(e);
            }
            left -= n;
        }
    }
}

/// The admin listener's `/metrics` text (the config needs
/// `[observability] metrics_bind = "127.0.0.1:0"`).
pub async fn metrics_text(gw: &Gateway) -> String {
    let admin = gw
        .listeners
        .iter()
        .find(|b| b.name == "admin")
        .expect("admin listener: set [observability] metrics_bind")
        .address;
    let mut s = TcpStream::connect(admin).await.expect("connect admin");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// `defence_trips` once it reaches `at_least`, or its value after 3 s. For
/// a trip counted right after the gateway's write that shows it: the
/// client can read that write before the count lands.
pub async fn defence_trips_reach(gw: &Gateway, label: &str, at_least: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let n = defence_trips(gw, label).await;
        if n >= at_least || tokio::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `expressgateway_defence_trips_total{defence="<label>"}` now.
pub async fn defence_trips(gw: &Gateway, label: &str) -> u64 {
    let text = metrics_text(gw).await;
    let key = format!("expressgateway_defence_trips_total{{defence=\"{label}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
