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

use crate::sync::{fence, AtomicBool, AtomicUsize, Ordering};

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

/// Notifications sent to one core (MSG_RING completions, eventfd writes)
/// that the core has not observed yet, at most `max`
/// (`limits::WAKES_UNOBSERVED_MAX` for a core). A waker counts one in
/// before it sends; the core counts them out as it reaps them. When `max`
/// are unobserved, a waker sends nothing: the core has that many still to
/// observe, and after observing them it looks for work before it parks
/// again. That the look sees the suppressed waker's work rests on the
/// park handshake's fences ([`ParkFlag`]: a waker reaches `try_send` only
/// through `wake_if_parked`): either the core's next `prepare_park` comes
/// after the waker's fence, and its look sees the work, or before it, and
/// the waker's `try_send` sees the count-outs that preceded it. So a core's
/// completion queue never holds more than `max` wake-ups. tests/loom.rs
/// checks it (a count never counted out deadlocks the model).
#[derive(Debug)]
pub struct WakeCount {
    max: usize,
    unobserved: AtomicUsize,
    /// Wake-ups not sent because the bound was reached.
    suppressed: AtomicUsize,
}

impl Default for WakeCount {
    fn default() -> Self {
        WakeCount::new(crate::limits::WAKES_UNOBSERVED_MAX as usize)
    }
}

impl WakeCount {
    /// At most `max` notifications unobserved.
    pub fn new(max: usize) -> Self {
        WakeCount {
            max,
            unobserved: AtomicUsize::new(0),
            suppressed: AtomicUsize::new(0),
        }
    }

    /// A waker, inside `ParkFlag::wake_if_parked`: whether it may send one
    /// more notification (counted in if so). One read-modify-write, so that
    /// wakers racing for the last place cannot both take it.
    #[inline]
    pub fn try_send(&self) -> bool {
        let max = self.max;
        let before = self
            .unobserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(if n >= max { n } else { n + 1 })
            })
            .unwrap_or_else(|n| n);
        if before >= max {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A sender that counted one in and could not send it after all.
    pub fn unsend(&self) {
        self.unobserved.fetch_sub(1, Ordering::AcqRel);
    }

    /// The core: it observed `n` notifications (reaped a MSG_RING wake-up,
    /// or drained that many eventfd writes); it looks for work after this.
    #[inline]
    pub fn observed(&self, n: u64) {
        if n == 0 {
            return;
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        // Saturating: eventfd writes from outside σ (none are expected)
        // must not wrap the count.
        let _ = self
            .unobserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
    }

    /// Notifications sent and not yet observed.
    pub fn unobserved(&self) -> usize {
        self.unobserved.load(Ordering::Relaxed)
    }

    /// Wake-ups not sent because `max` were in flight.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed) as u64
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wake_count_lets_at_most_the_bound_through_until_observed() {
        const MAX: usize = 64;
        let count = Arc::new(WakeCount::new(MAX));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let count = count.clone();
                std::thread::spawn(move || (0..100).filter(|_| count.try_send()).count())
            })
            .collect();
        let sent: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(sent, MAX);
        assert_eq!(count.unobserved(), MAX);
        assert_eq!(count.suppressed(), 400 - MAX as u64);
        count.observed(3);
        assert!(count.try_send() && count.try_send() && count.try_send() && !count.try_send());
        count.unsend();
        assert_eq!(count.unobserved(), MAX - 1);
        // More observed than sent (an eventfd written from outside) saturates.
        count.observed(1 << 40);
        assert_eq!(count.unobserved(), 0);
    }
}
