//! # sigmabench — σ's benchmark harness
//!
//! sigmabench runs benchmark *suites* that put σ next to its peers on the same machine, in the
//! same process run, interleaved, and writes the results in the stable JSON format of
//! `/work/shared/bench-schema.md` (plus a Markdown table, also printed to stdout at the end).
//!
//! ```text
//! sigmabench run peers|rpc|ns|spawn|spawn-rate [--quick] [--json FILE] [--md FILE] [--plot DIR] [--systems a,b,c] [--cases x,y] [--rounds N] [--rate N]
//! sigmabench report [--results DIR] [--readme FILE] [--check]
//! sigmabench compare OLD.json NEW.json [--threshold 0.10]
//! sigmabench serve echo --system NAME --addr HOST:PORT [--core N]
//! ```
//!
//! * `run peers` measures echo ping-pong (TCP 64 B and 4 KiB, Unix 64 B; client on core 0,
//!   server on core 1, both in the system under test) and pipelined throughput (a common
//!   epoll load generator on core 0, 64 connections x 16 requests of 64 B in flight, against
//!   the system's echo server running as a child process on core 1). Systems: `sigma`,
//!   `sigma-epoll`, `tokio`, `glommio`, `monoio`, `compio`, `tokio-uring`, `std-blocking` and
//!   `spin-floor` (busy-polling non-blocking sockets: the syscall floor).
//! * `run rpc` measures light RPCs (64 B request, the handler echoes the 64 B payload) over one
//!   TCP loopback connection, client thread on core 0, server thread on core 1, both ends in the
//!   system under test: `rpc-seq-64B` (sequential calls: mean, sd, percentiles) and
//!   `rpc-pipelined-64B` (64 calls in flight on the one connection, a new one issued as each
//!   completes: ops/s and percentiles), and `rpc-seq-work-300us` (sequential calls to a handler
//!   that works 300 µs first: what a client pays to wait for a slow server). Systems: `sigma`
//!   (σ's RPC), `sigma-no-early-wake` (the same with the client core's early wakes off),
//!   `sigma-pingpong` (the raw σ transport with no RPC layer: the floor; its client spins
//!   through the handler's work) and `tonic` (gRPC over HTTP/2 on tokio).
//!   `rpc_systems/` holds one file per system behind the `RpcSystem` trait.
//! * `run ns` measures the realm namespace, sequential operations from one client on core 0:
//!   `stat`, `read-4KiB`, `write-4KiB`, `create-remove` (create then remove an empty file: one
//!   op) and `watch-notify` (time from a create of a watched path to the watcher's notification).
//!   Systems: `sigma-embedded` (a real sigmad on embedded defaults, core pinned to 1, through its
//!   admin Unix socket), `sigma-etcd` (the same through `sigmad --etcd`) and `etcd-raw` (the same
//!   operations straight through etcd-client). sigmad is the one built beside sigmabench (or
//!   `SIGMA_SIGMAD`); one throwaway etcd (Debian's `etcd`) serves the whole run.
//!   `ns_systems/` holds one file per system behind the `NsSystem` trait.
//! * `run spawn` measures one proc start, start to exit seen and reaped, of the example proc
//!   `big` (a static binary of 11 MiB): `warm-start` (binary in place, realm on the machine),
//!   `cold-start` (binary copied from a local store into the cache and its BLAKE3 checked, in a
//!   realm made for the start) and `cold-start-s3` (from the suite's own S3 server: `sigma` through a sigmad whose store is
//!   S3, `vfork-exec` a bare signed GET into a file then exec), with a
//!   breakdown (`schedule_us`, `fetch_us`, `verify_us`, `namespaces_us`, `cgroups_us`, `jail_us`,
//!   `seccomp_us`, `exec_to_started_us`: each step's p50). Systems: `sigma` (a real sigmad:
//!   Spawn + WaitExit on its admin socket, binaries in its store), `sigma-sandbox` (σ's sandbox alone in this
//!   process: needs root and cgroups), `vfork-exec` (`std::process::Command`: the floor) and
//!   `docker` (`docker run --rm --network none` of a FROM-scratch image the suite builds).
//! * `run spawn-rate` measures procs started and waited for per second by 1, 8 and 32 threads
//!   starting the example proc `trivial` back to back (`trivial-c1`, `-c8`, `-c32`), with CPU
//!   per start, for `sigma`, `sigma-sandbox` and `vfork-exec`; each thread runs
//!   `Starter::bare_loop` (no breakdown asked per start: `sigma` keeps one admin connection per
//!   thread and asks no `START_TIMES`, `sigma-sandbox`'s proc writes no start stamp). Both spawn suites build the example
//!   procs of `tests/procs/` with rustc into `<target dir>/sigma-procs/` (`procs.rs`);
//!   `spawn_systems/` holds one file per system behind the `Starter` trait.
//! * `report` rebuilds `results/SUITE.md`, the plots `results/plots/SUITE.svg` and the README's
//!   generated tables (between `<!-- sigmabench:begin NAME -->` markers) from `results/SUITE.json`;
//!   `--check` writes nothing and fails if any of them is out of date (`tables.rs`).
//! * `compare` prints new ÷ old per row of two runs of one suite and exits 1 if a row regressed
//!   past the threshold (`compare.rs`).
//! * `serve echo` runs one system's TCP echo server in the foreground until killed; it prints
//!   `listening on ADDR` once it accepts connections (port 0 picks a free port, and ADDR shows
//!   it). `run` uses it for the pipelined case.
//!
//! A system that fails, panics or hangs gets a row with `"error"` and null figures, and the exit
//! status is then 1; it never stops the suite. Progress goes to stderr.

mod affinity;
mod compare;
mod cpu;
mod loadgen;
mod ns_systems;
mod paced;
mod plot;
mod procs;
mod report;
mod rpc_systems;
mod sigmad;
mod spawn_systems;
mod suites;
mod systems;
mod tables;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use report::{Doc, Host};

/// Held by the unit tests that spin on pinned cores or judge timing, so that two of them never
/// share a core (a spinning neighbour would stretch their figures by whole scheduler slices).
#[cfg(test)]
pub(crate) static CORES_IN_USE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes [`CORES_IN_USE`], whatever a panicking holder left.
#[cfg(test)]
pub(crate) fn cores_for_test() -> std::sync::MutexGuard<'static, ()> {
    CORES_IN_USE.lock().unwrap_or_else(|e| e.into_inner())
}

/// σ's benchmark harness.
#[derive(Debug, Parser)]
#[command(name = "sigmabench", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a benchmark suite (known: peers, rpc, ns, spawn, spawn-rate).
    Run(RunArgs),
    /// Rebuild results/SUITE.md, results/plots/SUITE.svg and the README's tables from results/SUITE.json.
    Report {
        /// Directory of the result documents (SUITE.json for each suite run).
        #[arg(long, value_name = "DIR", default_value = "results")]
        results: PathBuf,
        /// The README whose marked blocks get the tables.
        #[arg(long, value_name = "FILE", default_value = "README.md")]
        readme: PathBuf,
        /// Write nothing; exit 1 if any generated file differs from what the JSON gives.
        #[arg(long)]
        check: bool,
    },
    /// Compare two runs of one suite row by row; exit 1 if a row regressed past the threshold.
    Compare {
        /// The earlier run's JSON.
        old: PathBuf,
        /// The later run's JSON.
        new: PathBuf,
        /// How much worse (0.10 = 10%) a median, throughput or CPU per operation may get.
        #[arg(long, default_value_t = compare::THRESHOLD_DEFAULT)]
        threshold: f64,
    },
    /// Run one server in the foreground until killed.
    Serve {
        #[command(subcommand)]
        what: ServeCmd,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Suite to run (known: peers, rpc, ns, spawn, spawn-rate).
    suite: String,
    /// Fewer samples and one round: the whole suite in about 30 s on 2 cores.
    #[arg(long)]
    quick: bool,
    /// Write the JSON result document here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the Markdown table here.
    #[arg(long, value_name = "FILE")]
    md: Option<PathBuf>,
    /// Write the suite's plot to DIR/SUITE.svg.
    #[arg(long, value_name = "DIR")]
    plot: Option<PathBuf>,
    /// Only these systems (comma-separated), in report order; the names depend on the suite.
    #[arg(long, value_delimiter = ',', value_name = "A,B,C")]
    systems: Option<Vec<String>>,
    /// Number of rounds (default: 1 with --quick, 3 otherwise).
    #[arg(long, value_name = "N")]
    rounds: Option<u32>,
    /// Only these cases (comma-separated), e.g. pingpong-64B,pipelined-64B, rpc-seq-64B or stat,watch-notify.
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    cases: Option<Vec<String>>,
    /// Requests per second of the paced cases (peers `paced-64B`, rpc `rpc-paced-64B`).
    #[arg(long, value_name = "N", default_value_t = paced::RATE_DEFAULT,
          value_parser = clap::value_parser!(u32).range(i64::from(paced::RATE_MIN)..=i64::from(paced::RATE_MAX)))]
    rate: u32,
}

#[derive(Debug, Subcommand)]
enum ServeCmd {
    /// TCP echo server of one system.
    Echo {
        /// System name (see `run --systems`).
        #[arg(long)]
        system: String,
        /// Address to listen on.
        #[arg(long)]
        addr: SocketAddr,
        /// Core to pin the server thread to.
        #[arg(long, default_value_t = 0)]
        core: usize,
    },
}

fn main() -> ExitCode {
    // σ's data plane logs which IO back end it runs and why; RUST_LOG overrides.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(args) => run(args),
        Cmd::Report { results, readme, check } => report(&results, &readme, check),
        Cmd::Compare { old, new, threshold } => compare_runs(&old, &new, threshold),
        Cmd::Serve {
            what: ServeCmd::Echo { system, addr, core },
        } => serve_echo(&system, addr, core).map(|()| ExitCode::SUCCESS),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sigmabench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// The systems `--systems` names (all of them without it), out of a suite's registry `all`, in
/// the order given; `name` tells a system's name.
fn select_systems<T: ?Sized>(
    all: Vec<Arc<T>>,
    name: impl Fn(&T) -> &'static str,
    wanted: Option<&[String]>,
) -> Result<Vec<Arc<T>>> {
    let Some(wanted) = wanted else {
        return Ok(all);
    };
    let known: Vec<&str> = all.iter().map(|s| name(s)).collect();
    let mut out: Vec<Arc<T>> = Vec::new();
    for w in wanted.iter().map(|w| w.trim()).filter(|w| !w.is_empty()) {
        let Some(s) = all.iter().find(|s| name(s) == w) else {
            bail!("unknown system '{w}'; known systems: {}", known.join(", "));
        };
        if !out.iter().any(|o| name(o) == w) {
            out.push(s.clone());
        }
    }
    if out.is_empty() {
        bail!("--systems selects nothing; known systems: {}", known.join(", "));
    }
    Ok(out)
}

/// A suite with the systems it runs.
enum Suite {
    Peers(Vec<Arc<dyn systems::System>>),
    Rpc(Vec<Arc<dyn rpc_systems::RpcSystem>>),
    Ns(Vec<Arc<dyn ns_systems::NsSystem>>),
    Spawn(Vec<Arc<spawn_systems::System>>),
    SpawnRate(Vec<Arc<spawn_systems::System>>),
}

fn run(args: RunArgs) -> Result<ExitCode> {
    if !suites::KNOWN.contains(&args.suite.as_str()) {
        bail!(
            "unknown suite '{}'; known suites: {}",
            args.suite,
            suites::KNOWN.join(", ")
        );
    }
    let wanted = args.systems.as_deref();
    // Select before measuring anything, so that a wrong name fails at once.
    let suite = match args.suite.as_str() {
        "rpc" => Suite::Rpc(select_systems(
            rpc_systems::all().into_iter().map(Arc::from).collect(),
            |s: &(dyn rpc_systems::RpcSystem + 'static)| s.name(),
            wanted,
        )?),
        "ns" => Suite::Ns(select_systems(
            ns_systems::all().into_iter().map(Arc::from).collect(),
            |s: &(dyn ns_systems::NsSystem + 'static)| s.name(),
            wanted,
        )?),
        "spawn" => Suite::Spawn(select_systems(
            spawn_systems::all().into_iter().map(Arc::new).collect(),
            |s: &spawn_systems::System| s.name,
            wanted,
        )?),
        "spawn-rate" => Suite::SpawnRate(select_systems(
            spawn_systems::all()
                .into_iter()
                .filter(|s| s.in_rate)
                .map(Arc::new)
                .collect(),
            |s: &spawn_systems::System| s.name,
            wanted,
        )?),
        _ => Suite::Peers(select_systems(
            systems::all().into_iter().map(Arc::from).collect(),
            |s: &(dyn systems::System + 'static)| s.name(),
            wanted,
        )?),
    };
    let host = Host::detect();
    if host.cores < 2 {
        eprintln!(
            "sigmabench: warning: only {} core(s) available; client and server share a core",
            host.cores
        );
    }
    let started_at = report::utc_now_rfc3339();
    let t0 = Instant::now();
    let rows = match suite {
        Suite::Peers(systems) => suites::peers::run(&suites::peers::Options {
            quick: args.quick,
            rounds: args.rounds,
            systems,
            cases: args.cases.clone(),
            rate: args.rate,
        })?,
        Suite::Rpc(systems) => suites::rpc::run(&suites::rpc::Options {
            quick: args.quick,
            rounds: args.rounds,
            systems,
            cases: args.cases.clone(),
            rate: args.rate,
        })?,
        Suite::Ns(systems) => suites::ns::run(&suites::ns::Options {
            quick: args.quick,
            rounds: args.rounds,
            systems,
            cases: args.cases.clone(),
        })?,
        Suite::Spawn(systems) => suites::spawn::run(&suites::spawn::Options {
            quick: args.quick,
            rounds: args.rounds,
            systems,
            cases: args.cases.clone(),
        })?,
        Suite::SpawnRate(systems) => suites::spawn_rate::run(&suites::spawn_rate::Options {
            quick: args.quick,
            rounds: args.rounds,
            systems,
            cases: args.cases.clone(),
        })?,
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let doc = Doc {
        suite: args.suite.clone(),
        schema: 1,
        quick: args.quick,
        host,
        started_at,
        rounds,
        elapsed_s: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        rows,
    };
    if let Some(p) = &args.json {
        doc.write_json(p)?;
    }
    if let Some(p) = &args.md {
        doc.write_md(p)?;
    }
    if let Some(dir) = &args.plot {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        plot::write_svg(&doc, &dir.join(format!("{}.svg", doc.suite)))?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(doc.markdown().as_bytes())?;
    out.flush()?;
    let failed: Vec<String> = doc
        .rows
        .iter()
        .filter(|r| r.error.is_some())
        .map(|r| format!("{}/{}", r.case, r.system))
        .collect();
    eprintln!("sigmabench: {} finished in {:.1} s", doc.suite, doc.elapsed_s);
    if failed.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("sigmabench: {} error row(s): {}", failed.len(), failed.join(", "));
        Ok(ExitCode::from(1))
    }
}

/// Reads a result document.
fn read_doc(path: &Path) -> Result<Doc> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a sigmabench result document", path.display()))
}

/// `sigmabench report`: every generated file from the JSON documents under `results`.
fn report(results: &Path, readme: &Path, check: bool) -> Result<ExitCode> {
    let mut docs = std::collections::BTreeMap::new();
    // (path, what it should hold)
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    for suite in suites::KNOWN {
        let json = results.join(format!("{suite}.json"));
        if !json.exists() {
            continue;
        }
        let doc = read_doc(&json)?;
        if doc.suite != *suite {
            bail!("{} holds a '{}' run, not '{suite}'", json.display(), doc.suite);
        }
        files.push((results.join(format!("{suite}.md")), doc.markdown()));
        files.push((
            results.join("plots").join(format!("{suite}.svg")),
            plot::render_svg(&doc)?,
        ));
        docs.insert(suite.to_string(), doc);
    }
    if docs.is_empty() {
        bail!(
            "no result documents (peers.json, rpc.json, ns.json, spawn.json, spawn-rate.json) in {}",
            results.display()
        );
    }
    let text = std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    files.push((
        readme.to_path_buf(),
        tables::splice(&text, &tables::blocks(&docs)).with_context(|| format!("in {}", readme.display()))?,
    ));
    let mut stale = Vec::new();
    for (path, want) in &files {
        let have = std::fs::read_to_string(path).ok();
        if have.as_deref() == Some(want.as_str()) {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(path, want).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("sigmabench: wrote {}", path.display());
        }
    }
    if stale.is_empty() {
        if check {
            eprintln!("sigmabench: {} generated file(s) match their results", files.len());
        }
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "sigmabench: out of date with the results (run `sigmabench report`): {}",
            stale.join(", ")
        );
        Ok(ExitCode::from(1))
    }
}

/// `sigmabench compare`.
fn compare_runs(old: &Path, new: &Path, threshold: f64) -> Result<ExitCode> {
    if !(threshold.is_finite() && threshold >= 0.0) {
        bail!("--threshold must be a fraction ≥ 0 (0.10 = 10% worse), not {threshold}");
    }
    let (a, b) = (read_doc(old)?, read_doc(new)?);
    if a.suite != b.suite {
        bail!(
            "{} is a '{}' run and {} a '{}' run",
            old.display(),
            a.suite,
            new.display(),
            b.suite
        );
    }
    let lines = compare::compare(&a, &b, threshold);
    let mut out = std::io::stdout().lock();
    out.write_all(compare::markdown(&a, &b, &lines, threshold).as_bytes())?;
    out.flush()?;
    Ok(if compare::any_regression(&lines) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn serve_echo(system: &str, mut addr: SocketAddr, core: usize) -> Result<()> {
    let Some(sys) = systems::by_name(system) else {
        bail!(
            "unknown system '{system}'; known systems: {}",
            systems::names().join(", ")
        );
    };
    if addr.port() == 0 {
        // `ready()` cannot tell which port a system got, so pick a free one here and
        // print the real address.
        let probe = std::net::TcpListener::bind(addr).context("finding a free port")?;
        addr = probe.local_addr()?;
    }
    let mut ready = || {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    };
    sys.serve_echo(addr, core, &mut ready)
        .with_context(|| format!("{system} echo server on {addr}"))?;
    bail!("{system} echo server returned")
}
