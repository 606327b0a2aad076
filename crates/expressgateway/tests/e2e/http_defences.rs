//! HTTP defences of `h1`/`h1s` listeners, exercised with raw bytes where
//! the case is about framing (no client library may tidy the request):
//! smuggling shapes, header-name policy, body caps, error statuses,
//! host/SNI agreement, slow headers and the keep-alive request cap.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::http::{client, get, ClientProto, HttpBackend};
use crate::support::tls::{cert, client as tls_client, connect as tls_connect};
use crate::support::*;

/// Bound on every single response read.
const READ_BOUND: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over any byte stream.

/// A complete HTTP/1.1 response as it came off the wire.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    /// Lowercase names, trimmed values, in wire order.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A response that did not arrive complete: the connection ended (EOF,
/// reset) or stalled before the message's framing said it was done.
/// Its fields are read through `Debug` in failure messages.
#[derive(Debug)]
#[allow(dead_code)]
struct Cut {
    status: Option<u16>,
    body_len: usize,
    why: String,
}

enum Fill {
    Timeout,
    Io(String),
}

/// One client connection speaking raw HTTP/1.1.
struct RawConn<S> {
    s: S,
    buf: Vec<u8>,
}

impl RawConn<TcpStream> {
    async fn tcp(addr: SocketAddr) -> Self {
        let s = tokio::time::timeout(READ_BOUND, TcpStream::connect(addr))
            .await
            .expect("connect within 5 s")
            .expect("connect");
        Self::new(s)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    fn new(s: S) -> Self {
        Self { s, buf: Vec::new() }
    }

    /// Write bytes; an error is returned, not a panic (the gateway may
    /// legitimately close while a refused body is still being sent).
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes).await?;
        self.s.flush().await
    }

    /// Read more bytes into the buffer; `Ok(0)` on EOF.
    async fn fill(&mut self, deadline: Instant) -> Result<usize, Fill> {
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
    async fn need(&mut self, n: usize, deadline: Instant) -> Result<(), String> {
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
    async fn line(&mut self, deadline: Instant) -> Result<Vec<u8>, String> {
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
    async fn response(&mut self) -> Result<RawResponse, Cut> {
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

    async fn chunked_body(&mut self, body: &mut Vec<u8>, deadline: Instant) -> Result<(), String> {
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
    async fn closes_within(&mut self, within: Duration) -> (bool, Vec<u8>) {
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

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One raw request on a fresh connection, one response.
async fn exchange(addr: SocketAddr, raw: &[u8]) -> Result<RawResponse, Cut> {
    let mut c = RawConn::tcp(addr).await;
    // A write error is not a verdict: the answer (or the cut) is.
    let _ = c.send(raw).await;
    c.response().await
}

/// Status of `raw`'s answer, or a description of how it was cut.
fn verdict(r: &Result<RawResponse, Cut>) -> String {
    match r {
        Ok(resp) => format!("{} {:?}", resp.status, resp.text()),
        Err(cut) => format!("cut: {cut:?}"),
    }
}

// ---------------------------------------------------------------------------
// Setup.

/// One `h1` listener whose default pool is `backend`. `global` goes before
/// the listener (`[runtime]`, `[security]`), `listener` inside it
/// (`[listeners.http]`).
fn config(global: &str, listener: &str, backend: SocketAddr) -> String {
    format!(
        "{global}\n[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n{listener}\n\
         [[listeners.backends]]\naddress = \"{backend}\"\n"
    )
}

async fn start(global: &str, listener: &str) -> (Gateway, HttpBackend) {
    let backend = HttpBackend::start("defended").await;
    let gw = Gateway::start(&config(global, listener, backend.addr));
    (gw, backend)
}

/// A clean request on its own connection reaches the backend: the control
/// that makes "the backend was not hit" meaningful.
async fn assert_control_reaches_backend(gw: &Gateway, backend: &HttpBackend) {
    let before = backend.hits();
    let r = exchange(gw.addr(0), b"GET /control HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let resp = r.unwrap_or_else(|c| panic!("control request cut: {c:?}"));
    assert_eq!(resp.status, 200, "control request: {}", resp.text());
    assert_eq!(resp.text(), "backend defended /control\n");
    assert_eq!(
        backend.hits(),
        before + 1,
        "control request not seen by the backend"
    );
}

/// Send each `(label, raw)` on its own connection; every one must get a
/// 400 and none may reach the backend. Collects all failures first, with
/// what the backend saw and whether the connection stayed open, as
/// evidence.
async fn assert_all_refused_400(gw: &Gateway, backend: &HttpBackend, cases: &[(&str, &[u8])]) {
    let mut failures = Vec::new();
    for (label, raw) in cases {
        let before = backend.hits();
        let mut conn = RawConn::tcp(gw.addr(0)).await;
        let _ = conn.send(raw).await;
        let r = conn.response().await;
        let status = r.as_ref().ok().map(|resp| resp.status);
        let hits = backend.hits() - before;
        if status != Some(400) || hits != 0 {
            let framing = if hits > 0 {
                let seen = backend
                    .seen
                    .last_headers
                    .lock()
                    .expect("lock")
                    .clone()
                    .unwrap_or_default();
                let show = |n: &str| {
                    seen.get_all(n)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .collect::<Vec<_>>()
                };
                format!(
                    "; backend saw content-length {:?}, transfer-encoding {:?}",
                    show("content-length"),
                    show("transfer-encoding")
                )
            } else {
                String::new()
            };
            let (closed, _) = conn.closes_within(Duration::from_millis(500)).await;
            failures.push(format!(
                "{label}: got {}, backend hits {hits}{framing}; connection closed after: {closed}",
                verdict(&r)
            ));
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Request smuggling shapes (HTTP/1.1).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cl_te_request_gets_400_and_never_reaches_backend() {
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(
        &gw,
        &backend,
        &[(
            "CL.TE",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        )],
    )
    .await;
    assert_control_reaches_backend(&gw, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn te_cl_request_gets_400_and_never_reaches_backend() {
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(
        &gw,
        &backend,
        &[(
            "TE.CL",
            b"POST /smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Content-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n",
        )],
    )
    .await;
    assert_control_reaches_backend(&gw, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_content_length_gets_400() {
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(
        &gw,
        &backend,
        &[
            (
                "duplicate CL, same value",
                b"POST /dup HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
                  Content-Length: 3\r\n\r\nabc",
            ),
            (
                "duplicate CL, different values",
                b"POST /dup HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\
                  Content-Length: 5\r\n\r\nabcde",
            ),
        ],
    )
    .await;
    assert_control_reaches_backend(&gw, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn obfuscated_transfer_encoding_gets_400() {
    // strict_te is on by default.
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(
        &gw,
        &backend,
        &[
            (
                "TE: xchunked",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE: chunked, identity",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            ),
            (
                "TE: identity, chunked",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "two TE headers (chunked, chunked)",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                  Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            ),
            (
                "two TE headers (chunked, identity)",
                b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                  Transfer-Encoding: identity\r\n\r\n0\r\n\r\n",
            ),
        ],
    )
    .await;
    // A lone, plain `chunked` is fine and reaches the backend intact.
    let before = backend.hits();
    let r = exchange(
        gw.addr(0),
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let resp = r.unwrap_or_else(|c| panic!("plain chunked cut: {c:?}"));
    assert_eq!((resp.status, resp.text().as_str()), (200, "hello"));
    assert_eq!(backend.hits(), before + 1);
}

// ---------------------------------------------------------------------------
// Raw HTTP/2 (h2c prior knowledge) frames, for what no h2 client library
// will send: hyper's client strips connection-specific headers before they
// reach the wire, and the `h2` crate refuses them, so the frames are built
// by hand (HPACK literals without indexing or Huffman).

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const H2_DATA: u8 = 0x0;
const H2_HEADERS: u8 = 0x1;
const H2_RST_STREAM: u8 = 0x3;
const H2_SETTINGS: u8 = 0x4;
const H2_PING: u8 = 0x6;
const H2_GOAWAY: u8 = 0x7;
const H2_END_STREAM: u8 = 0x1;
const H2_ACK: u8 = 0x1;
const H2_END_HEADERS: u8 = 0x4;

struct H2Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    assert!(
        len < 1 << 14,
        "frame too large for the default max frame size"
    );
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK "literal header field without indexing, new name", no Huffman.
fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127, "short strings only");
    out.push(0x00);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

/// A GET request header block with `extra` regular headers.
fn h2_get_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    hpack_literal(&mut b, ":method", "GET");
    hpack_literal(&mut b, ":scheme", "http");
    hpack_literal(&mut b, ":authority", "x");
    hpack_literal(&mut b, ":path", path);
    for (n, v) in extra {
        hpack_literal(&mut b, n, v);
    }
    b
}

/// `:status` of a response header block when the server encoded it as an
/// indexed static-table entry (RFC 7541 appendix A: 8..=14); `None` for
/// any other encoding (still a response, status not decoded).
fn h2_static_status(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    if first & 0x80 == 0 {
        return None;
    }
    match first & 0x7f {
        8 => Some(200),
        9 => Some(204),
        10 => Some(206),
        11 => Some(304),
        12 => Some(400),
        13 => Some(404),
        14 => Some(500),
        _ => None,
    }
}

struct H2Raw {
    s: TcpStream,
    buf: Vec<u8>,
    goaway_seen: bool,
}

/// How the server answered one stream.
#[derive(Debug, PartialEq)]
enum H2Answer {
    /// Response HEADERS; the status when statically indexed.
    Response(Option<u16>),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY (error code) or EOF before any answer on the stream.
    ConnectionEnded(String),
}

impl H2Raw {
    async fn connect(addr: SocketAddr) -> Self {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut hello = H2_PREFACE.to_vec();
        hello.extend(h2_frame(H2_SETTINGS, 0, 0, &[]));
        s.write_all(&hello).await.expect("write preface");
        Self {
            s,
            buf: Vec::new(),
            goaway_seen: false,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write h2 frame");
    }

    /// The next frame, answering SETTINGS and PING on the way; `Err` on
    /// EOF, read error or timeout.
    async fn frame(&mut self, deadline: Instant) -> Result<H2Frame, String> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f = H2Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    match f.kind {
                        H2_SETTINGS if f.flags & H2_ACK == 0 => {
                            self.send(&h2_frame(H2_SETTINGS, H2_ACK, 0, &[])).await;
                        }
                        H2_PING if f.flags & H2_ACK == 0 => {
                            let payload = f.payload.clone();
                            self.send(&h2_frame(H2_PING, H2_ACK, 0, &payload)).await;
                        }
                        H2_GOAWAY => self.goaway_seen = true,
                        _ => {}
                    }
                    return Ok(f);
                }
            }
            let mut tmp = [0u8; 16 * 1024];
            match tokio::time::timeout_at(deadline, self.s.read(&mut tmp)).await {
                Err(_) => return Err("timed out".into()),
                Ok(Err(e)) => return Err(format!("read error: {e}")),
                Ok(Ok(0)) => return Err("connection closed".into()),
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }

    /// Send a GET on `stream` and wait for the server's answer to it; a
    /// response is read to its END_STREAM.
    async fn get(&mut self, stream: u32, path: &str, extra: &[(&str, &str)]) -> H2Answer {
        let block = h2_get_block(path, extra);
        self.send(&h2_frame(
            H2_HEADERS,
            H2_END_HEADERS | H2_END_STREAM,
            stream,
            &block,
        ))
        .await;
        let deadline = Instant::now() + READ_BOUND;
        let mut status = None;
        loop {
            let f = match self.frame(deadline).await {
                Ok(f) => f,
                Err(why) => {
                    return match status {
                        Some(s) => {
                            H2Answer::ConnectionEnded(format!("{why} after response headers {s:?}"))
                        }
                        None => H2Answer::ConnectionEnded(why),
                    }
                }
            };
            match f.kind {
                H2_HEADERS if f.stream == stream => {
                    if status.is_none() {
                        status = Some(h2_static_status(&f.payload));
                    }
                    if f.flags & H2_END_STREAM != 0 {
                        return H2Answer::Response(status.flatten());
                    }
                }
                H2_DATA if f.stream == stream && f.flags & H2_END_STREAM != 0 => {
                    return H2Answer::Response(status.flatten());
                }
                H2_RST_STREAM if f.stream == stream => {
                    let code = f
                        .payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(u32::MAX);
                    return H2Answer::Reset(code);
                }
                H2_GOAWAY if status.is_none() => {
                    let last = f
                        .payload
                        .get(..4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                        .unwrap_or(0);
                    let code = f
                        .payload
                        .get(4..8)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(u32::MAX);
                    if last < stream || code != 0 {
                        return H2Answer::ConnectionEnded(format!(
                            "GOAWAY last_stream {last} code {code}"
                        ));
                    }
                }
                _ => {}
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_request_with_connection_specific_headers_is_refused() {
    let (gw, backend) = start("", "").await;
    // Control: the hand-made client works, and a clean request is served.
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    assert_eq!(
        h2.get(1, "/clean", &[]).await,
        H2Answer::Response(Some(200))
    );
    assert_eq!(backend.hits(), 1, "clean h2 request not forwarded");

    let cases: [(&str, &[(&str, &str)]); 3] = [
        ("connection: keep-alive", &[("connection", "keep-alive")]),
        (
            "transfer-encoding: chunked",
            &[("transfer-encoding", "chunked")],
        ),
        ("keep-alive: timeout=5", &[("keep-alive", "timeout=5")]),
    ];
    let mut failures = Vec::new();
    for (label, extra) in cases {
        // Each on its own connection: a refusal may end the connection.
        let mut h2 = H2Raw::connect(gw.addr(0)).await;
        let before = backend.hits();
        let answer = h2.get(1, "/bad", extra).await;
        // RFC 9113 §8.2.2: malformed, a stream error (RST_STREAM
        // PROTOCOL_ERROR = 1); a 400 response is an acceptable refusal too.
        let refused = matches!(answer, H2Answer::Reset(1) | H2Answer::Response(Some(400)));
        let hits = backend.hits() - before;
        if !refused || hits != 0 {
            failures.push(format!("{label}: {answer:?}, backend hits {hits}"));
        }
    }
    assert!(failures.is_empty(), "not refused:\n{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// Header names with underscores.

const UNDERSCORE_REQUEST: &[u8] = b"GET /u HTTP/1.1\r\nHost: x\r\nx_user: 1\r\nx-ok: 2\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_header_is_rejected_by_default() {
    let (gw, backend) = start("", "").await;
    assert_all_refused_400(&gw, &backend, &[("x_user: 1", UNDERSCORE_REQUEST)]).await;
    assert_control_reaches_backend(&gw, &backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_header_is_dropped_with_drop_policy() {
    let (gw, backend) = start("[runtime]\nheader_underscore_policy = \"drop\"", "").await;
    let resp = exchange(gw.addr(0), UNDERSCORE_REQUEST)
        .await
        .unwrap_or_else(|c| panic!("cut: {c:?}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(backend.hits(), 1);
    let seen = backend
        .seen
        .last_headers
        .lock()
        .expect("lock")
        .clone()
        .expect("headers recorded");
    assert!(seen.get("x_user").is_none(), "x_user forwarded: {seen:?}");
    assert_eq!(
        seen.get("x-ok").map(|v| v.as_bytes()),
        Some(&b"2"[..]),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn underscore_header_is_forwarded_with_allow_policy() {
    let (gw, backend) = start("[runtime]\nheader_underscore_policy = \"allow\"", "").await;
    let resp = exchange(gw.addr(0), UNDERSCORE_REQUEST)
        .await
        .unwrap_or_else(|c| panic!("cut: {c:?}"));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(backend.hits(), 1);
    let seen = backend
        .seen
        .last_headers
        .lock()
        .expect("lock")
        .clone()
        .expect("headers recorded");
    assert_eq!(
        seen.get("x_user").map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "{seen:?}"
    );
    assert_eq!(
        seen.get("x-ok").map(|v| v.as_bytes()),
        Some(&b"2"[..]),
        "{seen:?}"
    );
}

// ---------------------------------------------------------------------------
// Request body cap.

const BODY_CAP: &str = "[listeners.http]\nmax_request_body_bytes = 1000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_cap_gets_413_without_reaching_backend() {
    let (gw, backend) = start("", BODY_CAP).await;
    // Head only: the refusal must come from the declared length alone.
    let r = exchange(
        gw.addr(0),
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    assert_eq!(
        r.as_ref().ok().map(|resp| resp.status),
        Some(413),
        "{}",
        verdict(&r)
    );
    assert_eq!(backend.hits(), 0, "over-cap request reached the backend");

    // Exactly at the cap is fine and echoes intact.
    let body = pattern(1000, 7);
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n".to_vec();
    raw.extend_from_slice(&body);
    let resp = exchange(gw.addr(0), &raw)
        .await
        .unwrap_or_else(|c| panic!("at-cap upload cut: {c:?}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, body, "at-cap body changed");
    assert_eq!(backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_streaming_past_cap_is_not_delivered_whole() {
    let (gw, _backend) = start("", BODY_CAP).await;
    let chunk = pattern(1000, 3);

    // Control: a chunked upload under the cap echoes back whole.
    let mut small =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    small.extend_from_slice(format!("{:x}\r\n", 600).as_bytes());
    small.extend_from_slice(&chunk[..600]);
    small.extend_from_slice(b"\r\n0\r\n\r\n");
    let resp = exchange(gw.addr(0), &small)
        .await
        .unwrap_or_else(|c| panic!("under-cap chunked upload cut: {c:?}"));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, chunk[..600].to_vec(), "under-cap echo changed");

    // 8 chunks of 1000 bytes: no Content-Length, so only streaming can
    // notice the cap.
    let total = 8 * chunk.len();
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        raw.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        raw.extend_from_slice(&chunk);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let r = exchange(gw.addr(0), &raw).await;
    match &r {
        // A complete answer must be a refusal, never a clean echo (of the
        // whole body, or of a silently truncated one).
        Ok(resp) => assert!(
            resp.status == 413 || resp.status >= 500,
            "over-cap chunked upload answered completely: {} with {} of {total} bytes",
            resp.status,
            resp.body.len()
        ),
        // A cut answer must not have carried the whole body back.
        Err(cut) => assert!(
            cut.body_len < total,
            "whole over-cap body echoed before the cut: {cut:?}"
        ),
    }
}

// ---------------------------------------------------------------------------
// Backend failures.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_backend_gets_502() {
    let dead = closed_port();
    let gw = Gateway::start(&config("[runtime]\nconnect_timeout_ms = 1000", "", dead));
    let started = std::time::Instant::now();
    let r = exchange(gw.addr(0), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(
        r.as_ref().ok().map(|resp| resp.status),
        Some(502),
        "{}",
        verdict(&r)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused dial took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_backend_gets_504_at_head_timeout() {
    let (gw, backend) = start("", "[listeners.http]\nhead_timeout_ms = 300").await;
    let started = std::time::Instant::now();
    let r = exchange(gw.addr(0), b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let elapsed = started.elapsed();
    assert_eq!(
        r.as_ref().ok().map(|resp| resp.status),
        Some(504),
        "{}",
        verdict(&r)
    );
    assert_eq!(
        backend.hits(),
        1,
        "the request should have reached the backend"
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "504 after {elapsed:?}, expected ~300 ms"
    );
}

// ---------------------------------------------------------------------------
// Host must agree with the TLS server name on h1s.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1s_host_not_matching_sni_gets_421() {
    let backend = HttpBackend::start("defended").await;
    let dir = scratch();
    let c = cert(dir.path(), "srv");
    let text = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"h1s\"\n\
         [listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
         [[listeners.backends]]\naddress = \"{}\"\n",
        c.cert_path.display(),
        c.key_path.display(),
        backend.addr
    );
    let gw = Gateway::start_in(dir, &text);
    let connector = tls_client(&c.cert_pem, &[&rustls::version::TLS13]);

    let mut other = RawConn::new(
        tls_connect(&connector, gw.addr(0))
            .await
            .expect("handshake"),
    );
    other
        .send(b"GET /m HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .await
        .expect("write");
    let r = other.response().await;
    assert_eq!(
        r.as_ref().ok().map(|resp| resp.status),
        Some(421),
        "{}",
        verdict(&r)
    );
    assert_eq!(backend.hits(), 0, "misdirected request reached the backend");

    let mut same = RawConn::new(
        tls_connect(&connector, gw.addr(0))
            .await
            .expect("handshake"),
    );
    same.send(b"GET /m HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let resp = same
        .response()
        .await
        .unwrap_or_else(|c| panic!("cut: {c:?}"));
    assert_eq!(
        (resp.status, resp.text().as_str()),
        (200, "backend defended /m\n")
    );
    assert_eq!(backend.hits(), 1);
}

// ---------------------------------------------------------------------------
// Slow header sender.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_sender_is_cut_at_header_timeout() {
    let (gw, backend) = start("", "[listeners.http]\nheader_timeout_ms = 300").await;
    let mut c = RawConn::tcp(gw.addr(0)).await;
    let started = std::time::Instant::now();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let (closed, got) = c.closes_within(Duration::from_secs(3)).await;
    let elapsed = started.elapsed();
    assert!(
        closed,
        "connection with unfinished headers kept open for 3 s"
    );
    assert!(
        elapsed >= Duration::from_millis(250),
        "cut after {elapsed:?}, before the 300 ms header timeout"
    );
    // Whatever was said on the way out (nothing, or a 408) is not a 2xx.
    let said = String::from_utf8_lossy(&got);
    assert!(
        got.is_empty() || said.starts_with("HTTP/1.1 408") || said.starts_with("HTTP/1.1 4"),
        "unexpected answer to a slow header sender: {said:?}"
    );
    assert_eq!(backend.hits(), 0);
}

// ---------------------------------------------------------------------------
// Keep-alive request cap.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_cap_closes_h1_connection_after_third_request() {
    let (gw, backend) = start("[runtime]\nmax_keepalive_requests = 3", "").await;
    let mut conn = RawConn::tcp(gw.addr(0)).await;
    let mut ok = 0;
    for i in 1..=3 {
        let req = format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        conn.send(req.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("write request {i} on the first connection: {e}"));
        let resp = conn
            .response()
            .await
            .unwrap_or_else(|c| panic!("request {i} on the first connection cut: {c:?}"));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert_eq!(resp.text(), format!("backend defended /k{i}\n"));
        let close = resp
            .header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
        assert_eq!(
            close,
            i == 3,
            "request {i}: connection header {:?}",
            resp.header("connection")
        );
        ok += 1;
    }
    let (closed, extra) = conn.closes_within(Duration::from_secs(2)).await;
    assert!(closed, "connection still open after the capped response");
    assert!(extra.is_empty(), "bytes after the last response: {extra:?}");

    let mut conn = RawConn::tcp(gw.addr(0)).await;
    for i in 4..=5 {
        let req = format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n");
        conn.send(req.as_bytes()).await.expect("write");
        let resp = conn
            .response()
            .await
            .unwrap_or_else(|c| panic!("request {i} on the second connection cut: {c:?}"));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert!(resp
            .header("connection")
            .is_none_or(|v| !v.contains("close")));
        ok += 1;
    }
    assert_eq!(ok, 5);
    assert_eq!(backend.hits(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_cap_sends_h2_goaway_after_third_stream() {
    let (gw, backend) = start("[runtime]\nmax_keepalive_requests = 3", "").await;
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    for (i, stream) in [1u32, 3, 5].into_iter().enumerate() {
        assert!(
            !h2.goaway_seen,
            "GOAWAY before request {} (cap is 3)",
            i + 1
        );
        let answer = h2.get(stream, "/g", &[]).await;
        assert_eq!(answer, H2Answer::Response(Some(200)), "request {}", i + 1);
    }
    // The GOAWAY may have come with the third response; else it follows.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !h2.goaway_seen {
        if let Err(why) = h2.frame(deadline).await {
            panic!("no GOAWAY after the capped stream: {why}");
        }
    }
    // Then the connection ends (we answer its PING, so a graceful close
    // can complete).
    let deadline = Instant::now() + Duration::from_secs(3);
    let ended = loop {
        match h2.frame(deadline).await {
            Ok(_) => {}
            Err(why) => break why,
        }
    };
    assert_ne!(ended, "timed out", "connection not closed after GOAWAY");
    assert_eq!(backend.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_cap_h2c_client_reconnects_after_goaway() {
    let (gw, backend) = start("[runtime]\nmax_keepalive_requests = 3", "").await;
    let c = client(ClientProto::H2c);
    let mut failures = Vec::new();
    for i in 1..=10 {
        let url = format!("http://{}/r{i}", gw.addr(0));
        match tokio::time::timeout(READ_BOUND, c.request(get(&url))).await {
            Err(_) => failures.push(format!("request {i}: no response in 5 s")),
            Ok(Err(e)) => failures.push(format!("request {i}: {e:?}")),
            Ok(Ok(resp)) => {
                let status = resp.status();
                let version = resp.version();
                let body = tokio::time::timeout(
                    READ_BOUND,
                    http_body_util::BodyExt::collect(resp.into_body()),
                )
                .await;
                match body {
                    Ok(Ok(b)) if status == 200 && version == ::http::Version::HTTP_2 => {
                        let text = String::from_utf8_lossy(&b.to_bytes()).into_owned();
                        if text != format!("backend defended /r{i}\n") {
                            failures.push(format!("request {i}: body {text:?}"));
                        }
                    }
                    other => failures.push(format!(
                        "request {i}: {status} {version:?} body {:?}",
                        other.map(|r| r.map(|b| b.to_bytes()))
                    )),
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "h2c requests failed under the cap:\n{}",
        failures.join("\n")
    );
    assert_eq!(backend.hits(), 10);
}
