//! Procs on this machine: the proc table, the spawn path, and the proc
//! protocol's handlers (`sigma_ep::proc`).
//!
//! A spawn goes: the admin service checks the request and the realm, takes
//! a σ pid, asks the control thread for the binary (the content-addressed
//! cache of [`crate::bins`], fetched once per machine however many spawns
//! ask), then hands the path to the spawner thread (`spawner.rs`), which
//! starts the σcontainer ([`sigma_sandbox`]) and answers once the proc has
//! exec'd. The proc's end is seen by the spawner on its pidfd; its status
//! is published through the table, where `wait` finds it.
//!
//! Each proc's status lives in a `tokio::sync::watch` channel: waiters on
//! any executor (a data-plane core on embedded defaults, the control
//! runtime on etcd) wait on it without a thread of their own.

mod binaries;
mod spawner;

pub use binaries::{bin_channel, BinClient, BinServer, BIN_JOBS_QUEUE_MAX};
pub use sigma_sandbox::Config as SandboxConfig;

use bytes::{Bytes, BytesMut};
use sigma_ep::proc::WireBin;
use sigma_ep::proc::{ProcRequest, WireClass, WireLogChunk, WireProc, WireStartTimes, WireStatus, LOG_CHUNK_BYTES_MAX};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

pub(crate) use spawner::Job;

/// Realms each spawner thread keeps set up (netns, cgroups) while none of
/// their procs runs; past it the least recently used idle one is undone,
/// once the thread's job queue is drained.
pub const REALMS_KEPT_MAX: usize = 64;
/// Spawner threads, at most (one per CPU up to this).
pub const SPAWNERS_MAX: usize = 8;
/// Spawn jobs queued for each spawner thread, at most.
pub const SPAWN_QUEUE_MAX: usize = 256;
/// Procs alive on this machine at once, at most.
pub const PROCS_LIVE_MAX: usize = 4096;
/// Ended procs whose status and log sigmad keeps (the oldest go first).
pub const PROCS_ENDED_KEPT_MAX: usize = 1024;
/// Ended procs forgotten at once when there are more than
/// `PROCS_ENDED_KEPT_MAX`: the table's scan is paid once per this many.
pub const PROCS_PRUNE_BATCH: usize = 64;
const _: () = assert!(PROCS_PRUNE_BATCH < PROCS_ENDED_KEPT_MAX);
/// Bytes of a proc's log (stdout and stderr together) kept, at most.
pub const LOG_BYTES_MAX: u64 = 1 << 20;
/// Tasks (threads and processes) of one proc, at most (its pids cgroup).
pub const PROC_PIDS_MAX: u64 = 256;
/// Memory limit of a proc that asks for none, MiB.
pub const PROC_MEM_MIB_DEFAULT: u32 = 256;
/// Memory limit of one proc, MiB, at most.
pub const PROC_MEM_MIB_MAX: u32 = 64 * 1024;
/// Milli-cores one LC proc may reserve, at most.
pub const PROC_MCPU_MAX: u32 = 256_000;
/// How long a spawn may take from the request to the proc's exec, at most
/// (fetching its binary included).
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a `wait` may wait.
pub const WAIT_TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);
/// How long an evicted proc that waits for eviction (`wait_evict`) has to
/// exit on its own before it is killed. A proc that never waited is killed
/// at once.
pub const EVICT_GRACE: Duration = Duration::from_secs(2);

/// Why a proc call failed: a kind (the token clients see) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcError {
    /// `invalid`, `unknown-realm`, `not-found`, `fetch-failed`, `denied`,
    /// `busy`, `unavailable`, `timed-out`.
    pub kind: &'static str,
    /// What happened, naming the proc, program or realm.
    pub message: String,
}

impl ProcError {
    fn new(kind: &'static str, message: impl Into<String>) -> ProcError {
        ProcError {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ProcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// One proc of the table.
#[derive(Debug)]
pub struct ProcEntry {
    /// σ pid, unique on this machine for sigmad's life.
    pub pid: u64,
    /// Its realm.
    pub realm: String,
    /// The program it runs (`NAME[@VERSION]`).
    pub program: String,
    /// LC or BE.
    pub class: WireClass,
    /// Memory limit, MiB.
    pub mem_mib: u32,
    status: watch::Sender<WireStatus>,
    /// Bytes in its log file so far, and whether the log is complete.
    log_len: watch::Sender<(u64, bool)>,
    log_path: PathBuf,
    /// Whether it said it started (`Started` on its own connection).
    started: watch::Sender<bool>,
    /// The status it declared (`Exited`), reported if it then exits normally.
    declared: Mutex<Option<WireStatus>>,
    /// Whether it was asked to leave (`evict`).
    evicted: watch::Sender<bool>,
    /// Whether it waits for eviction (`wait_evict`): then an eviction gives
    /// it `EVICT_GRACE` to exit before the kill.
    evict_aware: std::sync::atomic::AtomicBool,
    /// Where its start went, once it has started.
    start_times: Mutex<Option<WireStartTimes>>,
    /// The table's count of running procs, which this entry is in until
    /// it ends (set by [`ProcEntry::count_in`]).
    running: std::sync::OnceLock<Arc<AtomicUsize>>,
}

impl ProcEntry {
    /// Proc `pid` of `realm` running `program`, with status `status`; its
    /// log at `log_path`, of `log_len` bytes so far (complete if it ended).
    #[allow(clippy::too_many_arguments)]
    fn new(
        pid: u64,
        realm: String,
        program: String,
        class: WireClass,
        mem_mib: u32,
        status: WireStatus,
        log_path: PathBuf,
        log_len: u64,
    ) -> ProcEntry {
        let ended = status != WireStatus::Running;
        ProcEntry {
            pid,
            realm,
            program,
            class,
            mem_mib,
            status: watch::channel(status).0,
            log_len: watch::channel((log_len, ended)).0,
            log_path,
            started: watch::channel(false).0,
            declared: Mutex::new(None),
            evicted: watch::channel(false).0,
            evict_aware: std::sync::atomic::AtomicBool::new(false),
            start_times: Mutex::new(None),
            running: std::sync::OnceLock::new(),
        }
    }

    /// Counts this running entry in `running` until it ends.
    fn count_in(&self, running: &Arc<AtomicUsize>) {
        if self.running.set(running.clone()).is_ok() {
            running.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Its status now.
    pub fn status(&self) -> WireStatus {
        self.status.borrow().clone()
    }

    /// The status of a normal exit with `code`: what the proc declared, if
    /// it did, else `Ok` or `Error(code)`.
    fn exit_status(&self, code: i32) -> WireStatus {
        let declared = self.declared.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match (declared, code) {
            (Some(s), _) => s,
            (None, 0) => WireStatus::Ok,
            (None, code) => WireStatus::Error(code),
        }
    }

    /// Publishes how it ended; only the first end counts (a spawn that
    /// timed out, then an exit seen later, report the first).
    fn finish(&self, status: WireStatus) {
        let first = self.status.send_if_modified(|s| {
            let first = *s == WireStatus::Running;
            if first {
                *s = status;
            }
            first
        });
        if let (true, Some(running)) = (first, self.running.get()) {
            running.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Its live record (a spawner journal's start line, after `s PID `):
    /// realm and program hex-encoded (any bytes survive), class, memory.
    fn record_line(&self) -> String {
        let class = match self.class {
            WireClass::Lc { mcpu } => format!("lc:{mcpu}"),
            WireClass::Be => "be".into(),
        };
        format!(
            "v1 {} {} {class} {}\n",
            hex(self.realm.as_bytes()),
            hex(self.program.as_bytes()),
            self.mem_mib
        )
    }

    /// Whether it has ended.
    fn ended(&self) -> bool {
        *self.status.borrow() != WireStatus::Running
    }

    fn log_grew(&self, len: u64) {
        self.log_len.send_replace((len, false));
    }

    fn log_done(&self, len: u64) {
        self.log_len.send_replace((len, true));
    }
}

/// A proc's control connection (its fd 3), handed from the spawner to
/// whatever serves the admin API, bound to the proc's realm and pid.
#[derive(Debug)]
pub struct ProcConn {
    /// sigmad's end of the socket pair.
    pub fd: std::os::fd::OwnedFd,
    /// The proc's realm: every request on the connection must name it.
    pub realm: String,
    /// The proc's σ pid.
    pub pid: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<String> {
    if text.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A proc a previous sigmad of this data directory started and did not see
/// end: read from its live record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LostRecord {
    pid: u64,
    realm: String,
    program: String,
    class: WireClass,
    mem_mib: u32,
}

impl LostRecord {
    /// Parses record file `pid` holding `line`; None if it is not one.
    fn parse(pid: &str, line: &str) -> Option<LostRecord> {
        let mut f = line.split_whitespace();
        if f.next()? != "v1" {
            return None;
        }
        let (realm, program) = (unhex(f.next()?)?, unhex(f.next()?)?);
        let class = match f.next()? {
            "be" => WireClass::Be,
            lc => WireClass::Lc {
                mcpu: lc.strip_prefix("lc:")?.parse().ok()?,
            },
        };
        let mem_mib = f.next()?.parse().ok()?;
        Some(LostRecord {
            pid: pid.parse().ok()?,
            realm,
            program,
            class,
            mem_mib,
        })
    }

    /// The procs the spawner journals under `live` started and did not see
    /// end (damaged lines are skipped with a warning).
    fn read_all(live: &std::path::Path) -> Vec<LostRecord> {
        let Ok(dir) = std::fs::read_dir(live) else {
            return Vec::new();
        };
        let mut live_set: BTreeMap<u64, LostRecord> = BTreeMap::new();
        for e in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                tracing::warn!(file = %e.path().display(), "skipping an unreadable journal");
                continue;
            };
            for line in text.lines() {
                match line.split_once(' ') {
                    Some(("s", rest)) => {
                        match rest.split_once(' ').and_then(|(pid, rec)| LostRecord::parse(pid, rec)) {
                            Some(r) => {
                                live_set.insert(r.pid, r);
                            }
                            None => tracing::warn!(file = %e.path().display(), line, "skipping a damaged journal line"),
                        }
                    }
                    Some(("e", pid)) => {
                        if let Ok(pid) = pid.trim().parse::<u64>() {
                            live_set.remove(&pid);
                        }
                    }
                    // A line cut short by the crash, or damage.
                    _ => tracing::warn!(file = %e.path().display(), line, "skipping a damaged journal line"),
                }
            }
        }
        live_set.into_values().collect()
    }
}

/// The steps of one start, in µs: the request's arrival at `began_ns`,
/// the binary's path at `fetched_ns`, the spawner's part in `started`,
/// the reply at `replied_ns` (all CLOCK_MONOTONIC ns).
fn start_times(began_ns: u64, fetched_ns: u64, started: &spawner::Started, replied_ns: u64) -> WireStartTimes {
    let us = |a: u64, b: u64| b.saturating_sub(a) / 1000;
    let steps = started.times.steps();
    WireStartTimes {
        total_us: us(began_ns, replied_ns),
        fetch_us: us(began_ns, fetched_ns),
        schedule_us: us(fetched_ns, started.times.start_ns),
        namespaces_us: steps.namespaces_ns / 1000,
        cgroups_us: steps.cgroups_ns / 1000,
        jail_us: steps.jail_ns / 1000,
        seccomp_us: steps.seccomp_ns / 1000,
        exec_us: steps.exec_ns / 1000,
        reply_us: us(started.times.exec_seen_ns, replied_ns),
        warm: started.times.warm,
    }
}

/// Uploads being staged at once, at most.
pub const BIN_UPLOADS_MAX: usize = 16;
/// An upload that got no piece for this long is abandoned (its client
/// died): it no longer counts against `BIN_UPLOADS_MAX`.
pub const BIN_UPLOAD_IDLE: Duration = Duration::from_secs(60);

#[derive(Default, Debug)]
struct Table {
    procs: BTreeMap<u64, Arc<ProcEntry>>,
}

/// The procs of this machine: the table, the spawner, the binary fetch.
#[derive(Clone)]
pub struct Procs {
    inner: Arc<Inner>,
}

struct Inner {
    table: Mutex<Table>,
    next_pid: AtomicU64,
    /// Procs of the table still running (each entry counts itself out
    /// when it ends).
    running: Arc<AtomicUsize>,
    /// The spawner threads (a proc belongs to thread `pid % len`), or why
    /// procs cannot run here.
    spawners: Result<Vec<spawner::Spawner>, String>,
    bins: BinClient,
    logs: PathBuf,
    /// Proc connections waiting to be served (taken by sigmad's serve loop).
    conns: Mutex<Option<mpsc::Receiver<ProcConn>>>,
    /// Where uploads are staged until their last piece.
    staging: PathBuf,
    /// Uploads being staged: (name, upload id) → bytes received so far.
    uploads: Mutex<HashMap<(String, u64), (u64, std::time::Instant)>>,
}

impl std::fmt::Debug for Procs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Procs")
            .field("logs", &self.inner.logs)
            .field("enabled", &self.inner.spawners.is_ok())
            .finish()
    }
}

impl Procs {
    /// Starts the spawner with a sandbox made from `sandbox`; logs go under
    /// `logs`, each spawner's journal of live procs under `live`. If the sandbox cannot
    /// start (no privilege, no cgroups), procs are disabled and every proc
    /// call says why. Uploads of binaries are staged under `staging`
    /// (emptied first).
    ///
    /// With `reclaim` (this process owns the data directory), what a dead
    /// sigmad left is dealt with first: its procs still running are killed
    /// (through the sandbox's cgroup name) and every proc its journals say
    /// started and did not end is reported `Lost`, with its log kept; σ
    /// pids go on after theirs. Without, `logs` and `live` start empty.
    pub fn start(
        sandbox: sigma_sandbox::Config,
        logs: PathBuf,
        live: PathBuf,
        staging: PathBuf,
        bins: BinClient,
        reclaim: bool,
    ) -> Procs {
        let lost = if reclaim {
            LostRecord::read_all(&live)
        } else {
            Vec::new()
        };
        let kept: std::collections::HashSet<String> = lost.iter().map(|r| format!("{}.log", r.pid)).collect();
        if let Ok(dir) = std::fs::read_dir(&logs) {
            for e in dir.flatten() {
                if !kept.contains(&*e.file_name().to_string_lossy()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(&live);
        if let Err(e) = std::fs::create_dir_all(&live) {
            tracing::warn!(dir = %live.display(), error = %e, "making the live-record directory");
        }
        let _ = std::fs::remove_dir_all(&staging);
        if let Err(e) = std::fs::create_dir_all(&staging) {
            tracing::warn!(dir = %staging.display(), error = %e, "making the upload staging directory");
        }
        let (conns_tx, conns_rx) = mpsc::channel(PROCS_LIVE_MAX);
        let spawners = Self::start_spawners(sandbox, &logs, &live, reclaim, conns_tx);
        if let Err(why) = &spawners {
            tracing::warn!(why, "procs are disabled on this sigmad");
        }
        let mut table = Table::default();
        if !lost.is_empty() {
            tracing::warn!(
                procs = lost.len(),
                "a previous sigmad of this data directory died while procs ran; they were killed and are reported lost"
            );
        }
        for r in &lost {
            let log_path = logs.join(format!("{}.log", r.pid));
            let log_len = std::fs::metadata(&log_path).map_or(0, |m| m.len());
            let entry = ProcEntry::new(
                r.pid,
                r.realm.clone(),
                r.program.clone(),
                r.class,
                r.mem_mib,
                WireStatus::Lost(
                    "the sigmad that started it died (killed with -9, or crashed) while it ran; the next sigmad killed it".into(),
                ),
                log_path,
                log_len,
            );
            table.procs.insert(r.pid, Arc::new(entry));
        }
        let next_pid = lost.last().map_or(1, |r| r.pid + 1);
        Procs {
            inner: Arc::new(Inner {
                table: Mutex::new(table),
                next_pid: AtomicU64::new(next_pid),
                running: Arc::default(),
                spawners,
                bins,
                logs,
                staging,
                uploads: Mutex::new(HashMap::new()),
                conns: Mutex::new(Some(conns_rx)),
            }),
        }
    }

    /// The sandbox (after reclaiming, with `reclaim`, what a dead owner of
    /// its cgroup name left) and one spawner thread per CPU, at most
    /// `SPAWNERS_MAX`: a spawn holds its thread until the proc execs.
    fn start_spawners(
        config: sigma_sandbox::Config,
        logs: &std::path::Path,
        live: &std::path::Path,
        reclaim: bool,
        conns: mpsc::Sender<ProcConn>,
    ) -> Result<Vec<spawner::Spawner>, String> {
        std::fs::create_dir_all(logs).map_err(|e| format!("creating {}: {e}", logs.display()))?;
        if reclaim {
            match sigma_sandbox::cgroup::reclaim(&config.cgroup_parent) {
                Ok(0) => {}
                Ok(n) => tracing::warn!(killed = n, "killed procs a previous sigmad left running"),
                Err(e) => tracing::warn!(error = %e, "reclaiming what a previous sigmad left"),
            }
            let _ = std::fs::remove_dir(&config.jail_dir);
        }
        let sandbox = sigma_sandbox::Sandbox::new(config).map_err(|e| format!("the sandbox cannot start: {e}"))?;
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, SPAWNERS_MAX);
        (0..n)
            .map(|i| {
                let journal = spawner::Journal::create(live, i)?;
                spawner::Spawner::start(i, sandbox.clone(), logs.to_path_buf(), journal, conns.clone())
            })
            .collect()
    }

    /// The spawner thread of proc `pid`.
    fn spawner_of(&self, pid: u64) -> Result<&spawner::Spawner, ProcError> {
        let spawners = self.spawners()?;
        Ok(&spawners[(pid % spawners.len() as u64) as usize])
    }

    /// The proc connections to serve (sigmad's serve loop takes them once):
    /// each is a proc's fd 3, to be served bound to its realm.
    pub fn take_conns(&self) -> Option<mpsc::Receiver<ProcConn>> {
        self.inner.conns.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Kills every proc and removes the sandbox (cgroups, jail); procs
    /// cannot start after it. sigmad calls it when it stops.
    pub fn shutdown(&self) {
        if let Ok(spawners) = &self.inner.spawners {
            spawners.iter().for_each(spawner::Spawner::shutdown);
        }
    }

    /// Why procs cannot run here, if they cannot.
    pub fn disabled(&self) -> Option<&str> {
        self.inner.spawners.as_ref().err().map(String::as_str)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.inner.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawners(&self) -> Result<&[spawner::Spawner], ProcError> {
        self.inner
            .spawners
            .as_deref()
            .map_err(|why| ProcError::new("unavailable", format!("this sigmad cannot start procs: {why}")))
    }

    /// The proc `pid` of `realm`; procs of other realms are not found.
    pub fn get(&self, realm: &str, pid: u64) -> Result<Arc<ProcEntry>, ProcError> {
        match self.table().procs.get(&pid) {
            Some(e) if e.realm == realm => Ok(e.clone()),
            _ => Err(ProcError::new("not-found", format!("no proc {pid} in realm {realm:?}"))),
        }
    }

    /// The number of procs still running; once more than
    /// `PROCS_ENDED_KEPT_MAX` ended ones are kept, forgets the oldest (and
    /// their logs) down to `PROCS_ENDED_KEPT_MAX - PROCS_PRUNE_BATCH`, so the
    /// table is scanned once per `PROCS_PRUNE_BATCH` spawns, not per spawn.
    fn prune(t: &mut Table, running: &AtomicUsize) -> usize {
        let running = running.load(Ordering::Relaxed);
        let ended = t.procs.len().saturating_sub(running);
        if ended > PROCS_ENDED_KEPT_MAX {
            let excess = ended - (PROCS_ENDED_KEPT_MAX - PROCS_PRUNE_BATCH);
            let old: Vec<u64> = t
                .procs
                .values()
                .filter(|e| e.ended())
                .map(|e| e.pid)
                .take(excess)
                .collect();
            for pid in old {
                if let Some(e) = t.procs.remove(&pid) {
                    let _ = std::fs::remove_file(&e.log_path);
                }
            }
        }
        running
    }

    /// Starts a proc; its σ pid once it has exec'd.
    pub async fn spawn(
        &self,
        realm: &str,
        program: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        class: WireClass,
        mem_mib: u32,
    ) -> Result<u64, ProcError> {
        self.spawners()?;
        if let WireClass::Lc { mcpu } = class {
            if mcpu == 0 || mcpu > PROC_MCPU_MAX {
                return Err(ProcError::new(
                    "invalid",
                    format!("an LC proc reserves 1 to {PROC_MCPU_MAX} milli-cores (PROC_MCPU_MAX), not {mcpu}"),
                ));
            }
        }
        let mem_mib = if mem_mib == 0 { PROC_MEM_MIB_DEFAULT } else { mem_mib };
        if !(8..=PROC_MEM_MIB_MAX).contains(&mem_mib) {
            return Err(ProcError::new(
                "invalid",
                format!("a proc's memory limit is 8 to {PROC_MEM_MIB_MAX} MiB (PROC_MEM_MIB_MAX), not {mem_mib}"),
            ));
        }
        if let Some((k, _)) = env
            .iter()
            .find(|(k, _)| k.starts_with("SIGMA_") || k.is_empty() || k.contains('='))
        {
            return Err(ProcError::new(
                "invalid",
                format!("environment variable {k:?}: names are non-empty, without '=', and SIGMA_* is σ's own"),
            ));
        }
        let entry = {
            let mut t = self.table();
            if Self::prune(&mut t, &self.inner.running) >= PROCS_LIVE_MAX {
                return Err(ProcError::new(
                    "busy",
                    format!("{PROCS_LIVE_MAX} procs already run on this machine (PROCS_LIVE_MAX)"),
                ));
            }
            let pid = self.inner.next_pid.fetch_add(1, Ordering::Relaxed);
            let entry = Arc::new(ProcEntry::new(
                pid,
                realm.to_string(),
                program.clone(),
                class,
                mem_mib,
                WireStatus::Running,
                self.inner.logs.join(format!("{pid}.log")),
                0,
            ));
            entry.count_in(&self.inner.running);
            t.procs.insert(pid, entry.clone());
            entry
        };
        let began_ns = sigma_sandbox::monotonic_ns();
        let result = sigma_dataplane::timeout(SPAWN_TIMEOUT, async {
            // Pinned in the cache until the spawner drops it, once the
            // sandbox holds the binary. A fetch that has to read or copy
            // the file tells of it before it is checked, and the spawner
            // makes the proc's sandbox meanwhile (its realm's set-up, its
            // namespaces, cgroups, jail and filter: about 0.8 ms of a cold
            // start), which the spawn then takes only if the file passed
            // its check (`Sandbox::prepare_file`). Best effort: a full
            // queue or a failure there makes the start cold, no worse.
            let (early, file_early) = oneshot::channel();
            let ahead = async {
                if let Ok(binary) = file_early.await {
                    if let Ok(spawner) = self.spawner_of(entry.pid) {
                        let _ = spawner.send(Job::Prepare {
                            realm: entry.realm.clone(),
                            class,
                            binary,
                        });
                    }
                }
            };
            let (fetched, ()) = futures::join!(self.inner.bins.fetch(program.clone(), Some(early)), ahead);
            let binary = match fetched {
                Ok(binary) => binary,
                Err(e) => {
                    let status = if e.kind == "fetch-failed" {
                        WireStatus::FetchFailed(e.message.clone())
                    } else {
                        WireStatus::Denied(e.message.clone())
                    };
                    return Err((e, status));
                }
            };
            let fetched_ns = sigma_sandbox::monotonic_ns();
            let (reply, answer) = oneshot::channel();
            self.spawner_of(entry.pid)
                .map_err(|e| (e.clone(), WireStatus::Denied(e.message)))?
                .send(Job::Spawn {
                    entry: entry.clone(),
                    binary,
                    args,
                    env,
                    reply,
                })
                .map_err(|why| (ProcError::new("busy", why.clone()), WireStatus::Denied(why)))?;
            // The spawner takes hundreds of µs: a data-plane core serving
            // this parks at once rather than spin beside it.
            sigma_dataplane::expect_long_wait();
            match answer.await {
                Ok(Ok(started)) => {
                    let times = start_times(began_ns, fetched_ns, &started, sigma_sandbox::monotonic_ns());
                    tracing::debug!(
                        pid = entry.pid,
                        program,
                        queue_us = started.picked_ns.saturating_sub(fetched_ns) / 1000,
                        total_us = times.total_us,
                        fetch_us = times.fetch_us,
                        schedule_us = times.schedule_us,
                        namespaces_us = times.namespaces_us,
                        cgroups_us = times.cgroups_us,
                        jail_us = times.jail_us,
                        seccomp_us = times.seccomp_us,
                        exec_us = times.exec_us,
                        reply_us = times.reply_us,
                        "proc started"
                    );
                    *entry.start_times.lock().unwrap_or_else(|e| e.into_inner()) = Some(times);
                    Ok(())
                }
                Ok(Err(why)) => Err((
                    ProcError::new("denied", format!("proc {} ({program}): {why}", entry.pid)),
                    WireStatus::Denied(why),
                )),
                Err(_) => {
                    let why = "the spawner stopped".to_string();
                    Err((ProcError::new("unavailable", why.clone()), WireStatus::Denied(why)))
                }
            }
        })
        .await;
        let outcome = match result {
            Ok(r) => r,
            Err(_) => {
                let why = format!("the spawn did not finish within {SPAWN_TIMEOUT:?}");
                Err((ProcError::new("timed-out", why.clone()), WireStatus::Denied(why)))
            }
        };
        match outcome {
            Ok(()) => Ok(entry.pid),
            Err((e, status)) => {
                entry.finish(status);
                entry.log_done(0);
                Err(e)
            }
        }
    }

    /// Waits until proc `pid` of `realm` ends (at most `limit`); its status.
    pub async fn wait_exit(&self, realm: &str, pid: u64, limit: Duration) -> Result<WireStatus, ProcError> {
        let entry = self.get(realm, pid)?;
        let mut rx = entry.status.subscribe();
        let limit = limit.min(WAIT_TIMEOUT_MAX);
        if !entry.ended() {
            // An exit comes from the spawner's thread: no spin for it.
            sigma_dataplane::expect_long_wait();
        }
        let ended = sigma_dataplane::timeout(limit, async {
            let _ = rx.wait_for(|s| *s != WireStatus::Running).await;
        })
        .await;
        match ended {
            Ok(()) => Ok(entry.status()),
            Err(_) => Err(ProcError::new(
                "timed-out",
                format!("proc {pid} is still running after {limit:?}"),
            )),
        }
    }

    /// Waits until proc `pid` of `realm` says it started, or ends (at most
    /// `limit`): its status then (`Running` if it started and runs).
    pub async fn wait_start(&self, realm: &str, pid: u64, limit: Duration) -> Result<WireStatus, ProcError> {
        let entry = self.get(realm, pid)?;
        let (mut started, mut status) = (entry.started.subscribe(), entry.status.subscribe());
        let limit = limit.min(WAIT_TIMEOUT_MAX);
        let waited = sigma_dataplane::timeout(limit, async {
            tokio::select! {
                _ = started.wait_for(|s| *s) => {}
                _ = status.wait_for(|s| *s != WireStatus::Running) => {}
            }
        })
        .await;
        match waited {
            Ok(()) => Ok(entry.status()),
            Err(_) => Err(ProcError::new(
                "timed-out",
                format!("proc {pid} did not say it started within {limit:?}"),
            )),
        }
    }

    /// From proc `pid` itself: it has started.
    pub fn started(&self, realm: &str, pid: u64) -> Result<(), ProcError> {
        self.get(realm, pid)?.started.send_replace(true);
        Ok(())
    }

    /// From proc `pid` itself: the status to report when it exits normally
    /// (`Ok` or `Error(code)`).
    pub fn declare_exit(&self, realm: &str, pid: u64, status: WireStatus) -> Result<(), ProcError> {
        if !matches!(status, WireStatus::Ok | WireStatus::Error(_)) {
            return Err(ProcError::new(
                "invalid",
                format!("a proc declares ok or error(code), not {status}"),
            ));
        }
        let entry = self.get(realm, pid)?;
        *entry.declared.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
        Ok(())
    }

    /// Sends SIGKILL to proc `pid` of `realm`.
    pub fn kill(&self, realm: &str, pid: u64) -> Result<(), ProcError> {
        if self.get(realm, pid)?.ended() {
            return Ok(());
        }
        self.spawner_of(pid)?
            .send(Job::Signal {
                pid,
                signal: libc::SIGKILL,
                evict: false,
            })
            .map_err(|why| ProcError::new("busy", why))
    }

    /// Evicts proc `pid` of `realm`: it ends with status `Evicted`. A proc
    /// waiting for eviction (`wait_evict`) is told and has `EVICT_GRACE`
    /// to exit on its own before it is killed; any other is killed at once.
    pub fn evict(&self, realm: &str, pid: u64) -> Result<(), ProcError> {
        let entry = self.get(realm, pid)?;
        if entry.ended() {
            return Ok(());
        }
        let aware = entry.evict_aware.load(Ordering::SeqCst);
        entry.evicted.send_replace(true);
        let job = if aware {
            Job::Evict {
                pid,
                grace: EVICT_GRACE,
            }
        } else {
            Job::Signal {
                pid,
                signal: libc::SIGKILL,
                evict: true,
            }
        };
        self.spawner_of(pid)?
            .send(job)
            .map_err(|why| ProcError::new("busy", why))
    }

    /// From proc `pid` itself: waits until it is evicted (at most `limit`).
    /// From the first call on, an eviction gives it `EVICT_GRACE` to exit.
    pub async fn wait_evict(&self, realm: &str, pid: u64, limit: Duration) -> Result<(), ProcError> {
        let entry = self.get(realm, pid)?;
        entry.evict_aware.store(true, Ordering::SeqCst);
        let mut rx = entry.evicted.subscribe();
        let limit = limit.min(WAIT_TIMEOUT_MAX);
        match sigma_dataplane::timeout(limit, async {
            let _ = rx.wait_for(|e| *e).await;
        })
        .await
        {
            Ok(()) => Ok(()),
            Err(_) => Err(ProcError::new(
                "timed-out",
                format!("proc {pid} was not evicted within {limit:?}"),
            )),
        }
    }

    /// The procs of `realm`, by pid.
    pub fn ps(&self, realm: &str) -> Vec<WireProc> {
        self.table()
            .procs
            .values()
            .filter(|e| e.realm == realm)
            .map(|e| WireProc {
                pid: e.pid,
                program: e.program.clone(),
                class: e.class,
                mem_mib: e.mem_mib,
                status: e.status(),
            })
            .collect()
    }

    /// Up to `max` bytes of proc `pid`'s log from `offset`. With `follow`,
    /// waits (at most `limit`) until there is something past `offset` or
    /// the log is complete.
    pub async fn logs(
        &self,
        realm: &str,
        pid: u64,
        offset: u64,
        max: u32,
        follow: Option<Duration>,
    ) -> Result<WireLogChunk, ProcError> {
        let entry = self.get(realm, pid)?;
        let mut rx = entry.log_len.subscribe();
        if let Some(limit) = follow {
            let _ = sigma_dataplane::timeout(limit, async {
                let _ = rx.wait_for(|(len, done)| *len > offset || *done).await;
            })
            .await;
        }
        let (len, done) = *rx.borrow();
        let max = u64::from(max.min(LOG_CHUNK_BYTES_MAX));
        let want = len.saturating_sub(offset).min(max);
        let data = if want == 0 {
            Bytes::new()
        } else {
            // The read is the data plane's (io_uring READ); the open is a
            // plain call, as for the cache's files.
            use std::os::fd::AsRawFd;
            let file = std::fs::File::open(&entry.log_path)
                .map_err(|e| ProcError::new("unavailable", format!("opening proc {pid}'s log: {e}")))?;
            crate::bins::io::core_read_at(file.as_raw_fd(), offset, want as usize)
                .await
                .map_err(|e| ProcError::new("unavailable", format!("reading proc {pid}'s log: {e}")))?
        };
        let next_offset = offset + data.len() as u64;
        Ok(WireLogChunk {
            next_offset,
            done: done && next_offset >= len,
            data,
        })
    }

    /// Takes one piece of an upload; the piece that completes it puts the
    /// binary in the store (the store checks it is a static executable).
    pub async fn bin_put(
        &self,
        name: String,
        upload: u64,
        offset: u64,
        total: u64,
        data: Bytes,
    ) -> Result<Option<WireBin>, ProcError> {
        let limit = crate::bins::limits::BIN_BYTES_MAX;
        if total > limit {
            return Err(ProcError::new(
                "invalid",
                format!("binary {name:?} of {total} bytes exceeds {limit} (BIN_BYTES_MAX)"),
            ));
        }
        if offset.checked_add(data.len() as u64).is_none_or(|end| end > total) {
            return Err(ProcError::new(
                "invalid",
                format!(
                    "a piece at {offset} of {} bytes runs past the binary's {total} bytes",
                    data.len()
                ),
            ));
        }
        // The name becomes part of a file name only after the store's own
        // check; here it is hashed into one.
        crate::bins::BinName::parse(&name).map_err(|e| ProcError::new("invalid", e.to_string()))?;
        let key = (name.clone(), upload);
        let path = self.inner.staging.join(format!("{name}.{upload:016x}"));
        {
            let mut uploads = self.inner.uploads.lock().unwrap_or_else(|e| e.into_inner());
            let have = match uploads.get(&key) {
                Some(&(have, _)) => have,
                None if offset == 0 => {
                    let staging = &self.inner.staging;
                    uploads.retain(|(n, u), (_, at)| {
                        let live = at.elapsed() < BIN_UPLOAD_IDLE;
                        if !live {
                            let _ = std::fs::remove_file(staging.join(format!("{n}.{u:016x}")));
                        }
                        live
                    });
                    if uploads.len() >= BIN_UPLOADS_MAX {
                        return Err(ProcError::new(
                            "busy",
                            format!("{BIN_UPLOADS_MAX} uploads are under way (BIN_UPLOADS_MAX); try again"),
                        ));
                    }
                    0
                }
                None => {
                    return Err(ProcError::new(
                        "invalid",
                        format!("upload {upload:x} of {name:?} is unknown (it starts at offset 0)"),
                    ))
                }
            };
            // Out of the table while its piece is written: a piece of the
            // same upload arriving meanwhile (on another connection) finds
            // it unknown instead of writing beside this one.
            uploads.remove(&key);
            if have != offset {
                let _ = std::fs::remove_file(&path);
                return Err(ProcError::new(
                    "invalid",
                    format!("upload {upload:x} of {name:?}: a piece at {offset}, expected {have}; start again"),
                ));
            }
        }
        // The staging file goes if this piece fails or its caller goes away
        // while it is written; kept once the piece is in.
        let staged = crate::bins::cache::TempGuard(Some(path.clone()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ProcError::new("unavailable", format!("staging {name:?}: {e}")))?;
        let end = offset + data.len() as u64;
        {
            use std::os::fd::AsRawFd;
            // The write is the data plane's (io_uring WRITE); the open is a
            // plain call, as for the cache's files.
            crate::bins::io::core_write_all_at(file.as_raw_fd(), offset, data)
                .await
                .map_err(|e| ProcError::new("unavailable", format!("staging {name:?}: {e}")))?;
        }
        drop(file);
        staged.keep();
        if end < total {
            let mut uploads = self.inner.uploads.lock().unwrap_or_else(|e| e.into_inner());
            uploads.insert(key, (end, std::time::Instant::now()));
            return Ok(None);
        }
        self.inner.bins.put_file(name, path).await.map(Some)
    }

    /// Serves one proc request in `realm`'s name; the reply goes to `out`.
    pub async fn handle(&self, req: ProcRequest, out: &mut BytesMut) -> Result<(), ProcError> {
        match req {
            ProcRequest::Spawn {
                realm,
                program,
                args,
                env,
                class,
                mem_mib,
            } => {
                let pid = self.spawn(&realm, program, args, env, class, mem_mib).await?;
                out.extend_from_slice(&pid.to_le_bytes());
            }
            ProcRequest::WaitExit { realm, pid, timeout_ms } => {
                let s = self.wait_exit(&realm, pid, Duration::from_millis(timeout_ms)).await?;
                s.encode(out);
            }
            ProcRequest::WaitStart { realm, pid, timeout_ms } => {
                let s = self.wait_start(&realm, pid, Duration::from_millis(timeout_ms)).await?;
                s.encode(out);
            }
            ProcRequest::Started { realm, pid } => self.started(&realm, pid)?,
            ProcRequest::Exited { realm, pid, status } => self.declare_exit(&realm, pid, status)?,
            ProcRequest::WaitEvict { realm, pid, timeout_ms } => {
                self.wait_evict(&realm, pid, Duration::from_millis(timeout_ms)).await?
            }
            ProcRequest::Kill { realm, pid } => self.kill(&realm, pid)?,
            ProcRequest::StartTimes { realm, pid } => {
                let entry = self.get(&realm, pid)?;
                let times = *entry.start_times.lock().unwrap_or_else(|e| e.into_inner());
                match times {
                    Some(t) => t.encode(out),
                    None => {
                        return Err(ProcError::new(
                            "not-found",
                            format!(
                                "proc {pid} has no start times: it never started (its status: {})",
                                entry.status()
                            ),
                        ))
                    }
                }
            }
            ProcRequest::Evict { realm, pid } => self.evict(&realm, pid)?,
            ProcRequest::Ps { realm } => WireProc::encode_list(&self.ps(&realm), out),
            ProcRequest::Logs {
                realm,
                pid,
                offset,
                max_bytes,
            } => {
                // A request for 0 bytes is a follow: wait for more (bounded).
                let follow = (max_bytes == 0).then_some(Duration::from_secs(5));
                let max = if max_bytes == 0 { LOG_CHUNK_BYTES_MAX } else { max_bytes };
                self.logs(&realm, pid, offset, max, follow).await?.encode(out);
            }
            ProcRequest::BinPut {
                name,
                upload,
                offset,
                total,
                data,
            } => {
                if let Some(bin) = self.bin_put(name, upload, offset, total, data).await? {
                    WireBin::encode_list(&[bin], out);
                }
            }
            ProcRequest::BinList => WireBin::encode_list(&self.inner.bins.list().await?, out),
            ProcRequest::BinRemove { name } => self.inner.bins.remove(name).await?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_counts_its_running_procs_and_forgets_ended_ones_in_batches() {
        let running = Arc::new(AtomicUsize::new(0));
        let mut t = Table { procs: BTreeMap::new() };
        let total = PROCS_ENDED_KEPT_MAX + 10;
        for pid in 0..total as u64 {
            let e = Arc::new(entry(pid, "r"));
            e.count_in(&running);
            e.count_in(&running); // counted once
            t.procs.insert(pid, e);
        }
        assert_eq!(Procs::prune(&mut t, &running), total);
        // All but the last 5 end, one of them twice: counted out once.
        for e in t.procs.values().take(total - 5) {
            e.finish(WireStatus::Ok);
        }
        t.procs[&0].finish(WireStatus::Error(1));
        assert_eq!(running.load(Ordering::Relaxed), 5);
        // PROCS_ENDED_KEPT_MAX + 5 ended: the oldest go, down to the batch's floor.
        assert_eq!(Procs::prune(&mut t, &running), 5);
        let ended = t.procs.values().filter(|e| e.ended()).count();
        assert_eq!(ended, PROCS_ENDED_KEPT_MAX - PROCS_PRUNE_BATCH);
        assert_eq!(t.procs.len(), ended + 5);
        let oldest_kept = total as u64 - 5 - ended as u64;
        assert_eq!(t.procs.keys().next(), Some(&oldest_kept));
        assert!(
            t.procs.values().rev().take(5).all(|e| !e.ended()),
            "running procs are never forgotten"
        );
        // Below the bound, nothing goes.
        assert_eq!(Procs::prune(&mut t, &running), 5);
        assert_eq!(t.procs.len(), ended + 5);
    }

    fn entry(pid: u64, realm: &str) -> ProcEntry {
        ProcEntry::new(
            pid,
            realm.into(),
            "trivial".into(),
            WireClass::Be,
            8,
            WireStatus::Running,
            PathBuf::from("/nonexistent"),
            0,
        )
    }

    #[test]
    fn a_journal_says_which_procs_started_and_did_not_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = spawner::Journal::create(dir.path(), 0).unwrap();
        let mut b = spawner::Journal::create(dir.path(), 1).unwrap();
        a.started(&entry(1, "x"));
        b.started(&entry(2, "y"));
        a.started(&entry(3, "x"));
        a.ended(1, std::iter::empty());
        drop((a, b));
        // A line cut short by a crash is skipped.
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("spawner-1.journal"))
            .unwrap();
        f.write_all(b"s 9 v1 7").unwrap();
        let lost: Vec<(u64, String)> = LostRecord::read_all(dir.path())
            .into_iter()
            .map(|r| (r.pid, r.realm))
            .collect();
        assert_eq!(lost, vec![(2, "y".to_string()), (3, "x".to_string())]);
    }

    #[test]
    fn a_journal_past_its_bound_is_rewritten_with_only_the_live_procs() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = spawner::Journal::create(dir.path(), 0).unwrap();
        let realm = "r".repeat(200);
        // Proc 1 runs throughout; every other one ends at once.
        let long = entry(1, &realm);
        j.started(&long);
        let n = spawner::JOURNAL_BYTES_MAX / 400 + 10;
        for pid in 2..=n {
            j.started(&entry(pid, &realm));
            j.ended(pid, std::iter::once(&long));
        }
        j.started(&entry(n + 1, &realm));
        let len = std::fs::metadata(dir.path().join("spawner-0.journal")).unwrap().len();
        assert!(len <= spawner::JOURNAL_BYTES_MAX, "the journal grew to {len} bytes");
        drop(j);
        let lost: Vec<u64> = LostRecord::read_all(dir.path()).iter().map(|r| r.pid).collect();
        assert_eq!(lost, vec![1, n + 1]);
    }

    #[test]
    fn a_live_record_reads_back_as_what_was_written() {
        let entry = ProcEntry {
            program: "trivial@1.2".into(),
            class: WireClass::Lc { mcpu: 1500 },
            mem_mib: 64,
            ..entry(42, "blue realm\n\t\u{3c3}")
        };
        let back = LostRecord::parse("42", &entry.record_line()).unwrap();
        assert_eq!(
            back,
            LostRecord {
                pid: 42,
                realm: entry.realm.clone(),
                program: entry.program.clone(),
                class: entry.class,
                mem_mib: 64,
            }
        );
    }

    #[test]
    fn a_damaged_live_record_is_not_read() {
        for (name, line) in [
            ("x", "v1 61 62 be 8"),
            ("1", "v2 61 62 be 8"),
            ("1", "v1 6 62 be 8"),
            ("1", "v1 zz 62 be 8"),
            ("1", "v1 61 62 lc:x 8"),
            ("1", "v1 61 62 be"),
            ("1", ""),
            ("1", "v1 ff 62 be 8"),
        ] {
            assert_eq!(LostRecord::parse(name, line), None, "{name} {line:?}");
        }
    }
}
