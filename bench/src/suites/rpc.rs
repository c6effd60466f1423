//! The `rpc` suite: light RPCs between two pinned threads over one TCP loopback connection,
//! sequential (`rpc-seq-64B`) and pipelined (`rpc-pipelined-64B`), and sequential calls to a
//! handler that works 300 µs (`rpc-seq-work-300us`: what a client pays to wait). σ's RPC against
//! tonic and against the raw σ transport underneath (`sigma-pingpong`, the floor), and σ with its
//! client core's early wakes off (`sigma-no-early-wake`); systems interleaved and rotated round
//! by round.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;

use super::with_deadline;
use crate::report::Row;
use crate::rpc_systems::{RpcPipeSpec, RpcSeqSpec, RpcSystem};
use crate::systems::new_histogram;

/// Core of the client.
const CLIENT_CORE: usize = 0;
/// Core of the server.
const SERVER_CORE: usize = 1;
/// Bytes of every request and every reply.
const PAYLOAD: usize = 64;
/// Calls outstanding in the pipelined case, on one connection.
const IN_FLIGHT: usize = 64;

/// What the suite runs.
pub struct Options {
    /// `--quick`: fewer calls, one round, short pipelined runs.
    pub quick: bool,
    /// Rounds (`None`: 1 quick, 3 full).
    pub rounds: Option<u32>,
    /// Systems to run, in report order.
    pub systems: Vec<Arc<dyn RpcSystem>>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Seq,
    Pipelined,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    kind: Kind,
    /// How long the handler works before answering each call.
    work: Duration,
}

const CASES: [Case; 3] = [
    Case {
        name: "rpc-seq-64B",
        kind: Kind::Seq,
        work: Duration::ZERO,
    },
    Case {
        name: "rpc-pipelined-64B",
        kind: Kind::Pipelined,
        work: Duration::ZERO,
    },
    // A client waiting on a backend that computes (or on a store like etcd): what the wait costs
    // beyond the work itself is the client's wake-up policy.
    Case {
        name: "rpc-seq-work-300us",
        kind: Kind::Seq,
        work: Duration::from_micros(300),
    },
];

/// Call counts and durations of one mode.
#[derive(Debug, Clone, Copy)]
struct Params {
    rounds: u32,
    calls: u64,
    warmup: u64,
    pipe_warmup: Duration,
    pipe_duration: Duration,
}

impl Params {
    fn new(quick: bool, rounds: Option<u32>) -> Params {
        let p = if quick {
            Params {
                rounds: 1,
                calls: 2_000,
                warmup: 200,
                pipe_warmup: Duration::from_millis(250),
                pipe_duration: Duration::from_secs(1),
            }
        } else {
            Params {
                rounds: 3,
                calls: 5_000,
                warmup: 500,
                pipe_warmup: Duration::from_secs(1),
                pipe_duration: Duration::from_secs(3),
            }
        };
        Params {
            rounds: rounds.unwrap_or(p.rounds).max(1),
            ..p
        }
    }

    /// Deadline of one sequential run: generous (1 ms a call beyond the work), a hung system only
    /// costs this much.
    fn seq_deadline(&self, work: Duration) -> Duration {
        Duration::from_secs(10) + (Duration::from_millis(1) + work) * (self.calls + self.warmup) as u32
    }

    fn pipelined_deadline(&self) -> Duration {
        self.pipe_warmup + self.pipe_duration + Duration::from_secs(30)
    }
}

/// What one (case, system) accumulated over the rounds.
struct Acc {
    hist: Histogram<u64>,
    completed: u64,
    window: Duration,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            hist: new_histogram(),
            completed: 0,
            window: Duration::ZERO,
        }
    }
}

/// One round's result of one (case, system).
struct Outcome {
    hist: Histogram<u64>,
    /// (completed calls, window) for the pipelined case.
    ops: Option<(u64, Duration)>,
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
    let mut accs: Vec<Vec<Acc>> = cases.iter().map(|_| (0..nsys).map(|_| Acc::new()).collect()).collect();
    let case_names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let system_names: Vec<String> = opts.systems.iter().map(|s| s.name().to_string()).collect();
    let tallies = super::interleave(
        p.rounds,
        &case_names,
        &system_names,
        |ci, si| run_one(&cases[ci], opts.systems[si].clone(), &p),
        |ci, si, out| {
            let acc = &mut accs[ci][si];
            let h = &out.hist;
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let (p50, p99) = (us(0.5), us(0.99));
            let line = match out.ops {
                Some((n, w)) => {
                    acc.completed += n;
                    acc.window += w;
                    format!("{:.0} ops/s p50 {p50:.1}us p99 {p99:.1}us", n as f64 / w.as_secs_f64())
                }
                None => format!(
                    "mean {:.1}us sd {:.1}us p50 {p50:.1}us p99 {p99:.1}us",
                    h.mean() / 1000.0,
                    h.stdev() / 1000.0
                ),
            };
            (line, acc.hist.add(&out.hist).map_err(|e| format!("{e:?}")))
        },
    );

    let mode = if opts.quick { "quick" } else { "full" };
    let mut rows = Vec::new();
    for (ci, case) in cases.iter().enumerate() {
        for (si, sys) in opts.systems.iter().enumerate() {
            let acc = &accs[ci][si];
            let mut note = match case.kind {
                Kind::Seq => format!(
                    "{mode}: {} round(s) x {} sequential calls (+{} warm-up), {PAYLOAD} B request and reply{}, one TCP loopback connection, client core {CLIENT_CORE}, server core {SERVER_CORE}",
                    p.rounds,
                    p.calls,
                    p.warmup,
                    if case.work.is_zero() {
                        String::new()
                    } else {
                        format!(", the handler busy for {} us before each reply", case.work.as_micros())
                    }
                ),
                Kind::Pipelined => format!(
                    "{mode}: {} round(s) x {:?} after {:?} warm-up, one TCP loopback connection with {IN_FLIGHT} calls of {PAYLOAD} B in flight (a new one issued as each completes), client core {CLIENT_CORE}, server core {SERVER_CORE}",
                    p.rounds, p.pipe_duration, p.pipe_warmup
                ),
            };
            let sys_note = sys.note();
            if !sys_note.is_empty() {
                note.push_str("; ");
                note.push_str(&sys_note);
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
            rows.push(match case.kind {
                Kind::Seq => Row::measured(case.name, sys.name(), &acc.hist, None, note).with_sd(&acc.hist),
                Kind::Pipelined => {
                    let ops = (!acc.window.is_zero()).then(|| acc.completed as f64 / acc.window.as_secs_f64());
                    Row::measured(case.name, sys.name(), &acc.hist, ops, note)
                }
            });
        }
    }
    Ok(rows)
}

fn run_one(case: &Case, sys: Arc<dyn RpcSystem>, p: &Params) -> Result<Outcome> {
    match case.kind {
        Kind::Seq => {
            let spec = RpcSeqSpec {
                payload_bytes: PAYLOAD,
                calls: p.calls,
                warmup: p.warmup,
                client_core: CLIENT_CORE,
                server_core: SERVER_CORE,
                work: case.work,
            };
            let hist = with_deadline(
                &format!("rpc-seq-{}", sys.name()),
                p.seq_deadline(case.work),
                move || sys.seq(&spec),
            )?;
            if hist.len() != p.calls {
                bail!("{} calls recorded, {} expected", hist.len(), p.calls);
            }
            Ok(Outcome { hist, ops: None })
        }
        Kind::Pipelined => {
            let spec = RpcPipeSpec {
                payload_bytes: PAYLOAD,
                in_flight: IN_FLIGHT,
                warmup: p.pipe_warmup,
                duration: p.pipe_duration,
                client_core: CLIENT_CORE,
                server_core: SERVER_CORE,
            };
            let r = with_deadline(&format!("rpc-pl-{}", sys.name()), p.pipelined_deadline(), move || {
                sys.pipelined(&spec)
            })?;
            Ok(Outcome {
                ops: Some((r.completed, r.elapsed)),
                hist: r.hist,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc_systems::PipelinedResult;
    use anyhow::anyhow;

    /// A system that fails one case and panics in the other.
    struct Broken;

    impl RpcSystem for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }

        fn seq(&self, _: &RpcSeqSpec) -> Result<Histogram<u64>> {
            Err(anyhow!("not wired"))
        }

        fn pipelined(&self, _: &RpcPipeSpec) -> Result<PipelinedResult> {
            panic!("boom")
        }
    }

    #[test]
    fn failures_become_error_rows() {
        let opts = Options {
            quick: true,
            rounds: Some(2),
            systems: vec![Arc::new(Broken)],
            cases: None,
        };
        let rows = run(&opts).unwrap();
        assert_eq!(rows.len(), 3);
        for seq in [&rows[0], &rows[2]] {
            let e = seq.error.as_deref().unwrap();
            assert!(e.contains("round 1: not wired") && e.contains("round 2"), "{e}");
            assert!(seq.sd_us.is_none() && seq.p50_us.is_none());
        }
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
        assert!(e.contains("unknown case 'nope'") && e.contains("rpc-seq-64B"), "{e}");
    }
}
