//! HTTP/2 control-frame attacks on an `h1` listener (h2c): SETTINGS, PING
//! and RST_STREAM floods, CONTINUATION floods, a header block left open,
//! an HPACK bomb, and a slow reader, driven with raw frames and with the
//! Python `h2` library (an independent HTTP/2 stack; `.ci/run` installs
//! it with hypercorn). Each ends the attacker's connection (or stream) and
//! moves its counter while another client keeps getting 200.

use std::time::Duration;

use tokio::time::Instant;

use crate::h3_thirdparty::{py_dir, python, require_python_modules, run_bounded};
use crate::support::probe::{defence_trips, defence_trips_reach, ProbeBackend};
use crate::support::raw_h2::*;
use crate::support::*;

const H2_CONTINUATION: u8 = 0x9;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn config(http: &str, backend: std::net::SocketAddr) -> String {
    format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\nname = \"edge\"\naddress = \"127.0.0.1:0\"\nprotocol = \"h1\"\n\
         [listeners.http]\n{http}\n[[listeners.backends]]\naddress = \"{backend}\"\n"
    )
}

async fn start(http: &str) -> (Gateway, ProbeBackend) {
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start(&config(http, probe.addr));
    (gw, probe)
}

/// A fresh h2c connection still gets a 200.
async fn assert_h2_serves(gw: &Gateway) {
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    assert_eq!(
        h2.get(1, "/control", &[]).await,
        H2Answer::Response(Some(200))
    );
}

/// Read until GOAWAY and then the end of the connection; the GOAWAY's
/// error code and how many frames of `counted` kind arrived first.
async fn goaway_then_close(h2: &mut H2Raw, counted: u8) -> (Option<u32>, usize) {
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut code = None;
    let mut seen = 0;
    while let Ok(f) = h2.frame(deadline).await {
        if f.kind == counted {
            seen += 1;
        }
        if f.kind == H2_GOAWAY {
            code = f
                .payload
                .get(4..8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        }
    }
    (code, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_end_in_goaway_enhance_your_calm() {
    let (gw, _probe) = start("").await;
    for (kind, label) in [
        (H2_SETTINGS, "h2_settings_flood"),
        (H2_PING, "h2_ping_flood"),
    ] {
        let mut h2 = H2Raw::connect(gw.addr(0)).await;
        let one = if kind == H2_PING {
            h2_frame(H2_PING, 0, 0, &[7; 8])
        } else {
            h2_frame(H2_SETTINGS, 0, 0, &[])
        };
        let flood: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 10_000)
            .collect();
        // The gateway may stop reading mid-flood: a cut write is fine.
        let _ = tokio::time::timeout(Duration::from_secs(5), h2.s.writable()).await;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut h2.s, &flood).await;
        let (code, acks) = goaway_then_close(&mut h2, kind).await;
        assert_eq!(code, Some(ENHANCE_YOUR_CALM), "{label}: GOAWAY code");
        assert!(acks < 200, "{label}: {acks} of 10 000 frames were answered");
        assert!(defence_trips(&gw, label).await >= 1, "{label} not counted");
        assert_h2_serves(&gw).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_ends_in_goaway_and_spares_the_backend() {
    let (gw, probe) = start("").await;
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    let block = h2_get_block("/hold/2000", &[]);
    let mut flood = Vec::new();
    for i in 0..2000u32 {
        let id = 1 + 2 * i;
        flood.extend(h2_frame(
            H2_HEADERS,
            H2_END_HEADERS | H2_END_STREAM,
            id,
            &block,
        ));
        flood.extend(h2_frame(H2_RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = tokio::io::AsyncWriteExt::write_all(&mut h2.s, &flood).await;
    let (code, _) = goaway_then_close(&mut h2, H2_HEADERS).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM), "rapid reset: GOAWAY code");
    assert!(defence_trips(&gw, "h2_rapid_reset").await >= 1);
    let reached = probe
        .seen
        .requests
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        reached < 600,
        "{reached} of 2000 reset requests reached the backend"
    );
    assert_h2_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_ends_in_goaway() {
    let (gw, _probe) = start("").await;
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    let block = h2_get_block("/x", &[]);
    let (first, rest) = block.split_at(4);
    let mut flood = h2_frame(H2_HEADERS, H2_END_STREAM, 1, first);
    for _ in 0..200 {
        flood.extend(h2_frame(H2_CONTINUATION, 0, 1, &[]));
    }
    flood.extend(h2_frame(H2_CONTINUATION, H2_END_HEADERS, 1, rest));
    let _ = tokio::io::AsyncWriteExt::write_all(&mut h2.s, &flood).await;
    let (code, _) = goaway_then_close(&mut h2, H2_HEADERS).await;
    assert_eq!(
        code,
        Some(ENHANCE_YOUR_CALM),
        "CONTINUATION flood: GOAWAY code"
    );
    assert!(defence_trips(&gw, "h2_continuation_flood").await >= 1);
    assert_h2_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_block_left_open_is_closed_at_header_timeout() {
    let (gw, probe) = start("header_timeout_ms = 1000").await;
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    // A first request, so only the open header block can time out.
    assert_eq!(
        h2.get(1, "/first", &[]).await,
        H2Answer::Response(Some(200))
    );
    let block = h2_get_block("/never", &[]);
    h2.send(&h2_frame(H2_HEADERS, H2_END_STREAM, 3, &block[..4]))
        .await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let ended = loop {
        if let Err(why) = h2.frame(deadline).await {
            break why;
        }
    };
    let at = started.elapsed();
    assert_eq!(ended, "connection closed", "after {at:?}");
    assert!(
        at >= Duration::from_millis(800) && at < Duration::from_millis(3500),
        "closed after {at:?}; header_timeout is 1 s"
    );
    assert!(defence_trips(&gw, "header_timeout").await >= 1);
    assert_eq!(
        probe
            .seen
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

/// HPACK integer with a 7-bit prefix (RFC 7541 §5.1).
fn hpack_int7(out: &mut Vec<u8>, flags: u8, mut n: usize) {
    if n < 127 {
        out.push(flags | n as u8);
        return;
    }
    out.push(flags | 127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_is_refused_and_counted() {
    let (gw, probe) = start("").await;
    let mut h2 = H2Raw::connect(gw.addr(0)).await;
    // One 4 000-byte header in the dynamic table, then 30 one-byte
    // references to it: ~120 KB decoded from ~4 KB sent.
    let mut block = h2_get_block("/bomb", &[]);
    block.push(0x40);
    block.push(6);
    block.extend_from_slice(b"x-bomb");
    hpack_int7(&mut block, 0, 4000);
    block.extend(std::iter::repeat_n(b'b', 4000));
    block.extend(std::iter::repeat_n(0x80 | 62, 30));
    h2.send(&h2_frame(
        H2_HEADERS,
        H2_END_HEADERS | H2_END_STREAM,
        1,
        &block,
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut refused = false;
    while let Ok(f) = h2.frame(deadline).await {
        // h2 answers 431 itself (literal `:status`, Huffman "431").
        if f.kind == H2_HEADERS && f.stream == 1 {
            refused = f.payload.starts_with(&[0x48, 0x83, 0x69, 0x90, 0xff]);
            break;
        }
        if f.kind == H2_GOAWAY {
            break;
        }
    }
    assert!(refused, "the oversized header list was not answered 431");

    // Counted as h2's 431 goes out, which the client may read first.
    assert!(defence_trips_reach(&gw, "h2_header_list_too_large", 1).await >= 1);
    assert_eq!(
        probe
            .seen
            .requests
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    assert_h2_serves(&gw).await;
}

/// `py/h2_attacks.py MODE` against `port`; its JSON report.
async fn h2_attack(mode: &str, port: u16, extra: &[&str]) -> serde_json::Value {
    require_python_modules(&["h2"]);
    let mut cmd = python();
    cmd.arg(py_dir().join("h2_attacks.py"))
        .arg(mode)
        .args(["--port", &port.to_string(), "--timeout", "8"])
        .args(extra);
    let (ok, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_bounded(cmd, Duration::from_secs(12)))
            .await
            .expect("join");
    assert!(
        ok,
        "h2_attacks.py {mode} failed:\n{stderr}\nstdout:\n{stdout}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("h2_attacks.py printed no JSON ({e}):\n{stdout}\n{stderr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_h2_floods_get_goaway_enhance_your_calm() {
    let (gw, _probe) = start("").await;
    let port = gw.addr(0).port();
    for (mode, label) in [
        ("ping-flood", "h2_ping_flood"),
        ("settings-flood", "h2_settings_flood"),
        ("rapid-reset", "h2_rapid_reset"),
    ] {
        let r = h2_attack(mode, port, &["--count", "10000"]).await;
        assert_eq!(
            r["goaway"].as_u64(),
            Some(u64::from(ENHANCE_YOUR_CALM)),
            "{mode}: {r}"
        );
        assert!(r["acks"].as_u64().unwrap_or(u64::MAX) < 200, "{mode}: {r}");
        assert!(defence_trips(&gw, label).await >= 1);
    }
    assert_h2_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_h2_slow_reader_is_reset_at_body_timeout() {
    let (gw, probe) = start("body_timeout_ms = 1500").await;
    let port = gw.addr(0).port();
    let r = h2_attack("slow-reader", port, &["--path", "/big/67108864"]).await;
    let after = r["reset_after"]
        .as_f64()
        .unwrap_or_else(|| panic!("no reset: {r}"));
    assert!((1.2..4.5).contains(&after), "reset after {after} s: {r}");
    assert_eq!(r["error_code"].as_u64(), Some(8), "CANCEL expected: {r}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while probe.cuts().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!probe.cuts().is_empty(), "backend connection not released");
    assert!(defence_trips(&gw, "slow_reader").await >= 1);
    assert_h2_serves(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_preface_over_tls_gets_goaway_protocol_error_and_a_clean_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // h2spec 3.5/2: ALPN chose h2, then the client sends garbage.
    let dir = scratch();
    let c = crate::support::tls::cert(dir.path(), "srv");
    let probe = ProbeBackend::start().await;
    let gw = Gateway::start_in(
        dir,
        &format!(
            "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\n\
             protocol = \"h1s\"\n[listeners.tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\n\
             [[listeners.backends]]\naddress = \"{}\"\n",
            c.cert_path.display(),
            c.key_path.display(),
            probe.addr
        ),
    );
    let connector =
        crate::support::tls::client_offering(&c.cert_pem, &[&rustls::version::TLS13], &[b"h2"]);
    let mut tls = crate::support::tls::connect(&connector, gw.addr(0))
        .await
        .expect("TLS handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls.write_all(b"INVALID CONNECTION PREFACE\r\n\r\n")
        .await
        .expect("write");
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await;
    let end = end.expect("connection neither closed nor answered in 5 s");
    assert!(
        end.is_ok(),
        "not a clean close (TLS close_notify): {end:?}, read {got:?}"
    );
    // Frames before the close: SETTINGS perhaps, then our GOAWAY.
    let goaway = got
        .windows(4)
        .position(|w| w[3] == H2_GOAWAY && w[0] == 0 && w[1] == 0 && w[2] == 8);
    let code = goaway
        .and_then(|i| got.get(i + 13..i + 17))
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    assert_eq!(code, Some(0x1), "GOAWAY PROTOCOL_ERROR expected in {got:?}");
    assert!(defence_trips(&gw, "h2_bad_preface").await >= 1);
}
