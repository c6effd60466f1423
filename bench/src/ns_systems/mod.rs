//! The systems of the `ns` suite: the [`NsSystem`] trait, the registry, what the suite shares
//! among runs ([`Env`]) and the op clock every client uses.
//!
//! A run has two halves. [`NsSystem::start`] runs on the suite's own thread and starts the
//! server side (a `sigmad` process, or a fresh key prefix in the suite's etcd); the suite owns
//! what it returns and stops it after the run, so a hung client can never leak a server.
//! [`NsSystem::run`] is the client: it runs on a worker thread under a deadline and does one
//! case's sequential operations.
//!
//! To add a system: write `src/ns_systems/NAME.rs` with a unit struct implementing
//! [`NsSystem`], add `mod NAME;` below and put the struct into [`all`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use hdrhistogram::Histogram;

use crate::sigmad::Sigmad;
use crate::systems::new_histogram;
use sigma_tests::etcd::EtcdServer;

mod etcd_raw;
mod sigma;

/// What one operation of a case is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Stat of a file holding `value_bytes`.
    Stat,
    /// Read of a file holding `value_bytes`.
    Read,
    /// Write of `value_bytes` over an existing file.
    Write,
    /// Create of an empty file, then its remove (both in one op).
    CreateRemove,
    /// Watch a path that does not exist, wait `watch_settle`, create it: the sample is the time
    /// from sending the create to the watcher's notification.
    WatchNotify,
    /// Read of a file holding `value_bytes` while a second client (its own connection, on the
    /// same client core) writes `value_bytes` over another file back to back.
    ReadDuringWrites,
}

/// What one run of one case does: `warmup + ops` sequential operations from one client, fewer
/// if `budget` runs out first.
#[derive(Debug, Clone)]
pub struct NsSpec {
    /// The operation.
    pub op: Op,
    /// Recorded operations.
    pub ops: u64,
    /// Operations done first and not recorded.
    pub warmup: u64,
    /// Once this much time has passed (and at least [`MIN_SAMPLES`] were recorded) the run stops.
    pub budget: Duration,
    /// Bytes of the file stat, read and write use.
    pub value_bytes: usize,
    /// How long a watch is given to be set up before the write that fires it.
    pub watch_settle: Duration,
    /// How long one operation may take before the run fails.
    pub op_timeout: Duration,
    /// Core of the client thread.
    pub client_core: usize,
}

/// Samples a run records at least before its time budget may stop it.
pub const MIN_SAMPLES: u64 = 20;

/// What one run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Latency of every recorded operation, ns.
    pub hist: Histogram<u64>,
    /// Wall time from the first recorded operation's start to the last one's end, where a
    /// throughput makes sense (`None` for watch-notify, whose samples are spaced by set-up).
    pub window: Option<Duration>,
    /// watch-notify only: the latency of the write's own reply (from the same start), ns.
    pub write_hist: Option<Histogram<u64>>,
    /// What the client's σ core did while it waited (σ clients only).
    pub client_core: Option<ClientCore>,
}

/// How a σ client core waited during a run: parks, and early wakes (`CoreStats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientCore {
    /// Times the core parked in the kernel.
    pub parks: u64,
    /// Parks that ended by the core's own deadline to spin for the expected work.
    pub early_wakes: u64,
    /// Early wakes during whose spin the work arrived.
    pub early_wakes_caught: u64,
}

impl ClientCore {
    /// Adds another run's counts.
    pub fn add(&mut self, other: &ClientCore) {
        self.parks += other.parks;
        self.early_wakes += other.early_wakes;
        self.early_wakes_caught += other.early_wakes_caught;
    }
}

/// Where a run's client goes.
#[derive(Debug, Clone)]
pub enum Addr {
    /// sigmad's admin Unix socket.
    Sigmad(PathBuf),
    /// The suite's etcd, and a key prefix of this run's own.
    Etcd {
        /// Client URLs.
        endpoints: Vec<String>,
        /// Every key of the run starts with this.
        prefix: String,
    },
}

/// What [`NsSystem::start`] started for one run: where the client goes, and the server process
/// (if any), stopped when this drops.
#[derive(Debug)]
pub struct Started {
    /// Where the client goes.
    pub addr: Addr,
    /// The server process of this run.
    pub sigmad: Option<Sigmad>,
}

/// What the runs of one suite share.
#[derive(Debug)]
pub struct Env {
    /// The sigmad binary, or why there is none.
    pub sigmad: std::result::Result<PathBuf, String>,
    /// The suite's etcd, or why it does not run; `None` if no selected system needs it.
    pub etcd: Option<std::result::Result<EtcdServer, String>>,
    /// Core sigmad's data-plane core is pinned to.
    pub server_core: usize,
    seq: AtomicU64,
}

impl Env {
    /// An environment with the given sigmad binary and etcd.
    pub fn new(
        sigmad: std::result::Result<PathBuf, String>,
        etcd: Option<std::result::Result<EtcdServer, String>>,
        server_core: usize,
    ) -> Env {
        Env {
            sigmad,
            etcd,
            server_core,
            seq: AtomicU64::new(0),
        }
    }

    /// The sigmad binary.
    pub fn sigmad_bin(&self) -> Result<&Path> {
        self.sigmad.as_deref().map_err(|e| anyhow!("{e}"))
    }

    /// The suite's etcd's client URLs.
    pub fn etcd_endpoints(&self) -> Result<Vec<String>> {
        match &self.etcd {
            Some(Ok(etcd)) => Ok(etcd.endpoints()),
            Some(Err(e)) => bail!("{e}"),
            None => bail!("the suite started no etcd"),
        }
    }

    /// What the row of a system on the suite's etcd should say about it.
    pub fn etcd_note(&self) -> Option<String> {
        let etcd = self.etcd.as_ref()?.as_ref().ok()?;
        Some(format!(
            "{} (one member on 127.0.0.1, not pinned, data in {}, fsync per write)",
            etcd.version,
            std::env::temp_dir().display()
        ))
    }

    /// A key prefix no other run uses: `/sigmabench/PID-N/SYSTEM/`.
    pub fn run_prefix(&self, system: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("/sigmabench/{}-{n}/{system}/", std::process::id())
    }
}

/// A namespace service (or etcd itself) that the `ns` suite can measure.
pub trait NsSystem: Send + Sync {
    /// Name used in rows and on the command line.
    fn name(&self) -> &'static str;
    /// A short note for the row (what the system is, how it is reached).
    fn note(&self) -> String {
        String::new()
    }
    /// Whether the system needs the suite's etcd.
    fn needs_etcd(&self) -> bool;
    /// Whether the system runs a sigmad (pinned to the suite's server core).
    fn uses_sigmad(&self) -> bool {
        false
    }
    /// Starts the server side of one run, on the suite's thread.
    fn start(&self, env: &Env) -> Result<Started>;
    /// The client of one run: `spec`'s operations against `addr`, on the calling thread.
    fn run(&self, spec: &NsSpec, addr: &Addr) -> Result<Outcome>;
}

/// Every known system, in report order.
pub fn all() -> Vec<Box<dyn NsSystem>> {
    vec![
        Box::new(sigma::SigmaEmbedded),
        Box::new(sigma::SigmaEtcd),
        Box::new(etcd_raw::EtcdRaw),
    ]
}

/// Counts a run's operations, decides when it stops and records the measured ones.
pub(crate) struct OpClock {
    spec: NsSpec,
    start: Instant,
    hist: Histogram<u64>,
    write_hist: Histogram<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl OpClock {
    /// Starts the clock now.
    pub(crate) fn start(spec: &NsSpec) -> OpClock {
        OpClock {
            spec: spec.clone(),
            start: Instant::now(),
            hist: new_histogram(),
            write_hist: new_histogram(),
            first: None,
            last: None,
        }
    }

    /// Operations to do at most (warm-up + recorded).
    pub(crate) fn total(&self) -> u64 {
        self.spec.warmup + self.spec.ops
    }

    /// Whether operation `i` (0-based) should run: false past the total, or once the time budget
    /// is spent and enough samples were recorded.
    pub(crate) fn go(&self, i: u64) -> bool {
        i < self.total() && !(self.hist.len() >= MIN_SAMPLES && self.start.elapsed() >= self.spec.budget)
    }

    /// Records operation `i`, which started at `t0` and ended at `t1`, unless it is a warm-up one.
    pub(crate) fn record(&mut self, i: u64, t0: Instant, t1: Instant) {
        if i < self.spec.warmup {
            return;
        }
        let ns = t1.saturating_duration_since(t0).as_nanos().min(u128::from(u64::MAX)) as u64;
        self.hist.saturating_record(ns.max(1));
        self.first.get_or_insert(t0);
        self.last = Some(t1);
    }

    /// watch-notify: records the reply to operation `i`'s write, sent at `t0`, received at `t1`.
    pub(crate) fn record_write(&mut self, i: u64, t0: Instant, t1: Instant) {
        if i >= self.spec.warmup {
            let ns = t1.saturating_duration_since(t0).as_nanos().min(u128::from(u64::MAX)) as u64;
            self.write_hist.saturating_record(ns.max(1));
        }
    }

    /// What was measured; `throughput` says whether the window means anything.
    pub(crate) fn finish(self, throughput: bool) -> Result<Outcome> {
        if self.hist.is_empty() {
            bail!("no operation recorded");
        }
        let window = match (self.first, self.last) {
            (Some(a), Some(b)) if throughput && b > a => Some(b - a),
            _ => None,
        };
        Ok(Outcome {
            hist: self.hist,
            window,
            write_hist: (!self.write_hist.is_empty()).then_some(self.write_hist),
            client_core: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_order() {
        let names: Vec<&str> = all().iter().map(|s| s.name()).collect();
        assert_eq!(names, ["sigma-embedded", "sigma-etcd", "etcd-raw"]);
    }

    fn spec(ops: u64, warmup: u64, budget: Duration) -> NsSpec {
        NsSpec {
            op: Op::Stat,
            ops,
            warmup,
            budget,
            value_bytes: 4096,
            watch_settle: Duration::ZERO,
            op_timeout: Duration::from_secs(1),
            client_core: 0,
        }
    }

    #[test]
    fn op_clock_skips_warm_up_and_stops_at_the_total_or_the_budget() {
        let mut c = OpClock::start(&spec(3, 2, Duration::from_secs(3600)));
        let t0 = Instant::now();
        let mut i = 0;
        while c.go(i) {
            c.record(i, t0, t0 + Duration::from_micros(10 * (i + 1)));
            i += 1;
        }
        assert_eq!(i, 5);
        let out = c.finish(true).unwrap();
        assert_eq!(out.hist.len(), 3);
        assert_eq!(out.hist.min() / 1000, 30);
        assert_eq!(out.window, Some(Duration::from_micros(50)));

        // A spent budget stops the run once MIN_SAMPLES are recorded, not before.
        let mut c = OpClock::start(&spec(1000, 0, Duration::ZERO));
        let mut i = 0;
        while c.go(i) {
            c.record(i, t0, t0 + Duration::from_micros(1));
            i += 1;
        }
        assert_eq!(i, MIN_SAMPLES);
        assert_eq!(c.finish(false).unwrap().window, None);

        assert!(OpClock::start(&spec(1, 1, Duration::ZERO)).finish(true).is_err());
    }
}
