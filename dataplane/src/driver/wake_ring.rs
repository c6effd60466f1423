//! The wake ring: a second, small io_uring of a core with wake polls on
//! (`CoreBuilder::wake_polls`), holding nothing but its Unix streams' wake
//! polls (`op/recv_multi.rs`), each a multishot POLL_ADD(POLLOUT).
//!
//! **Why a ring of their own.** A wake poll is there to wake a parked core
//! when the peer takes what the core sent, so that the kernel's wake-up
//! overlaps the peer's work (`docs/parked-rtt.md`). On the core's own ring
//! (DEFER_TASKRUN) that wake-up also ended the park: after a wake-up, a
//! waiting enter runs only as many task-work items as it waits for
//! (`io_run_local_work(ctx, nr_wait, nr_wait)` in io_cqring_wait), so it
//! returned with the poll's completion alone and the core had to enter
//! again for the reply that had come meanwhile: two enters per message.
//! This ring has no DEFER_TASKRUN (COOP_TASKRUN instead), so a wake poll's
//! task work is the thread's plain task work: it wakes the thread parked in
//! the core ring's enter, and that enter's wait loop runs it and goes on
//! waiting for a completion of its own ring, usually the reply, which by
//! then is there. One enter per message, as epoll_wait(2) gives tokio
//! (tests/wake_poll.rs shows both kernel behaviours).
//!
//! **Bounded apart.** The core ring's completion bound (`limits.rs`) holds
//! without wake polls. This ring's completions are dropped at every poll
//! of the core's driver, also one that finds nothing on the core ring. When its queue is full the kernel ends a multishot poll
//! instead of overflowing (tests/wake_poll.rs); the stream then goes
//! without, and what overflows (a final completion per poll and per
//! removal) waits in this ring's own overflow list until the next reap
//! flushes it. Nothing of it reaches the core ring.
//!
//! The ring is created disabled, restricted to POLL_ADD and POLL_REMOVE
//! with no SQE flags and no register operations, then enabled on the
//! core's thread (its single issuer). Every submission is sent at once: it
//! happens once when a stream starts receiving and once when it stops.

use crate::limits;
use io_uring::{cqueue, opcode, register::Restriction, types, IoUring};
use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;

/// user_data bit of a removal's own completion (the rest is the poll's id).
const REMOVE_BIT: u64 = 1 << 63;

pub(crate) struct WakeRing {
    ring: RefCell<IoUring>,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    /// The next poll's id (its user_data); ids are never reused, so that
    /// a removal can only name its own poll.
    next_id: u64,
    /// Ids of the polls armed and neither removed nor ended by the kernel
    /// (at most `limits::WAKE_POLLS_MAX`).
    live: Vec<u64>,
    /// Completions of live polls (each a write-space wake-up), dropped.
    completions: u64,
    /// Polls the kernel ended (full queue or an error).
    ended: u64,
}

impl WakeRing {
    /// The ring, set up on the core's thread.
    pub(crate) fn new() -> io::Result<WakeRing> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_r_disabled()
            .setup_cqsize(limits::WAKE_RING_CQ_ENTRIES)
            .build(limits::WAKE_RING_ENTRIES)?;
        ring.submitter().register_restrictions(&mut [
            Restriction::sqe_op(opcode::PollAdd::CODE),
            Restriction::sqe_op(opcode::PollRemove::CODE),
            Restriction::sqe_flags_allowed(0),
        ])?;
        ring.submitter().register_enable_rings()?;
        Ok(WakeRing {
            ring: RefCell::new(ring),
            state: RefCell::new(State {
                live: Vec::with_capacity(limits::WAKE_POLLS_MAX),
                ..State::default()
            }),
        })
    }

    /// Arms a wake poll on `fd` (the kernel takes its own reference on the
    /// socket, so the poll never outlives it unknowingly: it ends with the
    /// removal). `None` when `limits::WAKE_POLLS_MAX` are armed or the
    /// submission failed: the stream goes without.
    pub(crate) fn arm(&self, fd: RawFd) -> Option<u64> {
        let id = {
            let mut state = self.state.borrow_mut();
            if state.live.len() >= limits::WAKE_POLLS_MAX {
                return None;
            }
            let id = state.next_id;
            state.next_id += 1;
            id
        };
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .multi(true)
            .build()
            .user_data(id);
        if let Err(e) = self.submit(entry) {
            tracing::debug!(error = %e, "a wake poll could not be armed; this stream goes without");
            return None;
        }
        self.state.borrow_mut().live.push(id);
        Some(id)
    }

    /// Removes the wake poll `id` (armed by `arm`); one the kernel already
    /// ended is just forgotten.
    pub(crate) fn disarm(&self, id: u64) {
        let live = {
            let mut state = self.state.borrow_mut();
            match state.live.iter().position(|&l| l == id) {
                Some(i) => {
                    state.live.swap_remove(i);
                    true
                }
                None => false,
            }
        };
        if !live {
            return;
        }
        let entry = opcode::PollRemove::new(id).build().user_data(REMOVE_BIT | id);
        if let Err(e) = self.submit(entry) {
            // The poll stays until the ring goes (its fd closes with the
            // core), holding a reference on the socket: logged, not fatal.
            tracing::warn!(error = %e, "a wake poll could not be removed; it stays until the core stops");
        }
    }

    /// Pushes one entry and submits it now.
    fn submit(&self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        let mut ring = self.ring.borrow_mut();
        // SAFETY: the entry holds no pointers (a poll on an fd, or a
        // removal by user_data).
        if unsafe { ring.submission().push(&entry) }.is_err() {
            // Every push is submitted at once, so the queue is only full if
            // a submission failed before; submit what is there first.
            ring.submit()?;
            // SAFETY: as above.
            unsafe { ring.submission().push(&entry) }
                .map_err(|_| io::Error::new(io::ErrorKind::WouldBlock, "wake ring submission queue full"))?;
        }
        loop {
            match ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops the completions that came, noting polls the kernel ended. A
    /// look at two ring indices when there are none.
    pub(crate) fn reap(&self) {
        let mut ring = self.ring.borrow_mut();
        if ring.submission().cq_overflow() {
            // What the kernel kept aside (a final completion per poll or
            // removal) reaches the queue only through an enter with
            // GETEVENTS; a failure leaves it for the next reap.
            // SAFETY: no argument.
            let _ = unsafe { ring.submitter().enter::<libc::sigset_t>(0, 0, 1, None) };
        }
        let mut completion = ring.completion();
        if completion.is_empty() {
            return;
        }
        let mut state = self.state.borrow_mut();
        for cqe in &mut completion {
            let (id, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
            if id & REMOVE_BIT != 0 {
                continue;
            }
            if cqueue::more(flags) {
                state.completions += 1;
                continue;
            }
            // A final completion: removed (its id is gone already), or
            // ended by the kernel (a mask: the queue was full; an error).
            if let Some(i) = state.live.iter().position(|&l| l == id) {
                state.live.swap_remove(i);
                state.ended += 1;
                tracing::debug!(res, "the kernel ended a wake poll; its stream goes without");
            }
        }
    }

    /// Wake polls armed now.
    pub(crate) fn armed(&self) -> usize {
        self.state.borrow().live.len()
    }

    /// Completions of live polls so far.
    pub(crate) fn completions(&self) -> u64 {
        self.state.borrow().completions
    }

    /// Polls the kernel ended so far.
    pub(crate) fn ended(&self) -> u64 {
        self.state.borrow().ended
    }
}
