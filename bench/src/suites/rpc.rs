//! The `rpc` suite: light RPCs between two pinned threads over one TCP loopback connection,
//! sequential (`rpc-seq-64B`) and pipelined (`rpc-pipelined-64B`), and sequential calls to a
//! handler that works 300 µs (`rpc-seq-work-300us`: what a client pays to wait). σ's RPC against
//! tonic and against the raw σ transport underneath (`sigma-pingpong`, the floor), and σ with its
//! client core's early wakes off (`sigma-no-early-wake`); and paced calls (`rpc-paced-64B`: open
//! loop at `--rate` per second, latency from each call's due time) for σ RPC and tonic. Systems
//! interleaved and rotated round by round; every row carries the CPU of both threads.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use hdrhistogram::Histogram;

use super::with_deadline;
use crate::cpu::{CpuTotals, CpuUse};
use crate::paced::STALL_TIMEOUT;
use crate::report::Row;
use crate::rpc_systems::{RpcPacedSpec, RpcPipeSpec, RpcSeqSpec, RpcSystem};
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
    /// Calls per second of `rpc-paced-64B`.
    pub rate: u32,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("quick", &self.quick)
            .field("rounds", &self.rounds)
            .field("systems", &self.systems.iter().map(|s| s.name()).collect::<Vec<_>>())
            .field("cases", &self.cases)
            .field("rate", &self.rate)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Seq,
    Pipelined,
    Paced,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    kind: Kind,
    /// How long the handler works before answering each call.
    work: Duration,
}

const CASES: [Case; 4] = [
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
    // Calls arriving at a steady rate with gaps longer than any spin budget: what a service
    // answering a stream of independent callers sees.
    Case {
        name: "rpc-paced-64B",
        kind: Kind::Paced,
        work: Duration::ZERO,
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
    paced_warmup: Duration,
    paced_duration: Duration,
    rate: u32,
}

impl Params {
    fn new(quick: bool, rounds: Option<u32>, rate: u32) -> Params {
        let p = if quick {
            Params {
                rounds: 1,
                calls: 2_000,
                warmup: 200,
                pipe_warmup: Duration::from_millis(250),
                pipe_duration: Duration::from_secs(1),
                paced_warmup: Duration::from_millis(100),
                paced_duration: Duration::from_millis(500),
                rate,
            }
        } else {
            Params {
                rounds: 3,
                calls: 5_000,
                warmup: 500,
                pipe_warmup: Duration::from_secs(1),
                pipe_duration: Duration::from_secs(3),
                paced_warmup: Duration::from_millis(500),
                paced_duration: Duration::from_secs(4),
                rate,
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

    fn paced_deadline(&self) -> Duration {
        self.paced_warmup + self.paced_duration + STALL_TIMEOUT + Duration::from_secs(30)
    }
}

/// What one (case, system) accumulated over the rounds.
struct Acc {
    hist: Histogram<u64>,
    completed: u64,
    window: Duration,
    cpu: CpuTotals,
    /// Lag of a paced client behind its schedule, ns.
    send_late: Histogram<u64>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            hist: new_histogram(),
            completed: 0,
            window: Duration::ZERO,
            cpu: CpuTotals::default(),
            send_late: new_histogram(),
        }
    }
}

/// One round's result of one (case, system).
struct Outcome {
    hist: Histogram<u64>,
    /// (completed calls, window) for the pipelined case.
    ops: Option<(u64, Duration)>,
    /// CPU over the recorded calls, and how many there were.
    cpu: Option<CpuUse>,
    cpu_ops: u64,
    /// Paced: the client's lag behind its schedule, ns.
    send_late: Option<Histogram<u64>>,
}

/// Whether `sys` runs `case` (only the systems with a paced client run the paced case).
fn applies(case: &Case, sys: &dyn RpcSystem) -> bool {
    case.kind != Kind::Paced || sys.paces()
}

/// Runs the suite and returns one row per (case, system), cases in order, systems in
/// `opts.systems` order.
pub fn run(opts: &Options) -> Result<Vec<Row>> {
    let p = Params::new(opts.quick, opts.rounds, opts.rate);
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
        |ci, si| applies(&cases[ci], opts.systems[si].as_ref()),
        |ci, si| run_one(&cases[ci], opts.systems[si].clone(), &p),
        |ci, si, out| {
            let acc = &mut accs[ci][si];
            let h = &out.hist;
            let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            let (p50, p99) = (us(0.5), us(0.99));
            acc.cpu.add(out.cpu, out.cpu_ops);
            if let Some(late) = &out.send_late {
                let _ = acc.send_late.add(late);
            }
            let cpu = out
                .cpu
                .map_or(String::new(), |c| format!(", CPU {:.1}us/op", c.us_per_op(out.cpu_ops)));
            let line = match out.ops {
                None if out.send_late.is_some() => {
                    format!("p50 {p50:.1}us p99 {p99:.1}us p99.9 {:.1}us{cpu}", us(0.999))
                }
                Some((n, w)) => {
                    acc.completed += n;
                    acc.window += w;
                    format!(
                        "{:.0} ops/s p50 {p50:.1}us p99 {p99:.1}us{cpu}",
                        n as f64 / w.as_secs_f64()
                    )
                }
                None => format!(
                    "mean {:.1}us sd {:.1}us p50 {p50:.1}us p99 {p99:.1}us{cpu}",
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
            if !applies(case, sys.as_ref()) {
                continue;
            }
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
                Kind::Paced => format!(
                    "{mode}: {} round(s) x {:?} after {:?} warm-up, {} calls/s open-loop on one TCP loopback connection, {PAYLOAD} B, latency from each call's due time (coordinated omission corrected); the client paces by yielding to its runtime until each call is due (it spins: about one core in every system) and runs each call as its own task; client's lag behind schedule p50 {:.1} us, p99 {:.1} us; client core {CLIENT_CORE}, server core {SERVER_CORE}",
                    p.rounds,
                    p.paced_duration,
                    p.paced_warmup,
                    p.rate,
                    acc.send_late.value_at_quantile(0.5) as f64 / 1000.0,
                    acc.send_late.value_at_quantile(0.99) as f64 / 1000.0
                ),
            };
            note.push_str("; CPU: both threads' clocks over the recorded calls");
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
            let row = match case.kind {
                Kind::Seq => Row::measured(case.name, sys.name(), &acc.hist, None, note).with_sd(&acc.hist),
                Kind::Pipelined => {
                    let ops = (!acc.window.is_zero()).then(|| acc.completed as f64 / acc.window.as_secs_f64());
                    Row::measured(case.name, sys.name(), &acc.hist, ops, note)
                }
                Kind::Paced => Row::measured(case.name, sys.name(), &acc.hist, None, note),
            };
            rows.push(row.with_cpu(&acc.cpu));
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
            let m = with_deadline(
                &format!("rpc-seq-{}", sys.name()),
                p.seq_deadline(case.work),
                move || sys.seq(&spec),
            )?;
            if m.hist.len() != p.calls {
                bail!("{} calls recorded, {} expected", m.hist.len(), p.calls);
            }
            Ok(Outcome {
                cpu_ops: m.hist.len(),
                hist: m.hist,
                ops: None,
                cpu: m.cpu,
                send_late: None,
            })
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
                cpu: r.cpu,
                cpu_ops: r.completed,
                send_late: None,
            })
        }
        Kind::Paced => {
            let spec = RpcPacedSpec {
                payload_bytes: PAYLOAD,
                rate: p.rate,
                warmup: p.paced_warmup,
                duration: p.paced_duration,
                client_core: CLIENT_CORE,
                server_core: SERVER_CORE,
            };
            let r = with_deadline(&format!("rpc-pc-{}", sys.name()), p.paced_deadline(), move || {
                sys.paced(&spec)
            })?;
            Ok(Outcome {
                ops: None,
                cpu_ops: r.completed,
                cpu: r.cpu,
                hist: r.hist,
                send_late: Some(r.send_late),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc_systems::PipelinedResult;
    use crate::systems::Measured;
    use anyhow::anyhow;

    /// A system that fails one case and panics in the other.
    struct Broken;

    impl RpcSystem for Broken {
        fn name(&self) -> &'static str {
            "broken"
        }

        fn seq(&self, _: &RpcSeqSpec) -> Result<Measured> {
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
            rate: 5_000,
        };
        let rows = run(&opts).unwrap();
        assert_eq!(rows.len(), 3, "no paced row: the system has no paced client");
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
            rate: 5_000,
        };
        let e = format!("{:#}", run(&opts).unwrap_err());
        assert!(e.contains("unknown case 'nope'") && e.contains("rpc-seq-64B"), "{e}");
    }
}
