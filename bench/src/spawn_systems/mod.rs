//! The systems of the `spawn` and `spawn-rate` suites: the [`Starter`] trait, the registry, and
//! what every system shares in one suite run ([`Env`]: the example procs, a "store" holding the
//! big binary with its digest, and an empty cache directory).
//!
//! A system is opened once per suite run ([`System::open`]: a sandbox with its warm realm, a
//! Docker image, ...); a system that cannot be opened (not root, no Docker engine, not built
//! yet) gets an error row with the reason in every case. An opened system starts one proc per
//! [`Starter::start`] call, waits for its exit and says where the time went. Starters are `Sync`:
//! `spawn-rate` calls one from many threads at once.
//!
//! To add a system: write `src/spawn_systems/NAME.rs` with an `open(&Env)` returning a
//! [`Starter`], and list it in [`all`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::report::Breakdown;

mod bare_s3;
mod docker;
mod sandbox;
mod sigma;
mod vfork_exec;

/// Retries of an exec that fails with ETXTBSY. A freshly copied binary is briefly "busy" when
/// another thread of this process forks while the copy's fd is open for writing (the forked
/// child holds it until it execs): unit tests running in parallel do that. The suites start
/// cold procs from one thread at a time, so their measured starts never retry.
pub const TEXT_BUSY_RETRIES: u32 = 100;
/// The pause before such a retry.
pub const TEXT_BUSY_PAUSE: Duration = Duration::from_millis(1);

/// Set in a proc's environment, the example procs write `started <CLOCK_MONOTONIC ns>` to stdout
/// as the first thing their `main` does.
pub const STAMP_ENV: &str = "SIGMA_BENCH_STAMP";

/// The start stamp in a proc's output, ns.
pub fn parse_stamp(out: &str) -> Option<u64> {
    out.lines()
        .find_map(|l| l.strip_prefix("started ")?.trim().parse().ok())
}

/// How a proc is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Binary already in the machine's cache, realm already on the machine.
    Warm,
    /// Binary brought from the local store into the cache first (copied and verified), in a
    /// realm made for this start.
    Cold,
    /// As [`Start::Cold`], the binary fetched from an S3 server instead (over HTTP, into the
    /// cache): only systems with a binary store ([`System::s3_missing`] `None`) are asked.
    ColdS3,
}

/// What a system without a start from S3 says if asked for one anyway (the suite does not ask:
/// its rows say [`System::s3_missing`]).
pub const NO_S3: &str = "this system has no start from S3 (its cold-start-s3 row says why)";

/// Which example proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proc {
    /// `tests/procs/trivial.rs`: exits 0 at once (with [`STAMP_ENV`] set, after writing when its
    /// `main` started to stdout).
    Trivial,
    /// `tests/procs/big.rs`: the same with a 10 MiB table in its read-only data.
    Big,
}

/// Where the time of one start went, ns; `None` where a step does not apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps {
    pub schedule: Option<u64>,
    pub fetch: Option<u64>,
    pub verify: Option<u64>,
    pub namespaces: Option<u64>,
    pub cgroups: Option<u64>,
    pub jail: Option<u64>,
    pub seccomp: Option<u64>,
    pub exec_to_started: Option<u64>,
    pub started_to_reaped: Option<u64>,
}

/// How many fields [`Steps`] has.
pub const STEPS_COUNT: usize = 9;

impl Steps {
    /// The steps in [`Breakdown`]'s field order.
    pub fn as_array(&self) -> [Option<u64>; STEPS_COUNT] {
        [
            self.schedule,
            self.fetch,
            self.verify,
            self.namespaces,
            self.cgroups,
            self.jail,
            self.seccomp,
            self.exec_to_started,
            self.started_to_reaped,
        ]
    }

    /// A breakdown from one value (µs) per step, in [`Breakdown`]'s field order.
    pub fn breakdown(us: [Option<f64>; STEPS_COUNT]) -> Breakdown {
        let [schedule_us, fetch_us, verify_us, namespaces_us, cgroups_us, jail_us, seccomp_us, exec_to_started_us, started_to_reaped_us] =
            us;
        Breakdown {
            schedule_us,
            fetch_us,
            verify_us,
            namespaces_us,
            cgroups_us,
            jail_us,
            seccomp_us,
            exec_to_started_us,
            started_to_reaped_us,
        }
    }
}

/// One start: from the first thing the system does to the proc's exit seen and reaped, ns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub total_ns: u64,
    pub steps: Steps,
}

/// An opened system.
pub trait Starter: Send + Sync {
    /// Starts `proc` (`seq` is unique among this run's calls), waits for its exit (which must be
    /// 0) and returns the timings.
    fn start(&self, how: Start, proc: Proc, seq: u64) -> Result<Sample>;

    /// What this system's rows should say about how it starts a proc and what its breakdown
    /// fields hold.
    fn note(&self, how: Start) -> String;

    /// A warm start of `proc` for `spawn-rate`: as [`Starter::start`] with [`Start::Warm`], minus
    /// whatever only a breakdown needs (the rate suite reports none), so that a start costs what
    /// a caller starting procs back to back pays; the sample's steps are empty.
    fn start_bare(&self, proc: Proc, seq: u64) -> Result<Sample> {
        self.start(Start::Warm, proc, seq)
    }

    /// Bare starts of `proc` back to back while `go_on()` says so, each handed to `each` (an
    /// error from it ends the loop); `seq()` gives each start its number. What one thread of
    /// `spawn-rate` runs; a system may keep what its starts share across them (sigma: the
    /// connection to sigmad).
    fn bare_loop(
        &self,
        proc: Proc,
        seq: &dyn Fn() -> u64,
        go_on: &dyn Fn() -> bool,
        each: &mut dyn FnMut(Sample) -> Result<()>,
    ) -> Result<()> {
        while go_on() {
            each(self.start_bare(proc, seq())?)?;
        }
        Ok(())
    }

    /// What [`Starter::bare_loop`]'s rows should say about how it starts a proc.
    fn bare_note(&self) -> String {
        self.note(Start::Warm)
    }

    /// Whether this process's and its reaped children's CPU ([`own_and_children_cpu_ns`]), plus
    /// [`Starter::daemon_cpu_ns`] where there is one, is all the CPU a start costs (not so for
    /// Docker, whose per-container shim and runc come and go uncounted).
    fn cpu_counted(&self) -> bool {
        true
    }

    /// Removes what the system made outside this process (Docker images) now, even if a hung run
    /// still holds the starter; called once the suite is done, and idempotent.
    fn close(&self) {}

    /// CPU used so far by the daemons that start procs for this system (outside this process
    /// tree), ns, if it has any and they can be read; what they count is in [`Starter::note`].
    fn daemon_cpu_ns(&self) -> Option<u64> {
        None
    }
}

/// User + system CPU so far of process `pid` (with `children`, also of the children it has
/// reaped), ns, from `/proc/PID/stat` (clock ticks).
pub fn process_cpu_ns(pid: u32, children: bool) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<u64> = stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let [utime, stime, cutime, cstime] = fields[..] else {
        return None;
    };
    let ticks = utime + stime + if children { cutime + cstime } else { 0 };
    Some(ticks * 1_000_000_000 / hz as u64)
}

/// User + system CPU so far of every process whose command name is one of `names`, ns, from
/// `/proc/PID/stat` (clock ticks: 10 ms resolution at 100 Hz).
pub fn processes_cpu_ns(names: &[&str]) -> Option<u64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return None;
    }
    let mut ticks = 0u64;
    let mut found = false;
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        if !e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ... utime (14th) stime (15th); comm may hold spaces.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if !names.contains(&&stat[open + 1..close]) {
            continue;
        }
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let (Some(u), Some(s)) = (fields.get(11), fields.get(12)) else {
            continue;
        };
        if let (Ok(u), Ok(s)) = (u.parse::<u64>(), s.parse::<u64>()) {
            ticks += u + s;
            found = true;
        }
    }
    found.then(|| ticks * 1_000_000_000 / hz as u64)
}

/// A system of the registry.
#[derive(Debug)]
pub struct System {
    /// Its name in rows and `--systems`.
    pub name: &'static str,
    /// Opens it for a suite run.
    pub open: fn(&Env) -> Result<Arc<dyn Starter>>,
    /// Whether `spawn-rate` runs it.
    pub in_rate: bool,
    /// Why a start from S3 ([`Start::ColdS3`], the `cold-start-s3` case) is not measured for
    /// it; `None`: it is.
    pub s3_missing: Option<&'static str>,
}

/// Every system, in report order (σ first, the floor, then the peers).
pub fn all() -> Vec<System> {
    vec![
        System {
            name: "sigma",
            open: sigma::open,
            in_rate: true,
            s3_missing: None,
        },
        System {
            name: "sigma-sandbox",
            open: sandbox::open,
            in_rate: true,
            s3_missing: Some("the sandbox alone has no binary store (it runs a file it is given), so nothing of it fetches from S3; the start from S3 is measured through sigmad's store, in the `sigma` row"),
        },
        System {
            name: "vfork-exec",
            open: vfork_exec::open,
            in_rate: true,
            s3_missing: None,
        },
        System {
            name: "docker",
            open: docker::open,
            in_rate: false,
            s3_missing: Some("Docker's start from a remote store is a registry pull, not an S3 fetch, and these machines have no registry to pull from (the suite's S3 server is not one)"),
        },
    ]
}

/// The local store (one file: the big proc) and the machine's cache of binaries. Cheap to clone:
/// a starter keeps its own copy.
#[derive(Debug, Clone)]
pub struct Store {
    /// The store's copy of `big`: what a cold start fetches.
    pub big: PathBuf,
    /// BLAKE3 of it: what a cold start verifies its copy against.
    pub big_digest: blake3::Hash,
    /// The cache: each cold start copies into a file of its own here, removed afterwards.
    pub cache: PathBuf,
}

impl Store {
    /// Copies the store's `big` into the cache as `<name>-<seq>`.
    pub fn fetch(&self, name: &str, seq: u64) -> Result<PathBuf> {
        let to = self.cache.join(format!("{name}-{seq}"));
        std::fs::copy(&self.big, &to).with_context(|| format!("copying the store's binary to {}", to.display()))?;
        Ok(to)
    }

    /// Checks the BLAKE3 digest of a fetched binary against the store's.
    pub fn verify(&self, path: &Path) -> Result<()> {
        let got = digest(path)?;
        if got != self.big_digest {
            bail!(
                "{}: BLAKE3 {} differs from the store's {}",
                path.display(),
                got.to_hex(),
                self.big_digest.to_hex()
            );
        }
        Ok(())
    }
}

/// What every system of one suite run shares. The store and the cache are removed when it drops.
#[derive(Debug)]
pub struct Env {
    /// The example proc `trivial` as built.
    pub trivial: PathBuf,
    /// The example proc `big` as built (warm starts run it in place).
    pub big: PathBuf,
    /// Size of `big`, bytes.
    pub big_bytes: u64,
    /// The store and the cache.
    pub store: Store,
    /// The run's scratch directory (store, cache, Docker build contexts).
    pub dir: tempfile::TempDir,
}

impl Env {
    /// Builds (or finds) the example procs and makes the store and the cache.
    pub fn new() -> Result<Env> {
        let trivial = crate::procs::binary("trivial")?;
        let big = crate::procs::binary("big")?;
        let dir = tempfile::Builder::new()
            .prefix("sigmabench-spawn-")
            .tempdir()
            .context("creating the spawn suites' scratch directory")?;
        let store_dir = dir.path().join("store");
        let cache = dir.path().join("cache");
        for d in [&store_dir, &cache] {
            std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let store_big = store_dir.join("big");
        std::fs::copy(&big, &store_big).with_context(|| format!("copying {} into the store", big.display()))?;
        let big_bytes = std::fs::metadata(&store_big)?.len();
        let big_digest = digest(&store_big)?;
        Ok(Env {
            trivial,
            big,
            big_bytes,
            store: Store {
                big: store_big,
                big_digest,
                cache,
            },
            dir,
        })
    }
}

/// BLAKE3 of a file, read through a buffer.
fn digest(path: &Path) -> Result<blake3::Hash> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = blake3::Hasher::new();
    hasher
        .update_reader(file)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(hasher.finalize())
}

/// CLOCK_MONOTONIC now, ns (the clock of the sandbox's spawn stamps).
pub use sigma_sandbox::monotonic_ns as now_ns;

/// Runs `cmd` to completion, at most `timeout` (then kills it), and returns its stdout; a
/// non-zero exit is an error carrying its stderr.
pub fn run_cmd(cmd: &mut std::process::Command, timeout: Duration) -> Result<String> {
    use std::io::Read;
    use std::process::Stdio;
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    // Readers on threads, so that a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().context("stdout")?;
    let mut err = child.stderr.take().context("stderr")?;
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let until = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if std::time::Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not finish within {:.0} s", timeout.as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    if !status.success() {
        bail!("{what} failed ({status}): {}", stderr.trim());
    }
    Ok(stdout)
}

/// CPU (user + system) of this process and of its reaped children so far, ns
/// (`getrusage(RUSAGE_SELF)` + `getrusage(RUSAGE_CHILDREN)`).
pub fn own_and_children_cpu_ns() -> u64 {
    let read = |who| {
        // SAFETY: `rusage` is plain data; all-zero is a valid value to be overwritten.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage into a live, writable rusage.
        if unsafe { libc::getrusage(who, &mut ru) } != 0 {
            return 0;
        }
        let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    };
    read(libc::RUSAGE_SELF) + read(libc::RUSAGE_CHILDREN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_fetches_and_verifies_and_catches_a_changed_copy() {
        let env = Env::new().unwrap();
        assert!(env.big_bytes > 10 << 20, "big is {} bytes", env.big_bytes);
        let p = env.store.fetch("t", 1).unwrap();
        env.store.verify(&p).unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        let e = format!("{:#}", env.store.verify(&p).unwrap_err());
        assert!(e.contains("differs from the store's"), "{e}");
    }

    #[test]
    fn a_process_cpu_is_read_by_name() {
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        let busy = std::time::Instant::now();
        while busy.elapsed() < Duration::from_millis(30) {
            std::hint::spin_loop();
        }
        assert!(processes_cpu_ns(&[me.trim()]).unwrap() > 0);
        assert!(processes_cpu_ns(&["no-such-process-name"]).is_none());
    }

    #[test]
    fn run_cmd_returns_stdout_and_fails_with_stderr_or_on_timeout() {
        let out = run_cmd(
            std::process::Command::new("sh").args(["-c", "echo hi"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.trim(), "hi");
        let e = run_cmd(
            std::process::Command::new("sh").args(["-c", "echo bad >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("bad"), "{e:#}");
        let e = run_cmd(std::process::Command::new("sleep").arg("5"), Duration::from_millis(100)).unwrap_err();
        assert!(format!("{e:#}").contains("did not finish"), "{e:#}");
    }
}
