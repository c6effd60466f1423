//! How other threads wake a parked core, and which core runs on this thread.
//!
//! A core about to park sets its [`ParkFlag`](crate::park::ParkFlag), looks
//! for work once more and parks; a thread that gives it work (a woken task,
//! a returned receive buffer) puts the work where the core looks, then calls
//! [`Unparker::wake_if_parked`]. The notification is a MSG_RING completion
//! sent from the waking thread's own ring when it runs an io_uring core, or
//! an eventfd write otherwise (both end the core's park).
//!
//! Notifications are bounded: at most `limits::WAKES_UNOBSERVED_MAX` sent
//! to a core and not yet observed by it ([`WakeCount`], `park.rs`), so that MSG_RING
//! completions count against the completion queue's bound (`limits.rs`).
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
use std::sync::Arc;

pub(crate) use crate::park::WakeCount;

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
    /// Notifications sent and not yet observed by the core.
    wakes: Arc<WakeCount>,
}

impl Unparker {
    /// The wake-up side of a new core, with a process-unique id.
    /// `wakes` is shared with the core's driver, which counts out what it
    /// observes.
    pub(crate) fn new(eventfd: OwnedFd, ring_fd: Option<OwnedFd>, wakes: Arc<WakeCount>) -> Unparker {
        Unparker {
            id: NEXT_CORE_ID.fetch_add(1, Ordering::Relaxed),
            parked: ParkFlag::new(),
            eventfd,
            ring_fd,
            wakes,
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
    pub(crate) fn wake_if_parked(self: &Arc<Self>) {
        self.parked.wake_if_parked(|| self.notify());
    }

    fn notify(self: &Arc<Self>) {
        if !self.wakes.try_send() {
            // WAKES_UNOBSERVED_MAX notifications are on their way (WakeCount).
            return;
        }
        if self.ring_fd.is_some() && try_msg_ring_from_current(self) {
            return;
        }
        self.notify_by_eventfd();
    }

    /// Wake-ups sent to this core and not yet observed by it.
    pub(crate) fn wakes_unobserved(&self) -> usize {
        self.wakes.unobserved()
    }

    /// Wake-ups not sent to this core because the bound was reached.
    pub(crate) fn wakes_suppressed(&self) -> u64 {
        self.wakes.suppressed()
    }

    /// The target ring fd of MSG_RING wake-ups (io_uring back end).
    pub(crate) fn ring_fd(&self) -> Option<RawFd> {
        self.ring_fd.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Sends the notification counted in by `try_send` through the eventfd
    /// (also what a MSG_RING that failed falls back to).
    pub(crate) fn notify_by_eventfd(&self) {
        if !crate::sys::eventfd_signal(self.eventfd.as_raw_fd()) {
            self.wakes.unsend();
        }
    }
}

/// Sends a MSG_RING wake-up to `target` from this thread's ring, if this
/// thread runs an io_uring core with room for one more operation.
fn try_msg_ring_from_current(target: &Arc<Unparker>) -> bool {
    CURRENT_DRIVER.with(|d| match &*d.borrow() {
        Some(driver) => driver.uring().is_some_and(|ring| ring.msg_ring_wake(target)),
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
