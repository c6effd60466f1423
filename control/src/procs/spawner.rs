//! A spawner: one of sigmad's threads (one per CPU) that start procs and
//! watch them end. Each shares the [`Sandbox`] and owns the [`Child`]ren
//! it started (a proc belongs to spawner `pid % spawners`); it never runs
//! on a data-plane core, and it never blocks in a wait for a child: it
//! sleeps in epoll on each child's pidfd, each child's log pipe and an
//! eventfd that says a job is queued. A spawn holds its thread until the
//! proc execs (the sandbox's clone is a vfork), so spawns run in parallel
//! only across spawners.
//!
//! Jobs come from whatever thread serves the admin API, over a bounded
//! queue (`SPAWN_QUEUE_MAX`): a full queue refuses the spawn with an error
//! instead of queueing without bound. Each proc's stdout and stderr go to
//! one pipe whose read end the spawner drains into `LOGS/<pid>.log`, up to
//! `LOG_BYTES_MAX`; what comes after is counted and dropped, so a proc
//! that floods its output is slowed by nothing and fills no disk.

use super::{ProcConn, ProcEntry, LOG_BYTES_MAX, PROC_PIDS_MAX, SPAWN_QUEUE_MAX};
use crate::bins::CachedBin;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use sigma_ep::proc::{WireClass, WireStatus};
use sigma_sandbox::{Child, Class, ExitStatus, RealmHandle, Sandbox, SpawnSpec};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use tokio::sync::oneshot;

/// The eventfd's epoll token; a proc's pidfd is `2 × pid`, its log pipe
/// `2 × pid + 1` (σ pids start at 1).
const WAKE_TOKEN: u64 = u64::MAX;
/// Bytes read from a log pipe per read.
const LOG_READ_BYTES: usize = 64 * 1024;
/// (realm, binary, class) keys a spawner remembers as started once, at
/// most; past it the memory starts over (a few more cold starts).
const STARTED_ONCE_MAX: usize = 4096;

/// Spawns of one proc whose exec found its binary busy (ETXTBSY), at
/// most: 1 ms apart.
const ETXTBSY_ATTEMPTS: u32 = 20;

/// `e` and its causes, `: `-separated: a sandbox error's own text names
/// the step ("exec"), its source says why ("Text file busy").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The sandbox's class of a proc of `class`.
fn sandbox_class(class: WireClass) -> Class {
    match class {
        WireClass::Lc { mcpu } => Class::Lc { mcpu: u64::from(mcpu) },
        WireClass::Be => Class::Be,
    }
}

/// Realm `name` of `realms` (the spawner's), set up in `sandbox` if it is
/// not, marked used now.
fn realm_in<'a>(
    realms: &'a mut HashMap<String, (RealmHandle, std::time::Instant)>,
    sandbox: &Sandbox,
    name: &str,
) -> Result<&'a RealmHandle, String> {
    let now = std::time::Instant::now();
    if !realms.contains_key(name) {
        let handle = sandbox
            .realm(name)
            .map_err(|e| format!("setting up realm {name:?} on this machine: {e}"))?;
        realms.insert(name.to_string(), (handle, now));
    }
    let (handle, used) = realms.get_mut(name).expect("set up above");
    *used = now;
    Ok(&*handle)
}

/// What the spawner is asked to do.
pub(crate) enum Job {
    Spawn {
        entry: Arc<ProcEntry>,
        /// Pinned in the cache until the sandbox has taken it.
        binary: CachedBin,
        args: Vec<String>,
        env: Vec<(String, String)>,
        reply: oneshot::Sender<Result<Started, String>>,
    },
    /// Make a warm sandbox in `realm` for a proc of `class` whose binary is
    /// still being fetched: `binary` is its file before the check, bound
    /// for `path` (a cold start's sandbox made while its binary is
    /// hashed; the spawn's job comes after, on this spawner's queue, and
    /// takes it only if `path` then names that file).
    Prepare {
        realm: String,
        class: WireClass,
        binary: crate::bins::EarlyFile,
    },
    /// Send `signal` to the proc; `evict` marks the end as an eviction.
    Signal { pid: u64, signal: i32, evict: bool },
    /// The proc was told it is evicted: its end is an eviction, and it is
    /// killed if it still runs after `grace`.
    Evict { pid: u64, grace: std::time::Duration },
    /// Kill every proc and stop.
    Stop,
}

/// A proc the spawner started: when it took the job up, and the sandbox's
/// stamps (CLOCK_MONOTONIC, ns).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Started {
    pub(crate) picked_ns: u64,
    pub(crate) times: sigma_sandbox::SpawnTimes,
}

/// Bytes of a spawner's journal at most: past it, the journal is rewritten
/// with only the procs still running.
pub(crate) const JOURNAL_BYTES_MAX: u64 = 1 << 20;

/// A spawner's journal of live procs, `LIVE/spawner-N.journal`: a line
/// `s PID RECORD` before a proc can run, `e PID` once its status is final.
/// The next sigmad reads what a dead one's journals say started and did
/// not end. One append per start and per end, on the spawner's thread (no
/// file made or removed per proc); rewritten with the live procs alone
/// when it passes `JOURNAL_BYTES_MAX`.
#[derive(Debug)]
pub(crate) struct Journal {
    path: PathBuf,
    file: Option<std::fs::File>,
    bytes: u64,
}

impl Journal {
    /// Spawner `index`'s journal under `dir`, empty.
    pub(crate) fn create(dir: &std::path::Path, index: usize) -> Result<Journal, String> {
        let path = dir.join(format!("spawner-{index}.journal"));
        let file = std::fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(Journal {
            path,
            file: Some(file),
            bytes: 0,
        })
    }

    fn append(&mut self, line: &str) {
        let Some(file) = self.file.as_mut() else { return };
        match file.write_all(line.as_bytes()) {
            Ok(()) => self.bytes += line.len() as u64,
            Err(e) => {
                tracing::warn!(journal = %self.path.display(), error = %e, "writing the live-proc journal; procs of a sigmad killed from now on are not reported lost");
                self.file = None;
            }
        }
    }

    /// Proc `entry` is about to run.
    pub(crate) fn started(&mut self, entry: &ProcEntry) {
        self.append(&format!("s {} {}", entry.pid, entry.record_line()));
    }

    /// Proc `pid`'s status is final; `running` are the procs of this
    /// spawner still running (what a rewrite keeps).
    pub(crate) fn ended<'a>(&mut self, pid: u64, running: impl Iterator<Item = &'a ProcEntry>) {
        self.append(&format!("e {pid}\n"));
        if self.bytes > JOURNAL_BYTES_MAX && self.file.is_some() {
            self.rewrite(running);
        }
    }

    /// Rewrites the journal with `running` alone: a new file renamed over
    /// the old (a crash leaves one or the other, whole).
    fn rewrite<'a>(&mut self, running: impl Iterator<Item = &'a ProcEntry>) {
        let tmp = self.path.with_extension("journal.new");
        let text: String = running.map(|e| format!("s {} {}", e.pid, e.record_line())).collect();
        let result = std::fs::write(&tmp, &text)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .and_then(|()| std::fs::OpenOptions::new().append(true).open(&self.path));
        match result {
            Ok(file) => {
                self.file = Some(file);
                self.bytes = text.len() as u64;
            }
            Err(e) => {
                tracing::warn!(journal = %self.path.display(), error = %e, "rewriting the live-proc journal; procs of a sigmad killed from now on are not reported lost");
                self.file = None;
            }
        }
    }
}

/// The admin side's handle on the spawner thread.
#[derive(Debug)]
pub(crate) struct Spawner {
    jobs: SyncSender<Job>,
    wake: Arc<EventFd>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Spawner {
    /// Starts spawner thread `index` on `sandbox` (shared with the other
    /// spawner threads); each started proc's control connection goes to
    /// `conns`.
    pub(crate) fn start(
        index: usize,
        sandbox: Sandbox,
        logs: PathBuf,
        journal: Journal,
        conns: tokio::sync::mpsc::Sender<ProcConn>,
    ) -> Result<Spawner, String> {
        let wake = Arc::new(
            EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
                .map_err(|e| format!("eventfd: {e}"))?,
        );
        let (jobs, rx) = sync_channel(SPAWN_QUEUE_MAX);
        let mut run = Run::new(sandbox, wake.clone(), rx, logs, journal, conns)?;
        let thread = std::thread::Builder::new()
            .name(format!("sigma-spawner-{index}"))
            .spawn(move || run.serve())
            .map_err(|e| format!("starting the spawner thread: {e}"))?;
        Ok(Spawner {
            jobs,
            wake,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Queues `job`; an error if the queue is full or the thread is gone.
    pub(crate) fn send(&self, job: Job) -> Result<(), String> {
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(format!(
                    "the spawn queue is full ({SPAWN_QUEUE_MAX} jobs, SPAWN_QUEUE_MAX); try again"
                ))
            }
            Err(TrySendError::Disconnected(_)) => return Err("the spawner thread has stopped".into()),
        }
        let _ = self.wake.write(1);
        Ok(())
    }
}

impl Spawner {
    /// Kills every proc, removes the sandbox's cgroups and jail, and ends
    /// the thread. Idempotent.
    pub(crate) fn shutdown(&self) {
        let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        // A full queue still takes the stop once the thread drains it.
        if self.jobs.send(Job::Stop).is_ok() {
            let _ = self.wake.write(1);
        }
        let _ = t.join();
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// One running proc, as the spawner holds it.
struct Running {
    entry: Arc<ProcEntry>,
    child: Child,
    /// The read end of its stdout/stderr pipe, until EOF.
    log_pipe: Option<OwnedFd>,
    /// Its log file, made when the first output comes (a proc that writes
    /// nothing costs no file); `Err(())` once it could not be written.
    log: Option<Result<std::fs::File, ()>>,
    logged: u64,
    dropped: u64,
    exited: bool,
    evicting: bool,
}

/// The spawner thread's state.
/// Fields drop in order: the children and realm handles before the
/// sandbox, whose cgroups can only go once theirs have.
struct Run {
    running: HashMap<u64, Running>,
    /// Realms set up on this machine, with when a proc of each last started.
    realms: HashMap<String, (RealmHandle, std::time::Instant)>,
    sandbox: Sandbox,
    epoll: Epoll,
    wake: Arc<EventFd>,
    jobs: Receiver<Job>,
    logs: PathBuf,
    journal: Journal,
    /// When evicted procs are killed if they still run, earliest first.
    kills: std::collections::BinaryHeap<std::cmp::Reverse<(std::time::Instant, u64)>>,
    /// (realm, binary path, LC) of procs this spawner started: a second
    /// start of one makes a warm sandbox for the third.
    started_once: std::collections::HashSet<(String, PathBuf, bool)>,
    buf: Vec<u8>,
    conns: tokio::sync::mpsc::Sender<ProcConn>,
}

impl Run {
    fn new(
        sandbox: Sandbox,
        wake: Arc<EventFd>,
        jobs: Receiver<Job>,
        logs: PathBuf,
        journal: Journal,
        conns: tokio::sync::mpsc::Sender<ProcConn>,
    ) -> Result<Run, String> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
        epoll
            .add(wake.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, WAKE_TOKEN))
            .map_err(|e| format!("epoll add: {e}"))?;
        Ok(Run {
            sandbox,
            realms: HashMap::new(),
            running: HashMap::new(),
            epoll,
            wake,
            jobs,
            logs,
            journal,
            kills: std::collections::BinaryHeap::new(),
            started_once: std::collections::HashSet::new(),
            buf: vec![0; LOG_READ_BYTES],
            conns,
        })
    }

    fn serve(&mut self) {
        // This thread clones every proc and execs nothing itself: with its
        // own bounding set empty, no child has to drop it one capability at
        // a time.
        if let Err(e) = self.sandbox.empty_thread_bounding_set() {
            tracing::warn!(error = %error_chain(&e), "could not empty the spawner's bounding set; each proc drops it itself");
        }
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let timeout = self.kill_due();
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the spawner's epoll failed; stopping every proc");
                    self.stop_all();
                    return;
                }
            };
            for ev in &events[..n] {
                let token = ev.data();
                if token == WAKE_TOKEN {
                    let _ = self.wake.read();
                    while let Ok(job) = self.jobs.try_recv() {
                        if !self.job(job) {
                            self.stop_all();
                            return;
                        }
                    }
                    // The queue is empty and every start in it answered:
                    // now undo the realms past the bound, which took
                    // 340 µs each (p50) on the start's path when done before
                    // a new realm's set-up.
                    self.forget_idle_realms();
                } else if token % 2 == 0 {
                    self.reap(token / 2);
                } else {
                    self.drain_log(token / 2);
                }
            }
        }
    }

    /// Runs one job; false for Stop.
    fn job(&mut self, job: Job) -> bool {
        match job {
            Job::Spawn {
                entry,
                binary,
                args,
                env,
                reply,
            } => {
                let picked_ns = sigma_sandbox::monotonic_ns();
                self.spawn(entry, binary, &args, &env, picked_ns, reply);
            }
            Job::Prepare { realm, class, binary } => {
                let class = sandbox_class(class);
                match realm_in(&mut self.realms, &self.sandbox, &realm) {
                    Ok(handle) => {
                        if let Err(e) = self
                            .sandbox
                            .prepare_file(handle, class, &binary.path, binary.file.as_fd())
                        {
                            tracing::warn!(realm, error = %error_chain(&e), "making a cold start's sandbox ahead; it goes cold");
                        }
                    }
                    Err(why) => tracing::warn!(realm, why, "making a cold start's sandbox ahead; it goes cold"),
                }
            }
            Job::Signal { pid, signal, evict } => {
                if let Some(r) = self.running.get_mut(&pid) {
                    if !r.exited {
                        r.evicting |= evict;
                        if let Err(e) = r.child.signal(signal) {
                            tracing::warn!(pid, error = %e, "signalling a proc");
                        }
                    }
                }
            }
            Job::Evict { pid, grace } => {
                if let Some(r) = self.running.get_mut(&pid) {
                    if !r.exited && !r.evicting {
                        r.evicting = true;
                        self.kills
                            .push(std::cmp::Reverse((std::time::Instant::now() + grace, pid)));
                    }
                }
            }
            Job::Stop => return false,
        }
        true
    }

    /// Journals proc `pid`'s end (the procs still running are what a
    /// rewrite of the journal keeps).
    fn journal_ended(&mut self, pid: u64) {
        let running = self.running.values().map(|r| &*r.entry).filter(|e| !e.ended());
        self.journal.ended(pid, running);
    }

    /// Kills the evicted procs whose grace has run out; how long until the
    /// next one's does (the epoll wait's timeout). Only the deadlines are
    /// looked at, not every running proc.
    fn kill_due(&mut self) -> EpollTimeout {
        let now = std::time::Instant::now();
        while let Some(&std::cmp::Reverse((at, pid))) = self.kills.peek() {
            if at > now {
                // Rounded up to a whole millisecond: never a busy wait.
                let left = at - now + std::time::Duration::from_micros(999);
                return EpollTimeout::try_from(left).unwrap_or(EpollTimeout::MAX);
            }
            self.kills.pop();
            if let Some(r) = self.running.get(&pid).filter(|r| !r.exited) {
                tracing::info!(pid, "an evicted proc did not exit within its grace period; killing it");
                if let Err(e) = r.child.signal(libc::SIGKILL) {
                    tracing::warn!(pid, error = %e, "killing an evicted proc");
                }
            }
        }
        EpollTimeout::NONE
    }

    /// Starts `entry`'s proc and answers `reply` as soon as it has exec'd,
    /// before the spawner's own bookkeeping (the caller's wake-up is on the
    /// start's path; the bookkeeping is not), or with why it could not.
    /// `binary`'s pin on its cache file is released once the sandbox has
    /// taken the file (or the spawn failed).
    fn spawn(
        &mut self,
        entry: Arc<ProcEntry>,
        binary: CachedBin,
        args: &[String],
        env: &[(String, String)],
        picked_ns: u64,
        reply: oneshot::Sender<Result<Started, String>>,
    ) {
        let pid = entry.pid;
        let mut reply = Some(reply);
        // A failure before the proc runs answers the caller with why.
        macro_rules! fail {
            ($why:expr) => {{
                let _ = reply.take().expect("answered once").send(Err($why));
                return;
            }};
        }
        let realm = match realm_in(&mut self.realms, &self.sandbox, &entry.realm) {
            Ok(realm) => realm,
            Err(why) => fail!(why),
        };
        let (log_r, log_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK) {
            Ok(p) => p,
            Err(e) => fail!(format!("making the log pipe: {e}")),
        };
        // The proc's end blocks: a proc that writes faster than the spawner
        // drains waits, as it would on a terminal.
        if let Err(e) = nix::fcntl::fcntl(&log_w, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty())) {
            fail!(format!("making the log pipe blocking: {e}"));
        }
        let (ctl_ours, ctl_theirs) = match nix::sys::socket::socketpair(
            nix::sys::socket::AddressFamily::Unix,
            nix::sys::socket::SockType::Stream,
            None,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        ) {
            Ok(p) => p,
            Err(e) => fail!(format!("making the control socket: {e}")),
        };
        let class = sandbox_class(entry.class);
        let proc_id = pid.to_string();
        let spec = SpawnSpec {
            argv0: Some(&entry.program),
            realm,
            proc_id: &proc_id,
            binary: &binary.path,
            args,
            env,
            class,
            mem_mib: u64::from(entry.mem_mib),
            pids_max: PROC_PIDS_MAX,
            ctl_fd: ctl_theirs.as_fd(),
            stdout: log_w.as_fd(),
            stderr: log_w.as_fd(),
            // Its exit then leaves its jail's teardown to the sandbox's
            // release thread, once the waiters are told (see `reap`).
            hold_mount_namespace: true,
        };
        // Journaled before it can run: if sigmad dies from here on, the
        // next one reports the proc lost.
        self.journal.started(&entry);
        let mut attempt = 1;
        let child = loop {
            match self.sandbox.spawn(&spec) {
                Ok(child) => break child,
                // A binary just written into the cache can still be open
                // for writing for a moment after its last write answered:
                // an io_uring write completed by the kernel's worker keeps
                // its file until the core next runs its task work. exec
                // then fails with ETXTBSY (seen once in ~300 starts from
                // S3); the spawn tries again shortly.
                Err(sigma_sandbox::Error::ChildExec { ref source, .. })
                    if source.raw_os_error() == Some(nix::libc::ETXTBSY) && attempt < ETXTBSY_ATTEMPTS =>
                {
                    tracing::debug!(pid, attempt, "exec: text file busy; trying again");
                    attempt += 1;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => {
                    self.journal_ended(pid);
                    fail!(error_chain(&e));
                }
            }
        };
        let times = child.spawn_times();
        drop(log_w);
        drop(ctl_theirs);
        // It runs: the caller hears at once.
        let _ = reply
            .take()
            .expect("answered once")
            .send(Ok(Started { picked_ns, times }));
        let watched = self
            .epoll
            .add(child.pidfd(), EpollEvent::new(EpollFlags::EPOLLIN, 2 * pid))
            .map_err(|e| format!("watching the proc's pidfd: {e}"))
            .and_then(|()| {
                self.epoll
                    .add(log_r.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 2 * pid + 1))
                    .map_err(|e| format!("watching the proc's log pipe: {e}"))
            });
        if let Err(why) = watched {
            // It cannot be watched: it is killed (dropping the child kills
            // and reaps it) and ends with why.
            tracing::error!(pid, why, "a started proc cannot be watched; killing it");
            let _ = self.epoll.delete(child.pidfd());
            drop(child);
            entry.finish(WireStatus::Denied(why));
            entry.log_done(0);
            self.journal_ended(pid);
            return;
        }
        // sigmad's end goes to the admin server, bound to the proc's realm
        // and pid. If it cannot take it (never: the queue holds one per
        // live proc), the proc's fd 3 reads EOF.
        if let Err(e) = self.conns.try_send(ProcConn {
            fd: ctl_ours,
            realm: entry.realm.clone(),
            pid,
        }) {
            tracing::warn!(pid, error = %e, "the proc's control connection cannot be served");
        }
        let realm_name = entry.realm.clone();
        self.running.insert(
            pid,
            Running {
                entry,
                child,
                log_pipe: Some(log_r),
                log: None,
                logged: 0,
                dropped: 0,
                exited: false,
                evicting: false,
            },
        );
        // From the second start of a binary in a realm and class on, the
        // next start takes a sandbox made now, while this proc runs (if
        // warm sandboxes are on and the realm holds none for it yet): a
        // binary started once in a realm (a one-off, a realm made for one
        // proc) costs no sandbox nobody takes. The binary stays pinned in
        // the cache until the sandbox has bound it.
        let key = (realm_name, binary.path.clone(), matches!(class, Class::Lc { .. }));
        if self.started_once.contains(&key) {
            if let Some((realm, _)) = self.realms.get(&key.0) {
                if let Err(e) = self.sandbox.prepare(realm, class, &binary.path) {
                    tracing::warn!(pid, realm = %key.0, error = %e, "making a warm sandbox; the next start goes cold");
                }
            }
        } else {
            if self.started_once.len() >= STARTED_ONCE_MAX {
                self.started_once.clear();
            }
            self.started_once.insert(key);
        }
        drop(binary);
    }

    /// Keeps at most `REALMS_KEPT_MAX` realms set up: past it, realms
    /// without a running proc are undone (their netns and cgroups), least
    /// recently used first. A realm kept makes its next start warm. Called
    /// once the job queue is drained, after the starts' replies, so a
    /// realm's undo is never on a start's path; between two drains the
    /// spawner may hold up to the queue's length more.
    fn forget_idle_realms(&mut self) {
        while self.realms.len() >= super::REALMS_KEPT_MAX {
            let busy: std::collections::HashSet<&str> = self.running.values().map(|r| r.entry.realm.as_str()).collect();
            let idle = self
                .realms
                .iter()
                .filter(|(name, _)| !busy.contains(name.as_str()))
                .min_by_key(|(_, (_, used))| *used)
                .map(|(name, _)| name.clone());
            match idle {
                Some(name) => {
                    self.realms.remove(&name);
                }
                None => return,
            }
        }
    }

    /// The proc's pidfd is readable: it exited. Reaps it and publishes its status.
    fn reap(&mut self, pid: u64) {
        let Some(r) = self.running.get_mut(&pid) else { return };
        let status = match r.child.try_wait() {
            Ok(None) => return,
            // An evicted proc ends evicted, however it ends.
            Ok(Some(_)) if r.evicting => WireStatus::Evicted,
            Ok(Some(ExitStatus::Exited(code))) => r.entry.exit_status(code),
            Ok(Some(ExitStatus::Signaled(sig))) => WireStatus::Crashed(sig),
            Err(e) => {
                tracing::warn!(pid, error = %e, "reaping a proc");
                WireStatus::Crashed(0)
            }
        };
        let _ = self.epoll.delete(r.child.pidfd());
        r.exited = true;
        r.entry.finish(status);
        self.journal_ended(pid);
        let Some(r) = self.running.get_mut(&pid) else { return };
        // The waiters know: now the jail's mounts go (an expedited RCU
        // grace period that was on the exit's path before it was held).
        r.child.release_mount_namespace();
        if r.log_pipe.is_none() {
            self.running.remove(&pid);
        }
    }

    /// Moves what the proc wrote into its log file, up to the bound.
    fn drain_log(&mut self, pid: u64) {
        let Some(r) = self.running.get_mut(&pid) else { return };
        let Some(pipe) = r.log_pipe.as_ref() else { return };
        let eof = loop {
            match nix::unistd::read(pipe, &mut self.buf) {
                Ok(0) => break true,
                Ok(n) => {
                    let room = LOG_BYTES_MAX.saturating_sub(r.logged) as usize;
                    let keep = n.min(room);
                    if keep > 0 {
                        if r.log.is_none() {
                            let path = self.logs.join(format!("{pid}.log"));
                            r.log = Some(std::fs::File::create(&path).map_err(|e| {
                                tracing::warn!(pid, path = %path.display(), error = %e, "creating a proc's log");
                            }));
                        }
                        if let Some(Ok(log)) = r.log.as_mut() {
                            if let Err(e) = log.write_all(&self.buf[..keep]) {
                                tracing::warn!(pid, error = %e, "writing a proc's log");
                                r.log = Some(Err(()));
                            }
                        }
                        r.logged += keep as u64;
                    }
                    r.dropped += (n - keep) as u64;
                    r.entry.log_grew(r.logged);
                }
                Err(nix::errno::Errno::EAGAIN) => break false,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(pid, error = %e, "reading a proc's log pipe");
                    break true;
                }
            }
        };
        if !eof {
            return;
        }
        if let Some(pipe) = r.log_pipe.take() {
            let _ = self.epoll.delete(&pipe);
        }
        if r.dropped > 0 {
            if let Some(Ok(log)) = r.log.as_mut() {
                let note = format!(
                    "\n[σ: the log stops at {LOG_BYTES_MAX} bytes (LOG_BYTES_MAX); {} more bytes were dropped]\n",
                    r.dropped
                );
                if log.write_all(note.as_bytes()).is_ok() {
                    r.logged += note.len() as u64;
                }
            }
        }
        r.log = None;
        r.entry.log_done(r.logged);
        if r.exited {
            self.running.remove(&pid);
        }
    }

    /// Kills every running proc and reaps it (the sandbox's drop of a
    /// child kills and reaps it, bounded).
    fn stop_all(&mut self) {
        for (pid, r) in self.running.drain() {
            if !r.exited {
                r.entry.finish(WireStatus::Evicted);
                self.journal.ended(pid, std::iter::empty());
            }
            r.entry.log_done(r.logged);
        }
    }
}
