//! The server side: one connection's request loop.

use super::reader::{FrameReader, ReadError, Watchdog};
use super::{Status, Transport};
use crate::net::Gather;
use bytes::{BufMut, Bytes, BytesMut};
use sigma_ep::limits::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX};
use sigma_ep::{Header, Kind, StatusCode};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// How a server treats its connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// Close a connection that sends nothing for this long while none of
    /// its calls is being handled (`None`: never). A call in progress (a
    /// long watch, say) keeps its connection busy, not idle. Checked
    /// lazily, with one timer re-armed at most once per period: a
    /// connection closes between one and two periods after its last request.
    pub idle_timeout: Option<Duration>,
    /// Close a connection that began a frame and did not finish it within
    /// this (`None`: never): a peer that sends half a frame holds nothing
    /// for long.
    pub frame_timeout: Option<Duration>,
}

/// What a handler answers with.
#[derive(Debug)]
pub enum Reply {
    /// The reply is what the handler wrote into the `out` buffer it was given.
    Written,
    /// The reply is this buffer (e.g. a slice of the request: sent without a copy).
    Bytes(Bytes),
}

/// A service: handlers dispatched by method id.
#[allow(async_fn_in_trait)] // Futures are core-local (thread-per-core): no Send bound wanted.
pub trait Service {
    /// Handles one request. `request` is a slice of the receive buffer;
    /// `out` is an empty, reusable buffer for building the reply in place.
    async fn call(&self, method: u32, request: Bytes, out: &mut BytesMut) -> Result<Reply, Status>;
}

/// Why a server connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The peer sent bytes that are not a σEP frame.
    #[error("{peer}: {source}")]
    Read {
        /// The peer.
        peer: String,
        /// What went wrong.
        #[source]
        source: ReadErrorPublic,
    },
    /// The peer sent a frame a server does not accept.
    #[error("{peer}: unexpected {kind:?} frame (request id {request_id})")]
    UnexpectedFrame {
        /// The peer.
        peer: String,
        /// The frame's kind.
        kind: Kind,
        /// The frame's request id.
        request_id: u64,
    },
    /// The peer sent nothing for the configured idle timeout.
    #[error("{peer}: idle for {after:?}, closed")]
    Idle {
        /// The peer.
        peer: String,
        /// The idle timeout.
        after: Duration,
    },
    /// The peer began a frame and did not finish it in time.
    #[error("{peer}: a frame begun was not complete within {after:?} ({buffered} bytes of it came), closed")]
    FrameTimeout {
        /// The peer.
        peer: String,
        /// The frame timeout.
        after: Duration,
        /// The bytes of the frame that came.
        buffered: usize,
    },
    /// Sending a reply failed.
    #[error("{peer}: send failed: {source}")]
    Send {
        /// The peer.
        peer: String,
        /// The system call's error.
        #[source]
        source: std::io::Error,
    },
}

/// A read failure, as seen from outside the crate.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ReadErrorPublic(#[from] ReadError);

const REPLY_BYTES_MIN: usize = 4096;
/// Replies queued before they are sent together.
const REPLIES_PER_SEND_MAX: usize = 64;

/// Replies waiting to go out, sent together in one gather send when no
/// more requests are buffered (or the batch is full).
struct Replier {
    headers: BytesMut,
    /// Lent to the send operation while replies are on their way.
    gather: Option<Gather>,
    queued: usize,
}

impl Replier {
    fn header(&mut self, header: Header) -> Bytes {
        if self.headers.capacity() < FRAME_HEADER_BYTES {
            // Every header of earlier batches has been sent and dropped, so
            // this reuses the allocation.
            self.headers.reserve(2 * REPLIES_PER_SEND_MAX * FRAME_HEADER_BYTES);
        }
        let mut wire = [0u8; FRAME_HEADER_BYTES];
        header.encode(&mut wire);
        self.headers.put_slice(&wire);
        self.headers.split().freeze()
    }

    fn queue(&mut self, header: Header, payload: Bytes) {
        let header = self.header(header);
        let gather = self
            .gather
            .get_or_insert_with(|| Gather::with_capacity(2 * REPLIES_PER_SEND_MAX));
        gather.push(header);
        gather.push(payload);
        self.queued += 1;
    }

    fn queue_error(&mut self, out: &mut BytesMut, request: &Header, status: &Status) {
        let message = sigma_ep::codec::truncate_error_message(&status.message);
        out.put_slice(message.as_bytes());
        let payload = out.split().freeze();
        self.queue(
            Header::error(request.request_id, request.method, status.code, payload.len() as u32),
            payload,
        );
    }

    async fn flush<T: Transport>(&mut self, stream: &T) -> std::io::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        self.queued = 0;
        let gather = self.gather.take().expect("queued replies have a gather list");
        let (res, mut gather) = stream.send_all_gather(gather).await;
        gather.clear();
        self.gather = Some(gather);
        res
    }
}

/// The timers of one server connection ([`ServerConfig`]): one timer,
/// armed for the earliest deadline that matters and re-armed only when it
/// fires or an earlier deadline appears (a partial frame), so a warm
/// connection reads no clock and arms no timer per request.
struct ConnTimers<F, M> {
    config: ServerConfig,
    timer: Pin<Box<F>>,
    make: M,
    /// When the armed timer fires; `None` while it is not armed.
    armed: Option<Instant>,
    /// Frames received so far, and how many there were when the idle
    /// deadline was set: a change means the connection was not idle.
    frames: u64,
    idle_frames: u64,
    idle_deadline: Option<Instant>,
    /// When the unfinished frame in the buffer was first seen.
    partial_since: Option<Instant>,
}

impl<F: Future<Output = ()>, M: FnMut(Instant) -> F> ConnTimers<F, M> {
    fn new(config: ServerConfig, mut make: M) -> Self {
        // Not polled, so not armed, until a deadline needs it.
        let timer = Box::pin(make(Instant::now()));
        ConnTimers {
            config,
            timer,
            make,
            armed: None,
            frames: 0,
            idle_frames: 0,
            idle_deadline: None,
            partial_since: None,
        }
    }

    /// A whole frame came.
    fn frame(&mut self) {
        self.frames += 1;
        self.partial_since = None;
    }

    /// The deadline of the current wait, if any.
    fn deadline(&mut self, buffered: usize) -> Option<Instant> {
        if buffered > 0 {
            let after = self.config.frame_timeout?;
            Some(*self.partial_since.get_or_insert_with(Instant::now) + after)
        } else {
            self.partial_since = None;
            let idle = self.config.idle_timeout?;
            Some(*self.idle_deadline.get_or_insert_with(|| Instant::now() + idle))
        }
    }
}

impl<F: Future<Output = ()>, M: FnMut(Instant) -> F> Watchdog for ConnTimers<F, M> {
    fn poll_expired(&mut self, cx: &mut Context<'_>, buffered: usize) -> Poll<ReadError> {
        loop {
            let Some(want) = self.deadline(buffered) else {
                return Poll::Pending;
            };
            if self.armed.is_none_or(|armed| armed > want) {
                self.timer.set((self.make)(want));
                self.armed = Some(want);
            }
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.armed = None;
            let now = Instant::now();
            if buffered > 0 {
                if let (Some(after), Some(since)) = (self.config.frame_timeout, self.partial_since) {
                    if now >= since + after {
                        return Poll::Ready(ReadError::FrameTimeout { after, buffered });
                    }
                }
            } else if let Some(idle) = self.config.idle_timeout {
                if self.frames == self.idle_frames && self.idle_deadline.is_some_and(|d| now >= d) {
                    return Poll::Ready(ReadError::Idle(idle));
                }
                if self.frames != self.idle_frames {
                    // Not idle since the deadline was set: a new period.
                    self.idle_frames = self.frames;
                    self.idle_deadline = Some(now + idle);
                }
            }
        }
    }
}

/// Serves requests on one connection until the peer closes it, with no
/// idle or frame timeout (see [`serve_with`]).
pub async fn serve<T: Transport, S: Service>(stream: &T, service: &S) -> Result<(), ConnectionError> {
    serve_with(stream, service, ServerConfig::default()).await
}

/// Serves requests on one connection until the peer closes it, or a
/// timeout of `config` closes it. Bad input ends only this connection, with
/// an error naming the peer and the reason (a malformed frame is answered
/// with a Malformed error frame first); logging it is the caller's choice
/// (one line per connection, rate-limited as it sees fit).
pub async fn serve_with<T: Transport, S: Service>(
    stream: &T,
    service: &S,
    config: ServerConfig,
) -> Result<(), ConnectionError> {
    let mut timers = ConnTimers::new(config, |at| stream.sleep_until(at));
    let mut reader = FrameReader::new();
    let mut out = BytesMut::with_capacity(REPLY_BYTES_MIN);
    let mut replier = Replier {
        headers: BytesMut::with_capacity(2 * REPLIES_PER_SEND_MAX * FRAME_HEADER_BYTES),
        gather: Some(Gather::with_capacity(2 * REPLIES_PER_SEND_MAX)),
        queued: 0,
    };
    let send_failed = |source| ConnectionError::Send {
        peer: stream.peer(),
        source,
    };
    loop {
        // Answer everything already buffered, then send the answers together
        // before waiting for more.
        let next = match reader.try_next() {
            Ok(Some(frame)) => Ok(Some(frame)),
            Ok(None) => {
                replier.flush(stream).await.map_err(send_failed)?;
                reader.next_watched(stream, &mut timers).await
            }
            Err(e) => Err(e),
        };
        let frame = match next {
            Ok(Some(frame)) => frame,
            Ok(None) => return replier.flush(stream).await.map_err(send_failed),
            Err(e) => {
                if let ReadError::Malformed(decode) = &e {
                    // Tell the peer why before closing: framing is lost.
                    let status = Status::new(StatusCode::Malformed, decode.to_string());
                    out.clear();
                    replier.queue_error(&mut out, &Header::request(0, 0, 0, 0), &status);
                }
                let _ = replier.flush(stream).await;
                return Err(match e {
                    ReadError::Idle(after) => ConnectionError::Idle {
                        peer: stream.peer(),
                        after,
                    },
                    ReadError::FrameTimeout { after, buffered } => ConnectionError::FrameTimeout {
                        peer: stream.peer(),
                        after,
                        buffered,
                    },
                    e => ConnectionError::Read {
                        peer: stream.peer(),
                        source: e.into(),
                    },
                });
            }
        };
        timers.frame();
        let header = frame.header;
        match header.kind {
            Kind::Request => {}
            // A cancel can only concern a request already answered (requests
            // on a connection are handled in order), so there is nothing to do.
            Kind::Cancel => continue,
            kind => {
                let _ = replier.flush(stream).await;
                return Err(ConnectionError::UnexpectedFrame {
                    peer: stream.peer(),
                    kind,
                    request_id: header.request_id,
                });
            }
        }
        let started = Instant::now();
        if out.capacity() < REPLY_BYTES_MIN {
            out.reserve(REPLY_BYTES_MIN);
        }
        // A handler that panics fails its call, not the connection or the core.
        let result = match crate::executor::catch_unwind(service.call(header.method, frame.payload, &mut out)).await {
            Ok(result) => result,
            Err(payload) => {
                out.clear();
                let message = crate::executor::panic_message(&*payload);
                tracing::error!(method = header.method, panic = %message, "an RPC handler panicked");
                Err(Status::handler(format!("the handler panicked: {message}")))
            }
        };
        let late = header.deadline_us > 0 && started.elapsed() > Duration::from_micros(u64::from(header.deadline_us));
        let result = match result {
            _ if late => Err(Status::new(
                StatusCode::DeadlineExceeded,
                "the handler finished after the call's deadline",
            )),
            Ok(reply) => {
                let payload = match reply {
                    Reply::Written => out.split().freeze(),
                    Reply::Bytes(bytes) => {
                        out.clear();
                        bytes
                    }
                };
                if payload.len() > FRAME_PAYLOAD_BYTES_MAX {
                    Err(Status::new(
                        StatusCode::TooLarge,
                        format!(
                            "a reply of {} bytes exceeds the {FRAME_PAYLOAD_BYTES_MAX}-byte limit on a frame's payload (FRAME_PAYLOAD_BYTES_MAX)",
                            payload.len()
                        ),
                    ))
                } else {
                    Ok(payload)
                }
            }
            Err(status) => Err(status),
        };
        match result {
            Ok(payload) => replier.queue(
                Header::response(header.request_id, header.method, payload.len() as u32),
                payload,
            ),
            Err(status) => {
                out.clear();
                replier.queue_error(&mut out, &header, &status);
            }
        }
        if replier.queued >= REPLIES_PER_SEND_MAX {
            replier.flush(stream).await.map_err(send_failed)?;
        }
    }
}
