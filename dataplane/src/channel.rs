//! Cross-core messages: a bounded single-producer single-consumer queue.
//!
//! Each end belongs to one core (or any one thread). The fast path is two
//! atomic loads and a store. A receiver that finds the queue empty registers
//! its waker; the sender wakes it after a push, which for a receiver on
//! another core means the core's remote queue and, if that core is parked, a
//! MSG_RING completion from the sender's ring (or an eventfd write where the
//! sender has no ring). The same holds the other way for a sender waiting
//! for room.
//!
//! The atomics, cells and locks come from `crate::sync`, so that the loom
//! models (tests/loom.rs, `RUSTFLAGS="--cfg loom"`) check this code.

use crate::sync::{fence, Arc, AtomicBool, AtomicUsize, Mutex, Ordering, UnsafeCell};
use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::task::{Context, Poll, Waker};

#[repr(align(64))]
struct CachePadded<T>(T);

/// A waker slot with a flag read without locking on the fast path.
struct WakerSlot {
    waiting: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl WakerSlot {
    fn new() -> Self {
        WakerSlot {
            waiting: AtomicBool::new(false),
            waker: Mutex::new(None),
        }
    }

    fn register(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
        drop(slot);
        self.waiting.store(true, Ordering::SeqCst);
        // Pairs with the fence in `wake`. The caller re-checks the queue (or
        // whether the other end is gone) after this; the SeqCst store alone
        // does not keep that acquire load from being satisfied before the
        // store is visible, so without this fence the re-check may miss the
        // other end's push while its `wake` misses `waiting`: a lost
        // wake-up (found by the loom model `spsc_capacity_1_waits_both_ways`).
        fence(Ordering::SeqCst);
    }

    fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) && self.waiting.swap(false, Ordering::SeqCst) {
            let waker = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

struct Shared<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    head: CachePadded<AtomicUsize>,
    tail: CachePadded<AtomicUsize>,
    receiver: WakerSlot,
    sender: WakerSlot,
    sender_gone: AtomicBool,
    receiver_gone: AtomicBool,
}

// SAFETY: a slot is written only by the single producer while it is outside
// [head, tail) and read only by the single consumer while inside; the
// head/tail release/acquire pairs order those accesses. T moves across threads,
// hence T: Send.
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        let head = self.head.0.load(Ordering::Relaxed);
        let tail = self.tail.0.load(Ordering::Relaxed);
        for i in head..tail {
            // SAFETY: slots in [head, tail) hold initialized values nobody else
            // can reach any more (both ends are gone).
            self.slots[i % self.slots.len()].with_mut(|slot| unsafe { (*slot).assume_init_drop() });
        }
    }
}

/// The sending end.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving end.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.shared.slots.len())
            .finish()
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("capacity", &self.shared.slots.len())
            .finish()
    }
}

/// Why a send did not happen; the value comes back.
#[derive(Debug, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` values.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// A bounded SPSC queue of `capacity` values (at least 1).
pub fn channel<T: Send>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(capacity > 0, "channel capacity must be at least 1");
    let slots = (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let shared = Arc::new(Shared {
        slots,
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        receiver: WakerSlot::new(),
        sender: WakerSlot::new(),
        sender_gone: AtomicBool::new(false),
        receiver_gone: AtomicBool::new(false),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

impl<T: Send> Sender<T> {
    /// Sends without waiting.
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        let s = &*self.shared;
        if s.receiver_gone.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(value));
        }
        let tail = s.tail.0.load(Ordering::Relaxed);
        let head = s.head.0.load(Ordering::Acquire);
        if tail - head == s.slots.len() {
            return Err(TrySendError::Full(value));
        }
        // SAFETY: the slot at `tail` is outside [head, tail): only this (the
        // single) producer touches it until the release store below.
        s.slots[tail % s.slots.len()].with_mut(|slot| unsafe { (*slot).write(value) });
        s.tail.0.store(tail + 1, Ordering::Release);
        s.receiver.wake();
        Ok(())
    }

    /// Sends, waiting for room. Fails (returning the value) if the receiver is gone.
    pub async fn send(&mut self, value: T) -> Result<(), T> {
        let mut value = Some(value);
        poll_fn(|cx: &mut Context<'_>| {
            let v = value.take().expect("value present until sent");
            match self.try_send(v) {
                Ok(()) => Poll::Ready(Ok(())),
                Err(TrySendError::Closed(v)) => Poll::Ready(Err(v)),
                Err(TrySendError::Full(v)) => {
                    self.shared.sender.register(cx.waker());
                    // Re-check after registering, so a pop in between is not missed.
                    match self.try_send(v) {
                        Ok(()) => Poll::Ready(Ok(())),
                        Err(TrySendError::Closed(v)) => Poll::Ready(Err(v)),
                        Err(TrySendError::Full(v)) => {
                            value = Some(v);
                            Poll::Pending
                        }
                    }
                }
            }
        })
        .await
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.shared.sender_gone.store(true, Ordering::Release);
        self.shared.receiver.wake();
    }
}

impl<T: Send> Receiver<T> {
    /// Takes a value without waiting.
    pub fn try_recv(&mut self) -> Option<T> {
        let s = &*self.shared;
        let head = s.head.0.load(Ordering::Relaxed);
        let tail = s.tail.0.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        // SAFETY: the slot at `head` is inside [head, tail): initialized by
        // the producer (acquire above) and only this consumer reads it.
        let value = s.slots[head % s.slots.len()].with(|slot| unsafe { (*slot).assume_init_read() });
        s.head.0.store(head + 1, Ordering::Release);
        s.sender.wake();
        Some(value)
    }

    /// Waits for a value; `None` once the sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| {
            if let Some(v) = self.try_recv() {
                return Poll::Ready(Some(v));
            }
            if self.shared.sender_gone.load(Ordering::Acquire) {
                return Poll::Ready(self.try_recv());
            }
            self.shared.receiver.register(cx.waker());
            if let Some(v) = self.try_recv() {
                return Poll::Ready(Some(v));
            }
            if self.shared.sender_gone.load(Ordering::Acquire) {
                return Poll::Ready(self.try_recv());
            }
            Poll::Pending
        })
        .await
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.shared.receiver_gone.store(true, Ordering::Release);
        self.shared.sender.wake();
    }
}
