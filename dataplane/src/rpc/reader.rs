//! Reads whole frames off a stream into one reusable receive buffer.

use super::Transport;
use crate::limits;
use bytes::BytesMut;
use sigma_ep::limits::FRAME_HEADER_BYTES;
use sigma_ep::{DecodeError, Frame};
use std::future::Future;
use std::task::{Context, Poll};
use std::time::Duration;

/// Why no frame came.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("malformed frame: {0}")]
    Malformed(#[from] DecodeError),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    TruncatedAtEof(usize),
    #[error("receive failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("nothing received for {0:?}")]
    Idle(Duration),
    #[error("a frame begun was not complete within {after:?} ({buffered} bytes of it buffered)")]
    FrameTimeout { after: Duration, buffered: usize },
}

/// Watches a connection while a receive waits: says when to give up.
pub(crate) trait Watchdog {
    /// Polled while a receive waits, `buffered` bytes of an unfinished
    /// frame in the buffer (0: between frames). `Ready` ends the read with
    /// that error.
    fn poll_expired(&mut self, cx: &mut Context<'_>, buffered: usize) -> Poll<ReadError>;
}

/// Never gives up.
pub(crate) struct Patient;

impl Watchdog for Patient {
    fn poll_expired(&mut self, _: &mut Context<'_>, _: usize) -> Poll<ReadError> {
        Poll::Pending
    }
}

/// A receive buffer and the frames in it. Frame payloads are split off the
/// buffer (no copy); the space comes back once they are dropped.
pub(crate) struct FrameReader {
    buf: BytesMut,
}

impl FrameReader {
    pub(crate) fn new() -> FrameReader {
        FrameReader {
            buf: BytesMut::with_capacity(limits::RPC_RECV_BYTES),
        }
    }

    /// A whole frame already in the buffer, without receiving.
    pub(crate) fn try_next(&mut self) -> Result<Option<Frame>, ReadError> {
        Ok(sigma_ep::decode_frame(&mut self.buf)?)
    }

    /// The next frame; `None` at a clean EOF between frames.
    pub(crate) async fn next<T: Transport>(&mut self, stream: &T) -> Result<Option<Frame>, ReadError> {
        self.next_watched(stream, &mut Patient).await
    }

    /// As [`next`](FrameReader::next), giving up when `watchdog` says so.
    /// The receive in flight then is dropped, with whatever it would have
    /// received: the caller closes the connection.
    pub(crate) async fn next_watched<T: Transport>(
        &mut self,
        stream: &T,
        watchdog: &mut impl Watchdog,
    ) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = sigma_ep::decode_frame(&mut self.buf)? {
                return Ok(Some(frame));
            }
            // Room for the rest of the frame in flight, or a chunk of the next.
            let wanted = sigma_ep::codec::bytes_wanted(&self.buf)?.unwrap_or(FRAME_HEADER_BYTES);
            let want = wanted.max(limits::RPC_RECV_BYTES_MIN);
            if self.buf.capacity() - self.buf.len() < want {
                // `reserve` reuses the allocation in place (moving the partial
                // frame to its front) when no earlier payload still points into
                // it. Yield once first, so that the task that took the last
                // payload can finish with it; otherwise a new buffer is allocated.
                crate::yield_now().await;
                self.buf.reserve(want);
            }
            let buffered = self.buf.len();
            let spare = self.buf.split_off(buffered);
            let mut recv = std::pin::pin!(stream.recv_buf(spare));
            let (res, spare) = std::future::poll_fn(|cx| {
                if let Poll::Ready(done) = recv.as_mut().poll(cx) {
                    return Poll::Ready(Ok(done));
                }
                watchdog.poll_expired(cx, buffered).map(Err)
            })
            .await?;
            self.buf.unsplit(spare);
            match res {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(ReadError::TruncatedAtEof(self.buf.len())),
                Ok(_) => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}
