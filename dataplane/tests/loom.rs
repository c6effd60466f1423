//! loom models of the cross-core synchronization: the SPSC channel
//! (`channel.rs`), the park handshake and the bound on wake-ups
//! (`park.rs`). Built and run only
//! with `RUSTFLAGS="--cfg loom"`, where the crate's sync facade
//! (`sync.rs`) takes its atomics, fences, Mutex, Arc and UnsafeCell from
//! loom, so the code checked is the code that runs:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p sigma-dataplane --release --test loom
//! ```
//!
//! (scripts/models.sh runs them.) Each model explores every interleaving
//! up to `LOOM_MAX_PREEMPTIONS` preemptions (default here: 3) and, for
//! relaxed accesses, the values the memory model lets a load see. A lost
//! wake-up shows up as a deadlock (every thread blocked), an access to a
//! slot without a happens-before edge as a causality violation, a value
//! lost or seen twice as a failed assertion.
#![cfg(loom)]

use loom::future::block_on;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use sigma_dataplane::channel::{channel, TrySendError};
use sigma_dataplane::{ParkFlag, WakeCount};

/// Runs `f` under loom with the preemption bound from
/// `LOOM_MAX_PREEMPTIONS`, or 3.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

/// A value that counts its drops.
struct Counted(usize, Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.1.fetch_add(1, Ordering::Relaxed);
    }
}

/// Capacity 1, three values: the sender waits for room (its waker is
/// woken by a pop), the receiver waits for values (woken by a push) and
/// then for the sender to go (woken by its drop). Every value arrives once
/// and in order; a lost wake-up leaves both threads blocked (a deadlock).
#[test]
fn spsc_capacity_1_waits_both_ways() {
    three_values_in_order(1, true);
}

/// Capacity 2: the receiver waits, the sender fills the queue without
/// waiting; then the sender waits for room once.
#[test]
fn spsc_capacity_2_in_order() {
    three_values_in_order(2, false);
}

/// Sends 0, 1, 2 through a channel of `capacity` from another thread and
/// receives them in order; with `then_closed`, also the end of the stream
/// once the sender is gone.
fn three_values_in_order(capacity: usize, then_closed: bool) {
    model(move || {
        let (mut tx, mut rx) = channel::<usize>(capacity);
        let producer = thread::spawn(move || {
            block_on(async move {
                for i in 0..3 {
                    tx.send(i).await.expect("receiver alive");
                }
            })
        });
        block_on(async move {
            for i in 0..3 {
                assert_eq!(rx.recv().await, Some(i));
            }
            if then_closed {
                assert_eq!(rx.recv().await, None, "sender gone, queue empty");
            }
        });
        producer.join().unwrap();
    });
}

/// The receiver takes one value and goes away while the sender still
/// sends: each value is dropped exactly once, whether by the receiver
/// (taken), by the sender (its send failed: Closed, or Full), or by the
/// queue itself (left inside when both ends are gone).
#[test]
fn spsc_values_left_inside_are_dropped_once() {
    model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut tx, mut rx) = channel::<Counted>(2);
        let d = drops.clone();
        let producer = thread::spawn(move || {
            for i in 0..3 {
                match tx.try_send(Counted(i, d.clone())) {
                    Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Closed(_)) => {}
                }
            }
        });
        if let Some(v) = rx.try_recv() {
            assert_eq!(v.0, 0, "the first value comes first");
        }
        drop(rx);
        producer.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    });
}

/// The kernel side of a park, modelled: an eventfd-like flag the core
/// sleeps on until a notify sets it (reading it resets it).
struct EventFd {
    signalled: Mutex<bool>,
    cv: Condvar,
}

impl EventFd {
    fn notify(&self) {
        *self.signalled.lock().unwrap() = true;
        self.cv.notify_one();
    }

    fn park(&self) {
        let mut signalled = self.signalled.lock().unwrap();
        while !*signalled {
            signalled = self.cv.wait(signalled).unwrap();
        }
        *signalled = false;
    }
}

/// The core's remote queue, modelled: `pushed` counts the items pushed
/// (published with a release store, as crossbeam's `ArrayQueue::push`
/// publishes a slot), the core remembers how many it took and looks with
/// an acquire load. `ArrayQueue` itself is not loom-aware, and it has
/// SeqCst fences of its own on its empty path; this stand-in has none, so
/// the model relies on `ParkFlag`'s fences alone.
struct Queue {
    pushed: AtomicUsize,
}

struct Shared {
    flag: ParkFlag,
    queue: Queue,
    eventfd: EventFd,
}

/// A waker thread pushes work and calls `wake_if_parked`, while the core
/// runs `Core::idle`'s loop: prepare to park, look once more, park in the
/// "kernel" if nothing is there. The core must take every item: if it
/// sleeps with work queued, nothing wakes it and loom reports a deadlock.
fn park_model(wakers: usize, items_each: usize) {
    park_model_with(wakers, items_each, None);
}

/// `park_model`, with the notifications bounded by a `WakeCount` of
/// `bound` if given: the waker sends only if it may, the core counts out
/// each one it observed.
fn park_model_with(wakers: usize, items_each: usize, bound: Option<usize>) {
    model(move || {
        let shared = Arc::new(Shared {
            flag: ParkFlag::new(),
            queue: Queue {
                pushed: AtomicUsize::new(0),
            },
            eventfd: EventFd {
                signalled: Mutex::new(false),
                cv: Condvar::new(),
            },
        });
        let count = bound.map(|max| Arc::new(WakeCount::new(max)));
        let threads: Vec<_> = (0..wakers)
            .map(|_| {
                let (shared, count) = (shared.clone(), count.clone());
                thread::spawn(move || {
                    for _ in 0..items_each {
                        shared.queue.pushed.fetch_add(1, Ordering::Release);
                        shared.flag.wake_if_parked(|| {
                            if count.as_ref().is_none_or(|c| c.try_send()) {
                                shared.eventfd.notify();
                            }
                        });
                    }
                })
            })
            .collect();
        let total = wakers * items_each;
        let mut taken = 0;
        let drain = |taken: &mut usize| {
            let pushed = shared.queue.pushed.load(Ordering::Acquire);
            let n = pushed - *taken;
            *taken = pushed;
            n
        };
        while taken < total {
            if drain(&mut taken) > 0 {
                continue;
            }
            shared.flag.prepare_park();
            if drain(&mut taken) > 0 {
                shared.flag.unpark();
                continue;
            }
            shared.eventfd.park();
            // The notification is observed (reaped, or the eventfd drained).
            if let Some(c) = &count {
                c.observed(1);
            }
            shared.flag.unpark();
        }
        for t in threads {
            t.join().unwrap();
        }
    });
}

#[test]
fn park_one_waker_two_items() {
    park_model(1, 2);
}

/// Two wakers, as a task wake and a buffer return from two threads.
#[test]
fn park_two_wakers() {
    park_model(2, 1);
}

/// The same with the notifications bounded by a `WakeCount` of one (as
/// `limits::WAKES_UNOBSERVED_MAX` bounds a core's): a waker that finds the
/// bound reached sends nothing, and the core, once it has observed the
/// notification in flight, must still see that waker's item.
#[test]
fn bounded_wakes_two_wakers() {
    park_model_with(2, 1, Some(1));
}

#[test]
fn bounded_wakes_one_waker_two_items() {
    park_model_with(1, 2, Some(1));
}
