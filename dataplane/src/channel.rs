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

/// Plain-thread tests of the queue; under miri (scripts/models.sh) they
/// also check the slot accesses for undefined behaviour and data races.
#[cfg(all(test, not(loom)))]
mod tests {
    use super::{channel, TrySendError};
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::thread;

    /// Values sent by the threaded tests: few under miri, which is slow.
    const N: usize = if cfg!(miri) { 40 } else { 10_000 };

    struct ThreadWaker(thread::Thread);

    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Runs `future` on this thread, parking it while the future is pending.
    fn block_on<F: Future>(future: F) -> F::Output {
        let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
                return v;
            }
            thread::park();
        }
    }

    struct Counted(usize, Arc<AtomicUsize>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn fifo_full_and_closed() {
        let (mut tx, mut rx) = channel::<u32>(2);
        assert_eq!(rx.try_recv(), None);
        assert_eq!(tx.try_send(1), Ok(()));
        assert_eq!(tx.try_send(2), Ok(()));
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(rx.try_recv(), Some(1));
        assert_eq!(tx.try_send(3), Ok(()));
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), Some(3));
        assert_eq!(rx.try_recv(), None);
        drop(rx);
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed(4)));
    }

    #[test]
    #[should_panic(expected = "at least 1")]
    fn zero_capacity_is_refused() {
        let _ = channel::<u32>(0);
    }

    #[test]
    fn threads_in_order_with_waits_both_ways() {
        for capacity in [1, 3] {
            let (mut tx, mut rx) = channel::<usize>(capacity);
            let producer = thread::spawn(move || {
                block_on(async move {
                    for i in 0..N {
                        tx.send(i).await.expect("receiver alive");
                    }
                })
            });
            block_on(async move {
                for i in 0..N {
                    assert_eq!(rx.recv().await, Some(i));
                }
                assert_eq!(rx.recv().await, None);
            });
            producer.join().unwrap();
        }
    }

    #[test]
    fn values_left_inside_are_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let (mut tx, mut rx) = channel::<Counted>(4);
        let d = drops.clone();
        let producer = thread::spawn(move || {
            for i in 0..8 {
                let _ = tx.try_send(Counted(i, d.clone()));
            }
        });
        let mut last = None;
        for _ in 0..2 {
            if let Some(v) = rx.try_recv() {
                assert!(last.is_none_or(|l| v.0 > l), "out of order");
                last = Some(v.0);
            }
        }
        drop(rx);
        producer.join().unwrap();
        assert_eq!(drops.load(Ordering::Relaxed), 8);
    }

    #[test]
    fn send_fails_once_the_receiver_is_gone() {
        let (mut tx, rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        let waiter = thread::spawn(move || block_on(tx.send(2)));
        drop(rx);
        assert_eq!(waiter.join().unwrap(), Err(2));
    }
}
