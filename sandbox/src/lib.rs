//! σcontainer: the sandbox a proc runs in. It depends on nothing of ours.
//!
//! A proc is a static binary. [`Sandbox::spawn`] starts it in new pid,
//! mount, UTS and IPC namespaces, inside its realm's network namespace, in
//! a jail that holds only its binary (read-only) and a fresh /proc, as the
//! realm's unprivileged uid and gid with no capabilities, no_new_privs,
//! bounded rlimits, a clean signal mask and default dispositions, in its own
//! memory/pids/cpu cgroups, under a seccomp allow-list. It returns a
//! [`Child`] with a pidfd to wait on from an event loop.
//!
//! # Set-up, once per machine and once per realm
//!
//! [`Sandbox::new`] reads /proc/self/mountinfo and /proc/self/cgroup to find
//! a hierarchy for each of the memory, pids and cpu controllers: cgroup v2
//! when its root offers all three, otherwise the v1 hierarchy of each
//! (detected, never assumed; see [`cgroup`]). In each it makes
//! `<own cgroup>/<cgroup_parent>/{lc,be}` (the parent must not exist: the
//! sandbox only ever touches cgroups it made), with `cpu.idle = 1` on `be`.
//! It compiles the seccomp policy ([`policy::PROC_POLICY`]) into one BPF
//! program, reused by every spawn, and makes the *jail template*: on a
//! short-lived thread it unshares a mount namespace, makes every mount
//! private, mounts a one-page tmpfs (8 inodes) on the jail directory with
//! the empty mount points `init` and `proc/`, pivots into it, detaches the
//! host's tree and remounts the root read-only; an fd keeps the namespace.
//! The jail directory stays empty on the host.
//!
//! [`Sandbox::realm`] makes a realm on first use: a network namespace
//! (unshared on a short-lived thread, kept as an fd: no netns is made per
//! spawn), `lc/<realm>` and `be/<realm>` cgroups, and a uid/gid from the
//! configured range. Handles are shared by name; the realm is undone when
//! the last handle and the last proc of it are gone.
//!
//! # The spawn sequence
//!
//! Firecracker's jailer is the model: one linear sequence, one error variant
//! per step ([`Error`]'s `Child*` variants, in the order of [`Step`]).
//!
//! In the parent (the calling thread):
//!
//! 1. Check the request against [`limits`] and build argv and envp
//!    (`SIGMA_PID`, `SIGMA_REALM`, `SIGMA_CTL_FD=3`, then the caller's).
//! 2. Make the proc's cgroup in each hierarchy,
//!    `<parent>/<lc|be>/<realm>/<proc id>`, write `memory.limit_in_bytes`,
//!    `pids.max` and, for LC, `cpu.shares` = mcpu × 1024 / 1000; open in
//!    each the file the child joins by (v1 `tasks`, v2 `cgroup.procs`). With `Config::warm_cgroups`, a
//!    reaped proc's set (`w+<n>`) is taken from the realm's pool instead
//!    and only the limits are rewritten.
//! 3. `open_tree(binary, OPEN_TREE_CLONE)`: the binary as a detached bind
//!    mount, so that no host path has to be visible to the child.
//! 4. Make a close-on-exec report pipe.
//! 5. Block every signal on this thread (raw rt_sigprocmask, glibc's
//!    internal ones too), then `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD |
//!    CLONE_NEWPID | CLONE_NEWUTS | CLONE_NEWIPC)` with no exit
//!    signal, on a pooled, guard-paged stack. Like posix_spawn, the child
//!    borrows the parent's memory (no page tables copied, whatever the size
//!    of sigmad) and the parent's thread sleeps until the child execs or
//!    exits. So the child allocates nothing and calls only raw system calls
//!    on data the parent prepared; credentials are changed with raw
//!    syscalls so that glibc does not broadcast them to the parent's
//!    threads. The parent restores its mask after clone returns.
//!
//! In the child, pid 1 of its new pid namespace ([`Step`]):
//!
//! 1. `Inherited`: close every fd of the parent's table copy that no step
//!    uses. Each copy holds its file open, and whoever closes the last
//!    reference pays the file's teardown (for a proc's held mount
//!    namespace, an expedited RCU grace period): closed at once, the copies
//!    go microseconds after the clone, seldom after the parent let go of
//!    its own.
//! 2. `Signals`: every signal to SIG_DFL (all are still blocked), so that
//!    no handler of the parent's runs in borrowed memory and no ignored
//!    signal survives exec.
//! 3. `Cgroups`: write `0` (the writer itself) to each join file: the
//!    proc is under its memory and pids limits before it runs a line of its
//!    own. On v1 that is `tasks`, which moves the single-threaded child
//!    without the kernel's machine-wide `cgroup_threadgroup_rwsem` that a
//!    `cgroup.procs` write takes. (v1 cannot use `CLONE_INTO_CGROUP`.)
//! 4. `Netns`: setns into the realm's network namespace.
//! 5. `Hostname`: the realm's name, in the new UTS namespace.
//! 6. `MountNamespace`: setns into the jail template (root and cwd become
//!    its read-only tmpfs), then unshare a private copy: a few mounts are
//!    copied, none of the host's, and none of the host's are unmounted at
//!    exit. (This is why clone carries no CLONE_NEWNS.)
//! 7. `JailBinary`: move_mount the detached binary onto `/init`, then
//!    remount it read-only, nosuid, nodev. No copy: a warm start copies no
//!    file.
//! 8. `JailProc`: mount a fresh proc (`subset=pid`: no host-wide files)
//!    on `/proc`.
//! 9. `Fds`: move the report pipe above 3, dup /dev/null, stdout, stderr
//!    and the control fd to 0, 1, 2, 3 (through fresh fds above 3, so that
//!    no dup2 clobbers a source), mark every fd from 4 up close-on-exec.
//! 10. `Rlimits`: RLIMIT_CORE 0; RLIMIT_NOFILE soft = hard = the configured
//!     bound.
//! 11. `BoundingSet`: drop every capability from the bounding set (needs
//!     CAP_SETPCAP, so before the uid change); skipped when the cloning
//!     thread emptied its own ([`Sandbox::empty_thread_bounding_set`]).
//! 12. `Credentials`: setgroups(0), setresgid, setresuid to the realm's
//!     gid and uid: permitted, effective and ambient sets are cleared.
//! 13. `Capabilities`: capset all-zero (inheritable), clear ambient.
//! 14. `NoNewPrivs`.
//! 15. `SignalMask`: unblock everything: the parent's blocked signals do
//!     not leak into the proc.
//! 16. `Seccomp`: install the precompiled program (answers clone3 ENOSYS,
//!     allows `clone` only without namespace flags, EPERM for anything not
//!     listed). Then send the step timestamps on the report pipe.
//! 17. `Exec`: `execve("/init")`. Its success closes the report pipe.
//!
//! The child's mount namespace (and with it the jail's mounts) dies with
//! it; nothing of the jail exists on the host.
//!
//! A failing step writes `(step, errno)` and timestamps on the pipe and
//! exits 127. Back in the parent, the pipe reads EOF after exec: spawn
//! returns a [`Child`] (host pid, owned pidfd, [`SpawnTimes`]). After a
//! failure report the parent reaps the child, removes its cgroups and
//! returns the step's error variant with the proc, realm, pid and errno.
//!
//! # Afterwards
//!
//! The pidfd becomes readable when the proc exits; [`Child::try_wait`]
//! reaps it with `waitid(P_PIDFD, WNOHANG | __WALL)` (never blocking) and
//! removes its cgroups. Killing it (through the pidfd) kills pid 1 of its
//! namespace and so every process of it. Its mount, UTS, IPC and pid
//! namespaces die with it. Dropping a running [`Child`] kills and reaps it
//! (bounded wait). Dropping the last [`RealmHandle`] removes the realm's
//! cgroups and closes its netns; dropping the [`Sandbox`] removes its
//! cgroups and the jail directory.
//!
//! # Warm sandboxes
//!
//! [`Sandbox::prepare`] runs the same sequence ahead of a spawn, for one
//! realm, binary and class, in a child cloned without `CLONE_VFORK` (see
//! `warm.rs`): every step but the spawn's own (fds, argv and envp, the
//! limits' values) is done, the seccomp filter included, and the child
//! waits on a channel (its only open fd). A spawn that finds one writes
//! the limits, sends fds 0..=3 and the go-ahead, and the child execs:
//! [`SpawnTimes::warm`]. Nothing of it is reused by a second proc.
//!
//! # Cost
//!
//! `tests/spawn_cost.rs` measures spawn-to-exit of a trivial static proc
//! against a bare vfork+exec (`std::process::Command`), interleaved, with
//! the child's step times. On this 2-vCPU VM under load from other builds,
//! p50 was about 2.1× bare with warm cgroups and 2.8× with cold ones; the
//! parent's cgroup mkdirs (~190 µs) are what warm cgroups remove. Left per
//! cold spawn: namespaces at clone (~90-200 µs), seccomp install (~40 µs
//! with the compact program), the jail (~55 µs), credentials and rlimits
//! (~70 µs), and exec itself. A warm sandbox takes all but the exec off
//! the start (sigmabench's `sigma-sandbox` warm-start: 1.02-1.24× the
//! floor with them, 1.51-1.68× without, alternated).

pub mod cgroup;
mod child;
mod error;
pub mod limits;
pub mod policy;
mod sandbox;
mod warm;

pub use child::{Stamps, Step};

/// CLOCK_MONOTONIC now, ns: the clock of [`SpawnTimes`] and of the child's
/// [`Stamps`], for callers that time around a spawn. Through the vDSO it
/// makes no system call and touches no shared state (the cloned child
/// calls it too).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
pub use error::{Error, ProcRef, Result};
pub use sandbox::{
    Child, Class, Config, ExitStatus, KeepWarm, RealmHandle, Sandbox, SpawnSpec, SpawnSteps, SpawnTimes, WarmStats,
};
