//! The paced (open-loop) load generator of `paced-64B`: one pinned thread, one TCP connection,
//! requests sent on a fixed schedule whether or not earlier replies have come back, the way
//! wrk2 drives a server.
//!
//! Request `k` is *due* at `start + k / rate`. Its latency is measured from that intended time,
//! not from when it was really sent, to when the last byte of its reply was read: a generator
//! that fell behind (descheduled, or blocked on a full socket) still charges the delay to the
//! requests it held up, so a stalled server cannot hide in the figures (coordinated omission,
//! corrected). Replies complete requests in order (an echo server answers bytes in order).
//!
//! How the generator waits: while a reply is outstanding it spins (non-blocking `recv`), so
//! that its own wake-ups do not add to the server's latency. Otherwise it parks in
//! `epoll_pwait2` (nanosecond timeout, 1 ns timer slack) until a little before the next request
//! is due and spins the rest of the way: on these VMs a timed park ends 30–60 µs late, which
//! would otherwise be added to every sample. How early is learned as it runs ([`WakeMargin`]:
//! the 90th percentile of its recent wake-ups' lateness). Every system's server faces the same
//! generator, so differences between rows are the servers'; the generator's own lag behind its
//! schedule is reported beside them.
//!
//! Requests due in `[start + warmup, start + warmup + duration)` are recorded; the generator
//! waits for each of their replies (bounded by [`STALL_TIMEOUT`]) so that the slowest ones are
//! not left out. CPU: the generator's thread on the client side and the caller's server clocks
//! over the sending window.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::affinity::pin_current_thread;
use crate::cpu::{CpuMeter, CpuUse, Side, Window};
use crate::loadgen::{connect, Poller};
use crate::systems::new_histogram;

/// No reply byte for this long while one is outstanding means the server is stuck.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Rates `--rate` accepts, requests per second.
pub const RATE_MIN: u32 = 1;
/// At this rate requests are 5 µs apart, about the loopback round trip's floor: past it the
/// load is no longer "paced".
pub const RATE_MAX: u32 = 200_000;
/// The default rate: gaps of 200 µs, longer than any spin budget.
pub const RATE_DEFAULT: u32 = 5_000;

/// What the generator does.
#[derive(Debug, Clone)]
pub struct PacedSpec {
    /// Echo server address.
    pub addr: SocketAddr,
    /// Requests per second.
    pub rate: u32,
    /// Bytes per request (and per echoed reply).
    pub payload: usize,
    /// Time run before recording.
    pub warmup: Duration,
    /// Recorded time (by intended send time).
    pub duration: Duration,
    /// Core the generator thread is pinned to.
    pub core: usize,
    /// The server's CPU clocks; the generator adds its own thread's on the client side.
    pub cpu: Option<Arc<CpuMeter>>,
}

/// What one paced run measured.
#[derive(Debug)]
pub struct PacedResult {
    /// Latency from intended send time to reply of every recorded request, ns.
    pub hist: Histogram<u64>,
    /// Requests recorded (all that were due in the window).
    pub completed: u64,
    /// How late the generator sent each recorded request, ns (its own lag, which the latencies
    /// include).
    pub send_late: Histogram<u64>,
    /// CPU of the generator and the server over the window.
    pub cpu: Option<CpuUse>,
}

/// The schedule: when request `k` is due.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    interval_ns: f64,
}

impl Schedule {
    /// Requests `rate` per second from `start`.
    pub fn new(start: Instant, rate: u32) -> Schedule {
        Schedule {
            start,
            interval_ns: 1e9 / f64::from(rate.max(1)),
        }
    }

    /// When request `k` is due.
    pub fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_nanos((k as f64 * self.interval_ns).round() as u64)
    }

    /// How many requests fall due before `t` (from the start).
    pub fn count_before(&self, t: Instant) -> u64 {
        let ns = t.saturating_duration_since(self.start).as_nanos() as f64;
        (ns / self.interval_ns).ceil() as u64
    }
}

/// Latency of a request due at `due` whose reply completed at `done`, ns (at least 1).
pub fn corrected_latency_ns(due: Instant, done: Instant) -> u64 {
    (done.saturating_duration_since(due).as_nanos().min(u128::from(u64::MAX)) as u64).max(1)
}

/// How long before a request is due the generator ends its park: the 90th percentile of the
/// lateness of its last [`WakeMargin::WINDOW`] timed wake-ups, plus a little.
#[derive(Debug)]
pub struct WakeMargin {
    recent: VecDeque<u64>,
}

impl WakeMargin {
    /// Wake-ups remembered.
    pub const WINDOW: usize = 32;
    /// The margin before anything is known.
    pub const INITIAL: Duration = Duration::from_micros(100);
    /// Added to the percentile: the spin that follows must start before the request is due.
    pub const EXTRA: Duration = Duration::from_micros(5);

    /// A margin with nothing learnt yet.
    pub fn new() -> WakeMargin {
        WakeMargin {
            recent: VecDeque::with_capacity(Self::WINDOW),
        }
    }

    /// Notes a timed park that ended `late` after the time asked for.
    pub fn observe(&mut self, late: Duration) {
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(late.as_nanos().min(u128::from(u64::MAX)) as u64);
    }

    /// How early to end the next park.
    pub fn margin(&self) -> Duration {
        if self.recent.len() < Self::WINDOW / 2 {
            return Self::INITIAL;
        }
        let mut sorted: Vec<u64> = self.recent.iter().copied().collect();
        sorted.sort_unstable();
        let p90 = sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)];
        Duration::from_nanos(p90) + Self::EXTRA
    }
}

impl Default for WakeMargin {
    fn default() -> Self {
        WakeMargin::new()
    }
}

fn set_timer_slack_1ns() {
    // SAFETY: PR_SET_TIMERSLACK takes an integer; it only changes this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}

/// Parks in `epoll_pwait2` until `fd` is readable or `until`; returns whether it timed out.
fn park_until(epfd: &Poller, until: Instant) -> Result<bool> {
    let wait = until.saturating_duration_since(Instant::now());
    if wait.is_zero() {
        return Ok(false);
    }
    let ts = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
    // SAFETY: `ev` is a writable array of one epoll_event, `ts` a valid timespec, no sigmask.
    let rc = unsafe { libc::epoll_pwait2(epfd.as_raw_fd(), ev.as_mut_ptr(), 1, &ts, std::ptr::null()) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e).context("epoll_pwait2");
        }
    }
    Ok(rc == 0)
}

/// Runs the paced load on the calling thread (pinned to `spec.core`) and returns what it
/// measured.
pub fn run(spec: &PacedSpec) -> Result<PacedResult> {
    if !(RATE_MIN..=RATE_MAX).contains(&spec.rate) {
        bail!("rate {} outside {RATE_MIN}..={RATE_MAX} requests/s", spec.rate);
    }
    if spec.payload == 0 {
        bail!("empty requests cannot be matched to replies");
    }
    pin_current_thread(spec.core)?;
    set_timer_slack_1ns();
    if let Some(m) = &spec.cpu {
        m.add_this_thread(Side::Client)?;
    }
    let mut cpu = Window::new(spec.cpu.clone());

    let mut s = connect(spec.addr)?;
    let epfd = Poller::new()?;
    epfd.watch(s.as_raw_fd(), 0)?;

    let request = vec![0x5au8; spec.payload];
    let mut rxbuf = vec![0u8; 64 * 1024];
    let mut hist = new_histogram();
    // Leave a moment for the connection to settle before the first request is due.
    let sched = Schedule::new(Instant::now() + Duration::from_millis(1), spec.rate);
    let measure_start = sched.start + spec.warmup;
    let measure_end = measure_start + spec.duration;
    let (first_recorded, total) = (sched.count_before(measure_start), sched.count_before(measure_end));
    // Due times of the requests sent and not yet answered, oldest first.
    let mut inflight: VecDeque<Instant> = VecDeque::with_capacity(1024);
    let (mut next, mut completed, mut rx_partial, mut tx_pending) = (0u64, 0u64, 0usize, 0usize);
    let mut send_late = new_histogram();
    let mut margin = WakeMargin::new();
    let mut last_progress = Instant::now();

    loop {
        let now = Instant::now();
        if now >= measure_start {
            cpu.start();
        }
        if now >= measure_end {
            cpu.end();
        }
        // Send every request that is due (several at once if the generator fell behind).
        while next < total && sched.due(next) <= now {
            if next >= first_recorded && next < total {
                send_late.saturating_record(corrected_latency_ns(sched.due(next), now));
            }
            inflight.push_back(sched.due(next));
            tx_pending += spec.payload;
            next += 1;
        }
        while tx_pending > 0 {
            match s.write(&request[..tx_pending.min(request.len())]) {
                Ok(0) => bail!("send returned 0"),
                Ok(k) => tx_pending -= k,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("send"),
            }
        }
        // Read whatever replies are there.
        loop {
            match s.read(&mut rxbuf) {
                Ok(0) => bail!("server closed the connection"),
                Ok(k) => {
                    let t = Instant::now();
                    last_progress = t;
                    rx_partial += k;
                    while rx_partial >= spec.payload {
                        rx_partial -= spec.payload;
                        let due = inflight
                            .pop_front()
                            .context("server echoed more bytes than were sent")?;
                        if due >= measure_start && due < measure_end {
                            hist.saturating_record(corrected_latency_ns(due, t));
                            completed += 1;
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("recv"),
            }
        }
        if next == total && inflight.is_empty() {
            break;
        }
        if inflight.is_empty() {
            last_progress = Instant::now();
            let wake = sched.due(next).checked_sub(margin.margin()).unwrap_or(last_progress);
            if wake > last_progress && park_until(&epfd, wake)? {
                margin.observe(Instant::now().saturating_duration_since(wake));
            }
        } else if last_progress.elapsed() > STALL_TIMEOUT {
            bail!(
                "no reply for {STALL_TIMEOUT:?} with {} request(s) outstanding: server stalled",
                inflight.len()
            );
        } else {
            std::hint::spin_loop();
        }
    }
    // The window ends when the last recorded request is due, even if the loop ended later.
    cpu.end();
    if completed == 0 {
        bail!("no request was due in the measurement window");
    }
    Ok(PacedResult {
        hist,
        completed,
        send_late,
        cpu: cpu.result(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn schedule_spaces_requests_evenly_and_counts_them() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 5_000);
        assert_eq!(s.due(0), t0);
        assert_eq!(s.due(5_000) - t0, Duration::from_secs(1));
        assert_eq!(s.count_before(t0), 0);
        assert_eq!(s.count_before(t0 + Duration::from_micros(1)), 1);
        assert_eq!(s.count_before(t0 + Duration::from_millis(1)), 5);
        assert_eq!(s.count_before(t0 + Duration::from_nanos(1_000_001)), 6);
    }

    #[test]
    fn the_wake_margin_follows_the_recent_lateness() {
        let mut m = WakeMargin::new();
        assert_eq!(m.margin(), WakeMargin::INITIAL);
        for _ in 0..WakeMargin::WINDOW {
            m.observe(Duration::from_micros(30));
        }
        assert_eq!(m.margin(), Duration::from_micros(30) + WakeMargin::EXTRA);
        // One wild wake-up in the window does not move the 90th percentile; a run of late ones
        // does, and old ones age out.
        m.observe(Duration::from_millis(3));
        assert_eq!(m.margin(), Duration::from_micros(30) + WakeMargin::EXTRA);
        for _ in 0..WakeMargin::WINDOW {
            m.observe(Duration::from_micros(50));
        }
        assert_eq!(m.margin(), Duration::from_micros(50) + WakeMargin::EXTRA);
    }

    #[test]
    fn latency_runs_from_the_intended_send_time() {
        // A request due at t0 but sent 10 ms late (the sender was held up) and answered 50 µs
        // after it was sent counts 10.05 ms, not 50 µs.
        let due = Instant::now();
        let sent = due + Duration::from_millis(10);
        let done = sent + Duration::from_micros(50);
        assert_eq!(corrected_latency_ns(due, done), 10_050_000);
        assert_eq!(corrected_latency_ns(done, due), 1, "never zero or negative");
    }

    /// An echo server on a thread that stalls `stall` once, after `stall_after` requests.
    fn stalling_echo(stall_after: usize, stall: Duration) -> (SocketAddr, Arc<AtomicBool>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = [0u8; 64];
            let mut n = 0;
            while s.read_exact(&mut buf).is_ok() {
                n += 1;
                if n == stall_after && stall > Duration::ZERO {
                    std::thread::sleep(stall);
                    flag.store(true, Ordering::SeqCst);
                }
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        });
        (addr, stalled)
    }

    fn spec(addr: SocketAddr) -> PacedSpec {
        PacedSpec {
            addr,
            rate: 5_000,
            payload: 64,
            warmup: Duration::from_millis(50),
            duration: Duration::from_secs(1),
            core: 0,
            cpu: None,
        }
    }

    #[test]
    fn a_server_that_stalls_10ms_once_shows_in_the_p999() {
        let _cores = crate::cores_for_test();
        // 5,000 requests at 5,000/s; one 10 ms stall at the 2,000th holds up ~50 of them by
        // 10 ms down to 0.2 ms, about 1% of the samples: the p99.9 must see it, the median not.
        let (addr, stalled) = stalling_echo(2_000, Duration::from_millis(10));
        let r = run(&spec(addr)).unwrap();
        assert!(stalled.load(Ordering::SeqCst), "the server never stalled");
        assert_eq!(r.completed, 5_000, "every request due in the window is recorded");
        assert_eq!(r.hist.len(), 5_000);
        let p999_us = r.hist.value_at_quantile(0.999) / 1000;
        let p50_us = r.hist.value_at_quantile(0.5) / 1000;
        assert!(p999_us >= 7_000, "p99.9 {p999_us} us hides a 10 ms stall");
        assert!(r.hist.max() >= 9_000_000, "max {} ns", r.hist.max());
        assert!(p50_us < 2_000, "p50 {p50_us} us: the stall leaked into the median");
    }

    #[test]
    fn without_a_stall_every_request_is_recorded_and_cpu_is_measured() {
        let _cores = crate::cores_for_test();
        let (addr, _) = stalling_echo(usize::MAX, Duration::ZERO);
        let meter = CpuMeter::new();
        let r = run(&PacedSpec {
            cpu: Some(meter),
            ..spec(addr)
        })
        .unwrap();
        assert_eq!(r.completed, 5_000);
        assert_eq!(r.send_late.len(), 5_000, "every recorded send's lag is known");
        let cpu = r.cpu.expect("the generator's clock was read");
        assert!(cpu.client_ns > 0 && cpu.wall_ns >= 900_000_000, "{cpu:?}");
    }

    #[test]
    fn bad_rates_are_refused() {
        // Refused before connecting: nothing listens there.
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for rate in [0, RATE_MAX + 1] {
            let e = run(&PacedSpec { rate, ..spec(addr) }).unwrap_err();
            assert!(format!("{e}").contains("outside"), "{e}");
        }
    }
}
