//! Relaying between two established QUIC connections: streams opened by
//! either side are mirrored on the other leg, RFC 9221 datagrams are
//! forwarded through a bounded queue, resets and STOP_SENDING keep their
//! codes, and closing either leg closes the other the same way.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use eg_runtime::metrics::metrics;
use eg_runtime::{CancellationToken, TaskTracker};
use futures_util::FutureExt;
use quinn::{Connection, ConnectionError, ReadError, RecvStream, SendStream, VarInt, WriteError};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

/// Largest piece read from one leg before it is written to the other.
/// Bounds per-stream memory in the relay (two pieces: one being written,
/// one read ahead); quinn's own flow-control windows hold the rest, so a
/// slow reader slows its writer.
const CHUNK_BYTES: usize = 64 * 1024;

/// Application error code for a stream refused by `max_relay_streams`:
/// `H3_REQUEST_REJECTED` (RFC 9114 §8.1), since HTTP/3 is the default ALPN
/// and that code tells a client the request was not processed and may be
/// retried. Other protocols see an opaque application code.
pub(crate) const STREAM_REFUSED: VarInt = VarInt::from_u32(0x10b);

/// Application close code when the other leg ended without an application
/// close of its own (idle timeout, transport error, reset), when no
/// backend could be reached, or on an internal failure:
/// `H3_INTERNAL_ERROR` (RFC 9114 §8.1).
pub(crate) const PEER_LOST: VarInt = VarInt::from_u32(0x102);

/// Application close code when the gateway shuts down: `H3_NO_ERROR`
/// (RFC 9114 §8.1), a graceful close.
pub(crate) const SHUTTING_DOWN: VarInt = VarInt::from_u32(0x100);

/// After one leg closes, how long the relay keeps the other open so that
/// data already received from the closing side (responses, a final FIN)
/// reaches its peer before the close is mirrored. Usually over in one
/// round trip; the bound keeps a peer that does not read from holding the
/// connection open.
const CLOSE_LINGER: Duration = Duration::from_secs(1);

/// How long a new stream waits for a `max_relay_streams` slot before it is
/// refused. The client leg's stream limit equals the cap, so a client
/// using only the credit it was given can open a stream the moment quinn
/// frees the one it replaces, before that stream's copies have seen their
/// last acknowledgement and given the slot back (a loopback round trip
/// against a task wake-up and the backend's ACK delay, 25 ms by default).
/// Refusing then would reject a well-behaved client's request; one second
/// covers a loaded machine and still refuses a peer past the cap (its
/// uni and bidi streams together) promptly.
const SLOT_GRACE: Duration = Duration::from_secs(1);

/// Application error code for a stream the relay cut because its
/// receiver gave no credit for `Bounds::write_stall`, sent both ways
/// (RESET_STREAM to the receiver, STOP_SENDING to the sender):
/// `H3_REQUEST_CANCELLED` (RFC 9114 §8.1), for the default ALPN.
pub(crate) const STREAM_STALLED: VarInt = VarInt::from_u32(0x10c);

/// Relay bounds of one connection pair.
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) dgram_queue_cap: usize,
    pub(crate) max_relay_streams: u32,
    /// How long one write towards a peer may wait for stream credit (and
    /// a finished stream for its last bytes to be acknowledged).
    pub(crate) write_stall: Duration,
    /// After shutdown, how long the pair may go on relaying.
    pub(crate) drain: Duration,
}

/// The stream copies running towards each leg, so a close can wait for
/// the ones towards the surviving leg to deliver what they hold.
struct Towards {
    client: TaskTracker,
    backend: TaskTracker,
}

/// Relay until either leg closes or `shutdown` fires, then close the other
/// leg accordingly.
/// How a relay ended, for the backend's passive health.
pub(crate) struct RelayEnd {
    /// The backend's leg failed first: it went silent (keep-alives
    /// unanswered), reset, or closed with a transport error.
    pub backend_failed: bool,
}

pub(crate) async fn relay(
    client: Connection,
    backend: Connection,
    bounds: Bounds,
    shutdown: CancellationToken,
) -> RelayEnd {
    let cap = usize::try_from(bounds.max_relay_streams).unwrap_or(usize::MAX);
    // Client-initiated and backend-initiated streams are capped separately,
    // so one side cannot starve the other of relay slots.
    let from_client = Arc::new(Semaphore::new(cap));
    let from_backend = Arc::new(Semaphore::new(cap));
    let towards = Towards {
        client: TaskTracker::new(),
        backend: TaskTracker::new(),
    };
    let (to_c, to_b) = (&towards.client, &towards.backend);
    let stall = bounds.write_stall;
    datagrams(client.clone(), backend.clone(), bounds.dgram_queue_cap);
    datagrams(backend.clone(), client.clone(), bounds.dgram_queue_cap);
    let work = async {
        tokio::join!(
            mirror_bi(&client, &backend, &from_client, to_b, to_c, stall),
            mirror_bi(&backend, &client, &from_backend, to_c, to_b, stall),
            mirror_uni(&client, &backend, &from_client, to_b, stall),
            mirror_uni(&backend, &client, &from_backend, to_c, stall),
        );
    };
    let mut backend_failed = false;
    // Shutdown drains: streams in flight go on (a raw relay has no GOAWAY
    // to send) until the drain time is up, then both legs close.
    let drained = async {
        shutdown.cancelled().await;
        tokio::time::sleep(bounds.drain).await;
    };
    tokio::select! {
        biased;
        () = drained => {
            client.close(SHUTTING_DOWN, b"gateway shutting down");
            backend.close(SHUTTING_DOWN, b"gateway shutting down");
        }
        why = client.closed() => {
            linger(&towards.backend, &shutdown).await;
            close_like(&backend, &why, "client");
        }
        why = backend.closed() => {
            backend_failed = backend_fault(&why);
            linger(&towards.client, &shutdown).await;
            close_like(&client, &why, "backend");
        }
        // Every loop ended: both legs are gone; close what may remain.
        () = work => {
            client.close(PEER_LOST, b"relay ended");
            backend.close(PEER_LOST, b"relay ended");
        }
    }
    RelayEnd { backend_failed }
}

/// Whether the backend leg ending this way is the backend's failure. An
/// application close is the application's own decision; a timeout is the
/// backend's fault because the upstream leg sends keep-alives.
fn backend_fault(why: &ConnectionError) -> bool {
    match why {
        ConnectionError::TimedOut
        | ConnectionError::Reset
        | ConnectionError::TransportError(_)
        | ConnectionError::VersionMismatch => true,
        ConnectionError::ConnectionClosed(close) => {
            close.error_code != quinn::TransportErrorCode::NO_ERROR
        }
        _ => false,
    }
}

/// Wait (bounded) for the copies towards the surviving leg to finish.
async fn linger(towards: &TaskTracker, shutdown: &CancellationToken) {
    towards.close();
    tokio::select! {
        () = shutdown.cancelled() => {}
        _ = tokio::time::timeout(CLOSE_LINGER, towards.wait()) => {}
    }
}

/// Close `other` the way its peer leg ended: the same application code
/// and reason, or `PEER_LOST` when that leg ended without one.
fn close_like(other: &Connection, why: &ConnectionError, side: &str) {
    match why {
        ConnectionError::ApplicationClosed(close) => other.close(close.error_code, &close.reason),
        ConnectionError::LocallyClosed => other.close(PEER_LOST, b"relay closed"),
        ConnectionError::TimedOut => other.close(PEER_LOST, format!("{side} timed out").as_bytes()),
        e => {
            tracing::debug!(%side, error = %e, "relay leg lost");
            other.close(PEER_LOST, format!("{side} connection lost").as_bytes());
        }
    }
}

fn count(defence: &str) {
    metrics()
        .defence_trips_total
        .with_label_values(&[defence])
        .inc();
}

/// Mirror bidirectional streams opened by `from`'s peer onto `to`, in
/// order (so stream IDs match on both legs while none is refused).
/// Copies towards `to` run on `towards_to`, the others on `towards_from`.
async fn mirror_bi(
    from: &Connection,
    to: &Connection,
    cap: &Arc<Semaphore>,
    towards_to: &TaskTracker,
    towards_from: &TaskTracker,
    stall: Duration,
) {
    loop {
        let Ok((mut send_a, mut recv_a)) = from.accept_bi().await else {
            return;
        };
        let Some(permit) = slot(cap).await else {
            count("quic_relay_streams_cap");
            let _ = recv_a.stop(STREAM_REFUSED);
            let _ = send_a.reset(STREAM_REFUSED);
            continue;
        };
        // Waits while the other leg's stream limit is reached: the
        // waiting streams queue inside quinn, bounded by our own limit.
        let Ok((send_b, recv_b)) = to.open_bi().await else {
            return;
        };
        // The slot is free once both directions are done.
        let slot = Arc::new(permit);
        towards_to.spawn(pump(recv_a, send_b, Arc::clone(&slot), stall));
        towards_from.spawn(pump(recv_b, send_a, slot, stall));
    }
}

/// A relay slot for a new stream, waiting at most `SLOT_GRACE` for one.
async fn slot(cap: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(cap).try_acquire_owned() {
        return Some(permit);
    }
    tokio::time::timeout(SLOT_GRACE, Arc::clone(cap).acquire_owned())
        .await
        .ok()?
        .ok()
}

/// Mirror unidirectional streams opened by `from`'s peer onto `to`.
async fn mirror_uni(
    from: &Connection,
    to: &Connection,
    cap: &Arc<Semaphore>,
    towards_to: &TaskTracker,
    stall: Duration,
) {
    loop {
        let Ok(mut recv_a) = from.accept_uni().await else {
            return;
        };
        let Some(permit) = slot(cap).await else {
            count("quic_relay_streams_cap");
            let _ = recv_a.stop(STREAM_REFUSED);
            continue;
        };
        let Ok(send_b) = to.open_uni().await else {
            return;
        };
        towards_to.spawn(pump(recv_a, send_b, Arc::new(permit), stall));
    }
}

/// One read from a stream, as the relay acts on it.
enum Step {
    Data(Bytes),
    Fin,
    Reset(VarInt),
    /// The connection (or the stream's state) is gone.
    Lost,
}

impl From<Result<Option<quinn::Chunk>, ReadError>> for Step {
    fn from(read: Result<Option<quinn::Chunk>, ReadError>) -> Self {
        match read {
            Ok(Some(chunk)) => Self::Data(chunk.bytes),
            Ok(None) => Self::Fin,
            Err(ReadError::Reset(code)) => Self::Reset(code),
            Err(_) => Self::Lost,
        }
    }
}

/// Copy one direction of a stream: data and FIN forward, RESET_STREAM
/// forward with its code, STOP_SENDING backward with its code. When a
/// connection is lost mid-stream the other side is reset (`PEER_LOST`),
/// never finished, so a truncated stream cannot pass for a complete one.
/// Holds `_slot` (a `max_relay_streams` permit) until the peer has
/// acknowledged everything. A receiver that gives no credit for `stall`
/// (one write, or the acknowledgement of a finished stream) has the
/// stream cut both ways with `STREAM_STALLED`, counted as `relay_stall`:
/// otherwise it would hold the slot, the relay's buffers and the sender.
async fn pump(
    mut from: RecvStream,
    mut to: SendStream,
    _slot: Arc<OwnedSemaphorePermit>,
    stall: Duration,
) {
    // What was read ahead of the write in progress (at most one chunk):
    // when a FIN arrived with the last data, the relay sends both
    // together, as the sender did. A receiver that sees the FIN with the
    // data has no reason to send STOP_SENDING (an HTTP/3 server that
    // ignores a GET's empty body would otherwise stop the client's stream
    // before the client finished it).
    let mut ahead: Option<Step> = None;
    loop {
        let step = match ahead.take() {
            Some(step) => step,
            None => {
                let stopped = to.stopped();
                tokio::select! {
                    // Data or FIN already received wins over a STOP_SENDING
                    // from the receiver: QUIC sends no STOP_SENDING for a
                    // stream whose FIN arrived, and neither does the relay.
                    biased;
                    read = from.read_chunk(CHUNK_BYTES, true) => Step::from(read),
                    stop = stopped => {
                        // The receiver stopped while we waited for data:
                        // tell the sender. `Ok(None)` cannot happen before
                        // we finish.
                        let code = match stop {
                            Ok(Some(code)) => code,
                            _ => PEER_LOST,
                        };
                        let _ = from.stop(code);
                        return;
                    }
                }
            }
        };
        match step {
            Step::Data(bytes) => {
                ahead = from
                    .read_chunk(CHUNK_BYTES, true)
                    .now_or_never()
                    .map(Step::from);
                match tokio::time::timeout(stall, to.write_chunk(bytes)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(WriteError::Stopped(code))) => {
                        let _ = from.stop(code);
                        return;
                    }
                    Ok(Err(_)) => {
                        let _ = from.stop(PEER_LOST);
                        return;
                    }
                    Err(_) => {
                        count("relay_stall");
                        let _ = to.reset(STREAM_STALLED);
                        let _ = from.stop(STREAM_STALLED);
                        return;
                    }
                }
            }
            Step::Fin => {
                let _ = to.finish();
                // Until acknowledged (or the connection ends): bytes the
                // receiver gives no credit for are never acknowledged.
                if tokio::time::timeout(stall, to.stopped()).await.is_err() {
                    count("relay_stall");
                    let _ = to.reset(STREAM_STALLED);
                }
                return;
            }
            Step::Reset(code) => {
                let _ = to.reset(code);
                return;
            }
            Step::Lost => {
                let _ = to.reset(PEER_LOST);
                return;
            }
        }
    }
}

/// Forward datagrams from `from`'s peer to `to`'s through a queue of
/// `cap` datagrams: when the queue is full the newest is dropped; one too
/// large for `to` is dropped. Both are counted. Reader and writer are
/// separate tasks, so a burst drained from quinn's receive buffer is sent
/// while it is read; both end when either connection closes.
fn datagrams(from: Connection, to: Connection, cap: usize) {
    // Bounded by `dgram_queue_cap` (config): datagrams are unreliable, so
    // under pressure the relay drops rather than buffers.
    let (tx, mut rx) = mpsc::channel::<Bytes>(cap.max(1));
    tokio::spawn(async move {
        while let Ok(datagram) = from.read_datagram().await {
            match tx.try_send(datagram) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => count("quic_dgram_queue_full"),
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
    });
    tokio::spawn(async move {
        while let Some(datagram) = rx.recv().await {
            match to.max_datagram_size() {
                None => {
                    count("quic_dgram_unsupported");
                    continue;
                }
                Some(max) if datagram.len() > max => {
                    count("quic_dgram_too_large");
                    continue;
                }
                Some(_) => {}
            }
            match to.send_datagram_wait(datagram).await {
                Ok(()) => {}
                Err(quinn::SendDatagramError::TooLarge) => count("quic_dgram_too_large"),
                Err(
                    quinn::SendDatagramError::UnsupportedByPeer
                    | quinn::SendDatagramError::Disabled,
                ) => count("quic_dgram_unsupported"),
                Err(quinn::SendDatagramError::ConnectionLost(_)) => return,
            }
        }
    });
}
