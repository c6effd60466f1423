//! CPU time of the threads doing a measurement's work, read from per-thread (and, for a child
//! server process, per-process) CPU clocks.
//!
//! A [`CpuMeter`] holds the CPU clocks of the threads that do one run's work, each on the client
//! or the server side: the two pinned threads of a ping-pong or RPC pair (registered by
//! [`crate::systems::run_pair`]), or the load generator's thread and the echo server's whole
//! process (`clock_getcpuclockid`). [`CpuMeter::snapshot`] reads them all; two snapshots taken at
//! the ends of the measurement window give a [`CpuUse`]: user + system time of each side over
//! that window and the window's wall time. Rows turn it into `cpu_us_per_op` (CPU of both sides
//! per operation) and `cores_busy` (that CPU over wall time).
//!
//! The clocks are `CLOCK_THREAD_CPUTIME_ID`-style clocks of other threads
//! (`pthread_getcpuclockid`), read with `clock_gettime`: nanosecond resolution, kernel and user
//! time together, charged while the thread runs (softirq work done on a thread's behalf, such
//! as loopback TCP delivery, is charged to whichever thread the CPU was running).
//!
//! A run on a pair of threads makes the meter current on its client thread
//! ([`CpuMeter::set_current`]), so that the recorders of every system pick it up without each
//! system passing it along.

use std::cell::RefCell;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Result};

/// Which end of a measurement a clock belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The client (or load generator).
    Client,
    /// The server.
    Server,
}

/// A CPU-time clock of one thread or one process.
#[derive(Debug, Clone, Copy)]
pub struct Clock(libc::clockid_t);

impl Clock {
    /// The calling thread's CPU clock, readable from any thread of this process while the
    /// calling thread lives.
    pub fn this_thread() -> Result<Clock> {
        let mut id: libc::clockid_t = 0;
        // SAFETY: `pthread_self()` is the calling thread, alive for the call; `id` is writable.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
        if rc != 0 {
            bail!("pthread_getcpuclockid: {}", std::io::Error::from_raw_os_error(rc));
        }
        Ok(Clock(id))
    }

    /// The CPU clock of process `pid` (all its threads).
    pub fn process(pid: u32) -> Result<Clock> {
        let pid = libc::pid_t::try_from(pid)?;
        let mut id: libc::clockid_t = 0;
        // SAFETY: plain call; `id` is writable.
        let rc = unsafe { libc::clock_getcpuclockid(pid, &mut id) };
        if rc != 0 {
            bail!("clock_getcpuclockid({pid}): {}", std::io::Error::from_raw_os_error(rc));
        }
        Ok(Clock(id))
    }

    /// CPU time consumed so far, ns.
    pub fn read_ns(self) -> Result<u64> {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec.
        if unsafe { libc::clock_gettime(self.0, &mut ts) } != 0 {
            bail!("reading a CPU clock: {}", std::io::Error::last_os_error());
        }
        Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }
}

/// CPU consumed by each side up to one moment.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    at: Instant,
    client_ns: u64,
    server_ns: u64,
}

/// CPU time used by each side over a measurement window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuUse {
    /// User + system time of the client side's threads, ns.
    pub client_ns: u64,
    /// User + system time of the server side's threads, ns.
    pub server_ns: u64,
    /// Wall time of the window, ns.
    pub wall_ns: u64,
}

impl CpuUse {
    /// The use between two snapshots of the same meter.
    pub fn between(start: &Snapshot, end: &Snapshot) -> CpuUse {
        CpuUse {
            client_ns: end.client_ns.saturating_sub(start.client_ns),
            server_ns: end.server_ns.saturating_sub(start.server_ns),
            wall_ns: end.at.saturating_duration_since(start.at).as_nanos() as u64,
        }
    }

    /// Sums two windows (rounds of one row).
    pub fn add(&mut self, other: &CpuUse) {
        self.client_ns += other.client_ns;
        self.server_ns += other.server_ns;
        self.wall_ns += other.wall_ns;
    }

    /// CPU of both sides, ns.
    pub fn total_ns(&self) -> u64 {
        self.client_ns + self.server_ns
    }

    /// CPU of both sides per operation over `ops` operations, µs.
    pub fn us_per_op(&self, ops: u64) -> f64 {
        self.total_ns() as f64 / ops.max(1) as f64 / 1000.0
    }

    /// CPU of both sides over wall time: 2.0 means two cores busy throughout.
    pub fn cores_busy(&self) -> Option<f64> {
        (self.wall_ns > 0).then(|| self.total_ns() as f64 / self.wall_ns as f64)
    }
}

/// The CPU clocks of one run's threads.
#[derive(Debug, Default)]
pub struct CpuMeter {
    clocks: Mutex<Vec<(Side, Clock)>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<CpuMeter>>> = const { RefCell::new(None) };
}

impl CpuMeter {
    /// A meter with no clocks yet.
    pub fn new() -> Arc<CpuMeter> {
        Arc::new(CpuMeter::default())
    }

    /// Adds a clock on `side`.
    pub fn add(&self, side: Side, clock: Clock) {
        self.clocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((side, clock));
    }

    /// Adds the calling thread's clock on `side`.
    pub fn add_this_thread(&self, side: Side) -> Result<()> {
        self.add(side, Clock::this_thread()?);
        Ok(())
    }

    /// Reads every clock now.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        let (mut client_ns, mut server_ns) = (0, 0);
        for (side, clock) in clocks.iter() {
            let ns = clock.read_ns()?;
            match side {
                Side::Client => client_ns += ns,
                Side::Server => server_ns += ns,
            }
        }
        Ok(Snapshot {
            at: Instant::now(),
            client_ns,
            server_ns,
        })
    }

    /// Makes `meter` the calling thread's current meter (what [`CpuMeter::current`] returns).
    pub fn set_current(meter: Option<Arc<CpuMeter>>) {
        CURRENT.with(|c| *c.borrow_mut() = meter);
    }

    /// The calling thread's current meter, if a run set one.
    pub fn current() -> Option<Arc<CpuMeter>> {
        CURRENT.with(|c| c.borrow().clone())
    }
}

/// Takes the start and end snapshots of one measurement window. A clock that cannot be read
/// leaves the window without a figure (the row's CPU columns are then null), never a wrong one.
#[derive(Debug)]
pub struct Window {
    meter: Option<Arc<CpuMeter>>,
    start: Option<Snapshot>,
    result: Option<CpuUse>,
    failed: bool,
}

impl Window {
    /// A window over `meter`'s clocks (none: nothing is measured).
    pub fn new(meter: Option<Arc<CpuMeter>>) -> Window {
        Window {
            meter,
            start: None,
            result: None,
            failed: false,
        }
    }

    /// A window over the calling thread's current meter.
    pub fn current() -> Window {
        Window::new(CpuMeter::current())
    }

    /// Marks the start of the window (the first call counts).
    pub fn start(&mut self) {
        if self.start.is_some() || self.failed {
            return;
        }
        match self.meter.as_ref().map(|m| m.snapshot()) {
            Some(Ok(s)) => self.start = Some(s),
            Some(Err(_)) => self.failed = true,
            None => {}
        }
    }

    /// Marks the end of the window (the first call after the start counts).
    pub fn end(&mut self) {
        if self.result.is_some() || self.failed {
            return;
        }
        let Some(start) = &self.start else { return };
        match self.meter.as_ref().map(|m| m.snapshot()) {
            Some(Ok(end)) => self.result = Some(CpuUse::between(start, &end)),
            Some(Err(_)) => self.failed = true,
            None => {}
        }
    }

    /// What the window measured, if both ends were marked and every clock could be read.
    pub fn result(&self) -> Option<CpuUse> {
        self.result
    }
}

/// The CPU of one row over its rounds, and the operations it did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuTotals {
    /// Summed over the rounds that measured CPU.
    pub cpu: CpuUse,
    /// Operations done in those rounds.
    pub ops: u64,
    /// Rounds that measured CPU.
    pub rounds: u32,
    /// Rounds that did not (a clock could not be read).
    pub missing: u32,
}

impl CpuTotals {
    /// Folds in one round's CPU (`None`: not measured) for `ops` operations.
    pub fn add(&mut self, cpu: Option<CpuUse>, ops: u64) {
        match cpu {
            Some(c) => {
                self.cpu.add(&c);
                self.ops += ops;
                self.rounds += 1;
            }
            None => self.missing += 1,
        }
    }

    /// The figures, only when every round measured CPU.
    pub fn complete(&self) -> Option<&CpuTotals> {
        (self.missing == 0 && self.rounds > 0 && self.ops > 0).then_some(self)
    }

    /// CPU of both sides per operation, µs.
    pub fn us_per_op(&self) -> f64 {
        self.cpu.us_per_op(self.ops)
    }

    /// Client CPU per operation, µs.
    pub fn client_us_per_op(&self) -> f64 {
        self.cpu.client_ns as f64 / self.ops as f64 / 1000.0
    }

    /// Server CPU per operation, µs.
    pub fn server_us_per_op(&self) -> f64 {
        self.cpu.server_ns as f64 / self.ops as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// This thread's CPU time.
    fn thread_cpu() -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the live timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    /// Spins until this thread has used `d` of CPU (however long a loaded
    /// host makes that take, up to 10 s of wall time).
    fn burn_cpu(d: Duration) {
        let (start, deadline) = (thread_cpu(), Instant::now() + Duration::from_secs(10));
        while thread_cpu() - start < d && Instant::now() < deadline {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_busy_thread_is_charged_and_a_sleeping_one_is_not() {
        let _cores = crate::cores_for_test();
        let meter = CpuMeter::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let m = meter.clone();
        // The "server" sleeps through the window; this thread, the "client", burns 60 ms of CPU.
        let sleeper = std::thread::spawn(move || {
            m.add_this_thread(Side::Server).unwrap();
            tx.send(()).unwrap();
            let _ = go_rx.recv();
        });
        rx.recv().unwrap();
        meter.add_this_thread(Side::Client).unwrap();
        let mut w = Window::new(Some(meter.clone()));
        w.start();
        burn_cpu(Duration::from_millis(60));
        w.end();
        go_tx.send(()).unwrap();
        sleeper.join().unwrap();
        let c = w.result().expect("both ends marked");
        // The busy thread is charged its 60 ms of CPU (a loaded host only
        // stretches the wall time), never more than the wall time.
        assert!(c.client_ns >= 59_000_000, "{c:?}");
        assert!(c.client_ns <= c.wall_ns + 1_000_000, "{c:?}");
        assert!(c.server_ns < 5_000_000, "a blocked thread used CPU: {c:?}");
        let busy = c.cores_busy().unwrap();
        assert!(busy > 0.0 && busy < 1.1, "{c:?}");
    }

    #[test]
    fn a_child_process_is_charged_through_its_process_clock() {
        // A shell burning CPU for a moment, then exiting.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; sleep 5"])
            .spawn()
            .unwrap();
        let clock = Clock::process(child.id()).unwrap();
        let a = clock.read_ns().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let b = clock.read_ns().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(b > a, "the child's clock did not move: {a} -> {b}");
    }

    #[test]
    fn totals_need_every_round_and_divide_by_ops() {
        let mut t = CpuTotals::default();
        t.add(
            Some(CpuUse {
                client_ns: 3_000,
                server_ns: 1_000,
                wall_ns: 4_000,
            }),
            2,
        );
        t.add(
            Some(CpuUse {
                client_ns: 1_000,
                server_ns: 1_000,
                wall_ns: 4_000,
            }),
            2,
        );
        let c = t.complete().unwrap();
        assert_eq!(c.us_per_op(), 1.5);
        assert_eq!(c.client_us_per_op(), 1.0);
        assert_eq!(c.server_us_per_op(), 0.5);
        assert_eq!(c.cpu.cores_busy(), Some(0.75));
        t.add(None, 2);
        assert!(
            t.complete().is_none(),
            "a round without CPU makes the row's CPU unknown"
        );
    }

    #[test]
    fn a_window_without_a_meter_or_an_end_measures_nothing() {
        let mut w = Window::new(None);
        w.start();
        w.end();
        assert!(w.result().is_none());
        let mut w = Window::new(Some(CpuMeter::new()));
        w.end();
        assert!(w.result().is_none(), "an end without a start");
        w.start();
        assert!(w.result().is_none());
        w.end();
        assert_eq!(w.result().unwrap().total_ns(), 0, "an empty meter has no clocks");
    }
}
