use super::*;

use Verdict::{Ambiguous as A, Ok as K};

fn run(detect: bool, chunks: &[&[u8]]) -> (Vec<Verdict>, Tracker) {
    let mut t = Tracker::new(detect);
    let mut out = Vec::new();
    for c in chunks {
        t.feed(c, &mut |v| out.push(v));
    }
    (out, t)
}

fn verdicts(bytes: &[u8]) -> Vec<Verdict> {
    run(true, &[bytes]).0
}

/// Whole, split at every byte boundary, and byte by byte: same verdicts.
fn check(bytes: &[u8], want: &[Verdict]) {
    assert_eq!(
        verdicts(bytes),
        want,
        "whole: {:?}",
        String::from_utf8_lossy(bytes)
    );
    for k in 0..=bytes.len() {
        let (a, b) = bytes.split_at(k);
        assert_eq!(run(true, &[a, b]).0, want, "split at {k}");
    }
    let bytes_one: Vec<&[u8]> = bytes.chunks(1).collect();
    assert_eq!(run(true, &bytes_one).0, want, "byte by byte");
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn one_get() {
    check(GET, &[K]);
}

#[test]
fn pipelined_requests_with_length_bodies() {
    // A body that looks like a request must not be judged as one.
    let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\n\
                   GET /fake HTTP/1.1\r\nHost: y\r\n\r\n\
                   GET /b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
                   GET /c HTTP/1.0\n\n";
    check(stream, &[K, K, K]);
}

#[test]
fn chunked_bodies_with_extensions_and_trailers() {
    let stream = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   5;name=value;x\r\nhello\r\n\
                   A \t ;ext\r\n0123456789\r\n\
                   1f\r\nGET /fake HTTP/1.1\r\nHost: y\r\n\r\n\r\n\
                   0\r\nX-Trailer: 1\r\nX-Other: two\r\n\r\n\
                   POST /b HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                   0\r\n\r\n\
                   GET /c HTTP/1.1\r\n\r\n";
    check(stream, &[K, K, K]);
}

#[test]
fn ambiguous_shapes_are_judged_and_stop_tracking() {
    let cases: [&[u8]; 9] = [
        b"POST / HTTP/1.1\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 5\r\n\r\nabcde",
        b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\nCONTENT-LENGTH: 0\r\n\r\n",
    ];
    for case in cases {
        let mut stream = GET.to_vec();
        stream.extend_from_slice(case);
        // Requests after an ambiguous one are not judged (nor followed).
        stream.extend_from_slice(GET);
        check(&stream, &[K, A]);
        let (_, t) = run(true, &[&stream]);
        assert!(t.is_stopped());
    }
}

#[test]
fn transfer_encodings_hyper_refuses_are_ambiguous() {
    check(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &[A]);
    check(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        &[A],
    );
    check(
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        &[A],
    );
    // The last line decides, as in hyper.
    check(
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        &[K, K],
    );
}

#[test]
fn h2_preface_stops_tracking() {
    let mut stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    stream.extend_from_slice(GET);
    check(&stream, &[]);
    assert!(run(true, &[&stream]).1.is_stopped());
    // Without preface detection (TLS chose HTTP/1.1) it is a bad head.
    assert_eq!(run(false, &[&stream]).0, vec![A]);
    // Diverging from the preface late: HTTP/1 from the first byte.
    check(b"PRI * HTTP/2.0\r\n\r\nXX", &[A]);
    check(b"PRI / HTTP/1.1\r\nHost: x\r\n\r\n", &[K]);
    check(b"P", &[]);
}

#[test]
fn garbage_is_ambiguous() {
    check(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        &[A],
    );
    check(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", &[A]);
    check(b"GET / HTTP/1.1\r\n\rX: y\r\n\r\n", &[A]);
    check(b"\rGET / HTTP/1.1\r\n\r\n", &[A]);
    // Leading empty lines are skipped, as httparse does.
    check(b"\r\n\n\r\nGET / HTTP/1.1\r\n\r\n", &[K]);
}

#[test]
fn bad_chunked_bodies_stop_tracking() {
    for body in [
        &b"x\r\n"[..],
        b"5\r\nhelloXX",
        b"5\nhello\r\n",
        b"5;a\nb\r\n",
        b"5 5\r\n",
        b"0\r\nTrailer: x\rY",
        b"0\r\n\rX",
        b"10000000000000000\r\n",
    ] {
        let mut stream = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        stream.extend_from_slice(body);
        stream.extend_from_slice(GET);
        check(&stream, &[K, A]);
    }
}

#[test]
fn oversized_head_is_ambiguous_and_bounded() {
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.resize(MAX_HEAD_BYTES + 10, b'a');
    let (out, t) = run(true, &[&head]);
    assert_eq!(out, vec![A]);
    assert!(t.is_stopped() && t.head.capacity() == 0);
    // Exactly at the bound is still followed.
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.resize(MAX_HEAD_BYTES - 4, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    head.extend_from_slice(GET);
    assert_eq!(verdicts(&head), vec![K, K]);
    // One byte over it, complete in one read, is refused as when collected.
    let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
    head.resize(MAX_HEAD_BYTES - 3, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    assert_eq!(run(true, &[&head]).0, vec![A]);
    assert_eq!(run(true, &[&head[..10], &head[10..]]).0, vec![A]);
    // Many leading empty lines do not count towards it.
    let mut lines = b"\r\n".repeat(MAX_HEAD_BYTES);
    lines.extend_from_slice(GET);
    assert_eq!(verdicts(&lines), vec![K]);
}

#[test]
fn large_bodies_are_skipped_without_buffering() {
    let mut t = Tracker::new(true);
    let mut out = Vec::new();
    t.feed(
        b"PUT / HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\n",
        &mut |v| out.push(v),
    );
    let block = [b'G'; 65536];
    for _ in 0..100 {
        t.feed(&block, &mut |v| out.push(v));
    }
    assert_eq!(out, vec![K]);
    // Only the (small) head buffer is kept, for reuse.
    assert!(t.head.is_empty() && t.head.capacity() < 1024);
}

#[test]
fn random_bytes_never_panic() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet =
        b"0123456789abcdefGET /HTTP1.\r\n\r\n:;, \tContent-LengthTransfer-Encodingchunked";
    for _ in 0..2000 {
        let len = usize::try_from(next() % 300).unwrap_or(0);
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if r % 5 == 0 {
                    (r >> 8) as u8
                } else {
                    let i = usize::try_from((r >> 8) % alphabet.len() as u64).unwrap_or(0);
                    alphabet.get(i).copied().unwrap_or(b'x')
                }
            })
            .collect();
        let mut t = Tracker::new(next() % 2 == 0);
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let k = usize::try_from(next() % 17).unwrap_or(1).min(rest.len());
            let (a, b) = rest.split_at(k.max(1));
            t.feed(a, &mut |_| {});
            rest = b;
        }
    }
}

#[test]
fn verdict_queue_is_ordered_and_sticky() {
    let mut q = Verdicts::default();
    assert_eq!(q.next_request(), None);
    q.push(K);
    q.push(K);
    q.push(A);
    q.push(K);
    assert_eq!(q.next_request(), Some(K));
    assert_eq!(q.next_request(), Some(K));
    assert_eq!(q.next_request(), Some(A));
    assert_eq!(q.next_request(), Some(A));
    assert!(!q.is_tunnel());
    q.set_tunnel();
    assert!(q.is_tunnel());
}
