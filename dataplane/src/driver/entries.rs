//! Entries the driver itself submits: ASYNC_CANCEL for dropped operations
//! and MSG_RING for cross-core wake-ups.
//!
//! The lifecycle of a single-shot operation's slot is
//! `Waiting → Completed → Free` when its future completes, and
//! `Waiting → Ignored → Free` when its future is dropped first: the drop
//! moves the owned buffers into the slot and pushes an AsyncCancel for the
//! slot's user_data; the operation's own completion (with -ECANCELED, or its
//! real result if it won the race) frees the slot and the buffers. A
//! multishot slot goes `Multi → MultiIgnored → Free` the same way, giving
//! back each provided buffer its late completions carry.

use io_uring::{opcode, squeue, types};
use std::os::fd::RawFd;

/// The entry that cancels the operation with `user_data`.
pub(crate) fn cancel(user_data: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(user_data).build()
}

/// The entry that posts a completion with `user_data` into `target_ring_fd`,
/// waking the core that waits on that ring.
pub(crate) fn msg_ring(target_ring_fd: RawFd, user_data: u64) -> squeue::Entry {
    opcode::MsgRingData::new(types::Fd(target_ring_fd), 0, user_data, None).build()
}
