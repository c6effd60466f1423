//! The sandbox, its realms, and spawning: everything the parent does.

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CString};
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::cgroup::{self, CgroupDir, Hierarchy, Version};
use crate::child::{self, ChildArgs, Report, Stamps, Step};
use crate::error::{Error, ProcRef, Result};
use crate::limits;
use crate::policy;
use crate::warm::{self, NotStarted, Prepared, WarmArgs};

/// How a [`Sandbox`] is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Name of the cgroup the sandbox makes, in each hierarchy, inside the
    /// calling process's own cgroup. It must not exist yet: the sandbox
    /// only ever touches cgroups it made. Pick it unique (`sigma-<...>`).
    pub cgroup_parent: String,
    /// First uid (and gid) given to realms; realm `i` of the live ones gets
    /// `uid_base + i`.
    pub uid_base: u32,
    /// How many uids the range holds (at most [`limits::REALMS_MAX`]).
    pub uid_count: u32,
    /// A host directory, made by the sandbox (it must not exist) and left
    /// empty on the host: each child mounts its jail's tmpfs on it inside
    /// its own mount namespace. Removed when the sandbox is dropped.
    pub jail_dir: PathBuf,
    /// RLIMIT_NOFILE of procs (soft and hard); lowered to the caller's own
    /// hard limit if that is smaller.
    pub nofile: u64,
    /// Warm cgroups kept per realm and class (at most
    /// [`limits::WARM_CGROUPS_PER_CLASS_MAX`]). With 0, each proc gets
    /// cgroups named after its id, removed once it is reaped. Otherwise a
    /// reaped proc's cgroups (named `w+<n>`, which no proc id can be) go
    /// back to its realm's pool, up to this many, and the next proc of that
    /// class only rewrites the limits: no mkdir on spawn, no rmdir at exit.
    /// Pooled cgroups are removed with their realm.
    pub warm_cgroups: usize,
    /// Realm set-ups made ahead of need, at most this many: a network
    /// namespace (about 0.7 ms off a new realm's first start) and, where
    /// every hierarchy is cgroup v1 (which renames cgroups), the realm's
    /// class cgroups with, given `warm_cgroups`, a warm proc set per class,
    /// made as `.ahead-<n>` and renamed to the realm's name (nine mkdirs
    /// off a new realm's first start on these machines). A realm new to the
    /// machine takes one instead of making its own, and a thread of the
    /// sandbox makes the next meanwhile. 0: each realm makes its own.
    pub netns_pool: usize,
    /// Keep cgroup migrations fast with a thread that moves itself between
    /// two cgroups of the sandbox's every this long (cgroup v1 only; see
    /// [`KeepWarm`]). `None`: off.
    pub cgroup_keep_warm: Option<Duration>,
    /// Warm sandboxes a realm holds at most ([`Sandbox::prepare`]), at most
    /// [`limits::WARM_SANDBOXES_PER_REALM_MAX`]; 0: off (and off on
    /// architectures other than x86_64). A warm sandbox is a child that
    /// has done every step of a spawn but the spawn's own (fds, arguments,
    /// limits) for one binary and class, waiting for the spawn that takes
    /// it.
    pub warm_sandboxes: usize,
}

impl Config {
    /// A config named `name` (a cgroup directory name, and the jail
    /// directory's under the temporary directory), with the uids
    /// 200000..200000+[`limits::REALMS_MAX`].
    pub fn new(name: &str) -> Config {
        Config {
            cgroup_parent: name.to_string(),
            uid_base: 200_000,
            uid_count: limits::REALMS_MAX,
            jail_dir: std::env::temp_dir().join(format!("{name}.jail")),
            nofile: limits::PROC_NOFILE_MAX,
            warm_cgroups: 0,
            netns_pool: 0,
            cgroup_keep_warm: None,
            warm_sandboxes: 0,
        }
    }
}

/// Scheduling class of a proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Latency-critical, with the milli-cores it needs at peak: its cgroup
    /// gets `cpu.shares` in proportion.
    Lc {
        /// Milli-cores.
        mcpu: u64,
    },
    /// Best-effort: runs in the idle `be` cgroup.
    Be,
}

/// What to start, where, with what.
#[derive(Debug)]
pub struct SpawnSpec<'a> {
    /// The realm, from [`Sandbox::realm`] of the same sandbox.
    pub realm: &'a RealmHandle,
    /// The σ proc id: `SIGMA_PID`, and (without warm cgroups) the name of
    /// its cgroups, so unique in its realm and class among live procs.
    pub proc_id: &'a str,
    /// Host path of the static binary. It is bound read-only into the jail
    /// as `/init`, never copied; it must be executable by the realm's uid.
    pub binary: &'a Path,
    /// `argv[0]`: the program's name (`None`: the binary's file name).
    pub argv0: Option<&'a str>,
    /// Arguments after `argv[0]`.
    pub args: &'a [String],
    /// Environment beyond `SIGMA_PID`, `SIGMA_REALM`, `SIGMA_CTL_FD`.
    pub env: &'a [(String, String)],
    /// LC or BE.
    pub class: Class,
    /// Memory limit, MiB.
    pub mem_mib: u64,
    /// Most tasks (threads and processes) at once.
    pub pids_max: u64,
    /// Becomes fd 3 (`SIGMA_CTL_FD`): the proc's control socket.
    pub ctl_fd: BorrowedFd<'a>,
    /// Becomes fd 1.
    pub stdout: BorrowedFd<'a>,
    /// Becomes fd 2.
    pub stderr: BorrowedFd<'a>,
    /// Take a reference on the proc's mount namespace, as
    /// [`Child::hold_mount_namespace`] does (read there why), and keep it
    /// until [`Child::release_mount_namespace`] or the drop. From a warm
    /// sandbox the spawn takes it before its request, so before the proc's
    /// first instruction; a cold spawn as soon as the exec lets it go on
    /// (the caller waits for the exec), so a cold proc that ends before
    /// the caller runs again is not held. A hold taken after the spawn
    /// returns comes later still: a proc that exits while its spawner waits
    /// for a CPU then tears its jail down itself.
    pub hold_mount_namespace: bool,
}

/// How a proc ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// A signal killed it (a crash, an OOM kill, an eviction).
    Signaled(i32),
}

/// Where the time of one spawn went, from the parent's clock and the
/// child's stamps (all CLOCK_MONOTONIC, ns).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnTimes {
    /// Parent, before it made the proc's cgroups.
    pub start_ns: u64,
    /// Parent, just before clone.
    pub clone_ns: u64,
    /// The child's stamps (see [`Stamps`]); 0 where not reached.
    pub child: Stamps,
    /// Parent, once the report pipe closed (the exec happened).
    pub exec_seen_ns: u64,
    /// A warm sandbox started it: every step before the exec was done
    /// ahead, and `child` holds only the moment the child took the request
    /// (the last stamp); `clone_ns` is when the request was sent.
    pub warm: bool,
}

/// The steps of one spawn, in ns, from [`SpawnTimes`] (0 for a step whose
/// stamps are missing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpawnSteps {
    /// Clone with new pid, UTS and IPC namespaces until the child runs,
    /// then joining the realm's netns and naming the UTS namespace.
    pub namespaces_ns: u64,
    /// The parent's step (the proc's cgroups, argv, open_tree of the
    /// binary, report pipe), then the child joining the cgroups (after
    /// resetting its signal dispositions).
    pub cgroups_ns: u64,
    /// The jail (template mount namespace copy, binary, /proc), then fds,
    /// rlimits, capabilities, uid, no_new_privs, signal mask.
    pub jail_ns: u64,
    /// Installing the seccomp filter.
    pub seccomp_ns: u64,
    /// From the filter to the parent seeing the exec (its report pipe
    /// closed on exec); from a warm sandbox, from the request sent (the
    /// child's wake-up, then the exec), so that the steps cover the start.
    pub exec_ns: u64,
}

impl SpawnTimes {
    /// Where the spawn's time went, step by step.
    pub fn steps(&self) -> SpawnSteps {
        let c = self.child;
        let d = |a: u64, b: u64| if a == 0 || b == 0 { 0 } else { b.saturating_sub(a) };
        SpawnSteps {
            namespaces_ns: d(self.clone_ns, c[0]) + d(c[1], c[2]),
            cgroups_ns: d(self.start_ns, self.clone_ns) + d(c[0], c[1]),
            jail_ns: d(c[2], c[3]) + d(c[3], c[4]),
            seccomp_ns: d(c[4], c[5]),
            exec_ns: if self.warm {
                d(self.clone_ns, self.exec_seen_ns)
            } else {
                d(c[5], self.exec_seen_ns)
            },
        }
    }
}

/// A mapped stack with a guard page below it, for the cloned child.
#[derive(Debug)]
pub(crate) struct ChildStack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; it is used by
// one spawn at a time (taken out of the pool while in use).
unsafe impl Send for ChildStack {}

impl ChildStack {
    pub(crate) fn new() -> Result<ChildStack> {
        const GUARD: usize = 4096;
        let len = limits::CHILD_STACK_BYTES + GUARD;
        let err = |source| Error::ChildStack {
            bytes: limits::CHILD_STACK_BYTES,
            source,
        };
        // SAFETY: an anonymous private mapping; no existing memory is
        // affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(err(io::Error::last_os_error()));
        }
        let stack = ChildStack { base, len };
        // SAFETY: the lowest page of the mapping just made becomes the
        // guard: an overflow faults instead of writing below.
        if unsafe { libc::mprotect(base, GUARD, libc::PROT_NONE) } != 0 {
            return Err(err(io::Error::last_os_error()));
        }
        Ok(stack)
    }

    fn top(&self) -> *mut c_void {
        // SAFETY: one past the end of the mapping, which is where a
        // downward-growing stack starts; len keeps 16-byte alignment.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// A hierarchy with the three directories the sandbox makes in it. Field
/// order is drop order: children before the parent.
#[derive(Debug)]
struct HierarchyDirs {
    hierarchy: Hierarchy,
    lc: CgroupDir,
    be: CgroupDir,
    parent: CgroupDir,
}

#[derive(Debug, Default)]
struct RealmTable {
    by_name: HashMap<String, Weak<RealmInner>>,
    uid_used: Vec<bool>,
}

/// The jail template: a mount namespace whose root is a read-only tmpfs
/// holding only the empty mount points `init` and `proc`. Each child
/// enters it and unshares a copy. Its tmpfs is mounted on `dir` only
/// inside the template's namespace: on the host `dir` stays empty.
#[derive(Debug)]
struct Jail {
    template: OwnedFd,
    dir: PathBuf,
}

impl Drop for Jail {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

/// A thread of the sandbox working in the background, its state shared
/// under a lock with a condvar; told to stop and joined when dropped.
#[derive(Debug)]
struct Worker<S> {
    shared: Arc<(Mutex<Shared<S>>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a [`Worker`] and its owner share.
#[derive(Debug)]
struct Shared<S> {
    stop: bool,
    state: S,
}

impl<S: Send + 'static> Worker<S> {
    /// Starts thread `name` running `body` with the shared state and condvar.
    fn start(
        name: &str,
        state: S,
        body: impl FnOnce(&Mutex<Shared<S>>, &std::sync::Condvar) + Send + 'static,
    ) -> Result<Worker<S>> {
        let shared = Arc::new((Mutex::new(Shared { stop: false, state }), std::sync::Condvar::new()));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || body(&theirs.0, &theirs.1))
            .map_err(|source| Error::InvalidConfig {
                reason: format!("starting the {name} thread: {source}"),
            })?;
        Ok(Worker {
            shared,
            thread: Some(thread),
        })
    }

    /// The shared state, locked.
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared<S>> {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the thread (its state changed).
    fn notify(&self) {
        self.shared.1.notify_all();
    }

    /// Whether the thread still runs.
    fn running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl<S> Drop for Worker<S> {
    fn drop(&mut self) {
        self.shared.0.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.shared.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The thread that lets go of procs' held mount namespaces
/// (`sigma-mntns-release`), so that the teardown of a jail (its unmounts
/// wait for an expedited RCU grace period) is neither on a proc's exit
/// path nor on the path of the spawner's next start.
#[derive(Debug)]
struct MountNsRelease(Worker<std::collections::VecDeque<OwnedFd>>);

impl MountNsRelease {
    fn start() -> Result<MountNsRelease> {
        Worker::start(
            "sigma-mntns-release",
            std::collections::VecDeque::new(),
            |shared, wake| {
                let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
                let mut guard = lock();
                loop {
                    let batch: Vec<OwnedFd> = guard.state.drain(..).collect();
                    if batch.is_empty() {
                        if guard.stop {
                            return;
                        }
                        guard = wake.wait(guard).unwrap_or_else(|p| p.into_inner());
                        continue;
                    }
                    drop(guard);
                    // The last references: each namespace is torn down here.
                    drop(batch);
                    guard = lock();
                }
            },
        )
        .map(MountNsRelease)
    }

    /// Queues `ns` to be let go of on the thread; lets go of it here if
    /// the queue is full or the thread is gone.
    fn release(&self, ns: OwnedFd) {
        if self.0.running() {
            let mut shared = self.0.lock();
            if shared.state.len() < limits::MOUNT_NS_RELEASE_QUEUE_MAX {
                shared.state.push_back(ns);
                drop(shared);
                self.0.notify();
                return;
            }
        }
        drop(ns);
    }
}

/// Keeps the kernel's cgroup migration lock in its writer-friendly mode.
///
/// Off by default: a child joins its v1 cgroups through `tasks`, which
/// does not take the lock ([`crate::cgroup::join_file`]); only joins through
/// a v2 `cgroup.procs` still do. Every write to `cgroup.procs` takes
/// `cgroup_threadgroup_rwsem` for writing. That per-CPU rwsem is fast for
/// readers (every fork, exec and exit) until a writer comes: the first
/// writer after a quiet spell waits for an RCU grace period to switch it to
/// its slow mode, and it switches back one grace period after the last
/// writer. On this 2-CPU VM, a join after 100 ms without one took 7.9 ms
/// (p50; up to 16 ms), back to back 15 µs. So a proc started after a quiet
/// spell paid milliseconds to join its cgroups. The kernel's own answer is
/// the `favordynmods` mount option (or cgroup v2's `CLONE_INTO_CGROUP`,
/// which never takes the lock); neither is the sandbox's to set on a host
/// hierarchy. This thread gives the same trade from user space: it moves
/// itself between two cgroups the sandbox made (`keep-warm-a`, `-b` under
/// its parent, in one v1 hierarchy, by writing its tid to `tasks`) every
/// `period` (5 ms: about 200 moves a second; measured in an idle sigmad,
/// 140 ms of CPU over 20 s, 0.7% of one CPU), so a writer never waits for
/// a grace period; forks and exits on the
/// machine take the rwsem's slower reader path meanwhile, as with
/// `favordynmods`.
#[derive(Debug)]
pub struct KeepWarm {
    /// Ends early only if it cannot move itself (`Sandbox::cgroup_keep_warm`).
    /// Declared first: joined before the directories go.
    worker: Worker<()>,
    /// Removed after the thread has ended (a thread that has exited is in
    /// no cgroup).
    _dirs: [CgroupDir; 2],
}

impl KeepWarm {
    fn start(parent: &CgroupDir, period: Duration) -> Result<KeepWarm> {
        let a = CgroupDir::create(parent.path().join("keep-warm-a"))?;
        let b = CgroupDir::create(parent.path().join("keep-warm-b"))?;
        let tasks = [a.path().join("tasks"), b.path().join("tasks")];
        let worker = Worker::start("sigma-cg-keepwarm", (), move |lock, cvar| {
            // SAFETY: gettid has no arguments and cannot fail.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) }.to_string();
            let mut i = 0usize;
            let mut shared = lock.lock().unwrap_or_else(|p| p.into_inner());
            while !shared.stop {
                if fs::write(&tasks[i % 2], &tid).is_err() {
                    // Cannot move itself (the cgroups went): it stops,
                    // and `Sandbox::cgroup_keep_warm` says so.
                    return;
                }
                i += 1;
                shared = cvar.wait_timeout(shared, period).unwrap_or_else(|p| p.into_inner()).0;
            }
        })?;
        Ok(KeepWarm { worker, _dirs: [a, b] })
    }
}

/// Realm set-ups made ahead of need ([`Config::netns_pool`]) by a thread of
/// their own: network namespaces, which it unshares one by one (its own
/// netns changes each time; each namespace lives on in its fd), and, given
/// class directories, sets of realm cgroups named `.ahead-<n>` (no realm
/// name starts with a dot), which a realm renames to its own name. After
/// a take it makes the next once [`limits::REALM_POOL_REFILL_DELAY`] has
/// passed without another (at once if the pool ran out).
#[derive(Debug)]
struct RealmPool {
    worker: Worker<PoolState>,
}

/// One hierarchy with its `lc` and `be` class directories: where the realm
/// pool makes realms' cgroups, and how their limits are written.
type ClassDirs = (Hierarchy, PathBuf, PathBuf);

/// A realm's cgroups made ahead: its class directories (one `RealmDirs`
/// per hierarchy) and, with warm cgroups, one warm proc set per class
/// (`w+0`, LC then BE). `warm` is declared first: dropped (removed) before
/// the directories that hold it.
#[derive(Debug)]
struct AheadCgroups {
    warm: Vec<ProcCgroups>,
    dirs: Vec<RealmDirs>,
}

impl AheadCgroups {
    /// Makes the set `name` under each hierarchy's `(lc, be)` class
    /// directories, with a warm proc set per class if `warm`, holding the
    /// class's `limits` where given (`[lc, be]`).
    fn make(classes: &[ClassDirs], name: &str, warm: bool, limits: [Option<ProcLimits>; 2]) -> Result<AheadCgroups> {
        let mut set = AheadCgroups {
            warm: Vec::new(),
            dirs: Vec::with_capacity(classes.len()),
        };
        for (_, lc, be) in classes {
            set.dirs.push(RealmDirs {
                lc: CgroupDir::create(lc.join(name))?,
                be: CgroupDir::create(be.join(name))?,
            });
        }
        if warm {
            for lc in [true, false] {
                let parents = set.dirs.iter().map(|d| if lc { d.lc.path() } else { d.be.path() });
                let (dirs, procs) = make_proc_cgroups(parents, "w+0")?;
                let mut cgroups = ProcCgroups {
                    procs,
                    dirs,
                    warm: true,
                    lc,
                    limits: None,
                };
                if let Some(want) = limits[usize::from(!lc)] {
                    cgroups.write_limit_values(classes.iter().map(|(h, _, _)| h), want)?;
                }
                set.warm.push(cgroups);
            }
        }
        Ok(set)
    }

    /// Renames the set to the realm `name`; whether every directory was.
    /// Either way the warm sets' paths follow their parents, so a set that
    /// failed is still removed whole when dropped.
    fn rename_to(&mut self, name: &str) -> bool {
        let renamed = self.dirs.iter_mut().all(|d| {
            let (lc, be) = (d.lc.path().with_file_name(name), d.be.path().with_file_name(name));
            d.lc.rename_to(lc).is_ok() && d.be.rename_to(be).is_ok()
        });
        for w in &mut self.warm {
            for (dir, parent) in w.dirs.iter_mut().zip(&self.dirs) {
                dir.reparent(if w.lc { parent.lc.path() } else { parent.be.path() });
            }
        }
        renamed
    }
}

#[derive(Debug, Default)]
struct PoolState {
    ready: Vec<OwnedFd>,
    /// Realm cgroup sets.
    dirs: Vec<AheadCgroups>,
    /// When a realm last took something made ahead.
    last_take: Option<std::time::Instant>,
    /// The limits the last start of each class (`[lc, be]`) asked for:
    /// warm proc sets made from then on come with them, so that the first
    /// start in a new realm usually has none to write.
    limits: [Option<ProcLimits>; 2],
}

/// The oldest of what the pool made (first in, first out: a set made
/// while realms were taking others goes after them; the pool holds at
/// most `NETNS_POOL_MAX`, so the shift is short).
fn pop_oldest<T>(made: &mut Vec<T>) -> Option<T> {
    (!made.is_empty()).then(|| made.remove(0))
}

impl RealmPool {
    /// Starts the thread, keeping `size` of each ready; realm cgroup sets
    /// under `classes` (each hierarchy with its lc and be directories;
    /// empty: none), with a warm proc set per class if `warm`.
    fn start(size: usize, classes: Vec<ClassDirs>, warm: bool) -> Result<RealmPool> {
        let worker = Worker::start("sigma-realm-pool", PoolState::default(), move |lock, cvar| {
            let (mut netns_ok, mut dirs_ok) = (true, !classes.is_empty());
            let mut seq = 0u64;
            loop {
                let (want_netns, want_dirs, limits) = {
                    let mut sh = lock.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        if sh.stop {
                            return;
                        }
                        let st = &sh.state;
                        let want = (netns_ok && st.ready.len() < size, dirs_ok && st.dirs.len() < size);
                        if want.0 || want.1 {
                            // A realm just took one: the next is made once
                            // realms have stopped taking for a moment, not
                            // beside the start that took it (unless the
                            // pool ran out).
                            let ran_out = (netns_ok && st.ready.is_empty()) || (dirs_ok && st.dirs.is_empty());
                            let left = st.last_take.map_or(std::time::Duration::ZERO, |t| {
                                limits::REALM_POOL_REFILL_DELAY.saturating_sub(t.elapsed())
                            });
                            if ran_out || left.is_zero() {
                                break (want.0, want.1, st.limits);
                            }
                            sh = cvar.wait_timeout(sh, left).unwrap_or_else(|p| p.into_inner()).0;
                            continue;
                        }
                        if !netns_ok && !dirs_ok {
                            return;
                        }
                        sh = cvar.wait(sh).unwrap_or_else(|p| p.into_inner());
                    }
                };
                // Made without the lock: a realm taking one meanwhile
                // does not wait for this.
                if want_netns {
                    match unshare_netns() {
                        Ok(fd) => lock.lock().unwrap_or_else(|p| p.into_inner()).state.ready.push(fd),
                        Err(_) => netns_ok = false, // Realms make their own from now on.
                    }
                }
                if want_dirs {
                    seq += 1;
                    match AheadCgroups::make(&classes, &format!(".ahead-{seq}"), warm, limits) {
                        Ok(set) => lock.lock().unwrap_or_else(|p| p.into_inner()).state.dirs.push(set),
                        Err(_) => dirs_ok = false,
                    }
                }
            }
        })?;
        Ok(RealmPool { worker })
    }

    /// A namespace made ahead, if one is ready; the thread makes the next.
    fn take(&self) -> Option<OwnedFd> {
        self.take_from(|st| &mut st.ready)
    }

    /// A set of realm cgroups made ahead, if one is ready; the thread
    /// makes the next.
    fn take_dirs(&self) -> Option<AheadCgroups> {
        self.take_from(|st| &mut st.dirs)
    }

    /// The oldest of what `made` holds, noting the take (the refill waits
    /// for a quiet moment after it) and waking the thread.
    fn take_from<T>(&self, made: impl FnOnce(&mut PoolState) -> &mut Vec<T>) -> Option<T> {
        let taken = {
            let mut sh = self.worker.lock();
            sh.state.last_take = Some(std::time::Instant::now());
            pop_oldest(made(&mut sh.state))
        };
        self.worker.notify();
        taken
    }

    /// Notes the limits a start of class `lc` asked for: the warm proc
    /// sets of realms made ahead from now on come with them.
    fn note_limits(&self, lc: bool, limits: ProcLimits) {
        let mut sh = self.worker.lock();
        sh.state.limits[usize::from(!lc)] = Some(limits);
    }

    /// Namespaces ready now.
    fn ready(&self) -> usize {
        self.worker.lock().state.ready.len()
    }

    /// Realm cgroup sets ready now.
    fn dirs_ready(&self) -> usize {
        self.worker.lock().state.dirs.len()
    }
}

#[derive(Debug)]
struct SandboxInner {
    /// Dropped first: its thread stops before the cgroups go.
    keep_warm: Option<KeepWarm>,
    /// Dropped (its queue let go of, its thread joined) before the jail.
    mount_ns_release: MountNsRelease,
    netns_pool: Option<RealmPool>,
    hierarchies: Vec<HierarchyDirs>,
    seccomp: seccompiler::BpfProgram,
    jail: Jail,
    dev_null: OwnedFd,
    cap_last: u32,
    nofile: u64,
    uid_base: u32,
    uid_count: u32,
    warm_cgroups: usize,
    warm_sandboxes: usize,
    warm_stats: WarmCounters,
    realms: Mutex<RealmTable>,
    stacks: Mutex<Vec<ChildStack>>,
}

#[derive(Debug, Default)]
struct WarmCounters {
    made: AtomicU64,
    taken: AtomicU64,
    unusable: AtomicU64,
    dropped: AtomicU64,
}

/// What a sandbox's warm sandboxes did ([`Sandbox::warm_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WarmStats {
    /// Made by [`Sandbox::prepare`].
    pub made: u64,
    /// Taken by a spawn that then started its proc from it (or failed
    /// after the request, as a spawn fails).
    pub taken: u64,
    /// Found unusable by a spawn (its child had failed a step or died),
    /// which then went the cold way.
    pub unusable: u64,
    /// Dropped unused: the realm held too many, or went.
    pub dropped: u64,
}

thread_local! {
    /// Whether this thread emptied its own capability bounding set
    /// ([`Sandbox::empty_thread_bounding_set`]): the children it clones
    /// inherit the empty set and need not drop it.
    static BOUNDING_SET_EMPTY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether children cloned from this thread start with an empty bounding set.
fn thread_bounding_set_empty() -> bool {
    BOUNDING_SET_EMPTY.with(|empty| empty.get())
}

/// The σcontainer factory of one machine: detected cgroups, the compiled
/// seccomp program, the uid range, and the realms it serves. Clones share
/// all of it (its tables are locked), so several threads may spawn at once;
/// what it made goes when the last clone (and the last realm and child) does.
#[derive(Debug, Clone)]
pub struct Sandbox {
    inner: Arc<SandboxInner>,
}

fn valid_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > limits::NAME_BYTES_MAX {
        return Err(format!("length {} not in 1..={}", name.len(), limits::NAME_BYTES_MAX));
    }
    if name.starts_with('.') {
        return Err("starts with '.'".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) {
        return Err("only [A-Za-z0-9_.-] allowed".into());
    }
    Ok(())
}

fn cstring(bytes: &[u8]) -> std::result::Result<CString, String> {
    CString::new(bytes).map_err(|_| "contains a NUL byte".to_string())
}

impl Sandbox {
    /// Detects the cgroup hierarchies, makes the sandbox's cgroups (the
    /// parent, `lc`, and `be` with `cpu.idle = 1`), compiles the seccomp
    /// program, and makes the jail directory.
    pub fn new(config: Config) -> Result<Sandbox> {
        let invalid = |reason: String| Error::InvalidConfig { reason };
        valid_name(&config.cgroup_parent).map_err(|r| invalid(format!("cgroup_parent: {r}")))?;
        if config.uid_count == 0 || config.uid_count > limits::REALMS_MAX {
            return Err(invalid(format!(
                "uid_count {} not in 1..={}",
                config.uid_count,
                limits::REALMS_MAX
            )));
        }
        if config.uid_base < limits::REALM_UID_MIN || config.uid_base.checked_add(config.uid_count).is_none() {
            return Err(invalid(format!(
                "uid_base {} below {} or range overflows",
                config.uid_base,
                limits::REALM_UID_MIN
            )));
        }
        if config.warm_cgroups > limits::WARM_CGROUPS_PER_CLASS_MAX {
            return Err(invalid(format!(
                "warm_cgroups {} above {}",
                config.warm_cgroups,
                limits::WARM_CGROUPS_PER_CLASS_MAX
            )));
        }
        if config.warm_sandboxes > limits::WARM_SANDBOXES_PER_REALM_MAX {
            return Err(invalid(format!(
                "warm_sandboxes {} above {}",
                config.warm_sandboxes,
                limits::WARM_SANDBOXES_PER_REALM_MAX
            )));
        }
        if !config.jail_dir.is_absolute() {
            return Err(invalid("jail_dir must be absolute".into()));
        }
        let seccomp = policy::compile()?;

        // The caller's hard limit bounds what a child can set.
        let mut own = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit64 into a live local.
        unsafe { libc::getrlimit64(libc::RLIMIT_NOFILE, &mut own) };
        let nofile = config.nofile.clamp(16, limits::PROC_NOFILE_MAX).min(own.rlim_max);

        let cap_last_path = Path::new("/proc/sys/kernel/cap_last_cap");
        let cap_last: u32 = fs::read_to_string(cap_last_path)
            .map_err(|source| Error::ReadMetadata {
                path: cap_last_path.into(),
                source,
            })?
            .trim()
            .parse()
            .map_err(|_| Error::ReadMetadata {
                path: cap_last_path.into(),
                source: io::Error::new(io::ErrorKind::InvalidData, "not a number"),
            })?;
        assert!(cap_last < 64, "capability numbers fit in 64 bits");

        let dev_null: OwnedFd = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|source| Error::DevNull { source })?
            .into();

        let mut hierarchies = Vec::new();
        for h in cgroup::detect()? {
            let parent = CgroupDir::create(h.own_dir.join(&config.cgroup_parent))?;
            if h.version == Version::V2 {
                parent.write("cgroup.subtree_control", "+memory +pids +cpu")?;
            }
            let lc = CgroupDir::create(parent.path().join("lc"))?;
            let be = CgroupDir::create(parent.path().join("be"))?;
            if h.version == Version::V2 {
                lc.write("cgroup.subtree_control", "+memory +pids +cpu")?;
                be.write("cgroup.subtree_control", "+memory +pids +cpu")?;
            }
            if h.controllers.contains(&cgroup::Controller::Cpu) {
                if h.cpu_idle {
                    be.write("cpu.idle", "1")?;
                } else {
                    // Kernels before 5.15: the lowest weight is the closest.
                    match h.version {
                        Version::V1 => be.write("cpu.shares", &limits::CPU_SHARES_MIN.to_string())?,
                        Version::V2 => be.write("cpu.weight", "1")?,
                    }
                }
            }
            hierarchies.push(HierarchyDirs {
                hierarchy: h,
                lc,
                be,
                parent,
            });
        }

        // The keep-warm thread, in the first v1 hierarchy (a thread can
        // move alone only there: v2 moves whole processes).
        let keep_warm = match config.cgroup_keep_warm {
            Some(period) if !period.is_zero() => {
                match hierarchies.iter().find(|h| h.hierarchy.version == Version::V1) {
                    Some(h) => Some(KeepWarm::start(&h.parent, period)?),
                    // On v2, mount with favordynmods instead.
                    None => None,
                }
            }
            _ => None,
        };

        let netns_pool = match config.netns_pool {
            0 => None,
            n => {
                // Only cgroup v1 renames a cgroup (v2 refuses).
                let renames = hierarchies.iter().all(|h| h.hierarchy.version == Version::V1);
                let classes = if renames {
                    hierarchies
                        .iter()
                        .map(|h| {
                            (
                                h.hierarchy.clone(),
                                h.lc.path().to_path_buf(),
                                h.be.path().to_path_buf(),
                            )
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                let warm = config.warm_cgroups > 0;
                Some(RealmPool::start(n.min(limits::NETNS_POOL_MAX), classes, warm)?)
            }
        };

        fs::create_dir(&config.jail_dir).map_err(|source| Error::JailDir {
            path: config.jail_dir.clone(),
            source,
        })?;
        let dir_c = cstring(config.jail_dir.as_os_str().as_bytes()).map_err(|r| invalid(format!("jail_dir: {r}")))?;
        let jail = match create_jail_template(dir_c) {
            Ok(template) => Jail {
                template,
                dir: config.jail_dir.clone(),
            },
            Err((step, source)) => {
                let _ = fs::remove_dir(&config.jail_dir);
                return Err(Error::JailTemplate {
                    path: config.jail_dir.clone(),
                    step,
                    source,
                });
            }
        };

        let mount_ns_release = MountNsRelease::start()?;
        Ok(Sandbox {
            inner: Arc::new(SandboxInner {
                keep_warm,
                mount_ns_release,
                netns_pool,
                hierarchies,
                seccomp,
                jail,
                dev_null,
                cap_last,
                nofile,
                uid_base: config.uid_base,
                uid_count: config.uid_count,
                warm_cgroups: config.warm_cgroups,
                warm_sandboxes: if cfg!(target_arch = "x86_64") {
                    config.warm_sandboxes
                } else {
                    0
                },
                warm_stats: WarmCounters::default(),
                realms: Mutex::new(RealmTable {
                    by_name: HashMap::new(),
                    uid_used: vec![false; config.uid_count as usize],
                }),
                stacks: Mutex::new(Vec::new()),
            }),
        })
    }

    /// The cgroup directories this sandbox made, one parent per hierarchy
    /// (for tests and diagnostics).
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        self.inner
            .hierarchies
            .iter()
            .map(|h| h.parent.path().to_path_buf())
            .collect()
    }

    /// The cgroup hierarchies in use.
    pub fn hierarchies(&self) -> Vec<Hierarchy> {
        self.inner.hierarchies.iter().map(|h| h.hierarchy.clone()).collect()
    }

    /// Realm cgroup sets made ahead and ready now ([`Config::netns_pool`];
    /// none where a hierarchy is cgroup v2).
    pub fn realm_cgroups_ready(&self) -> usize {
        self.inner.netns_pool.as_ref().map_or(0, RealmPool::dirs_ready)
    }

    /// Network namespaces made ahead and ready now ([`Config::netns_pool`]).
    pub fn netns_ready(&self) -> usize {
        self.inner.netns_pool.as_ref().map_or(0, RealmPool::ready)
    }

    /// Whether the cgroup keep-warm thread runs ([`Config::cgroup_keep_warm`]).
    pub fn cgroup_keep_warm(&self) -> bool {
        self.inner.keep_warm.as_ref().is_some_and(|k| k.worker.running())
    }

    /// Empties the calling thread's capability bounding set, once, so that
    /// the children it clones from then on start with it empty and skip
    /// their `BoundingSet` step: one `PR_CAPBSET_DROP` per capability, each
    /// a new set of credentials (and an RCU-deferred free of the old), about
    /// 27 µs per child here. A thread that spawns procs and never execs
    /// anything itself (sigmad's spawners) calls it when it starts. The
    /// bounding set limits only what an execve may grant: the thread keeps
    /// its permitted and effective capabilities, and so every step of the
    /// sandbox. Credentials are per thread, so the process's other threads
    /// keep theirs; on failure nothing relies on it, and children drop
    /// the set themselves.
    pub fn empty_thread_bounding_set(&self) -> Result<()> {
        for cap in 0..=self.inner.cap_last {
            // SAFETY: prctl with integer arguments, on this thread's
            // credentials only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) } != 0 {
                return Err(Error::ThreadBoundingSet {
                    cap,
                    source: io::Error::last_os_error(),
                });
            }
        }
        BOUNDING_SET_EMPTY.with(|empty| empty.set(true));
        Ok(())
    }

    /// The number of BPF instructions of the seccomp program.
    pub fn seccomp_len(&self) -> usize {
        self.inner.seccomp.len()
    }

    /// The realm `name`'s class cgroups in each hierarchy, made now.
    fn make_realm_dirs(&self, name: &str) -> Result<Vec<RealmDirs>> {
        let mut dirs = Vec::new();
        for h in &self.inner.hierarchies {
            let lc = CgroupDir::create(h.lc.path().join(name))?;
            let be = CgroupDir::create(h.be.path().join(name))?;
            if h.hierarchy.version == Version::V2 {
                lc.write("cgroup.subtree_control", "+memory +pids +cpu")?;
                be.write("cgroup.subtree_control", "+memory +pids +cpu")?;
            }
            dirs.push(RealmDirs { lc, be });
        }
        Ok(dirs)
    }

    /// The realm `name`: made on first use (a network namespace, its
    /// cgroups, a uid), shared while any handle or proc of it lives, and
    /// undone when the last goes.
    pub fn realm(&self, name: &str) -> Result<RealmHandle> {
        valid_name(name).map_err(|reason| Error::InvalidRealm {
            realm: name.to_string(),
            reason,
        })?;
        let mut table = self.inner.realms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = table.by_name.get(name).and_then(Weak::upgrade) {
            return Ok(RealmHandle { inner: existing });
        }
        let Some(slot) = table.uid_used.iter().position(|used| !used) else {
            return Err(Error::UidsExhausted {
                realm: name.to_string(),
                count: self.inner.uid_count,
            });
        };
        let ready = self.inner.netns_pool.as_ref().and_then(RealmPool::take);
        let netns = match ready {
            Some(fd) => fd,
            None => create_netns().map_err(|source| Error::NetnsCreate {
                realm: name.to_string(),
                source,
            })?,
        };
        // The realm's cgroups: a set made ahead, renamed to the realm's
        // name (a set that fails to rename goes, and the realm makes its
        // own), or new ones.
        let ahead = self.inner.netns_pool.as_ref().and_then(RealmPool::take_dirs);
        let (dirs, warm) = match ahead.and_then(|mut set| set.rename_to(name).then_some(set)) {
            Some(set) => (set.dirs, set.warm),
            None => (self.make_realm_dirs(name)?, Vec::new()),
        };
        let uid = self.inner.uid_base + slot as u32;
        let inner = Arc::new(RealmInner {
            warm: Mutex::new(Vec::new()),
            sandbox: Arc::clone(&self.inner),
            name: name.to_string(),
            name_c: cstring(name.as_bytes()).map_err(|reason| Error::InvalidRealm {
                realm: name.into(),
                reason,
            })?,
            uid,
            gid: uid,
            slot,
            netns,
            next_warm: AtomicU64::new(warm.len().min(1) as u64),
            pools: {
                let (lc, be): (Vec<ProcCgroups>, Vec<ProcCgroups>) = warm.into_iter().partition(|w| w.lc);
                [Mutex::new(lc), Mutex::new(be)]
            },
            dirs,
        });
        table.uid_used[slot] = true;
        table.by_name.insert(name.to_string(), Arc::downgrade(&inner));
        Ok(RealmHandle { inner })
    }

    /// Starts a proc: the spawn sequence of the crate documentation. On
    /// success the proc has exec'd; wait for it through [`Child::pidfd`].
    pub fn spawn(&self, spec: &SpawnSpec<'_>) -> Result<Child> {
        let start_ns = crate::monotonic_ns();
        let sb = &self.inner;
        let realm = &spec.realm.inner;
        let mut proc = ProcRef {
            proc_id: spec.proc_id.to_string(),
            realm: realm.name.clone(),
            pid: 0,
            binary: spec.binary.to_path_buf(),
        };
        let invalid = |reason: String| Error::InvalidSpec {
            proc_id: spec.proc_id.to_string(),
            reason,
        };
        if !Arc::ptr_eq(&realm.sandbox, sb) {
            return Err(invalid("the realm belongs to another sandbox".into()));
        }
        valid_name(spec.proc_id).map_err(|r| invalid(format!("proc id: {r}")))?;
        if !(limits::PROC_MEM_MIB_MIN..=limits::PROC_MEM_MIB_MAX).contains(&spec.mem_mib) {
            return Err(invalid(format!(
                "mem_mib {} not in {}..={}",
                spec.mem_mib,
                limits::PROC_MEM_MIB_MIN,
                limits::PROC_MEM_MIB_MAX
            )));
        }
        if !(1..=limits::PROC_PIDS_MAX).contains(&spec.pids_max) {
            return Err(invalid(format!(
                "pids_max {} not in 1..={}",
                spec.pids_max,
                limits::PROC_PIDS_MAX
            )));
        }
        if let Class::Lc { mcpu } = spec.class {
            if mcpu == 0 || mcpu > limits::PROC_MCPU_MAX {
                return Err(invalid(format!("mcpu {mcpu} not in 1..={}", limits::PROC_MCPU_MAX)));
            }
        }
        let image = ExecImage::new(spec, &realm.name).map_err(invalid)?;

        // A warm sandbox made for this binary and class takes the spawn;
        // one found unusable is dropped and the spawn goes the cold way.
        let lc = matches!(spec.class, Class::Lc { .. });
        if let Some(prepared) = realm.take_prepared(spec.binary, lc) {
            match self.start_prepared(prepared, spec, &image, proc.clone(), start_ns) {
                Ok(child) => return Ok(child),
                Err(NotStarted::Failed(e)) => return Err(e),
                Err(NotStarted::Unusable) => {
                    sb.warm_stats.unusable.fetch_add(1, Ordering::Relaxed);
                }
            }
        }

        // The proc's cgroups, limits written before anything joins.
        let cgroups = realm.take_cgroups(spec)?;

        // The binary as a detached bind mount for the child to attach: no
        // host path needs to be visible in the child's mount namespace.
        // Closing it after the child attached it leaves the mount in
        // place; closing it unused (a failed spawn) dissolves it.
        let binary_tree = match open_binary_tree(&image.binary) {
            Ok(fd) => fd,
            Err(source) => return Err(Error::OpenBinary { proc, source }),
        };

        // The report pipe: close-on-exec, so exec closes the child's end.
        let mut pipe = [0 as c_int; 2];
        // SAFETY: pipe2 writes two fds into a live array.
        if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(Error::ReportPipe {
                proc,
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: both fds were just created and are owned by nobody else.
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };

        let fprog = libc::sock_fprog {
            len: sb.seccomp.len() as u16,
            filter: sb.seccomp.as_ptr() as *mut libc::sock_filter,
        };
        let mut cgroup_fds = [-1; 3];
        for (slot, fd) in cgroup_fds.iter_mut().zip(&cgroups.procs) {
            *slot = fd.as_raw_fd();
        }
        let args = ChildArgs {
            report_fd: write_end.as_raw_fd(),
            channel_fd: -1,
            cgroup_fds,
            cgroup_fds_count: cgroups.procs.len(),
            netns_fd: realm.netns.as_raw_fd(),
            hostname: realm.name_c.as_ptr(),
            hostname_len: realm.name.len(),
            jail_template_fd: sb.jail.template.as_raw_fd(),
            binary_tree_fd: binary_tree.as_raw_fd(),
            fd_sources: [
                sb.dev_null.as_raw_fd(),
                spec.stdout.as_raw_fd(),
                spec.stderr.as_raw_fd(),
                spec.ctl_fd.as_raw_fd(),
            ],
            nofile: sb.nofile,
            cap_last: sb.cap_last,
            drop_bounding_set: !thread_bounding_set_empty(),
            uid: realm.uid,
            gid: realm.gid,
            seccomp: &fprog,
            argv: warm::atomic(image.argv.as_ptr()),
            envp: warm::atomic(image.envp.as_ptr()),
        };

        let stack = self.take_stack()?;
        let clone_ns = crate::monotonic_ns();
        let (pid, pidfd) = clone_child(&stack, &args, true);
        self.return_stack(stack);
        drop(write_end);
        let pid = match pid {
            Ok(pid) => pid,
            Err(source) => return Err(Error::Clone { proc, source }),
        };
        proc.pid = pid;
        // SAFETY: CLONE_PIDFD stored a fresh pidfd that nobody else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        // The child has exec'd or exited (CLONE_VFORK): the proc has just
        // started, so its namespace is held before it can end.
        let mount_ns = if spec.hold_mount_namespace {
            mount_namespace_of(&pidfd, pid)
        } else {
            None
        };

        // Read what the child said.
        let reports = read_reports(&read_end);
        let mut times = SpawnTimes {
            start_ns,
            clone_ns,
            child: [0; limits::CHILD_STAMPS_COUNT],
            exec_seen_ns: crate::monotonic_ns(),
            warm: false,
        };
        // EOF without a word: the child died before it could report (a
        // signal before exec); its status says how.
        let failure = match reports {
            Err(e) => Some(Err(e)),
            Ok(reports) => apply_reports(&reports, &mut times.child).map(Ok),
        };
        let mut child = Child {
            proc: proc.clone(),
            pidfd,
            status: None,
            cgroups: Some(cgroups),
            times,
            mount_ns,
            _realm: Arc::clone(realm),
        };
        match failure {
            None => Ok(child),
            Some(failure) => {
                // The child exited (127) right after reporting; reap it so
                // that neither a zombie nor its cgroups stay behind.
                let _ = child.wait_timeout(Duration::from_millis(limits::CHILD_DROP_WAIT_MS_MAX));
                let _ = child.cleanup();
                Err(match failure {
                    Err(reason) => Error::ChildReport { proc, reason },
                    Ok((step, errno)) => step_error(proc, step, errno, realm),
                })
            }
        }
    }

    /// Starts `spec`'s proc from the warm sandbox `p`: its limits into the
    /// cgroups, argv and envp where the child reads them, the request with
    /// fds 0..=3, then the child's reports until EOF (exec'd).
    fn start_prepared(
        &self,
        mut p: Prepared,
        spec: &SpawnSpec<'_>,
        image: &ExecImage,
        mut proc: ProcRef,
        start_ns: u64,
    ) -> std::result::Result<Child, NotStarted> {
        let sb = &self.inner;
        let realm = &spec.realm.inner;
        if !p.wait_ready() {
            return Err(NotStarted::Unusable);
        }
        let Some(mut cgroups) = p.cgroups.take() else {
            return Err(NotStarted::Unusable);
        };
        if let Err(e) = cgroups.write_limits(sb, spec) {
            p.cgroups = Some(cgroups);
            return Err(NotStarted::Failed(e));
        }
        // Ready, the child is in its jail's mount namespace and waits: held
        // now, before the request, the namespace outlives the proc however
        // soon it ends.
        let mount_ns = if spec.hold_mount_namespace {
            p.pidfd.as_ref().and_then(|pidfd| mount_namespace_of(pidfd, p.pid))
        } else {
            None
        };
        let clone_ns = crate::monotonic_ns();
        let fds = [
            sb.dev_null.as_raw_fd(),
            spec.stdout.as_raw_fd(),
            spec.stderr.as_raw_fd(),
            spec.ctl_fd.as_raw_fd(),
        ];
        if p.request(image.argv.as_ptr(), image.envp.as_ptr(), fds).is_err() {
            // Its child is gone (or its channel broke): not this spawn's error.
            p.cgroups = Some(cgroups);
            return Err(NotStarted::Unusable);
        }
        proc.pid = p.pid;
        let reports = read_reports(&p.channel);
        // The child reports once it has the request, before the exec: EOF
        // without a word, or a reset (it closed with the request unread),
        // means it died first (killed while it waited), and none of the
        // proc ran. The spawn goes the cold way.
        if reports.as_ref().map_or(true, Vec::is_empty) {
            p.cgroups = Some(cgroups);
            return Err(NotStarted::Unusable);
        }
        sb.warm_stats.taken.fetch_add(1, Ordering::Relaxed);
        let mut times = SpawnTimes {
            start_ns,
            clone_ns,
            child: [0; limits::CHILD_STAMPS_COUNT],
            exec_seen_ns: crate::monotonic_ns(),
            warm: true,
        };
        let failure = match reports {
            Err(reason) => Some(Error::ChildReport {
                proc: proc.clone(),
                reason,
            }),
            Ok(reports) => apply_reports(&reports, &mut times.child)
                .map(|(step, errno)| step_error(proc.clone(), step, errno, realm)),
        };
        if let Some(e) = failure {
            // It reported a failure and exits (127): the drop reaps it
            // before its stack and arguments go (or leaks them), and
            // removes its cgroups.
            p.cgroups = Some(cgroups);
            drop(p);
            return Err(NotStarted::Failed(e));
        }
        // EOF: the child exec'd (or died: its status says how). Either way
        // it no longer runs on its stack or reads its arguments.
        let (pidfd, stack) = p.hand_over();
        if let Some(stack) = stack {
            self.return_stack(stack);
        }
        Ok(Child {
            proc,
            pidfd,
            status: None,
            cgroups: Some(cgroups),
            times,
            mount_ns,
            _realm: Arc::clone(realm),
        })
    }

    /// Makes a warm sandbox in `realm` for procs of `binary` in `class`,
    /// unless the realm holds one for them already or warm sandboxes are
    /// off ([`Config::warm_sandboxes`]): a child that runs every step of
    /// the spawn sequence but the spawn's own (fds, argv and envp, the
    /// limits' values), beside the caller, and waits. The next
    /// [`Sandbox::spawn`] of `binary` in `realm` and `class` takes it and
    /// costs one wake-up and an exec. Past the realm's bound, its oldest
    /// warm sandbox goes. Returns whether one was made; the caller does
    /// not wait for the child's steps (a spawn that takes it does, if they
    /// are not done yet).
    ///
    /// `binary` is the path a spawn will name: it is bound into the jail
    /// now, so it must not change content under that path (sigmad's
    /// cache is content-addressed).
    pub fn prepare(&self, realm: &RealmHandle, class: Class, binary: &Path) -> Result<bool> {
        self.prepare_from(realm, class, binary, None)
    }

    /// [`Sandbox::prepare`] for a binary that is not at `binary` yet:
    /// `file` is it now (sigmad's cache: the file being checked under a
    /// temporary name, renamed to `binary` once its digest matched), and
    /// the jail binds `file`'s inode. A spawn of `binary` takes the warm
    /// sandbox only if `binary` then names that same inode: one whose file
    /// never got there (its check failed) is never taken, and is dropped
    /// by the next spawn of `binary` in the realm and class, by the next
    /// `prepare_file` of `binary` from another inode, or as the realm's
    /// oldest. So a cold start's sandbox can be made while its
    /// binary is fetched.
    pub fn prepare_file(&self, realm: &RealmHandle, class: Class, binary: &Path, file: BorrowedFd<'_>) -> Result<bool> {
        self.prepare_from(realm, class, binary, Some(file))
    }

    fn prepare_from(
        &self,
        realm: &RealmHandle,
        class: Class,
        binary: &Path,
        file: Option<BorrowedFd<'_>>,
    ) -> Result<bool> {
        let sb = &self.inner;
        let r = &realm.inner;
        if sb.warm_sandboxes == 0 {
            return Ok(false);
        }
        let proc = ProcRef {
            proc_id: "(warm sandbox)".into(),
            realm: r.name.clone(),
            pid: 0,
            binary: binary.to_path_buf(),
        };
        let invalid = |reason: String| Error::InvalidSpec {
            proc_id: proc.proc_id.clone(),
            reason,
        };
        if !Arc::ptr_eq(&r.sandbox, sb) {
            return Err(invalid("the realm belongs to another sandbox".into()));
        }
        if !binary.is_absolute() {
            return Err(invalid(format!("binary {} is not an absolute path", binary.display())));
        }
        let lc = matches!(class, Class::Lc { .. });
        // One per binary and class. From a file, its inode decides: one of
        // the same path that holds another inode (made from a file that
        // failed its check) makes way.
        let file_inode = match file {
            Some(f) => Some(inode_of_fd(f).map_err(|source| Error::OpenBinary {
                proc: proc.clone(),
                source,
            })?),
            None => None,
        };
        let stale = {
            let mut warm = r.warm.lock().unwrap_or_else(|p| p.into_inner());
            match warm.iter().position(|p| p.is_for(binary, lc)) {
                None => None,
                Some(i) if file_inode.is_some_and(|inode| warm[i].inode != inode) => Some(warm.remove(i)),
                Some(_) => return Ok(false),
            }
        };
        if let Some(stale) = stale {
            sb.warm_stats.dropped.fetch_add(1, Ordering::Relaxed);
            drop(stale);
        }
        let binary_c = cstring(binary.as_os_str().as_bytes()).map_err(|r| invalid(format!("binary: {r}")))?;
        // The child's copy of the fd table keeps the detached mount until
        // it attached it.
        let tree = match file {
            None => open_binary_tree(&binary_c),
            Some(file) => open_file_tree(file),
        };
        // From a file its inode is known (the tree's is the same); from a
        // path, the tree says which inode the path named.
        let opened = tree.and_then(|t| match file_inode {
            Some(i) => Ok((t, i)),
            None => inode_of_fd(t.as_fd()).map(|i| (t, i)),
        });
        let (tree, inode) = match opened {
            Ok(t) => t,
            Err(source) => return Err(Error::OpenBinary { proc, source }),
        };
        let cgroups = r.take_warm_set(lc)?;
        let (ours, theirs) = warm::channel().map_err(|source| Error::ReportPipe {
            proc: proc.clone(),
            source,
        })?;
        let mut cgroup_fds = [-1; 3];
        for (slot, fd) in cgroup_fds.iter_mut().zip(&cgroups.procs) {
            *slot = fd.as_raw_fd();
        }
        let mut args = Box::new(WarmArgs {
            args: ChildArgs {
                report_fd: -1,
                channel_fd: theirs.as_raw_fd(),
                cgroup_fds,
                cgroup_fds_count: cgroups.procs.len(),
                netns_fd: r.netns.as_raw_fd(),
                hostname: r.name_c.as_ptr(),
                hostname_len: r.name.len(),
                jail_template_fd: sb.jail.template.as_raw_fd(),
                binary_tree_fd: tree.as_raw_fd(),
                fd_sources: [-1; 4],
                nofile: sb.nofile,
                cap_last: sb.cap_last,
                drop_bounding_set: !thread_bounding_set_empty(),
                uid: r.uid,
                gid: r.gid,
                seccomp: std::ptr::null(),
                argv: warm::atomic(std::ptr::null()),
                envp: warm::atomic(std::ptr::null()),
            },
            fprog: libc::sock_fprog {
                len: sb.seccomp.len() as u16,
                filter: sb.seccomp.as_ptr() as *mut libc::sock_filter,
            },
        });
        // The box's contents never move: the child may point into it.
        args.args.seccomp = &args.fprog;
        let stack = self.take_stack()?;
        let (pid, pidfd) = clone_child(&stack, &args.args, false);
        // The child has its own copies of the fds it needs.
        drop(theirs);
        drop(tree);
        let pid = match pid {
            Ok(pid) => pid,
            Err(source) => {
                self.return_stack(stack);
                return Err(Error::Clone { proc, source });
            }
        };
        let prepared = Prepared {
            binary: binary.to_path_buf(),
            inode,
            lc,
            pid,
            // SAFETY: CLONE_PIDFD stored a fresh pidfd that nobody else owns.
            pidfd: Some(unsafe { OwnedFd::from_raw_fd(pidfd) }),
            channel: ours,
            cgroups: Some(cgroups),
            stack: Some(stack),
            args: Some(args),
        };
        sb.warm_stats.made.fetch_add(1, Ordering::Relaxed);
        let evicted = {
            let mut warm = r.warm.lock().unwrap_or_else(|p| p.into_inner());
            warm.push(prepared);
            (warm.len() > sb.warm_sandboxes).then(|| warm.remove(0))
        };
        if let Some(old) = evicted {
            sb.warm_stats.dropped.fetch_add(1, Ordering::Relaxed);
            drop(old);
        }
        Ok(true)
    }

    /// What the warm sandboxes did so far.
    pub fn warm_stats(&self) -> WarmStats {
        let c = &self.inner.warm_stats;
        WarmStats {
            made: c.made.load(Ordering::Relaxed),
            taken: c.taken.load(Ordering::Relaxed),
            unusable: c.unusable.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        }
    }

    /// A child stack from the pool, or a new one.
    fn take_stack(&self) -> Result<ChildStack> {
        match self.inner.stacks.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            Some(s) => Ok(s),
            None => ChildStack::new(),
        }
    }

    fn return_stack(&self, stack: ChildStack) {
        let mut pool = self.inner.stacks.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < limits::CHILD_STACKS_POOLED_MAX {
            pool.push(stack);
        }
    }
}

/// The binary at `path` as a detached bind mount (`open_tree`
/// OPEN_TREE_CLONE): a child attaches it in its jail without any host path
/// being visible there.
fn open_binary_tree(path: &std::ffi::CStr) -> io::Result<OwnedFd> {
    open_tree(libc::AT_FDCWD, path, 0)
}

/// The file `file` (any fd of it, `O_PATH` included) as a detached bind
/// mount, as [`open_binary_tree`] makes one of a path.
fn open_file_tree(file: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    open_tree(file.as_raw_fd(), c"", libc::AT_EMPTY_PATH as libc::c_uint)
}

/// open_tree(2) of `path` under `dirfd` with OPEN_TREE_CLONE, close-on-exec
/// and `flags`.
fn open_tree(dirfd: c_int, path: &std::ffi::CStr, flags: libc::c_uint) -> io::Result<OwnedFd> {
    // SAFETY: open_tree with a NUL-terminated path; returns a new fd.
    let tree = unsafe {
        libc::syscall(
            SYS_OPEN_TREE,
            dirfd,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | flags,
        )
    };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(tree as c_int) })
}

/// The (device, inode) of the file `fd` refers to.
fn inode_of_fd(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: fstat writes into a zeroed stat buffer it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a live fd and a live buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

/// pidfd_send_signal(2) on `pidfd`, no siginfo.
pub(crate) fn pidfd_signal(pidfd: c_int, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal with integer arguments and no siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            signal,
            std::ptr::null::<c_void>(),
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reaps the child behind `pidfd` if it has ended (waitid(P_PIDFD,
/// WEXITED | WNOHANG | __WALL): never blocks); `None` while it runs.
pub(crate) fn pidfd_try_reap(pidfd: c_int) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain data; all-zero is a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: waitid on a pidfd into a live siginfo_t.
    let r = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::__WALL,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: waitid filled `info` (or left it zeroed: no child ready), so
    // si_pid and si_status are initialized.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => ExitStatus::Exited(status),
        _ => ExitStatus::Signaled(status),
    }))
}

/// Waits up to `timeout` for `fd` to turn readable (a pidfd: its child
/// ended); an interrupted wait just returns early.
pub(crate) fn poll_readable(fd: c_int, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
    // SAFETY: poll on one live pollfd.
    match unsafe { libc::poll(&mut pfd, 1, ms) } {
        r if r > 0 => Ok(true),
        0 => Ok(false),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Blocks every signal on this thread (raw, so glibc's internal ones too)
/// around clone: the child inherits a fully blocked mask and runs no
/// handler of the parent's before it has reset them all. With `vfork`
/// (a spawn) this returns once the child exec'd or exited; without (a
/// warm sandbox) at once, the child running beside the caller.
///
/// The caller keeps `stack`, `args` and everything `args` points to alive
/// and unchanged until the child has exec'd or exited.
fn clone_child(stack: &ChildStack, args: &ChildArgs, vfork: bool) -> (io::Result<i32>, c_int) {
    let all: u64 = !0;
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask with live 8-byte sets.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            &mut old as *mut u64,
            8usize,
        )
    };
    let flags = libc::CLONE_VM
        | if vfork { libc::CLONE_VFORK } else { 0 }
        | libc::CLONE_PIDFD
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC;
    // No CLONE_NEWNS: the child makes its mount namespace by copying the
    // jail template, not the host's mount table. No exit signal: the child is reaped through its pidfd (waitid with
    // __WALL), and the caller's SIGCHLD disposition plays no part.
    let mut pidfd: c_int = -1;
    // SAFETY: `child_main` runs on `stack`, a mapping of CHILD_STACK_BYTES
    // above a guard page, unused by anyone else while the child runs;
    // `args` and everything it points to live until the child exec'd or
    // exited (the caller's promise; with CLONE_VFORK that is before clone
    // returns). The child makes raw syscalls only. CLONE_PIDFD writes
    // the pidfd to the live local `pidfd`.
    let ret = unsafe {
        libc::clone(
            child::child_main,
            stack.top(),
            flags,
            args as *const ChildArgs as *mut c_void,
            &mut pidfd as *mut c_int,
        )
    };
    let result = if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    };
    // SAFETY: restores the mask saved above.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &old as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    (result, pidfd)
}

/// Reads one whole report; `None` at EOF.
pub(crate) fn read_report(fd: &OwnedFd) -> std::result::Result<Option<Report>, String> {
    const SIZE: usize = std::mem::size_of::<Report>();
    loop {
        let mut r = Report::default();
        // SAFETY: reads at most SIZE bytes into a live plain-data local.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut r as *mut Report).cast(), SIZE) };
        match n {
            0 => return Ok(None),
            n if n == SIZE as isize => return Ok(Some(r)),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("read: {e}"));
            }
            n => return Err(format!("short report of {n} bytes")),
        }
    }
}

/// Reads whole reports until EOF. At most two arrive (stamps, then an exec
/// failure), so this is bounded.
fn read_reports(fd: &OwnedFd) -> std::result::Result<Vec<Report>, String> {
    let mut reports = Vec::new();
    while let Some(r) = read_report(fd)? {
        if reports.len() >= 2 {
            return Err("more than two reports".into());
        }
        reports.push(r);
    }
    Ok(reports)
}

/// Copies the reports' stamps into `stamps`; the failed step and errno, if
/// one was reported.
fn apply_reports(reports: &[Report], stamps: &mut Stamps) -> Option<(u32, i32)> {
    let mut failure = None;
    for r in reports {
        let n = (r.stamps_count as usize).min(stamps.len());
        stamps[..n].copy_from_slice(&r.stamps[..n]);
        if r.kind == child::REPORT_FAILED {
            failure = Some((r.step, r.errno));
        }
    }
    failure
}

fn step_error(proc: ProcRef, step: u32, errno: i32, realm: &RealmInner) -> Error {
    let source = io::Error::from_raw_os_error(errno);
    let Some(step) = Step::from_u32(step) else {
        return Error::ChildReport {
            proc,
            reason: format!("unknown step {step} (errno {errno})"),
        };
    };
    match step {
        Step::Inherited => Error::ChildInherited { proc, source },
        Step::Signals => Error::ChildSignals { proc, source },
        Step::Cgroups => Error::ChildCgroups { proc, source },
        Step::Netns => Error::ChildNetns { proc, source },
        Step::Hostname => Error::ChildHostname { proc, source },
        Step::MountNamespace => Error::ChildMountNamespace { proc, source },
        Step::JailBinary => Error::ChildJailBinary { proc, source },
        Step::JailProc => Error::ChildJailProc { proc, source },
        Step::Fds => Error::ChildFds { proc, source },
        Step::Rlimits => Error::ChildRlimits { proc, source },
        Step::BoundingSet => Error::ChildBoundingSet { proc, source },
        Step::Credentials => Error::ChildCredentials {
            proc,
            uid: realm.uid,
            gid: realm.gid,
            source,
        },
        Step::Capabilities => Error::ChildCapabilities { proc, source },
        Step::NoNewPrivs => Error::ChildNoNewPrivs { proc, source },
        Step::SignalMask => Error::ChildSignalMask { proc, source },
        Step::Seccomp => Error::ChildSeccomp { proc, source },
        Step::Request => Error::ChildRequest { proc, source },
        Step::Exec => Error::ChildExec { proc, source },
    }
}

fn write_proc_limits(dir: &CgroupDir, h: &Hierarchy, limits: ProcLimits) -> Result<()> {
    use cgroup::Controller;
    let (mem_mib, pids_max, mcpu) = limits;
    let mem_bytes = (mem_mib << 20).to_string();
    let pids = pids_max.to_string();
    for c in &h.controllers {
        match (c, h.version) {
            (Controller::Memory, Version::V1) => dir.write("memory.limit_in_bytes", &mem_bytes)?,
            (Controller::Memory, Version::V2) => {
                dir.write("memory.max", &mem_bytes)?;
                dir.write("memory.swap.max", "0").or_else(|e| match &e {
                    // Without swap accounting the file is absent.
                    Error::CgroupWrite { source, .. } if source.kind() == io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })?;
            }
            (Controller::Pids, _) => dir.write("pids.max", &pids)?,
            (Controller::Cpu, version) => {
                if let Some(mcpu) = mcpu {
                    let shares = cgroup::lc_cpu_shares(mcpu);
                    match version {
                        Version::V1 => dir.write("cpu.shares", &shares.to_string())?,
                        Version::V2 => dir.write("cpu.weight", &cgroup::shares_to_weight(shares).to_string())?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// open_tree(2): the same number on every architecture.
const SYS_OPEN_TREE: libc::c_long = 428;
/// open_tree's flag: a detached copy of the mount (a bind mount).
const OPEN_TREE_CLONE: libc::c_uint = 1;

/// Makes the jail template on a short-lived thread: unshare a mount
/// namespace (the thread's alone), make every mount private, mount a
/// one-page tmpfs on `dir` with the mount points `proc/` and `init`,
/// pivot_root into it, detach the host's tree, remount the root read-only.
/// The namespace lives on through the returned fd after the thread ends.
/// Fails with the name of the step and its error.
fn create_jail_template(dir: CString) -> std::result::Result<OwnedFd, (&'static str, io::Error)> {
    std::thread::spawn(move || {
        let last = |step| (step, io::Error::last_os_error());
        let nosuid_nodev = libc::MS_NOSUID | libc::MS_NODEV;
        let null = std::ptr::null::<c_char>();
        // SAFETY: unshare of this thread's fs and mount namespace only.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(last("unshare"));
        }
        // SAFETY: mount with a static path and null strings; the change is
        // inside this thread's new mount namespace.
        if unsafe {
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        } != 0
        {
            return Err(last("make mounts private"));
        }
        let options = CString::new(format!(
            "size={},nr_inodes={},mode=755",
            limits::JAIL_TMPFS_BYTES,
            limits::JAIL_TMPFS_INODES
        ))
        .map_err(|_| ("tmpfs options", io::Error::from(io::ErrorKind::InvalidInput)))?;
        let flags = nosuid_nodev | libc::MS_NOEXEC;
        // SAFETY: mount with NUL-terminated strings, in this namespace.
        let r = unsafe {
            libc::mount(
                c"sigma-jail".as_ptr(),
                dir.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                options.as_ptr().cast(),
            )
        };
        if r != 0 {
            return Err(last("mount tmpfs"));
        }
        // SAFETY: chdir to a NUL-terminated path (this thread's own fs).
        if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
            return Err(last("chdir"));
        }
        // SAFETY: mkdir of a static relative path in the new tmpfs.
        if unsafe { libc::mkdir(c"proc".as_ptr(), 0o555) } != 0 {
            return Err(last("mkdir proc"));
        }
        let create = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC;
        // SAFETY: open of a static relative path in the new tmpfs.
        let fd = unsafe { libc::open(c"init".as_ptr(), create, 0o555) };
        if fd < 0 {
            return Err(last("create init"));
        }
        // SAFETY: closes the fd just opened.
        unsafe { libc::close(fd) };
        let ns = fs::File::open("/proc/thread-self/ns/mnt").map_err(|e| ("open ns", e))?;
        // SAFETY: pivot_root(".", ".") stacks the old root on the tmpfs.
        if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } != 0 {
            return Err(last("pivot_root"));
        }
        // SAFETY: detaching "." drops the host tree from this namespace.
        if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(last("detach the host tree"));
        }
        // SAFETY: chdir to a static path.
        if unsafe { libc::chdir(c"/".as_ptr()) } != 0 {
            return Err(last("chdir /"));
        }
        let ro = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOEXEC | nosuid_nodev;
        // SAFETY: remount of this namespace's root, static path.
        if unsafe { libc::mount(null, c"/".as_ptr(), null, ro, std::ptr::null()) } != 0 {
            return Err(last("remount the root read-only"));
        }
        Ok(OwnedFd::from(ns))
    })
    .join()
    .unwrap_or_else(|_| Err(("thread", io::Error::other("jail template thread panicked"))))
}

/// Makes a network namespace on a short-lived thread (unshare changes only
/// that thread) and keeps an fd to it; the thread exits, the namespace
/// lives on through the fd.
fn create_netns() -> io::Result<OwnedFd> {
    std::thread::spawn(unshare_netns)
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
}

/// Moves the calling thread into a new network namespace; an fd of it.
/// The thread's own namespace changes: call it on a thread of its own.
fn unshare_netns() -> io::Result<OwnedFd> {
    // SAFETY: unshare of the network namespace of this thread only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from)
}

/// argv and envp as the child's execve wants them, built before clone.
struct ExecImage {
    binary: CString,
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

impl ExecImage {
    fn new(spec: &SpawnSpec<'_>, realm: &str) -> std::result::Result<ExecImage, String> {
        if spec.args.len() > limits::ARGS_COUNT_MAX {
            return Err(format!(
                "{} args, more than {}",
                spec.args.len(),
                limits::ARGS_COUNT_MAX
            ));
        }
        if spec.env.len() > limits::ENV_COUNT_MAX {
            return Err(format!(
                "{} env vars, more than {}",
                spec.env.len(),
                limits::ENV_COUNT_MAX
            ));
        }
        if !spec.binary.is_absolute() {
            return Err(format!("binary {} is not an absolute path", spec.binary.display()));
        }
        let binary = cstring(spec.binary.as_os_str().as_bytes()).map_err(|r| format!("binary: {r}"))?;
        let argv0 = match spec.argv0 {
            Some(name) => name.as_bytes().to_vec(),
            None => spec
                .binary
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_else(|| b"init".to_vec()),
        };
        let mut argv_strings = vec![cstring(&argv0).map_err(|r| format!("argv0: {r}"))?];
        for a in spec.args {
            argv_strings.push(cstring(a.as_bytes()).map_err(|r| format!("arg {a:?}: {r}"))?);
        }
        let mut env_strings = vec![
            cstring(format!("SIGMA_PID={}", spec.proc_id).as_bytes()).map_err(|r| format!("proc id: {r}"))?,
            cstring(format!("SIGMA_REALM={realm}").as_bytes()).map_err(|r| format!("realm: {r}"))?,
            cstring(b"SIGMA_CTL_FD=3").map_err(|r| format!("ctl fd: {r}"))?,
        ];
        for (k, v) in spec.env {
            if k.is_empty() || k.contains('=') {
                return Err(format!("env key {k:?} is empty or contains '='"));
            }
            if matches!(k.as_str(), "SIGMA_PID" | "SIGMA_REALM" | "SIGMA_CTL_FD") {
                return Err(format!("env key {k:?} is set by the sandbox"));
            }
            env_strings.push(cstring(format!("{k}={v}").as_bytes()).map_err(|r| format!("env {k:?}: {r}"))?);
        }
        let bytes: usize = argv_strings
            .iter()
            .chain(&env_strings)
            .map(|s| s.as_bytes_with_nul().len())
            .sum();
        if bytes > limits::ARGV_ENVP_BYTES_MAX {
            return Err(format!(
                "args and env take {bytes} bytes, more than {}",
                limits::ARGV_ENVP_BYTES_MAX
            ));
        }
        let mut argv: Vec<*const c_char> = argv_strings.iter().map(|s| s.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<*const c_char> = env_strings.iter().map(|s| s.as_ptr()).collect();
        envp.push(std::ptr::null());
        argv_strings.extend(env_strings);
        // Moving the CStrings into one Vec moves their heap buffers' owners,
        // not the buffers: the pointers above stay valid.
        Ok(ExecImage {
            binary,
            _strings: argv_strings,
            argv,
            envp,
        })
    }
}

#[derive(Debug)]
struct RealmDirs {
    lc: CgroupDir,
    be: CgroupDir,
}

#[derive(Debug)]
struct RealmInner {
    /// Warm sandboxes of this realm, oldest first. Emptied first in the
    /// drop: their children read the realm's name and the sandbox's
    /// seccomp program.
    warm: Mutex<Vec<Prepared>>,
    sandbox: Arc<SandboxInner>,
    name: String,
    name_c: CString,
    uid: u32,
    gid: u32,
    slot: usize,
    netns: OwnedFd,
    /// Warm cgroups of LC and BE procs. Declared before `dirs`, so dropped
    /// (removed) before the realm's own cgroups.
    pools: [Mutex<Vec<ProcCgroups>>; 2],
    next_warm: AtomicU64,
    dirs: Vec<RealmDirs>,
}

/// The cgroups of one proc: a directory per hierarchy and each one's open
/// join file (v1 `tasks`, v2 `cgroup.procs`), which the child writes to join.
#[derive(Debug)]
pub(crate) struct ProcCgroups {
    procs: Vec<OwnedFd>,
    dirs: Vec<CgroupDir>,
    /// Named `w+<n>` and returned to the realm's pool once reaped.
    warm: bool,
    lc: bool,
    /// The limits last written: a pooled set whose next proc asks for the
    /// same is not written again.
    limits: Option<ProcLimits>,
}

/// A proc's cgroup limits: memory MiB, pids, and the mcpu of an LC proc
/// (None: BE, whose cpu cgroup is the class's).
type ProcLimits = (u64, u64, Option<u64>);

impl RealmInner {
    fn pool(&self, lc: bool) -> std::sync::MutexGuard<'_, Vec<ProcCgroups>> {
        self.pools[usize::from(!lc)].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A warm cgroup set from the pool with this spawn's limits written,
    /// or new directories.
    fn take_cgroups(&self, spec: &SpawnSpec<'_>) -> Result<ProcCgroups> {
        let sb = &self.sandbox;
        let lc = matches!(spec.class, Class::Lc { .. });
        let cgroups = if sb.warm_cgroups > 0 {
            self.take_warm_set(lc)?
        } else {
            let parents = self.dirs.iter().map(|rd| if lc { rd.lc.path() } else { rd.be.path() });
            let (dirs, procs) = make_proc_cgroups(parents, spec.proc_id)?;
            ProcCgroups {
                procs,
                dirs,
                warm: false,
                lc,
                limits: None,
            }
        };
        let mut cgroups = cgroups;
        cgroups.write_limits(sb, spec)?;
        Ok(cgroups)
    }

    /// A cgroup set named `w+<n>` (which no proc id can be), from the pool
    /// or new, with whatever limits it has.
    fn take_warm_set(&self, lc: bool) -> Result<ProcCgroups> {
        if let Some(cgroups) = self.pool(lc).pop() {
            return Ok(cgroups);
        }
        let name = format!("w+{}", self.next_warm.fetch_add(1, Ordering::Relaxed));
        let parents = self.dirs.iter().map(|rd| if lc { rd.lc.path() } else { rd.be.path() });
        let (dirs, procs) = make_proc_cgroups(parents, &name)?;
        Ok(ProcCgroups {
            procs,
            dirs,
            warm: true,
            lc,
            limits: None,
        })
    }

    /// The warm sandbox made for `binary` and class `lc`, if one is here
    /// and holds the inode `binary` names now. One made for `binary` that
    /// holds another inode (a file that never got there, or was replaced)
    /// is dropped.
    fn take_prepared(&self, binary: &Path, lc: bool) -> Option<Prepared> {
        let stale = {
            let mut warm = self.warm.lock().unwrap_or_else(|p| p.into_inner());
            let i = warm.iter().position(|p| p.is_for(binary, lc))?;
            let now = std::fs::metadata(binary).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
            let p = warm.remove(i);
            if now == Some(p.inode) {
                return Some(p);
            }
            p
        };
        self.sandbox.warm_stats.unusable.fetch_add(1, Ordering::Relaxed);
        drop(stale);
        None
    }
}

impl ProcCgroups {
    /// Writes `spec`'s limits in each hierarchy, unless they are the ones
    /// written last (three to four cgroup file writes saved).
    fn write_limits(&mut self, sb: &SandboxInner, spec: &SpawnSpec<'_>) -> Result<()> {
        let mcpu = match spec.class {
            Class::Lc { mcpu } => Some(mcpu),
            Class::Be => None,
        };
        let want = (spec.mem_mib, spec.pids_max, mcpu);
        if self.limits == Some(want) {
            return Ok(());
        }
        // Sets the realm pool makes from now on come with these.
        if let Some(pool) = &sb.netns_pool {
            pool.note_limits(self.lc, want);
        }
        self.write_limit_values(sb.hierarchies.iter().map(|h| &h.hierarchy), want)
    }

    /// Writes `limits` into each of the set's directories (`hierarchies`
    /// in the same order).
    fn write_limit_values<'h>(
        &mut self,
        hierarchies: impl Iterator<Item = &'h Hierarchy>,
        limits: ProcLimits,
    ) -> Result<()> {
        self.limits = None;
        for (dir, h) in self.dirs.iter().zip(hierarchies) {
            write_proc_limits(dir, h, limits)?;
        }
        self.limits = Some(limits);
        Ok(())
    }
}

/// Makes a proc's cgroup `name` under each of `parents` (one per
/// hierarchy) and opens in each the file the child writes `0` to, to join
/// it ([`crate::cgroup::join_file`]).
fn make_proc_cgroups<'a>(
    parents: impl Iterator<Item = &'a Path>,
    name: &str,
) -> Result<(Vec<CgroupDir>, Vec<OwnedFd>)> {
    let (mut dirs, mut procs) = (Vec::new(), Vec::new());
    for parent in parents {
        let dir = CgroupDir::create(parent.join(name))?;
        procs.push(crate::cgroup::join_file(dir.path())?);
        dirs.push(dir);
    }
    assert!(procs.len() <= 3, "at most one hierarchy per controller");
    Ok((dirs, procs))
}

impl Drop for RealmInner {
    fn drop(&mut self) {
        let warm = std::mem::take(self.warm.get_mut().unwrap_or_else(|p| p.into_inner()));
        self.sandbox
            .warm_stats
            .dropped
            .fetch_add(warm.len() as u64, Ordering::Relaxed);
        drop(warm);
        // The cgroup directories go with `dirs`; the netns with its fd.
        let mut table = self.sandbox.realms.lock().unwrap_or_else(|p| p.into_inner());
        if table.by_name.get(&self.name).is_some_and(|w| w.strong_count() == 0) {
            table.by_name.remove(&self.name);
        }
        if let Some(used) = table.uid_used.get_mut(self.slot) {
            *used = false;
        }
    }
}

/// A realm on this machine: its network namespace (made once, joined by
/// every proc), its cgroups, its uid and gid. Cheap to clone; the realm is
/// undone when the last handle and the last proc of it are gone.
#[derive(Debug, Clone)]
pub struct RealmHandle {
    inner: Arc<RealmInner>,
}

impl RealmHandle {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    /// The uid its procs run as.
    pub fn uid(&self) -> u32 {
        self.inner.uid
    }
    /// How many warm sandboxes it holds ([`Sandbox::prepare`]).
    pub fn warm_sandboxes(&self) -> usize {
        self.inner.warm.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
    /// Host pids of its warm sandboxes' children, oldest first.
    pub fn warm_sandbox_pids(&self) -> Vec<i32> {
        let warm = self.inner.warm.lock().unwrap_or_else(|p| p.into_inner());
        warm.iter().map(|p| p.pid).collect()
    }
    /// The gid its procs run as.
    pub fn gid(&self) -> u32 {
        self.inner.gid
    }
    /// Its network namespace.
    pub fn netns(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.inner.netns.as_fd()
    }
}

/// A started proc. Its pidfd becomes readable when it exits; then
/// [`Child::try_wait`] reaps it and removes its cgroups. Dropping a child
/// that still runs kills it (SIGKILL, which takes its whole pid namespace)
/// and waits for it, at most [`limits::CHILD_DROP_WAIT_MS_MAX`].
#[derive(Debug)]
pub struct Child {
    proc: ProcRef,
    pidfd: OwnedFd,
    status: Option<ExitStatus>,
    cgroups: Option<ProcCgroups>,
    times: SpawnTimes,
    /// The proc's mount namespace while held ([`Child::hold_mount_namespace`]).
    mount_ns: Option<OwnedFd>,
    _realm: Arc<RealmInner>,
}

/// An fd on the mount namespace of the unreaped task `pidfd` (host pid
/// `pid`), which keeps it alive; None if the task has exited (its namespace
/// went with it) or neither `PIDFD_GET_MNT_NAMESPACE` (Linux 6.11) nor
/// `/proc/PID/ns/mnt` gives it.
fn mount_namespace_of(pidfd: &OwnedFd, pid: i32) -> Option<OwnedFd> {
    // SAFETY: an ioctl on a pidfd we own with no argument; on success it
    // returns a new fd that nothing else owns.
    let fd = unsafe { libc::ioctl(pidfd.as_raw_fd(), PIDFD_GET_MNT_NAMESPACE as _, 0) };
    if fd >= 0 {
        // SAFETY: a fresh fd returned to us alone.
        return Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    match io::Error::last_os_error().raw_os_error() {
        // An older kernel: the same namespace through /proc. The task is not
        // reaped yet, so its pid is still its own.
        Some(libc::ENOTTY | libc::EINVAL | libc::EOPNOTSUPP) => {
            fs::File::open(format!("/proc/{pid}/ns/mnt")).ok().map(OwnedFd::from)
        }
        // ESRCH: it exited already.
        _ => None,
    }
}

/// `PIDFD_GET_MNT_NAMESPACE` (`linux/pidfd.h`, Linux 6.11):
/// `_IO(PIDFS_IOCTL_MAGIC = 0xFF, 3)`; returns a close-on-exec fd on the
/// task's mount namespace.
const PIDFD_GET_MNT_NAMESPACE: libc::c_ulong = 0xFF03;

impl Child {
    /// Host pid.
    pub fn pid(&self) -> i32 {
        self.proc.pid
    }

    /// The pidfd, to poll for readability (exit) from an event loop.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pidfd.as_fd()
    }

    /// What the proc is.
    pub fn proc(&self) -> &ProcRef {
        &self.proc
    }

    /// Where the time of the spawn went.
    pub fn spawn_times(&self) -> SpawnTimes {
        self.times
    }

    /// Takes a reference on the proc's mount namespace (its jail: the root,
    /// the binary's bind mount, its /proc), so that the proc's exit does not
    /// tear the namespace down: the kernel does that in the exiting task
    /// before its pidfd turns readable, and unmounting a namespace's mounts
    /// waits for an expedited RCU grace period (an IPI to every CPU) —
    /// about 0.1 ms of every start's exit path on the 2-vCPU VM. Held, the
    /// teardown happens when [`Child::release_mount_namespace`] (or the
    /// drop) lets go, after whoever waited for the exit has been told.
    ///
    /// Best effort: false if the proc already exited (nothing to hold) or
    /// neither `PIDFD_GET_MNT_NAMESPACE` (Linux 6.11) nor
    /// `/proc/PID/ns/mnt` gave the namespace.
    pub fn hold_mount_namespace(&mut self) -> bool {
        if self.status.is_some() || self.mount_ns.is_some() {
            return self.mount_ns.is_some();
        }
        self.mount_ns = mount_namespace_of(&self.pidfd, self.proc.pid);
        self.mount_ns.is_some()
    }

    /// The mount namespace held by [`Child::hold_mount_namespace`], if any.
    pub fn held_mount_namespace(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.mount_ns.as_ref().map(|fd| fd.as_fd())
    }

    /// Lets go of the mount namespace [`Child::hold_mount_namespace`] took,
    /// on the sandbox's release thread (`sigma-mntns-release`): if the proc
    /// has exited, the namespace is torn down there, not on the caller's
    /// thread (here only if that thread's queue is full).
    pub fn release_mount_namespace(&mut self) {
        if let Some(ns) = self.mount_ns.take() {
            self._realm.sandbox.mount_ns_release.release(ns);
        }
    }

    /// The proc's cgroup directories (removed once it is reaped).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        self.cgroups
            .iter()
            .flat_map(|c| &c.dirs)
            .map(|d| d.path().to_path_buf())
            .collect()
    }

    /// Reaps the proc if it has exited (waitid(P_PIDFD, WNOHANG): never
    /// blocks), then removes its cgroups. `Ok(None)` while it runs.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            match pidfd_try_reap(self.pidfd.as_raw_fd()) {
                Ok(None) => return Ok(None),
                Ok(status) => self.status = status,
                Err(source) => {
                    return Err(Error::Wait {
                        proc: self.proc.clone(),
                        source,
                    })
                }
            }
        }
        self.cleanup()?;
        Ok(self.status)
    }

    /// Waits up to `timeout` for the proc to exit (poll on the pidfd), then
    /// reaps it. Blocks the calling thread: for tests and shutdown; event
    /// loops poll the pidfd and call [`Child::try_wait`].
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            if let Err(source) = poll_readable(self.pidfd.as_raw_fd(), timeout) {
                return Err(Error::Wait {
                    proc: self.proc.clone(),
                    source,
                });
            }
        }
        self.try_wait()
    }

    /// Sends `signal` through the pidfd (to pid 1 of the proc's pid
    /// namespace: SIGKILL takes the whole namespace with it).
    pub fn signal(&self, signal: i32) -> Result<()> {
        pidfd_signal(self.pidfd.as_raw_fd(), signal).map_err(|source| Error::Signal {
            proc: self.proc.clone(),
            signal,
            source,
        })
    }

    /// SIGKILL.
    pub fn kill(&self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Once reaped: warm cgroups go back to the realm's pool (if it has
    /// room), others are removed.
    fn cleanup(&mut self) -> Result<()> {
        let Some(mut cgroups) = self.cgroups.take() else {
            return Ok(());
        };
        if cgroups.warm && self.status.is_some() {
            let mut pool = self._realm.pool(cgroups.lc);
            if pool.len() < self._realm.sandbox.warm_cgroups {
                pool.push(cgroups);
                return Ok(());
            }
        }
        let removed = cgroups.dirs.iter_mut().try_for_each(CgroupDir::remove);
        if removed.is_err() {
            self.cgroups = Some(cgroups);
        }
        removed
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.kill();
            let _ = self.wait_timeout(Duration::from_millis(limits::CHILD_DROP_WAIT_MS_MAX));
        }
        self.release_mount_namespace();
        let _ = self.cleanup();
    }
}

#[cfg(test)]
mod steps_tests {
    use super::*;

    #[test]
    fn a_warm_starts_steps_cover_it_from_its_start_to_the_exec_seen() {
        let mut child = [0; limits::CHILD_STAMPS_COUNT];
        // The child took the request 900 ns after it was sent.
        child[limits::CHILD_STAMPS_COUNT - 1] = 2_000;
        let t = SpawnTimes {
            start_ns: 1_000,
            clone_ns: 1_100,
            child,
            exec_seen_ns: 5_000,
            warm: true,
        };
        let s = t.steps();
        assert_eq!(s.namespaces_ns + s.jail_ns + s.seccomp_ns, 0);
        assert_eq!(s.cgroups_ns, 100);
        assert_eq!(s.exec_ns, 3_900, "the child's wake-up is part of the exec step");
        assert_eq!(s.cgroups_ns + s.exec_ns, t.exec_seen_ns - t.start_ns);
        // Cold: the exec step starts at the filter's stamp.
        let mut child = [0; limits::CHILD_STAMPS_COUNT];
        for (i, c) in child.iter_mut().enumerate() {
            *c = 2_000 + 100 * i as u64;
        }
        let t = SpawnTimes {
            start_ns: 1_000,
            clone_ns: 1_100,
            child,
            exec_seen_ns: 5_000,
            warm: false,
        };
        let s = t.steps();
        assert_eq!(s.exec_ns, 5_000 - child[limits::CHILD_STAMPS_COUNT - 1]);
        assert_eq!(
            s.namespaces_ns + s.cgroups_ns + s.jail_ns + s.seccomp_ns + s.exec_ns,
            t.exec_seen_ns - t.start_ns
        );
    }
}
