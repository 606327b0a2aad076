//! The QUIC interop runner's cases against the `quic` listener, each run
//! twice: as the HTTP/3 front (`h3_front::*`, a hyper HTTP/1.1 backend
//! behind it) and as the Mode B raw QUIC relay (`mode_b::*`, a quinn + h3
//! origin behind it). Every download is checked against the digest of what
//! the backend served. Cases needing a network in between (loss,
//! blackhole, rebinding, amplification) are in `quic_interop_relay`.
//!
//! Which client drives which case (all ngtcp2's `gtlsclient` 0.12,
//! Debian `ngtcp2-client`, straight to the listener):
//! - handshake: one download; the log shows the handshake and ALPN h3.
//! - transfer: three downloads (6 MiB) on one connection.
//! - multiplexing: 2000 downloads on one connection (`gtlsclient` opens
//!   streams as the listener's stream credit allows).
//! - retry: `retry = "always"`; the client receives a Retry, then downloads.
//! - resumption: a second run with `--session-file` resumes: the server's
//!   Handshake flight carries no Certificate (it shrinks by more than the
//!   leaf certificate's size); `--disable-early-data` keeps 0-RTT out.
//! - http3: downloads of three sizes, each answered `:status: 200` over h3.
//! - multiconnect: twenty connections one after the other (the runner's
//!   lossy variant is `handshakeloss` in `quic_interop_relay`).
//! - chacha20: `--ciphers` limited to CHACHA20-POLY1305.
//! - keyupdate: `--key-update` in mid-transfer; the server answers in the
//!   new key phase (1-RTT packets received with `k=1`).
//! - ecn: the client's log shows the listener's packets ECT(0)-marked, the
//!   listener's ACKs carrying ECN counts, and ngtcp2 validating ECN on the
//!   path (quinn does ECN on Linux: asserted as it is).
//! - connectionmigration: `--change-local-addr` in mid-transfer: the client
//!   moves to a new local port and validates the path (PATH_RESPONSE from
//!   the listener), then finishes on it. (The runner's variant migrates to
//!   a server preferred_address, which the gateway does not offer.)
//! - zerortt: with `allow_0rtt = true` on the front, a run with
//!   `--session-file` and `--tp-file` sends its request in 0-RTT and it is
//!   accepted and served, the backend seeing `Early-Data: 1`; by default
//!   (`zerortt_refused`, both servers) 0-RTT is rejected and the request
//!   is still served after the handshake.

use std::path::Path;

use crate::support::interop::*;

interop_cases!(
    handshake,
    transfer,
    multiplexing,
    retry,
    resumption,
    http3,
    multiconnect,
    chacha20,
    keyupdate,
    ecn,
    connectionmigration,
    zerortt_refused,
);

/// Streams of the multiplexing case, as the interop runner's.
const MULTIPLEX_STREAMS: u64 = 2000;
/// Connections of the multiconnect case.
const SEQUENTIAL_CONNECTIONS: u64 = 20;

async fn handshake(mode: Mode) {
    let s = Interop::start(mode, "").await;
    let files = [File::new(1, 4096)];
    let run = Gtls::new(s.addr(), &files).fetch(&files).await;
    for line in [
        "QUIC handshake has completed",
        "Negotiated ALPN is h3",
        "the negotiated version is 0x00000001",
    ] {
        assert!(run.has(line), "no {line:?}:\n{}", run.tail());
    }
}

async fn transfer(mode: Mode) {
    let s = Interop::start(mode, "").await;
    let files = [
        File::new(2, 2 << 20),
        File::new(3, 3 << 20),
        File::new(4, 1 << 20),
    ];
    download(s.addr(), &files).await;
}

async fn multiplexing(mode: Mode) {
    // The front recycles a connection (GOAWAY) after
    // `max_requests_per_h3_connection` requests, 1000 by default, and
    // gtlsclient does not reconnect: this case needs one connection for
    // all of its streams.
    let s = Interop::start_with(
        mode,
        Extra {
            runtime: "max_requests_per_h3_connection = 4000",
            ..Extra::default()
        },
    )
    .await;
    let files: Vec<File> = (0..MULTIPLEX_STREAMS)
        .map(|i| File::new(1000 + i, 1024 + (i as usize % 16) * 64))
        .collect();
    download(s.addr(), &files).await;
    if let Some(http) = &s.http {
        assert!(http.hits() >= MULTIPLEX_STREAMS as usize, "{}", http.hits());
    }
}

async fn retry(mode: Mode) {
    let s = Interop::start(mode, "retry = \"always\"").await;
    let files = [File::new(5, 64 << 10)];
    let run = Gtls::new(s.addr(), &files).fetch(&files).await;
    assert_eq!(
        run.count(&["pkt rx", "type=Retry"]),
        1,
        "one Retry:\n{}",
        run.tail()
    );
}

/// gtlsclient's session (and transport parameter) files in `dir`.
fn resumable(g: Gtls, dir: &Path) -> Gtls {
    g.arg(format!("--session-file={}", dir.join("session").display()))
        .arg(format!("--tp-file={}", dir.join("tp").display()))
}

async fn resumption(mode: Mode) {
    let s = Interop::start(mode, "").await;
    let state = crate::support::scratch();
    let first_files = [File::new(6, 32 << 10)];
    let first = resumable(Gtls::new(s.addr(), &first_files), state.path())
        .run()
        .await;
    first.assert_downloads(&first_files);
    let files = [File::new(7, 1 << 20)];
    let second = resumable(Gtls::new(s.addr(), &files), state.path())
        .arg("--disable-early-data")
        .run()
        .await;
    second.assert_downloads(&files);
    let (full, resumed) = (
        first.handshake_crypto_received(),
        second.handshake_crypto_received(),
    );
    assert!(
        resumed > 0 && full >= resumed + s.leaf_der_len,
        "the second handshake carried a certificate: {resumed} Handshake CRYPTO bytes, \
         {full} in the full one (leaf {} bytes)\n{}",
        s.leaf_der_len,
        second.tail()
    );
}

async fn http3(mode: Mode) {
    let s = Interop::start(mode, "").await;
    let files = [
        File::new(8, 1),
        File::new(9, 10_000),
        File::new(10, 1 << 20),
    ];
    let run = Gtls::new(s.addr(), &files).fetch(&files).await;
    assert!(run.has("Negotiated ALPN is h3"), "{}", run.tail());
    assert_eq!(run.count(&[":status: 200"]), files.len(), "{}", run.tail());
}

async fn multiconnect(mode: Mode) {
    let s = Interop::start(mode, "").await;
    for i in 0..SEQUENTIAL_CONNECTIONS {
        let files = [File::new(100 + i, 64 << 10)];
        download(s.addr(), &files).await;
    }
}

async fn chacha20(mode: Mode) {
    let s = Interop::start(mode, "").await;
    let files = [File::new(11, 1 << 20)];
    let run = Gtls::new(s.addr(), &files)
        .arg("--ciphers=NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+CHACHA20-POLY1305")
        .fetch(&files)
        .await;
    assert!(
        run.has("Negotiated cipher suite is CHACHA20-POLY1305"),
        "{}",
        run.tail()
    );
}

async fn keyupdate(mode: Mode) {
    let s = Interop::start(mode, "").await;
    // quinn starts a key update of its own after 10 to 1000 packets, and
    // gtlsclient gives up (ngtcp2 refuses a second update that soon,
    // ERR_INVALID_STATE) when its timer fires after one: so the server
    // sends 4 KiB, the client updates its keys during the pause, and the
    // remaining 2 MiB leave in the new key phase.
    let files = [File::new(12, 2 << 20).paused(4096, 600)];
    let run = Gtls::new(s.addr(), &files)
        .arg("--key-update=150ms")
        .fetch(&files)
        .await;
    run.expect(
        &["pkt tx", "type=1RTT k=1"],
        "the client never updated its keys",
    );
    run.expect(
        &["pkt rx", "type=1RTT k=1"],
        "the server never answered in the new key phase",
    );
}

async fn ecn(mode: Mode) {
    let s = Interop::start(mode, "").await;
    let files = [File::new(13, 1 << 20)];
    let run = Gtls::new(s.addr(), &files).fetch(&files).await;
    run.expect(
        &["Received packet", "ecn=0x2"],
        "no ECT(0)-marked packet from the listener",
    );
    let echoed = run
        .log
        .lines()
        .filter(|l| l.contains(" frm rx ") && l.contains(" ACK(0x03) ect0="))
        .filter_map(|l| {
            l.split("ect0=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    assert!(
        echoed > 0,
        "the listener's ACKs carry no ECT(0) counts:\n{}",
        run.tail()
    );
    assert!(run.has("path is ECN capable"), "{}", run.tail());
}

async fn connectionmigration(mode: Mode) {
    let s = Interop::start(mode, "").await;
    let files = [File::new(14, 2 << 20).paced(64 << 10, 800)];
    let run = Gtls::new(s.addr(), &files)
        .arg("--change-local-addr=100ms")
        .fetch(&files)
        .await;
    run.expect(
        &["frm rx", "PATH_RESPONSE"],
        "the listener did not answer on the new path",
    );
    let mut locals: Vec<&str> = run
        .log
        .lines()
        .filter_map(|l| l.strip_prefix("Sent packet: local=")?.split(' ').next())
        .collect();
    locals.dedup();
    assert!(
        locals.len() >= 2,
        "the client never moved: {locals:?}\n{}",
        run.tail()
    );
}

/// A run that leaves a session and transport parameters, then a resumed
/// run sending its GET in 0-RTT: that second run, its download checked.
/// The resumed run goes through a relay that delays what the client hears:
/// its Finished then reaches the gateway long after its 0-RTT GET, so the
/// GET is read as early data however loaded the machine (on loopback the
/// two race).
async fn early_run(s: &Interop, seed: u64) -> GtlsRun {
    let state = crate::support::scratch();
    let first = [File::new(seed, 1024)];
    resumable(Gtls::new(s.addr(), &first), state.path())
        .run()
        .await
        .assert_downloads(&first);
    let path = crate::support::udp_relay::UdpRelay::start(s.addr(), seed).await;
    path.set_delay_to_client(std::time::Duration::from_millis(300));
    let files = [File::new(seed + 1, 256 << 10)];
    let run = resumable(Gtls::new(path.addr, &files), state.path())
        .fetch(&files)
        .await;
    run.expect(&["pkt tx", "type=0RTT"], "the client sent no 0-RTT");
    run
}

async fn zerortt_refused(mode: Mode) {
    let s = Interop::start(mode, "").await;
    let run = early_run(&s, 15).await;
    assert!(
        run.has("Early data was rejected by server"),
        "0-RTT accepted although allow_0rtt is off:\n{}",
        run.tail()
    );
    if let Some(http) = &s.http {
        assert!(early_data_header(http).is_none());
    }
}

/// The `Early-Data` header of the backend's last request.
fn early_data_header(http: &crate::support::http::HttpBackend) -> Option<String> {
    let headers = http.seen.last_headers.lock().ok()?.clone()?;
    Some(headers.get("early-data")?.to_str().ok()?.to_owned())
}

/// `allow_0rtt = true`: a resumed client's GET in 0-RTT is accepted and
/// forwarded with `Early-Data: 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zerortt_is_accepted_by_the_h3_front_with_allow_0rtt() {
    let s = Interop::start_with(
        Mode::Front,
        Extra {
            quic: "allow_0rtt = true",
            metrics: true,
            ..Extra::default()
        },
    )
    .await;
    let run = early_run(&s, 17).await;
    assert!(
        !run.has("Early data was rejected"),
        "0-RTT rejected with allow_0rtt = true:\n{}",
        run.tail()
    );
    let http = s.http.as_ref().expect("front backend");
    assert_eq!(early_data_header(http).as_deref(), Some("1"));
    let served = s
        .counter(
            "expressgateway_zero_rtt_requests_total",
            "outcome=\"served\"",
        )
        .await;
    assert_eq!(served, 1, "the early GET is counted served");
}
