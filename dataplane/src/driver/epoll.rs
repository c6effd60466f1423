//! The epoll driver: the fallback when io_uring is unavailable.
//!
//! Sockets are registered edge-triggered once; an operation tries its system
//! call and, on EAGAIN, clears the readiness bit and waits for the next edge.
//! Timers live in a heap; a parked core waits in epoll_pwait2 until the
//! earliest deadline or its own (nanoseconds), or in epoll_wait (whole
//! milliseconds, rounded up) where epoll_pwait2 is refused. File reads and
//! writes go to the core's file-IO pool (`blocking.rs`).

use crate::driver::blocking::FilePool;
use crate::driver::unpark::WakeCount;
use crate::driver::Wait;
use crate::error::{Error, Result};
use crate::limits;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

const NOTIFY_TOKEN: u64 = u64::MAX;

/// Which readiness an operation waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Interest {
    Read,
    Write,
}

#[derive(Default)]
struct Registration {
    readable: bool,
    writable: bool,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
}

struct Timer {
    deadline: Instant,
    waker: Option<Waker>,
    fired: bool,
}

struct State {
    regs: Vec<Option<Registration>>,
    free_regs: Vec<u32>,
    timers: Vec<Option<Timer>>,
    free_timers: Vec<u32>,
    /// Deadlines of live timers, and of removed ones until they are purged:
    /// from the top before every wait (a removed timer never shortens a
    /// park), and all at once when they outnumber the live ones.
    heap: BinaryHeap<Reverse<(Instant, u32)>>,
    events: Vec<libc::epoll_event>,
    to_wake: Vec<Waker>,
}

impl State {
    /// Timers added and not yet removed.
    fn live_timers(&self) -> usize {
        self.timers.len() - self.free_timers.len()
    }

    /// Whether the heap entry (deadline, id) is a live, unfired timer's.
    fn is_live(&self, deadline: Instant, id: u32) -> bool {
        matches!(self.timers.get(id as usize), Some(Some(t)) if t.deadline == deadline && !t.fired)
    }

    /// Pops removed and fired timers off the top of the heap.
    fn purge_top(&mut self) {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            if self.is_live(deadline, id) {
                break;
            }
            self.heap.pop();
        }
    }

    /// The earliest live deadline.
    fn next_deadline(&mut self) -> Option<Instant> {
        self.purge_top();
        self.heap.peek().map(|Reverse((deadline, _))| *deadline)
    }
}

/// The epoll driver.
pub(crate) struct Epoll {
    epfd: OwnedFd,
    eventfd: RawFd,
    state: RefCell<State>,
    /// Wake-ups sent to this core and not yet observed.
    wakes: Arc<WakeCount>,
    /// epoll_pwait2 (5.11) is missing: timeouts are milliseconds.
    no_pwait2: std::cell::Cell<bool>,
    /// Runs file reads and writes off the core (`blocking.rs`).
    files: FilePool,
}

impl Epoll {
    pub(crate) fn new(eventfd: RawFd, wakes: Arc<WakeCount>) -> Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointers.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(Error::EpollSetup(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
        let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
        let epoll = Epoll {
            epfd,
            eventfd,
            wakes,
            no_pwait2: std::cell::Cell::new(false),
            files: FilePool::new(),
            state: RefCell::new(State {
                regs: Vec::new(),
                free_regs: Vec::new(),
                timers: Vec::new(),
                free_timers: Vec::new(),
                heap: BinaryHeap::new(),
                events: vec![libc::epoll_event { events: 0, u64: 0 }; limits::EPOLL_EVENTS_MAX],
                to_wake: Vec::new(),
            }),
        };
        epoll
            .ctl(libc::EPOLL_CTL_ADD, eventfd, libc::EPOLLIN as u32, NOTIFY_TOKEN)
            .map_err(Error::EpollSetup)?;
        // Finds out whether epoll_pwait2 exists (nobody can have woken this
        // core yet, so the poll takes nothing from anyone).
        epoll.poll(Wait::No);
        Ok(epoll)
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, token: u64) -> io::Result<()> {
        let mut event = libc::epoll_event { events, u64: token };
        // SAFETY: passes a pointer to a live epoll_event.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), op, fd, &mut event) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Registers `fd` for edge-triggered readiness; returns its token.
    pub(crate) fn register(&self, fd: RawFd) -> io::Result<u32> {
        let token = {
            let mut state = self.state.borrow_mut();
            match state.free_regs.pop() {
                Some(t) => {
                    state.regs[t as usize] = Some(Registration::default());
                    t
                }
                None => {
                    state.regs.push(Some(Registration::default()));
                    (state.regs.len() - 1) as u32
                }
            }
        };
        let events = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if let Err(e) = self.ctl(libc::EPOLL_CTL_ADD, fd, events, u64::from(token)) {
            let mut state = self.state.borrow_mut();
            state.regs[token as usize] = None;
            state.free_regs.push(token);
            return Err(e);
        }
        Ok(token)
    }

    /// Removes a registration (before its fd closes).
    pub(crate) fn deregister(&self, fd: RawFd, token: u32) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
        let mut state = self.state.borrow_mut();
        state.regs[token as usize] = None;
        state.free_regs.push(token);
    }

    /// Whether `token` may be ready for `interest`; if not, registers the waker.
    pub(crate) fn poll_ready(&self, token: u32, interest: Interest, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.borrow_mut();
        let reg = state.regs[token as usize].as_mut().expect("live epoll registration");
        let (ready, waker) = match interest {
            Interest::Read => (reg.readable, &mut reg.read_waker),
            Interest::Write => (reg.writable, &mut reg.write_waker),
        };
        if ready {
            return Poll::Ready(());
        }
        *waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Records that a system call returned EAGAIN for `interest`.
    pub(crate) fn clear_ready(&self, token: u32, interest: Interest) {
        let mut state = self.state.borrow_mut();
        let reg = state.regs[token as usize].as_mut().expect("live epoll registration");
        match interest {
            Interest::Read => reg.readable = false,
            Interest::Write => reg.writable = false,
        }
    }

    /// Adds a timer; returns its id.
    pub(crate) fn add_timer(&self, deadline: Instant, waker: Waker) -> u32 {
        let mut state = self.state.borrow_mut();
        let timer = Timer {
            deadline,
            waker: Some(waker),
            fired: false,
        };
        let id = match state.free_timers.pop() {
            Some(id) => {
                state.timers[id as usize] = Some(timer);
                id
            }
            None => {
                state.timers.push(Some(timer));
                (state.timers.len() - 1) as u32
            }
        };
        state.heap.push(Reverse((deadline, id)));
        id
    }

    /// Whether the timer fired; if not, updates its waker.
    pub(crate) fn poll_timer(&self, id: u32, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.state.borrow_mut();
        let timer = state.timers[id as usize].as_mut().expect("live timer");
        if timer.fired {
            return Poll::Ready(());
        }
        timer.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Removes a timer. Its heap entry goes at the next purge; when removed
    /// entries outnumber live ones (a stream of calls whose deadlines never
    /// fire), the heap is rebuilt from the live ones, so it stays within
    /// twice the live timers.
    pub(crate) fn remove_timer(&self, id: u32) {
        let mut state = self.state.borrow_mut();
        if state.timers[id as usize].take().is_some() {
            state.free_timers.push(id);
        }
        if state.heap.len() > 2 * state.live_timers() + 64 {
            let heap = std::mem::take(&mut state.heap);
            let live: Vec<_> = heap
                .into_iter()
                .filter(|&Reverse((d, i))| state.is_live(d, i))
                .collect();
            state.heap = live.into();
        }
    }

    /// The core's file-IO pool.
    pub(crate) fn files(&self) -> &FilePool {
        &self.files
    }

    /// Whether waits can end at a deadline with sub-millisecond precision
    /// (epoll_pwait2, probed when the driver starts).
    pub(crate) fn timed_waits(&self) -> bool {
        !self.no_pwait2.get()
    }

    pub(crate) fn poll(&self, wait: Wait) -> usize {
        let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        let until = match wait {
            Wait::No | Wait::Reap => None,
            Wait::Forever => self.state.borrow_mut().next_deadline(),
            Wait::Until(deadline) => Some(
                self.state
                    .borrow_mut()
                    .next_deadline()
                    .map_or(deadline, |timer| timer.min(deadline)),
            ),
        };
        // epoll_pwait2 takes nanoseconds: neither a timer nor a deadline is
        // rounded up to the next millisecond.
        let ts = match (wait, until) {
            (Wait::No | Wait::Reap, _) => Some(zero),
            (_, Some(until)) => {
                let wait = until.saturating_duration_since(Instant::now());
                Some(libc::timespec {
                    tv_sec: wait.as_secs() as libc::time_t,
                    tv_nsec: wait.subsec_nanos() as libc::c_long,
                })
            }
            (_, None) => None,
        };
        let mut guard = self.state.borrow_mut();
        let state = &mut *guard;
        let mut n = -1;
        if !self.no_pwait2.get() {
            // SAFETY: `events` has EPOLL_EVENTS_MAX writable entries; the
            // timespec, if any, lives on this frame until the call returns;
            // no signal mask.
            n = unsafe {
                libc::epoll_pwait2(
                    self.epfd.as_raw_fd(),
                    state.events.as_mut_ptr(),
                    limits::EPOLL_EVENTS_MAX as i32,
                    ts.as_ref().map_or(std::ptr::null(), |ts| ts as *const libc::timespec),
                    std::ptr::null(),
                )
            };
            // ENOSYS: a kernel before 5.11. EPERM or EACCES: a seccomp
            // profile that predates the call (older container runtimes
            // refuse unknown system calls that way).
            if n < 0 {
                let err = io::Error::last_os_error();
                if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::EPERM | libc::EACCES)) {
                    tracing::info!(error = %err, "epoll_pwait2 unavailable: waits round up to milliseconds");
                    self.no_pwait2.set(true);
                }
            }
        }
        if self.no_pwait2.get() {
            let timeout_ms = ts.map_or(-1, |ts| {
                let us = ts.tv_sec as u64 * 1_000_000 + (ts.tv_nsec as u64).div_ceil(1000);
                us.div_ceil(1000).min(i32::MAX as u64) as i32
            });
            // SAFETY: `events` has EPOLL_EVENTS_MAX writable entries.
            n = unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    state.events.as_mut_ptr(),
                    limits::EPOLL_EVENTS_MAX as i32,
                    timeout_ms,
                )
            };
        }
        let n = if n < 0 {
            let err = io::Error::last_os_error();
            assert_eq!(err.raw_os_error(), Some(libc::EINTR), "epoll_wait failed: {err}");
            0
        } else {
            n as usize
        };
        let mut handled = 0;
        for i in 0..n {
            let event = state.events[i];
            let token = event.u64;
            if token == NOTIFY_TOKEN {
                self.wakes.observed(crate::sys::eventfd_drain(self.eventfd));
                handled += 1;
                continue;
            }
            let Some(Some(reg)) = state.regs.get_mut(token as usize) else {
                continue;
            };
            let bits = event.events as i32;
            if bits & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                reg.readable = true;
                if let Some(w) = reg.read_waker.take() {
                    state.to_wake.push(w);
                }
            }
            if bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                reg.writable = true;
                if let Some(w) = reg.write_waker.take() {
                    state.to_wake.push(w);
                }
            }
            handled += 1;
        }
        let now = Instant::now();
        while let Some(Reverse((deadline, id))) = state.heap.peek().copied() {
            if deadline > now {
                break;
            }
            state.heap.pop();
            if let Some(Some(timer)) = state.timers.get_mut(id as usize) {
                if timer.deadline == deadline && !timer.fired {
                    timer.fired = true;
                    if let Some(w) = timer.waker.take() {
                        state.to_wake.push(w);
                    }
                    handled += 1;
                }
            }
        }
        let mut to_wake = std::mem::take(&mut state.to_wake);
        drop(guard);
        for waker in to_wake.drain(..) {
            waker.wake();
        }
        self.state.borrow_mut().to_wake = to_wake;
        handled
    }
}
