//! Named limits of the σEP protocol, units last.

/// The largest frame (header and payload) any σEP peer may send.
pub const FRAME_BYTES_MAX: usize = 1 << 20;

const _: () = assert!(FRAME_BYTES_MAX.is_power_of_two());
