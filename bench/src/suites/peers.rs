//! The `peers` suite: echo ping-pong (TCP 64 B / 4 KiB, Unix 64 B), pipelined TCP throughput and
//! paced (open-loop) TCP load, σ against peer runtimes, systems interleaved and rotated round by
//! round. Every row carries the CPU the work cost (`crate::cpu`).

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;

use super::with_deadline;
use crate::cpu::{Clock, CpuMeter, CpuTotals, CpuUse, Side};
use crate::loadgen::{self, LoadSpec};
use crate::paced::{self, PacedSpec};
use crate::report::Row;
use crate::systems::{new_histogram, PingPongSpec, System, Transport};

/// Core of the client / load generator.
const CLIENT_CORE: usize = 0;
/// Core of the server.
const SERVER_CORE: usize = 1;
/// Pipelined load shape.
const LOAD_CONNS: usize = 64;
const LOAD_DEPTH: usize = 16;
const LOAD_PAYLOAD: usize = 64;
/// Paced load: bytes per request.
const PACED_PAYLOAD: usize = 64;
/// How long a child echo server may take to print `listening on`.
const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(15);

/// What the suite runs.
pub struct Options {
    /// `--quick`: fewer samples, one round, short pipelined runs.
    pub quick: bool,
    /// Rounds (`None`: 1 quick, 3 full).
    pub rounds: Option<u32>,
    /// Systems to run, in report order.
    pub systems: Vec<Arc<dyn System>>,
    /// Only these cases (`None`: all), by name.
    pub cases: Option<Vec<String>>,
    /// Requests per second of `paced-64B`.
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

#[derive(Debug, Clone, Copy)]
enum Kind {
    PingPong { transport: Transport, payload: usize },
    Pipelined,
    Paced,
}

#[derive(Debug, Clone, Copy)]
struct Case {
    name: &'static str,
    kind: Kind,
}

const CASES: [Case; 5] = [
    Case {
        name: "pingpong-64B",
        kind: Kind::PingPong {
            transport: Transport::Tcp,
            payload: 64,
        },
    },
    Case {
        name: "pingpong-4KiB",
        kind: Kind::PingPong {
            transport: Transport::Tcp,
            payload: 4096,
        },
    },
    Case {
        name: "pingpong-64B-unix",
        kind: Kind::PingPong {
            transport: Transport::Unix,
            payload: 64,
        },
    },
    Case {
        name: "pipelined-64B",
        kind: Kind::Pipelined,
    },
    // What a microservice sees between requests: gaps (200 µs at the default rate) longer than
    // any spin budget.
    Case {
        name: "paced-64B",
        kind: Kind::Paced,
    },
];

/// Sample counts and durations of one mode.
#[derive(Debug, Clone, Copy)]
struct Params {
    rounds: u32,
    samples: u64,
    warmup: u64,
    load_warmup: Duration,
    load_duration: Duration,
    paced_warmup: Duration,
    paced_duration: Duration,
    rate: u32,
}

impl Params {
    fn new(quick: bool, rounds: Option<u32>, rate: u32) -> Params {
        let p = if quick {
            Params {
                rounds: 1,
                samples: 3_000,
                warmup: 300,
                load_warmup: Duration::from_millis(150),
                load_duration: Duration::from_millis(500),
                paced_warmup: Duration::from_millis(100),
                paced_duration: Duration::from_millis(500),
                rate,
            }
        } else {
            Params {
                rounds: 3,
                samples: 20_000,
                warmup: 2_000,
                load_warmup: Duration::from_secs(1),
                load_duration: Duration::from_secs(3),
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

    /// Deadline of one ping-pong run: generous, a hung peer only costs this much.
    fn pingpong_deadline(&self) -> Duration {
        Duration::from_secs(10) + Duration::from_millis(self.samples + self.warmup)
    }

    fn pipelined_deadline(&self) -> Duration {
        self.load_warmup + self.load_duration + Duration::from_secs(30)
    }

    fn paced_deadline(&self) -> Duration {
        self.paced_warmup + self.paced_duration + paced::STALL_TIMEOUT + Duration::from_secs(30)
    }
}

/// What one (case, system) accumulated over the rounds.
struct Acc {
    hist: Histogram<u64>,
    completed: u64,
    window: Duration,
    /// Lowest share (%) of empty load-generator polls over the rounds.
    idle_min: f64,
    cpu: CpuTotals,
    /// Lag of the paced generator behind its schedule, ns.
    send_late: Histogram<u64>,
}

impl Acc {
    fn new() -> Acc {
        Acc {
            hist: new_histogram(),
            completed: 0,
            window: Duration::ZERO,
            idle_min: 100.0,
            cpu: CpuTotals::default(),
            send_late: new_histogram(),
        }
    }
}

/// One round's result of one (case, system).
struct Outcome {
    hist: Histogram<u64>,
    /// (completed requests, window) for the throughput case.
    ops: Option<(u64, Duration)>,
    /// Share of the load generator's polls that found nothing to do.
    idle: Option<f64>,
    /// CPU over the recorded operations, and how many there were.
    cpu: Option<CpuUse>,
    cpu_ops: u64,
    /// Paced: the generator's lag behind its schedule, ns.
    send_late: Option<Histogram<u64>>,
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
        |_, _| true,
        |ci, si| run_one(&cases[ci], opts.systems[si].clone(), &p),
        |ci, si, out| {
            let acc = &mut accs[ci][si];
            let p50 = out.hist.value_at_quantile(0.5) as f64 / 1000.0;
            let p99 = out.hist.value_at_quantile(0.99) as f64 / 1000.0;
            acc.cpu.add(out.cpu, out.cpu_ops);
            let cpu = out
                .cpu
                .map_or(String::new(), |c| format!(", CPU {:.1}us/op", c.us_per_op(out.cpu_ops)));
            if let Some(late) = &out.send_late {
                let _ = acc.send_late.add(late);
            }
            let line = match out.ops {
                None if out.send_late.is_some() => {
                    let p999 = out.hist.value_at_quantile(0.999) as f64 / 1000.0;
                    format!("p50 {p50:.1}us p99 {p99:.1}us p99.9 {p999:.1}us{cpu}")
                }
                Some((n, w)) => {
                    let idle = out.idle.unwrap_or(0.0) * 100.0;
                    acc.idle_min = acc.idle_min.min(idle);
                    acc.completed += n;
                    acc.window += w;
                    format!(
                        "{:.0} ops/s p50 {p50:.1}us p99 {p99:.1}us, loadgen idle polls {idle:.0}%{cpu}",
                        n as f64 / w.as_secs_f64()
                    )
                }
                None => format!("p50 {p50:.1}us p99 {p99:.1}us{cpu}"),
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
                Kind::PingPong { .. } => format!(
                    "{mode}: {} round(s) x {} RTTs (+{} warm-up), client core {CLIENT_CORE}, server core {SERVER_CORE}; CPU: both threads' clocks over the recorded RTTs",
                    p.rounds, p.samples, p.warmup
                ),
                Kind::Pipelined => format!(
                    "{mode}: {} round(s) x {:?} after {:?} warm-up, {LOAD_CONNS} conns x {LOAD_DEPTH} in flight, loadgen core {CLIENT_CORE}, server child on core {SERVER_CORE}; CPU: the loadgen's thread (it spins: one core) + the server process's clock",
                    p.rounds,
                    p.load_duration,
                    p.load_warmup
                ),
                Kind::Paced => format!(
                    "{mode}: {} round(s) x {:?} after {:?} warm-up, {} requests/s open-loop on one connection, {PACED_PAYLOAD} B, latency from each request's intended send time (coordinated omission corrected); common paced generator on core {CLIENT_CORE} (spins while a reply is due, parks in epoll_pwait2 until the next send), server child on core {SERVER_CORE}; CPU: generator thread + server process clock; generator's lag behind schedule p50 {:.1} us, p99 {:.1} us",
                    p.rounds,
                    p.paced_duration,
                    p.paced_warmup,
                    p.rate,
                    acc.send_late.value_at_quantile(0.5) as f64 / 1000.0,
                    acc.send_late.value_at_quantile(0.99) as f64 / 1000.0
                ),
            };
            if let Kind::Pipelined = case.kind {
                if tallies[ci][si].ok_rounds > 0 {
                    note.push_str(&format!(
                        ", loadgen idle polls >= {:.0}% (responses coalesce: one recv completes several requests)",
                        acc.idle_min
                    ));
                }
            }
            let sys_note = sys.note();
            if !sys_note.is_empty() {
                note.push_str("; ");
                note.push_str(&sys_note);
            }
            if let Some(row) = tallies[ci][si].failed_row(case.name, sys.name(), p.rounds, &note) {
                rows.push(row);
                continue;
            }
            let ops = match case.kind {
                Kind::Pipelined if !acc.window.is_zero() => Some(acc.completed as f64 / acc.window.as_secs_f64()),
                _ => None,
            };
            if acc.hist.is_empty() {
                rows.push(Row::failed(
                    case.name,
                    sys.name(),
                    "no samples recorded".to_string(),
                    note,
                ));
            } else {
                rows.push(
                    Row::measured(case.name, sys.name(), &acc.hist, ops, note)
                        .with_cpu(&acc.cpu)
                        .with_waits(sys.waits().as_str()),
                );
            }
        }
    }
    Ok(rows)
}

fn run_one(case: &Case, sys: Arc<dyn System>, p: &Params) -> Result<Outcome> {
    match case.kind {
        Kind::PingPong { transport, payload } => {
            let spec = PingPongSpec {
                transport,
                payload_bytes: payload,
                samples: p.samples,
                warmup: p.warmup,
                client_core: CLIENT_CORE,
                server_core: SERVER_CORE,
            };
            let m = with_deadline(&format!("pp-{}", sys.name()), p.pingpong_deadline(), move || {
                sys.pingpong(&spec)
            })?;
            if m.hist.len() != p.samples {
                bail!("{} samples recorded, {} expected", m.hist.len(), p.samples);
            }
            Ok(Outcome {
                cpu_ops: m.hist.len(),
                hist: m.hist,
                ops: None,
                idle: None,
                cpu: m.cpu,
                send_late: None,
            })
        }
        Kind::Pipelined => {
            let name = sys.name();
            let (warmup, duration) = (p.load_warmup, p.load_duration);
            let r = with_deadline(&format!("pl-{name}"), p.pipelined_deadline(), move || {
                with_echo_child(name, |addr, cpu| {
                    loadgen::run(&LoadSpec {
                        addr,
                        conns: LOAD_CONNS,
                        depth: LOAD_DEPTH,
                        payload: LOAD_PAYLOAD,
                        warmup,
                        duration,
                        core: CLIENT_CORE,
                        cpu: Some(cpu),
                    })
                })
            })?;
            Ok(Outcome {
                ops: Some((r.completed, r.elapsed)),
                idle: Some(r.empty_polls as f64 / r.polls.max(1) as f64),
                hist: r.hist,
                cpu: r.cpu,
                cpu_ops: r.completed,
                send_late: None,
            })
        }
        Kind::Paced => {
            let name = sys.name();
            let (warmup, duration, rate) = (p.paced_warmup, p.paced_duration, p.rate);
            let r = with_deadline(&format!("pc-{name}"), p.paced_deadline(), move || {
                with_echo_child(name, |addr, cpu| {
                    paced::run(&PacedSpec {
                        addr,
                        rate,
                        payload: PACED_PAYLOAD,
                        warmup,
                        duration,
                        core: CLIENT_CORE,
                        cpu: Some(cpu),
                    })
                })
            })?;
            Ok(Outcome {
                ops: None,
                idle: None,
                hist: r.hist,
                cpu: r.cpu,
                cpu_ops: r.completed,
                send_late: Some(r.send_late),
            })
        }
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// The echo server child; SIGTERM, then SIGKILL, and reaped when dropped.
struct ChildGuard {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl ChildGuard {
    /// Last non-empty line the child wrote to stderr.
    fn stderr_tail(&self) -> String {
        let s = self.stderr.lock().map(|s| s.clone()).unwrap_or_default();
        s.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// Waits up to `d` for the child to exit.
    fn wait_timeout(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + d;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return Some(st),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => return None,
            }
        }
    }

    fn died(&mut self, what: &str) -> anyhow::Error {
        let st = self.wait_timeout(Duration::from_secs(1));
        let tail = self.stderr_tail();
        let st = st.map_or("still running".to_string(), |s| s.to_string());
        if tail.is_empty() {
            anyhow!("echo server {what} ({st})")
        } else {
            anyhow!("echo server {what} ({st}): {tail}")
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: plain syscall; `pid` is our own child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if self.wait_timeout(Duration::from_secs(2)).is_none() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// Spawns `sigmabench serve echo` for `system` on core 1 and runs `drive` against it (on this
/// thread) with its address and a CPU meter holding the server process's clock.
fn with_echo_child<T>(system: &str, drive: impl FnOnce(SocketAddr, Arc<CpuMeter>) -> Result<T>) -> Result<T> {
    let exe = std::env::current_exe().context("locating the sigmabench executable")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut child = Command::new(exe)
        .args([
            "serve",
            "echo",
            "--system",
            system,
            "--addr",
            &addr.to_string(),
            "--core",
            &SERVER_CORE.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning the echo server child")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut stderr = child.stderr.take().context("child stderr")?;
    let mut guard = ChildGuard {
        child,
        stderr: Arc::new(Mutex::new(String::new())),
    };

    // Keep draining both pipes so the child never blocks on them.
    let err_buf = guard.stderr.clone();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut s) = err_buf.lock() {
                s.push_str(&String::from_utf8_lossy(&chunk[..n]));
                if s.len() > 16 * 1024 {
                    let cut = s.len() - 8 * 1024;
                    let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                    s.drain(..cut);
                }
            }
        }
    });
    let (line_tx, line_rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && line.starts_with("listening on") {
                sent = true;
                let _ = line_tx.send(line);
            }
        }
    });

    match line_rx.recv_timeout(CHILD_READY_TIMEOUT) {
        Ok(_) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => {
            return Err(anyhow!(
                "echo server printed no 'listening on' within {CHILD_READY_TIMEOUT:?}"
            ))
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => return Err(guard.died("exited before listening")),
    }

    let meter = CpuMeter::new();
    meter.add(
        Side::Server,
        Clock::process(guard.child.id()).context("the echo server's CPU clock")?,
    );
    let result = drive(addr, meter);
    if let Ok(Some(_)) = guard.child.try_wait() {
        return Err(guard.died("died during the run"));
    }
    result
}
