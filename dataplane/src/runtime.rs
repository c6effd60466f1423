//! Cores and the runtime: one pinned thread per core, each with its own
//! driver (io_uring, or epoll where io_uring is unavailable), executor and
//! buffer pool. Nothing is shared between cores on the hot path.

use crate::driver::bufpool::BufPool;
use crate::driver::unpark::{self, Unparker, WakeCount};
use crate::driver::{Backend, Driver, Wait};
use crate::error::{Error, Result};
use crate::executor::{self, CoreShared, Executor, TaskHeader, MAIN_SLOT};
use crate::idle::IdlePolicy;
use crate::limits;
use std::cell::RefCell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Everything a core's thread owns; reached through a thread-local.
pub(crate) struct Local {
    pub(crate) shared: Arc<CoreShared>,
    pub(crate) exec: Rc<Executor>,
    pub(crate) driver: Rc<Driver>,
    pub(crate) pool: BufPool,
    pub(crate) cpu: Option<usize>,
    /// Whether to spin, park, or park and wake early when idle (`idle.rs`).
    pub(crate) idle: IdlePolicy,
    pub(crate) stats: Stats,
    backend_reason: String,
}

/// Counters of one core, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CoreStats {
    /// Times the core parked in the kernel after its spin budget ran out.
    pub parks: u64,
    /// Times an idle core parked at once, without spinning, because its
    /// recent waits all outlasted the spin budget.
    pub spins_skipped: u64,
    /// Early wakes: parks that ended by the core's own deadline, a little
    /// before the work it waits for usually arrives, to spin for it.
    pub early_wakes: u64,
    /// Early wakes during whose spin the work arrived (no kernel wake-up
    /// on its path).
    pub early_wakes_caught: u64,
    /// Multishot receives re-armed after the buffer ring ran dry.
    pub recv_rearms_after_enobufs: u64,
    /// Tasks woken from other threads.
    pub remote_wakes: u64,
    /// Tasks that panicked (each dropped alone; the core went on).
    pub tasks_panicked: u64,
    /// Polls that found the completion queue overflowed (io_uring; the
    /// kernel kept the overflow and the core flushed it).
    pub cq_overflows: u64,
    /// io_uring_enter calls (0 on epoll). A core that submits and then
    /// parks does both in one: its submissions ride on the park's enter.
    pub ring_enters: u64,
    /// Operations in flight now: on io_uring, ring operations, including
    /// cancelled ones whose completion has not arrived yet; on epoll, file
    /// reads and writes queued or running on the core's file-IO pool,
    /// including those of dropped futures that have not finished yet.
    pub ops_in_flight: u64,
    /// Operations this core may have in flight before a submission waits
    /// for room (io_uring: what the completion queue holds beyond the
    /// provided buffers and wake-ups, `limits::OPS_IN_FLIGHT_MIN`; epoll:
    /// the file-IO pool's queue and threads).
    pub ops_in_flight_max: u64,
    /// Wake-ups sent to this core by other threads and not yet observed by it
    /// (at most `limits::WAKES_UNOBSERVED_MAX`).
    pub wakes_unobserved: u64,
    /// Wake-ups other threads did not send because
    /// `limits::WAKES_UNOBSERVED_MAX` were already on their way.
    pub wakes_suppressed: u64,
    /// Times a file read or write found the file-IO pool's queue full and
    /// waited for room (epoll; 0 on io_uring).
    pub file_queue_full: u64,
    /// Wake polls armed now (`CoreBuilder::wake_polls`).
    pub wake_polls_armed: u64,
    /// Wake-poll completions: write-space wake-ups of this core's Unix
    /// streams, each of which woke the core if it was parked (io_uring;
    /// dropped on arrival, and they end no park: `driver/wake_ring.rs`).
    pub wake_poll_completions: u64,
    /// Wake polls the kernel ended (the wake ring's queue was full, or the
    /// poll failed); their streams went on without.
    pub wake_polls_ended: u64,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) parks: std::cell::Cell<u64>,
    pub(crate) spins_skipped: std::cell::Cell<u64>,
    pub(crate) early_wakes: std::cell::Cell<u64>,
    pub(crate) early_wakes_caught: std::cell::Cell<u64>,
    pub(crate) recv_rearms_after_enobufs: std::cell::Cell<u64>,
    pub(crate) remote_wakes: std::cell::Cell<u64>,
    pub(crate) file_queue_full: std::cell::Cell<u64>,
}

impl Stats {
    pub(crate) fn snapshot(&self, driver: &Driver, exec: &Executor, unparker: &Unparker) -> CoreStats {
        let wake_ring = driver.uring().and_then(|u| u.wake_ring());
        CoreStats {
            parks: self.parks.get(),
            spins_skipped: self.spins_skipped.get(),
            early_wakes: self.early_wakes.get(),
            early_wakes_caught: self.early_wakes_caught.get(),
            recv_rearms_after_enobufs: self.recv_rearms_after_enobufs.get(),
            remote_wakes: self.remote_wakes.get(),
            tasks_panicked: exec.tasks_panicked(),
            cq_overflows: driver.uring().map_or(0, |u| u.cq_overflows()),
            ring_enters: driver.uring().map_or(0, |u| u.enters()),
            ops_in_flight: match driver {
                Driver::Uring(u) => u.in_flight() as u64,
                Driver::Epoll(e) => e.files().in_flight() as u64,
            },
            ops_in_flight_max: match driver {
                Driver::Uring(u) => u.ops_max() as u64,
                Driver::Epoll(_) => (limits::FILE_IO_QUEUE_MAX + limits::FILE_IO_THREADS_MAX) as u64,
            },
            wakes_unobserved: unparker.wakes_unobserved() as u64,
            wakes_suppressed: unparker.wakes_suppressed(),
            file_queue_full: self.file_queue_full.get(),
            wake_polls_armed: wake_ring.map_or(0, |w| w.armed() as u64),
            wake_poll_completions: wake_ring.map_or(0, |w| w.completions()),
            wake_polls_ended: wake_ring.map_or(0, |w| w.ended()),
        }
    }

    pub(crate) fn bump(counter: &std::cell::Cell<u64>, by: u64) {
        counter.set(counter.get() + by);
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Order matters: tasks (and the operations they own) go first, then
        // everything in flight is cancelled and waited for, then the buffer
        // ring is unregistered while the ring still lives.
        self.exec.clear();
        if let Some(uring) = self.driver.uring() {
            uring.shutdown();
        }
        self.pool.unregister(&self.driver);
    }
}

thread_local! {
    static LOCAL: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// Calls `f` with this thread's core.
///
/// # Panics
///
/// When this thread is not running a σ data-plane core.
pub(crate) fn with_local<R>(f: impl FnOnce(&Local) -> R) -> R {
    // A shared borrow for the duration of `f`: nested calls (wakes, ops)
    // borrow again, and nothing replaces the core until block_on returns,
    // so no Rc clone is needed on this hot path.
    LOCAL.with(|l| match &*l.borrow() {
        Some(local) => f(local),
        None => panic!("not on a σ data-plane core: call this inside Core::block_on"),
    })
}

/// This thread's core, if it runs one.
pub(crate) fn try_local() -> Option<Rc<Local>> {
    LOCAL.with(|l| l.borrow().clone())
}

/// How a core is configured.
#[derive(Debug, Clone)]
pub struct CoreBuilder {
    cpu: Option<usize>,
    spin: Duration,
    be_quantum: Duration,
    backend: Option<Backend>,
    recv_buffers: u16,
    recv_buffer_bytes: usize,
    early_wake: bool,
    wake_polls: Option<bool>,
}

impl Default for CoreBuilder {
    fn default() -> Self {
        Self {
            cpu: None,
            spin: Duration::from_micros(spin_us_from_env().unwrap_or(limits::SPIN_US_DEFAULT)),
            be_quantum: Duration::from_micros(limits::BE_QUANTUM_US_DEFAULT),
            backend: None,
            recv_buffers: limits::BUF_RING_ENTRIES_DEFAULT,
            recv_buffer_bytes: limits::BUF_BYTES_DEFAULT,
            early_wake: early_wake_from_env().unwrap_or(true),
            wake_polls: wake_polls_from_env(),
        }
    }
}

/// The spin budget cores use by default: `SIGMA_SPIN_US` if set (and
/// valid), else [`limits::SPIN_US_DEFAULT`]. Other loops that wait for
/// the same peers (e.g. the control thread's connections) use it too.
pub fn default_spin() -> Duration {
    Duration::from_micros(spin_us_from_env().unwrap_or(limits::SPIN_US_DEFAULT))
}

fn early_wake_from_env() -> Option<bool> {
    bool_from_env("SIGMA_EARLY_WAKE")
}

fn wake_polls_from_env() -> Option<bool> {
    bool_from_env("SIGMA_WAKE_POLL")
}

/// An on/off setting from the environment: `1`/`on` or `0`/`off`; anything
/// else is ignored with a warning.
fn bool_from_env(name: &str) -> Option<bool> {
    let value = std::env::var(name).ok()?;
    match value.as_str() {
        "1" | "on" => Some(true),
        "0" | "off" => Some(false),
        _ => {
            tracing::warn!(value, "ignoring {name}: not 1/on or 0/off");
            None
        }
    }
}

fn spin_us_from_env() -> Option<u64> {
    let value = std::env::var("SIGMA_SPIN_US").ok()?;
    match value.parse::<u64>() {
        Ok(us) if us <= limits::SPIN_US_MAX => Some(us),
        _ => {
            tracing::warn!(
                value,
                "ignoring SIGMA_SPIN_US: not a number of µs up to {}",
                limits::SPIN_US_MAX
            );
            None
        }
    }
}

impl CoreBuilder {
    /// Pins the core's thread to `cpu`.
    pub fn pin(mut self, cpu: usize) -> Self {
        self.cpu = Some(cpu);
        self
    }

    /// How long an idle core spins before it parks in the kernel.
    /// Zero parks at once. Default: `SIGMA_SPIN_US` or [`limits::SPIN_US_DEFAULT`].
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Whether a core whose waits are long and regular parks until a little
    /// before the work usually arrives and spins for it, instead of paying
    /// a kernel wake-up when it arrives (see `docs/spin-budget.md`). Needs
    /// a spin budget above zero and waits with a deadline (io_uring's
    /// IORING_FEAT_EXT_ARG or epoll_pwait2, Linux 5.11). Default: on, or
    /// `SIGMA_EARLY_WAKE=0|1`.
    pub fn early_wake(mut self, on: bool) -> Self {
        self.early_wake = on;
        self
    }

    /// Whether a Unix stream's [`recv_stream`](crate::net::UnixStream::recv_stream)
    /// on io_uring also arms a wake poll: a multishot POLL_ADD(POLLOUT) on
    /// the socket, on a second ring of the core (its wake ring, set up when
    /// this is on) whose completions the core drops. It wakes the parked
    /// core when the peer takes what this core sent, so that the kernel's
    /// wake-up of this core overlaps the peer's work instead of following
    /// it, without ending the park (tokio gets the same from registering
    /// every stream for EPOLLOUT; `docs/parked-rtt.md`). At most
    /// [`limits::WAKE_POLLS_MAX`] per core. TCP streams get none: TCP
    /// signals write space only after a full send buffer. Default: on for
    /// cores that park at once (spin zero), off otherwise, or
    /// `SIGMA_WAKE_POLL=0|1`.
    pub fn wake_polls(mut self, on: bool) -> Self {
        self.wake_polls = Some(on);
        self
    }

    /// How long BE tasks may run before [`maybe_yield`](crate::maybe_yield) yields.
    pub fn be_quantum(mut self, quantum: Duration) -> Self {
        self.be_quantum = quantum;
        self
    }

    /// Forces a back end instead of detecting one (also: `SIGMA_IO=epoll|uring`).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Sizes the receive-buffer pool: `count` buffers (a power of two up to
    /// [`limits::BUF_RING_ENTRIES_MAX`]) of `bytes` each.
    pub fn recv_buffers(mut self, count: u16, bytes: usize) -> Self {
        self.recv_buffers = count;
        self.recv_buffer_bytes = bytes;
        self
    }

    /// Builds the core on the current thread: pins it, creates the ring (or
    /// epoll), the executor and the buffer pool.
    pub fn build(self) -> Result<Core> {
        if self.spin > Duration::from_micros(limits::SPIN_US_MAX) {
            return Err(Error::Config(format!(
                "spin budget {:?} exceeds {} µs",
                self.spin,
                limits::SPIN_US_MAX
            )));
        }
        if !self.recv_buffers.is_power_of_two() || self.recv_buffers > limits::BUF_RING_ENTRIES_MAX {
            return Err(Error::Config(format!(
                "receive buffers: {} is not a power of two up to {}",
                self.recv_buffers,
                limits::BUF_RING_ENTRIES_MAX
            )));
        }
        if !(limits::BUF_BYTES_MIN..=limits::BUF_BYTES_MAX).contains(&self.recv_buffer_bytes) {
            return Err(Error::Config(format!(
                "receive buffer size {} outside {}..={}",
                self.recv_buffer_bytes,
                limits::BUF_BYTES_MIN,
                limits::BUF_BYTES_MAX
            )));
        }
        if let Some(cpu) = self.cpu {
            crate::sys::pin_to_cpu(cpu).map_err(|source| Error::Pin { cpu, source })?;
        }
        if let Err(e) = crate::sys::precise_timers() {
            tracing::warn!(error = %e, "could not set this core's timer slack to 1 ns: its timed waits may end up to 50 µs late");
        }
        let eventfd = crate::sys::eventfd().map_err(Error::EpollSetup)?;
        let wakes = Arc::new(WakeCount::default());
        let wake_polls = self.wake_polls.unwrap_or(self.spin.is_zero());
        let (driver, ring_fd, backend_reason) = Driver::new(
            self.backend,
            eventfd.as_raw_fd(),
            wakes.clone(),
            u32::from(self.recv_buffers),
            wake_polls,
        )?;
        let unparker = Arc::new(Unparker::new(eventfd, ring_fd, wakes));
        let shared = Arc::new(CoreShared::new(unparker.clone()));
        let pool = BufPool::new(&driver, unparker, self.recv_buffers, self.recv_buffer_bytes)?;
        let driver_timed_waits = driver.timed_waits();
        Ok(Core {
            local: Rc::new(Local {
                exec: Rc::new(Executor::new(self.be_quantum, shared.clone())),
                shared,
                driver: Rc::new(driver),
                pool,
                cpu: self.cpu,
                idle: IdlePolicy::new(self.spin, self.early_wake && driver_timed_waits),
                stats: Stats::default(),
                backend_reason,
            }),
        })
    }
}

/// One data-plane core on the current thread.
pub struct Core {
    local: Rc<Local>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("backend", &self.local.driver.backend())
            .field("cpu", &self.local.cpu)
            .field("spin", &self.local.idle.budget())
            .finish()
    }
}

impl Core {
    /// A builder with the defaults.
    pub fn builder() -> CoreBuilder {
        CoreBuilder::default()
    }

    /// The back end this core runs.
    pub fn backend(&self) -> Backend {
        self.local.driver.backend()
    }

    /// Why this back end was chosen (forced, detected, or the io_uring
    /// set-up error that made the core fall back to epoll).
    pub fn backend_reason(&self) -> &str {
        &self.local.backend_reason
    }

    /// Runs `future` to completion on this core, with any tasks it spawns.
    /// Tasks still alive when it completes are dropped, and the cancels of
    /// their operations are sent before it returns.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let previous = LOCAL.with(|l| l.borrow_mut().replace(self.local.clone()));
        assert!(
            previous.is_none(),
            "Core::block_on called inside another core's block_on"
        );
        struct Reset(#[allow(dead_code)] (unpark::Entered, executor::Entered));
        impl Drop for Reset {
            fn drop(&mut self) {
                // Tasks are dropped while the core is still current, since
                // their destructors may cancel operations on it.
                if let Some(local) = try_local() {
                    local.exec.clear();
                    // The dropped tasks' cancels go to the kernel now, and
                    // the task work they cause runs, so that what they held
                    // (a socket's last reference) is released before
                    // `block_on` returns, not at the core's next use.
                    for _ in 0..limits::BLOCK_ON_FLUSHES_MAX {
                        if local.driver.poll(crate::driver::Wait::No) == 0 {
                            break;
                        }
                    }
                    local.pool.drain_returns(&local.driver);
                }
                LOCAL.with(|l| l.borrow_mut().take());
                // Then the driver and executor stop being current (the
                // guards in the field drop after this).
            }
        }
        let _reset = Reset((
            unpark::enter(self.local.shared.id(), self.local.driver.clone()),
            executor::enter(self.local.exec.clone()),
        ));
        let local = self.local.clone();
        let main_waker = Waker::from(Arc::new(TaskHeader {
            core: local.shared.clone(),
            slot: MAIN_SLOT,
            generation: 0,
            remote_queued: AtomicBool::new(false),
        }));
        let mut future = pin!(future);
        local.exec.main_scheduled.set(true);
        loop {
            let mut main_yielded = false;
            if local.exec.main_scheduled.replace(false) {
                let mut cx = Context::from_waker(&main_waker);
                if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
                    return value;
                }
                // Scheduled again by its own poll: it yielded.
                main_yielded = local.exec.main_scheduled.get();
            }
            local.exec.run_tick(main_yielded);
            self.drain_remote();
            local.pool.drain_returns(&local.driver);
            // A core with ready tasks submits now; one about to go idle
            // that parks at once (spin budget zero) leaves its submissions
            // to the park's enter. One with a spin budget submits now too: a
            // completion its submissions bring at once (a cancel's) would
            // otherwise end its next idle period at once, count as a short
            // wait and keep it spinning (tests/cores.rs).
            let wait = if local.exec.has_ready() || !local.idle.budget().is_zero() {
                Wait::No
            } else {
                Wait::Reap
            };
            let completions = local.driver.poll(wait);
            if completions > 0 || local.exec.has_ready() {
                continue;
            }
            self.idle();
        }
    }

    fn drain_remote(&self) -> usize {
        let mut n = 0;
        while let Some(task) = self.local.shared.pop_remote() {
            task.remote_queued.store(false, Ordering::Release);
            self.local.exec.schedule(task.slot, task.generation);
            n += 1;
        }
        Stats::bump(&self.local.stats.remote_wakes, n as u64);
        n
    }

    /// Polls for work without waiting until some arrives (true) or
    /// `until` passes (false).
    fn spin_until(&self, until: Instant) -> bool {
        let local = &self.local;
        loop {
            let n = local.driver.poll(Wait::No) + self.drain_remote() + local.pool.drain_returns(&local.driver);
            if n > 0 || local.exec.has_ready() {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::hint::spin_loop();
        }
    }

    /// Waits for work as the idle policy plans (`idle.rs`): spin for the
    /// budget then park; park at once; or park until a little before the
    /// work usually arrives, spin for it, and park again if it did not.
    fn idle(&self) {
        let local = &self.local;
        let started = Instant::now();
        // A task said what it waits for takes long (`expect_long_wait`): no
        // spin, no early wake, and the period is not remembered.
        let announced = local.idle.take_park_next();
        if !announced {
            if local.idle.spins() {
                if self.spin_until(started + local.idle.budget()) {
                    local.idle.record(started.elapsed(), false);
                    return;
                }
            } else if !local.idle.budget().is_zero() {
                Stats::bump(&local.stats.spins_skipped, 1);
            }
        }
        let mut early = if announced { None } else { local.idle.early() };
        // Whether the period ends with a kernel wake-up from a park.
        let mut parked = false;
        // One idle period is one wait for work, however many times the park
        // returns without any: a signal or io_uring task work interrupting
        // the wait (EINTR), or a completion nobody waits for (a cancelled
        // operation's). Ending the period there would count an interrupted
        // long wait as a short one and turn spinning back on.
        loop {
            local.shared.unparker().prepare_park();
            if self.drain_remote() > 0 || local.pool.drain_returns(&local.driver) > 0 || local.exec.has_ready() {
                local.shared.unparker().unpark();
                break;
            }
            Stats::bump(&local.stats.parks, 1);
            let wait = early.map_or(Wait::Forever, |e| Wait::Until(started + e.wake_after));
            let completions = local.driver.poll(wait);
            parked = true;
            local.shared.unparker().unpark();
            let woken = self.drain_remote();
            if completions + woken > 0 || local.exec.has_ready() {
                break;
            }
            if let Some(e) = early {
                let elapsed = started.elapsed();
                if elapsed >= e.wake_after {
                    early = None;
                    Stats::bump(&local.stats.early_wakes, 1);
                    local.idle.record_timer_lateness(elapsed - e.wake_after);
                    let caught = self.spin_until(started + e.spin_until);
                    local.idle.record_early(caught);
                    if caught {
                        Stats::bump(&local.stats.early_wakes_caught, 1);
                        parked = false;
                        break;
                    }
                }
            }
        }
        if !announced {
            local.idle.record(started.elapsed(), parked);
        }
    }
}

/// Several cores, one pinned thread each.
#[derive(Debug)]
pub struct Runtime {
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Runtime {
    /// Starts one thread per entry of `cpus`, pinned there, builds a core with
    /// `builder`'s settings on it and runs `main(core_index)` to completion.
    pub fn start<F, Fut>(cpus: &[usize], builder: CoreBuilder, main: F) -> Result<Runtime>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let pins: Vec<Option<usize>> = cpus.iter().map(|&cpu| Some(cpu)).collect();
        Runtime::spawn_cores("sigma-core", &pins, builder, main)
    }

    /// [`Runtime::start`] with `count` cores whose threads are left where
    /// the scheduler puts them (not pinned), named `<name>-<index>`: cores
    /// for occasional work beside pinned ones.
    pub fn start_unpinned<F, Fut>(name: &str, count: usize, builder: CoreBuilder, main: F) -> Result<Runtime>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Runtime::spawn_cores(name, &vec![None; count], builder, main)
    }

    /// One thread per entry of `pins` (pinned where it names a cpu), each
    /// building a core and running `main(core_index)`; returns once every
    /// core is built, or the first core's error.
    fn spawn_cores<F, Fut>(name: &str, pins: &[Option<usize>], builder: CoreBuilder, main: F) -> Result<Runtime>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        if pins.len() > limits::CORES_MAX {
            return Err(Error::Config(format!(
                "{} cores asked, at most {}",
                pins.len(),
                limits::CORES_MAX
            )));
        }
        let main = Arc::new(main);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let mut threads = Vec::with_capacity(pins.len());
        for (index, &pin) in pins.iter().enumerate() {
            let builder = match pin {
                Some(cpu) => builder.clone().pin(cpu),
                None => builder.clone(),
            };
            let main = main.clone();
            let ready_tx = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || match builder.build() {
                    Ok(core) => {
                        let _ = ready_tx.send(Ok(()));
                        core.block_on(main(index));
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(|source| Error::SpawnThread { core: index, source })?;
            threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..pins.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::Config("a core thread died while starting".into())),
            }
        }
        Ok(Runtime { threads })
    }

    /// Waits for every core's main future to finish.
    pub fn join(self) -> std::thread::Result<()> {
        for thread in self.threads {
            thread.join()?;
        }
        Ok(())
    }
}
