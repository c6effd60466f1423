//! The `ns` suite: namespace operations (`stat`, `read-4KiB`, `write-4KiB`, `create-remove`) and
//! watch latency (`watch-notify`), sequential from one client, on σ's two back ends through a
//! real sigmad (`sigma-embedded`, `sigma-etcd`) and on etcd itself (`etcd-raw`), systems
//! interleaved and rotated round by round.
//!
//! One throwaway single-member etcd serves the whole suite run (both etcd systems, each run under
//! a key prefix of its own) and is killed at the end. Every sigma run starts a fresh sigmad on a
//! temporary data dir and kills it afterwards.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;

use super::with_deadline;
use crate::ns_systems::{ClientCore, Env, NsSpec, NsSystem, Op, Outcome};
use crate::report::Row;
use crate::systems::new_histogram;
use sigma_tests::etcd::EtcdServer;

/// Core of the client.
const CLIENT_CORE: usize = 0;
/// Core of sigmad's data-plane core (etcd is not pinned).
const SERVER_CORE: usize = 1;
/// Bytes of the file stat, read and write use.
const VALUE_BYTES: usize = 4096;
/// How long a watch is given to be set up (at sigmad, and at etcd for `sigma-etcd`) before the
/// write that fires it.
const WATCH_SETTLE: Duration = Duration::from_millis(3);
/// How long one operation may take before its run fails.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// What the suite runs.
pub struct Options {
    /// `--quick`: fewer operations, one round.
    pub quick: bool,
    /// Rounds (`None`: 1 quick, 3 full).
    pub rounds: Option<u32>,
    /// Systems to run, in report order.
    pub systems: Vec<Arc<dyn NsSystem>>,
    /// Only these cases (`None`: all), by name.
    pub cases: Option<Vec<String>>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("quick", &self.quick)
            .field("rounds", &self.rounds)
            .field("systems", &self.systems.iter().map(|s| s.name()).collect::<Vec<_>>())
            .field("cases", &self.cases)
            .finish()
    }
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    op: Op,
    /// Recorded operations per run with `--quick`, and without.
    quick_ops: u64,
    full_ops: u64,
    /// What one sample is.
    what: &'static str,
}

const CASES: [Case; 6] = [
    Case {
        name: "stat",
        op: Op::Stat,
        quick_ops: 2_000,
        full_ops: 10_000,
        what: "stat of a 4 KiB file",
    },
    Case {
        name: "read-4KiB",
        op: Op::Read,
        quick_ops: 2_000,
        full_ops: 10_000,
        what: "read of a 4 KiB file",
    },
    Case {
        name: "write-4KiB",
        op: Op::Write,
        quick_ops: 500,
        full_ops: 2_000,
        what: "write of 4 KiB over an existing file",
    },
    Case {
        name: "create-remove",
        op: Op::CreateRemove,
        quick_ops: 300,
        full_ops: 1_000,
        what: "create of an empty file, then its remove (one op)",
    },
    Case {
        name: "watch-notify",
        op: Op::WatchNotify,
        quick_ops: 150,
        full_ops: 500,
        what: "time from sending the create of a watched path to the watcher's notification (a new watch per sample, set up first; the path is removed after)",
    },
    Case {
        name: "read-during-writes",
        op: Op::ReadDuringWrites,
        quick_ops: 1_000,
        full_ops: 5_000,
        what: "read of a 4 KiB file while a second client (own connection, same client core) writes 4 KiB over another file back to back",
    },
];

/// Rounds and time budgets of one mode.
#[derive(Debug, Clone, Copy)]
struct Params {
    quick: bool,
    rounds: u32,
    /// Time one run may take (after which it stops with what it recorded).
    budget: Duration,
}

impl Params {
    fn new(quick: bool, rounds: Option<u32>) -> Params {
        let (r, budget) = if quick {
            (1, Duration::from_millis(2500))
        } else {
            (3, Duration::from_secs(10))
        };
        Params {
            quick,
            rounds: rounds.unwrap_or(r).max(1),
            budget,
        }
    }

    fn ops(&self, case: &Case) -> u64 {
        if self.quick {
            case.quick_ops
        } else {
            case.full_ops
        }
    }

    fn warmup(&self, case: &Case) -> u64 {
        self.ops(case) / 10
    }

    fn spec(&self, case: &Case) -> NsSpec {
        NsSpec {
            op: case.op,
            ops: self.ops(case),
            warmup: self.warmup(case),
            budget: self.budget,
            value_bytes: VALUE_BYTES,
            watch_settle: WATCH_SETTLE,
            op_timeout: OP_TIMEOUT,
            client_core: CLIENT_CORE,
        }
    }

    /// Deadline of one run's client: its budget, time for a slow warm-up, and one op timeout.
    fn deadline(&self) -> Duration {
        self.budget * 2 + OP_TIMEOUT + Duration::from_secs(20)
    }
}

/// What one (case, system) accumulated over the rounds.
struct Acc {
    hist: Histogram<u64>,
    /// watch-notify: the writes' own replies.
    write_hist: Histogram<u64>,
    completed: u64,
    window: Duration,
    /// σ clients: how the client core waited, summed over the rounds.
    client_core: Option<ClientCore>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            hist: new_histogram(),
            write_hist: new_histogram(),
            completed: 0,
            window: Duration::ZERO,
            client_core: None,
        }
    }
}

/// Starts what the selected systems share: finds sigmad, starts etcd if a system needs it.
fn environment(systems: &[Arc<dyn NsSystem>], server_core: usize) -> Env {
    let sigmad = crate::sigmad::binary().map_err(|e| format!("{e:#}"));
    let etcd = systems.iter().any(|s| s.needs_etcd()).then(|| {
        eprint!("starting etcd ... ");
        let t0 = Instant::now();
        match EtcdServer::start() {
            Ok(etcd) => {
                eprintln!("{} ({:.1} s)", etcd.endpoint, t0.elapsed().as_secs_f64());
                Ok(etcd)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!("ERROR: {msg}");
                Err(msg)
            }
        }
    });
    Env::new(sigmad, etcd, server_core)
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
    let cores = crate::affinity::available_cores().max(1);
    let server_core = SERVER_CORE.min(cores - 1);
    let env = environment(&opts.systems, server_core);
    let mut accs: Vec<Vec<Acc>> = cases.iter().map(|_| (0..nsys).map(|_| Acc::new()).collect()).collect();
    let case_names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let system_names: Vec<String> = opts.systems.iter().map(|s| s.name().to_string()).collect();
    let tallies = super::interleave(
        p.rounds,
        &case_names,
        &system_names,
        |_, _| true,
        |ci, si| run_one(&p.spec(&cases[ci]), opts.systems[si].clone(), &p, &env),
        |ci, si, out| {
            let acc = &mut accs[ci][si];
            let h = &out.hist;
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let ops = out
                .window
                .map(|w| format!("{:.0} ops/s ", h.len() as f64 / w.as_secs_f64()))
                .unwrap_or_default();
            let line = format!("{} samples {ops}p50 {:.1}us p99 {:.1}us", h.len(), us(0.5), us(0.99));
            if let Some(w) = out.window {
                acc.completed += h.len();
                acc.window += w;
            }
            if let Some(c) = &out.client_core {
                acc.client_core.get_or_insert_with(ClientCore::default).add(c);
            }
            let merged = acc.hist.add(&out.hist).and_then(|()| match &out.write_hist {
                Some(wh) => acc.write_hist.add(wh),
                None => Ok(()),
            });
            (line, merged.map_err(|e| format!("{e:?}")))
        },
    );

    let etcd_note = env.etcd_note();
    drop(env);
    let mode = if opts.quick { "quick" } else { "full" };
    let mut rows = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        for (si, sys) in opts.systems.iter().enumerate() {
            let acc = &accs[ci][si];
            let mut note = format!(
                "{mode}: {} round(s) x up to {} sequential ops (+{} warm-up) or {:.1} s, one client on core {CLIENT_CORE}{}; {}",
                p.rounds,
                p.ops(case),
                p.warmup(case),
                p.budget.as_secs_f64(),
                if sys.needs_etcd() && sys.uses_sigmad() {
                    format!(
                        ", sigmad's data-plane core and its control thread (where the etcd client runs) on core {server_core}"
                    )
                } else if sys.uses_sigmad() {
                    format!(", sigmad's data-plane core on core {server_core}")
                } else {
                    String::new()
                },
                case.what
            );
            if case.op == Op::WatchNotify {
                note.push_str(&format!(
                    ", {} ms between the watch request and the write",
                    WATCH_SETTLE.as_millis()
                ));
            }
            if !acc.write_hist.is_empty() {
                let w = &acc.write_hist;
                note.push_str(&format!(
                    "; the write's own reply: p50 {:.1}us p99 {:.1}us",
                    w.value_at_quantile(0.5) as f64 / 1000.0,
                    w.value_at_quantile(0.99) as f64 / 1000.0
                ));
            }
            if let Some(c) = &acc.client_core {
                note.push_str(&format!(
                    "; client core: {} parks, {} early wakes ({} caught the reply)",
                    c.parks, c.early_wakes, c.early_wakes_caught
                ));
            }
            let sys_note = sys.note();
            if !sys_note.is_empty() {
                note.push_str("; ");
                note.push_str(&sys_note);
            }
            if let (true, Some(etcd)) = (sys.needs_etcd(), &etcd_note) {
                note.push_str("; ");
                note.push_str(etcd);
            }
            if let Some(row) = tallies[ci][si].failed_row(case.name, sys.name(), p.rounds, &note) {
                rows.push(row);
                continue;
            }
            if acc.hist.is_empty() {
                rows.push(Row::failed(
                    case.name,
                    sys.name(),
                    "no samples recorded".to_string(),
                    note,
                ));
                continue;
            }
            let ops = (!acc.window.is_zero()).then(|| acc.completed as f64 / acc.window.as_secs_f64());
            rows.push(Row::measured(case.name, sys.name(), &acc.hist, ops, note));
        }
    }
    Ok(rows)
}

/// One run: the server side started here (and stopped when this returns), the client on a
/// worker thread under a deadline.
fn run_one(spec: &NsSpec, sys: Arc<dyn NsSystem>, p: &Params, env: &Env) -> Result<Outcome> {
    let mut started = sys.start(env).context("starting the server side")?;
    let addr = started.addr.clone();
    let spec = spec.clone();
    let out = with_deadline(&format!("ns-{}", sys.name()), p.deadline(), move || {
        sys.run(&spec, &addr)
    });
    // A run that failed because sigmad died says so.
    let died = started.sigmad.as_mut().and_then(|s| s.exited());
    drop(started);
    match (out, died) {
        (Err(e), Some(died)) => Err(anyhow!("{e:#}; {died}")),
        (out, _) => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ns_systems::{Addr, Started};

    /// A system that fails for stat and read and panics in the other cases.
    struct Broken;

    impl NsSystem for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }

        fn needs_etcd(&self) -> bool {
            false
        }

        fn start(&self, env: &Env) -> Result<Started> {
            Ok(Started {
                addr: Addr::Etcd {
                    endpoints: Vec::new(),
                    prefix: env.run_prefix("broken"),
                },
                sigmad: None,
            })
        }

        fn run(&self, spec: &NsSpec, _: &Addr) -> Result<Outcome> {
            match spec.op {
                Op::Stat => Err(anyhow!("not wired")),
                Op::Read => Err(anyhow!("etcd gone")),
                _ => panic!("boom"),
            }
        }
    }

    #[test]
    fn failures_become_error_rows() {
        let opts = Options {
            quick: true,
            rounds: Some(2),
            systems: vec![Arc::new(Broken)],
            cases: Some(vec!["stat".into(), "create-remove".into()]),
        };
        let rows = run(&opts).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].case, "stat");
        let e0 = rows[0].error.as_deref().unwrap();
        assert!(e0.contains("round 1: not wired") && e0.contains("round 2"), "{e0}");
        assert!(rows[0].p50_us.is_none() && rows[0].ops_per_s.is_none());
        assert!(rows[1].error.as_deref().unwrap().contains("panicked: boom"));
    }

    #[test]
    fn unknown_case_is_refused() {
        let opts = Options {
            quick: true,
            rounds: None,
            systems: vec![Arc::new(Broken)],
            cases: Some(vec!["nope".into()]),
        };
        let e = format!("{:#}", run(&opts).unwrap_err());
        assert!(e.contains("unknown case 'nope'") && e.contains("watch-notify"), "{e}");
    }

    #[test]
    fn a_missing_etcd_or_sigmad_is_an_error_not_a_crash() {
        let env = Env::new(Err("sigmad not found".into()), Some(Err("`etcd` not found".into())), 0);
        let p = Params::new(true, None);
        for sys in crate::ns_systems::all() {
            let sys: Arc<dyn NsSystem> = Arc::from(sys);
            let e = run_one(&p.spec(&CASES[0]), sys.clone(), &p, &env).unwrap_err();
            let e = format!("{e:#}");
            let want = if sys.needs_etcd() {
                "`etcd` not found"
            } else {
                "sigmad not found"
            };
            assert!(e.contains(want), "{}: {e}", sys.name());
        }
    }
}
