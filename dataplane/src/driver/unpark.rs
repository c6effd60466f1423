//! How other threads wake a parked core, and which core runs on this thread.
//!
//! A core about to park sets its [`ParkFlag`](crate::park::ParkFlag), looks
//! for work once more and parks; a thread that gives it work (a woken task,
//! a returned receive buffer) puts the work where the core looks, then calls
//! [`Unparker::wake_if_parked`]. The notification is a MSG_RING completion
//! sent from the waking thread's own ring when it runs an io_uring core, or
//! an eventfd write otherwise (both end the core's park).
//!
//! This sits in the driver layer because the receive-buffer pool, which is
//! part of the driver, wakes its core when a buffer comes back from another
//! thread; the executor's remote wake queue builds on it.

use super::Driver;
use crate::park::ParkFlag;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT_CORE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The id of the core whose `block_on` runs on this thread (0: none);
    /// a cheap test for paths that run on every received chunk and wake.
    static CURRENT_CORE_ID: Cell<u64> = const { Cell::new(0) };
    /// The driver of that core: MSG_RING wake-ups go out through its ring.
    static CURRENT_DRIVER: RefCell<Option<Rc<Driver>>> = const { RefCell::new(None) };
}

/// The part of a core that any thread may use to wake it.
pub(crate) struct Unparker {
    id: u64,
    parked: ParkFlag,
    /// Written by other threads to wake this core from a park.
    eventfd: OwnedFd,
    /// A duplicate of the core's ring fd (io_uring back end), the target of
    /// MSG_RING wake-ups. Being a duplicate, it keeps the ring alive for as
    /// long as a waker may send to it, even after the core stopped.
    ring_fd: Option<OwnedFd>,
}

impl Unparker {
    /// The wake-up side of a new core, with a process-unique id.
    pub(crate) fn new(eventfd: OwnedFd, ring_fd: Option<OwnedFd>) -> Unparker {
        Unparker {
            id: NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed),
            parked: ParkFlag::new(),
            eventfd,
            ring_fd,
        }
    }

    /// The core's process-unique id.
    #[inline]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Whether the calling thread is this core's, inside its `block_on`.
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        CURRENT_CORE_ID.with(|c| c.get() == self.id)
    }

    /// The core, before its last look for work (`park.rs`).
    #[inline]
    pub(crate) fn prepare_park(&self) {
        self.parked.prepare_park();
    }

    /// The core, awake again (or not parking after all).
    #[inline]
    pub(crate) fn unpark(&self) {
        self.parked.unpark();
    }

    /// Called by another thread after it put work where the core looks
    /// before it parks: wakes the core if it is parked. Either the core sees
    /// the work or this thread sees it parked (`park.rs`, modelled in
    /// tests/loom.rs).
    #[inline]
    pub(crate) fn wake_if_parked(&self) {
        self.parked.wake_if_parked(|| self.notify());
    }

    fn notify(&self) {
        if let Some(ring_fd) = &self.ring_fd {
            if try_msg_ring_from_current(ring_fd.as_raw_fd()) {
                return;
            }
        }
        crate::sys::eventfd_signal(self.eventfd.as_raw_fd());
    }
}

/// Sends a MSG_RING wake-up to `target_ring_fd` from this thread's ring, if
/// this thread runs an io_uring core with room for one more operation.
fn try_msg_ring_from_current(target_ring_fd: RawFd) -> bool {
    CURRENT_DRIVER.with(|d| match &*d.borrow() {
        Some(driver) => driver.uring().is_some_and(|ring| ring.msg_ring_wake(target_ring_fd)),
        None => false,
    })
}

/// Makes the core `id` with `driver` this thread's current one until the
/// returned guard drops.
pub(crate) fn enter(id: u64, driver: Rc<Driver>) -> Entered {
    CURRENT_CORE_ID.with(|c| c.set(id));
    CURRENT_DRIVER.with(|d| *d.borrow_mut() = Some(driver));
    Entered(())
}

/// This thread's core stays current while this lives.
pub(crate) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        CURRENT_DRIVER.with(|d| d.borrow_mut().take());
        CURRENT_CORE_ID.with(|c| c.set(0));
    }
}
