//! Streaming frame decoding: splits whole frames off a receive buffer
//! without copying their payloads.

use crate::error::DecodeError;
use crate::frame::{Header, StatusCode};
use crate::limits::{ERROR_MESSAGE_BYTES_MAX, FRAME_HEADER_BYTES};
use bytes::{Buf, Bytes, BytesMut};

/// A decoded frame: its header and its payload, a slice of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The checked header.
    pub header: Header,
    /// The payload (`header.len` bytes).
    pub payload: Bytes,
}

/// Takes one whole frame off the front of `buf` if it holds one.
///
/// Returns `Ok(None)` when more bytes are needed; an error when the header is
/// bad (the connection should then be closed: framing is lost). The payload
/// is split off the buffer, not copied.
pub fn decode_frame(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let header = Header::decode(&buf[..FRAME_HEADER_BYTES])?;
    let total = FRAME_HEADER_BYTES + header.len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    buf.advance(FRAME_HEADER_BYTES);
    let payload = buf.split_to(header.len as usize).freeze();
    Ok(Some(Frame { header, payload }))
}

/// How many more bytes the frame at the front of `buf` needs, once its header
/// has arrived (for sizing the next receive); `None` before that.
pub fn bytes_wanted(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Ok(None);
    }
    let header = Header::decode(&buf[..FRAME_HEADER_BYTES])?;
    Ok(Some(
        (FRAME_HEADER_BYTES + header.len as usize).saturating_sub(buf.len()),
    ))
}

/// Checks and returns the message of an error frame's payload.
pub fn decode_error_message(payload: &[u8]) -> Result<&str, DecodeError> {
    if payload.len() > ERROR_MESSAGE_BYTES_MAX {
        return Err(DecodeError::BadErrorMessage("longer than ERROR_MESSAGE_BYTES_MAX"));
    }
    std::str::from_utf8(payload).map_err(|_| DecodeError::BadErrorMessage("not UTF-8"))
}

/// The kind of an error reply and the rest of its message: a handler's
/// error says its kind first (`not-found: no proc 7 in realm "x"`), any
/// other status is its own kind (`unknown-method`, `deadline-exceeded`,
/// ...) with the whole message. One rule for every client of sigmad.
pub fn error_kind(status: StatusCode, message: &str) -> (String, &str) {
    if status == StatusCode::Handler {
        if let Some((kind, rest)) = message.split_once(": ") {
            return (kind.to_string(), rest);
        }
    }
    (status.to_string().replace(' ', "-"), message)
}

/// Cuts an error message to the limit, at a character boundary.
pub fn truncate_error_message(message: &str) -> &str {
    truncate_at(message, ERROR_MESSAGE_BYTES_MAX)
}

/// `text` cut to at most `max` bytes, at a character boundary.
pub fn truncate_at(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handler_error_says_its_kind_first_and_another_status_is_its_kind() {
        let (kind, rest) = error_kind(StatusCode::Handler, "not-found: no proc 7 in realm \"x\"");
        assert_eq!((kind.as_str(), rest), ("not-found", "no proc 7 in realm \"x\""));
        let (kind, rest) = error_kind(StatusCode::UnknownMethod, "method 999: not served");
        assert_eq!((kind.as_str(), rest), ("unknown-method", "method 999: not served"));
        let (kind, rest) = error_kind(StatusCode::Handler, "no colon");
        assert_eq!((kind.as_str(), rest), ("handler-error", "no colon"));
    }
}
