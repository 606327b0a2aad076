//! Raw HTTP/2 (h2c prior knowledge) frames, for what no h2 client library
//! will send: hyper's client strips connection-specific headers before they
//! reach the wire, and the `h2` crate refuses them, so the frames are built
//! by hand (HPACK literals without indexing or Huffman).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::raw_h1::READ_BOUND;

// ---------------------------------------------------------------------------
// Raw HTTP/2 (h2c prior knowledge) frames, for what no h2 client library
// will send: hyper's client strips connection-specific headers before they
// reach the wire, and the `h2` crate refuses them, so the frames are built
// by hand (HPACK literals without indexing or Huffman).

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const H2_DATA: u8 = 0x0;
pub const H2_HEADERS: u8 = 0x1;
pub const H2_RST_STREAM: u8 = 0x3;
pub const H2_SETTINGS: u8 = 0x4;
pub const H2_PING: u8 = 0x6;
pub const H2_GOAWAY: u8 = 0x7;
pub const H2_END_STREAM: u8 = 0x1;
pub const H2_ACK: u8 = 0x1;
pub const H2_END_HEADERS: u8 = 0x4;

pub struct H2Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

pub fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
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
pub fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127, "short strings only");
    out.push(0x00);
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
}

/// A GET request header block with `extra` regular headers.
pub fn h2_get_block(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
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
pub fn h2_static_status(block: &[u8]) -> Option<u16> {
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

pub struct H2Raw {
    pub s: TcpStream,
    pub buf: Vec<u8>,
    pub goaway_seen: bool,
}

/// How the server answered one stream.
#[derive(Debug, PartialEq)]
pub enum H2Answer {
    /// Response HEADERS; the status when statically indexed.
    Response(Option<u16>),
    /// RST_STREAM with this error code.
    Reset(u32),
    /// GOAWAY (error code) or EOF before any answer on the stream.
    ConnectionEnded(String),
}

impl H2Raw {
    pub async fn connect(addr: SocketAddr) -> Self {
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

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write h2 frame");
    }

    /// The next frame, answering SETTINGS and PING on the way; `Err` on
    /// EOF, read error or timeout.
    pub async fn frame(&mut self, deadline: Instant) -> Result<H2Frame, String> {
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
                    // Best effort: the server may already have closed, and
                    // the caller reads that from the next frame.
                    match f.kind {
                        H2_SETTINGS if f.flags & H2_ACK == 0 => {
                            let ack = h2_frame(H2_SETTINGS, H2_ACK, 0, &[]);
                            let _ = self.s.write_all(&ack).await;
                        }
                        H2_PING if f.flags & H2_ACK == 0 => {
                            let ack = h2_frame(H2_PING, H2_ACK, 0, &f.payload);
                            let _ = self.s.write_all(&ack).await;
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
    pub async fn get(&mut self, stream: u32, path: &str, extra: &[(&str, &str)]) -> H2Answer {
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
