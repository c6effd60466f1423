//! The park handshake between a core and the threads that wake it.
//!
//! A core about to sleep in the kernel sets `parked`, then looks once more
//! for work (its remote wake queue, returned buffers, ready tasks), and
//! parks only if it found none. A thread that gives it work first puts the
//! work where the core looks, then checks `parked` and, if set, notifies
//! the core (MSG_RING or eventfd). A SeqCst fence on each side, between its
//! write and its read, makes it impossible for both reads to miss the other
//! side's write: either the core sees the work, or the waker sees the core
//! parked. Without either fence both may miss (a store-buffer race), and
//! the core sleeps with work queued. tests/loom.rs checks this very type.

use crate::sync::{fence, AtomicBool, Ordering};

/// Whether a core is parked or about to park.
#[derive(Debug)]
pub struct ParkFlag {
    parked: AtomicBool,
}

impl Default for ParkFlag {
    fn default() -> Self {
        Self::new()
    }
}

impl ParkFlag {
    /// A flag for a core that is running.
    pub fn new() -> Self {
        ParkFlag {
            parked: AtomicBool::new(false),
        }
    }

    /// The core, before its last look for work: from here on, wakers
    /// notify it. Follow with that look; then park if it found nothing, or
    /// [`unpark`](Self::unpark).
    #[inline]
    pub fn prepare_park(&self) {
        self.parked.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The core, awake again (or not parking after all).
    #[inline]
    pub fn unpark(&self) {
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Another thread, after it put work where the core looks before it
    /// parks: calls `notify` if the core is parked (or about to be).
    #[inline]
    pub fn wake_if_parked(&self, notify: impl FnOnce()) {
        fence(Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            notify();
        }
    }
}
