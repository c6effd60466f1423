//! The epoll back end's file-IO pool: positional reads and writes run on a
//! few helper threads, never on the core.
//!
//! epoll cannot wait for a regular file (it is always "ready"), and a
//! pread of uncached data, a slow disk or a network file system would stall
//! every task of the core. So on epoll `read_at`/`write_at` become a
//! [`FileJob`] that a pool thread runs; the result comes back through a
//! [`Completion`] and the thread wakes the waiting task with its `Waker`,
//! which (from a foreign thread) queues the task on its core's remote queue
//! and wakes the core if it is parked. The future completes on the core.
//!
//! **One pool per core**, not one per process: cores share nothing, so one
//! core's stuck or slow files (a FIFO nobody writes, a hung NFS mount) can
//! occupy only its own threads and queue, the queue is contended only by its
//! core and its own threads, and the bound a test or a user sees does not
//! depend on what other cores do. The cost is up to
//! [`FILE_IO_THREADS_MAX`](limits::FILE_IO_THREADS_MAX) threads per core that
//! does file IO, started on demand (a core that never reads a file starts
//! none).
//!
//! **Ownership.** A job owns its buffer (operations take buffers by value)
//! and holds the fd number only. When the future is dropped, the job keeps
//! the buffer: a job no thread has taken yet is skipped, one already running
//! finishes its system call into its own buffer, then frees it and discards
//! the result. No memory the thread writes is ever freed under it. The
//! caller's promise that the fd stays open lasts until the future completes
//! or is dropped, as on io_uring; but a job already running when its future
//! is dropped still completes its pread/pwrite on that fd number a little
//! after the drop, exactly as a cancel that reaches io_uring too late does.
//!
//! **Threads** are named `sigma-fileio-N` and block every signal (they are
//! helpers the application does not know of, so a process-directed signal
//! must go to one of its own threads, and must not interrupt a job). They
//! are never joined: when the core stops, the pool closes, queued jobs are
//! dropped, idle threads wake and exit, and a thread still blocked in a
//! system call (a FIFO nobody writes) exits after it returns, or with the
//! process.

use crate::limits;
use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

/// A positional read or write for a pool thread.
pub(crate) struct FileJob<B> {
    pub(crate) fd: RawFd,
    pub(crate) offset: u64,
    pub(crate) buf: B,
    /// The system call: pread or pwrite of `buf` at `offset` on `fd`.
    pub(crate) run: fn(RawFd, &mut B, u64) -> io::Result<usize>,
}

/// What a pool thread runs: a job with its completion, type-erased. It
/// takes the pool, to count itself out of `in_flight` when its call is done.
type Task = Box<dyn FnOnce(&Shared) + Send>;

struct State {
    /// Jobs no thread has taken yet (at most `FILE_IO_QUEUE_MAX`).
    queue: VecDeque<Task>,
    /// Tasks waiting for room in the queue: all are woken when a thread
    /// takes a job (and each re-checks). Each task appears at most once.
    room_waiters: Vec<Waker>,
    /// Jobs submitted whose call has not returned and that were not skipped
    /// (dropped futures' jobs included): what `CoreStats::ops_in_flight`
    /// reports on epoll.
    in_flight: usize,
    threads: usize,
    idle: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool closes.
    work: Condvar,
}

impl Shared {
    /// The state; a poisoned lock is taken as is (nothing panics while
    /// holding it, and the state stays consistent between statements).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One core's file-IO pool.
pub(crate) struct FilePool {
    shared: Arc<Shared>,
}

/// The outcome of offering a job to the pool.
pub(crate) enum Submit<B> {
    /// Queued: the result arrives through this.
    Queued(Arc<Completion<B>>),
    /// The queue is full; the job is handed back and the task will be woken
    /// when there is room.
    Full(FileJob<B>),
    /// No thread could be started and none runs: the error and the buffer.
    Failed(io::Error, B),
}

impl FilePool {
    pub(crate) fn new() -> FilePool {
        FilePool {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    room_waiters: Vec::new(),
                    in_flight: 0,
                    threads: 0,
                    idle: 0,
                    closed: false,
                }),
                work: Condvar::new(),
            }),
        }
    }

    /// Jobs submitted and not finished (queued, running, or dropped by
    /// their futures and still running).
    pub(crate) fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Queues `job`, starting a thread if none is idle for it and fewer than
    /// `FILE_IO_THREADS_MAX` run.
    pub(crate) fn submit<B: Send + 'static>(&self, job: FileJob<B>, cx: &mut Context<'_>) -> Submit<B> {
        let mut state = self.shared.lock();
        if state.queue.len() >= limits::FILE_IO_QUEUE_MAX {
            if !state.room_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                state.room_waiters.push(cx.waker().clone());
            }
            return Submit::Full(job);
        }
        // The queued jobs, this one included, outnumber the idle threads.
        if state.queue.len() >= state.idle && state.threads < limits::FILE_IO_THREADS_MAX {
            // Started under the lock (at most FILE_IO_THREADS_MAX times per
            // core), so that a failure can hand the job back before it is
            // queued behind no thread at all.
            match self.start_thread(state.threads) {
                Ok(()) => state.threads += 1,
                Err(e) if state.threads == 0 => return Submit::Failed(e, job.buf),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start another file-IO thread; the running ones take the job")
                }
            }
        }
        let completion = Arc::new(Completion {
            slot: Mutex::new(Slot::Pending(Some(cx.waker().clone()))),
        });
        let done = completion.clone();
        state
            .queue
            .push_back(Box::new(move |pool: &Shared| run_job(job, &done, pool)));
        state.in_flight += 1;
        drop(state);
        self.shared.work.notify_one();
        Submit::Queued(completion)
    }

    fn start_thread(&self, index: usize) -> io::Result<()> {
        let shared = self.shared.clone();
        // The new thread inherits the mask: it never runs with signals open.
        let mask = crate::sys::block_all_signals();
        let spawned = std::thread::Builder::new()
            .name(format!("sigma-fileio-{index}"))
            .spawn(move || worker(&shared));
        crate::sys::set_signal_mask(&mask);
        spawned.map(drop)
    }
}

impl Drop for FilePool {
    fn drop(&mut self) {
        // No future of this core is left (each holds its core), so every
        // queued job is abandoned: drop them here. Running ones finish alone.
        let (queued, waiters) = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.in_flight -= state.queue.len();
            (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.room_waiters),
            )
        };
        self.shared.work.notify_all();
        drop(queued);
        drop(waiters);
    }
}

/// A pool thread: takes jobs until the pool closes.
fn worker(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if let Some(task) = state.queue.pop_front() {
            let waiters = std::mem::take(&mut state.room_waiters);
            drop(state);
            for waker in waiters {
                waker.wake();
            }
            task(shared);
            state = shared.lock();
            continue;
        }
        if state.closed {
            state.threads -= 1;
            return;
        }
        state.idle += 1;
        state = shared.work.wait(state).unwrap_or_else(PoisonError::into_inner);
        state.idle -= 1;
    }
}

/// Runs `job` unless its future is gone, and completes it. The job leaves
/// the pool's `in_flight` count before its task is woken, so a task that
/// sees its result also sees the count without it.
fn run_job<B: Send>(job: FileJob<B>, done: &Completion<B>, pool: &Shared) {
    let FileJob {
        fd,
        offset,
        mut buf,
        run,
    } = job;
    if matches!(*done.lock(), Slot::Abandoned) {
        // Dropped before it started: the system call is not made at all.
        pool.lock().in_flight -= 1;
        return;
    }
    // A buffer's own code (`set_init`) runs here; if it panics, the thread
    // survives and the caller gets an error (and its buffer) instead of a
    // future that never completes.
    let res = catch_unwind(AssertUnwindSafe(|| run(fd, &mut buf, offset)))
        .unwrap_or_else(|_| Err(io::Error::other("the buffer panicked in a file-IO thread")));
    pool.lock().in_flight -= 1;
    let waker = {
        let mut slot = done.lock();
        match std::mem::replace(&mut *slot, Slot::Abandoned) {
            Slot::Pending(waker) => {
                *slot = Slot::Done(res, buf);
                waker
            }
            // The future was dropped while the call ran: the buffer is
            // freed here, after the call, when the lock is released.
            _ => None,
        }
    };
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// Where a job's result waits for its future.
pub(crate) struct Completion<B> {
    slot: Mutex<Slot<B>>,
}

enum Slot<B> {
    /// Not finished; the waker of the task to wake when it is.
    Pending(Option<Waker>),
    Done(io::Result<usize>, B),
    /// The future was dropped (or took the result).
    Abandoned,
}

impl<B> Completion<B> {
    fn lock(&self) -> MutexGuard<'_, Slot<B>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The result, once the job finished; otherwise registers the waker.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<(io::Result<usize>, B)> {
        let mut slot = self.lock();
        match std::mem::replace(&mut *slot, Slot::Abandoned) {
            Slot::Done(res, buf) => Poll::Ready((res, buf)),
            Slot::Pending(mut waker) => {
                match &mut waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => waker = Some(cx.waker().clone()),
                }
                *slot = Slot::Pending(waker);
                Poll::Pending
            }
            Slot::Abandoned => panic!("file operation polled after completion"),
        }
    }

    /// The future goes away: a pending job keeps its buffer (and frees it
    /// when it finishes); a finished one's buffer is freed here.
    pub(crate) fn abandon(&self) {
        let finished = std::mem::replace(&mut *self.lock(), Slot::Abandoned);
        drop(finished);
    }
}
