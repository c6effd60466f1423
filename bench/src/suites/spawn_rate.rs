//! The `spawn-rate` suite: procs started and waited for per second, with many starts in flight.
//!
//! Cases `trivial-c1`, `trivial-c8`, `trivial-c32`: that many threads, each starting the
//! example proc `trivial` (warm: binary in place, realm on the machine), waiting for its exit and
//! starting the next, for the run's budget. `ops_per_s` is the starts completed over the time
//! from the first start to the last thread's last exit; the latency figures are each start's,
//! start to exit seen and reaped; `cpu_us_per_op` is the CPU of sigmabench's process and its
//! reaped children over that window, per start. Systems: `sigma`, `sigma-sandbox` and
//! `vfork-exec` (the floor), at the same concurrency, interleaved and rotated round by round
//! (the registry's `in_rate` systems; Docker is not one).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::spawn::{measured, next_seq, open_systems, set_cpu, verdict, Batch, FLOOR};
use super::with_deadline;
use crate::report::{fmt_ratio, ratio, Doc, Row};
use crate::spawn_systems::{self, Env, Proc, Starter};

/// What the suite runs: the same options as `spawn` (`--quick`: shorter
/// runs, one round).
pub use super::spawn::Options;

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    /// Starts in flight.
    concurrency: usize,
}

const CASES: [Case; 3] = [
    Case {
        name: "trivial-c1",
        concurrency: 1,
    },
    Case {
        name: "trivial-c8",
        concurrency: 8,
    },
    Case {
        name: "trivial-c32",
        concurrency: 32,
    },
];

/// Most threads a case may use (each holds one start in flight).
const CONCURRENCY_MAX: usize = 64;
const _: () = assert!(CASES[2].concurrency <= CONCURRENCY_MAX);
/// Starts each thread makes before the window opens (not recorded).
const WARMUP_PER_THREAD: u64 = 2;
/// The target rate of the issue, procs/s.
const TARGET_RATE: f64 = 3_000.0;

/// Rounds and the window of one run.
#[derive(Debug, Clone, Copy)]
struct Params {
    rounds: u32,
    window: Duration,
}

impl Params {
    fn new(quick: bool, rounds: Option<u32>) -> Params {
        let (r, window) = if quick {
            (1, Duration::from_millis(1500))
        } else {
            (3, Duration::from_secs(5))
        };
        Params {
            rounds: rounds.unwrap_or(r).max(1),
            window,
        }
    }

    fn deadline(&self) -> Duration {
        self.window * 2 + Duration::from_secs(60)
    }
}

/// One run: `concurrency` threads start procs back to back until `window` has passed.
fn run_one(starter: Arc<dyn Starter>, concurrency: usize, window: Duration) -> Result<Batch> {
    assert!((1..=CONCURRENCY_MAX).contains(&concurrency));
    let barrier = Arc::new(Barrier::new(concurrency + 1));
    let failed = Arc::new(AtomicBool::new(false));
    let stop_at = Arc::new(AtomicU64::new(u64::MAX));
    let mut threads = Vec::with_capacity(concurrency);
    for t in 0..concurrency {
        let (starter, barrier, failed, stop_at) = (starter.clone(), barrier.clone(), failed.clone(), stop_at.clone());
        let th = std::thread::Builder::new()
            .name(format!("spawn-rate-{t}"))
            .spawn(move || -> Result<Batch> {
                let warm =
                    (0..WARMUP_PER_THREAD).try_for_each(|_| starter.start_bare(Proc::Trivial, next_seq()).map(|_| ()));
                barrier.wait();
                warm?;
                let mut b = Batch::new();
                let go_on =
                    || spawn_systems::now_ns() < stop_at.load(Ordering::Relaxed) && !failed.load(Ordering::Relaxed);
                let each = &mut |s: spawn_systems::Sample| b.record(s.total_ns, &s.steps);
                if let Err(e) = starter.bare_loop(Proc::Trivial, &next_seq, &go_on, each) {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
                Ok(b)
            })
            .map_err(|e| anyhow!("spawning thread {t}: {e}"))?;
        threads.push(th);
    }
    barrier.wait();
    let daemon0 = starter.daemon_cpu_ns();
    let cpu0 = spawn_systems::own_and_children_cpu_ns();
    let t0 = Instant::now();
    stop_at.store(spawn_systems::now_ns() + window.as_nanos() as u64, Ordering::Relaxed);
    let mut total = Batch::new();
    let mut first_err = None;
    for th in threads {
        match th.join() {
            Ok(Ok(b)) => total.add(&b).map_err(|e| anyhow!("merging histograms: {e}"))?,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(anyhow!("a spawning thread panicked"));
            }
        }
    }
    total.wall_ns = t0.elapsed().as_nanos() as u64;
    total.cpu_ns = spawn_systems::own_and_children_cpu_ns().saturating_sub(cpu0);
    total.daemon_cpu_ns = match (daemon0, starter.daemon_cpu_ns()) {
        (Some(a), Some(z)) => Some(z.saturating_sub(a)),
        _ => None,
    };
    total.runs = 1;
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(total)
}

/// Runs the suite and returns one row per (case, system).
pub fn run(opts: &Options) -> Result<Vec<Row>> {
    let p = Params::new(opts.quick, opts.rounds);
    let nsys = opts.systems.len();
    if nsys == 0 {
        bail!("no systems to run");
    }
    if let Some(s) = opts.systems.iter().find(|s| !s.in_rate) {
        bail!("{} is not a spawn-rate system", s.name);
    }
    let cases = super::select_cases(&CASES, |c| c.name, opts.cases.as_deref())?;
    eprint!("building the example procs ... ");
    let t0 = Instant::now();
    let env = Env::new()?;
    eprintln!("ok ({:.1} s)", t0.elapsed().as_secs_f64());
    let starters = open_systems(&opts.systems, &env);
    let mut accs: Vec<Vec<Batch>> = cases
        .iter()
        .map(|_| (0..nsys).map(|_| Batch::new()).collect())
        .collect();
    let case_names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let system_names: Vec<String> = opts.systems.iter().map(|s| s.name.to_string()).collect();
    let tallies = super::interleave(
        p.rounds,
        &case_names,
        &system_names,
        |_, si| starters[si].is_ok(),
        |ci, si| {
            let Ok(starter) = &starters[si] else {
                bail!("not opened");
            };
            let (starter, c, window) = (Arc::clone(starter), cases[ci].concurrency, p.window);
            with_deadline(&format!("spawn-rate-{}", system_names[si]), p.deadline(), move || {
                run_one(starter, c, window)
            })
        },
        |ci, si, out| {
            let h = &out.hist;
            let rate = h.len() as f64 / (out.wall_ns.max(1) as f64 / 1e9);
            let line = format!(
                "{} starts {rate:.0}/s p50 {:.1}us p99 {:.1}us",
                h.len(),
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0
            );
            (line, accs[ci][si].add(&out))
        },
    );

    let mode = if opts.quick { "quick" } else { "full" };
    let mut rows = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        for (si, sys) in opts.systems.iter().enumerate() {
            let starter = match &starters[si] {
                Ok(s) => s,
                Err(e) => {
                    rows.push(Row::failed(case.name, sys.name, e.clone(), String::new()));
                    continue;
                }
            };
            let acc = &accs[ci][si];
            let note = format!(
                "{mode}: {} round(s) x {:.1} s, {} threads each starting the trivial proc and waiting for its exit back to back (+{WARMUP_PER_THREAD} warm-up starts each); ops/s = starts completed over the time to the last thread's last exit; latency = each start, start to exit seen and reaped; CPU per start: sigmabench's process + its reaped children (getrusage), and the system's daemon where it has one; {}",
                p.rounds,
                p.window.as_secs_f64(),
                case.concurrency,
                starter.bare_note(),
            );
            if let Some(row) = tallies[ci][si].failed_row(case.name, sys.name, p.rounds, &note) {
                rows.push(row);
                continue;
            }
            if acc.hist.is_empty() || acc.wall_ns == 0 {
                rows.push(Row::failed(case.name, sys.name, "no starts recorded".into(), note));
                continue;
            }
            let n = acc.hist.len() as f64;
            let rate = n / (acc.wall_ns as f64 / 1e9);
            let mut row = Row::measured(case.name, sys.name, &acc.hist, Some(rate), note);
            if let (true, Some(cpu)) = (starter.cpu_counted(), acc.total_cpu_ns(&**starter)) {
                set_cpu(&mut row, cpu, n, acc.wall_ns);
            }
            rows.push(row);
        }
    }
    for s in starters.iter().flatten() {
        s.close();
    }
    drop(starters);
    drop(env);
    Ok(rows)
}

/// A row's throughput in a case, if measured.
fn rate(doc: &Doc, case: &str, system: &str) -> Option<f64> {
    measured(doc, case, system).and_then(|r| r.ops_per_s)
}

/// The Markdown after the suite's table: each rate over the floor's, and the targets.
pub fn markdown(doc: &Doc) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nProcs per second over the floor ({FLOOR}) at the same concurrency, and the targets (issue #11: ≥ 0.5 × {FLOOR} and ≥ {TARGET_RATE:.0} procs/s):\n");
    let _ = writeln!(
        out,
        "| case | system | procs/s | × {FLOOR} | ≥ 0.5 × floor | ≥ {TARGET_RATE:.0}/s |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---|---|");
    for r in doc.rows.iter().filter(|r| r.error.is_none()) {
        let x = ratio(r.ops_per_s, rate(doc, &r.case, FLOOR));
        let (v_ratio, v_abs) = if r.system == FLOOR {
            ("(floor)", "(floor)")
        } else {
            (verdict(x, |x| x >= 0.5), verdict(r.ops_per_s, |o| o >= TARGET_RATE))
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {v_ratio} | {v_abs} |",
            r.case,
            r.system,
            r.ops_per_s.map_or("—".into(), |o| format!("{o:.0}")),
            fmt_ratio(x),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_keeps_every_thread_busy_and_counts_cpu() {
        let env = Env::new().unwrap();
        let floor = spawn_systems::all().into_iter().find(|s| s.name == FLOOR).unwrap();
        let starter = (floor.open)(&env).unwrap();
        let b = run_one(starter, 4, Duration::from_millis(300)).unwrap();
        assert!(b.hist.len() >= 4, "{} starts", b.hist.len());
        assert!(b.wall_ns >= 300_000_000, "{}", b.wall_ns);
        assert!(b.cpu_ns > 0);
    }
}
