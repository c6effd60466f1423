//! The `spawn` suite: how long one proc start takes, from the first thing the system does to
//! the proc's exit seen and reaped, with a breakdown of where the time went.
//!
//! Cases: `warm-start` (binary already in the machine's cache, realm already on the machine),
//! `cold-start` (the binary brought from the local store into the cache and verified, in a realm
//! not yet on the machine) and `cold-start-s3` (the same from an S3 server: an s3s-fs server
//! in this process, `sigma_tests::s3`, as the store of a sigmad of its own, and for the floor a
//! bare signed GET from a server of its own; the systems without a binary store have rows that
//! say why, [`System::s3_missing`]). Every case starts
//! the example proc `big` (`tests/procs/big.rs`: a static binary of a little over 10 MiB that
//! exits 0 at once), so the systems run the same bytes.
//!
//! Systems ([`crate::spawn_systems`]): `sigma` (through sigmad), `sigma-sandbox` (σ's sandbox
//! alone, in this process), `vfork-exec` (the floor) and `docker`, interleaved and rotated round
//! by round. Each is opened once per suite run; one that cannot be opened gets error rows.
//!
//! The Markdown adds the breakdown (p50 of each step) and each row's p50 over the floor's, and
//! the targets with the ratios measured ([`markdown`]).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;

use super::with_deadline;
use crate::report::{fmt_ratio, fmt_us, ratio, Doc, Row};
use crate::spawn_systems::{self, Env, Proc, Start, Starter, Steps, System, STEPS_COUNT};
use crate::systems::new_histogram;

/// The floor every row is compared with.
pub const FLOOR: &str = "vfork-exec";

/// What the suite runs.
pub struct Options {
    /// `--quick`: fewer starts, one round.
    pub quick: bool,
    /// Rounds (`None`: 1 quick, 3 full).
    pub rounds: Option<u32>,
    /// Systems to run, in report order.
    pub systems: Vec<Arc<System>>,
    /// Only these cases (`None`: all), by name.
    pub cases: Option<Vec<String>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("quick", &self.quick)
            .field("rounds", &self.rounds)
            .field("systems", &self.systems.iter().map(|s| s.name).collect::<Vec<_>>())
            .field("cases", &self.cases)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    how: Start,
    /// Recorded starts per run at most, with `--quick` and without.
    quick_starts: u64,
    full_starts: u64,
    /// Starts done first and not recorded (the warm cgroup pool fills, the page cache warms).
    warmup: u64,
}

const CASES: [Case; 3] = [
    Case {
        name: "warm-start",
        how: Start::Warm,
        quick_starts: 200,
        full_starts: 1_000,
        warmup: 3,
    },
    Case {
        name: "cold-start",
        how: Start::Cold,
        quick_starts: 40,
        full_starts: 200,
        warmup: 1,
    },
    // The warm-up start also opens the `sigma` system's S3 side (an S3 server and a sigmad on
    // it), before the run's CPU is first read.
    Case {
        name: "cold-start-s3",
        how: Start::ColdS3,
        quick_starts: 40,
        full_starts: 200,
        warmup: 1,
    },
];

/// Rounds and time budgets of one mode.
#[derive(Debug, Clone, Copy)]
struct Params {
    quick: bool,
    rounds: u32,
    /// Time one run may take (after which it stops with what it recorded, once it has
    /// [`MIN_STARTS`]).
    budget: Duration,
}

/// Recorded starts a run makes even past its budget (Docker's take about half a second each).
const MIN_STARTS: u64 = 5;

impl Params {
    fn new(quick: bool, rounds: Option<u32>) -> Params {
        let (r, budget) = if quick {
            (1, Duration::from_millis(2500))
        } else {
            (3, Duration::from_secs(15))
        };
        Params {
            quick,
            rounds: rounds.unwrap_or(r).max(1),
            budget,
        }
    }

    fn starts(&self, case: &Case) -> u64 {
        if self.quick {
            case.quick_starts
        } else {
            case.full_starts
        }
    }

    /// Deadline of one run: its budget, the minimum starts at Docker's pace, and slack.
    fn deadline(&self) -> Duration {
        self.budget * 2 + Duration::from_secs(90)
    }
}

/// Start numbers, unique in this process (proc ids, cache file names, realm names).
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The next start number.
pub fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// What a run (or the rounds of one row) measured.
pub struct Batch {
    /// Start to exit seen and reaped, ns.
    pub hist: Histogram<u64>,
    /// Each step, ns, where the system reports it.
    pub steps: Vec<Histogram<u64>>,
    /// CPU of this process and its reaped children over the recorded starts, ns.
    pub cpu_ns: u64,
    /// Wall time of the recorded starts, ns.
    pub wall_ns: u64,
    /// CPU of the system's daemons over the recorded starts, ns, where the system has some and
    /// every run could read it.
    pub daemon_cpu_ns: Option<u64>,
    /// Runs folded in.
    pub runs: u32,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch {
            hist: new_histogram(),
            steps: (0..STEPS_COUNT).map(|_| new_histogram()).collect(),
            cpu_ns: 0,
            wall_ns: 0,
            daemon_cpu_ns: None,
            runs: 0,
        }
    }

    /// Records one start.
    pub fn record(&mut self, total_ns: u64, steps: &Steps) -> Result<()> {
        self.hist.record(total_ns.max(1))?;
        for (h, v) in self.steps.iter_mut().zip(steps.as_array()) {
            if let Some(v) = v {
                h.record(v.max(1))?;
            }
        }
        Ok(())
    }

    /// Folds another batch in.
    pub fn add(&mut self, other: &Batch) -> Result<(), String> {
        self.hist.add(&other.hist).map_err(|e| format!("{e:?}"))?;
        for (a, b) in self.steps.iter_mut().zip(&other.steps) {
            a.add(b).map_err(|e| format!("{e:?}"))?;
        }
        self.cpu_ns += other.cpu_ns;
        self.wall_ns += other.wall_ns;
        // A daemon figure only when every run had one.
        self.daemon_cpu_ns = match (self.runs, self.daemon_cpu_ns, other.daemon_cpu_ns) {
            (0, _, d) => d,
            (_, Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.runs += 1;
        Ok(())
    }

    /// All the CPU of the recorded starts, ns: this process tree's and the system's daemons'
    /// (`None` when the system has daemons and a run could not read them).
    pub fn total_cpu_ns(&self, starter: &dyn Starter) -> Option<u64> {
        match (starter.daemon_cpu_ns().is_some(), self.daemon_cpu_ns) {
            (false, _) => Some(self.cpu_ns),
            (true, Some(d)) => Some(self.cpu_ns + d),
            (true, None) => None,
        }
    }

    /// The breakdown: each step's p50, µs, or `None` where no start reported it.
    pub fn breakdown(&self) -> crate::report::Breakdown {
        let mut us = [None; STEPS_COUNT];
        for (u, h) in us.iter_mut().zip(&self.steps) {
            if !h.is_empty() {
                *u = Some(h.value_at_quantile(0.5) as f64 / 1000.0);
            }
        }
        Steps::breakdown(us)
    }
}

impl Default for Batch {
    fn default() -> Batch {
        Batch::new()
    }
}

/// Opens every selected system for this suite run (progress on stderr); an error says why it
/// cannot run.
pub fn open_systems(systems: &[Arc<System>], env: &Env) -> Vec<Result<Arc<dyn Starter>, String>> {
    systems
        .iter()
        .map(|s| {
            eprint!("opening {} ... ", s.name);
            let t0 = Instant::now();
            let r = (s.open)(env).map_err(|e| format!("{e:#}"));
            match &r {
                Ok(_) => eprintln!("ok ({:.1} s)", t0.elapsed().as_secs_f64()),
                Err(e) => eprintln!("ERROR: {e}"),
            }
            r
        })
        .collect()
}

/// One run: `warmup` starts, then recorded ones until `starts` or the budget (with at least
/// [`MIN_STARTS`]).
fn run_one(starter: &dyn Starter, how: Start, starts: u64, warmup: u64, budget: Duration) -> Result<Batch> {
    for _ in 0..warmup {
        starter.start(how, Proc::Big, next_seq())?;
    }
    let mut b = Batch::new();
    let daemon0 = starter.daemon_cpu_ns();
    let cpu0 = spawn_systems::own_and_children_cpu_ns();
    let t0 = Instant::now();
    let mut n = 0;
    while n < starts && (n < MIN_STARTS || t0.elapsed() < budget) {
        let s = starter.start(how, Proc::Big, next_seq())?;
        b.record(s.total_ns, &s.steps)?;
        n += 1;
    }
    b.wall_ns = t0.elapsed().as_nanos() as u64;
    b.cpu_ns = spawn_systems::own_and_children_cpu_ns().saturating_sub(cpu0);
    b.daemon_cpu_ns = match (daemon0, starter.daemon_cpu_ns()) {
        (Some(a), Some(z)) => Some(z.saturating_sub(a)),
        _ => None,
    };
    Ok(b)
}

/// Runs the suite and returns one row per (case, system), cases in order, systems in
/// `opts.systems` order.
pub fn run(opts: &Options) -> Result<Vec<Row>> {
    let p = Params::new(opts.quick, opts.rounds);
    let nsys = opts.systems.len();
    if nsys == 0 {
        bail!("no systems to run");
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
    let applies = |ci: usize, si: usize| not_measured(&cases[ci], &opts.systems[si]).is_none();
    let tallies = super::interleave(
        p.rounds,
        &case_names,
        &system_names,
        |ci, si| applies(ci, si) && starters[si].is_ok(),
        |ci, si| {
            let case = cases[ci];
            let Ok(starter) = &starters[si] else {
                bail!("not applicable");
            };
            let starter = Arc::clone(starter);
            let (starts, budget) = (p.starts(&case), p.budget);
            with_deadline(&format!("spawn-{}", system_names[si]), p.deadline(), move || {
                run_one(&*starter, case.how, starts, case.warmup, budget)
            })
        },
        |ci, si, out| {
            let h = &out.hist;
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let line = format!("{} starts p50 {:.1}us p99 {:.1}us", h.len(), us(0.5), us(0.99));
            (line, accs[ci][si].add(&out))
        },
    );

    let mode = if opts.quick { "quick" } else { "full" };
    let mut rows = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        for (si, sys) in opts.systems.iter().enumerate() {
            if let Some(why) = not_measured(case, sys) {
                rows.push(Row::failed(
                    case.name,
                    sys.name,
                    format!("not measured: {why}"),
                    String::new(),
                ));
                continue;
            }
            let how = case.how;
            let starter = match &starters[si] {
                Ok(s) => s,
                Err(e) => {
                    rows.push(Row::failed(case.name, sys.name, e.clone(), String::new()));
                    continue;
                }
            };
            let acc = &accs[ci][si];
            let mut note = format!(
                "{mode}: {} round(s) x up to {} starts (+{} warm-up) or {:.1} s (at least {MIN_STARTS}); the big proc ({:.1} MiB static binary, exits 0 at once); sample = start to exit seen and reaped; {}; breakdown fields are each step's p50",
                p.rounds,
                p.starts(case),
                case.warmup,
                p.budget.as_secs_f64(),
                env.big_bytes as f64 / (1 << 20) as f64,
                starter.note(how),
            );
            if starter.cpu_counted() && starter.daemon_cpu_ns().is_none() {
                note.push_str("; CPU: sigmabench's process + its reaped children (getrusage), per start");
            }
            if let (Some(d), false, false) = (acc.daemon_cpu_ns, acc.hist.is_empty(), starter.cpu_counted()) {
                let n = acc.hist.len() as f64;
                note.push_str(&format!(
                    "; CPU per start, a lower bound: sigmabench's process tree {:.0} µs + the daemons {:.0} µs (from /proc/PID/stat, 10 ms ticks)",
                    acc.cpu_ns as f64 / n / 1000.0,
                    d as f64 / n / 1000.0
                ));
            }
            if let Some(row) = tallies[ci][si].failed_row(case.name, sys.name, p.rounds, &note) {
                rows.push(row);
                continue;
            }
            if acc.hist.is_empty() {
                rows.push(Row::failed(case.name, sys.name, "no starts recorded".into(), note));
                continue;
            }
            let mut row = Row::measured(case.name, sys.name, &acc.hist, None, note);
            row.breakdown = Some(acc.breakdown());
            if let (true, Some(cpu)) = (starter.cpu_counted() && acc.wall_ns > 0, acc.total_cpu_ns(&**starter)) {
                set_cpu(&mut row, cpu, acc.hist.len().max(1) as f64, acc.wall_ns);
            }
            rows.push(row);
        }
    }
    // Systems go (Docker images removed, realms and cgroups undone) before the store.
    for s in starters.iter().flatten() {
        s.close();
    }
    drop(starters);
    drop(env);
    Ok(rows)
}

/// Why `sys` does not run `case`, if it does not: a start from S3 needs a binary store.
fn not_measured(case: &Case, sys: &System) -> Option<&'static str> {
    match case.how {
        Start::ColdS3 => sys.s3_missing,
        Start::Warm | Start::Cold => None,
    }
}

/// The CPU a row's `ops` cost over `wall_ns`: per op, and cores busy.
pub(crate) fn set_cpu(row: &mut Row, cpu_ns: u64, ops: f64, wall_ns: u64) {
    row.cpu_us_per_op = Some((cpu_ns as f64 / ops).round() / 1000.0);
    row.cores_busy = Some((cpu_ns as f64 / wall_ns as f64 * 1000.0).round() / 1000.0);
}

/// A system's measured row in a case, if any.
pub(crate) fn measured<'a>(doc: &'a Doc, case: &str, system: &str) -> Option<&'a Row> {
    doc.rows
        .iter()
        .find(|r| r.case == case && r.system == system && r.error.is_none())
}

/// A row's p50 in a case, if measured.
fn p50(doc: &Doc, case: &str, system: &str) -> Option<f64> {
    measured(doc, case, system).and_then(|r| r.p50_us)
}

/// `met`, `missed` or `not measured`.
pub(crate) fn verdict(measured: Option<f64>, ok: impl Fn(f64) -> bool) -> &'static str {
    match measured {
        Some(m) if ok(m) => "met",
        Some(_) => "missed",
        None => "not measured",
    }
}

/// The Markdown after the suite's table: the breakdown, each p50 over the floor's, the targets.
pub fn markdown(doc: &Doc) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nBreakdown (p50 of each step, µs; — where a step does not apply) and p50 over the floor ({FLOOR}) in the same case:\n"
    );
    let _ = writeln!(
        out,
        "| case | system | p50 µs | × {FLOOR} | schedule | fetch | verify | namespaces | cgroups | jail | seccomp | exec→started | started→reaped |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in doc.rows.iter().filter(|r| r.error.is_none()) {
        let b = r.breakdown.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.case,
            r.system,
            fmt_us(r.p50_us),
            fmt_ratio(ratio(r.p50_us, p50(doc, &r.case, FLOOR))),
            fmt_us(b.schedule_us),
            fmt_us(b.fetch_us),
            fmt_us(b.verify_us),
            fmt_us(b.namespaces_us),
            fmt_us(b.cgroups_us),
            fmt_us(b.jail_us),
            fmt_us(b.seccomp_us),
            fmt_us(b.exec_to_started_us),
            fmt_us(b.started_to_reaped_us),
        );
    }
    let _ = writeln!(out, "\nTargets (issue #11), p50:\n");
    let _ = writeln!(out, "| target | system | measured | verdict |");
    let _ = writeln!(out, "|---|---|---:|---|");
    for sys in ["sigma", "sigma-sandbox"] {
        if !doc.rows.iter().any(|r| r.system == sys) {
            continue;
        }
        let warm = ratio(p50(doc, "warm-start", sys), p50(doc, "warm-start", FLOOR));
        let cold = p50(doc, "cold-start", sys);
        let cold_docker = ratio(cold, p50(doc, "cold-start", "docker"));
        let cold_docker_warm = ratio(cold, p50(doc, "warm-start", "docker"));
        let s3 = ratio(p50(doc, "cold-start-s3", sys), cold);
        let lines = [
            (
                format!("warm-start ≤ 2 × {FLOOR}"),
                fmt_ratio(warm),
                verdict(warm, |r| r <= 2.0),
            ),
            (
                "cold-start ≤ 5 ms".to_string(),
                cold.map_or("—".into(), |c| format!("{:.2} ms", c / 1000.0)),
                verdict(cold, |c| c <= 5000.0),
            ),
            (
                "cold-start ≤ 0.01 × docker cold-start".to_string(),
                // Four places: at two, 0.0118 reads "0.01×" beside "missed".
                cold_docker.map_or("—".into(), |r| format!("{r:.4}×")),
                verdict(cold_docker, |r| r <= 0.01),
            ),
            (
                "(also) cold-start ≤ 0.01 × docker warm-start".to_string(),
                // Four places: at two, 0.0118 reads "0.01×" beside "missed".
                cold_docker_warm.map_or("—".into(), |r| format!("{r:.4}×")),
                verdict(cold_docker_warm, |r| r <= 0.01),
            ),
            (
                "cold-start-s3 ≤ 2 × cold-start".to_string(),
                fmt_ratio(s3),
                verdict(s3, |r| r <= 2.0),
            ),
        ];
        for (target, measured, v) in lines {
            let _ = writeln!(out, "| {target} | {sys} | {measured} | {v} |");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system(name: &'static str, open: fn(&Env) -> Result<Arc<dyn Starter>>) -> Arc<System> {
        Arc::new(System {
            name,
            open,
            in_rate: true,
            s3_missing: Some("no S3 here"),
        })
    }

    /// A system that starts nothing: each start takes 1 ms with a 300 µs fetch when cold, and
    /// counts the starts of each kind.
    struct Fake {
        starts: std::sync::Mutex<Vec<Start>>,
    }

    static FAKE: std::sync::OnceLock<Arc<Fake>> = std::sync::OnceLock::new();

    impl Starter for Fake {
        fn start(&self, how: Start, proc: Proc, _seq: u64) -> Result<spawn_systems::Sample> {
            assert_eq!(proc, Proc::Big);
            self.starts.lock().unwrap().push(how);
            Ok(spawn_systems::Sample {
                total_ns: 1_000_000,
                steps: Steps {
                    fetch: (how != Start::Warm).then_some(300_000),
                    ..Steps::default()
                },
            })
        }

        fn note(&self, _how: Start) -> String {
            "fake".into()
        }
    }

    #[test]
    fn cold_start_s3_runs_the_systems_with_a_store_and_says_why_not_for_the_others() {
        let fake = FAKE.get_or_init(|| {
            Arc::new(Fake {
                starts: std::sync::Mutex::new(Vec::new()),
            })
        });
        let with_store = Arc::new(System {
            name: "with-store",
            open: |_| Ok(FAKE.get().unwrap().clone() as Arc<dyn Starter>),
            in_rate: false,
            s3_missing: None,
        });
        let opts = Options {
            quick: true,
            rounds: Some(1),
            systems: vec![with_store, system("no-store", |_| Ok(FAKE.get().unwrap().clone()))],
            cases: Some(vec!["cold-start".into(), "cold-start-s3".into()]),
        };
        let rows = run(&opts).unwrap();
        let names: Vec<(&str, &str)> = rows.iter().map(|r| (r.case.as_str(), r.system.as_str())).collect();
        assert_eq!(
            names,
            [
                ("cold-start", "with-store"),
                ("cold-start", "no-store"),
                ("cold-start-s3", "with-store"),
                ("cold-start-s3", "no-store")
            ]
        );
        // Measured side by side, with the fetch each start reported.
        for r in &rows[..3] {
            assert!(r.error.is_none(), "{r:?}");
            assert_eq!(r.p50_us.map(|p| p.round()), Some(1000.0), "{r:?}");
            assert_eq!(
                r.breakdown.clone().unwrap().fetch_us.map(|f| f.round()),
                Some(300.0),
                "{r:?}"
            );
        }
        let e = rows[3].error.as_deref().unwrap();
        assert_eq!(e, "not measured: no S3 here");
        assert!(rows[3].p50_us.is_none() && rows[3].breakdown.is_none(), "{:?}", rows[3]);
        // Only the system with a store was asked for starts from S3: its warm-up and the
        // recorded ones (the quick run's count, well within its budget).
        let starts = fake.starts.lock().unwrap();
        let s3 = starts.iter().filter(|&&h| h == Start::ColdS3).count() as u64;
        let case = CASES.iter().find(|c| c.name == "cold-start-s3").unwrap();
        assert_eq!(s3, case.warmup + case.quick_starts);
        assert!(starts.iter().all(|&h| h != Start::Warm));
        // The target is judged from the two measured rows (targets are σ's: renamed).
        let rows: Vec<Row> = rows
            .iter()
            .filter(|r| r.system == "with-store")
            .map(|r| Row {
                system: "sigma".into(),
                ..r.clone()
            })
            .collect();
        let md = markdown(&Doc {
            suite: "spawn".into(),
            schema: 1,
            quick: true,
            host: crate::report::Host::detect(),
            started_at: "2026-11-27T00:00:00Z".into(),
            rounds: 1,
            elapsed_s: 1.0,
            rows,
        });
        assert!(
            md.contains("| cold-start-s3 ≤ 2 × cold-start | sigma | 1.00× | met |"),
            "{md}"
        );
    }

    #[test]
    fn a_system_that_cannot_open_gets_error_rows_with_its_reason() {
        let opts = Options {
            quick: true,
            rounds: Some(1),
            systems: vec![system("nope", |_| bail!("not wired"))],
            cases: None,
        };
        let rows = run(&opts).unwrap();
        assert_eq!(rows.len(), CASES.len());
        for r in &rows {
            assert!(r.p50_us.is_none() && r.breakdown.is_none(), "{r:?}");
        }
        assert_eq!(rows[0].error.as_deref(), Some("not wired"));
        assert!(rows[2].error.as_deref().unwrap().contains("no S3 here"));
    }

    #[test]
    fn the_floor_runs_and_reports_fetch_only_when_cold() {
        let floor = spawn_systems::all().into_iter().find(|s| s.name == FLOOR).unwrap();
        let opts = Options {
            quick: true,
            rounds: Some(1),
            systems: vec![Arc::new(floor)],
            cases: Some(vec!["warm-start".into(), "cold-start".into()]),
        };
        let rows = run(&opts).unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            assert!(r.error.is_none(), "{r:?}");
            assert!(r.p50_us.unwrap() > 0.0 && r.cpu_us_per_op.unwrap() > 0.0, "{r:?}");
        }
        let warm = rows[0].breakdown.clone().unwrap();
        assert!(warm.fetch_us.is_none() && warm.namespaces_us.is_none(), "{warm:?}");
        let cold = rows[1].breakdown.clone().unwrap();
        assert!(cold.fetch_us.unwrap() > 0.0 && cold.verify_us.is_none(), "{cold:?}");
        let v = serde_json::to_value(&rows[0]).unwrap();
        assert!(v["schedule_us"].is_null() && v.get("schedule_us").is_some(), "{v}");
    }
}
