//! Edge safety of the raw QUIC relay (Mode B): a stream whose receiver
//! gives no credit is cut both ways after `max_idle_timeout_ms`.

use std::time::Duration;

use tokio::time::Instant;

use crate::edge_quic::{defence_trips, pinging_client};
use crate::support::quic::*;
use crate::support::tls::cert;
use crate::support::*;

const ALPN: &str = "eg-test";
/// `max_idle_timeout_ms` of the relay listener: the stall bound.
const STALL: Duration = Duration::from_millis(2000);
/// What the client pushes on its stream without ever reading the echo:
/// more than every window between it and the echo backend.
const PUSH_BYTES: usize = 32 << 20;

/// A client pushes 32 MiB to an echo backend through the relay and never
/// reads the echo. The relay's writes of the echo towards the client make
/// no progress; after `max_idle_timeout_ms` the stream is cut both ways:
/// RESET_STREAM 0x10c to the client, STOP_SENDING 0x10c to the backend
/// (whose own STOP_SENDING then reaches the client's writer). Counted
/// `relay_stall`; the connection keeps serving other streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_cuts_a_stream_whose_reader_gives_no_credit() {
    let dir = scratch();
    let backend_cert = cert(dir.path(), "backend");
    let backend = QuicEchoBackend::start(&backend_cert, &[ALPN]).await;
    let front = cert(dir.path(), "front");
    let config = format!(
        "[observability]\nmetrics_bind = \"127.0.0.1:0\"\n\
         [[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"quic\"\n\
         [listeners.quic]\ncert_path = \"{}\"\nkey_path = \"{}\"\nmax_idle_timeout_ms = {}\n\
         [listeners.quic.raw_proxy]\nbackend_addr = \"{}\"\nsni = \"localhost\"\n\
         backend_ca_path = \"{}\"\nalpn = [\"{ALPN}\"]\n",
        front.cert_path.display(),
        front.key_path.display(),
        STALL.as_millis(),
        backend.addr,
        backend_cert.cert_path.display(),
    );
    let gw = Gateway::start_in(dir, &config);
    let (endpoint, client) = pinging_client(&front.cert_pem, ALPN);
    let conn = endpoint
        .connect_with(client, gw.addr(0), "localhost")
        .expect("connect")
        .await
        .expect("handshake");

    let (mut send, mut recv) = conn.open_bi().await.expect("open bi");
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'r'; 64 * 1024];
        let mut pushed = 0;
        while pushed < PUSH_BYTES {
            if let Err(e) = send.write_all(&chunk).await {
                return (Some(e), pushed);
            }
            pushed += chunk.len();
        }
        (None, pushed)
    });
    // The client reads nothing until the writer has been stopped.
    let (stopped, pushed) = tokio::time::timeout(Duration::from_secs(15), writer)
        .await
        .expect("the writer was stopped within 15 s")
        .expect("writer task");
    let after = started.elapsed();
    eprintln!("relay stall: client write ended after {after:?} ({pushed} bytes): {stopped:?}");
    // The backend, whose echo the relay stopped (0x10c), stops reading in
    // turn; the relay mirrors that STOP_SENDING, with the backend's code.
    assert!(
        matches!(stopped, Some(quinn::WriteError::Stopped(_))),
        "expected STOP_SENDING, got {stopped:?} after {pushed} bytes"
    );
    assert!(
        after >= STALL - Duration::from_millis(200) && after < STALL + Duration::from_secs(5),
        "cut after {after:?}, expected the stall bound ({STALL:?}) + slack"
    );
    // The direction towards the client was cut too: a reset, not data.
    let mut buf = vec![0u8; 64 * 1024];
    let read = loop {
        match tokio::time::timeout(Duration::from_secs(5), recv.read(&mut buf)).await {
            Ok(Ok(Some(_))) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(read, Ok(Err(quinn::ReadError::Reset(code))) if code.into_inner() == 0x10c),
        "expected RESET_STREAM 0x10c towards the client, got {read:?}"
    );
    assert!(defence_trips(&gw, "relay_stall").await >= 1.0);
    // Only the stream was cut: the connection still relays.
    let echoed = quic_ask(&conn, b"after the stall").await.expect("echo");
    assert_eq!(&echoed[..], b"after the stall");
}
