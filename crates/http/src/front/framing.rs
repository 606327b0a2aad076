//! Sans-io HTTP/1 request framing tracker.
//!
//! hyper tidies ambiguous framing away before our code sees a request: with
//! both `Content-Length` and `Transfer-Encoding` it drops the length, and a
//! repeated equal `Content-Length` collapses into one. The smuggling policy
//! (`core::validate::check_framing`) must refuse exactly those shapes, so this
//! tracker reads the client's bytes before hyper does, judges each request
//! head from the raw header lines, and follows every body the way hyper's
//! decoder does so that it finds the next head at the same byte hyper will.
//!
//! Invariant the design rests on: wherever the tracker and hyper could part
//! ways (a head it cannot parse, a body it cannot follow, a head over
//! [`MAX_HEAD_BYTES`]) it emits [`Verdict::Ambiguous`] and stops. Every such
//! case is one hyper refuses too (closing the connection), except a head
//! hyper would still take; refusing that one is the conservative side.

/// Longest request head the tracker follows, leading empty lines aside.
/// Equal to the HTTP/2 `max_header_list_size` default; the front caps
/// hyper's HTTP/1 read buffer at the same size, so hyper answers larger
/// heads with 431 on its own and the tracker's refusal is only a backstop.
pub(super) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Header slots for one parse. Above hyper's limit (100 by default), so a
/// head hyper accepts never fails here for its header count.
const MAX_HEADERS: usize = 128;

/// The HTTP/2 connection preface (prior knowledge on cleartext).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The judgement on one request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// One unambiguous framing: at most one `Content-Length` made of
    /// digits, or `Transfer-Encoding` alone.
    Ok,
    /// Two parsers could read the length differently (CL with TE, repeated
    /// CL, non-digit CL), or the tracker could not follow the stream here.
    Ambiguous,
}

/// Verdicts judged but not yet handed to a request, in order. hyper serves
/// HTTP/1 requests strictly in order, so the service takes one per request.
///
/// Tracking stops at the first `Ambiguous`, so the pending sequence is
/// always some `Ok`s followed by at most one `Ambiguous`: a counter and a
/// flag hold any such queue in constant memory, however deep a client
/// pipelines. Nothing can overflow, so no request is refused for depth.
#[derive(Debug, Default)]
pub(super) struct Verdicts {
    ok_ahead: u64,
    then_ambiguous: bool,
    tunnel: bool,
}

impl Verdicts {
    pub(super) fn push(&mut self, v: Verdict) {
        match v {
            _ if self.then_ambiguous => {}
            Verdict::Ok => self.ok_ahead = self.ok_ahead.saturating_add(1),
            Verdict::Ambiguous => self.then_ambiguous = true,
        }
    }

    /// The verdict for the next request hyper serves. After an ambiguous
    /// one every later request is ambiguous too (the stream is no longer
    /// followed); `None` when the tracker never judged it (HTTP/2, tunnel).
    pub(super) fn next_request(&mut self) -> Option<Verdict> {
        if let Some(n) = self.ok_ahead.checked_sub(1) {
            self.ok_ahead = n;
            Some(Verdict::Ok)
        } else if self.then_ambiguous {
            Some(Verdict::Ambiguous)
        } else {
            None
        }
    }

    /// The connection became a tunnel (101 or 2xx to CONNECT): what
    /// follows is not HTTP/1, stop reading it.
    pub(super) fn set_tunnel(&mut self) {
        self.tunnel = true;
    }

    pub(super) fn is_tunnel(&self) -> bool {
        self.tunnel
    }
}

/// Where the byte stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Connection start on cleartext: `n` bytes matched the h2 preface.
    Preface(usize),
    /// Collecting a request head into `Tracker::head`.
    Head,
    /// Skipping a `Content-Length` body: bytes left.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Not following the stream any more.
    Stopped,
}

/// What httparse makes of the bytes at the start of a head.
enum Parsed {
    /// A whole head of this many bytes, and its judgement.
    Complete(usize, Option<Framing>),
    Partial,
    Invalid,
}

fn parse(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => Parsed::Complete(n, judge(&req)),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(_) => Parsed::Invalid,
    }
}

/// A complete head at the start of `bytes`, no longer than
/// [`MAX_HEAD_BYTES`]: its length and judgement. `None` when it is partial,
/// too long or does not parse: the caller collects it and decides.
fn parse_head(bytes: &[u8]) -> Option<(usize, Option<Framing>)> {
    match parse(bytes) {
        Parsed::Complete(n, framing) if n <= MAX_HEAD_BYTES => Some((n, framing)),
        _ => None,
    }
}

/// hyper's chunked decoder states (proto/h1/decode.rs), same grammar:
/// `hex[ \t]*[;ext]\r\n`, data, `\r\n`; after the `0` chunk, trailer
/// lines (any bytes up to `\r\n`) and the final `\r\n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Start,
    Size(u64),
    SizeLws(u64),
    Extension(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    EndCr,
    EndLf,
    Trailer,
    TrailerLf,
}

/// Empty lines before a head, skipped as httparse does (`\r\n` or `\n`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leading {
    Lines,
    Cr,
    Done,
}

/// What a request head says about its body.
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Follows one client connection's HTTP/1 request stream.
#[derive(Debug)]
pub(super) struct Tracker {
    state: State,
    leading: Leading,
    head: Vec<u8>,
}

impl Tracker {
    /// `detect_h2_preface`: the listener also takes HTTP/2 with prior
    /// knowledge (cleartext), so a connection opening with the preface is
    /// not HTTP/1 and is not tracked.
    pub(super) fn new(detect_h2_preface: bool) -> Self {
        Self {
            state: if detect_h2_preface {
                State::Preface(0)
            } else {
                State::Head
            },
            leading: Leading::Lines,
            head: Vec::new(),
        }
    }

    pub(super) fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    pub(super) fn stop(&mut self) {
        self.state = State::Stopped;
        self.head = Vec::new();
    }

    /// Feed bytes as they arrive from the client; `emit` gets one verdict
    /// per request head, in order.
    pub(super) fn feed(&mut self, data: &[u8], emit: &mut impl FnMut(Verdict)) {
        let mut data = data;
        while !data.is_empty() {
            let used = match self.state {
                State::Stopped => return,
                State::Preface(matched) => self.preface(matched, data, emit),
                State::Head => self.head_bytes(data, emit),
                State::Length(left) => {
                    let n = left.min(u64::try_from(data.len()).unwrap_or(u64::MAX));
                    let rest = left.saturating_sub(n);
                    self.state = if rest == 0 {
                        State::Head
                    } else {
                        State::Length(rest)
                    };
                    usize::try_from(n).unwrap_or(data.len())
                }
                State::Chunked(at) => self.chunk_bytes(at, data, emit),
            };
            data = data.get(used..).unwrap_or_default();
        }
    }

    /// Match the h2 preface; on the first differing byte the stream is
    /// HTTP/1 (as hyper_util's version sniffing decides) and the bytes
    /// matched so far are the start of the first head.
    fn preface(&mut self, matched: usize, data: &[u8], emit: &mut impl FnMut(Verdict)) -> usize {
        let rest = H2_PREFACE.get(matched..).unwrap_or_default();
        let n = data.iter().zip(rest).take_while(|(a, b)| a == b).count();
        let matched = matched.saturating_add(n);
        if matched >= H2_PREFACE.len() {
            self.stop();
            return n;
        }
        if n == data.len() {
            self.state = State::Preface(matched);
            return n;
        }
        self.state = State::Head;
        self.feed(H2_PREFACE.get(..matched).unwrap_or_default(), emit);
        n
    }

    /// Collect head bytes up to the empty line, then judge the head.
    fn head_bytes(&mut self, data: &[u8], emit: &mut impl FnMut(Verdict)) -> usize {
        let mut used = 0;
        while self.leading != Leading::Done {
            let Some(&b) = data.get(used) else {
                return used;
            };
            match (self.leading, b) {
                (Leading::Lines, b'\n') => used += 1,
                (Leading::Lines, b'\r') => {
                    self.leading = Leading::Cr;
                    used += 1;
                }
                (Leading::Cr, b'\n') => {
                    self.leading = Leading::Lines;
                    used += 1;
                }
                (Leading::Cr, _) => {
                    // A lone CR: httparse refuses it; let the parse say so.
                    self.head.push(b'\r');
                    self.leading = Leading::Done;
                }
                _ => self.leading = Leading::Done,
            }
        }
        let room = (MAX_HEAD_BYTES + 1).saturating_sub(self.head.len());
        let window = data.get(used..).unwrap_or_default();
        let window = window.get(..room).unwrap_or(window);
        // The usual case: the whole head came in this read. Judged where it
        // lies, without copying it line by line. httparse ends a complete
        // head at its first empty line, which is where the collecting loop
        // below would stop too; anything else (a partial or unparsable
        // head) goes the collecting way.
        if self.head.is_empty() {
            if let Some((n, outcome)) = parse_head(window) {
                self.conclude(outcome, emit);
                return used.saturating_add(n);
            }
        }
        let mut rest = window;
        while !rest.is_empty() {
            let (line, after) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => rest.split_at(i.saturating_add(1)),
                None => (rest, &[][..]),
            };
            self.head.extend_from_slice(line);
            used = used.saturating_add(line.len());
            rest = after;
            let complete = self.head.ends_with(b"\n\n") || self.head.ends_with(b"\n\r\n");
            if complete && self.head.len() <= MAX_HEAD_BYTES && self.judge_head(emit) {
                return used;
            }
        }
        if self.head.len() > MAX_HEAD_BYTES {
            emit(Verdict::Ambiguous);
            self.stop();
        }
        used
    }

    /// Parse the buffered head. `true` when it was complete (judged, or
    /// refused and stopped); `false` to keep collecting.
    fn judge_head(&mut self, emit: &mut impl FnMut(Verdict)) -> bool {
        let outcome = match parse(&self.head) {
            Parsed::Complete(n, framing) if n == self.head.len() => framing,
            Parsed::Partial => return false,
            _ => None,
        };
        self.head.clear();
        if self.head.capacity() > 8 * 1024 {
            self.head = Vec::new();
        }
        self.conclude(outcome, emit);
        true
    }

    /// Act on a complete head's judgement: follow its body, or stop.
    fn conclude(&mut self, outcome: Option<Framing>, emit: &mut impl FnMut(Verdict)) {
        self.leading = Leading::Lines;
        match outcome {
            Some(framing) => {
                emit(Verdict::Ok);
                self.state = match framing {
                    Framing::None | Framing::Length(0) => State::Head,
                    Framing::Length(n) => State::Length(n),
                    Framing::Chunked => State::Chunked(Chunk::Start),
                };
            }
            None => {
                emit(Verdict::Ambiguous);
                self.stop();
            }
        }
    }

    /// Step hyper's chunked grammar over `data`; chunk data is skipped
    /// whole. A byte hyper would refuse ends tracking.
    fn chunk_bytes(&mut self, at: Chunk, data: &[u8], emit: &mut impl FnMut(Verdict)) -> usize {
        let mut at = at;
        let mut used = 0;
        while let Some(&b) = data.get(used) {
            if let Chunk::Data(left) = at {
                let avail = data.len().saturating_sub(used);
                let n = left.min(u64::try_from(avail).unwrap_or(u64::MAX));
                used = used.saturating_add(usize::try_from(n).unwrap_or(avail));
                let rest = left.saturating_sub(n);
                at = if rest == 0 {
                    Chunk::DataCr
                } else {
                    Chunk::Data(rest)
                };
                continue;
            }
            used += 1;
            let next = match (at, b) {
                (Chunk::Start, _) => hex(b).map(|d| Chunk::Size(u64::from(d))),
                (Chunk::Size(size), _) => match (hex(b), b) {
                    (Some(d), _) => size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(d)))
                        .map(Chunk::Size),
                    (None, b'\t' | b' ') => Some(Chunk::SizeLws(size)),
                    (None, b';') => Some(Chunk::Extension(size)),
                    (None, b'\r') => Some(Chunk::SizeLf(size)),
                    _ => None,
                },
                (Chunk::SizeLws(size), b'\t' | b' ') => Some(Chunk::SizeLws(size)),
                (Chunk::SizeLws(size) | Chunk::Extension(size), b';') => {
                    Some(Chunk::Extension(size))
                }
                (Chunk::SizeLws(size) | Chunk::Extension(size), b'\r') => Some(Chunk::SizeLf(size)),
                (Chunk::Extension(_), b'\n') | (Chunk::SizeLws(_), _) => None,
                (Chunk::Extension(size), _) => Some(Chunk::Extension(size)),
                (Chunk::SizeLf(0), b'\n') => Some(Chunk::EndCr),
                (Chunk::SizeLf(size), b'\n') => Some(Chunk::Data(size)),
                (Chunk::DataCr, b'\r') => Some(Chunk::DataLf),
                (Chunk::DataLf, b'\n') => Some(Chunk::Start),
                (Chunk::EndCr, b'\r') => Some(Chunk::EndLf),
                (Chunk::Trailer, b'\r') => Some(Chunk::TrailerLf),
                (Chunk::EndCr | Chunk::Trailer, _) => Some(Chunk::Trailer),
                (Chunk::TrailerLf, b'\n') => Some(Chunk::EndCr),
                (Chunk::EndLf, b'\n') => {
                    self.state = State::Head;
                    return used;
                }
                _ => None,
            };
            match next {
                Some(n) => at = n,
                None => {
                    emit(Verdict::Ambiguous);
                    self.stop();
                    return used;
                }
            }
        }
        self.state = State::Chunked(at);
        used
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The body framing of a parsed head; `None` when it is ambiguous (or one
/// hyper refuses: Transfer-Encoding without final `chunked`, or on
/// HTTP/1.0).
fn judge(req: &httparse::Request<'_, '_>) -> Option<Framing> {
    let mut lengths = 0usize;
    let mut length = None;
    let mut bad_length = false;
    let mut te = false;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            lengths = lengths.saturating_add(1);
            match digits(h.value) {
                Some(n) => length = Some(n),
                None => bad_length = true,
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // hyper decides on the last Transfer-Encoding line.
            te = true;
            chunked = final_chunked(h.value);
        }
    }
    if lengths > 1 || bad_length || (te && lengths > 0) {
        return None;
    }
    if te {
        return (chunked && req.version == Some(1)).then_some(Framing::Chunked);
    }
    Some(length.map_or(Framing::None, Framing::Length))
}

/// Plain ASCII digits fitting a u64 (no sign, no space, no list).
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// hyper's test: the value is visible ASCII and its last comma-separated
/// coding is `chunked`.
fn final_chunked(value: &[u8]) -> bool {
    if !value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return false;
    }
    std::str::from_utf8(value).is_ok_and(|s| {
        s.rsplit(',')
            .next()
            .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
    })
}

#[cfg(test)]
mod tests;
