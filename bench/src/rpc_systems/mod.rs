//! The systems of the `rpc` suite: the [`RpcSystem`] trait, the registry and shared helpers.
//!
//! An RPC system runs both ends itself: a server thread pinned to one core and a client thread
//! pinned to another, one TCP loopback connection between them (the helper is
//! [`crate::systems::run_pair`], the same one the `peers` ping-pongs use). The payload is 64 bytes
//! each way and the handler echoes the request's payload.
//!
//! To add a system: write `src/rpc_systems/NAME.rs` with a unit struct implementing
//! [`RpcSystem`], add `mod NAME;` below and put the struct into [`all`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::cpu::{CpuUse, Window};
use crate::paced::{corrected_latency_ns, PacedResult, Schedule};
use crate::systems::{new_histogram, Measured, PingPongSpec, Transport};

mod sigma;
mod sigma_pingpong;
mod tonic;

/// What one sequential RPC run does: `warmup + calls` calls, each issued when the previous
/// one returned.
#[derive(Debug, Clone)]
pub struct RpcSeqSpec {
    /// Request payload; the reply carries the same bytes back.
    pub payload_bytes: usize,
    /// Recorded calls.
    pub calls: u64,
    /// Calls made first and not recorded.
    pub warmup: u64,
    /// Core of the client thread.
    pub client_core: usize,
    /// Core of the server thread.
    pub server_core: usize,
    /// How long the server's handler works (busy on its core) before it answers each call:
    /// zero for a bare echo; some hundreds of µs for a client waiting on a backend that
    /// computes, where what the client pays to wait shows.
    pub work: Duration,
}

/// What one pipelined RPC run does: `in_flight` calls outstanding on one connection, a new one
/// issued as each completes, for `warmup` and then `duration`.
#[derive(Debug, Clone)]
pub struct RpcPipeSpec {
    /// Request payload; the reply carries the same bytes back.
    pub payload_bytes: usize,
    /// Calls outstanding at any time.
    pub in_flight: usize,
    /// Time run before measuring.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Core of the client thread.
    pub client_core: usize,
    /// Core of the server thread.
    pub server_core: usize,
}

/// What one paced RPC run does: calls issued open-loop on one connection at `rate` per second
/// (each at its due time, whether or not earlier ones have returned), for `warmup` and then
/// `duration`; latency runs from each call's due time.
#[derive(Debug, Clone)]
pub struct RpcPacedSpec {
    /// Request payload; the reply carries the same bytes back.
    pub payload_bytes: usize,
    /// Calls per second.
    pub rate: u32,
    /// Time run before recording.
    pub warmup: Duration,
    /// Recorded time (by due time).
    pub duration: Duration,
    /// Core of the client thread.
    pub client_core: usize,
    /// Core of the server thread.
    pub server_core: usize,
}

impl RpcPacedSpec {
    /// A TCP ping-pong spec carrying this run's cores (for [`crate::systems::run_pair`]).
    pub(crate) fn pair(&self) -> PingPongSpec {
        pair_spec(self.payload_bytes, self.client_core, self.server_core)
    }
}

/// A TCP ping-pong spec carrying a run's cores for [`crate::systems::run_pair`]; its counts
/// are not used.
fn pair_spec(payload_bytes: usize, client_core: usize, server_core: usize) -> PingPongSpec {
    PingPongSpec {
        transport: Transport::Tcp,
        payload_bytes,
        samples: 0,
        warmup: 0,
        client_core,
        server_core,
    }
}

/// What one pipelined run measured.
#[derive(Debug)]
pub struct PipelinedResult {
    /// Latency (issue to reply) of every call completed in the window, ns.
    pub hist: Histogram<u64>,
    /// Calls completed in the window.
    pub completed: u64,
    /// Length of the window.
    pub elapsed: Duration,
    /// CPU of the client and server threads over the window.
    pub cpu: Option<CpuUse>,
}

/// An RPC layer (or the raw transport it runs on) that the `rpc` suite can measure.
pub trait RpcSystem: Send + Sync {
    /// Name used in rows and on the command line.
    fn name(&self) -> &'static str;
    /// A short note for the row (what the system is, its settings).
    fn note(&self) -> String {
        String::new()
    }
    /// Sequential calls over one connection, client and server on two pinned threads; records
    /// each call's latency in nanoseconds (`spec.calls` samples).
    fn seq(&self, spec: &RpcSeqSpec) -> Result<Measured>;
    /// Pipelined calls over one connection, `spec.in_flight` outstanding.
    fn pipelined(&self, spec: &RpcPipeSpec) -> Result<PipelinedResult>;
    /// Whether the system runs the paced case (`rpc-paced-64B`); the others get no row there.
    fn paces(&self) -> bool {
        false
    }
    /// Paced (open-loop) calls over one connection; see [`RpcPacedSpec`] and [`PacedClock`].
    fn paced(&self, _spec: &RpcPacedSpec) -> Result<PacedResult> {
        anyhow::bail!("{} has no paced client", self.name())
    }
}

/// Every known RPC system, in report order.
pub fn all() -> Vec<Box<dyn RpcSystem>> {
    vec![
        Box::new(sigma::Sigma::DEFAULT),
        Box::new(sigma::Sigma::NO_EARLY_WAKE),
        Box::new(sigma_pingpong::SigmaPingPong),
        Box::new(tonic::Tonic),
    ]
}

// ---------------------------------------------------------------------------
// Helpers shared by the implementations.

/// Keeps the calling thread busy for `d` (a handler's work; it does not yield).
pub(crate) fn busy(d: Duration) {
    if d.is_zero() {
        return;
    }
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

impl RpcSeqSpec {
    /// The TCP ping-pong spec with the same shape (for [`crate::systems::run_pair`] and for the
    /// raw ping-pong floor).
    pub(crate) fn pingpong(&self) -> PingPongSpec {
        PingPongSpec {
            transport: Transport::Tcp,
            payload_bytes: self.payload_bytes,
            samples: self.calls,
            warmup: self.warmup,
            client_core: self.client_core,
            server_core: self.server_core,
        }
    }
}

impl RpcPipeSpec {
    /// A TCP ping-pong spec carrying this run's cores (for [`crate::systems::run_pair`]).
    pub(crate) fn pair(&self) -> PingPongSpec {
        pair_spec(self.payload_bytes, self.client_core, self.server_core)
    }
}

/// The clock of a pipelined client: the warm-up, the measurement window and what was recorded
/// in it, with the CPU of the run's threads over the window (the meter `run_pair` made current
/// on the client thread).
pub(crate) struct PipeClock {
    measure_start: Instant,
    end: Instant,
    hist: Histogram<u64>,
    completed: u64,
    cpu: Window,
}

impl PipeClock {
    /// Starts the clock now.
    pub(crate) fn start(spec: &RpcPipeSpec) -> PipeClock {
        let measure_start = Instant::now() + spec.warmup;
        PipeClock {
            measure_start,
            end: measure_start + spec.duration,
            hist: new_histogram(),
            completed: 0,
            cpu: Window::current(),
        }
    }

    /// Records a call issued at `issued` and completed at `done`, if `done` is in the window.
    pub(crate) fn complete(&mut self, issued: Instant, done: Instant) {
        if done >= self.measure_start && done < self.end {
            self.cpu.start();
            let ns = done.duration_since(issued).as_nanos().min(u128::from(u64::MAX)) as u64;
            self.hist.saturating_record(ns.max(1));
            self.completed += 1;
        }
    }

    /// Whether the window is over (no new call should be issued).
    pub(crate) fn over(&mut self, now: Instant) -> bool {
        if now >= self.end {
            self.cpu.end();
            true
        } else {
            false
        }
    }

    /// What was measured; an error if nothing completed in the window.
    pub(crate) fn finish(mut self) -> Result<PipelinedResult> {
        if self.completed == 0 {
            anyhow::bail!("no call completed in the measurement window");
        }
        self.cpu.end();
        Ok(PipelinedResult {
            hist: self.hist,
            completed: self.completed,
            elapsed: self.end.duration_since(self.measure_start),
            cpu: self.cpu.result(),
        })
    }
}

/// The clock of a paced client: which calls are due when, which are recorded, their latencies
/// from their due times (coordinated omission corrected, as in `crate::paced`), the client's lag
/// behind the schedule, and the CPU of the run's threads over the sending window.
pub(crate) struct PacedClock {
    sched: Schedule,
    measure_start: Instant,
    measure_end: Instant,
    first_recorded: u64,
    total: u64,
    hist: Histogram<u64>,
    completed: u64,
    send_late: Histogram<u64>,
    cpu: Window,
}

impl PacedClock {
    /// Starts the schedule a millisecond from now.
    pub(crate) fn start(spec: &RpcPacedSpec) -> PacedClock {
        let sched = Schedule::new(Instant::now() + Duration::from_millis(1), spec.rate);
        let measure_start = sched.due(0) + spec.warmup;
        let measure_end = measure_start + spec.duration;
        PacedClock {
            sched,
            measure_start,
            measure_end,
            first_recorded: sched.count_before(measure_start),
            total: sched.count_before(measure_end),
            hist: new_histogram(),
            completed: 0,
            send_late: new_histogram(),
            cpu: Window::current(),
        }
    }

    /// Calls in the whole run (warm-up included).
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// When call `k` is due.
    pub(crate) fn due(&self, k: u64) -> Instant {
        self.sched.due(k)
    }

    /// Notes that call `k` is being issued now.
    pub(crate) fn issuing(&mut self, k: u64, now: Instant) {
        if k >= self.first_recorded {
            self.cpu.start();
            self.send_late.saturating_record(corrected_latency_ns(self.due(k), now));
        }
        if k + 1 == self.total {
            self.cpu.end();
        }
    }

    /// Records a call due at `due` that completed at `done`, if it was due in the window.
    pub(crate) fn complete(&mut self, due: Instant, done: Instant) {
        if due >= self.measure_start && due < self.measure_end {
            self.hist.saturating_record(corrected_latency_ns(due, done));
            self.completed += 1;
        }
    }

    /// What was measured; an error if no call was recorded.
    pub(crate) fn finish(mut self) -> Result<PacedResult> {
        self.cpu.end();
        if self.completed == 0 {
            anyhow::bail!("no call was due in the measurement window");
        }
        Ok(PacedResult {
            hist: self.hist,
            completed: self.completed,
            send_late: self.send_late,
            cpu: self.cpu.result(),
        })
    }
}

/// FIFO matching of echoed bytes to outstanding messages on one byte stream: each `payload`
/// bytes received complete the oldest message still outstanding.
pub(crate) struct FifoMatcher {
    payload: Vec<u8>,
    inflight: VecDeque<Instant>,
    /// Bytes of the current (incomplete) reply already received.
    partial: usize,
}

impl FifoMatcher {
    pub(crate) fn new(payload: Vec<u8>, in_flight: usize) -> FifoMatcher {
        FifoMatcher {
            payload,
            inflight: VecDeque::with_capacity(in_flight),
            partial: 0,
        }
    }

    /// Notes `n` messages issued at `t`.
    pub(crate) fn issued(&mut self, n: usize, t: Instant) {
        for _ in 0..n {
            self.inflight.push_back(t);
        }
    }

    /// Messages outstanding.
    pub(crate) fn outstanding(&self) -> usize {
        self.inflight.len()
    }

    /// Takes a received chunk: checks its bytes against the payload pattern and calls `done`
    /// with the issue time of every message it completes. Returns how many it completed.
    pub(crate) fn received(&mut self, chunk: &[u8], mut done: impl FnMut(Instant)) -> Result<usize> {
        let len = self.payload.len();
        let mut rest = chunk;
        let mut n = 0;
        while !rest.is_empty() {
            let take = rest.len().min(len - self.partial);
            if rest[..take] != self.payload[self.partial..self.partial + take] {
                anyhow::bail!("echo mismatch in the byte stream");
            }
            rest = &rest[take..];
            self.partial += take;
            if self.partial == len {
                self.partial = 0;
                let t = self
                    .inflight
                    .pop_front()
                    .context("the server echoed more bytes than were sent")?;
                done(t);
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_order() {
        let names: Vec<&str> = all().iter().map(|s| s.name()).collect();
        assert_eq!(names, ["sigma", "sigma-no-early-wake", "sigma-pingpong", "tonic"]);
        let pacers: Vec<&str> = all().iter().filter(|s| s.paces()).map(|s| s.name()).collect();
        assert_eq!(pacers, ["sigma", "tonic"]);
    }

    #[test]
    fn fifo_matcher_completes_oldest_first_across_chunk_boundaries() {
        let p = crate::systems::payload(4);
        let mut m = FifoMatcher::new(p.clone(), 2);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(1);
        m.issued(1, t0);
        m.issued(1, t1);
        let stream: Vec<u8> = p.iter().chain(p.iter()).copied().collect();
        let mut got = Vec::new();
        assert_eq!(m.received(&stream[..3], |t| got.push(t)).unwrap(), 0);
        assert_eq!(m.received(&stream[3..6], |t| got.push(t)).unwrap(), 1);
        assert_eq!(m.received(&stream[6..], |t| got.push(t)).unwrap(), 1);
        assert_eq!(got, [t0, t1]);
        assert_eq!(m.outstanding(), 0);
        assert!(m.received(&p, |_| {}).is_err(), "more bytes than were sent");
        let mut m = FifoMatcher::new(p, 1);
        m.issued(1, t0);
        assert!(m.received(&[9, 9, 9, 9], |_| {}).is_err(), "wrong bytes");
    }
}
