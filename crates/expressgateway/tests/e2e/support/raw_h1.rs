//! Raw HTTP/1.1 over any byte stream, for tests about framing: no client
//! library may tidy the request or the response.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Bound on every single response read.
pub const READ_BOUND: Duration = Duration::from_secs(5);
// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over any byte stream.

/// A complete HTTP/1.1 response as it came off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Lowercase names, trimmed values, in wire order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response that did not arrive complete: the connection ended (EOF,
/// reset) or stalled before the message's framing said it was done.
/// Its fields are read through `Debug` in failure messages.
#[derive(Debug)]
#[allow(dead_code)]
pub struct Cut {
    pub status: Option<u16>,
    pub body_len: usize,
    pub why: String,
}

pub enum Fill {
    Timeout,
    Io(String),
}

/// One client connection speaking raw HTTP/1.1.
pub struct RawConn<S> {
    pub s: S,
    pub buf: Vec<u8>,
}

impl RawConn<TcpStream> {
    pub async fn tcp(addr: SocketAddr) -> Self {
        let s = tokio::time::timeout(READ_BOUND, TcpStream::connect(addr))
            .await
            .expect("connect within 5 s")
            .expect("connect");
        Self::new(s)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    pub fn new(s: S) -> Self {
        Self { s, buf: Vec::new() }
    }

    /// Write bytes; an error is returned, not a panic (the gateway may
    /// legitimately close while a refused body is still being sent).
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await?;
        self.s.flush().await
    }

    /// Read more bytes into the buffer; `Ok(0)` on EOF.
    pub async fn fill(&mut self, deadline: Instant) -> Result<usize, Fill> {
        let mut tmp = [0u8; 16 * 1024];
        match tokio::time::timeout_at(deadline, self.s.read(&mut tmp)).await {
            Err(_) => Err(Fill::Timeout),
            Ok(Err(e)) => Err(Fill::Io(e.to_string())),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
        }
    }

    /// Ensure at least `n` bytes are buffered.
    pub async fn need(&mut self, n: usize, deadline: Instant) -> Result<(), String> {
        while self.buf.len() < n {
            match self.fill(deadline).await {
                Ok(0) => return Err("connection closed".into()),
                Ok(_) => {}
                Err(Fill::Timeout) => return Err("timed out".into()),
                Err(Fill::Io(e)) => return Err(format!("read error: {e}")),
            }
        }
        Ok(())
    }

    /// One CRLF-terminated line, consumed, without its CRLF.
    pub async fn line(&mut self, deadline: Instant) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Ok(line);
            }
            let want = self.buf.len() + 1;
            self.need(want, deadline).await?;
        }
    }

    /// Read exactly one response (head and body by its framing).
    pub async fn response(&mut self) -> Result<RawResponse, Cut> {
        let deadline = Instant::now() + READ_BOUND;
        let cut = |status, body_len, why: String| Cut {
            status,
            body_len,
            why,
        };
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            let want = self.buf.len() + 1;
            if let Err(why) = self.need(want, deadline).await {
                return Err(cut(
                    None,
                    0,
                    format!("{why} before a complete response head"),
                ));
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| cut(None, 0, format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        let result = if chunked {
            self.chunked_body(&mut resp.body, deadline).await
        } else if let Some(len) = length {
            match self.need(len, deadline).await {
                Ok(()) => {
                    resp.body = self.buf.drain(..len).collect();
                    Ok(())
                }
                Err(why) => {
                    resp.body = std::mem::take(&mut self.buf);
                    Err(why)
                }
            }
        } else if status < 200 || status == 204 || status == 304 {
            Ok(())
        } else {
            // Close-delimited.
            let end = loop {
                match self.fill(deadline).await {
                    Ok(0) => break Ok(()),
                    Ok(_) => {}
                    Err(Fill::Timeout) => break Err("timed out".to_owned()),
                    Err(Fill::Io(e)) => break Err(format!("read error: {e}")),
                }
            };
            resp.body = std::mem::take(&mut self.buf);
            end
        };
        match result {
            Ok(()) => Ok(resp),
            Err(why) => Err(cut(
                Some(status),
                resp.body.len(),
                format!("{why} inside the body"),
            )),
        }
    }

    pub async fn chunked_body(
        &mut self,
        body: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<(), String> {
        loop {
            let line = self.line(deadline).await?;
            let line = String::from_utf8_lossy(&line).into_owned();
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                loop {
                    if self.line(deadline).await?.is_empty() {
                        return Ok(());
                    }
                }
            }
            self.need(size + 2, deadline).await?;
            body.extend(self.buf.drain(..size));
            if self.buf.drain(..2).as_slice() != b"\r\n" {
                return Err("chunk not followed by CRLF".into());
            }
        }
    }

    /// Whether the peer closes (EOF or error) within `within`. Bytes that
    /// arrive first (say a 408) are collected and returned.
    pub async fn closes_within(&mut self, within: Duration) -> (bool, Vec<u8>) {
        let deadline = Instant::now() + within;
        loop {
            match self.fill(deadline).await {
                Ok(0) | Err(Fill::Io(_)) => return (true, std::mem::take(&mut self.buf)),
                Ok(_) => {}
                Err(Fill::Timeout) => return (false, std::mem::take(&mut self.buf)),
            }
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One raw request on a fresh connection, one response.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> Result<RawResponse, Cut> {
    let mut c = RawConn::tcp(addr).await;
    // A write error is not a verdict: the answer (or the cut) is.
    let _ = c.send(raw).await;
    c.response().await
}

/// Status of `raw`'s answer, or a description of how it was cut.
pub fn verdict(r: &Result<RawResponse, Cut>) -> String {
    match r {
        Ok(resp) => format!("{} {:?}", resp.status, resp.text()),
        Err(cut) => format!("cut: {cut:?}"),
    }
}
