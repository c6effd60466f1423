//! Named limits of the σEP protocol, units last.

/// Bytes of a frame header on the wire.
pub const FRAME_HEADER_BYTES: usize = 32;
/// The largest payload a frame may carry.
pub const FRAME_PAYLOAD_BYTES_MAX: usize = (1 << 20) - FRAME_HEADER_BYTES;
/// The largest frame (header and payload) any σEP peer may send.
pub const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + FRAME_PAYLOAD_BYTES_MAX;
/// Method ids run from 0 to this, inclusive (dense dispatch tables).
pub const METHOD_ID_MAX: u32 = 4095;
/// Bytes of the message an error frame may carry.
pub const ERROR_MESSAGE_BYTES_MAX: usize = 1024;
/// The longest deadline a request may carry, µs (about 71 minutes).
pub const DEADLINE_US_MAX: u32 = u32::MAX;

const _: () = assert!(FRAME_BYTES_MAX.is_power_of_two());
const _: () = assert!(FRAME_HEADER_BYTES % 8 == 0);
const _: () = assert!(ERROR_MESSAGE_BYTES_MAX <= FRAME_PAYLOAD_BYTES_MAX);
