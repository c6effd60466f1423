//! The protocol's error type: what a decoder found wrong, and where.

/// Why bytes did not decode. Every decoder returns one of these for input
/// it cannot parse, and never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the structure needs.
    #[error("truncated: {have} bytes, need {need}")]
    Truncated {
        /// Bytes available.
        have: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The frame does not start with σ's magic.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A protocol version this code does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// A frame kind this code does not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flag bits this code does not know.
    #[error("unknown flags {0:#06x}")]
    UnknownFlags(u16),
    /// A length beyond the limit.
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The length announced.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A method id beyond the method space.
    #[error("method id {0} out of range")]
    MethodOutOfRange(u32),
    /// The reserved field is not zero.
    #[error("reserved header field is not zero")]
    ReservedNotZero,
    /// An error frame with a status this code does not know.
    #[error("unknown status code {0}")]
    UnknownStatus(u16),
    /// A status on a frame that is not an error frame.
    #[error("status {0} on a frame that is not an error")]
    StatusOnNonError(u16),
    /// An error message that is not UTF-8 or too long.
    #[error("bad error message: {0}")]
    BadErrorMessage(&'static str),
    /// A field that does not parse.
    #[error("bad field: {0}")]
    BadField(&'static str),
    /// A typed message whose bytes do not have its layout.
    #[error("message of {have} bytes does not fit {type_name} ({need} bytes)")]
    BadMessage {
        /// The message type.
        type_name: &'static str,
        /// Bytes received.
        have: usize,
        /// Bytes its layout needs.
        need: usize,
    },
}
