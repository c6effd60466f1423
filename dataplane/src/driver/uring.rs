//! The io_uring driver of one core.
//!
//! The ring is created disabled with SINGLE_ISSUER | DEFER_TASKRUN, gets a
//! sparse fixed-file table, its own fd registered (so every enter skips the
//! fd lookup), and an allow-list of opcodes, SQE flags and register
//! operations; only then is it enabled. The allow-list holds no opcode that
//! creates a file or a socket: the ring can only work on fds the core opened
//! with plain system calls.
//!
//! Each operation in flight owns a slot; its completion (or, for multishot
//! operations, its queue of completions) is kept there until the future that
//! started it takes it. A future dropped while its operation is in flight
//! moves the operation's owned buffers into the slot ("ignored") and submits
//! a cancel; the buffers are freed when the kernel's last completion for the
//! slot arrives, never before; what that completion carries (an accepted
//! connection's fd, say) is released then ([`Orphan`]).
//!
//! **The completion bound.** The completion queue is as large as the
//! kernel allows (`limits::RING_CQ_ENTRIES`) and never overflows: each
//! operation in flight (single-shot, multishot, cancel, MSG_RING sent) is
//! counted and may post one final completion; a multishot receive's other
//! completions each carry a provided buffer, so the core's buffer ring
//! bounds them; wake-ups from other cores are bounded by `WakeCount`. The
//! operations a core may have in flight are what is left of the queue
//! (`ops_max`, at least `limits::OPS_IN_FLIGHT_MIN`); a submission past it
//! waits for room. Accepts are single-shot, so an accept posts one
//! completion and pulls one connection. Wake polls are not on this ring:
//! they have one of their own (`wake_ring.rs`).

use crate::driver::unpark::{Unparker, WakeCount};
use crate::driver::wake_ring::WakeRing;
use crate::driver::Wait;
use crate::error::{Error, Result};
use crate::limits;
use io_uring::{cqueue, opcode, register::Restriction, squeue, types, IoUring};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

/// The owned data of an operation whose future was dropped while the
/// kernel still had it: kept until the completion, then released with it,
/// so that what the completion carries (an fd, a buffer) is freed too.
pub(crate) trait Orphan {
    /// The operation's completion arrived: free everything.
    fn release(self: Box<Self>, res: i32, flags: u32);
}

/// user_data of the eventfd poll that wakes a parked core.
const NOTIFY_TAG: u64 = u64::MAX;
/// user_data of completions nobody waits for (cancels, MSG_RING sources).
const IGNORE_TAG: u64 = u64::MAX - 1;
/// user_data a MSG_RING wake-up carries into the target ring.
const MSG_WAKE_TAG: u64 = u64::MAX - 2;

// io_uring_register opcodes (include/uapi/linux/io_uring.h), for the
// register allow-list; the io-uring crate keeps its constants private.
const REGISTER_FILES_UPDATE: u8 = 6;
const REGISTER_PROBE: u8 = 8;
const REGISTER_FILES_UPDATE2: u8 = 14;
const REGISTER_RING_FDS: u8 = 20;
const UNREGISTER_RING_FDS: u8 = 21;
const REGISTER_PBUF_RING: u8 = 22;
const UNREGISTER_PBUF_RING: u8 = 23;
const IORING_ENTER_GETEVENTS: u32 = 1;
const IORING_ENTER_REGISTERED_RING: u32 = 1 << 4;
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;

/// `struct io_uring_getevents_arg` (include/uapi/linux/io_uring.h): what
/// IORING_ENTER_EXT_ARG points to. `min_wait_usec` was padding before 6.12.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// Opcodes the core's ring may run. Nothing that opens a file or creates a
/// socket: those are system calls the core makes itself.
const ALLOWED_OPCODES: &[(u8, &str)] = &[
    (opcode::Nop::CODE, "microbenchmarks and ring liveness checks"),
    (opcode::Recv::CODE, "socket receive, single and multishot"),
    (opcode::Send::CODE, "socket send"),
    (opcode::SendMsg::CODE, "vectored send and SCM_RIGHTS"),
    (opcode::RecvMsg::CODE, "SCM_RIGHTS receive"),
    (
        opcode::Accept::CODE,
        "accept (single-shot: one connection per completion)",
    ),
    (opcode::Connect::CODE, "outgoing connections"),
    (opcode::Read::CODE, "file reads (binary cache)"),
    (opcode::Write::CODE, "file writes (binary cache)"),
    (opcode::Readv::CODE, "vectored file reads"),
    (opcode::Writev::CODE, "vectored writes (header and payload)"),
    (opcode::Timeout::CODE, "timers and deadlines"),
    (opcode::TimeoutRemove::CODE, "timer cancellation"),
    (opcode::AsyncCancel::CODE, "cancellation of dropped operations"),
    (opcode::PollAdd::CODE, "the wake-up eventfd"),
    (opcode::PollRemove::CODE, "removal of the wake-up poll"),
    (opcode::MsgRingData::CODE, "cross-core wake-ups"),
    (opcode::Shutdown::CODE, "socket shutdown"),
    (opcode::LinkTimeout::CODE, "per-operation deadlines"),
    (opcode::Close::CODE, "closing fds of fixed-file slots"),
];

/// The SQE flags operations may carry.
const ALLOWED_SQE_FLAGS: u8 = squeue::Flags::FIXED_FILE.bits()
    | squeue::Flags::IO_LINK.bits()
    | squeue::Flags::IO_HARDLINK.bits()
    | squeue::Flags::ASYNC.bits()
    | squeue::Flags::BUFFER_SELECT.bits()
    | squeue::Flags::SKIP_SUCCESS.bits();

/// Register operations allowed once the ring is enabled.
const ALLOWED_REGISTER_OPS: &[u8] = &[
    REGISTER_FILES_UPDATE,
    REGISTER_FILES_UPDATE2,
    REGISTER_PROBE,
    REGISTER_RING_FDS,
    UNREGISTER_RING_FDS,
    REGISTER_PBUF_RING,
    UNREGISTER_PBUF_RING,
];

enum Slot {
    Free,
    Waiting(Option<Waker>),
    Completed(i32, u32),
    /// The future is gone; these are its owned buffers, released with the
    /// completion.
    Ignored(Box<dyn Orphan>),
    Multi(MultiState),
    /// A MSG_RING wake-up this core sent to the core of this unparker, kept
    /// until its completion here says whether it arrived; if not, the
    /// target gets the eventfd.
    WakeSent(Arc<Unparker>),
    /// A multishot receive whose consumer is gone: the buffers its late
    /// completions carry go back to the pool.
    MultiIgnored,
}

/// A multishot receive into the provided buffer ring, the ring's one
/// multishot operation (wake polls have a ring of their own: `wake_ring.rs`).
struct MultiState {
    queue: VecDeque<(i32, u32)>,
    waker: Option<Waker>,
    done: bool,
}

/// Releases what one unconsumed multishot completion carries: its provided
/// buffer into `buffers` (for the pool).
fn release_unconsumed(flags: u32, buffers: &mut Vec<u16>) {
    if let Some(bid) = cqueue::buffer_select(flags) {
        buffers.push(bid);
    }
}

struct State {
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    unsubmitted: u32,
    room_waiters: VecDeque<Waker>,
    notify_armed: bool,
    fixed_free: Vec<u32>,
    /// Provided buffers that came back in completions nobody consumes; the
    /// buffer pool takes them back.
    orphan_buffers: Vec<u16>,
    to_wake: Vec<Waker>,
    /// Data of dropped operations whose completion came, with that
    /// completion: released after the driver's borrows end (its destructor
    /// may use the driver).
    to_release: Vec<(Box<dyn Orphan>, i32, u32)>,
    /// Polls that found the completion queue overflowed.
    cq_overflows: u64,
    /// io_uring_enter calls made.
    enters: u64,
}

/// The io_uring driver.
pub(crate) struct Uring {
    ring: RefCell<IoUring>,
    ring_fd: RawFd,
    registered_index: Option<u32>,
    eventfd: RawFd,
    state: RefCell<State>,
    shut_down: std::cell::Cell<bool>,
    /// Set when shutdown gave up waiting: operations may still be in flight.
    leaked_in_flight: std::cell::Cell<bool>,
    /// The core's wake polls, on a ring of their own (`wake_ring.rs`);
    /// `None` with wake polls off.
    wake_ring: Option<WakeRing>,
    msg_ring: bool,
    /// Operations this ring may have in flight: what its completion queue
    /// holds beyond the provided buffers and wake-ups (module docs).
    ops_max: usize,
    /// Wake-ups sent to this core and not yet observed.
    wakes: Arc<WakeCount>,
    /// IORING_FEAT_EXT_ARG (5.11): a wait can end at a deadline.
    ext_arg: bool,
    /// The ring has IORING_SETUP_TASKRUN_FLAG: IORING_SQ_TASKRUN tells
    /// whether deferred task work is pending.
    taskrun_flag: bool,
}

/// Operations in flight a completion queue of `cq_entries` leaves room for
/// (module docs): each may post a final completion and be cancelled (one
/// more), beside one completion per provided buffer and the wake-ups
/// (`limits.rs`).
pub(crate) fn ops_max_for(cq_entries: u32, provided_buffers: u32) -> usize {
    let wakes = 2 * limits::WAKES_UNOBSERVED_MAX + 2;
    (cq_entries.saturating_sub(provided_buffers).saturating_sub(wakes) / 2) as usize
}

fn explain_setup_error(e: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    match e.raw_os_error() {
        Some(libc::ENOSYS) => "io_uring_setup is not implemented by this kernel (ENOSYS)".into(),
        Some(libc::EPERM) if disabled != "0" => {
            format!("io_uring is disabled by sysctl kernel.io_uring_disabled={disabled} (EPERM)")
        }
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "io_uring_setup was denied (EPERM/EACCES): most likely a seccomp profile (Docker's default blocks io_uring) or kernel.io_uring_group".into()
        }
        Some(libc::ENOMEM) => {
            let memlock = std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|l| l.lines().find(|l| l.starts_with("Max locked memory")).map(str::to_string))
                .unwrap_or_default();
            format!("not enough locked memory for the ring (ENOMEM); {memlock}")
        }
        Some(libc::EINVAL) => "the kernel rejected the ring flags (EINVAL): SINGLE_ISSUER and DEFER_TASKRUN need Linux 6.1".into(),
        _ => format!("io_uring_setup failed: {e}"),
    }
}

impl Uring {
    /// A ring for a core whose provided buffer ring holds `provided_buffers`;
    /// with `wake_polls`, beside it the wake ring (`wake_ring.rs`), or none
    /// with a log line if that cannot be set up.
    pub(crate) fn new(
        eventfd: RawFd,
        wakes: Arc<WakeCount>,
        provided_buffers: u32,
        wake_polls: bool,
    ) -> Result<(Uring, OwnedFd)> {
        // TASKRUN_FLAG: the kernel sets IORING_SQ_TASKRUN when it queues
        // deferred task work (a socket became ready for an armed receive),
        // so a poll that need not wait can skip the enter when there is none
        // (`poll`). A kernel that refuses the flag with DEFER_TASKRUN gets
        // the ring without it, and every such poll enters.
        let build = |taskrun_flag: bool, cq_entries: u32| {
            let mut builder = IoUring::builder();
            builder
                .setup_single_issuer()
                .setup_defer_taskrun()
                .setup_r_disabled()
                .setup_submit_all()
                .setup_cqsize(cq_entries);
            if taskrun_flag {
                builder.setup_taskrun_flag();
            }
            builder.build(limits::RING_ENTRIES)
        };
        // The largest completion queue the kernel gives: where ring memory
        // counts against a small RLIMIT_MEMLOCK (no CAP_IPC_LOCK), a
        // smaller one, as long as it leaves OPS_IN_FLIGHT_MIN operations.
        let mut cq_entries = limits::RING_CQ_ENTRIES;
        let (ring, taskrun_flag) = loop {
            let attempt = match build(true, cq_entries) {
                Ok(ring) => (Ok(ring), true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => (build(false, cq_entries), false),
                Err(e) => (Err(e), false),
            };
            match attempt {
                (Err(e), _)
                    if e.raw_os_error() == Some(libc::ENOMEM)
                        && ops_max_for(cq_entries / 2, provided_buffers) >= limits::OPS_IN_FLIGHT_MIN =>
                {
                    cq_entries /= 2;
                }
                attempt => break attempt,
            }
        };
        let ring = ring.map_err(|source| Error::RingSetup {
            reason: explain_setup_error(&source),
            source,
        })?;
        let cq_entries = ring.params().cq_entries();
        let ops_max = ops_max_for(cq_entries, provided_buffers);
        if ops_max < limits::OPS_IN_FLIGHT_MIN {
            return Err(Error::RingSetup {
                reason: format!(
                    "a completion queue of {cq_entries} entries leaves room for {ops_max} operations beside {provided_buffers} provided buffers; at least {} are needed",
                    limits::OPS_IN_FLIGHT_MIN
                ),
                source: io::Error::from(io::ErrorKind::OutOfMemory),
            });
        }
        if cq_entries < limits::RING_CQ_ENTRIES {
            tracing::info!(
                cq_entries,
                ops_max,
                "the kernel refused the largest completion queue (ENOMEM: locked-memory limit?); this core may have fewer operations in flight"
            );
        }
        // The completion bound (module docs) keeps the CQ from overflowing;
        // should it fail, only a kernel that keeps the overflow instead of
        // dropping it (5.5) loses nothing.
        if !ring.params().is_feature_nodrop() {
            return Err(Error::RingSetup {
                reason: "this kernel drops completions when the completion queue overflows (no IORING_FEAT_NODROP, Linux 5.5)".into(),
                source: io::Error::from(io::ErrorKind::Unsupported),
            });
        }
        let register = |what: &'static str| move |source| Error::RingRegister { what, source };
        ring.submitter()
            .register_files_sparse(limits::FIXED_FILES_MAX)
            .map_err(register("sparse fixed-file table"))?;
        let ring_fd = ring.as_raw_fd();
        let ext_arg = ring.params().is_feature_ext_arg();
        // MSG_RING (5.18) wakes parked cores; without it wakers use the eventfd.
        let mut probe = io_uring::Probe::new();
        let msg_ring =
            ring.submitter().register_probe(&mut probe).is_ok() && probe.is_supported(opcode::MsgRingData::CODE);
        if !msg_ring {
            tracing::info!("IORING_OP_MSG_RING unsupported by this kernel: cross-core wake-ups use the eventfd");
        }
        // Registered ring fds are per thread and at most 16 (IO_RINGFD_REG_MAX);
        // a thread that already has 16 falls back to the plain fd.
        let registered_index = match register_ring_fd(ring_fd) {
            Ok(index) => Some(index),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::debug!("this thread has no registered-ring slot left; entering with the plain fd");
                None
            }
            Err(e) => return Err(register("ring fd")(e)),
        };
        let mut restrictions: Vec<Restriction> =
            ALLOWED_OPCODES.iter().map(|(op, _)| Restriction::sqe_op(*op)).collect();
        restrictions.extend(ALLOWED_REGISTER_OPS.iter().map(|op| Restriction::register_op(*op)));
        restrictions.push(Restriction::sqe_flags_allowed(ALLOWED_SQE_FLAGS));
        ring.submitter()
            .register_restrictions(&mut restrictions)
            .map_err(register("restrictions"))?;
        ring.submitter()
            .register_enable_rings()
            .map_err(register("enable rings"))?;
        let wake_ring = if wake_polls {
            match WakeRing::new() {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "no wake ring: this core's Unix streams get no wake polls");
                    None
                }
            }
        } else {
            None
        };
        // SAFETY: dup returns a new fd we own, or -1.
        let dup = unsafe { libc::fcntl(ring_fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return Err(register("ring fd duplicate")(io::Error::last_os_error()));
        }
        // SAFETY: `dup` is a fresh fd owned by nobody else.
        let dup = unsafe { OwnedFd::from_raw_fd(dup) };
        let uring = Uring {
            ring: RefCell::new(ring),
            ring_fd,
            registered_index,
            ext_arg,
            taskrun_flag,
            eventfd,
            state: RefCell::new(State {
                slots: Vec::with_capacity(limits::RING_ENTRIES as usize),
                free: Vec::with_capacity(limits::RING_ENTRIES as usize),
                in_flight: 0,
                unsubmitted: 0,
                room_waiters: VecDeque::new(),
                notify_armed: false,
                fixed_free: (0..limits::FIXED_FILES_MAX).rev().collect(),
                orphan_buffers: Vec::with_capacity(limits::BUF_RING_ENTRIES_DEFAULT as usize),
                cq_overflows: 0,
                enters: 0,
                to_wake: Vec::with_capacity(limits::COMPLETIONS_PER_TICK_MAX),
                to_release: Vec::with_capacity(limits::COMPLETIONS_PER_TICK_MAX),
            }),
            shut_down: std::cell::Cell::new(false),
            leaked_in_flight: std::cell::Cell::new(false),
            wake_ring,
            msg_ring,
            ops_max,
            wakes,
        };
        uring.arm_notify();
        Ok((uring, dup))
    }

    /// Calls `f` with the ring's submitter, for register operations.
    pub(crate) fn with_submitter<R>(&self, f: impl FnOnce(&io_uring::Submitter<'_>) -> R) -> R {
        let ring = self.ring.borrow();
        f(&ring.submitter())
    }

    fn arm_notify(&self) {
        let entry = opcode::PollAdd::new(types::Fd(self.eventfd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(NOTIFY_TAG);
        self.push(entry);
        self.state.borrow_mut().notify_armed = true;
    }

    /// Pushes an entry onto the submission queue, flushing it to the kernel
    /// first if it is full.
    fn push(&self, entry: squeue::Entry) {
        loop {
            let pushed = {
                let mut ring = self.ring.borrow_mut();
                let mut sq = ring.submission();
                // SAFETY: every entry is built by an operation type whose
                // memory the kernel uses lives on the heap and is owned by the
                // operation's slot until its last completion (see op/mod.rs).
                unsafe { sq.push(&entry) }.is_ok()
            };
            if pushed {
                self.state.borrow_mut().unsubmitted += 1;
                return;
            }
            let unsubmitted = self.state.borrow().unsubmitted;
            match self.enter(unsubmitted, 0, 0) {
                Ok(n) => self.state.borrow_mut().unsubmitted -= n.min(unsubmitted),
                Err(e) => panic!("io_uring_enter failed while flushing a full submission queue: {e}"),
            }
        }
    }

    fn enter(&self, to_submit: u32, min_complete: u32, flags: u32) -> io::Result<u32> {
        self.enter_with(to_submit, min_complete, flags, None)
    }

    /// `io_uring_enter`; with `timeout`, a wait for `min_complete` ends
    /// after that long at the latest (IORING_ENTER_EXT_ARG, Linux 5.11).
    fn enter_with(
        &self,
        to_submit: u32,
        min_complete: u32,
        flags: u32,
        timeout: Option<std::time::Duration>,
    ) -> io::Result<u32> {
        let (fd, mut flags) = match self.registered_index {
            Some(index) => (index as RawFd, flags | IORING_ENTER_REGISTERED_RING),
            None => (self.ring_fd, flags),
        };
        let ts;
        let arg;
        let (arg_ptr, arg_size) = match timeout {
            Some(t) => {
                debug_assert!(self.ext_arg, "a timed wait on a kernel without IORING_FEAT_EXT_ARG");
                ts = libc::timespec {
                    tv_sec: t.as_secs() as libc::time_t,
                    tv_nsec: t.subsec_nanos() as libc::c_long,
                };
                arg = GeteventsArg {
                    sigmask: 0,
                    sigmask_sz: 0,
                    min_wait_usec: 0,
                    ts: &ts as *const libc::timespec as u64,
                };
                flags |= IORING_ENTER_EXT_ARG;
                (
                    &arg as *const GeteventsArg as *const libc::c_void,
                    std::mem::size_of::<GeteventsArg>(),
                )
            }
            None => (std::ptr::null::<libc::c_void>(), 0usize),
        };
        loop {
            self.state.borrow_mut().enters += 1;
            // SAFETY: io_uring_enter with either no argument (NULL, size 0)
            // or, with IORING_ENTER_EXT_ARG, a pointer to a getevents
            // argument of its exact size whose `ts` points to a timespec;
            // both live on this frame until the call returns.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    fd,
                    to_submit,
                    min_complete,
                    flags,
                    arg_ptr,
                    arg_size,
                )
            };
            if ret >= 0 {
                return Ok(ret as u32);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) if min_complete > 0 => return Ok(0),
                Some(libc::EINTR) => continue,
                // A timed wait that timed out.
                Some(libc::ETIME) if timeout.is_some() => return Ok(0),
                // The completion queue is full or the kernel is short of
                // memory for overflowed completions: reap, then retry.
                Some(libc::EBUSY) | Some(libc::EAGAIN) => return Ok(0),
                _ => return Err(err),
            }
        }
    }

    /// Whether a wait can end at a deadline (IORING_FEAT_EXT_ARG).
    pub(crate) fn timed_waits(&self) -> bool {
        self.ext_arg
    }

    /// Submits what is queued and reaps completions; see `Driver::poll`.
    pub(crate) fn poll(&self, wait: Wait) -> usize {
        // Every poll, also one that finds nothing on this ring: a core that
        // only sends still drains the wake ring, whose polls end when its
        // queue is full.
        if let Some(wake_ring) = &self.wake_ring {
            wake_ring.reap();
        }
        let (unsubmitted, in_flight) = {
            let state = self.state.borrow();
            (state.unsubmitted, state.in_flight)
        };
        // Completions the kernel kept aside when the CQ was full (NODROP)
        // reach the CQ only through an enter with GETEVENTS.
        let overflowed = self.cq_overflowed();
        // With DEFER_TASKRUN, completions of armed operations (a receive
        // whose socket became ready) wait as task work until an enter with
        // GETEVENTS runs it. Without anything to submit, a poll that need
        // not wait enters only if some may be pending: always without
        // TASKRUN_FLAG, else only when IORING_SQ_TASKRUN says so. Work
        // queued just after this look is run by the next poll, at the
        // latest by the park's enter.
        let nothing_pending = in_flight == 0 || (self.taskrun_flag && !self.taskrun_pending());
        let submit_now = unsubmitted > 0 && wait != Wait::Reap;
        if !submit_now && nothing_pending && matches!(wait, Wait::No | Wait::Reap) && !overflowed && self.cq_is_empty()
        {
            return 0;
        }
        if overflowed {
            let mut state = self.state.borrow_mut();
            state.cq_overflows += 1;
            if state.cq_overflows == 1 {
                tracing::warn!(
                    "the completion queue overflowed; the kernel kept the overflow (NODROP) and the core flushes it"
                );
            }
        }
        let (min_complete, timeout) = match wait {
            _ if overflowed || !self.cq_is_empty() => (0, None),
            Wait::No | Wait::Reap => (0, None),
            Wait::Forever => (1, None),
            Wait::Until(deadline) if self.ext_arg => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    (0, None)
                } else {
                    (1, Some(left))
                }
            }
            // No timed waits on this kernel: do not wait (callers check
            // `timed_waits` first).
            Wait::Until(_) => (0, None),
        };
        match self.enter_with(unsubmitted, min_complete, IORING_ENTER_GETEVENTS, timeout) {
            Ok(n) => {
                let mut state = self.state.borrow_mut();
                state.unsubmitted -= n.min(state.unsubmitted);
            }
            Err(e) => panic!("io_uring_enter failed: {e}"),
        }
        self.reap()
    }

    /// Whether the kernel queued deferred task work not run yet
    /// (IORING_SQ_TASKRUN; meaningful with TASKRUN_FLAG only).
    fn taskrun_pending(&self) -> bool {
        self.ring.borrow_mut().submission().taskrun()
    }

    /// Whether the kernel holds completions it could not post (IORING_SQ_CQ_OVERFLOW).
    fn cq_overflowed(&self) -> bool {
        self.ring.borrow_mut().submission().cq_overflow()
    }

    /// Times a poll found the completion queue overflowed.
    pub(crate) fn cq_overflows(&self) -> u64 {
        self.state.borrow().cq_overflows
    }

    /// io_uring_enter calls made.
    pub(crate) fn enters(&self) -> u64 {
        self.state.borrow().enters
    }

    /// The core's wake ring, if it has wake polls on (`wake_ring.rs`).
    pub(crate) fn wake_ring(&self) -> Option<&WakeRing> {
        self.wake_ring.as_ref()
    }

    fn cq_is_empty(&self) -> bool {
        self.ring.borrow_mut().completion().is_empty()
    }

    fn reap(&self) -> usize {
        let mut count = 0;
        let mut rearm_notify = false;
        {
            // Completions are handled in place, straight off the CQ (whose
            // head moves when the iterator drops); nothing run here touches
            // the ring or calls out of the driver.
            let mut ring = self.ring.borrow_mut();
            let mut state = self.state.borrow_mut();
            let state = &mut *state;
            for cqe in ring.completion().take(limits::COMPLETIONS_PER_TICK_MAX) {
                count += 1;
                let (user_data, res, flags) = (cqe.user_data(), cqe.result(), cqe.flags());
                match user_data {
                    NOTIFY_TAG => {
                        self.wakes.observed(crate::sys::eventfd_drain(self.eventfd));
                        if !cqueue::more(flags) {
                            state.notify_armed = false;
                            rearm_notify = true;
                        }
                    }
                    MSG_WAKE_TAG => self.wakes.observed(1),
                    IGNORE_TAG => state.in_flight -= 1,
                    index => Self::complete_slot(state, index as u32, res, flags),
                }
            }
            while state.in_flight < self.ops_max {
                match state.room_waiters.pop_front() {
                    Some(waker) => state.to_wake.push(waker),
                    None => break,
                }
            }
        }
        if rearm_notify {
            self.arm_notify();
        }
        if count == 0 && self.state.borrow().to_wake.is_empty() {
            return 0;
        }
        // One borrow takes what the completions left to do outside it.
        let (mut to_wake, mut to_release) = {
            let mut state = self.state.borrow_mut();
            (
                std::mem::take(&mut state.to_wake),
                std::mem::take(&mut state.to_release),
            )
        };
        for (data, res, flags) in to_release.drain(..) {
            data.release(res, flags);
        }
        for waker in to_wake.drain(..) {
            waker.wake();
        }
        let mut state = self.state.borrow_mut();
        state.to_wake = to_wake;
        state.to_release = to_release;
        drop(state);
        count
    }

    fn complete_slot(state: &mut State, index: u32, res: i32, flags: u32) {
        let slot = &mut state.slots[index as usize];
        let more = cqueue::more(flags);
        match slot {
            Slot::Waiting(waker) => {
                if let Some(waker) = waker.take() {
                    state.to_wake.push(waker);
                }
                *slot = Slot::Completed(res, flags);
                state.in_flight -= 1;
            }
            Slot::Ignored(_) => {
                if let Slot::Ignored(data) = std::mem::replace(slot, Slot::Free) {
                    state.to_release.push((data, res, flags));
                }
                state.free.push(index);
                state.in_flight -= 1;
            }
            Slot::Multi(multi) => {
                // A receive holds one provided buffer per queued completion, so
                // the buffer ring bounds its queue; the final completion
                // always gets its place.
                assert!(
                    multi.queue.len() < limits::MULTISHOT_QUEUE_MAX || !more,
                    "a receive queued more completions than the ring has buffers"
                );
                multi.queue.push_back((res, flags));
                if !more {
                    multi.done = true;
                    state.in_flight -= 1;
                }
                if let Some(waker) = multi.waker.take() {
                    state.to_wake.push(waker);
                }
            }
            Slot::MultiIgnored => {
                release_unconsumed(flags, &mut state.orphan_buffers);
                if !more {
                    *slot = Slot::Free;
                    state.free.push(index);
                    state.in_flight -= 1;
                }
            }
            Slot::WakeSent(_) => {
                if let Slot::WakeSent(target) = std::mem::replace(slot, Slot::Free) {
                    if res < 0 {
                        tracing::debug!(res, "a MSG_RING wake-up failed; waking through the eventfd");
                        // An eventfd write: touches nothing of this driver.
                        target.notify_by_eventfd();
                    }
                }
                state.free.push(index);
                state.in_flight -= 1;
            }
            Slot::Free | Slot::Completed(..) => {
                unreachable!("completion for slot {index} that is not in flight")
            }
        }
    }

    /// Operations in flight, cancels included.
    pub(crate) fn in_flight(&self) -> usize {
        self.state.borrow().in_flight
    }

    /// Takes provided buffers that came back in unconsumed completions.
    pub(crate) fn take_orphan_buffers(&self, out: &mut Vec<u16>) {
        out.append(&mut self.state.borrow_mut().orphan_buffers);
    }

    /// Reserves room for one operation in flight, or registers `cx` to be
    /// woken when there is room.
    fn reserve(&self, cx: &mut Context<'_>, multi: bool) -> Poll<u32> {
        let mut state = self.state.borrow_mut();
        if state.in_flight >= self.ops_max {
            // Once per task: a task polled again while it waits must not
            // queue itself twice, so the queue stays within the task limit.
            if !state.room_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                assert!(
                    state.room_waiters.len() <= limits::TASKS_MAX,
                    "more tasks waiting for ring room than a core can hold"
                );
                state.room_waiters.push_back(cx.waker().clone());
            }
            return Poll::Pending;
        }
        state.in_flight += 1;
        let slot = if multi {
            Slot::Multi(MultiState {
                queue: VecDeque::with_capacity(4),
                waker: None,
                done: false,
            })
        } else {
            Slot::Waiting(None)
        };
        Poll::Ready(Self::occupy(&mut state, slot))
    }

    /// Puts `slot` in a free place; returns its index.
    fn occupy(state: &mut State, slot: Slot) -> u32 {
        match state.free.pop() {
            Some(index) => {
                state.slots[index as usize] = slot;
                index
            }
            None => {
                state.slots.push(slot);
                (state.slots.len() - 1) as u32
            }
        }
    }

    /// Operations this ring may have in flight (module docs).
    pub(crate) fn ops_max(&self) -> usize {
        self.ops_max
    }

    /// Submits `entry` for a new single-shot operation once there is room.
    pub(crate) fn submit(&self, cx: &mut Context<'_>, entry: impl FnOnce() -> squeue::Entry) -> Poll<u32> {
        self.submit_inner(cx, false, entry)
    }

    /// Submits `entry` for a new multishot receive once there is room.
    pub(crate) fn submit_multi(&self, cx: &mut Context<'_>, entry: impl FnOnce() -> squeue::Entry) -> Poll<u32> {
        self.submit_inner(cx, true, entry)
    }

    fn submit_inner(&self, cx: &mut Context<'_>, multi: bool, entry: impl FnOnce() -> squeue::Entry) -> Poll<u32> {
        let index = std::task::ready!(self.reserve(cx, multi));
        let mut state = self.state.borrow_mut();
        if let Slot::Waiting(waker) = &mut state.slots[index as usize] {
            *waker = Some(cx.waker().clone());
        }
        drop(state);
        self.push(entry().user_data(u64::from(index)));
        Poll::Ready(index)
    }

    /// Polls a single-shot operation: its result and flags once completed.
    pub(crate) fn poll_op(&self, index: u32, cx: &mut Context<'_>) -> Poll<(i32, u32)> {
        let mut state = self.state.borrow_mut();
        let slot = &mut state.slots[index as usize];
        match slot {
            Slot::Completed(res, flags) => {
                let out = (*res, *flags);
                *slot = Slot::Free;
                state.free.push(index);
                Poll::Ready(out)
            }
            Slot::Waiting(waker) => {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            _ => unreachable!("poll_op on slot {index} that is not a single-shot operation"),
        }
    }

    /// Next completion of a multishot operation; `None` after the last one.
    pub(crate) fn poll_multi(&self, index: u32, cx: &mut Context<'_>) -> Poll<Option<(i32, u32)>> {
        let mut state = self.state.borrow_mut();
        let Slot::Multi(multi) = &mut state.slots[index as usize] else {
            unreachable!("poll_multi on slot {index} that is not multishot");
        };
        if let Some(cqe) = multi.queue.pop_front() {
            return Poll::Ready(Some(cqe));
        }
        if multi.done {
            state.slots[index as usize] = Slot::Free;
            state.free.push(index);
            return Poll::Ready(None);
        }
        match &multi.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => multi.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Called when the future of a single-shot operation is dropped: keeps
    /// its owned data until the kernel is done, and asks the kernel to cancel.
    pub(crate) fn drop_op(&self, index: u32, data: Box<dyn Orphan>) {
        let mut state = self.state.borrow_mut();
        let slot = &mut state.slots[index as usize];
        match slot {
            Slot::Completed(res, flags) => {
                // Completed, not yet taken: what the completion carries (an
                // accepted fd) is released with the data, outside the borrow.
                let (res, flags) = (*res, *flags);
                *slot = Slot::Free;
                state.free.push(index);
                drop(state);
                data.release(res, flags);
            }
            Slot::Waiting(_) => {
                *slot = Slot::Ignored(data);
                drop(state);
                self.cancel(index);
            }
            _ => unreachable!("drop_op on slot {index} that is not a single-shot operation"),
        }
    }

    /// Called when the consumer of a multishot receive is dropped: releases
    /// the provided buffers its unconsumed completions carry into
    /// `unconsumed_buffers` (for the pool) and cancels it if it is still
    /// armed.
    pub(crate) fn drop_multi(&self, index: u32, unconsumed_buffers: &mut Vec<u16>) {
        let mut state = self.state.borrow_mut();
        let Slot::Multi(multi) = &mut state.slots[index as usize] else {
            unreachable!("drop_multi on slot {index} that is not multishot");
        };
        for (_, flags) in multi.queue.drain(..) {
            release_unconsumed(flags, unconsumed_buffers);
        }
        let done = multi.done;
        if done {
            state.slots[index as usize] = Slot::Free;
            state.free.push(index);
        } else {
            state.slots[index as usize] = Slot::MultiIgnored;
            drop(state);
            self.cancel(index);
        }
    }

    fn cancel(&self, index: u32) {
        // Cancels may exceed `ops_max` by at most one per operation in
        // flight; the completion queue is sized for that (`ops_max_for`).
        self.state.borrow_mut().in_flight += 1;
        self.push(super::entries::cancel(u64::from(index)).user_data(IGNORE_TAG));
    }

    /// Queues a MSG_RING wake-up to another core's ring; false if there is
    /// no room (the caller then uses the eventfd). Its completion here says
    /// whether it arrived; if it did not, the target gets the eventfd.
    pub(crate) fn msg_ring_wake(&self, target: &Arc<Unparker>) -> bool {
        let Some(target_ring_fd) = target.ring_fd() else {
            return false;
        };
        if !self.msg_ring {
            return false;
        }
        let index = {
            let mut state = self.state.borrow_mut();
            if state.in_flight >= self.ops_max {
                return false;
            }
            state.in_flight += 1;
            Self::occupy(&mut state, Slot::WakeSent(target.clone()))
        };
        self.push(super::entries::msg_ring(target_ring_fd, MSG_WAKE_TAG).user_data(u64::from(index)));
        // Sent now, not at this core's next enter: the target is parked and
        // this core may be about to run tasks for a while.
        self.issue_queued();
        true
    }

    /// Issues every entry still queued in the submission queue.
    ///
    /// The kernel resolves an entry's fixed-file slot when it issues the
    /// entry, and from then on keeps that file alive for the request until
    /// it completes, whatever happens to the slot. An entry still queued
    /// names only a slot number. So before a slot's file changes, whatever
    /// is queued is issued: an entry built for the old file (a receive of a
    /// socket being dropped, say) reaches that file and never the next
    /// socket to take the slot.
    fn issue_queued(&self) {
        loop {
            let unsubmitted = self.state.borrow().unsubmitted;
            if unsubmitted == 0 {
                return;
            }
            match self.enter(unsubmitted, 0, 0) {
                // SUBMIT_ALL: the kernel goes on past an entry that fails, so
                // a call that takes nothing means it cannot take any now.
                Ok(0) => panic!("io_uring_enter took none of {unsubmitted} queued entries"),
                Ok(n) => {
                    let mut state = self.state.borrow_mut();
                    state.unsubmitted -= n.min(state.unsubmitted);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("io_uring_enter failed while issuing queued entries: {e}"),
            }
        }
    }

    /// A free fixed-file slot holding `fd`, if any is left.
    pub(crate) fn register_fixed(&self, fd: RawFd) -> Option<u32> {
        // No queued entry names a free slot: `unregister_fixed` issued them
        // all before it freed it.
        let slot = self.state.borrow_mut().fixed_free.pop()?;
        let ok = self.with_submitter(|s| s.register_files_update(slot, &[fd]));
        match ok {
            Ok(_) => Some(slot),
            Err(e) => {
                tracing::debug!(error = %e, fd, "fixed-file registration failed; using the plain fd");
                self.state.borrow_mut().fixed_free.push(slot);
                None
            }
        }
    }

    /// Empties a fixed-file slot. Entries naming it that are still queued
    /// are issued first (see `issue_queued`); requests in flight keep the
    /// old file until they complete.
    pub(crate) fn unregister_fixed(&self, slot: u32) {
        self.issue_queued();
        if let Err(e) = self.with_submitter(|s| s.register_files_update(slot, &[-1])) {
            tracing::warn!(error = %e, slot, "clearing a fixed-file slot failed; the slot is leaked");
            return;
        }
        self.state.borrow_mut().fixed_free.push(slot);
    }
}

impl Uring {
    /// Cancels every operation in flight and waits for their completions, so
    /// that no buffer owned by an Ignored slot is freed while the kernel may
    /// still write into it. The ring file outlives this value (CoreShared
    /// keeps a duplicate of its fd for MSG_RING), so closing our fd alone
    /// would not make the kernel cancel anything. Idempotent.
    /// Whether shutdown gave up with operations still in flight (their
    /// memory, and the receive-buffer pool, must then never be freed).
    pub(crate) fn leaked_in_flight(&self) -> bool {
        self.leaked_in_flight.get()
    }

    pub(crate) fn shutdown(&self) {
        if self.shut_down.replace(true) {
            return;
        }
        let cancel_all = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(IGNORE_TAG);
        self.state.borrow_mut().in_flight += 1;
        self.push(cancel_all);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let unsubmitted = self.state.borrow().unsubmitted;
            if let Ok(n) = self.enter(unsubmitted, 1, IORING_ENTER_GETEVENTS) {
                let mut state = self.state.borrow_mut();
                state.unsubmitted -= n.min(state.unsubmitted);
            }
            self.reap();
            let in_flight = self.state.borrow().in_flight;
            if in_flight == 0 {
                return;
            }
            if std::time::Instant::now() >= deadline {
                tracing::error!(in_flight, "operations still in flight when the core stopped; leaking their buffers rather than freeing memory the kernel may write");
                let slots = std::mem::take(&mut self.state.borrow_mut().slots);
                std::mem::forget(slots);
                self.leaked_in_flight.set(true);
                return;
            }
        }
    }
}

impl Drop for Uring {
    fn drop(&mut self) {
        self.shutdown();
        if let Some(index) = self.registered_index.take() {
            if let Err(e) = update_ring_fds(self.ring_fd, UNREGISTER_RING_FDS, index, 0) {
                tracing::warn!(error = %e, "unregistering the ring fd failed");
            }
        }
    }
}

fn register_ring_fd(ring_fd: RawFd) -> io::Result<u32> {
    update_ring_fds(ring_fd, REGISTER_RING_FDS, u32::MAX, ring_fd as u64)
}

/// IORING_(UN)REGISTER_RING_FDS with one io_uring_rsrc_update; returns the
/// offset the kernel chose (register) or the one given (unregister).
fn update_ring_fds(ring_fd: RawFd, opcode: u8, offset: u32, data: u64) -> io::Result<u32> {
    #[repr(C)]
    struct RsrcUpdate {
        offset: u32,
        resv: u32,
        data: u64,
    }
    let mut update = RsrcUpdate { offset, resv: 0, data };
    // SAFETY: the opcode takes an array of one io_uring_rsrc_update, whose
    // layout RsrcUpdate matches; the kernel may write the offset back.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            ring_fd,
            u32::from(opcode),
            &mut update as *mut RsrcUpdate,
            1u32,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(update.offset)
}
