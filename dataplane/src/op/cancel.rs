//! ASYNC_CANCEL: how a dropped operation is withdrawn from the kernel.
//!
//! The lifecycle of a single-shot operation's slot is
//! `Waiting → Completed → Free` when its future completes, and
//! `Waiting → Ignored → Free` when its future is dropped first: the drop
//! moves the owned buffers into the slot and pushes an AsyncCancel for the
//! slot's user_data; the operation's own completion (with -ECANCELED, or its
//! real result if it won the race) frees the slot and the buffers. A
//! multishot slot goes `Multi → MultiIgnored → Free` the same way, giving
//! back each provided buffer its late completions carry.

use io_uring::{opcode, squeue};

/// The entry that cancels the operation with `user_data`.
pub(crate) fn entry(user_data: u64) -> squeue::Entry {
    opcode::AsyncCancel::new(user_data).build()
}
