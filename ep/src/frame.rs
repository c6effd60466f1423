//! The σEP frame: a fixed 32-byte little-endian header read in place
//! (zerocopy), followed by the payload.
//!
//! ```text
//!  0      2   3   4       6       8          12         16         20         24                32
//!  +------+---+---+-------+-------+----------+----------+----------+----------+-----------------+
//!  |magic |ver|kind| flags|status | len      | method   | deadline | reserved | request id      |
//!  |CF 83 | 1 |   |  u16  |  u16  |  u32     |  u32     |  u32 µs  |  u32 = 0 |  u64            |
//!  +------+---+---+-------+-------+----------+----------+----------+----------+-----------------+
//! ```
//!
//! The magic is σ in UTF-8. `len` counts payload bytes only. `status` is 0
//! except on error frames. `deadline` is the time budget the caller grants,
//! in µs from when the frame is sent; 0 means none. Every field is checked
//! before use; nothing here panics on bad input.

use crate::error::DecodeError;
use crate::limits::{FRAME_HEADER_BYTES, FRAME_PAYLOAD_BYTES_MAX, METHOD_ID_MAX};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// σ in UTF-8.
pub const MAGIC: [u8; 2] = [0xCF, 0x83];
/// The only protocol version this code speaks.
pub const VERSION: u8 = 1;

/// The header exactly as it lies on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct WireHeader {
    magic: [u8; 2],
    version: u8,
    kind: u8,
    flags: U16,
    status: U16,
    len: U32,
    method: U32,
    deadline_us: U32,
    reserved: U32,
    request_id: U64,
}

const _: () = assert!(std::mem::size_of::<WireHeader>() == FRAME_HEADER_BYTES);

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// An RPC request: `method`, `request_id`, optional `deadline_us`.
    Request = 1,
    /// The successful response to the request with the same id.
    Response = 2,
    /// The failed response to the request with the same id; `status` says
    /// why and the payload is a UTF-8 message.
    Error = 3,
    /// The caller no longer wants the response to `request_id`.
    Cancel = 4,
    /// Reserved for the σEP handshake (realm preamble).
    Handshake = 5,
    /// Reserved for the namespace protocol.
    Namespace = 6,
    /// Reserved for the proc protocol.
    Proc = 7,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Error,
            4 => Kind::Cancel,
            5 => Kind::Handshake,
            6 => Kind::Namespace,
            7 => Kind::Proc,
            _ => return None,
        })
    }
}

/// Flag bits. None are defined yet; any set bit is refused, so that a later
/// version can give them meaning safely.
pub const FLAGS_KNOWN: u16 = 0;

/// Why a call failed, as carried on the wire in error frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum StatusCode {
    /// No handler for the method.
    UnknownMethod = 1,
    /// The deadline passed before a response.
    DeadlineExceeded = 2,
    /// The handler returned an error.
    Handler = 3,
    /// The request or response exceeds the frame limit.
    TooLarge = 4,
    /// The peer sent something that does not parse.
    Malformed = 5,
    /// The caller cancelled the call.
    Cancelled = 6,
    /// The server refuses more work right now.
    Overloaded = 7,
    /// The connection is gone.
    Unavailable = 8,
}

impl StatusCode {
    /// The code for a wire value.
    pub fn from_u16(value: u16) -> Option<StatusCode> {
        Some(match value {
            1 => StatusCode::UnknownMethod,
            2 => StatusCode::DeadlineExceeded,
            3 => StatusCode::Handler,
            4 => StatusCode::TooLarge,
            5 => StatusCode::Malformed,
            6 => StatusCode::Cancelled,
            7 => StatusCode::Overloaded,
            8 => StatusCode::Unavailable,
            _ => return None,
        })
    }
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StatusCode::UnknownMethod => "unknown method",
            StatusCode::DeadlineExceeded => "deadline exceeded",
            StatusCode::Handler => "handler error",
            StatusCode::TooLarge => "too large",
            StatusCode::Malformed => "malformed",
            StatusCode::Cancelled => "cancelled",
            StatusCode::Overloaded => "overloaded",
            StatusCode::Unavailable => "unavailable",
        })
    }
}

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// What the frame is.
    pub kind: Kind,
    /// Flag bits (all known).
    pub flags: u16,
    /// The error status (error frames only; `None` otherwise).
    pub status: Option<StatusCode>,
    /// Payload bytes following the header.
    pub len: u32,
    /// The method (requests; echoed in responses).
    pub method: u32,
    /// Time budget in µs, 0 for none.
    pub deadline_us: u32,
    /// Matches responses to requests.
    pub request_id: u64,
}

impl Header {
    /// A request header.
    pub fn request(request_id: u64, method: u32, len: u32, deadline_us: u32) -> Header {
        Header {
            kind: Kind::Request,
            flags: 0,
            status: None,
            len,
            method,
            deadline_us,
            request_id,
        }
    }

    /// A response header.
    pub fn response(request_id: u64, method: u32, len: u32) -> Header {
        Header {
            kind: Kind::Response,
            flags: 0,
            status: None,
            len,
            method,
            deadline_us: 0,
            request_id,
        }
    }

    /// An error header; the payload is a UTF-8 message of `len` bytes.
    pub fn error(request_id: u64, method: u32, status: StatusCode, len: u32) -> Header {
        Header {
            kind: Kind::Error,
            flags: 0,
            status: Some(status),
            len,
            method,
            deadline_us: 0,
            request_id,
        }
    }

    /// A cancel header.
    pub fn cancel(request_id: u64) -> Header {
        Header {
            kind: Kind::Cancel,
            flags: 0,
            status: None,
            len: 0,
            method: 0,
            deadline_us: 0,
            request_id,
        }
    }

    /// The wire form. Checks the invariants a sender must keep (a bug if not).
    pub fn to_wire(&self) -> WireHeader {
        assert!(
            self.len as usize <= FRAME_PAYLOAD_BYTES_MAX,
            "frame payload of {} bytes",
            self.len
        );
        assert!(self.method <= METHOD_ID_MAX, "method id {}", self.method);
        assert_eq!(
            self.status.is_some(),
            self.kind == Kind::Error,
            "status only on error frames"
        );
        WireHeader {
            magic: MAGIC,
            version: VERSION,
            kind: self.kind as u8,
            flags: U16::new(self.flags),
            status: U16::new(self.status.map_or(0, |s| s as u16)),
            len: U32::new(self.len),
            method: U32::new(self.method),
            deadline_us: U32::new(self.deadline_us),
            reserved: U32::new(0),
            request_id: U64::new(self.request_id),
        }
    }

    /// Writes the wire form into `out`.
    pub fn encode(&self, out: &mut [u8; FRAME_HEADER_BYTES]) {
        out.copy_from_slice(self.to_wire().as_bytes());
    }

    /// Parses and checks the header at the start of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Header, DecodeError> {
        let Ok((wire, _)) = WireHeader::ref_from_prefix(bytes) else {
            return Err(DecodeError::Truncated {
                have: bytes.len(),
                need: FRAME_HEADER_BYTES,
            });
        };
        Header::from_wire(wire)
    }

    /// Checks a header read in place.
    pub fn from_wire(wire: &WireHeader) -> Result<Header, DecodeError> {
        if wire.magic != MAGIC {
            return Err(DecodeError::BadMagic(wire.magic));
        }
        if wire.version != VERSION {
            return Err(DecodeError::UnsupportedVersion(wire.version));
        }
        let kind = Kind::from_u8(wire.kind).ok_or(DecodeError::UnknownKind(wire.kind))?;
        let flags = wire.flags.get();
        if flags & !FLAGS_KNOWN != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let len = wire.len.get();
        if len as usize > FRAME_PAYLOAD_BYTES_MAX {
            return Err(DecodeError::TooLarge {
                len: len as usize,
                max: FRAME_PAYLOAD_BYTES_MAX,
            });
        }
        let method = wire.method.get();
        if method > METHOD_ID_MAX {
            return Err(DecodeError::MethodOutOfRange(method));
        }
        if wire.reserved.get() != 0 {
            return Err(DecodeError::ReservedNotZero);
        }
        let raw_status = wire.status.get();
        let status = match (kind, raw_status) {
            (Kind::Error, code) => Some(StatusCode::from_u16(code).ok_or(DecodeError::UnknownStatus(code))?),
            (_, 0) => None,
            (_, code) => return Err(DecodeError::StatusOnNonError(code)),
        };
        Ok(Header {
            kind,
            flags,
            status,
            len,
            method,
            deadline_us: wire.deadline_us.get(),
            request_id: wire.request_id.get(),
        })
    }
}
