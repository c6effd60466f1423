//! MSG_RING: posts a completion into another core's ring, waking it.

use io_uring::{opcode, squeue, types};
use std::os::fd::RawFd;

/// The entry that posts a completion with `user_data` into `target_ring_fd`.
pub(crate) fn entry(target_ring_fd: RawFd, user_data: u64) -> squeue::Entry {
    opcode::MsgRingData::new(types::Fd(target_ring_fd), 0, user_data, None).build()
}
