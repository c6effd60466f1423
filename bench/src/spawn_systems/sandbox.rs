//! `sigma-sandbox`: σ's sandbox alone, in sigmabench's own process: no sigmad, no scheduling, no
//! binary store. `sigma_sandbox::Sandbox::spawn` of the binary, its mount namespace held (as
//! sigmad holds it, so that the jail is torn down after the exit is seen), then a poll on the proc's pidfd
//! until it exits, then `Child::try_wait` (reap; cgroups pooled or removed).
//!
//! Opened once per suite run: one [`Sandbox`] (cgroups `sigma-bench-<pid>-<n>` under this
//! process's own cgroup in each hierarchy, a pool of [`WARM_CGROUPS`] warm cgroups per realm and
//! class) and one warm realm. Needs root (cgroups, namespaces); where it cannot be set up, its
//! rows are error rows with the sandbox's reason.
//!
//! Warm: into the warm realm, the binary already in place (bound read-only into the jail, never
//! copied), from a warm sandbox (`Sandbox::prepare`) made right after the previous start, while
//! that proc ran, as sigmad makes them. Cold: the binary copied from the store into the cache and its BLAKE3 checked, in a
//! realm made for the start (netns, cgroups) and undone after it (not timed).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sigma_sandbox::{Child, Class, Config, ExitStatus, RealmHandle, Sandbox, SpawnSpec, SpawnTimes};

use super::{now_ns, parse_stamp, Env, Proc, Sample, Start, Starter, Steps, Store, NO_S3, STAMP_ENV};

/// Warm cgroups per realm and class: enough for `spawn-rate`'s most concurrent case.
const WARM_CGROUPS: usize = 64;
/// Warm sandboxes the warm realm holds: sigmad's default, or `SIGMA_WARM_SANDBOXES` (as sigmad
/// reads it; 0 turns them off in both).
const WARM_SANDBOXES: usize = 4;

fn warm_sandboxes() -> Result<usize> {
    match std::env::var("SIGMA_WARM_SANDBOXES") {
        Err(_) => Ok(WARM_SANDBOXES),
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= sigma_sandbox::limits::WARM_SANDBOXES_PER_REALM_MAX)
            .with_context(|| {
                format!(
                    "SIGMA_WARM_SANDBOXES={v:?}: expected 0..={}",
                    sigma_sandbox::limits::WARM_SANDBOXES_PER_REALM_MAX
                )
            }),
    }
}
/// Memory limit of a proc, MiB (the big proc maps 11 MiB of binary).
const PROC_MEM_MIB: u64 = 64;
/// Tasks a proc may have.
const PROC_PIDS_MAX: u64 = 8;
/// Milli-cores of a proc's LC class.
const PROC_MCPU: u64 = 1000;
/// How long a proc that should exit at once may take.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Sandboxes opened by this process (each needs its own cgroup names).
static OPENED: AtomicU32 = AtomicU32::new(0);

/// The prefix of every cgroup (and jail directory) sigmabench's sandboxes make.
pub const CGROUP_PREFIX: &str = "sigma-bench-";

struct SandboxStarter {
    // Realms before the sandbox: a realm is undone when its last handle goes.
    warm: RealmHandle,
    sb: Sandbox,
    trivial: PathBuf,
    big: PathBuf,
    store: Store,
    /// fd 3 of every proc (the procs do not use it yet); our end is kept open.
    ctl: (OwnedFd, OwnedFd),
    dev_null: File,
}

pub fn open(env: &Env) -> Result<Arc<dyn Starter>> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        bail!("the sandbox needs root to make cgroups and namespaces (running as uid {euid})");
    }
    reclaim_dead_runs();
    let name = format!(
        "{CGROUP_PREFIX}{}-{}",
        std::process::id(),
        OPENED.fetch_add(1, Ordering::Relaxed)
    );
    let mut config = Config::new(&name);
    config.warm_cgroups = WARM_CGROUPS;
    config.warm_sandboxes = warm_sandboxes()?;
    let sb = Sandbox::new(config).with_context(|| format!("setting up the sandbox ({name})"))?;
    let warm = sb.realm("bench-warm").context("making the warm realm")?;
    let dev_null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    Ok(Arc::new(SandboxStarter {
        warm,
        sb,
        trivial: env.trivial.clone(),
        big: env.big.clone(),
        store: env.store.clone(),
        ctl: seqpacket_pair()?,
        dev_null,
    }))
}

/// Removes what sigmabench runs that were killed left behind: the cgroups
/// (`sigma-bench-<pid>-<n>`, killing what still runs in them) and jail
/// directories of pids no longer alive. Best effort: a failure is reported
/// and the run goes on (its own names are new).
fn reclaim_dead_runs() {
    let dead = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix(CGROUP_PREFIX) else {
            return false;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        pid.is_some_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
    };
    let mut names = std::collections::BTreeSet::new();
    for h in sigma_sandbox::cgroup::detect().unwrap_or_default() {
        for e in std::fs::read_dir(&h.own_dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if dead(&name) {
                names.insert(name);
            }
        }
    }
    for name in names {
        match sigma_sandbox::cgroup::reclaim(&name) {
            Ok(killed) => {
                eprintln!("sigmabench: removed the cgroups {name} a killed run left ({killed} processes killed)")
            }
            Err(e) => eprintln!("sigmabench: could not remove the cgroups {name} a killed run left: {e}"),
        }
    }
    for e in std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(base) = name.strip_suffix(".jail") {
            if dead(base) {
                // Empty on the host (each child mounts its tmpfs in its own namespace).
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

fn seqpacket_pair() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two fds into a live array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).context("socketpair for the procs' control fd");
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits until the proc's pidfd is readable (it exited).
fn exit_seen(child: &Child) -> Result<()> {
    let until = now_ns() + EXIT_TIMEOUT.as_nanos() as u64;
    loop {
        let mut pfd = libc::pollfd {
            fd: child.pidfd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let left_ms = (until.saturating_sub(now_ns()) / 1_000_000) as libc::c_int;
        // SAFETY: poll on one live pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left_ms) };
        if r > 0 {
            return Ok(());
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).context("polling the proc's pidfd");
            }
        }
        if now_ns() >= until {
            bail!(
                "proc {} (pid {}) did not exit within {} s",
                child.proc().proc_id,
                child.pid(),
                EXIT_TIMEOUT.as_secs()
            );
        }
    }
}

/// The sandbox's steps of one spawn (`SpawnTimes::steps`: namespaces, cgroups, jail, seccomp),
/// then the proc's own start stamp and the moment it was reaped.
fn steps(t: &SpawnTimes, started_ns: u64, reaped_ns: u64) -> Steps {
    let s = t.steps();
    let d = |a: u64, b: u64| Some(b.saturating_sub(a));
    Steps {
        namespaces: Some(s.namespaces_ns),
        cgroups: Some(s.cgroups_ns),
        jail: Some(s.jail_ns),
        seccomp: Some(s.seccomp_ns),
        exec_to_started: d(t.child[5], started_ns),
        started_to_reaped: d(started_ns, reaped_ns),
        ..Steps::default()
    }
}

/// A close-on-exec pipe: (read end, write end).
fn pipe() -> Result<(File, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into a live array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe for the proc's stdout");
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl SandboxStarter {
    /// Spawns `binary` in `realm`, waits for its exit and reaps it; the start time, the steps
    /// and the end time.
    /// With `prepare`, a warm sandbox for the next start of `binary` is made right after the
    /// spawn, while the proc runs (as sigmad does).
    /// With `stamp`, the proc writes when its main started to its stdout, a pipe read once it is
    /// reaped, for the steps; without, its stdout is /dev/null and the steps are empty.
    fn spawn_and_wait(
        &self,
        realm: &RealmHandle,
        binary: &Path,
        seq: u64,
        prepare: bool,
        stamp: bool,
    ) -> Result<(u64, Steps, u64)> {
        let proc_id = format!("p{seq}");
        let (mut out_read, out_write) = match stamp {
            true => {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            }
            false => (None, None),
        };
        let env = match stamp {
            true => vec![(STAMP_ENV.to_string(), "1".to_string())],
            false => Vec::new(),
        };
        let spec = SpawnSpec {
            argv0: None,
            realm,
            proc_id: &proc_id,
            binary,
            args: &[],
            env: &env,
            class: Class::Lc { mcpu: PROC_MCPU },
            mem_mib: PROC_MEM_MIB,
            pids_max: PROC_PIDS_MAX,
            ctl_fd: self.ctl.1.as_fd(),
            stdout: out_write.as_ref().map_or(self.dev_null.as_fd(), |w| w.as_fd()),
            stderr: self.dev_null.as_fd(),
            hold_mount_namespace: true,
        };
        let mut busy = 0;
        let (t0, mut child) = loop {
            let t0 = now_ns();
            match self.sb.spawn(&spec) {
                Err(sigma_sandbox::Error::ChildExec { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY) && busy < super::TEXT_BUSY_RETRIES =>
                {
                    busy += 1;
                    std::thread::sleep(super::TEXT_BUSY_PAUSE);
                }
                r => break (t0, r.with_context(|| format!("spawn in realm {}", realm.name()))?),
            }
        };
        drop(out_write);
        if prepare {
            self.sb
                .prepare(realm, Class::Lc { mcpu: PROC_MCPU }, binary)
                .context("making a warm sandbox for the next start")?;
        }
        exit_seen(&child)?;
        let status = child.try_wait().context("reaping")?;
        let end = now_ns();
        match status {
            Some(ExitStatus::Exited(0)) => {}
            other => bail!("proc {proc_id} in realm {} ended {other:?}", realm.name()),
        }
        let Some(out_read) = out_read.as_mut() else {
            return Ok((t0, Steps::default(), end));
        };
        let mut out = String::new();
        out_read.read_to_string(&mut out).context("reading the proc's stdout")?;
        let Some(started_ns) = parse_stamp(&out) else {
            bail!("proc {proc_id} wrote no start stamp (its stdout: {out:?})");
        };
        Ok((t0, steps(&child.spawn_times(), started_ns, end), end))
    }
}

impl SandboxStarter {
    /// A warm start of `proc` in the warm realm (with `stamp`, its steps; see
    /// [`SandboxStarter::spawn_and_wait`]), a warm sandbox made for the next one meanwhile.
    fn warm_start(&self, proc: Proc, seq: u64, stamp: bool) -> Result<Sample> {
        let bin = match proc {
            Proc::Trivial => &self.trivial,
            Proc::Big => &self.big,
        };
        let (t0, steps, end) = self.spawn_and_wait(&self.warm, bin, seq, true, stamp)?;
        Ok(Sample {
            total_ns: end - t0,
            steps,
        })
    }
}

impl Starter for SandboxStarter {
    fn start(&self, how: Start, proc: Proc, seq: u64) -> Result<Sample> {
        match how {
            Start::Warm => self.warm_start(proc, seq, true),
            Start::Cold => {
                if proc != Proc::Big {
                    bail!("cold starts are of the big proc only");
                }
                let t0 = now_ns();
                let path = self.store.fetch("sandbox", seq)?;
                let t1 = now_ns();
                let result = (|| {
                    self.store.verify(&path)?;
                    let t2 = now_ns();
                    let realm = self
                        .sb
                        .realm(&format!("cold-{seq}"))
                        .with_context(|| format!("making realm cold-{seq}"))?;
                    let t3 = now_ns();
                    let (_, mut steps, end) = self.spawn_and_wait(&realm, &path, seq, false, true)?;
                    steps.fetch = Some(t1 - t0);
                    steps.verify = Some(t2 - t1);
                    steps.namespaces = Some(steps.namespaces.unwrap_or(0) + (t3 - t2));
                    Ok(Sample {
                        total_ns: end - t0,
                        steps,
                    })
                })();
                let _ = std::fs::remove_file(&path);
                result
            }
            Start::ColdS3 => bail!("{NO_S3}"),
        }
    }

    fn start_bare(&self, proc: Proc, seq: u64) -> Result<Sample> {
        self.warm_start(proc, seq, false)
    }

    fn bare_note(&self) -> String {
        format!("sandbox only, no sigmad, no scheduling: sigma_sandbox::Sandbox::spawn in sigmabench's process into a realm made beforehand, binary already in place (bound read-only, not copied), warm cgroups (pool of {WARM_CGROUPS}), from a warm sandbox made right after the previous start while that proc ran (Sandbox::prepare, as sigmad does), the proc's mount namespace held from its start until its exit is seen (as sigmad does), then poll the pidfd and reap; the proc's stdout on /dev/null (no start stamp: the rate suite reports no breakdown)")
    }

    fn note(&self, how: Start) -> String {
        let steps = "breakdown: namespaces = clone with new pid/UTS/IPC namespaces until the child runs + joining the realm's netns and hostname; cgroups = the parent's step (the proc's cgroups, argv, open_tree of the binary, report pipe) + joining them; jail = the jail's mount namespace, binary and /proc + fds, rlimits, capabilities, uid, no_new_privs; seccomp = installing the filter; exec_to_started = execve until the proc's main runs (it writes a CLOCK_MONOTONIC stamp to its stdout, a pipe); started_to_reaped = from there to its exit seen on the pidfd and reaped (the proc exits at once: the exit's teardown of its namespaces, the reap, the cgroups back to the pool)";
        match how {
            Start::Warm => format!(
                "sandbox only, no sigmad, no scheduling: sigma_sandbox::Sandbox::spawn in sigmabench's process into a realm made beforehand, binary already in place (bound read-only, not copied), warm cgroups (pool of {WARM_CGROUPS}), from a warm sandbox made right after the previous start while that proc ran (Sandbox::prepare, as sigmad does: its namespaces, jail, cgroups, credentials and seccomp done ahead, so those steps read 0 and the cgroups step is the parent's: the limits written and the request sent; the first start of a run is cold), the proc's mount namespace held from its start until its exit is seen (as sigmad does: the jail's teardown off the exit's path), then poll the pidfd and reap; {steps}"
            ),
            Start::Cold => format!(
                "sandbox only, no sigmad, no scheduling: the binary copied from the local store into the cache (fetch_us; the store's file in the page cache) and its BLAKE3 checked (verify_us, blake3 crate), a realm made for this start (its netns and cgroups: in namespaces_us; cold cgroups), then Sandbox::spawn, poll the pidfd and reap (the realm's teardown afterwards is not timed); {steps}"
            ),
            Start::ColdS3 => NO_S3.into(),
        }
    }
}
