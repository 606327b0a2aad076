//! The frame relay: tungstenite's codec on both legs (the server role
//! towards the client, the client role towards the backend), messages
//! moved one at a time, so memory per WebSocket stays bounded: a leg is
//! read only once the other took the previous message (its flow control,
//! TCP or HTTP/2 or QUIC, then holds the sender back).
//!
//! Pings are answered on the leg they arrive on (tungstenite does it) and
//! not forwarded; close frames are forwarded with their code and reason.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use eg_runtime::metrics::metrics;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::BoxIo;

/// `[listeners.websocket]` limits, enforced on both legs alike.
#[derive(Debug, Clone)]
pub struct Limits {
    /// No frame either way for this long: close 1001.
    pub idle: Duration,
    /// A message (or frame) longer than this: close 1009.
    pub max_message: usize,
    /// More pings than this per `ping_window`: close 1008.
    pub pings_per_window: u32,
    pub ping_window: Duration,
    /// A frame begun must be complete within this: close 1008.
    pub frame_timeout: Duration,
}

/// After a close is forwarded, how long each leg has to finish the
/// closing handshake before its connection is dropped (RFC 6455 §7.1.1
/// leaves it to us): a round trip and a flush, generously.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Bytes tungstenite may hold for writing beyond the message being sent:
/// one message is in flight at a time, so a small slack over it suffices.
const WRITE_SLACK: usize = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Client,
    Backend,
}

/// Why the relay stopped.
enum End {
    /// `from` sent a close frame (forwarded as is to the other leg).
    Closed(Leg, Option<CloseFrame>),
    /// A limit tripped on `from`: it gets `code`, the other leg 1001.
    Limit(Leg, CloseCode, &'static str, &'static str),
    /// `from` broke the protocol (it gets `code`), or went away (`None`).
    Broken(Leg, Option<CloseCode>),
    /// The gateway drains: both legs get 1001.
    GoingAway,
}

type Ws = WebSocketStream<Marked>;

/// Relay until either leg closes or a limit trips.
pub(super) async fn run(client: BoxIo, backend: BoxIo, limits: &Limits, listener: &str) {
    let open = metrics().websockets_open.with_label_values(&[listener]);
    open.inc();
    let config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message))
        .max_frame_size(Some(limits.max_message))
        .max_write_buffer_size(limits.max_message.saturating_add(WRITE_SLACK));
    let epoch = Instant::now();
    let (client, c_mark) = Marked::new(client, epoch);
    let (backend, b_mark) = Marked::new(backend, epoch);
    let client = WebSocketStream::from_raw_socket(client, Role::Server, Some(config)).await;
    let backend = WebSocketStream::from_raw_socket(backend, Role::Client, Some(config)).await;
    let (mut c_tx, mut c_rx) = client.split();
    let (mut b_tx, mut b_rx) = backend.split();
    let activity = Activity::new(epoch);
    let end = tokio::select! {
        end = pump(Leg::Client, &mut c_rx, &c_mark, &mut b_tx, limits, &activity) => end,
        end = pump(Leg::Backend, &mut b_rx, &b_mark, &mut c_tx, limits, &activity) => end,
        // The gateway is shutting down: both legs hear 1001.
        () = eg_runtime::closing().cancelled() => End::GoingAway,
    };
    let code = match &end {
        End::Closed(_, frame) => frame.as_ref().map(|f| f.code),
        End::Limit(_, code, ..) => Some(*code),
        End::Broken(_, code) => Some(code.unwrap_or(CloseCode::Abnormal)),
        End::GoingAway => Some(CloseCode::Away),
    };
    metrics()
        .websocket_closes_total
        .with_label_values(&[listener, code_label(code)])
        .inc();
    finish(end, (c_tx, c_rx), (b_tx, b_rx)).await;
    open.dec();
}

/// Move messages from `src` to `dst` until something ends the relay.
async fn pump(
    leg: Leg,
    src: &mut SplitStream<Ws>,
    mark: &Mark,
    dst: &mut SplitSink<Ws, Message>,
    limits: &Limits,
    activity: &Activity,
) -> End {
    let other = match leg {
        Leg::Client => Leg::Backend,
        Leg::Backend => Leg::Client,
    };
    let mut window_start = Instant::now();
    let mut pings = 0u32;
    loop {
        let idle_at = activity.last() + limits.idle;
        // Bytes of a new message arriving while we wait do not wake us:
        // look again within one frame timeout, so one begun now is caught
        // when it expires.
        let frame_at = mark.partial_since().map_or(Instant::now(), |t| t) + limits.frame_timeout;
        let wake = frame_at.min(idle_at);
        let next = tokio::select! {
            next = src.next() => next,
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if mark.partial_since().is_some_and(|t| now >= t + limits.frame_timeout) {
                    return End::Limit(leg, CloseCode::Policy, "frame read timeout", "websocket_frame_timeout");
                }
                if now >= activity.last() + limits.idle {
                    return End::Limit(leg, CloseCode::Away, "idle timeout", "websocket_idle_timeout");
                }
                continue;
            }
        };
        mark.message_done();
        activity.touch();
        let msg = match next {
            None => return End::Broken(leg, None),
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return read_error(leg, &e),
        };
        match msg {
            Message::Ping(_) => {
                let now = Instant::now();
                if now >= window_start + limits.ping_window {
                    window_start = now;
                    pings = 0;
                }
                pings = pings.saturating_add(1);
                if pings > limits.pings_per_window {
                    return End::Limit(
                        leg,
                        CloseCode::Policy,
                        "ping rate limit",
                        "websocket_ping_flood",
                    );
                }
            }
            Message::Pong(_) | Message::Frame(_) => {}
            Message::Close(frame) => return End::Closed(leg, frame),
            data @ (Message::Text(_) | Message::Binary(_)) => {
                // Back-pressure: `src` is not read again until `dst` took
                // this one; a leg that takes nothing for `idle` is gone.
                match tokio::time::timeout(limits.idle, dst.send(data)).await {
                    Ok(Ok(())) => activity.touch(),
                    Ok(Err(_)) => return End::Broken(other, None),
                    Err(_) => {
                        return End::Limit(
                            other,
                            CloseCode::Away,
                            "idle timeout",
                            "websocket_idle_timeout",
                        )
                    }
                }
            }
        }
    }
}

fn read_error(leg: Leg, e: &WsError) -> End {
    match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => End::Limit(
            leg,
            CloseCode::Size,
            "message too big",
            "websocket_message_size",
        ),
        WsError::Utf8(_) => End::Broken(leg, Some(CloseCode::Invalid)),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)
        | WsError::ConnectionClosed
        | WsError::AlreadyClosed
        | WsError::Io(_) => End::Broken(leg, None),
        _ => End::Broken(leg, Some(CloseCode::Protocol)),
    }
}

type Halves = (SplitSink<Ws, Message>, SplitStream<Ws>);

/// Tell each leg, each within `CLOSE_GRACE`, and let both closing
/// handshakes finish.
async fn finish(end: End, client: Halves, backend: Halves) {
    let (mut client, mut backend) = (client, backend);
    let frame = |code: CloseCode, reason: &str| {
        Some(CloseFrame {
            code,
            reason: reason.to_owned().into(),
        })
    };
    let (to_client, to_backend) = match end {
        End::Closed(Leg::Client, f) => (None, Some(f)),
        End::Closed(Leg::Backend, f) => (Some(f), None),
        End::Limit(leg, code, reason, defence) => {
            metrics()
                .defence_trips_total
                .with_label_values(&[defence])
                .inc();
            tracing::debug!(?leg, reason, "WebSocket limit tripped");
            let own = frame(code, reason);
            let other = frame(CloseCode::Away, "the other side was closed by the gateway");
            match leg {
                Leg::Client => (Some(own), Some(other)),
                Leg::Backend => (Some(other), Some(own)),
            }
        }
        End::Broken(leg, code) => {
            let own = code.map(|c| frame(c, "protocol error"));
            let other = Some(frame(CloseCode::Away, "the other side went away"));
            match leg {
                Leg::Client => (own, other),
                Leg::Backend => (other, own),
            }
        }
        End::GoingAway => {
            let away = || Some(frame(CloseCode::Away, "gateway shutting down"));
            (away(), away())
        }
    };
    // A leg that itself sent the close already has tungstenite's reply
    // queued: flushing it finishes that handshake.
    let by = Instant::now() + CLOSE_GRACE;
    tokio::join!(
        close_leg(&mut client, to_client, by),
        close_leg(&mut backend, to_backend, by)
    );
}

async fn close_leg(leg: &mut Halves, close: Option<Option<CloseFrame>>, by: Instant) {
    let _ = tokio::time::timeout_at(by, async {
        match close {
            Some(frame) => {
                let _ = leg.0.send(Message::Close(frame)).await;
            }
            None => {
                let _ = leg.0.flush().await;
            }
        }
        // Read to the end: the peer's close reply, then its FIN.
        while let Some(Ok(_)) = leg.1.next().await {}
    })
    .await;
}

/// A bounded label for a close code.
fn code_label(code: Option<CloseCode>) -> &'static str {
    let Some(code) = code else {
        return "none";
    };
    match u16::from(code) {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1006 => "1006",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1010 => "1010",
        1011 => "1011",
        3000..=4999 => "application",
        _ => "other",
    }
}

/// Milliseconds since `epoch` of the last frame either way.
struct Activity {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms.store(ms_since(self.epoch), Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.epoch + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

fn ms_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When bytes of a message not yet complete first arrived on a leg. The
/// codec hides partial frames, so the leg's reads set it and a complete
/// message clears it: bytes of the next message that came in the same
/// read go unseen until the next read, which only makes the timeout more
/// lenient, never trips it early.
#[derive(Clone)]
struct Mark {
    epoch: Instant,
    /// ms since `epoch` plus one; 0 = no partial message.
    since: Arc<AtomicU64>,
}

impl Mark {
    fn partial_since(&self) -> Option<Instant> {
        match self.since.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.epoch + Duration::from_millis(ms - 1)),
        }
    }

    fn message_done(&self) {
        self.since.store(0, Ordering::Relaxed);
    }
}

/// A leg's stream, marking when a read brings bytes.
struct Marked {
    io: BoxIo,
    mark: Mark,
}

impl Marked {
    fn new(io: BoxIo, epoch: Instant) -> (Self, Mark) {
        let mark = Mark {
            epoch,
            since: Arc::new(AtomicU64::new(0)),
        };
        (
            Self {
                io,
                mark: mark.clone(),
            },
            mark,
        )
    }
}

impl AsyncRead for Marked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = ms_since(self.mark.epoch).saturating_add(1);
            let _ = self
                .mark
                .since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Marked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
