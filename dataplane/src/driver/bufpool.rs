//! The per-core pool of receive buffers.
//!
//! On io_uring the pool is a provided buffer ring (PBUF_RING): the kernel
//! picks a buffer when data arrives, and the completion says which. The
//! received bytes reach the caller as a `bytes::Bytes` that points straight
//! into the pool's memory (no copy); when the last `Bytes` pointing into a
//! buffer drops, on any thread, the buffer id goes onto a lock-free return
//! queue that the core drains into the ring on its next pass, and a drop on
//! another thread wakes the core if it is parked (a stream may be waiting
//! for that very buffer). On epoll the same memory is handed out by the core
//! itself.
//!
//! A handed-out buffer holds no reference count on the pool: a shared count
//! would be incremented on the core and decremented wherever the chunk
//! drops, bouncing one cache line between cores on every chunk. Instead the
//! core counts the buffers it handed out (`out`, plain, core-only) and a
//! buffer's return *is* its release. A thread returning a buffer from off
//! the core marks itself in `PoolShared::live` from before its push until
//! it has finished waking the core. When the pool drops it adds the buffers
//! still out (and itself) to `live` and sets its ORPHANED bit; from then on
//! every returned buffer is counted off `live` by whoever pops it, and
//! whoever brings `live` to zero frees the pool memory: the pool itself
//! when every buffer was back, else the thread that returned the last one.
//!
//! `available` counts the buffers the kernel may pick, exactly: +1 when one
//! is provided, -1 when a completion reports the kernel took one, whoever
//! consumes that completion (a stream, or the pool itself for completions
//! nobody will consume). It never exceeds the ring (asserted).

use super::unpark::Unparker;
use super::Driver;
use crate::error::{Error, Result};
use crate::limits;
use bytes::Bytes;
use crossbeam_queue::ArrayQueue;
use io_uring::types::BufRingEntry;
use std::alloc::Layout;
use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Waker;

/// The buffer group id of a core's pool (group ids are per ring).
pub(crate) const BGID: u16 = 0;

/// How many of a pool's `count` buffers the kernel may pick (io_uring):
/// +1 when one is provided, -1 when a completion reports the kernel took
/// one. Pure bookkeeping, unit-tested (also under miri); the asserts catch
/// a buffer provided while the ring is full and a completion naming a
/// buffer while the ring is empty.
#[derive(Debug)]
struct RingCount {
    available: Cell<u32>,
    count: u16,
}

impl RingCount {
    /// None of `count` buffers in the ring yet.
    fn new(count: u16) -> Self {
        RingCount {
            available: Cell::new(0),
            count,
        }
    }

    fn get(&self) -> u32 {
        self.available.get()
    }

    /// Buffer `bid` went into the ring.
    fn provided(&self, bid: u16) {
        let available = self.available.get() + 1;
        assert!(
            available <= u32::from(self.count),
            "buffer {bid} provided while all {} are in the ring",
            self.count
        );
        self.available.set(available);
    }

    /// A completion named buffer `bid`: the kernel took it from the ring.
    fn took(&self, bid: u16) {
        let available = self.available.get();
        assert!(available > 0, "completion named buffer {bid} while the ring was empty");
        self.available.set(available - 1);
    }
}

/// The pool memory, reached by every `Bytes` pointing into it.
struct PoolShared {
    base: NonNull<u8>,
    layout: Layout,
    buf_bytes: usize,
    count: u16,
    returned: ArrayQueue<u16>,
    /// The core to wake when a buffer comes back from another thread.
    core: Arc<Unparker>,
    /// Off-core returners between their push and their last touch of this
    /// struct; once the pool dropped (ORPHANED), also the buffers still out
    /// and not yet popped. Touched by off-core returners and at teardown,
    /// never per chunk by the core. Zero with ORPHANED set: free it.
    live: AtomicU64,
}

/// Pools whose memory is allocated (`crate::receive_pools_alive`).
pub(crate) static POOLS_ALIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// `PoolShared::live`: the pool dropped; the last release frees the memory.
const ORPHANED: u64 = 1 << 63;

/// Takes `n` off `live`; frees the pool if that was the last reference.
///
/// # Safety
///
/// `shared` came from `BufPool::new` and the caller holds `n` of its `live`
/// counts; it must not touch `shared` afterwards.
unsafe fn release(shared: NonNull<PoolShared>, n: u64) {
    // SAFETY: the caller's counts keep it alive up to this point.
    let prev = unsafe { shared.as_ref() }.live.fetch_sub(n, Ordering::Release);
    if prev == ORPHANED | n {
        // Pairs with every other releaser's Release: all their accesses
        // happen before the free.
        fence(Ordering::Acquire);
        // SAFETY: allocated by Box in BufPool::new; the pool dropped and no
        // buffer, returner or pool holds a count: this is the last owner.
        drop(unsafe { Box::from_raw(shared.as_ptr()) });
    }
}

// SAFETY: a buffer's memory is written only by the kernel (or the core, on
// epoll) while the buffer is free, and read only through the single PoolBuf
// that owns it between its hand-out and its return; the return queue is a
// thread-safe lock-free queue.
unsafe impl Send for PoolShared {}
// SAFETY: as above: no two threads ever access one buffer's bytes mutably.
unsafe impl Sync for PoolShared {}

impl PoolShared {
    /// Empties the return queue; returns how many buffers were on it.
    fn pop_all(&self) -> u32 {
        let mut n = 0;
        while self.returned.pop().is_some() {
            n += 1;
        }
        n
    }
}

impl Drop for PoolShared {
    fn drop(&mut self) {
        POOLS_ALIVE.fetch_sub(1, Ordering::SeqCst);
        // SAFETY: `base` was allocated with `layout` in BufPool::new and is
        // freed exactly once, here, when the last owner is gone.
        unsafe { std::alloc::dealloc(self.base.as_ptr(), self.layout) };
    }
}

/// One handed-out buffer: owned by exactly one `Bytes` (and its clones).
struct PoolBuf {
    /// Valid until this buffer is returned: nothing frees the pool while a
    /// buffer it handed out is neither back nor counted in `live`.
    shared: NonNull<PoolShared>,
    bid: u16,
    len: usize,
}

// SAFETY: a PoolBuf only reads its own buffer's bytes (which nothing else
// touches while it is out) and, on drop, uses the thread-safe return queue,
// `live` and the core's thread-safe wake-up.
unsafe impl Send for PoolBuf {}
// SAFETY: as above; shared access only reads the buffer's bytes.
unsafe impl Sync for PoolBuf {}

impl PoolBuf {
    fn shared(&self) -> &PoolShared {
        // SAFETY: see the field: the pool outlives every buffer it handed out.
        unsafe { self.shared.as_ref() }
    }
}

impl AsRef<[u8]> for PoolBuf {
    fn as_ref(&self) -> &[u8] {
        let shared = self.shared();
        // SAFETY: bid < count and len <= buf_bytes (checked in `take`); the
        // buffer is owned by this PoolBuf, so nothing writes into it now.
        unsafe { std::slice::from_raw_parts(shared.base.as_ptr().add(self.bid as usize * shared.buf_bytes), self.len) }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let shared = self.shared();
        // On the core itself (inside its block_on) the next pass of its loop
        // drains the queue, and the pool cannot drop in the middle of this.
        if shared.core.is_current() {
            // Each bid is out at most once, so the queue (capacity = count) has room.
            let pushed = shared.returned.push(self.bid).is_ok();
            assert!(
                pushed,
                "buffer return queue overflow: buffer {} returned twice",
                self.bid
            );
            return;
        }
        // Before the push: once the bid is in the queue the pool may count
        // this buffer back, and only this count keeps it alive until the
        // wake-up below is done.
        shared.live.fetch_add(1, Ordering::SeqCst);
        let pushed = shared.returned.push(self.bid).is_ok();
        assert!(
            pushed,
            "buffer return queue overflow: buffer {} returned twice",
            self.bid
        );
        // The core may be parked waiting for this buffer (a SeqCst fence
        // first, which also orders the push before the ORPHANED check).
        shared.core.wake_if_parked();
        if shared.live.load(Ordering::SeqCst) & ORPHANED != 0 {
            // The pool is gone: whoever pops a returned buffer counts it off.
            let popped = shared.pop_all();
            if popped > 0 {
                // SAFETY: each popped buffer held one count; this thread's
                // own count keeps the pool alive past this call.
                unsafe { release(self.shared, u64::from(popped)) };
            }
        }
        // SAFETY: this thread's own count; `shared` is not used after.
        unsafe { release(self.shared, 1) };
    }
}

struct KernelRing {
    entries: NonNull<BufRingEntry>,
    map_bytes: usize,
    mask: u16,
    tail: Cell<u16>,
    registered: Cell<bool>,
}

/// The receive-buffer pool of one core.
pub(crate) struct BufPool {
    /// Owned (from `Box::into_raw`); released in `Drop`, freed by the last
    /// release (`release`).
    shared: NonNull<PoolShared>,
    /// Buffers handed out and not yet seen back on the return queue.
    out: Cell<u32>,
    /// Set when the ring could not be torn down cleanly: the kernel may
    /// still write into the pool memory, so it must never be freed.
    leak: Cell<bool>,
    ring: Option<KernelRing>,
    /// Free buffers on the epoll back end.
    free: RefCell<Vec<u16>>,
    /// Buffers the kernel may still pick (io_uring).
    available: RingCount,
    waiters: RefCell<Vec<Waker>>,
    scratch: RefCell<Vec<u16>>,
}

impl BufPool {
    fn shared(&self) -> &PoolShared {
        // SAFETY: this pool holds a count on it until its Drop.
        unsafe { self.shared.as_ref() }
    }

    /// A pool of `count` buffers of `buf_bytes` each (checked by the builder).
    pub(crate) fn new(driver: &Driver, core: Arc<Unparker>, count: u16, buf_bytes: usize) -> Result<BufPool> {
        assert!(count.is_power_of_two() && count <= limits::BUF_RING_ENTRIES_MAX);
        let layout = Layout::from_size_align(count as usize * buf_bytes, 4096)
            .map_err(|e| Error::Config(format!("buffer pool layout: {e}")))?;
        // SAFETY: the layout has a non-zero size.
        let base = NonNull::new(unsafe { std::alloc::alloc(layout) })
            .ok_or_else(|| Error::Config("buffer pool allocation failed".into()))?;
        POOLS_ALIVE.fetch_add(1, Ordering::SeqCst);
        let shared = Box::new(PoolShared {
            base,
            layout,
            buf_bytes,
            count,
            returned: ArrayQueue::new(count as usize),
            core,
            live: AtomicU64::new(0),
        });
        let mut pool = BufPool {
            shared: NonNull::from(Box::leak(shared)),
            out: Cell::new(0),
            leak: Cell::new(false),
            ring: None,
            free: RefCell::new(Vec::new()),
            available: RingCount::new(count),
            waiters: RefCell::new(Vec::new()),
            scratch: RefCell::new(Vec::with_capacity(count as usize * 2)),
        };
        match driver.uring() {
            Some(uring) => {
                let map_bytes = (count as usize * std::mem::size_of::<BufRingEntry>()).next_multiple_of(4096);
                // SAFETY: anonymous private mapping; no file, no fixed address.
                let ptr = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        map_bytes,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if ptr == libc::MAP_FAILED {
                    return Err(Error::RingRegister {
                        what: "buffer ring memory",
                        source: std::io::Error::last_os_error(),
                    });
                }
                let entries = NonNull::new(ptr.cast::<BufRingEntry>())
                    .ok_or_else(|| Error::Config("mmap returned NULL".into()))?;
                let ring = KernelRing {
                    entries,
                    map_bytes,
                    mask: count - 1,
                    tail: Cell::new(0),
                    registered: Cell::new(false),
                };
                // SAFETY: the ring memory is page-aligned, `count` entries long,
                // and stays mapped until after it is unregistered (Drop, unregister).
                let registered = uring.with_submitter(|s| unsafe {
                    s.register_buf_ring_with_flags(entries.as_ptr() as u64, count, BGID, 0)
                });
                if let Err(source) = registered {
                    // SAFETY: unmapping the mapping made above, not registered.
                    unsafe { libc::munmap(ptr, map_bytes) };
                    return Err(Error::RingRegister {
                        what: "provided buffer ring",
                        source,
                    });
                }
                ring.registered.set(true);
                pool.ring = Some(ring);
                for bid in 0..count {
                    pool.provide_one(bid);
                }
                pool.publish();
            }
            None => {
                pool.free = RefCell::new((0..count).rev().collect());
            }
        }
        Ok(pool)
    }

    /// Bytes of each buffer.
    pub(crate) fn buf_bytes(&self) -> usize {
        self.shared().buf_bytes
    }

    /// Buffers the kernel may pick right now (io_uring), or free (epoll).
    pub(crate) fn available(&self) -> u32 {
        match self.ring {
            Some(_) => self.available.get(),
            None => self.free.borrow().len() as u32,
        }
    }

    fn provide_one(&self, bid: u16) {
        match &self.ring {
            Some(ring) => {
                let tail = ring.tail.get();
                // SAFETY: the index is masked into the ring's `count` entries,
                // and the entry at the tail is not visible to the kernel until
                // `publish` moves the tail past it.
                let entry = unsafe { &mut *ring.entries.as_ptr().add((tail & ring.mask) as usize) };
                // SAFETY: bid < count, so the buffer lies inside the pool.
                entry.set_addr(
                    unsafe { self.shared().base.as_ptr().add(bid as usize * self.shared().buf_bytes) } as u64,
                );
                entry.set_len(self.shared().buf_bytes as u32);
                entry.set_bid(bid);
                ring.tail.set(tail.wrapping_add(1));
                self.available.provided(bid);
            }
            None => self.free.borrow_mut().push(bid),
        }
    }

    fn publish(&self) {
        if let Some(ring) = &self.ring {
            // SAFETY: the ring base is the first entry of a page-aligned ring;
            // the tail field overlays its `resv` and is read by the kernel, so
            // it is written with a release store.
            let tail = unsafe { &*(BufRingEntry::tail(ring.entries.as_ptr()) as *const AtomicU16) };
            tail.store(ring.tail.get(), Ordering::Release);
        }
    }

    /// Notes that the kernel took buffer `bid` (a completion named it).
    fn kernel_took(&self, bid: u16) {
        if self.ring.is_some() {
            self.available.took(bid);
        }
    }

    /// Gives returned buffers back to the kernel (or the free list) and wakes
    /// receivers waiting for buffers. Returns how many came back.
    pub(crate) fn drain_returns(&self, driver: &Driver) -> usize {
        let mut scratch = self.scratch.borrow_mut();
        while let Some(bid) = self.shared().returned.pop() {
            scratch.push(bid);
        }
        let returned = scratch.len() as u32;
        let out = self.out.get();
        assert!(returned <= out, "{returned} buffers came back with {out} out");
        self.out.set(out - returned);
        if let Some(uring) = driver.uring() {
            // Buffers of completions nobody consumed: the kernel took them,
            // and they were never handed out.
            let handed_back = scratch.len();
            uring.take_orphan_buffers(&mut scratch);
            for &bid in &scratch[handed_back..] {
                self.kernel_took(bid);
            }
        }
        let n = scratch.len();
        if n == 0 {
            return 0;
        }
        assert!(
            n <= self.shared().count as usize,
            "{n} buffers came back to a pool of {}",
            self.shared().count
        );
        for bid in scratch.drain(..) {
            self.provide_one(bid);
        }
        drop(scratch);
        self.publish();
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
        n
    }

    /// Counts in the buffers on the return queue without giving them to the
    /// kernel (teardown).
    fn drain_queue_only(&self) {
        let n = self.shared().pop_all();
        let out = self.out.get();
        assert!(n <= out, "{n} buffers came back with {out} out");
        self.out.set(out - n);
    }

    /// Returns buffers of completions nobody will consume (the kernel took
    /// them; they were never handed out).
    pub(crate) fn give_back(&self, bids: &mut Vec<u16>) {
        for bid in bids.drain(..) {
            self.kernel_took(bid);
            self.provide_one(bid);
        }
        self.publish();
    }

    /// Wakes `waker` when buffers come back.
    pub(crate) fn wait_for_buffers(&self, waker: &Waker) {
        let mut waiters = self.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    /// The kernel filled buffer `bid` with `len` bytes: hand them out.
    pub(crate) fn take(&self, bid: u16, len: usize) -> Bytes {
        assert!(
            bid < self.shared().count && len <= self.shared().buf_bytes,
            "kernel reported buffer {bid} with {len} bytes"
        );
        self.kernel_took(bid);
        self.out.set(self.out.get() + 1);
        Bytes::from_owner(PoolBuf {
            shared: self.shared,
            bid,
            len,
        })
    }

    /// Takes a free buffer on the epoll back end: its id and memory.
    pub(crate) fn alloc(&self) -> Option<(u16, *mut u8)> {
        let bid = self.free.borrow_mut().pop()?;
        // SAFETY: bid < count, so the buffer lies inside the pool.
        Some((bid, unsafe {
            self.shared().base.as_ptr().add(bid as usize * self.shared().buf_bytes)
        }))
    }

    /// Puts back a buffer from `alloc` that received nothing.
    pub(crate) fn free(&self, bid: u16) {
        self.free.borrow_mut().push(bid);
    }

    /// Unregisters the kernel ring (io_uring); call before the ring closes.
    pub(crate) fn unregister(&self, driver: &Driver) {
        if let (Some(ring), Some(uring)) = (&self.ring, driver.uring()) {
            if uring.leaked_in_flight() {
                self.leak.set(true);
            }
            if ring.registered.replace(false) {
                if let Err(e) = uring.with_submitter(|s| s.unregister_buf_ring(BGID)) {
                    tracing::warn!(error = %e, "unregistering the provided buffer ring failed");
                }
            }
        }
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        if let Some(ring) = &self.ring {
            if ring.registered.get() {
                // Still registered: the ring is alive and may write the tail
                // page and the buffers; leak both rather than free memory in use.
                tracing::error!("buffer ring dropped while registered; leaking its mapping and the pool memory");
                return;
            }
            // SAFETY: unmapping our own mapping, no longer registered.
            unsafe { libc::munmap(ring.entries.as_ptr().cast(), ring.map_bytes) };
        }
        if self.leak.get() {
            tracing::error!("the ring stopped with operations in flight; leaking the receive-buffer pool");
            return;
        }
        // Count in the buffers already back; hand the rest to their
        // returners: `live` gets every buffer still out, plus one for this
        // pool until it is done with the queue, and the ORPHANED bit. The
        // SeqCst add and fence pair with a returner's push and the fence in
        // its wake_if_parked: either the drain below sees its buffer or the
        // returner sees ORPHANED and pops it itself.
        self.drain_queue_only();
        let out = self.out.get();
        if out > 0 {
            tracing::debug!(
                out,
                "receive buffers still held when their core stopped; the last one frees the pool"
            );
        }
        let shared = self.shared();
        shared.live.fetch_add(ORPHANED | (u64::from(out) + 1), Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let popped = shared.pop_all();
        // SAFETY: the popped buffers' counts and this pool's own, added
        // above; `shared` is not used after.
        unsafe { release(self.shared, u64::from(popped) + 1) };
    }
}

#[cfg(test)]
mod tests {
    use super::RingCount;

    #[test]
    fn ring_count_follows_provides_and_takes() {
        let c = RingCount::new(4);
        for bid in 0..4 {
            c.provided(bid);
        }
        assert_eq!(c.get(), 4);
        c.took(2);
        c.took(0);
        assert_eq!(c.get(), 2);
        c.provided(0);
        assert_eq!(c.get(), 3);
    }

    #[test]
    #[should_panic(expected = "provided while all 2 are in the ring")]
    fn ring_count_refuses_a_buffer_too_many() {
        let c = RingCount::new(2);
        c.provided(0);
        c.provided(1);
        c.provided(1);
    }

    #[test]
    #[should_panic(expected = "while the ring was empty")]
    fn ring_count_refuses_a_take_from_an_empty_ring() {
        let c = RingCount::new(2);
        c.provided(0);
        c.took(0);
        c.took(1);
    }
}
