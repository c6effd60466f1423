//! Reads whole frames off a stream into one reusable receive buffer.

use super::Transport;
use crate::limits;
use bytes::BytesMut;
use sigma_ep::limits::FRAME_HEADER_BYTES;
use sigma_ep::{DecodeError, Frame};

/// Why no frame came.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("malformed frame: {0}")]
    Malformed(#[from] DecodeError),
    #[error("connection closed in the middle of a frame ({0} bytes buffered)")]
    TruncatedAtEof(usize),
    #[error("receive failed: {0}")]
    Io(#[from] std::io::Error),
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
            let spare = self.buf.split_off(self.buf.len());
            let (res, spare) = stream.recv_buf(spare).await;
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
